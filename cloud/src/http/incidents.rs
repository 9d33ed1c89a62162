//! Incidents: the list, one incident, its root cause and comments (MSP staff, audited)
//! ([`crate::domain::compliance::incidents`]).

use actix_web::{HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::PracticeId;
use stayopen_shared::api::{ApiError, Page};
use stayopen_shared::compliance::{AddIncidentComment, Incident, UpdateIncident};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::compliance::incidents;
use crate::http::error::ApiFailure;
use crate::http::{csv, pagination};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IncidentListQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub practice_id: Option<PracticeId>,
}

/// Incidents, newest first.
#[utoipa::path(
    tag = "compliance",
    params(IncidentListQuery),
    responses((status = 200, body = Page<Incident>), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/incidents")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<IncidentListQuery>,
) -> Result<web::Json<Page<Incident>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let items = incidents::list(&state.pool, &auth, query.practice_id, after, fetch).await?;
    Ok(web::Json(pagination::page(items, fetch, |i: &Incident| {
        (i.started_at, i.id)
    })))
}

/// One incident with its applications, alerts and comments.
/// The incidents the same query lists, every row, as CSV (newest first).
#[utoipa::path(
    tag = "compliance",
    params(IncidentListQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/incidents.csv")]
pub async fn export(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<IncidentListQuery>,
) -> Result<HttpResponse, ApiFailure> {
    let pool = state.pool.clone();
    let practice = query.practice_id;
    csv::export(
        "incidents",
        &[
            "started_at",
            "ended_at",
            "practice",
            "appliance",
            "failed_uplinks",
            "backup_uplinks",
            "on_backup_secs",
            "traffic_kept_flowing",
            "root_cause",
            "id",
        ],
        move |after: Option<(DateTime<Utc>, Uuid)>| {
            let (pool, auth) = (pool.clone(), auth.clone());
            async move {
                let items =
                    incidents::list(&pool, &auth, practice, after, csv::EXPORT_FETCH).await?;
                Ok(csv::rows_and_next(items, |i: &Incident| {
                    (i.started_at, i.id)
                }))
            }
        },
        |i: &Incident| {
            vec![
                csv::time(Some(i.started_at)),
                csv::time(i.ended_at),
                i.practice_name.clone(),
                i.appliance_serial.clone(),
                i.failed_uplinks.join(" "),
                i.backup_uplinks.join(" "),
                i.on_backup_secs.to_string(),
                if i.traffic_kept_flowing { "yes" } else { "no" }.to_owned(),
                i.root_cause.clone(),
                i.id.to_string(),
            ]
        },
    )
    .await
}

#[utoipa::path(
    tag = "compliance",
    params(("incident_id" = Uuid, Path)),
    responses((status = 200, body = Incident), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/incidents/{incident_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<Incident>, ApiFailure> {
    Ok(web::Json(
        incidents::show(&state.pool, &auth, path.into_inner()).await?,
    ))
}

/// Sets an incident's root cause (MSP staff).
#[utoipa::path(
    tag = "compliance",
    params(("incident_id" = Uuid, Path)),
    request_body = UpdateIncident,
    responses((status = 200, body = Incident), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[patch("/incidents/{incident_id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<UpdateIncident>,
) -> Result<web::Json<Incident>, ApiFailure> {
    Ok(web::Json(
        incidents::set_root_cause(&state.pool, &auth, path.into_inner(), &body.root_cause).await?,
    ))
}

/// Adds a comment to an incident (MSP staff).
#[utoipa::path(
    tag = "compliance",
    params(("incident_id" = Uuid, Path)),
    request_body = AddIncidentComment,
    responses((status = 201, body = Incident), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/incidents/{incident_id}/comments")]
pub async fn comment(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<AddIncidentComment>,
) -> Result<HttpResponse, ApiFailure> {
    let incident = incidents::comment(&state.pool, &auth, path.into_inner(), &body.body).await?;
    Ok(HttpResponse::Created().json(incident))
}
