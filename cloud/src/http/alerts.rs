//! Alerts: list with filters, one alert with its comments, acknowledge, resolve, comment. Every
//! action is audited with who and when (in [`crate::domain::alerts::triage`]).

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::alerts::{
    AlertKind, AlertState, AlertView, BulkAlertRequest, CreateAlertComment, ResolveAlert, Severity,
};
use stayopen_shared::api::{ApiError, BulkOutcome, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::alerts::views::{self, AlertFilter};
use crate::domain::alerts::{AlertError, triage};
use crate::http::error::ApiFailure;
use crate::http::{csv, pagination};
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
    let filter = query.filter()?;
    let items = views::list(&state.pool, &auth, &filter, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |a: &AlertView| (a.last_seen, a.id),
    )))
}

/// One alert with its comments.
impl AlertListQuery {
    fn filter(&self) -> Result<AlertFilter, ApiFailure> {
        let kinds: Option<Vec<AlertKind>> = self
            .kinds
            .as_deref()
            .map(|names| {
                names
                    .split(',')
                    .map(|k| {
                        AlertKind::parse(k.trim()).ok_or_else(|| {
                            ApiFailure::BadRequest(format!("kinds: {k:?} is not an alert kind"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(AlertFilter {
            state: self.state,
            unresolved: self.unresolved,
            kind: self.kind,
            kinds,
            severity: self.severity,
            practice_id: self.practice_id,
            appliance_id: self.appliance_id,
            since: self.since,
        })
    }
}

/// The alerts the same query lists, every row, as CSV (newest first).
#[utoipa::path(
    tag = "alerts",
    params(AlertListQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/alerts.csv")]
pub async fn export(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<AlertListQuery>,
) -> Result<HttpResponse, ApiFailure> {
    let filter = query.filter()?;
    let pool = state.pool.clone();
    csv::export(
        "alerts",
        &[
            "first_seen",
            "last_seen",
            "severity",
            "state",
            "kind",
            "summary",
            "practice",
            "site",
            "appliance",
            "count",
            "acknowledged_by",
            "resolved_by",
            "resolved_at",
            "resolution",
            "id",
        ],
        move |after: Option<(DateTime<Utc>, Uuid)>| {
            let (pool, auth, filter) = (pool.clone(), auth.clone(), filter.clone());
            async move {
                let items = views::list(&pool, &auth, &filter, after, csv::EXPORT_FETCH).await?;
                Ok(csv::rows_and_next(items, |a: &AlertView| {
                    (a.last_seen, a.id)
                }))
            }
        },
        |a: &AlertView| {
            vec![
                csv::time(Some(a.first_seen)),
                csv::time(Some(a.last_seen)),
                a.severity.as_str().to_owned(),
                a.state.as_str().to_owned(),
                a.kind.as_str().to_owned(),
                a.summary.clone(),
                a.practice_name.clone(),
                a.site_name.clone(),
                a.appliance_serial.clone(),
                a.count.to_string(),
                a.acknowledged_by.clone().unwrap_or_default(),
                a.resolved_by.clone().unwrap_or_default(),
                csv::time(a.resolved_at),
                a.resolution.clone().unwrap_or_default(),
                a.id.to_string(),
            ]
        },
    )
    .await
}

/// Acknowledges or resolves many alerts at once (each audited, as one at a time would be).
#[utoipa::path(
    tag = "alerts",
    request_body = BulkAlertRequest,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/bulk")]
pub async fn bulk(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<BulkAlertRequest>,
) -> Result<web::Json<BulkOutcome>, ApiFailure> {
    let outcome = triage::bulk(
        &state.pool,
        &auth,
        &body.alert_ids,
        body.action,
        body.note.as_deref(),
    )
    .await?;
    tracing::info!(
        action = ?body.action,
        done = outcome.done.len(),
        skipped = outcome.skipped.len(),
        "bulk alert action"
    );
    Ok(web::Json(outcome))
}

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
