//! What people do with an alert: acknowledge it (someone is on it: escalation stops), resolve it by
//! hand, comment on it. Each action is audited with who and when, and returns the alert as it now
//! is.
//!
//! The alert is looked up before the caller's permission is checked, so an alert the caller may
//! not see is "not found" whatever their role.

use sqlx::PgPool;
use stayopen_shared::alerts::{AlertBulkAction, AlertState, AlertView};
use stayopen_shared::api::{BulkOutcome, BulkSkipped, MAX_BULK_ITEMS};
use uuid::Uuid;

use super::views::{AlertError, load};
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::domain::notifications::{self, TicketChange, Transition};
use crate::infra::db::Tx;

/// The longest resolution note, in bytes.
pub const MAX_NOTE: usize = 2000;
/// The longest comment, in bytes.
pub const MAX_COMMENT: usize = 4000;

/// Records an action on an alert in the audit log, tells dashboards, commits, and returns the
/// alert as it now is.
async fn finish(
    mut tx: Tx,
    auth: &AuthUser,
    id: Uuid,
    action: &str,
    before: &AlertView,
    detail: serde_json::Value,
) -> Result<AlertView, AlertError> {
    let after = load(&mut tx, auth, id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action,
            target_type: "alert",
            target_id: id.to_string(),
            before: Some(serde_json::json!({ "state": before.state })),
            after: Some(serde_json::json!({ "state": after.state, "detail": detail })),
        },
    )
    .await?;
    crate::infra::stream::notify_alerts(&mut tx, &[id]).await?;
    tx.commit().await?;
    Ok(after)
}

/// Acknowledges an open alert.
pub async fn acknowledge(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<AlertView, AlertError> {
    let mut tx = auth.tx(pool).await?;
    let before = load(&mut tx, auth, id).await?;
    auth.require(Permission::Operate)?;
    if before.state != AlertState::Open {
        return Err(AlertError::Conflict(format!(
            "the alert is {}, not open",
            before.state.as_str()
        )));
    }
    sqlx::query(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_by = $2, acknowledged_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(auth.actor().label())
    .execute(&mut *tx)
    .await?;
    notifications::enqueue_update(&mut tx, id, TicketChange::Acknowledged, chrono::Utc::now())
        .await?;
    finish(
        tx,
        auth,
        id,
        "alert.acknowledge",
        &before,
        serde_json::Value::Null,
    )
    .await
}

/// Resolves an unresolved alert by hand, with an optional note (blank counts as none); the
/// channels that heard of its opening hear of its closing.
pub async fn resolve(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
    note: Option<&str>,
) -> Result<AlertView, AlertError> {
    let mut tx = auth.tx(pool).await?;
    let before = load(&mut tx, auth, id).await?;
    auth.require(Permission::Operate)?;
    if before.state == AlertState::Resolved {
        return Err(AlertError::Conflict("the alert is already resolved".into()));
    }
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.len() > MAX_NOTE) {
        return Err(AlertError::Invalid(format!(
            "note must be at most {MAX_NOTE} characters"
        )));
    }
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', resolved_by = $2, resolved_at = now(),
                resolution = coalesce($3, 'resolved by hand') WHERE id = $1",
    )
    .bind(id)
    .bind(auth.actor().label())
    .bind(note)
    .execute(&mut *tx)
    .await?;
    notifications::enqueue(&mut tx, &[(id, Transition::Resolved)], chrono::Utc::now()).await?;
    finish(
        tx,
        auth,
        id,
        "alert.resolve",
        &before,
        serde_json::json!({ "note": note }),
    )
    .await
}

/// Adds a comment (trimmed, 1 to [`MAX_COMMENT`] bytes) to an alert.
pub async fn comment(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
    body: &str,
) -> Result<AlertView, AlertError> {
    let mut tx = auth.tx(pool).await?;
    let before = load(&mut tx, auth, id).await?;
    auth.require(Permission::Operate)?;
    let text = body.trim();
    if text.is_empty() || text.len() > MAX_COMMENT {
        return Err(AlertError::Invalid(format!(
            "body must be 1 to {MAX_COMMENT} characters"
        )));
    }
    sqlx::query(
        "INSERT INTO alert_comments (tenant_id, alert_id, author, body) VALUES ($1, $2, $3, $4)",
    )
    .bind(auth.tenant_id.as_uuid())
    .bind(id)
    .bind(auth.actor().label())
    .bind(text)
    .execute(&mut *tx)
    .await?;
    notifications::enqueue_update(&mut tx, id, TicketChange::Commented, chrono::Utc::now()).await?;
    finish(
        tx,
        auth,
        id,
        "alert.comment",
        &before,
        serde_json::json!({ "comment": text }),
    )
    .await
}

/// Acknowledges or resolves each of `ids` (1 to [`MAX_BULK_ITEMS`], duplicates once) as if one
/// at a time: each in its own transaction, audited, streamed to dashboards and, when resolved,
/// told to the channels that heard of its opening. The role is checked once up front; an alert
/// the caller may not see, or one not in a state the action applies to, is skipped with why.
pub async fn bulk(
    pool: &PgPool,
    auth: &AuthUser,
    ids: &[Uuid],
    action: AlertBulkAction,
    note: Option<&str>,
) -> Result<BulkOutcome, AlertError> {
    if ids.is_empty() || ids.len() > MAX_BULK_ITEMS {
        return Err(AlertError::Invalid(format!(
            "alert_ids must name 1 to {MAX_BULK_ITEMS} alerts"
        )));
    }
    auth.require(Permission::Operate)?;
    let mut outcome = BulkOutcome::default();
    let mut seen: Vec<Uuid> = Vec::with_capacity(ids.len());
    for id in ids {
        if seen.contains(id) {
            continue;
        }
        seen.push(*id);
        let done = match action {
            AlertBulkAction::Acknowledge => acknowledge(pool, auth, *id).await,
            AlertBulkAction::Resolve => resolve(pool, auth, *id, note).await,
        };
        match done {
            Ok(_) => outcome.done.push(*id),
            Err(AlertError::Database(e)) => return Err(e.into()),
            // A note too long is wrong for every alert: say so instead of skipping them all.
            Err(AlertError::Invalid(why)) => return Err(AlertError::Invalid(why)),
            Err(e) => outcome.skipped.push(BulkSkipped {
                id: *id,
                reason: e.to_string(),
            }),
        }
    }
    Ok(outcome)
}
