//! A practice's time zone and clinic hours: which routes apply to its alerts and how urgent they
//! are ([`crate::domain::fleet::schedule`]). Anyone who sees the practice may read them; MSP staff
//! change them (audited).

use actix_web::{get, put, web};
use chrono::Utc;
use stayopen_shared::PracticeId;
use stayopen_shared::alerts::{PracticeSchedule, PracticeScheduleView};
use stayopen_shared::api::ApiError;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::fleet::schedule;
use crate::http::error::ApiFailure;
use crate::state::AppState;

/// The practice's time zone and clinic hours, and whether it is open now.
#[utoipa::path(
    tag = "alerts",
    params(("practice_id" = Uuid, Path)),
    responses((status = 200, body = PracticeScheduleView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/schedule")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
) -> Result<web::Json<PracticeScheduleView>, ApiFailure> {
    let practice = path.into_inner();
    Ok(web::Json(
        schedule::show(&state.pool, &auth, practice, Utc::now()).await?,
    ))
}

/// Sets the practice's time zone (IANA, e.g. `America/Chicago`) and clinic hours (`null`: none,
/// every hour counts as open).
#[utoipa::path(
    tag = "alerts",
    params(("practice_id" = Uuid, Path)),
    request_body = PracticeSchedule,
    responses((status = 200, body = PracticeScheduleView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/practices/{practice_id}/schedule")]
pub async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<PracticeSchedule>,
) -> Result<web::Json<PracticeScheduleView>, ApiFailure> {
    auth.require(Permission::Configure)?;
    let practice = path.into_inner();
    Ok(web::Json(
        schedule::update(&state.pool, &auth, practice, body.into_inner(), Utc::now()).await?,
    ))
}
