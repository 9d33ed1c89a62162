//! Maintenance windows: planned work on a practice (or one appliance) during which alerts are
//! recorded but notify nobody ([`crate::domain::fleet::maintenance`]). Listing follows the
//! caller's practices; MSP staff plan and cancel windows (audited).

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::Utc;
use serde::Deserialize;
use stayopen_shared::alerts::{CreateMaintenanceWindow, MaintenanceWindowView};
use stayopen_shared::api::{ApiError, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::fleet::maintenance::{self, WindowFilter};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

/// Plans a maintenance window (at most 7 days, ending in the future).
#[utoipa::path(
    tag = "alerts",
    request_body = CreateMaintenanceWindow,
    responses((status = 201, body = MaintenanceWindowView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/maintenance-windows")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateMaintenanceWindow>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Operate)?;
    let view = maintenance::create(&state.pool, &auth, &body, Utc::now()).await?;
    Ok(HttpResponse::Created().json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// 1 to 500, default 50. Latest start first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub practice_id: Option<Uuid>,
    /// Only the windows that cover this appliance: its own and its whole practice's.
    pub appliance_id: Option<Uuid>,
    /// Only windows not over yet (current and planned).
    pub upcoming: Option<bool>,
}

/// Maintenance windows of the caller's practices, latest start first.
#[utoipa::path(
    tag = "alerts",
    params(WindowQuery),
    responses((status = 200, body = Page<MaintenanceWindowView>), (status = 400, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/maintenance-windows")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<WindowQuery>,
) -> Result<web::Json<Page<MaintenanceWindowView>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let filter = WindowFilter {
        after: pagination::decode_cursor(query.cursor.as_deref())?,
        practice_id: query.practice_id,
        appliance_id: query.appliance_id,
        upcoming: query.upcoming,
    };
    let items = maintenance::list(&state.pool, &auth, filter, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |w: &MaintenanceWindowView| (w.starts_at, w.id),
    )))
}

/// Cancels a maintenance window (alerts already raised inside it stay muted).
#[utoipa::path(
    tag = "alerts",
    params(("window_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/maintenance-windows/{window_id}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Operate)?;
    maintenance::remove(&state.pool, &auth, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
