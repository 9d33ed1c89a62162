//! Alerts: what appliance events and presence mean for an MSP ([`rules_for_event`],
//! [`rules_for_presence`]: pure), how those changes land in the database ([`apply`]: in the same
//! transaction as the message that caused them), and the heartbeat sweep that notices appliances
//! gone silent without a goodbye.
//!
//! Design: a condition raises an alert keyed by (appliance, kind, subject). While that alert is
//! unresolved the same condition folds into it (`count`, `last_seen`) rather than opening another,
//! so a flapping line is one alert, not a storm. A condition that clears resolves its alert by
//! itself; people acknowledge and resolve by hand through the API.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use stayopen_shared::alerts::{AlertKind, ClinicHours};
use stayopen_shared::policy::Policy;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::{ApplianceId, TenantId};
use uuid::Uuid;

use crate::clinic::{ClinicNow, clinic_now};
use crate::db::{self, Tx};

/// A change to an appliance's alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    /// Open an alert, or fold into the unresolved one for the same condition.
    Raise {
        kind: AlertKind,
        subject: String,
        summary: String,
    },
    /// Record an alert that is over as soon as it happens (informational).
    Notice {
        kind: AlertKind,
        subject: String,
        summary: String,
    },
    /// The condition cleared: resolve its unresolved alert (any subject when `None`).
    Clear {
        kind: AlertKind,
        subject: Option<String>,
        reason: String,
    },
}

fn uplink_of(event: &ApplianceEvent) -> String {
    event.uplink.clone().unwrap_or_default()
}

/// What an appliance event means for its alerts.
pub fn rules_for_event(event: &ApplianceEvent) -> Vec<AlertChange> {
    let arrow = || {
        format!(
            "{} → {}",
            event.from.as_deref().unwrap_or("none"),
            event.to.as_deref().unwrap_or("none")
        )
    };
    match event.kind {
        EventKind::Failover => vec![AlertChange::Raise {
            kind: AlertKind::Failover,
            subject: String::new(),
            summary: format!("Failover {}: {}", arrow(), event.reason),
        }],
        EventKind::Failback => vec![
            AlertChange::Clear {
                kind: AlertKind::Failover,
                subject: None,
                reason: format!("failed back ({})", arrow()),
            },
            AlertChange::Clear {
                kind: AlertKind::OnBackupLong,
                subject: None,
                reason: format!("failed back ({})", arrow()),
            },
            AlertChange::Notice {
                kind: AlertKind::Failback,
                subject: String::new(),
                summary: format!("Failback {}: {}", arrow(), event.reason),
            },
        ],
        EventKind::UplinkDown => vec![AlertChange::Raise {
            kind: AlertKind::UplinkDown,
            subject: uplink_of(event),
            summary: format!("Uplink {} down: {}", uplink_of(event), event.reason),
        }],
        EventKind::UplinkUp => vec![AlertChange::Clear {
            kind: AlertKind::UplinkDown,
            subject: Some(uplink_of(event)),
            reason: format!("uplink {} up again", uplink_of(event)),
        }],
        EventKind::DrillFailed => vec![AlertChange::Raise {
            kind: AlertKind::DrillFailed,
            subject: String::new(),
            summary: format!("Drill failed: {}", event.reason),
        }],
        EventKind::DrillFinished => vec![AlertChange::Clear {
            kind: AlertKind::DrillFailed,
            subject: None,
            reason: "a later drill completed".into(),
        }],
        EventKind::PolicyRejected => vec![AlertChange::Raise {
            kind: AlertKind::PolicyApplyFailed,
            subject: String::new(),
            summary: event.reason.clone(),
        }],
        EventKind::PolicyApplied => vec![AlertChange::Clear {
            kind: AlertKind::PolicyApplyFailed,
            subject: None,
            reason: event.reason.clone(),
        }],
        EventKind::AgentStarted | EventKind::DrillStarted => Vec::new(),
    }
}

/// What a presence change (or a message from a silent appliance) means for its alerts.
pub fn rules_for_presence(online: bool, why: &str) -> Vec<AlertChange> {
    if online {
        vec![AlertChange::Clear {
            kind: AlertKind::ApplianceOffline,
            subject: None,
            reason: why.to_owned(),
        }]
    } else {
        vec![AlertChange::Raise {
            kind: AlertKind::ApplianceOffline,
            subject: String::new(),
            summary: format!("Appliance offline: {why}"),
        }]
    }
}

/// What a change did to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    /// The condition repeated while the alert was unresolved.
    Folded,
    /// An informational alert, over as it happened.
    Notice,
    Resolved,
}

/// What decides how an appliance's alert is raised: its effective policy (severity tuning and
/// thresholds), its practice's clinic hours at the time, and any maintenance window then.
#[derive(Debug, Clone)]
pub struct AlertContext {
    pub policy: Policy,
    pub clinic: ClinicNow,
    pub in_maintenance: bool,
}

/// Loads the [`AlertContext`] of `appliance` at `at`.
pub async fn context(
    tx: &mut Tx,
    appliance: ApplianceId,
    at: DateTime<Utc>,
) -> Result<AlertContext, sqlx::Error> {
    let row: Option<(Option<Json<Policy>>, String, Option<Json<ClinicHours>>, bool)> =
        sqlx::query_as(
            "SELECT a.desired_policy, p.time_zone, p.clinic_hours,
                    EXISTS (SELECT 1 FROM maintenance_windows m
                            WHERE m.practice_id = a.practice_id
                              AND (m.appliance_id IS NULL OR m.appliance_id = a.id)
                              AND m.starts_at <= $2 AND m.ends_at > $2)
             FROM appliances a JOIN practices p ON p.id = a.practice_id WHERE a.id = $1",
        )
        .bind(appliance.as_uuid())
        .bind(at)
        .fetch_optional(&mut **tx)
        .await?;
    let Some((policy, time_zone, hours, in_maintenance)) = row else {
        return Ok(AlertContext {
            policy: Policy::default(),
            clinic: clinic_now("UTC", None, at),
            in_maintenance: false,
        });
    };
    Ok(AlertContext {
        policy: policy.map(|p| p.0).unwrap_or_default(),
        clinic: clinic_now(&time_zone, hours.as_ref().map(|h| &h.0), at),
        in_maintenance,
    })
}

/// Applies `changes` for `appliance` inside its tenant's transaction and queues the notifications
/// they call for (in the same transaction). Returns what happened to which alert.
///
/// A raised alert takes its severity from the policy (capped while the practice is closed) and is
/// muted inside a maintenance window: recorded, never notified.
pub async fn apply(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
    changes: &[AlertChange],
    at: DateTime<Utc>,
) -> Result<Vec<(Uuid, Transition)>, sqlx::Error> {
    let mut touched = Vec::new();
    let mut raise_context: Option<AlertContext> = None;
    for change in changes {
        match change {
            AlertChange::Raise {
                kind,
                subject,
                summary,
            }
            | AlertChange::Notice {
                kind,
                subject,
                summary,
            } => {
                let notice = matches!(change, AlertChange::Notice { .. });
                let ctx = match &raise_context {
                    Some(ctx) => ctx.clone(),
                    None => {
                        let ctx = context(tx, appliance, at).await?;
                        raise_context = Some(ctx.clone());
                        ctx
                    }
                };
                let severity = ctx.policy.severity_of(*kind, ctx.clinic.open);
                let (id, inserted): (Uuid, bool) = sqlx::query_as(
                    "INSERT INTO alerts (id, tenant_id, practice_id, appliance_id, kind, severity, state,
                                         subject, summary, first_seen, last_seen,
                                         resolved_by, resolved_at, resolution, muted, after_hours)
                     SELECT $1, $2, a.practice_id, a.id, $4, $5, CASE WHEN $8 THEN 'resolved' ELSE 'open' END,
                            $6, $7, $9, $9,
                            CASE WHEN $8 THEN 'system' END, CASE WHEN $8 THEN $9 END,
                            CASE WHEN $8 THEN 'informational' END, $10, $11
                     FROM appliances a WHERE a.id = $3
                     ON CONFLICT (appliance_id, kind, subject) WHERE state <> 'resolved'
                     DO UPDATE SET count = alerts.count + 1,
                                   last_seen = greatest(alerts.last_seen, EXCLUDED.last_seen),
                                   summary = EXCLUDED.summary
                     RETURNING id, (xmax = 0)",
                )
                .bind(Uuid::new_v4())
                .bind(tenant.as_uuid())
                .bind(appliance.as_uuid())
                .bind(kind.as_str())
                .bind(severity.as_str())
                .bind(subject)
                .bind(summary)
                .bind(notice)
                .bind(at)
                .bind(ctx.in_maintenance)
                .bind(!ctx.clinic.open)
                .fetch_one(&mut **tx)
                .await?;
                touched.push((
                    id,
                    match (notice, inserted) {
                        (true, _) => Transition::Notice,
                        (false, true) => Transition::Opened,
                        (false, false) => Transition::Folded,
                    },
                ));
            }
            AlertChange::Clear {
                kind,
                subject,
                reason,
            } => {
                let ids: Vec<Uuid> = sqlx::query_scalar(
                    "UPDATE alerts SET state = 'resolved', resolved_at = $4,
                            resolved_by = 'system', resolution = $5
                     WHERE appliance_id = $1 AND kind = $2 AND ($3::text IS NULL OR subject = $3)
                       AND state <> 'resolved'
                     RETURNING id",
                )
                .bind(appliance.as_uuid())
                .bind(kind.as_str())
                .bind(subject.as_deref())
                .bind(at)
                .bind(reason)
                .fetch_all(&mut **tx)
                .await?;
                touched.extend(ids.into_iter().map(|id| (id, Transition::Resolved)));
            }
        }
    }
    crate::notify::enqueue(tx, &touched).await?;
    Ok(touched)
}

/// Every second: appliances marked online but silent past `offline_after_secs` (no goodbye, no
/// last will yet — a dead box or a cut line) go offline with an alert, failovers that have lasted
/// past their policy's `on_backup_alert_secs` raise "on backup too long", and device certificates
/// near their end raise "certificate expiring".
pub async fn heartbeat_sweep(pool: PgPool, offline_after_secs: u32) {
    let mut round: u64 = 0;
    loop {
        round += 1;
        // Certificates change slowly: every few seconds is plenty.
        if round % 5 == 1
            && let Err(e) = expiring_certificate_sweep(&pool).await
        {
            tracing::error!(error = %e, "certificate sweep failed");
        }
        if let Err(e) = sweep_once(&pool, offline_after_secs).await {
            tracing::error!(error = %e, "heartbeat sweep failed");
        }
        if let Err(e) = long_backup_sweep(&pool).await {
            tracing::error!(error = %e, "long-backup sweep failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Failovers open longer than the appliance's `on_backup_alert_secs` raise "on backup too long".
pub async fn long_backup_sweep(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_open_failovers()")
        .fetch_all(pool)
        .await?;
    let mut raised = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let long: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT f.appliance_id, extract(epoch FROM now() - f.first_seen)::bigint
             FROM alerts f JOIN appliances a ON a.id = f.appliance_id
             WHERE f.kind = 'failover' AND f.state <> 'resolved'
               AND f.first_seen < now() - make_interval(secs =>
                     coalesce((a.desired_policy ->> 'on_backup_alert_secs')::double precision, 900))
               AND NOT EXISTS (SELECT 1 FROM alerts b WHERE b.appliance_id = f.appliance_id
                               AND b.kind = 'on_backup_long' AND b.state <> 'resolved')",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (appliance, secs) in &long {
            let change = AlertChange::Raise {
                kind: AlertKind::OnBackupLong,
                subject: String::new(),
                summary: format!("On the backup uplink for {} min", secs / 60),
            };
            apply(
                &mut tx,
                tenant,
                ApplianceId(*appliance),
                &[change],
                Utc::now(),
            )
            .await?;
        }
        tx.commit().await?;
        raised += long.len();
    }
    Ok(raised)
}

/// Device certificates are renewed by enrolling again; this long before they expire, the MSP hears.
pub const CERTIFICATE_WARNING_DAYS: i32 = 30;

/// Appliances whose device certificate expires within [`CERTIFICATE_WARNING_DAYS`] raise
/// "certificate expiring" (once; enrolling again clears it).
pub async fn expiring_certificate_sweep(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT stayopen_tenants_with_expiring_certificates($1)")
            .bind(CERTIFICATE_WARNING_DAYS)
            .fetch_all(pool)
            .await?;
    let mut raised = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let expiring: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT a.id, a.cert_not_after FROM appliances a
             WHERE a.revoked_at IS NULL AND a.cert_not_after < now() + make_interval(days => $1)
               AND NOT EXISTS (SELECT 1 FROM alerts b WHERE b.appliance_id = a.id
                               AND b.kind = 'certificate_expiring' AND b.state <> 'resolved')",
        )
        .bind(CERTIFICATE_WARNING_DAYS)
        .fetch_all(&mut *tx)
        .await?;
        for (appliance, not_after) in &expiring {
            let change = AlertChange::Raise {
                kind: AlertKind::CertificateExpiring,
                subject: String::new(),
                summary: format!(
                    "Device certificate expires on {}: enrol the appliance again to renew it",
                    not_after.format("%Y-%m-%d")
                ),
            };
            apply(
                &mut tx,
                tenant,
                ApplianceId(*appliance),
                &[change],
                Utc::now(),
            )
            .await?;
        }
        tx.commit().await?;
        raised += expiring.len();
    }
    Ok(raised)
}

pub async fn sweep_once(pool: &PgPool, offline_after_secs: u32) -> Result<usize, sqlx::Error> {
    let secs = f64::from(offline_after_secs);
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT stayopen_tenants_with_silent_appliances($1)")
            .bind(secs)
            .fetch_all(pool)
            .await?;
    let mut silenced = 0;
    for tenant in tenants {
        let mut tx = db::tenant_tx(pool, TenantId(tenant)).await?;
        let gone: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE appliances SET online = false
             WHERE online AND revoked_at IS NULL AND last_seen < now() - make_interval(secs => $1)
             RETURNING id",
        )
        .bind(secs)
        .fetch_all(&mut *tx)
        .await?;
        let changes = rules_for_presence(false, &format!("no message for {offline_after_secs} s"));
        for id in &gone {
            apply(
                &mut tx,
                TenantId(tenant),
                ApplianceId(*id),
                &changes,
                Utc::now(),
            )
            .await?;
        }
        tx.commit().await?;
        silenced += gone.len();
    }
    Ok(silenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, uplink: Option<&str>) -> ApplianceEvent {
        ApplianceEvent {
            kind,
            uplink: uplink.map(str::to_owned),
            from: Some("fiber".into()),
            to: Some("lte".into()),
            reason: "active uplink down".into(),
        }
    }

    #[test]
    fn a_failover_raises_and_its_failback_clears_it_and_leaves_a_notice() {
        let raised = rules_for_event(&event(EventKind::Failover, None));
        assert!(
            matches!(&raised[..], [AlertChange::Raise { kind: AlertKind::Failover, summary, .. }] if summary.contains("fiber → lte"))
        );
        let back = rules_for_event(&event(EventKind::Failback, None));
        assert!(matches!(
            back[0],
            AlertChange::Clear {
                kind: AlertKind::Failover,
                ..
            }
        ));
        assert!(matches!(
            back[1],
            AlertChange::Clear {
                kind: AlertKind::OnBackupLong,
                ..
            }
        ));
        assert!(matches!(
            back[2],
            AlertChange::Notice {
                kind: AlertKind::Failback,
                ..
            }
        ));
    }

    #[test]
    fn an_uplink_alert_is_per_uplink_and_cleared_by_that_uplink_only() {
        let down = rules_for_event(&event(EventKind::UplinkDown, Some("fiber")));
        assert!(
            matches!(&down[..], [AlertChange::Raise { kind: AlertKind::UplinkDown, subject, .. }] if subject == "fiber")
        );
        let up = rules_for_event(&event(EventKind::UplinkUp, Some("fiber")));
        assert!(
            matches!(&up[..], [AlertChange::Clear { kind: AlertKind::UplinkDown, subject: Some(s), .. }] if s == "fiber")
        );
    }

    #[test]
    fn presence_raises_and_clears_the_offline_alert() {
        assert!(matches!(
            rules_for_presence(false, "last will")[..],
            [AlertChange::Raise {
                kind: AlertKind::ApplianceOffline,
                ..
            }]
        ));
        assert!(matches!(
            rules_for_presence(true, "back")[..],
            [AlertChange::Clear {
                kind: AlertKind::ApplianceOffline,
                ..
            }]
        ));
        assert!(rules_for_event(&event(EventKind::AgentStarted, None)).is_empty());
    }
}
