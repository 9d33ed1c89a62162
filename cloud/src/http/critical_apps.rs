//! The critical applications register of each practice: list, add, change, remove. Every change
//! is audited and republishes the practice's appliances' policy
//! ([`crate::domain::compliance::register`]).

use actix_web::{HttpResponse, delete, get, post, put, web};
use stayopen_shared::PracticeId;
use stayopen_shared::api::ApiError;
use stayopen_shared::compliance::{CriticalAppEntry, CriticalAppInput};
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::compliance::{ComplianceError, register};
use crate::http::error::ApiFailure;
use crate::state::AppState;

impl From<ComplianceError> for ApiFailure {
    fn from(e: ComplianceError) -> Self {
        match e {
            ComplianceError::Invalid(why) => ApiFailure::BadRequest(why),
            ComplianceError::Conflict(why) => ApiFailure::Conflict(why),
            ComplianceError::NotFound(what) => ApiFailure::NotFound(what),
            ComplianceError::Access(e) => e.into(),
            ComplianceError::Command(e) => e.into(),
            e @ ComplianceError::Desired(_) => ApiFailure::Internal(e.to_string()),
            ComplianceError::Database(e) => e.into(),
        }
    }
}

/// A practice's critical applications, most critical first.
#[utoipa::path(
    tag = "compliance",
    params(("practice_id" = Uuid, Path)),
    responses((status = 200, body = Vec<CriticalAppEntry>), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/critical-apps")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
) -> Result<web::Json<Vec<CriticalAppEntry>>, ApiFailure> {
    Ok(web::Json(
        register::list(&state.pool, &auth, path.into_inner()).await?,
    ))
}

/// Adds an application to a practice's register (MSP staff or the practice's compliance
/// officer); its appliances start checking it.
#[utoipa::path(
    tag = "compliance",
    params(("practice_id" = Uuid, Path)),
    request_body = CriticalAppInput,
    responses((status = 201, body = CriticalAppEntry), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/practices/{practice_id}/critical-apps")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<CriticalAppInput>,
) -> Result<HttpResponse, ApiFailure> {
    let entry = register::create(
        &state.pool,
        &auth,
        &state.device_link,
        path.into_inner(),
        &body,
    )
    .await?;
    Ok(HttpResponse::Created().json(entry))
}

/// Replaces a register entry.
#[utoipa::path(
    tag = "compliance",
    params(("app_id" = Uuid, Path)),
    request_body = CriticalAppInput,
    responses((status = 200, body = CriticalAppEntry), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/critical-apps/{app_id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<CriticalAppInput>,
) -> Result<web::Json<CriticalAppEntry>, ApiFailure> {
    Ok(web::Json(
        register::update(
            &state.pool,
            &auth,
            &state.device_link,
            path.into_inner(),
            &body,
        )
        .await?,
    ))
}

/// Removes a register entry.
#[utoipa::path(
    tag = "compliance",
    params(("app_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/critical-apps/{app_id}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    register::delete(&state.pool, &auth, &state.device_link, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
