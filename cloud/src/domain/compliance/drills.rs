//! Drills, built from the appliances' events at ingest ([`on_event`]), and their sign-off.
//!
//! Design: `drill_started` opens a record; `drill_finished` or `drill_failed` closes the newest
//! open one of the appliance (a drill refused at once has only the closing event and starts and
//! ends at the same instant). Who started it comes from the `start_drill` command delivered to the
//! appliance just before (or named by the drill report): the drill scheduler's commands are
//! `scheduled`, a user's `manual`, none `local`. Ingest calls this once per stored event, so a
//! redelivered event changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::CommandView;
use stayopen_shared::commands::CommandSpec;
use stayopen_shared::compliance::{
    AppCheckResult, DrillOutcome, DrillRecord, DrillReport, DrillSignOff, DrillTrigger,
};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::{ApplianceId, PracticeId, TenantId};
use uuid::Uuid;

use super::ComplianceError;
use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Actor, Change};
use crate::infra::db::Tx;
use crate::infra::device_link::DeviceLink;

/// The actor the drill scheduler queues its commands as; its commands make `scheduled` drills.
pub const SCHEDULER: Actor = Actor::System("drill-schedule");

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    appliance_id: Uuid,
    serial: String,
    practice_id: Uuid,
    practice_name: String,
    trigger: DrillTrigger,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    outcome: DrillOutcome,
    reason: String,
    backup_uplink: Option<String>,
    switchover_ms: Option<i32>,
    failback_ms: Option<i32>,
    apps: sqlx::types::Json<Vec<AppCheckResult>>,
    signed_by_name: Option<String>,
    signed_by_email: Option<String>,
    signed_at: Option<DateTime<Utc>>,
    sign_off_comment: Option<String>,
}

impl From<Row> for DrillRecord {
    fn from(row: Row) -> Self {
        let sign_off = match (row.signed_by_email, row.signed_at) {
            (Some(email), Some(signed_at)) => Some(DrillSignOff {
                name: row.signed_by_name.unwrap_or_default(),
                email,
                signed_at,
                comment: row.sign_off_comment.unwrap_or_default(),
            }),
            _ => None,
        };
        DrillRecord {
            id: row.id,
            appliance_id: ApplianceId(row.appliance_id),
            appliance_serial: row.serial,
            practice_id: PracticeId(row.practice_id),
            practice_name: row.practice_name,
            trigger: row.trigger,
            started_at: row.started_at,
            finished_at: row.finished_at,
            outcome: row.outcome,
            reason: row.reason,
            backup_uplink: row.backup_uplink,
            switchover_ms: row.switchover_ms.and_then(|v| u32::try_from(v).ok()),
            failback_ms: row.failback_ms.and_then(|v| u32::try_from(v).ok()),
            apps: row.apps.0,
            sign_off,
        }
    }
}

const SELECT: &str = "SELECT d.id, d.appliance_id, a.serial, d.practice_id, p.name AS practice_name,
        d.trigger, d.started_at, d.finished_at, d.outcome, d.reason, d.backup_uplink,
        d.switchover_ms, d.failback_ms, d.apps, d.signed_by_name, d.signed_by_email, d.signed_at,
        d.sign_off_comment
    FROM drills d JOIN appliances a ON a.id = d.appliance_id JOIN practices p ON p.id = d.practice_id";

/// The practice's drills started in `[from, to)`, oldest first.
pub async fn in_period(
    tx: &mut Tx,
    practice: PracticeId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DrillRecord>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.practice_id = $1 AND d.started_at >= $2 AND d.started_at < $3
         ORDER BY d.started_at, d.id"
    )))
    .bind(practice.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(DrillRecord::from).collect())
}

/// What a list of drills is narrowed to.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrillFilter {
    pub practice: Option<PracticeId>,
    /// Only finished drills nobody has signed off yet.
    pub awaiting_sign_off: bool,
}

/// The drills the caller may see, newest first: `fetch` after the sort key `after` (started_at,
/// id) of the last drill of the previous page.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    filter: DrillFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    fetch: i64,
) -> Result<Vec<DrillRecord>, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    if let Some(practice) = filter.practice {
        visible_practice(&mut tx, auth, practice).await?;
    }
    let (after_started, after_id) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE ($1::uuid[] IS NULL OR d.practice_id = ANY($1))
           AND ($2::uuid IS NULL OR d.practice_id = $2)
           AND (NOT $3 OR (d.outcome <> 'running' AND d.signed_at IS NULL))
           AND ($4::timestamptz IS NULL OR (d.started_at, d.id) < ($4, $5))
         ORDER BY d.started_at DESC, d.id DESC LIMIT $6"
    )))
    .bind(auth.practice_filter())
    .bind(filter.practice.map(|p| p.0))
    .bind(filter.awaiting_sign_off)
    .bind(after_started)
    .bind(after_id)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(DrillRecord::from).collect())
}

async fn load(tx: &mut Tx, auth: &AuthUser, id: Uuid) -> Result<DrillRecord, ComplianceError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE d.id = $1 AND ($2::uuid[] IS NULL OR d.practice_id = ANY($2))"
    )))
    .bind(id)
    .bind(auth.practice_filter())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(DrillRecord::from)
        .ok_or(ComplianceError::NotFound("no such drill"))
}

/// One drill the caller may see.
pub async fn show(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<DrillRecord, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    load(&mut tx, auth, id).await
}

/// Signs a finished drill off as reviewed, once: the signer's name and e-mail, the time and the
/// comment are kept on the drill and in the audit log.
pub async fn sign_off(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
    comment: &str,
    now: DateTime<Utc>,
) -> Result<DrillRecord, ComplianceError> {
    let mut tx = auth.tx(pool).await?;
    let drill = load(&mut tx, auth, id).await?;
    auth.require(Permission::SignOffDrills)?;
    let user = auth.user_id()?;
    let comment = comment.trim();
    if comment.chars().count() > 4000 {
        return Err(ComplianceError::Invalid(
            "comment must be at most 4000 characters".into(),
        ));
    }
    if drill.outcome == DrillOutcome::Running {
        return Err(ComplianceError::Conflict(
            "the drill is still running; sign it off once it has finished".into(),
        ));
    }
    let (name, email): (String, String) =
        sqlx::query_as("SELECT display_name, email FROM users WHERE id = $1")
            .bind(user.0)
            .fetch_one(&mut *tx)
            .await?;
    let signed = sqlx::query(
        "UPDATE drills SET signed_by_name = $2, signed_by_email = $3, signed_at = $4,
            sign_off_comment = $5
         WHERE id = $1 AND signed_at IS NULL",
    )
    .bind(id)
    .bind(&name)
    .bind(&email)
    .bind(now)
    .bind(comment)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if signed == 0 {
        return Err(ComplianceError::Conflict(
            "the drill has already been signed off".into(),
        ));
    }
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "drill.sign_off",
            target_type: "drill",
            target_id: id.to_string(),
            before: Some(serde_json::json!({ "practice_id": drill.practice_id, "signed": false })),
            after: Some(serde_json::json!({
                "practice_id": drill.practice_id,
                "appliance_id": drill.appliance_id,
                "outcome": drill.outcome,
                "started_at": drill.started_at,
                "name": name,
                "email": email,
                "comment": comment,
            })),
        },
    )
    .await?;
    let drill = load(&mut tx, auth, id).await?;
    tx.commit().await?;
    Ok(drill)
}

/// Starts a drill by hand on every online appliance of a visible practice: one `start_drill`
/// command each (queued and audited by [`crate::domain::commands::queue`]).
pub async fn start(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    practice: PracticeId,
    duration_secs: u32,
) -> Result<Vec<CommandView>, ComplianceError> {
    let spec = CommandSpec::StartDrill { duration_secs };
    // Before anything else, so an out-of-bounds drill is a 400 whether or not an appliance is
    // online.
    spec.validate().map_err(ComplianceError::Invalid)?;
    let appliances: Vec<Uuid> = {
        let mut tx = auth.tx(pool).await?;
        visible_practice(&mut tx, auth, practice).await?;
        auth.require(Permission::Operate)?;
        sqlx::query_scalar(
            "SELECT id FROM appliances WHERE practice_id = $1 AND revoked_at IS NULL AND online
             ORDER BY serial",
        )
        .bind(practice.as_uuid())
        .fetch_all(&mut *tx)
        .await?
    };
    if appliances.is_empty() {
        return Err(ComplianceError::Conflict(
            "no appliance of the practice is online".into(),
        ));
    }
    let mut queued = Vec::with_capacity(appliances.len());
    for appliance in appliances {
        queued.push(
            crate::domain::commands::queue(pool, auth, link, ApplianceId(appliance), &spec, None)
                .await?,
        );
    }
    Ok(queued)
}

/// The `start_drill` command behind a drill event: the one its report names, else the latest
/// delivered to the appliance shortly before and not yet linked to a drill. Returns its id and
/// who queued it.
async fn command_behind(
    tx: &mut Tx,
    appliance: ApplianceId,
    named: Option<Uuid>,
    sent_at: DateTime<Utc>,
) -> Result<Option<(Uuid, DrillTrigger)>, sqlx::Error> {
    let found: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT c.id, c.created_by FROM commands c
         WHERE c.appliance_id = $1 AND c.kind = 'start_drill'
           AND NOT EXISTS (SELECT 1 FROM drills d WHERE d.command_id = c.id)
           AND CASE WHEN $2::uuid IS NOT NULL THEN c.id = $2
                    ELSE c.delivered_at IS NOT NULL
                         AND c.delivered_at BETWEEN $3 - interval '10 minutes' AND $3 + interval '2 minutes'
               END
         ORDER BY c.delivered_at DESC NULLS LAST LIMIT 1",
    )
    .bind(appliance.as_uuid())
    .bind(named)
    .bind(sent_at)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(found.map(|(id, created_by)| {
        let trigger = if created_by == SCHEDULER.label() {
            DrillTrigger::Scheduled
        } else {
            DrillTrigger::Manual
        };
        (id, trigger)
    }))
}

/// What the officer reads about a closed drill: the appliance's reason, and for a drill that
/// reached the applications, which failed through the backup and why.
pub fn closing_reason(event: &ApplianceEvent, report: Option<&DrillReport>) -> String {
    let failed: Vec<String> = report
        .map(|r| {
            r.apps
                .iter()
                .filter(|a| !a.reachable)
                .map(|a| match &a.reason {
                    Some(why) => format!("{} ({why})", a.app),
                    None => a.app.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    if failed.is_empty() {
        event.reason.clone()
    } else {
        format!(
            "{}; unreachable through the backup: {}",
            event.reason,
            failed.join(", ")
        )
    }
}

/// The outcome of a closing event.
pub fn closing_outcome(event: &ApplianceEvent) -> DrillOutcome {
    match (event.kind, &event.drill) {
        (EventKind::DrillFinished, Some(report)) if !report.passed => DrillOutcome::Failed,
        (EventKind::DrillFinished, _) => DrillOutcome::Passed,
        _ => DrillOutcome::Failed,
    }
}

/// Ingest's hook for one newly stored event of `appliance`: opens or closes its drill record.
pub async fn on_event(
    tx: &mut Tx,
    tenant: TenantId,
    appliance: ApplianceId,
    event: &ApplianceEvent,
    sent_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let report = event.drill.as_ref();
    match event.kind {
        EventKind::DrillStarted => {
            let command =
                command_behind(tx, appliance, report.and_then(|r| r.command_id), sent_at).await?;
            let (command_id, trigger) = command.unzip();
            sqlx::query(
                "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, command_id,
                     started_at, outcome, reason, backup_uplink)
                 SELECT $1, $2, practice_id, id, $3, $4, $5, 'running', $6, $7
                 FROM appliances WHERE id = $8",
            )
            .bind(Uuid::new_v4())
            .bind(tenant.as_uuid())
            .bind(trigger.unwrap_or(DrillTrigger::Local))
            .bind(command_id)
            .bind(sent_at)
            .bind(&event.reason)
            .bind(event.to.as_deref())
            .bind(appliance.as_uuid())
            .execute(&mut **tx)
            .await?;
        }
        EventKind::DrillFinished | EventKind::DrillFailed => {
            let named = report.and_then(|r| r.command_id);
            let open: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
                "SELECT id, command_id FROM drills
                 WHERE appliance_id = $1 AND outcome = 'running'
                   AND started_at <= $2 + interval '2 minutes'
                   AND ($3::uuid IS NULL OR command_id IS NULL OR command_id = $3)
                 ORDER BY started_at DESC LIMIT 1",
            )
            .bind(appliance.as_uuid())
            .bind(sent_at)
            .bind(named)
            .fetch_optional(&mut **tx)
            .await?;
            let backup = report
                .and_then(|r| r.backup.clone())
                .or_else(|| event.to.clone());
            let switchover = report
                .and_then(|r| r.switchover_ms)
                .and_then(|v| i32::try_from(v).ok());
            let failback = report
                .and_then(|r| r.failback_ms)
                .and_then(|v| i32::try_from(v).ok());
            let apps = sqlx::types::Json(report.map(|r| r.apps.clone()).unwrap_or_default());
            let outcome = closing_outcome(event);
            let reason = closing_reason(event, report);
            match open {
                Some((id, linked)) => {
                    // A report naming the command settles who started it.
                    let relink = match (linked, named) {
                        (None, Some(_)) => command_behind(tx, appliance, named, sent_at).await?,
                        _ => None,
                    };
                    let (relink_id, relink_trigger) = relink.unzip();
                    sqlx::query(
                        "UPDATE drills SET finished_at = $2, outcome = $3, reason = $4,
                            backup_uplink = coalesce($5, backup_uplink), switchover_ms = $6,
                            failback_ms = $7, apps = $8,
                            command_id = coalesce($9, command_id), trigger = coalesce($10, trigger)
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(sent_at)
                    .bind(outcome)
                    .bind(reason)
                    .bind(backup)
                    .bind(switchover)
                    .bind(failback)
                    .bind(apps)
                    .bind(relink_id)
                    .bind(relink_trigger)
                    .execute(&mut **tx)
                    .await?;
                }
                None => {
                    let command = command_behind(tx, appliance, named, sent_at).await?;
                    let (command_id, trigger) = command.unzip();
                    sqlx::query(
                        "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger,
                             command_id, started_at, finished_at, outcome, reason, backup_uplink,
                             switchover_ms, failback_ms, apps)
                         SELECT $1, $2, practice_id, id, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11
                         FROM appliances WHERE id = $12",
                    )
                    .bind(Uuid::new_v4())
                    .bind(tenant.as_uuid())
                    .bind(trigger.unwrap_or(DrillTrigger::Local))
                    .bind(command_id)
                    .bind(sent_at)
                    .bind(outcome)
                    .bind(reason)
                    .bind(backup)
                    .bind(switchover)
                    .bind(failback)
                    .bind(apps)
                    .bind(appliance.as_uuid())
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether a drill of the appliance is running (its failover is not an incident).
pub async fn running(tx: &mut Tx, appliance: ApplianceId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM drills WHERE appliance_id = $1 AND outcome = 'running'
                          AND started_at > now() - interval '2 hours')",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&mut **tx)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, report: Option<DrillReport>) -> ApplianceEvent {
        ApplianceEvent {
            kind,
            uplink: None,
            from: Some("fiber".into()),
            to: Some("lte".into()),
            reason: "drill over".into(),
            drill: report,
        }
    }

    fn report(passed: bool) -> DrillReport {
        DrillReport {
            command_id: None,
            backup: Some("lte".into()),
            switchover_ms: Some(800),
            failback_ms: Some(400),
            apps: vec![
                AppCheckResult {
                    app: "EHR".into(),
                    reachable: true,
                    latency_ms: Some(40.0),
                    reason: None,
                },
                AppCheckResult {
                    app: "Lab interface".into(),
                    reachable: passed,
                    latency_ms: None,
                    reason: (!passed).then(|| "tcp lab.example.com:2575: timed out".into()),
                },
            ],
            passed,
        }
    }

    #[test]
    fn a_finished_drill_whose_applications_failed_through_the_backup_is_a_failed_drill() {
        assert_eq!(
            closing_outcome(&event(EventKind::DrillFinished, Some(report(true)))),
            DrillOutcome::Passed
        );
        assert_eq!(
            closing_outcome(&event(EventKind::DrillFinished, Some(report(false)))),
            DrillOutcome::Failed
        );
        assert_eq!(
            closing_outcome(&event(EventKind::DrillFailed, None)),
            DrillOutcome::Failed
        );
    }

    #[test]
    fn the_reason_of_a_failed_drill_names_each_unreachable_application_and_why() {
        let failed = event(EventKind::DrillFinished, Some(report(false)));
        assert_eq!(
            closing_reason(&failed, failed.drill.as_ref()),
            "drill over; unreachable through the backup: Lab interface (tcp lab.example.com:2575: timed out)"
        );
        let passed = event(EventKind::DrillFinished, Some(report(true)));
        assert_eq!(closing_reason(&passed, passed.drill.as_ref()), "drill over");
    }
}
