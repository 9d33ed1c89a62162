//! Delivers queued commands to appliances that are online, redelivers the unacknowledged, expires
//! the stale, and records the appliances' results.
//!
//! Design: PostgreSQL is the queue. A command is `queued` until published to an online appliance
//! (`delivered`), published again every [`REDELIVER_AFTER`] until the appliance acknowledges it
//! (the appliance ignores duplicates by id), and `expired` if its deadline passes first. The loop
//! runs when woken (a command was queued, an appliance came online) and every few seconds.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use stayopen_shared::commands::{CommandResult, CommandSpec, CommandStatus, DeviceCommand};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId, TenantId};
use uuid::Uuid;

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
    .bind(status.as_str())
    .bind(&result.detail)
    .bind(result.data.as_ref())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}
