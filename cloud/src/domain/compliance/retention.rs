//! Retention: raw telemetry is kept `retention.telemetry_days`; what the evidence is built from
//! (hourly roll-ups, events, drills, finished incidents) six years and a margin (HIPAA
//! 164.316(b)(2) asks six years from creation). The audit log is never trimmed: its hash chain is
//! verified from its first row.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

/// Six years (with their leap days) and a month's margin.
pub const RECORDS_DAYS: i64 = 6 * 366 + 31;

/// The cut-offs at `now`: raw telemetry sent before the first goes, records before the second.
pub fn cutoffs(now: DateTime<Utc>, telemetry_days: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    (
        now - Duration::days(i64::from(telemetry_days)),
        now - Duration::days(RECORDS_DAYS),
    )
}

/// Rows deleted, per kind of record.
pub type Deleted = Vec<(String, i64)>;

/// Deletes what is past its retention at `now`, for every tenant.
pub async fn enforce(
    pool: &PgPool,
    now: DateTime<Utc>,
    telemetry_days: u32,
) -> Result<Deleted, sqlx::Error> {
    let (telemetry_before, records_before) = cutoffs(now, telemetry_days);
    sqlx::query_as("SELECT kind, deleted FROM stayopen_enforce_retention($1, $2)")
        .bind(telemetry_before)
        .bind(records_before)
        .fetch_all(pool)
        .await
}

/// Daily, [`enforce`] at the clock's time.
pub async fn retention_loop(pool: PgPool, clock: crate::infra::clock::Clock, telemetry_days: u32) {
    let mut daily = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
    loop {
        daily.tick().await;
        match enforce(&pool, clock.now(), telemetry_days).await {
            Ok(deleted) => {
                let total: i64 = deleted.iter().map(|(_, n)| n).sum();
                tracing::info!(total, ?deleted, "retention enforced");
            }
            Err(e) => tracing::error!(error = %e, "retention failed; nothing was deleted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_outlive_six_years_and_telemetry_its_configured_days() {
        let now: DateTime<Utc> = "2032-12-03T00:00:00Z".parse().expect("time");
        let (telemetry, records) = cutoffs(now, 90);
        assert_eq!(telemetry, now - Duration::days(90));
        assert!(records < now - Duration::days(6 * 365 + 2));
        assert!(records > now - Duration::days(7 * 365));
    }
}
