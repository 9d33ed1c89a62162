//! Evidence packages are kept six years from their creation (HIPAA 164.316(b)(2)(i)), then
//! deleted by [`delete_expired`], which the evidence schedule runs every hour (and which any
//! retention job may call).

use chrono::{DateTime, Months, Utc};
use sqlx::PgPool;

/// How long a package is kept.
pub const KEEP_MONTHS: u32 = 6 * 12;

/// Packages requested before this are past their retention at `now`.
pub fn cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_sub_months(Months::new(KEEP_MONTHS))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Deletes every tenant's packages older than six years at `now`; how many went.
pub async fn delete_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT stayopen_delete_expired_evidence($1)")
        .bind(cutoff(now))
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_is_kept_six_calendar_years() {
        let now: DateTime<Utc> = "2032-12-03T10:00:00Z".parse().expect("time");
        assert_eq!(
            cutoff(now),
            "2026-12-03T10:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("time")
        );
    }
}
