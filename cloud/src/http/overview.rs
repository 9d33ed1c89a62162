//! What the dashboard shows at a glance: fleet totals for the caller's scope, and an appliance's
//! latency and loss over a period, bucketed by the database so a month of 10-second telemetry
//! arrives as a few hundred points.

use actix_web::{get, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{
    ApiError, ApplianceMetrics, FleetTotals, MetricPoint, MetricsPeriod, UplinkSeries,
};
use utoipa::IntoParams;

use crate::domain::access::AuthUser;
use crate::domain::access::visibility::visible_appliance;
use crate::http::error::ApiFailure;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct TotalsRow {
    practices: i64,
    appliances: i64,
    online: i64,
    on_backup: i64,
    practices_offline: i64,
    practices_on_backup: i64,
    open_alerts: i64,
    critical_alerts: i64,
}

/// Counts over every practice and appliance the caller may see.
#[utoipa::path(
    tag = "fleet",
    responses((status = 200, body = FleetTotals), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/fleet/totals")]
pub async fn totals(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<FleetTotals>, ApiFailure> {
    let mut tx = auth.tx(&state.pool).await?;
    let row: TotalsRow = sqlx::query_as(
        "WITH per_practice AS (
             SELECT p.id,
                    count(a.id) AS appliances,
                    count(a.id) FILTER (WHERE a.online AND a.last_seen > now() - make_interval(secs => $1)) AS online,
                    count(a.id) FILTER (WHERE a.online AND a.last_seen > now() - make_interval(secs => $1)
                                          AND a.on_backup) AS on_backup
             FROM practices p
             LEFT JOIN appliances a ON a.practice_id = p.id AND a.revoked_at IS NULL
             WHERE $2::uuid[] IS NULL OR p.id = ANY($2)
             GROUP BY p.id
         ), open_alerts AS (
             SELECT count(*) AS open, count(*) FILTER (WHERE severity = 'critical') AS critical
             FROM alerts WHERE state <> 'resolved' AND ($2::uuid[] IS NULL OR practice_id = ANY($2))
         )
         SELECT count(*) AS practices,
                coalesce(sum(appliances), 0)::bigint AS appliances,
                coalesce(sum(online), 0)::bigint AS online,
                coalesce(sum(on_backup), 0)::bigint AS on_backup,
                count(*) FILTER (WHERE online < appliances) AS practices_offline,
                count(*) FILTER (WHERE online = appliances AND on_backup > 0) AS practices_on_backup,
                (SELECT open FROM open_alerts) AS open_alerts,
                (SELECT critical FROM open_alerts) AS critical_alerts
         FROM per_practice",
    )
    .bind(f64::from(state.config.fleet.offline_after_secs))
    .bind(auth.practice_filter())
    .fetch_one(&mut *tx)
    .await?;
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(web::Json(FleetTotals {
        practices: count(row.practices),
        appliances: count(row.appliances),
        online: count(row.online),
        on_backup: count(row.on_backup),
        offline: count(row.appliances - row.online),
        practices_offline: count(row.practices_offline),
        practices_on_backup: count(row.practices_on_backup),
        open_alerts: count(row.open_alerts),
        critical_alerts: count(row.critical_alerts),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// `hour` (default, 1-minute points), `day` (15-minute points) or `month` (30 days, 6-hour
    /// points).
    pub period: Option<MetricsPeriod>,
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

/// An appliance's latency and loss per uplink over the period, one mean per bucket.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path), MetricsQuery),
    responses((status = 200, body = ApplianceMetrics), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/metrics")]
pub async fn appliance_metrics(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<MetricsQuery>,
) -> Result<web::Json<ApplianceMetrics>, ApiFailure> {
    let appliance = path.into_inner();
    let period = query.period.unwrap_or_default();
    let (window_secs, bucket_secs) = period.window_and_bucket_secs();
    let bucket = Duration::seconds(i64::from(bucket_secs));
    // Whole buckets, the last one holding now.
    let now = Utc::now().timestamp();
    let step = i64::from(bucket_secs);
    let to = DateTime::from_timestamp(now - now.rem_euclid(step) + step, 0).unwrap_or_default();
    let from = to - Duration::seconds(i64::from(window_secs));
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    #[derive(sqlx::FromRow)]
    struct Bucket {
        uplink: String,
        at: DateTime<Utc>,
        rtt_ms: Option<f64>,
        loss_pct: Option<f64>,
    }
    // Hours and days come from the raw telemetry; a month from the hourly roll-up (which lags by
    // a minute or so, invisible at 6-hour points).
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
                avg((u ->> 'rtt_ms')::double precision) AS rtt_ms,
                avg((u ->> 'loss_pct')::double precision) AS loss_pct
         FROM telemetry t, jsonb_array_elements(t.body -> 'uplinks') u
         WHERE t.appliance_id = $1 AND t.sent_at >= $2 AND t.sent_at < $3
         GROUP BY 1, 2 ORDER BY 1, 2"
    };
    let rows: Vec<Bucket> = sqlx::query_as(sql)
        .bind(appliance.as_uuid())
        .bind(from)
        .bind(to)
        .bind(f64::from(bucket_secs))
        .fetch_all(&mut *tx)
        .await?;
    let starts = buckets(from, to, bucket);
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
    Ok(web::Json(ApplianceMetrics {
        period,
        from,
        to,
        bucket_secs,
        series,
    }))
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
}
