//! The MSP's audit log, newest first.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::api::{ApiError, AuditEntry, Page};
use utoipa::IntoParams;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, AuditFilter};
use crate::http::error::ApiFailure;
use crate::http::{csv, pagination};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only this action, e.g. `user.create`.
    pub action: Option<String>,
    /// Only changes to this target: its id, an appliance's serial, a user's e-mail address or a
    /// practice's name.
    pub target_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
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
    let filter = AuditFilter {
        action: query.action.as_deref(),
        target_id: query.target_id.as_deref(),
        since: query.since,
    };
    let entries = audit::list(&state.pool, auth.tenant_id, &filter, before_seq, fetch).await?;
    Ok(web::Json(pagination::page(
        entries,
        fetch,
        |e: &AuditEntry| e.seq,
    )))
}

/// The audit log the same query lists, every entry, as CSV (newest first), with the values before
/// and after as JSON.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/audit-log.csv")]
pub async fn export(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ViewAudit)?;
    let query = query.into_inner();
    let pool = state.pool.clone();
    let tenant = auth.tenant_id;
    csv::export(
        "audit-log",
        &[
            "seq",
            "at",
            "actor",
            "actor_name",
            "action",
            "target_type",
            "target_id",
            "target_name",
            "before",
            "after",
        ],
        move |before_seq: Option<i64>| {
            let pool = pool.clone();
            let (action, target_id, since) =
                (query.action.clone(), query.target_id.clone(), query.since);
            async move {
                let filter = AuditFilter {
                    action: action.as_deref(),
                    target_id: target_id.as_deref(),
                    since,
                };
                let entries =
                    audit::list(&pool, tenant, &filter, before_seq, csv::EXPORT_FETCH).await?;
                Ok(csv::rows_and_next(entries, |e: &AuditEntry| e.seq))
            }
        },
        |e: &AuditEntry| {
            let json = |v: &Option<serde_json::Value>| {
                v.as_ref().map(ToString::to_string).unwrap_or_default()
            };
            vec![
                e.seq.to_string(),
                csv::time(Some(e.at)),
                e.actor.clone(),
                e.actor_name.clone(),
                e.action.clone(),
                e.target_type.clone(),
                e.target_id.clone(),
                e.target_name.clone(),
                json(&e.before),
                json(&e.after),
            ]
        },
    )
    .await
}
