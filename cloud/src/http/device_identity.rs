//! An appliance's identity as MSP staff see and manage it: its certificates, an MSP admin's
//! approval to enrol the hardware again (replaced hardware, lost state), and restoring a revoked
//! appliance. See [`crate::domain::enrolment`] for what the approval admits.

use actix_web::{get, post, web};
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{ApiError, DeviceIdentityView};

use crate::domain::access::AuthUser;
use crate::domain::enrolment::identity::{self, IdentityError};
use crate::http::enroll::issuer;
use crate::http::error::ApiFailure;
use crate::state::AppState;

impl From<IdentityError> for ApiFailure {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Refused(refusal) => refusal.into(),
            IdentityError::Conflict(why) => ApiFailure::Conflict(why.into()),
            IdentityError::Access(e) => e.into(),
            IdentityError::Database(e) => e.into(),
        }
    }
}

/// An appliance's identity: revocation, a pending approval to enrol again, its certificates.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = DeviceIdentityView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/identity")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<DeviceIdentityView>, ApiFailure> {
    let view = identity::show(&state.pool, &auth, path.into_inner()).await?;
    Ok(web::Json(view))
}

/// Lets the appliance's hardware enrol again once, within 24 hours, without proof of its current
/// key: for replaced hardware or a box that lost its state. The enrolment needs a token of the
/// appliance's own practice (or its registered serial). MSP admins only; audited.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses(
        (status = 200, body = DeviceIdentityView),
        (status = 403, body = ApiError, description = "Not an MSP admin, or the appliance is revoked (`appliance_revoked`: restore it instead)"),
        (status = 404, body = ApiError),
    ),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/approve-reenrollment")]
pub async fn approve_reenrollment(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<DeviceIdentityView>, ApiFailure> {
    let view = identity::approve_reenrolment(&state.pool, &auth, path.into_inner()).await?;
    Ok(web::Json(view))
}

/// Restores a revoked appliance: the revocation ends and the hardware may enrol again, once, within
/// 24 hours, with a token of its own practice. Its old certificates stay on the revocation list and
/// its old MQTT password and key open nothing. MSP admins only; audited.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses(
        (status = 200, body = DeviceIdentityView),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The appliance is not revoked"),
    ),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/restore")]
pub async fn restore(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<DeviceIdentityView>, ApiFailure> {
    let view = identity::restore(&state.pool, issuer(&state), &auth, path.into_inner()).await?;
    Ok(web::Json(view))
}
