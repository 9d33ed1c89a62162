//! Queues commands for appliances (audited), lists and shows them; delivers queued commands to
//! appliances that are online, redelivers the unacknowledged, expires the stale, and records the
//! appliances' results.
//!
//! Design: PostgreSQL is the queue. A command is `queued` until published to an online appliance
//! (`delivered`), published again every [`REDELIVER_AFTER`] until the appliance acknowledges it
//! (the appliance ignores duplicates by id), and `expired` if its deadline passes first. The loop
//! runs when woken (a command was queued, an appliance came online) and every few seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::CommandView;
use stayopen_shared::commands::{CommandResult, CommandSpec, CommandStatus, DeviceCommand};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId, TenantId};
use uuid::Uuid;

use crate::domain::access::visibility::visible_appliance;
use crate::domain::access::{AccessError, AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::infra::db;
use crate::infra::device_link::DeviceLink;

/// How long a delivered command waits for its acknowledgement before it is published again.
pub const REDELIVER_AFTER: Duration = Duration::from_secs(15);
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Runs forever.
pub async fn deliver_loop(pool: PgPool, link: DeviceLink, offline_after_secs: u32) {
    loop {
        if let Err(e) = deliver_once(&pool, &link, offline_after_secs).await {
            tracing::error!(error = %e, "command delivery failed; retrying");
        }
        tokio::select! {
            _ = link.wake_delivery.notified() => {}
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

#[derive(sqlx::FromRow)]
struct Deliverable {
    id: Uuid,
    appliance_id: Uuid,
    spec: sqlx::types::Json<CommandSpec>,
    expires_at: chrono::DateTime<Utc>,
}

/// One pass over every tenant with pending commands.
pub async fn deliver_once(
    pool: &PgPool,
    link: &DeviceLink,
    offline_after_secs: u32,
) -> Result<(), sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_pending_commands()")
        .fetch_all(pool)
        .await?;
    for tenant in tenants {
        let mut tx = db::tenant_tx(pool, TenantId(tenant)).await?;
        let expired = sqlx::query(
            "UPDATE commands SET status = 'expired', finished_at = now(),
                    detail = 'not acknowledged before it expired'
             WHERE status IN ('queued', 'delivered') AND expires_at <= now()",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if expired > 0 {
            tracing::info!(%tenant, expired, "commands expired");
        }
        let due: Vec<Deliverable> = sqlx::query_as(
            "UPDATE commands c SET status = 'delivered', delivered_at = now(), deliveries = deliveries + 1
             FROM appliances a
             WHERE a.id = c.appliance_id AND a.revoked_at IS NULL
               AND a.online AND a.last_seen > now() - make_interval(secs => $1)
               AND (c.status = 'queued'
                    OR (c.status = 'delivered' AND c.delivered_at < now() - make_interval(secs => $2)))
             RETURNING c.id, c.appliance_id, c.spec, c.expires_at",
        )
        .bind(f64::from(offline_after_secs))
        .bind(REDELIVER_AFTER.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for command in due {
            let appliance = ApplianceId(command.appliance_id);
            let body = DeviceCommand {
                id: command.id,
                expires_at: command.expires_at,
                spec: command.spec.0,
            };
            let payload =
                Envelope::new(MessageId(Uuid::new_v4()), appliance, Utc::now(), body).encode();
            link.publish(
                DeviceTopic::new(appliance, Channel::Commands).to_string(),
                payload,
            );
        }
    }
    Ok(())
}

/// Records an appliance's answer to one of its commands. Answers to unknown commands, other
/// appliances' commands or finished commands change nothing (returns false).
pub async fn record_result(
    tx: &mut db::Tx,
    appliance: ApplianceId,
    result: &CommandResult,
) -> Result<bool, sqlx::Error> {
    let status = match result.status {
        CommandStatus::Acknowledged | CommandStatus::Succeeded | CommandStatus::Failed => {
            result.status
        }
        // A device may only acknowledge or finish.
        _ => return Ok(false),
    };
    let updated = sqlx::query(
        "UPDATE commands SET
            status = CASE WHEN $3 = 'acknowledged' AND status = 'acknowledged' THEN status ELSE $3 END,
            acknowledged_at = coalesce(acknowledged_at, now()),
            finished_at = CASE WHEN $3 IN ('succeeded', 'failed') THEN now() ELSE finished_at END,
            detail = $4,
            result = coalesce($5, result)
         WHERE id = $1 AND appliance_id = $2
           AND status IN ('queued', 'delivered', 'acknowledged')",
    )
    .bind(result.command_id)
    .bind(appliance.as_uuid())
    .bind(status)
    .bind(&result.detail)
    .bind(result.data.as_ref())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Why queuing or reading a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command does not exist or the caller may not see its appliance.
    #[error("{0}")]
    NotFound(&'static str),
    /// A command or lifetime that breaks the rules; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A stored status this build does not know.
    #[error("unknown status {0:?}")]
    UnknownStatus(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// How long a command waits for delivery when the caller does not say, and the range one may
/// choose: 10 s to a week.
const DEFAULT_EXPIRES_IN_SECS: u32 = 3600;
const EXPIRES_IN_SECS: std::ops::RangeInclusive<u32> = 10..=7 * 24 * 3600;

#[derive(sqlx::FromRow)]
struct CommandRow {
    id: Uuid,
    appliance_id: Uuid,
    spec: sqlx::types::Json<CommandSpec>,
    status: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    deliveries: i32,
    acknowledged_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    detail: Option<String>,
    result: Option<serde_json::Value>,
}

const COMMAND_SELECT: &str =
    "SELECT id, appliance_id, spec, status, stayopen_actor_name(created_by) AS created_by,
        created_at, expires_at, delivered_at, deliveries, acknowledged_at, finished_at, detail, result FROM commands";

impl TryFrom<CommandRow> for CommandView {
    type Error = CommandError;

    fn try_from(row: CommandRow) -> Result<Self, CommandError> {
        Ok(CommandView {
            id: row.id,
            appliance_id: ApplianceId(row.appliance_id),
            spec: row.spec.0,
            status: CommandStatus::parse(&row.status)
                .ok_or_else(|| CommandError::UnknownStatus(row.status.clone()))?,
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            delivered_at: row.delivered_at,
            deliveries: u32::try_from(row.deliveries).unwrap_or(0),
            acknowledged_at: row.acknowledged_at,
            finished_at: row.finished_at,
            detail: row.detail,
            result: row.result,
        })
    }
}

async fn load(tx: &mut db::Tx, id: Uuid) -> Result<Option<CommandView>, CommandError> {
    let row: Option<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{COMMAND_SELECT} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(CommandView::try_from).transpose()
}

/// Queues a command for a visible appliance (audited) and wakes the delivery loop; it is
/// delivered as soon as the appliance is online and expires after `expires_in_secs` (default an
/// hour) unacknowledged.
pub async fn queue(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    appliance: ApplianceId,
    spec: &CommandSpec,
    expires_in_secs: Option<u32>,
) -> Result<CommandView, CommandError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    // After the visibility check, so that an appliance the caller may not see is not found
    // rather than forbidden.
    auth.require(Permission::Operate)?;
    spec.validate().map_err(CommandError::Invalid)?;
    let expires_in = expires_in_secs.unwrap_or(DEFAULT_EXPIRES_IN_SECS);
    if !EXPIRES_IN_SECS.contains(&expires_in) {
        return Err(CommandError::Invalid(
            "expires_in_secs must be between 10 and 604800".into(),
        ));
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, appliance_id, kind, spec, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(appliance.as_uuid())
    .bind(spec.kind())
    .bind(sqlx::types::Json(spec))
    .bind(auth.actor().label())
    .bind(Utc::now() + chrono::Duration::seconds(i64::from(expires_in)))
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "command.create",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: None,
            after: Some(serde_json::json!({ "command_id": id, "spec": spec, "expires_in_secs": expires_in })),
        },
    )
    .await?;
    let view = load(&mut tx, id)
        .await?
        .ok_or(CommandError::NotFound("no such command"))?;
    tx.commit().await?;
    link.wake_delivery.notify_one();
    Ok(view)
}

/// Queues a command on behalf of the cloud itself (the drill scheduler), audited as `actor`, in
/// the caller's tenant transaction; the caller wakes the delivery loop after committing.
#[allow(clippy::too_many_arguments)]
pub async fn queue_system(
    tx: &mut db::Tx,
    tenant: TenantId,
    actor: &audit::Actor,
    appliance: ApplianceId,
    id: Uuid,
    spec: &CommandSpec,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, appliance_id, kind, spec, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant.as_uuid())
    .bind(appliance.as_uuid())
    .bind(spec.kind())
    .bind(sqlx::types::Json(spec))
    .bind(actor.label())
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    audit::record(
        tx,
        tenant,
        actor,
        Change {
            action: "command.create",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: None,
            after: Some(
                serde_json::json!({ "command_id": id, "spec": spec, "expires_at": expires_at }),
            ),
        },
    )
    .await?;
    Ok(())
}

/// A visible appliance's commands, newest first: `fetch` after the sort key `after` (created_at,
/// id) of the last command of the previous page.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
    after: Option<(DateTime<Utc>, Uuid)>,
    fetch: i64,
) -> Result<Vec<CommandView>, CommandError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    let (after_created, after_id) = after.unzip();
    let rows: Vec<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{COMMAND_SELECT} WHERE appliance_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(appliance.as_uuid())
    .bind(after_created)
    .bind(after_id)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter().map(CommandView::try_from).collect()
}

/// One command and its outcome, if the caller sees its appliance.
pub async fn show(pool: &PgPool, auth: &AuthUser, id: Uuid) -> Result<CommandView, CommandError> {
    let mut tx = auth.tx(pool).await?;
    let command = load(&mut tx, id)
        .await?
        .ok_or(CommandError::NotFound("no such command"))?;
    // Whatever hides the appliance hides the command, and says nothing more.
    visible_appliance(&mut tx, auth, command.appliance_id)
        .await
        .map_err(|_| CommandError::NotFound("no such command"))?;
    Ok(command)
}
