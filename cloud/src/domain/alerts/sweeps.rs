//! The sweeps: what the cloud notices by itself, with nobody reporting it — appliances gone
//! silent without a goodbye, failovers lasting too long, drills overdue, flapping that calmed
//! down, device certificates near their end.
//!
//! Each sweep is one round at a time it is given (`now`, bound into its SQL instead of the
//! database's `now()`), so tests run it at any instant. Each has its own loop and interval
//! ([`heartbeat_loop`], [`long_backup_loop`], [`certificate_loop`], [`drill_and_flapping_loop`]),
//! reading the time from a [`Clock`]; `startup` spawns them under the supervisor, which drops a
//! loop between rounds' awaits when the cloud stops (a round is one transaction per tenant, so an
//! interrupted one is rolled back and redone after the restart).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::alerts::AlertKind;
use stayopen_shared::{ApplianceId, TenantId};
use uuid::Uuid;

use super::rules::{AlertChange, rules_for_presence};
use super::store::apply_as_of;
use crate::infra::clock::Clock;
use crate::infra::db::{self, Tx};
use crate::infra::hearing::Hearing;
use crate::infra::metrics::{Metrics, OFFLINE_JUDGEMENT_SUSPENDED};

/// Silence is judged every second: an appliance gone quiet is noticed within a second of its
/// `offline_after_secs`.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// "On backup too long" is judged every second, like silence.
pub const LONG_BACKUP_EVERY: Duration = Duration::from_secs(1);
/// Certificates change slowly: every few seconds is plenty.
pub const CERTIFICATES_EVERY: Duration = Duration::from_secs(5);
/// Drills and flapping are judged over days and half-hours: every ten seconds is plenty.
pub const DRILLS_AND_FLAPPING_EVERY: Duration = Duration::from_secs(10);

/// Runs `round` every `period`, the first at once. A round that overruns delays the next rather
/// than bunching the missed ones together.
async fn every<F, Fut>(period: Duration, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        round().await;
    }
}

/// Every [`HEARTBEAT_EVERY`]: appliances marked online but silent past `offline_after_secs` (no
/// goodbye, no last will yet — a dead box or a cut line) go offline with an alert ([`sweep_once`]).
pub async fn heartbeat_loop(
    pool: PgPool,
    offline_after_secs: u32,
    hearing: Arc<Hearing>,
    metrics: Arc<Metrics>,
    clock: Clock,
) {
    every(HEARTBEAT_EVERY, || async {
        match sweep_once(&pool, offline_after_secs, &hearing, clock.now()).await {
            Ok(Sweep::Suspended(why)) => {
                metrics.increment(OFFLINE_JUDGEMENT_SUSPENDED, "reason", why);
            }
            Ok(Sweep::Judged(_)) => {}
            Err(e) => {
                // The database is what the cloud hears through.
                hearing.deaf("database");
                tracing::error!(error = %e, "heartbeat sweep failed");
            }
        }
    })
    .await;
}

/// Every [`LONG_BACKUP_EVERY`]: failovers that have lasted past their policy's
/// `on_backup_alert_secs` raise "on backup too long" ([`long_backup_sweep`]).
pub async fn long_backup_loop(pool: PgPool, clock: Clock) {
    every(LONG_BACKUP_EVERY, || async {
        if let Err(e) = long_backup_sweep(&pool, clock.now()).await {
            tracing::error!(error = %e, "long-backup sweep failed");
        }
    })
    .await;
}

/// Every [`CERTIFICATES_EVERY`]: device certificates near their end raise "certificate expiring"
/// ([`expiring_certificate_sweep`]).
pub async fn certificate_loop(pool: PgPool, clock: Clock) {
    every(CERTIFICATES_EVERY, || async {
        if let Err(e) = expiring_certificate_sweep(&pool, clock.now()).await {
            tracing::error!(error = %e, "certificate sweep failed");
        }
    })
    .await;
}

/// Every [`DRILLS_AND_FLAPPING_EVERY`]: drills overdue and flapping that calmed down
/// ([`drill_and_flapping_sweep`]).
pub async fn drill_and_flapping_loop(pool: PgPool, clock: Clock) {
    every(DRILLS_AND_FLAPPING_EVERY, || async {
        if let Err(e) = drill_and_flapping_sweep(&pool, clock.now()).await {
            tracing::error!(error = %e, "drill and flapping sweep failed");
        }
    })
    .await;
}

/// Applies each appliance's change in `tx` at `now`: what every sweep does with the appliances it
/// found. Returns how many it applied.
async fn apply_each(
    tx: &mut Tx,
    tenant: TenantId,
    changes: impl IntoIterator<Item = (Uuid, AlertChange)>,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut applied = 0;
    for (appliance, change) in changes {
        apply_as_of(tx, tenant, ApplianceId(appliance), &[change], now, now).await?;
        applied += 1;
    }
    Ok(applied)
}

/// Failovers open longer than the appliance's `on_backup_alert_secs` raise "on backup too long".
pub async fn long_backup_sweep(pool: &PgPool, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_open_failovers()")
        .fetch_all(pool)
        .await?;
    let mut raised = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let long: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT f.appliance_id, extract(epoch FROM $1 - f.first_seen)::bigint
             FROM alerts f JOIN appliances a ON a.id = f.appliance_id
             WHERE f.kind = 'failover' AND f.state <> 'resolved'
               AND f.first_seen < $1 - make_interval(secs =>
                     coalesce((a.desired_policy ->> 'on_backup_alert_secs')::double precision, 900))
               AND NOT EXISTS (SELECT 1 FROM alerts b WHERE b.appliance_id = f.appliance_id
                               AND b.kind = 'on_backup_long' AND b.state <> 'resolved')",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        raised += apply_each(
            &mut tx,
            tenant,
            long.into_iter().map(|(appliance, secs)| {
                let change = AlertChange::Raise {
                    kind: AlertKind::OnBackupLong,
                    subject: String::new(),
                    summary: format!("On the backup uplink for {} min", secs / 60),
                };
                (appliance, change)
            }),
            now,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(raised)
}

/// Raises "drill overdue" for appliances whose last passed drill (from the drills table, or a
/// `drill_finished` event whose report did not fail; enrolment if they never drilled) is older than their policy's `drill_overdue_days`, and resolves "flapping" once a
/// whole window has passed without a failover. Returns the alerts raised and resolved.
pub async fn drill_and_flapping_sweep(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_appliances()")
        .fetch_all(pool)
        .await?;
    let mut changed = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let overdue: Vec<(Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT a.id, coalesce(d.last_drill, a.enrolled_at), d.last_drill IS NOT NULL
             FROM appliances a
             LEFT JOIN LATERAL (SELECT greatest(
                    (SELECT max(r.finished_at) FROM drills r
                     WHERE r.appliance_id = a.id AND r.outcome = 'passed'),
                    (SELECT max(e.sent_at) FROM appliance_events e
                     WHERE e.appliance_id = a.id AND e.kind = 'drill_finished'
                       AND coalesce(e.body -> 'drill' ->> 'passed', 'true') = 'true')) AS last_drill
             ) d ON true
             WHERE a.revoked_at IS NULL
               AND coalesce((a.desired_policy ->> 'drill_overdue_days')::integer, 105) > 0
               AND coalesce(d.last_drill, a.enrolled_at) < $1 - make_interval(days =>
                     coalesce((a.desired_policy ->> 'drill_overdue_days')::integer, 105))
               AND NOT EXISTS (SELECT 1 FROM alerts b WHERE b.appliance_id = a.id
                               AND b.kind = 'drill_overdue' AND b.state <> 'resolved')",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        changed += apply_each(
            &mut tx,
            tenant,
            overdue.into_iter().map(|(appliance, since, drilled)| {
                let since = since.format("%Y-%m-%d");
                let summary = if drilled {
                    format!("No completed failover drill since {since}")
                } else {
                    format!("No completed failover drill since enrolment on {since}")
                };
                let change = AlertChange::Raise {
                    kind: AlertKind::DrillOverdue,
                    subject: String::new(),
                    summary,
                };
                (appliance, change)
            }),
            now,
        )
        .await?;
        let calm: Vec<Uuid> = sqlx::query_scalar(
            "SELECT f.appliance_id FROM alerts f JOIN appliances a ON a.id = f.appliance_id
             WHERE f.kind = 'flapping' AND f.state <> 'resolved'
               AND NOT EXISTS (
                   SELECT 1 FROM appliance_events e
                   WHERE e.appliance_id = f.appliance_id AND e.kind = 'failover'
                     AND e.sent_at > $1 - make_interval(secs =>
                           coalesce((a.desired_policy ->> 'flapping_window_secs')::double precision, 1800)))",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        changed += apply_each(
            &mut tx,
            tenant,
            calm.into_iter().map(|appliance| {
                let change = AlertChange::Clear {
                    kind: AlertKind::Flapping,
                    subject: None,
                    reason: "no failover for a whole flapping window".into(),
                };
                (appliance, change)
            }),
            now,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(changed)
}

/// Device certificates are renewed by enrolling again; this long before they expire, the MSP hears.
pub const CERTIFICATE_WARNING_DAYS: i32 = 30;

/// Appliances whose device certificate expires within [`CERTIFICATE_WARNING_DAYS`] raise
/// "certificate expiring" (once; enrolling again clears it).
pub async fn expiring_certificate_sweep(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT stayopen_tenants_with_expiring_certificates($1, $2)")
            .bind(CERTIFICATE_WARNING_DAYS)
            .bind(now)
            .fetch_all(pool)
            .await?;
    let mut raised = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let expiring: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT a.id, a.cert_not_after FROM appliances a
             WHERE a.revoked_at IS NULL AND a.cert_not_after < $2 + make_interval(days => $1)
               AND NOT EXISTS (SELECT 1 FROM alerts b WHERE b.appliance_id = a.id
                               AND b.kind = 'certificate_expiring' AND b.state <> 'resolved')",
        )
        .bind(CERTIFICATE_WARNING_DAYS)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        raised += apply_each(
            &mut tx,
            tenant,
            expiring.into_iter().map(|(appliance, not_after)| {
                let change = AlertChange::Raise {
                    kind: AlertKind::CertificateExpiring,
                    subject: String::new(),
                    summary: format!(
                        "Device certificate expires on {}: enrol the appliance again to renew it",
                        not_after.format("%Y-%m-%d")
                    ),
                };
                (appliance, change)
            }),
            now,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(raised)
}

/// What one heartbeat sweep did about silent appliances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Declared this many offline.
    Judged(usize),
    /// Declared nobody offline: the cloud could not have heard them (the reason).
    Suspended(&'static str),
}

/// Declares offline the appliances silent past `offline_after_secs` — unless the cloud could not
/// have heard them: while it is deaf, during the grace period after hearing resumes, or when most
/// of the fleet went silent at once (see [`crate::infra::hearing`]).
pub async fn sweep_once(
    pool: &PgPool,
    offline_after_secs: u32,
    hearing: &Hearing,
    now: DateTime<Utc>,
) -> Result<Sweep, sqlx::Error> {
    let secs = f64::from(offline_after_secs);
    if !hearing.may_declare_offline(now) {
        return Ok(Sweep::Suspended("not_hearing"));
    }
    let (silent, online): (i64, i64) =
        sqlx::query_as("SELECT * FROM stayopen_fleet_silence($1, $2)")
            .bind(secs)
            .bind(now)
            .fetch_one(pool)
            .await?;
    if crate::infra::hearing::is_fleet_wide_silence(silent, online) {
        tracing::warn!(
            silent,
            online,
            "most of the fleet went silent at once: the cloud, not the fleet, lost its hearing"
        );
        hearing.deaf("fleet_wide_silence");
        return Ok(Sweep::Suspended("fleet_wide_silence"));
    }
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT stayopen_tenants_with_silent_appliances($1, $2)")
            .bind(secs)
            .bind(now)
            .fetch_all(pool)
            .await?;
    let mut silenced = 0;
    for tenant in tenants {
        let mut tx = db::tenant_tx(pool, TenantId(tenant)).await?;
        let gone: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE appliances SET online = false
             WHERE online AND revoked_at IS NULL AND last_seen < $2 - make_interval(secs => $1)
             RETURNING id",
        )
        .bind(secs)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let changes = rules_for_presence(false, &format!("no message for {offline_after_secs} s"));
        for id in &gone {
            crate::infra::stream::notify_appliance(&mut tx, ApplianceId(*id)).await?;
            apply_as_of(
                &mut tx,
                TenantId(tenant),
                ApplianceId(*id),
                &changes,
                now,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        silenced += gone.len();
    }
    Ok(Sweep::Judged(silenced))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sweep_runs_at_once_then_once_per_period_and_an_overrun_delays_the_next() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = rounds.clone();
        let sweep = tokio::spawn(every(Duration::from_secs(5), move || {
            let counted = counted.clone();
            async move {
                // The third round takes 7 s, longer than the period.
                if counted.fetch_add(1, Ordering::SeqCst) == 2 {
                    tokio::time::sleep(Duration::from_secs(7)).await;
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3, "at 0, 5 and 10 s");
        // The third round ends at 17 s; the next comes then, not twice at once.
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            rounds.load(Ordering::SeqCst),
            4,
            "the next one 5 s after that"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 5);
        sweep.abort();
    }
}
