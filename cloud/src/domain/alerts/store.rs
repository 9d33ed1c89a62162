//! How alert changes land in the database: the state the flapping rule reads
//! ([`failover_rules`]; the telemetry rules' conditions are kept by ingest, [`super::rules::telemetry_rules`]), what decides how an alert is raised ([`context`]), and [`apply`], which
//! records changes in the transaction of the message that caused them and queues their
//! notifications there too.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use stayopen_shared::alerts::ClinicHours;
use stayopen_shared::policy::Policy;
use stayopen_shared::{ApplianceId, TenantId};
use uuid::Uuid;

use super::rules::{AlertChange, rules_for_failover_count};
use crate::domain::clinic::{ClinicNow, clinic_now};
use crate::domain::notifications::Transition;
use crate::infra::db::Tx;

/// The alert changes a failover event calls for beyond the pure per-event rules: flapping,
/// counted from the appliance's recent failovers.
pub async fn failover_rules(
    tx: &mut Tx,
    appliance: ApplianceId,
    at: DateTime<Utc>,
) -> Result<Vec<AlertChange>, sqlx::Error> {
    let policy = context(tx, appliance, at).await?.policy;
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
    Ok(rules_for_failover_count(failovers, &policy))
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
///
/// `at` is when the change happened (for what an appliance reports, by its clock); the
/// notifications are planned from the wall clock. The sweeps, which run at a time they are
/// given, use [`apply_as_of`].
pub async fn apply(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
    changes: &[AlertChange],
    at: DateTime<Utc>,
) -> Result<Vec<(Uuid, Transition)>, sqlx::Error> {
    apply_as_of(tx, tenant, appliance, changes, at, Utc::now()).await
}

/// [`apply`], with the notifications planned as of `now` (escalation delays and clinic hours
/// count from it).
pub async fn apply_as_of(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
    changes: &[AlertChange],
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, Transition)>, sqlx::Error> {
    let mut touched = Vec::new();
    // The rule of each touched alert, for its `alert.transition` span.
    let mut kinds = Vec::new();
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
                .bind(kind)
                .bind(severity)
                .bind(subject)
                .bind(summary)
                .bind(notice)
                .bind(at)
                .bind(ctx.in_maintenance)
                .bind(!ctx.clinic.open)
                .fetch_one(&mut **tx)
                .await?;
                kinds.push(*kind);
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
                .bind(kind)
                .bind(subject.as_deref())
                .bind(at)
                .bind(reason)
                .fetch_all(&mut **tx)
                .await?;
                kinds.extend(ids.iter().map(|_| *kind));
                touched.extend(ids.into_iter().map(|id| (id, Transition::Resolved)));
            }
        }
    }
    for (&(id, transition), kind) in touched.iter().zip(&kinds) {
        // One span per transition, a child of the message's (or request's) span; the
        // notifications it queues carry its trace context to their delivery.
        use tracing::Instrument;
        let span = tracing::info_span!(
            "alert.transition",
            alert_id = %id,
            rule = ?kind,
            transition = ?transition,
            appliance_id = %appliance,
        );
        crate::domain::notifications::enqueue(tx, &[(id, transition)], now)
            .instrument(span)
            .await?;
    }
    let ids: Vec<Uuid> = touched.iter().map(|(id, _)| *id).collect();
    crate::infra::stream::notify_alerts(tx, &ids).await?;
    Ok(touched)
}
