//! Serial numbers registered for zero-touch enrolment (audited). A serial belongs to one MSP.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use stayopen_shared::PracticeId;
use stayopen_shared::api::{ApiError, ClaimSerial, ClaimedSerialView, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::enrolment::claims::{self, ClaimError, Registration};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<ClaimError> for ApiFailure {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Invalid(why) => ApiFailure::BadRequest(why),
            ClaimError::NotFound(what) => ApiFailure::NotFound(what),
            ClaimError::Conflict(why) => ApiFailure::Conflict(why),
            ClaimError::Access(e) => e.into(),
            ClaimError::Database(e) => e.into(),
        }
    }
}

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
    let registration = Registration {
        practice: path.into_inner(),
        site: body.site_id,
        serial: &body.serial,
        factory_key: &body.factory_key,
    };
    let view = claims::register(&state.pool, &auth, registration).await?;
    Ok(HttpResponse::Created().json(view))
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
    let items = claims::list(&state.pool, &auth, query.practice_id, after, fetch).await?;
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
    claims::withdraw(&state.pool, &auth, &path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
