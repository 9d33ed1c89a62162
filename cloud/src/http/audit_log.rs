//! The MSP's audit log, newest first.

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::api::{ApiError, AuditEntry, Page};
use utoipa::IntoParams;

use crate::domain::access::{AuthUser, Permission};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only this action, e.g. `user.create`.
    pub action: Option<String>,
    /// Only changes to this target, e.g. a user's or appliance's id.
    pub target_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target_type: String,
    target_id: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

/// Who changed what, when, with the values before and after.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/audit-log")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<Page<AuditEntry>>, ApiFailure> {
    auth.require(Permission::ViewAudit)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let before_seq: Option<i64> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT seq, at, actor, action, target_type, target_id, before, after FROM audit_log
         WHERE tenant_id = $1
           AND ($2::bigint IS NULL OR seq < $2)
           AND ($3::text IS NULL OR action = $3)
           AND ($4::text IS NULL OR target_id = $4)
           AND ($5::timestamptz IS NULL OR at >= $5)
         ORDER BY seq DESC LIMIT $6",
    )
    .bind(auth.tenant_id.as_uuid())
    .bind(before_seq)
    .bind(query.action.as_deref())
    .bind(query.target_id.as_deref())
    .bind(query.since)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let entries = rows
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            before: r.before,
            after: r.after,
        })
        .collect();
    Ok(web::Json(pagination::page(
        entries,
        fetch,
        |e: &AuditEntry| e.seq,
    )))
}
