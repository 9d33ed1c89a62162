//! Alerts: what appliance events and presence mean for an MSP ([`rules_for_event`],
//! [`rules_for_presence`]: pure), how those changes land in the database ([`apply`]: in the same
//! transaction as the message that caused them), and the heartbeat sweep that notices appliances
//! gone silent without a goodbye.
//!
//! Design: a condition raises an alert keyed by (appliance, kind, subject). While that alert is
//! unresolved the same condition folds into it (`count`, `last_seen`) rather than opening another,
//! so a flapping line is one alert, not a storm. A condition that clears resolves its alert by
//! itself; people acknowledge and resolve by hand through the API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use stayopen_shared::alerts::{AlertKind, ClinicHours};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::policy::Policy;
use stayopen_shared::telemetry::{Telemetry, UplinkHealth};
use stayopen_shared::{ApplianceId, TenantId};
use uuid::Uuid;

use crate::domain::clinic::{ClinicNow, clinic_now};
use crate::domain::notifications::Transition;
use crate::infra::db::{self, Tx};
use crate::infra::hearing::Hearing;
use crate::infra::metrics::{Metrics, OFFLINE_JUDGEMENT_SUSPENDED};

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
        EventKind::DrillFinished => vec![
            AlertChange::Clear {
                kind: AlertKind::DrillFailed,
                subject: None,
                reason: "a later drill completed".into(),
            },
            AlertChange::Clear {
                kind: AlertKind::DrillOverdue,
                subject: None,
                reason: "a drill completed".into(),
            },
        ],
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

/// Per-uplink state the telemetry rules keep between messages (`appliances.uplink_conditions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UplinkConditions {
    /// `sent_at` of the last telemetry applied: replayed or late messages change nothing.
    pub last_at: Option<DateTime<Utc>>,
    pub uplinks: BTreeMap<String, UplinkCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UplinkCondition {
    /// Since when the uplink has been past a degradation threshold without a break.
    pub degraded_since: Option<DateTime<Utc>>,
    pub degraded_raised: bool,
    /// Metered uplinks: the calendar month (UTC, `YYYY-MM`) counted, the bytes used in it so far
    /// and the interface counter last seen (a lower one means the counter restarted).
    pub month: String,
    pub month_bytes: u64,
    pub last_counter: u64,
    pub over_budget_raised: bool,
}

const MIB: u64 = 1024 * 1024;

/// What a telemetry message means for the "uplink degraded" and "metered over budget" alerts,
/// updating `conditions`. An uplink is degraded while it loses at least `degraded_loss_pct` of its
/// probes or answers slower than `degraded_rtt_ms`; the alert waits until that has lasted
/// `degraded_for_secs`, so one bad sample on a lossy line raises nothing. A down uplink has its
/// own alert, so it clears "degraded".
pub fn rules_for_telemetry(
    conditions: &mut UplinkConditions,
    telemetry: &Telemetry,
    policy: &Policy,
    at: DateTime<Utc>,
) -> Vec<AlertChange> {
    if conditions.last_at.is_some_and(|last| at <= last) {
        return Vec::new();
    }
    conditions.last_at = Some(at);
    let mut changes = Vec::new();
    let month = at.format("%Y-%m").to_string();
    for uplink in &telemetry.uplinks {
        let state = conditions.uplinks.entry(uplink.name.clone()).or_default();
        let slow = uplink
            .rtt_ms
            .is_some_and(|rtt| rtt > f64::from(policy.degraded_rtt_ms));
        let lossy = uplink.loss_pct >= policy.degraded_loss_pct;
        let probing = matches!(uplink.health, UplinkHealth::Up | UplinkHealth::Degraded);
        if probing && (slow || lossy) {
            let since = *state.degraded_since.get_or_insert(at);
            let lasted = (at - since).num_seconds();
            if !state.degraded_raised && lasted >= i64::from(policy.degraded_for_secs) {
                state.degraded_raised = true;
                let mut symptoms = Vec::new();
                if lossy {
                    symptoms.push(format!("{:.0} % loss", uplink.loss_pct));
                }
                if let (true, Some(rtt)) = (slow, uplink.rtt_ms) {
                    symptoms.push(format!("{rtt:.0} ms round trip"));
                }
                changes.push(AlertChange::Raise {
                    kind: AlertKind::UplinkDegraded,
                    subject: uplink.name.clone(),
                    summary: format!(
                        "Uplink {} degraded for {} min: {}",
                        uplink.name,
                        lasted / 60,
                        symptoms.join(", ")
                    ),
                });
            }
        } else {
            if state.degraded_raised {
                changes.push(AlertChange::Clear {
                    kind: AlertKind::UplinkDegraded,
                    subject: Some(uplink.name.clone()),
                    reason: format!("uplink {} is clean again", uplink.name),
                });
            }
            state.degraded_since = None;
            state.degraded_raised = false;
        }
        if uplink.metered {
            let counter = uplink.rx_bytes.saturating_add(uplink.tx_bytes);
            if state.month != month {
                if state.over_budget_raised {
                    changes.push(AlertChange::Clear {
                        kind: AlertKind::MeteredOverBudget,
                        subject: Some(uplink.name.clone()),
                        reason: format!("a new month ({month}) began"),
                    });
                }
                state.month = month.clone();
                state.month_bytes = 0;
                state.last_counter = counter;
                state.over_budget_raised = false;
            }
            let used = if counter >= state.last_counter {
                counter - state.last_counter
            } else {
                counter
            };
            state.month_bytes = state.month_bytes.saturating_add(used);
            state.last_counter = counter;
            let budget = u64::from(policy.metered_data_alert_mb) * MIB;
            if !state.over_budget_raised && state.month_bytes > budget {
                state.over_budget_raised = true;
                changes.push(AlertChange::Raise {
                    kind: AlertKind::MeteredOverBudget,
                    subject: uplink.name.clone(),
                    summary: format!(
                        "Metered uplink {} has used {} MB this month (budget {} MB)",
                        uplink.name,
                        state.month_bytes / MIB,
                        policy.metered_data_alert_mb
                    ),
                });
            }
        }
    }
    changes
}

/// "Flapping" when `failovers` (in the policy's window, this one included) reach the policy's
/// count; each further failover folds into the open alert.
pub fn rules_for_failover_count(failovers: i64, policy: &Policy) -> Vec<AlertChange> {
    if failovers < i64::from(policy.flapping_failovers) {
        return Vec::new();
    }
    vec![AlertChange::Raise {
        kind: AlertKind::Flapping,
        subject: String::new(),
        summary: format!(
            "{failovers} failovers within {} min: the primary line keeps dropping",
            policy.flapping_window_secs / 60
        ),
    }]
}

/// The alert changes a telemetry message or event calls for beyond the pure per-message rules:
/// telemetry conditions (kept in `appliances.uplink_conditions`) and flapping (counted from the
/// appliance's recent failovers).
pub async fn stateful_rules(
    tx: &mut Tx,
    appliance: ApplianceId,
    telemetry: Option<&Telemetry>,
    failover: bool,
    at: DateTime<Utc>,
) -> Result<Vec<AlertChange>, sqlx::Error> {
    let mut changes = Vec::new();
    if telemetry.is_none() && !failover {
        return Ok(changes);
    }
    let policy = context(tx, appliance, at).await?.policy;
    if let Some(telemetry) = telemetry {
        let stored: Option<Json<UplinkConditions>> =
            sqlx::query_scalar("SELECT uplink_conditions FROM appliances WHERE id = $1")
                .bind(appliance.as_uuid())
                .fetch_optional(&mut **tx)
                .await?;
        let mut conditions = stored.map(|c| c.0).unwrap_or_default();
        let before = conditions.clone();
        changes.extend(rules_for_telemetry(&mut conditions, telemetry, &policy, at));
        if conditions != before {
            sqlx::query("UPDATE appliances SET uplink_conditions = $2 WHERE id = $1")
                .bind(appliance.as_uuid())
                .bind(Json(&conditions))
                .execute(&mut **tx)
                .await?;
        }
    }
    if failover {
        let failovers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM appliance_events
             WHERE appliance_id = $1 AND kind = 'failover'
               AND sent_at > $2 - make_interval(secs => $3) AND sent_at <= $2",
        )
        .bind(appliance.as_uuid())
        .bind(at)
        .bind(f64::from(policy.flapping_window_secs))
        .fetch_one(&mut **tx)
        .await?;
        changes.extend(rules_for_failover_count(failovers, &policy));
    }
    Ok(changes)
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
    #[derive(sqlx::FromRow)]
    struct Row {
        desired_policy: Option<Json<Policy>>,
        time_zone: String,
        clinic_hours: Option<Json<ClinicHours>>,
        in_maintenance: bool,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT a.desired_policy, p.time_zone, p.clinic_hours,
                    EXISTS (SELECT 1 FROM maintenance_windows m
                            WHERE m.practice_id = a.practice_id
                              AND (m.appliance_id IS NULL OR m.appliance_id = a.id)
                              AND m.starts_at <= $2 AND m.ends_at > $2) AS in_maintenance
             FROM appliances a JOIN practices p ON p.id = a.practice_id WHERE a.id = $1",
    )
    .bind(appliance.as_uuid())
    .bind(at)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(Row {
        desired_policy: policy,
        time_zone,
        clinic_hours: hours,
        in_maintenance,
    }) = row
    else {
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
    crate::domain::notifications::enqueue(tx, &touched).await?;
    let ids: Vec<Uuid> = touched.iter().map(|(id, _)| *id).collect();
    crate::infra::stream::notify_alerts(tx, &ids).await?;
    Ok(touched)
}

/// Every second: appliances marked online but silent past `offline_after_secs` (no goodbye, no
/// last will yet — a dead box or a cut line) go offline with an alert, failovers that have lasted
/// past their policy's `on_backup_alert_secs` raise "on backup too long", and device certificates
/// near their end raise "certificate expiring".
pub async fn heartbeat_sweep(
    pool: PgPool,
    offline_after_secs: u32,
    hearing: Arc<Hearing>,
    metrics: Arc<Metrics>,
) {
    let mut round: u64 = 0;
    loop {
        round += 1;
        // Certificates change slowly: every few seconds is plenty.
        if round % 5 == 1
            && let Err(e) = expiring_certificate_sweep(&pool).await
        {
            tracing::error!(error = %e, "certificate sweep failed");
        }
        match sweep_once(&pool, offline_after_secs, &hearing, Utc::now()).await {
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
        if let Err(e) = long_backup_sweep(&pool).await {
            tracing::error!(error = %e, "long-backup sweep failed");
        }
        // Drills and flapping are judged over days and half-hours: every ten seconds is plenty.
        if round % 10 == 2
            && let Err(e) = drill_and_flapping_sweep(&pool).await
        {
            tracing::error!(error = %e, "drill and flapping sweep failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Applies each appliance's change in `tx`, now: what every sweep does with the appliances it
/// found. Returns how many it applied.
async fn apply_each(
    tx: &mut Tx,
    tenant: TenantId,
    changes: impl IntoIterator<Item = (Uuid, AlertChange)>,
) -> Result<usize, sqlx::Error> {
    let mut applied = 0;
    for (appliance, change) in changes {
        apply(tx, tenant, ApplianceId(appliance), &[change], Utc::now()).await?;
        applied += 1;
    }
    Ok(applied)
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
        )
        .await?;
        tx.commit().await?;
    }
    Ok(raised)
}

/// Raises "drill overdue" for appliances whose last completed drill (or enrolment, if they never
/// drilled) is older than their policy's `drill_overdue_days`, and resolves "flapping" once a
/// whole window has passed without a failover. Returns the alerts raised and resolved.
pub async fn drill_and_flapping_sweep(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_appliances()")
        .fetch_all(pool)
        .await?;
    let mut changed = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let overdue: Vec<(Uuid, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT a.id, coalesce(d.last_drill, a.enrolled_at), d.last_drill IS NOT NULL
             FROM appliances a
             LEFT JOIN LATERAL (SELECT max(e.sent_at) AS last_drill FROM appliance_events e
                                WHERE e.appliance_id = a.id AND e.kind = 'drill_finished') d ON true
             WHERE a.revoked_at IS NULL
               AND coalesce((a.desired_policy ->> 'drill_overdue_days')::integer, 105) > 0
               AND coalesce(d.last_drill, a.enrolled_at) < now() - make_interval(days =>
                     coalesce((a.desired_policy ->> 'drill_overdue_days')::integer, 105))
               AND NOT EXISTS (SELECT 1 FROM alerts b WHERE b.appliance_id = a.id
                               AND b.kind = 'drill_overdue' AND b.state <> 'resolved')",
        )
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
        )
        .await?;
        let calm: Vec<Uuid> = sqlx::query_scalar(
            "SELECT f.appliance_id FROM alerts f JOIN appliances a ON a.id = f.appliance_id
             WHERE f.kind = 'flapping' AND f.state <> 'resolved'
               AND NOT EXISTS (
                   SELECT 1 FROM appliance_events e
                   WHERE e.appliance_id = f.appliance_id AND e.kind = 'failover'
                     AND e.sent_at > now() - make_interval(secs =>
                           coalesce((a.desired_policy ->> 'flapping_window_secs')::double precision, 1800)))",
        )
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
    now: chrono::DateTime<Utc>,
) -> Result<Sweep, sqlx::Error> {
    let secs = f64::from(offline_after_secs);
    if !hearing.may_declare_offline(now) {
        return Ok(Sweep::Suspended("not_hearing"));
    }
    let (silent, online): (i64, i64) = sqlx::query_as("SELECT * FROM stayopen_fleet_silence($1)")
        .bind(secs)
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
            crate::infra::stream::notify_appliance(&mut tx, ApplianceId(*id)).await?;
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
    Ok(Sweep::Judged(silenced))
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

    fn telemetry(rtt_ms: f64, loss_pct: f64, lte_counter: u64) -> Telemetry {
        use stayopen_shared::telemetry::UplinkTelemetry;
        Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![
                UplinkTelemetry {
                    name: "fiber".into(),
                    priority: 0,
                    metered: false,
                    health: UplinkHealth::Up,
                    rtt_ms: Some(rtt_ms),
                    loss_pct,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
                UplinkTelemetry {
                    name: "lte".into(),
                    priority: 1,
                    metered: true,
                    health: UplinkHealth::Up,
                    rtt_ms: Some(60.0),
                    loss_pct: 0.0,
                    rx_bytes: lte_counter,
                    tx_bytes: 0,
                },
            ],
            policy_version: None,
            samples: None,
            outbox: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn kinds(changes: &[AlertChange]) -> Vec<(&'static str, AlertKind)> {
        changes
            .iter()
            .map(|c| match c {
                AlertChange::Raise { kind, .. } => ("raise", *kind),
                AlertChange::Notice { kind, .. } => ("notice", *kind),
                AlertChange::Clear { kind, .. } => ("clear", *kind),
            })
            .collect()
    }

    #[test]
    fn a_lossy_uplink_raises_degraded_only_after_the_policys_period_and_clears_when_clean() {
        let policy = Policy::default();
        let mut conditions = UplinkConditions::default();
        let start = at("2026-11-22T10:00:00Z");
        let lossy = telemetry(20.0, 12.0, 0);
        for secs in [0, 60, 110] {
            let changes = rules_for_telemetry(
                &mut conditions,
                &lossy,
                &policy,
                start + chrono::Duration::seconds(secs),
            );
            assert!(changes.is_empty(), "not yet at {secs} s: {changes:?}");
        }
        let raised = rules_for_telemetry(
            &mut conditions,
            &lossy,
            &policy,
            start + chrono::Duration::seconds(120),
        );
        assert!(
            matches!(&raised[..], [AlertChange::Raise { kind: AlertKind::UplinkDegraded, subject, summary }]
                if subject == "fiber" && summary.contains("12 % loss"))
        );
        let again = start + chrono::Duration::seconds(130);
        assert!(
            rules_for_telemetry(&mut conditions, &lossy, &policy, again).is_empty(),
            "once"
        );
        let clean = rules_for_telemetry(
            &mut conditions,
            &telemetry(20.0, 0.0, 0),
            &policy,
            start + chrono::Duration::seconds(140),
        );
        assert_eq!(kinds(&clean), vec![("clear", AlertKind::UplinkDegraded)]);
    }

    #[test]
    fn one_bad_sample_on_a_lossy_line_raises_nothing() {
        let policy = Policy::default();
        let mut conditions = UplinkConditions::default();
        let start = at("2026-11-22T10:00:00Z");
        for (secs, loss) in [(0, 30.0), (10, 0.0), (130, 30.0), (140, 0.0), (260, 30.0)] {
            let changes = rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, loss, 0),
                &policy,
                start + chrono::Duration::seconds(secs),
            );
            assert!(changes.is_empty(), "{secs} s: {changes:?}");
        }
    }

    #[test]
    fn metered_data_is_counted_per_month_across_counter_restarts() {
        let policy = Policy {
            metered_data_alert_mb: 110,
            ..Policy::default()
        };
        let mut conditions = UplinkConditions::default();
        let mb = |n: u64| n * MIB;
        let day = |d: &str| at(&format!("2026-11-{d}T10:00:00Z"));
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(500)),
                &policy,
                day("01")
            )
            .is_empty(),
            "the first sample is the baseline"
        );
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(560)),
                &policy,
                day("02")
            )
            .is_empty()
        );
        // The appliance rebooted: the counter starts again from zero; 60 + 45 MB used so far.
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(45)),
                &policy,
                day("03")
            )
            .is_empty()
        );
        let over = rules_for_telemetry(
            &mut conditions,
            &telemetry(20.0, 0.0, mb(52)),
            &policy,
            day("04"),
        );
        assert_eq!(kinds(&over), vec![("raise", AlertKind::MeteredOverBudget)]);
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(90)),
                &policy,
                day("05")
            )
            .is_empty(),
            "once a month"
        );
        let december = rules_for_telemetry(
            &mut conditions,
            &telemetry(20.0, 0.0, mb(91)),
            &policy,
            at("2026-12-01T00:05:00Z"),
        );
        assert_eq!(
            kinds(&december),
            vec![("clear", AlertKind::MeteredOverBudget)]
        );
        // A late message from November changes nothing.
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(900)),
                &policy,
                day("30")
            )
            .is_empty()
        );
    }

    #[test]
    fn flapping_needs_the_policys_number_of_failovers_in_its_window() {
        let policy = Policy::default();
        assert!(rules_for_failover_count(2, &policy).is_empty());
        assert_eq!(
            kinds(&rules_for_failover_count(3, &policy)),
            vec![("raise", AlertKind::Flapping)]
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
