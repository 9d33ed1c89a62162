//! Availability per practice and month, from the hourly roll-up `availability_hourly`.
//!
//! Each stored telemetry sample adds, to its appliance and hour (UTC, by `sent_at`), the seconds
//! it covers (the policy's telemetry interval times its `samples`) as observed, and the same
//! seconds as primary-up (the preferred uplink up or degraded), effective (some uplink carries
//! traffic) and on-backup when they hold ([`sample_seconds`]). Ingest adds once per stored
//! message, so replays do not count twice. Nothing is assumed for time nobody reported on: it is a
//! gap, never up. An hour's sums are capped at 3600 s (samples sent late by an appliance whose
//! clock jumped cannot make an hour longer).
//!
//! The table, for anyone seeding it (the evidence benchmark uses [`insert_hours`]):
//! `availability_hourly (tenant_id, appliance_id, hour, observed_secs, primary_secs,
//! effective_secs, backup_secs)`, primary key `(appliance_id, hour)`.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use sqlx::PgPool;
use stayopen_shared::compliance::{AvailabilityDay, AvailabilityMonth};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth};
use stayopen_shared::{ApplianceId, PracticeId, TenantId};

use super::ComplianceError;
use crate::domain::access::AuthUser;
use crate::domain::access::visibility::visible_practice;
use crate::infra::db::Tx;

/// The seconds one sample adds to its hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourSample {
    pub observed: u32,
    pub primary: u32,
    pub effective: u32,
    pub backup: u32,
}

/// What one telemetry sample, covering `interval_secs` per reporting window, says.
pub fn sample_seconds(telemetry: &Telemetry, interval_secs: u32) -> HourSample {
    let observed = interval_secs.saturating_mul(telemetry.sample_count());
    let when = |holds: bool| if holds { observed } else { 0 };
    HourSample {
        observed,
        primary: when(
            telemetry
                .primary()
                .is_some_and(|p| matches!(p.health, UplinkHealth::Up | UplinkHealth::Degraded)),
        ),
        effective: when(telemetry.active_uplink.is_some()),
        backup: when(telemetry.on_backup()),
    }
}

/// Ingest's hook for newly stored telemetry samples, any number of this tenant's appliances at
/// once: one statement adds every sample to its hour. `interval_secs` is each appliance's
/// telemetry interval under its policy (ingest has just read the policies, with the rows it
/// locked); an appliance missing from it counts the policy default.
pub async fn on_telemetry(
    tx: &mut Tx,
    tenant: TenantId,
    samples: &[(ApplianceId, &Telemetry, DateTime<Utc>)],
    interval_secs: &std::collections::HashMap<ApplianceId, u32>,
) -> Result<(), sqlx::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let default_interval = stayopen_shared::policy::Policy::default().telemetry_interval_secs;
    let rows: Vec<(ApplianceId, HourRow)> = samples
        .iter()
        .map(|(appliance, telemetry, sent_at)| {
            let interval = interval_secs
                .get(appliance)
                .copied()
                .unwrap_or(default_interval);
            let seconds = sample_seconds(telemetry, interval);
            let row = HourRow {
                hour: *sent_at,
                observed_secs: seconds.observed,
                primary_secs: seconds.primary,
                effective_secs: seconds.effective,
                backup_secs: seconds.backup,
            };
            (*appliance, row)
        })
        .collect();
    insert_appliance_hours(tx, tenant, &rows).await
}

/// Seconds to add to one appliance-hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRow {
    /// Any instant in the hour.
    pub hour: DateTime<Utc>,
    pub observed_secs: u32,
    pub primary_secs: u32,
    pub effective_secs: u32,
    pub backup_secs: u32,
}

/// Adds `rows` to an appliance's hours (one statement however many rows: seeding a year of
/// hours for a benchmark takes one call per appliance).
pub async fn insert_hours(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
    rows: &[HourRow],
) -> Result<(), sqlx::Error> {
    let rows: Vec<(ApplianceId, HourRow)> = rows.iter().map(|row| (appliance, *row)).collect();
    insert_appliance_hours(tx, tenant, &rows).await
}

/// Adds each row to its appliance's hour, in one statement.
async fn insert_appliance_hours(
    tx: &mut Tx,
    tenant: TenantId,
    rows: &[(ApplianceId, HourRow)],
) -> Result<(), sqlx::Error> {
    let as_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let appliances: Vec<uuid::Uuid> = rows.iter().map(|(a, _)| a.0).collect();
    let hours: Vec<DateTime<Utc>> = rows.iter().map(|(_, r)| r.hour).collect();
    let observed: Vec<i32> = rows.iter().map(|(_, r)| as_i32(r.observed_secs)).collect();
    let primary: Vec<i32> = rows.iter().map(|(_, r)| as_i32(r.primary_secs)).collect();
    let effective: Vec<i32> = rows.iter().map(|(_, r)| as_i32(r.effective_secs)).collect();
    let backup: Vec<i32> = rows.iter().map(|(_, r)| as_i32(r.backup_secs)).collect();
    // Sorted, so that concurrent batches touching the same hours take their row locks in one
    // order and cannot deadlock.
    sqlx::query(
        "INSERT INTO availability_hourly AS h
             (tenant_id, appliance_id, hour, observed_secs, primary_secs, effective_secs, backup_secs)
         SELECT $1, t.appliance, date_trunc('hour', t.hour), sum(t.o), sum(t.p), sum(t.e), sum(t.b)
         FROM unnest($2::uuid[], $3::timestamptz[], $4::integer[], $5::integer[], $6::integer[],
                     $7::integer[])
              AS t(appliance, hour, o, p, e, b)
         GROUP BY 2, 3
         ORDER BY 2, 3
         ON CONFLICT (appliance_id, hour) DO UPDATE SET
             observed_secs  = h.observed_secs + EXCLUDED.observed_secs,
             primary_secs   = h.primary_secs + EXCLUDED.primary_secs,
             effective_secs = h.effective_secs + EXCLUDED.effective_secs,
             backup_secs    = h.backup_secs + EXCLUDED.backup_secs",
    )
    .bind(tenant.as_uuid())
    .bind(&appliances)
    .bind(&hours)
    .bind(&observed)
    .bind(&primary)
    .bind(&effective)
    .bind(&backup)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One appliance's span of existence: from its enrolment (or its first report, if earlier) to its
/// revocation or now. Only this span can be a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Summed seconds of one day over the practice's appliances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaySums {
    pub observed: u64,
    pub primary: u64,
    pub effective: u64,
    pub backup: u64,
}

fn pct(part: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| part as f64 * 100.0 / of as f64)
}

fn day_start(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The appliance-seconds of `date` within the appliances' lifetimes.
pub fn period_secs(date: NaiveDate, lifetimes: &[Lifetime]) -> u64 {
    let start = day_start(date);
    let end = start + Duration::days(1);
    lifetimes
        .iter()
        .map(|l| {
            let from = l.from.max(start);
            let to = l.to.min(end);
            u64::try_from((to - from).num_seconds()).unwrap_or(0)
        })
        .sum()
}

/// The months of `[from, to]` (inclusive dates, each month clipped to them), from per-day sums.
/// Pure: the figures the API and the evidence package show.
pub fn build_months(
    practice: PracticeId,
    from: NaiveDate,
    to: NaiveDate,
    sums: &std::collections::BTreeMap<NaiveDate, DaySums>,
    lifetimes: &[Lifetime],
) -> Vec<AvailabilityMonth> {
    let mut months: Vec<AvailabilityMonth> = Vec::new();
    let mut totals: Vec<DaySums> = Vec::new();
    let mut date = from;
    while date <= to {
        let first = date.with_day(1).unwrap_or(date);
        if months.last().is_none_or(|m| m.month != first) {
            months.push(AvailabilityMonth {
                practice_id: practice,
                month: first,
                primary_pct: None,
                effective_pct: None,
                period_secs: 0,
                observed_secs: 0,
                gap_secs: 0,
                on_backup_secs: 0,
                days: Vec::new(),
            });
            totals.push(DaySums::default());
        }
        let day = sums.get(&date).copied().unwrap_or_default();
        let period = period_secs(date, lifetimes);
        let observed = day.observed;
        let gap = period.saturating_sub(observed);
        let (Some(month), Some(total)) = (months.last_mut(), totals.last_mut()) else {
            break;
        };
        month.days.push(AvailabilityDay {
            date,
            primary_pct: pct(day.primary, observed),
            effective_pct: pct(day.effective, observed),
            gap_secs: gap,
            observed_secs: observed,
        });
        month.period_secs += period;
        month.observed_secs += observed;
        month.gap_secs += gap;
        month.on_backup_secs += day.backup;
        total.primary += day.primary;
        total.effective += day.effective;
        let Some(next) = date.succ_opt() else { break };
        date = next;
    }
    for (month, total) in months.iter_mut().zip(&totals) {
        month.primary_pct = pct(total.primary, month.observed_secs);
        month.effective_pct = pct(total.effective, month.observed_secs);
    }
    months
}

/// The practice's availability per month of `[from, to]` (inclusive dates, UTC; each month
/// clipped to the range), each with its days. Reads the hourly roll-up only.
pub async fn months(
    tx: &mut Tx,
    practice: PracticeId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<AvailabilityMonth>, sqlx::Error> {
    let start = day_start(from);
    let end = day_start(to) + Duration::days(1);
    let rows: Vec<(NaiveDate, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT (h.hour AT TIME ZONE 'UTC')::date AS day,
                sum(least(h.observed_secs, 3600))::bigint,
                sum(least(h.primary_secs, 3600))::bigint,
                sum(least(h.effective_secs, 3600))::bigint,
                sum(least(h.backup_secs, 3600))::bigint
         FROM availability_hourly h JOIN appliances a ON a.id = h.appliance_id
         WHERE a.practice_id = $1 AND h.hour >= $2 AND h.hour < $3
         GROUP BY 1",
    )
    .bind(practice.as_uuid())
    .bind(start)
    .bind(end)
    .fetch_all(&mut **tx)
    .await?;
    // Read after the roll-up rows, never before: each statement sees the commits made before it,
    // and roll-ups only add hours, so the lifetimes cover every hour counted above. Read first, a
    // roll-up committing in between left a new appliance's lifetime starting at its enrolment,
    // after the hours it had just reported, and the month's period at zero.
    let lifetimes: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT least(a.enrolled_at, coalesce(
                    (SELECT min(h.hour) FROM availability_hourly h WHERE h.appliance_id = a.id),
                    a.enrolled_at)),
                least(coalesce(a.revoked_at, now()), now())
         FROM appliances a WHERE a.practice_id = $1",
    )
    .bind(practice.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    let lifetimes: Vec<Lifetime> = lifetimes
        .into_iter()
        .map(|(from, to)| Lifetime { from, to })
        .collect();
    let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    let sums = rows
        .into_iter()
        .map(|(day, o, p, e, b)| {
            (
                day,
                DaySums {
                    observed: as_u64(o),
                    primary: as_u64(p),
                    effective: as_u64(e),
                    backup: as_u64(b),
                },
            )
        })
        .collect();
    Ok(build_months(practice, from, to, &sums, &lifetimes))
}

/// The range shown when a request names none: the twelve calendar months up to `today`.
pub fn default_range(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = today.with_day(1).unwrap_or(today);
    let from = first
        .checked_sub_months(chrono::Months::new(11))
        .unwrap_or(first);
    (from, today)
}

/// The longest range one request may ask for: six years, what the records are kept for.
const MAX_DAYS: i64 = 6 * 366;

/// A visible practice's availability for the API.
pub async fn for_caller(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<AvailabilityMonth>, ComplianceError> {
    if to < from {
        return Err(ComplianceError::Invalid(
            "to must not be before from".into(),
        ));
    }
    if (to - from).num_days() > MAX_DAYS {
        return Err(ComplianceError::Invalid(
            "from and to may be at most six years apart".into(),
        ));
    }
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    Ok(months(&mut tx, practice, from, to).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayopen_shared::telemetry::UplinkTelemetry;
    use uuid::Uuid;

    fn uplink(name: &str, priority: u8, health: UplinkHealth) -> UplinkTelemetry {
        UplinkTelemetry {
            name: name.into(),
            priority,
            metered: priority > 1,
            health,
            rtt_ms: None,
            loss_pct: 0.0,
            rx_bytes: 0,
            tx_bytes: 0,
            cellular: None,
        }
    }

    fn telemetry(active: Option<&str>, primary: UplinkHealth, samples: Option<u32>) -> Telemetry {
        Telemetry {
            active_uplink: active.map(str::to_owned),
            uplinks: vec![
                uplink("fiber", 1, primary),
                uplink("lte", 2, UplinkHealth::Up),
            ],
            policy_version: None,
            samples,
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
        }
    }

    #[test]
    fn a_sample_on_the_backup_counts_as_effective_but_not_primary() {
        let s = sample_seconds(&telemetry(Some("lte"), UplinkHealth::Down, None), 10);
        assert_eq!(
            s,
            HourSample {
                observed: 10,
                primary: 0,
                effective: 10,
                backup: 10
            }
        );
    }

    #[test]
    fn a_merged_sample_covers_every_window_it_merged_and_all_down_is_not_effective() {
        let s = sample_seconds(&telemetry(None, UplinkHealth::Down, Some(6)), 10);
        assert_eq!(s.observed, 60);
        assert_eq!(s.effective, 0);
        let degraded = sample_seconds(&telemetry(Some("fiber"), UplinkHealth::Degraded, None), 10);
        assert_eq!(degraded.primary, 10);
        assert_eq!(degraded.backup, 0);
    }

    #[test]
    fn unreported_time_is_a_gap_and_never_counts_as_up() {
        let date = NaiveDate::from_ymd_opt(2026, 3, 10).expect("date");
        let practice = PracticeId(Uuid::from_u128(1));
        let lifetimes = [Lifetime {
            from: day_start(date) - Duration::days(30),
            to: day_start(date) + Duration::days(30),
        }];
        let mut sums = std::collections::BTreeMap::new();
        sums.insert(
            date,
            DaySums {
                observed: 43_200,
                primary: 43_200 - 3600,
                effective: 43_200,
                backup: 3600,
            },
        );
        let months = build_months(practice, date, date, &sums, &lifetimes);
        assert_eq!(months.len(), 1);
        let month = &months[0];
        assert_eq!(
            month.month,
            NaiveDate::from_ymd_opt(2026, 3, 1).expect("date")
        );
        assert_eq!(month.period_secs, 86_400);
        assert_eq!(month.gap_secs, 43_200);
        assert_eq!(month.days[0].effective_pct, Some(100.0));
        let primary = month.primary_pct.expect("observed");
        assert!((primary - 100.0 * 39_600.0 / 43_200.0).abs() < 1e-9);
    }

    #[test]
    fn without_a_range_the_last_twelve_calendar_months_are_shown() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).expect("date");
        assert_eq!(
            default_range(today),
            (NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"), today)
        );
    }

    #[test]
    fn a_range_across_months_is_clipped_to_its_dates_and_a_silent_day_has_no_percentage() {
        let from = NaiveDate::from_ymd_opt(2026, 1, 30).expect("date");
        let to = NaiveDate::from_ymd_opt(2026, 2, 2).expect("date");
        let lifetimes = [Lifetime {
            from: day_start(from) - Duration::days(1),
            to: day_start(to) + Duration::days(1),
        }];
        let months = build_months(
            PracticeId(Uuid::from_u128(1)),
            from,
            to,
            &Default::default(),
            &lifetimes,
        );
        assert_eq!(months.len(), 2);
        assert_eq!(months[0].days.len(), 2);
        assert_eq!(months[1].days.len(), 2);
        assert_eq!(months[1].gap_secs, 2 * 86_400);
        assert_eq!(months[1].primary_pct, None);
    }
}
