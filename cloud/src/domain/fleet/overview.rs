//! What the dashboard shows at a glance: fleet totals for the caller's scope, and an appliance's
//! latency and loss over a period, bucketed by the database so a month of 10-second telemetry
//! arrives as a few hundred points.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{
    ApplianceMetrics, FleetTotals, MetricPoint, MetricsPeriod, UplinkSeries,
};

use super::FleetError;
use crate::domain::access::AuthUser;
use crate::domain::access::visibility::visible_appliance;

#[derive(sqlx::FromRow)]
struct TotalsRow {
    practices: i64,
    appliances: i64,
    on_backup: i64,
    degraded: i64,
    offline: i64,
    practices_offline: i64,
    practices_on_backup: i64,
    practices_degraded: i64,
    practices_primary: i64,
    practices_empty: i64,
    open_alerts: i64,
    critical_alerts: i64,
}

/// Counts over every practice and appliance the caller may see, from the same appliance states
/// and practice roll-ups as the lists (`stayopen_appliance_state`), so a filter's rows and its
/// count never disagree.
pub async fn totals(
    pool: &PgPool,
    auth: &AuthUser,
    offline_after_secs: u32,
) -> Result<FleetTotals, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let row: TotalsRow = sqlx::query_as(
        "WITH states AS (
             SELECT a.practice_id,
                    stayopen_appliance_state(a.online, a.last_seen, a.on_backup, a.active_uplink,
                                             a.last_telemetry, $1) AS state
             FROM appliances a
             WHERE a.revoked_at IS NULL AND ($2::uuid[] IS NULL OR a.practice_id = ANY($2))
         ), per_practice AS (
             SELECT p.id,
                    count(s.state) AS appliances,
                    count(*) FILTER (WHERE s.state = 'offline') AS offline,
                    count(*) FILTER (WHERE s.state = 'on_backup') AS on_backup,
                    count(*) FILTER (WHERE s.state = 'degraded') AS degraded
             FROM practices p LEFT JOIN states s ON s.practice_id = p.id
             WHERE $2::uuid[] IS NULL OR p.id = ANY($2)
             GROUP BY p.id
         ), open_alerts AS (
             SELECT count(*) AS open, count(*) FILTER (WHERE severity = 'critical') AS critical
             FROM alerts WHERE state <> 'resolved' AND ($2::uuid[] IS NULL OR practice_id = ANY($2))
         )
         SELECT count(*) AS practices,
                coalesce(sum(appliances), 0)::bigint AS appliances,
                coalesce(sum(on_backup), 0)::bigint AS on_backup,
                coalesce(sum(degraded), 0)::bigint AS degraded,
                coalesce(sum(offline), 0)::bigint AS offline,
                count(*) FILTER (WHERE appliances > 0 AND offline = appliances) AS practices_offline,
                count(*) FILTER (WHERE offline < appliances AND on_backup > 0) AS practices_on_backup,
                count(*) FILTER (WHERE offline < appliances AND on_backup = 0
                                   AND (degraded > 0 OR offline > 0)) AS practices_degraded,
                count(*) FILTER (WHERE appliances > 0 AND offline = 0 AND on_backup = 0
                                   AND degraded = 0) AS practices_primary,
                count(*) FILTER (WHERE appliances = 0) AS practices_empty,
                (SELECT open FROM open_alerts) AS open_alerts,
                (SELECT critical FROM open_alerts) AS critical_alerts
         FROM per_practice",
    )
    .bind(f64::from(offline_after_secs))
    .bind(auth.practice_filter())
    .fetch_one(&mut *tx)
    .await?;
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let online = row.appliances - row.offline;
    Ok(FleetTotals {
        practices: count(row.practices),
        appliances: count(row.appliances),
        online: count(online),
        on_primary: count(online - row.on_backup - row.degraded),
        on_backup: count(row.on_backup),
        degraded: count(row.degraded),
        offline: count(row.offline),
        practices_offline: count(row.practices_offline),
        practices_on_backup: count(row.practices_on_backup),
        practices_degraded: count(row.practices_degraded),
        practices_primary: count(row.practices_primary),
        practices_empty: count(row.practices_empty),
        open_alerts: count(row.open_alerts),
        critical_alerts: count(row.critical_alerts),
    })
}

/// Every bucket start of `[from, to)`, so gaps (no telemetry: the appliance was offline) show.
fn buckets(from: DateTime<Utc>, to: DateTime<Utc>, bucket: Duration) -> Vec<DateTime<Utc>> {
    let mut at = from;
    let mut all = Vec::new();
    while at < to {
        all.push(at);
        at += bucket;
    }
    all
}

/// The period's whole buckets up to `now`, the last one holding `now`: `(from, to)`.
fn window(period: MetricsPeriod, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let (window_secs, bucket_secs) = period.window_and_bucket_secs();
    let now = now.timestamp();
    let step = i64::from(bucket_secs);
    let to = DateTime::from_timestamp(now - now.rem_euclid(step) + step, 0).unwrap_or_default();
    (to - Duration::seconds(i64::from(window_secs)), to)
}

#[derive(sqlx::FromRow)]
struct Bucket {
    uplink: String,
    at: DateTime<Utc>,
    rtt_ms: Option<f64>,
    loss_pct: Option<f64>,
}

/// An appliance's latency and loss per uplink over the period ending with the bucket that holds
/// `now`, one mean per bucket; buckets without telemetry are empty points.
pub async fn appliance_metrics(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
    period: MetricsPeriod,
    now: DateTime<Utc>,
) -> Result<ApplianceMetrics, FleetError> {
    let (_, bucket_secs) = period.window_and_bucket_secs();
    let step = i64::from(bucket_secs);
    let (from, to) = window(period, now);
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    // Hours and days come from the raw telemetry; a month from the hourly roll-up (which lags by
    // a minute or so, invisible at 6-hour points). Values out of range (rows from before ingest
    // checked them) are left out, as the roll-up leaves them out: two of 1e308 overflowed `avg`.
    let sql = if period == MetricsPeriod::Month {
        "SELECT uplink, date_bin(make_interval(secs => $4), hour, $2) AS at,
                sum(rtt_sum) / nullif(sum(rtt_samples), 0) AS rtt_ms,
                sum(loss_sum) / nullif(sum(samples), 0) AS loss_pct
         FROM telemetry_hourly
         WHERE appliance_id = $1 AND hour >= $2 AND hour < $3
         GROUP BY 1, 2 ORDER BY 1, 2"
    } else {
        "SELECT u ->> 'name' AS uplink,
                date_bin(make_interval(secs => $4), t.sent_at, $2) AS at,
                avg(CASE WHEN jsonb_typeof(u -> 'rtt_ms') = 'number'
                              AND (u ->> 'rtt_ms')::numeric BETWEEN 0 AND 600000
                         THEN (u ->> 'rtt_ms')::double precision END) AS rtt_ms,
                avg(CASE WHEN jsonb_typeof(u -> 'loss_pct') = 'number'
                              AND (u ->> 'loss_pct')::numeric BETWEEN 0 AND 100
                         THEN (u ->> 'loss_pct')::double precision END) AS loss_pct
         FROM telemetry t, jsonb_array_elements(
             CASE WHEN jsonb_typeof(t.body -> 'uplinks') = 'array' THEN t.body -> 'uplinks'
                  ELSE '[]'::jsonb END) u
         WHERE t.appliance_id = $1 AND t.sent_at >= $2 AND t.sent_at < $3
           AND jsonb_typeof(u -> 'name') = 'string'
         GROUP BY 1, 2 ORDER BY 1, 2"
    };
    let rows: Vec<Bucket> = sqlx::query_as(sql)
        .bind(appliance.as_uuid())
        .bind(from)
        .bind(to)
        .bind(f64::from(bucket_secs))
        .fetch_all(&mut *tx)
        .await?;
    let starts = buckets(from, to, Duration::seconds(step));
    let mut series: Vec<UplinkSeries> = Vec::new();
    for Bucket {
        uplink,
        at,
        rtt_ms,
        loss_pct,
    } in rows
    {
        if series.last().is_none_or(|s| s.uplink != uplink) {
            series.push(UplinkSeries {
                uplink: uplink.clone(),
                points: starts
                    .iter()
                    .map(|at| MetricPoint {
                        at: *at,
                        rtt_ms: None,
                        loss_pct: None,
                    })
                    .collect(),
            });
        }
        let index = usize::try_from((at - from).num_seconds() / step).unwrap_or(usize::MAX);
        if let Some(point) = series.last_mut().and_then(|s| s.points.get_mut(index)) {
            point.rtt_ms = rtt_ms;
            point.loss_pct = loss_pct;
        }
    }
    Ok(ApplianceMetrics {
        period,
        from,
        to,
        bucket_secs,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_has_sixty_one_minute_buckets_from_its_start() {
        let to: DateTime<Utc> = "2026-11-22T10:01:00Z".parse().expect("time");
        let from = to - Duration::hours(1);
        let all = buckets(from, to, Duration::minutes(1));
        assert_eq!(all.len(), 60);
        assert_eq!(all[0], from);
        assert_eq!(all[59], to - Duration::minutes(1));
    }

    #[test]
    fn the_window_ends_with_the_bucket_that_holds_now() {
        let now: DateTime<Utc> = "2026-11-22T10:00:30Z".parse().expect("time");
        let (from, to) = window(MetricsPeriod::Hour, now);
        assert_eq!(
            to,
            "2026-11-22T10:01:00Z"
                .parse::<DateTime<Utc>>()
                .expect("time")
        );
        assert_eq!(to - from, Duration::hours(1));
    }
}
