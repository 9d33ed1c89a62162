//! Serial numbers registered for zero-touch enrolment (audited). A serial belongs to one MSP.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::api::{ApiError, ClaimSerial, ClaimedSerialView, Page};
use stayopen_shared::{ApplianceId, PracticeId, SiteId};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission, secret_digest};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::db::lookup;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct ClaimRow {
    serial: String,
    practice_id: Uuid,
    site_id: Uuid,
    created_at: DateTime<Utc>,
    enrolled_appliance_id: Option<Uuid>,
    enrolled_at: Option<DateTime<Utc>>,
}

impl From<ClaimRow> for ClaimedSerialView {
    fn from(row: ClaimRow) -> Self {
        ClaimedSerialView {
            serial: row.serial,
            practice_id: PracticeId(row.practice_id),
            site_id: SiteId(row.site_id),
            created_at: row.created_at,
            appliance_id: row.enrolled_appliance_id.map(ApplianceId),
            enrolled_at: row.enrolled_at,
        }
    }
}

const CLAIM_SELECT: &str =
    "SELECT serial, practice_id, site_id, created_at, enrolled_appliance_id, enrolled_at
     FROM claimed_serials";

/// Registers a serial number (and its factory key) for zero-touch enrolment into a practice.
#[utoipa::path(
    tag = "enrolment",
    params(("practice_id" = Uuid, Path)),
    request_body = ClaimSerial,
    responses(
        (status = 201, body = ClaimedSerialView),
        (status = 400, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The serial is already registered"),
    ),
    security(("bearer" = []))
)]
#[post("/practices/{practice_id}/claimed-serials")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<ClaimSerial>,
) -> Result<HttpResponse, ApiFailure> {
    let practice = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    auth.require(Permission::Configure)?;
    let serial = body.serial.trim();
    if serial.is_empty() || serial.len() > 128 {
        return Err(ApiFailure::BadRequest(
            "serial must be 1 to 128 characters".into(),
        ));
    }
    let key = body.factory_key.trim();
    if key.len() < 32 || key.len() > 256 {
        return Err(ApiFailure::BadRequest(
            "factory_key must be 32 to 256 characters".into(),
        ));
    }
    if lookup::claimed_serial_tenant(&state.pool, serial)
        .await?
        .is_some()
    {
        return Err(ApiFailure::Conflict(format!(
            "serial {serial} is already registered"
        )));
    }
    let site: Uuid = sqlx::query_scalar(
        "SELECT id FROM sites WHERE practice_id = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(practice.as_uuid())
    .bind(body.site_id.map(|s| s.0))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiFailure::NotFound("no such site"))?;
    let row: ClaimRow = sqlx::query_as(
        "INSERT INTO claimed_serials (serial, tenant_id, practice_id, site_id, factory_key_hash, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING serial, practice_id, site_id, created_at, enrolled_appliance_id, enrolled_at",
    )
    .bind(serial)
    .bind(auth.tenant_id.as_uuid())
    .bind(practice.as_uuid())
    .bind(site)
    .bind(secret_digest(key))
    .bind(auth.actor().label())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "claimed_serial.create",
            target_type: "claimed_serial",
            target_id: serial.to_owned(),
            before: None,
            after: Some(serde_json::json!({ "practice_id": practice, "site_id": site })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(ClaimedSerialView::from(row)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ClaimListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub practice_id: Option<Uuid>,
}

/// Registered serials, by serial number.
#[utoipa::path(
    tag = "enrolment",
    params(ClaimListQuery),
    responses((status = 200, body = Page<ClaimedSerialView>)),
    security(("bearer" = []))
)]
#[get("/claimed-serials")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ClaimListQuery>,
) -> Result<web::Json<Page<ClaimedSerialView>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<String> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<ClaimRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{CLAIM_SELECT}
         WHERE ($1::uuid[] IS NULL OR practice_id = ANY($1))
           AND ($2::uuid IS NULL OR practice_id = $2)
           AND ($3::text IS NULL OR serial > $3)
         ORDER BY serial LIMIT $4"
    )))
    .bind(auth.practice_filter())
    .bind(query.practice_id)
    .bind(after)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows.into_iter().map(ClaimedSerialView::from).collect();
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |c: &ClaimedSerialView| c.serial.clone(),
    )))
}

/// Withdraws a registration (an enrolled appliance stays enrolled).
#[utoipa::path(
    tag = "enrolment",
    params(("serial" = String, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/claimed-serials/{serial}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiFailure> {
    let serial = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let practice: Uuid =
        sqlx::query_scalar("SELECT practice_id FROM claimed_serials WHERE serial = $1")
            .bind(&serial)
            .fetch_optional(&mut *tx)
            .await?
            .filter(|p| auth.may_see_practice(PracticeId(*p)))
            .ok_or(ApiFailure::NotFound("no such serial"))?;
    auth.require(Permission::Configure)?;
    sqlx::query("DELETE FROM claimed_serials WHERE serial = $1")
        .bind(&serial)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "claimed_serial.delete",
            target_type: "claimed_serial",
            target_id: serial.clone(),
            before: Some(serde_json::json!({ "practice_id": practice })),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
