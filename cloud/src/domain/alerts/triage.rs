//! What people do with an alert: acknowledge it (someone is on it: escalation stops), resolve it by
//! hand, comment on it. Each action is audited with who and when, and returns the alert as it now
//! is.
//!
//! The alert is looked up before the caller's permission is checked, so an alert the caller may
//! not see is "not found" whatever their role.

use sqlx::PgPool;
use stayopen_shared::alerts::{AlertState, AlertView};
use uuid::Uuid;

use super::views::{AlertError, load};
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::domain::notifications::{self, Transition};
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
