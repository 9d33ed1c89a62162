//! Alerts: list with filters, one alert with its comments, acknowledge, resolve, comment. Every
//! action is audited with who and when (in [`crate::domain::alerts::triage`]).

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::alerts::{
    AlertKind, AlertState, AlertView, CreateAlertComment, ResolveAlert, Severity,
};
use stayopen_shared::api::{ApiError, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::alerts::views::{self, AlertFilter};
use crate::domain::alerts::{AlertError, triage};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<AlertError> for ApiFailure {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::NotFound => ApiFailure::NotFound("no such alert"),
            AlertError::Conflict(why) => ApiFailure::Conflict(why),
            AlertError::Invalid(why) => ApiFailure::BadRequest(why),
            AlertError::Access(e) => e.into(),
            AlertError::Database(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertListQuery {
    /// 1 to 500, default 50. Newest (by last seen) first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub state: Option<AlertState>,
    /// `unresolved` lists open and acknowledged alerts together.
    pub unresolved: Option<bool>,
    pub kind: Option<AlertKind>,
    /// Several kinds, comma-separated (`failover,drill_failed,drill_overdue`).
    pub kinds: Option<String>,
    pub severity: Option<Severity>,
    pub practice_id: Option<Uuid>,
    pub appliance_id: Option<Uuid>,
    /// Only alerts last seen at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Alerts, newest first, filtered by state, kind, severity, practice, appliance and time.
#[utoipa::path(
    tag = "alerts",
    params(AlertListQuery),
    responses((status = 200, body = Page<AlertView>), (status = 400, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/alerts")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<AlertListQuery>,
) -> Result<web::Json<Page<AlertView>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let kinds: Option<Vec<AlertKind>> = query
        .kinds
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|k| {
                    AlertKind::parse(k.trim()).ok_or_else(|| {
                        ApiFailure::BadRequest(format!("kinds: {k:?} is not an alert kind"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let filter = AlertFilter {
        state: query.state,
        unresolved: query.unresolved,
        kind: query.kind,
        kinds,
        severity: query.severity,
        practice_id: query.practice_id,
        appliance_id: query.appliance_id,
        since: query.since,
    };
    let items = views::list(&state.pool, &auth, &filter, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |a: &AlertView| (a.last_seen, a.id),
    )))
}

/// One alert with its comments.
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = AlertView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/alerts/{alert_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<AlertView>, ApiFailure> {
    Ok(web::Json(
        views::get(&state.pool, &auth, path.into_inner()).await?,
    ))
}

/// Acknowledges an open alert: someone is on it (stops escalation).
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = AlertView), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/{alert_id}/acknowledge")]
pub async fn acknowledge(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<AlertView>, ApiFailure> {
    Ok(web::Json(
        triage::acknowledge(&state.pool, &auth, path.into_inner()).await?,
    ))
}

/// Resolves an alert by hand, with an optional note.
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    request_body = ResolveAlert,
    responses((status = 200, body = AlertView), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/{alert_id}/resolve")]
pub async fn resolve(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<ResolveAlert>,
) -> Result<web::Json<AlertView>, ApiFailure> {
    Ok(web::Json(
        triage::resolve(&state.pool, &auth, path.into_inner(), body.note.as_deref()).await?,
    ))
}

/// Adds a comment to an alert.
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    request_body = CreateAlertComment,
    responses((status = 201, body = AlertView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/{alert_id}/comments")]
pub async fn comment(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<CreateAlertComment>,
) -> Result<HttpResponse, ApiFailure> {
    let view = triage::comment(&state.pool, &auth, path.into_inner(), &body.body).await?;
    Ok(HttpResponse::Created().json(view))
}
