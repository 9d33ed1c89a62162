//! Maintenance windows: planned work on a practice (or one appliance) during which alerts are
//! recorded but notify nobody. Listing follows the caller's practices; MSP staff plan and cancel
//! windows (audited).

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stayopen_shared::alerts::{CreateMaintenanceWindow, MaintenanceWindowView};
use stayopen_shared::api::{ApiError, Page};
use stayopen_shared::{ApplianceId, PracticeId};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct WindowRow {
    id: Uuid,
    practice_id: Uuid,
    appliance_id: Option<Uuid>,
    appliance_serial: Option<String>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

/// A window's columns with its appliance's serial, over `maintenance_windows w`.
const WINDOW_COLUMNS: &str = "w.id, w.practice_id, w.appliance_id,
    (SELECT a.serial FROM appliances a WHERE a.id = w.appliance_id) AS appliance_serial,
    w.starts_at, w.ends_at, w.reason, w.created_by, w.created_at";

impl From<WindowRow> for MaintenanceWindowView {
    fn from(row: WindowRow) -> Self {
        MaintenanceWindowView {
            id: row.id,
            practice_id: PracticeId(row.practice_id),
            appliance_id: row.appliance_id.map(ApplianceId),
            appliance_serial: row.appliance_serial,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            reason: row.reason,
            created_by: row.created_by,
            created_at: row.created_at,
        }
    }
}

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
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiFailure::BadRequest(
            "reason must be 1 to 500 characters".into(),
        ));
    }
    if body.ends_at <= body.starts_at {
        return Err(ApiFailure::BadRequest(
            "ends_at must be after starts_at".into(),
        ));
    }
    if body.ends_at <= Utc::now() {
        return Err(ApiFailure::BadRequest("ends_at is in the past".into()));
    }
    if body.ends_at - body.starts_at > Duration::days(7) {
        return Err(ApiFailure::BadRequest(
            "a maintenance window lasts at most 7 days".into(),
        ));
    }
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, body.practice_id).await?;
    if let Some(appliance) = body.appliance_id {
        let of_practice: Option<bool> =
            sqlx::query_scalar("SELECT practice_id = $2 FROM appliances WHERE id = $1")
                .bind(appliance.as_uuid())
                .bind(body.practice_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
        match of_practice {
            None => return Err(ApiFailure::NotFound("no such appliance")),
            Some(false) => {
                return Err(ApiFailure::BadRequest(
                    "the appliance belongs to another practice".into(),
                ));
            }
            Some(true) => {}
        }
    }
    let row: WindowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO maintenance_windows AS w
             (id, tenant_id, practice_id, appliance_id, starts_at, ends_at, reason, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {WINDOW_COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(auth.tenant_id.as_uuid())
    .bind(body.practice_id.as_uuid())
    .bind(body.appliance_id.map(|a| a.0))
    .bind(body.starts_at)
    .bind(body.ends_at)
    .bind(reason)
    .bind(auth.actor().label())
    .fetch_one(&mut *tx)
    .await?;
    let view = MaintenanceWindowView::from(row);
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "maintenance_window.create",
            target_type: "maintenance_window",
            target_id: view.id.to_string(),
            before: None,
            after: Some(serde_json::to_value(&view).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await?;
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
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<WindowRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WINDOW_COLUMNS} FROM maintenance_windows w
         WHERE ($1::uuid[] IS NULL OR w.practice_id = ANY($1))
           AND ($2::uuid IS NULL OR w.practice_id = $2)
           AND (NOT coalesce($3, false) OR w.ends_at > now())
           AND ($4::timestamptz IS NULL OR (w.starts_at, w.id) < ($4, $5))
           AND ($7::uuid IS NULL OR w.appliance_id = $7
                OR (w.appliance_id IS NULL
                    AND w.practice_id = (SELECT practice_id FROM appliances WHERE id = $7)))
         ORDER BY w.starts_at DESC, w.id DESC LIMIT $6"
    )))
    .bind(auth.practice_filter())
    .bind(query.practice_id)
    .bind(query.upcoming)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(fetch)
    .bind(query.appliance_id)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows.into_iter().map(MaintenanceWindowView::from).collect();
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
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let row: WindowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM maintenance_windows AS w
         WHERE w.id = $1 AND ($2::uuid[] IS NULL OR w.practice_id = ANY($2))
         RETURNING {WINDOW_COLUMNS}"
    )))
    .bind(id)
    .bind(auth.practice_filter())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiFailure::NotFound("no such maintenance window"))?;
    let before = MaintenanceWindowView::from(row);
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "maintenance_window.delete",
            target_type: "maintenance_window",
            target_id: id.to_string(),
            before: Some(serde_json::to_value(&before).unwrap_or_default()),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
