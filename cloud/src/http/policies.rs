//! Policy layers (MSP, practice, appliance) and an appliance's effective configuration with drift
//! ([`crate::domain::policy`]). Every change is audited with the layer before and after,
//! recomputes the desired policy of the appliances it affects, and publishes the new versions once
//! committed.

use actix_web::{get, post, put, web};
use stayopen_shared::api::{ApiError, ApplianceConfiguration, PolicyLayer, PolicyPreviewRequest};
use stayopen_shared::policy::{EffectivePolicy, PolicyOverrides};
use stayopen_shared::{ApplianceId, PracticeId};

use crate::domain::access::{AuthUser, Permission};
use crate::domain::policy::layers::{self, LayerTarget};
use crate::domain::policy::{self, LayerError};
use crate::http::error::ApiFailure;
use crate::state::AppState;

impl From<LayerError> for ApiFailure {
    fn from(e: LayerError) -> Self {
        match e {
            LayerError::Invalid(why) => ApiFailure::BadRequest(why),
            LayerError::Access(e) => ApiFailure::from(e),
            LayerError::Database(e) => ApiFailure::from(e),
            LayerError::Desired(e) => ApiFailure::Internal(e.to_string()),
        }
    }
}

/// The MSP-wide layer, under every practice and appliance.
#[utoipa::path(
    tag = "policies",
    responses((status = 200, body = PolicyLayer), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/policy")]
pub async fn show_msp(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    Ok(web::Json(
        layers::show(&state.pool, &auth, LayerTarget::Msp).await?,
    ))
}

/// Replaces the MSP-wide layer (a partial policy; `{}` clears it).
#[utoipa::path(
    tag = "policies",
    request_body(content = Object, description = "Policy settings to override, e.g. {\"failback_clean_period_secs\": 60}"),
    responses((status = 200, body = PolicyLayer), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/policy")]
pub async fn update_msp(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<PolicyOverrides>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    Ok(web::Json(
        layers::replace(
            &state.pool,
            &auth,
            &state.device_link,
            LayerTarget::Msp,
            body.into_inner(),
        )
        .await?,
    ))
}

/// A practice's layer.
#[utoipa::path(
    tag = "policies",
    params(("practice_id" = Uuid, Path)),
    responses((status = 200, body = PolicyLayer), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/policy")]
pub async fn show_practice(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let target = LayerTarget::Practice(path.into_inner());
    Ok(web::Json(layers::show(&state.pool, &auth, target).await?))
}

/// Replaces a practice's layer.
#[utoipa::path(
    tag = "policies",
    params(("practice_id" = Uuid, Path)),
    request_body(content = Object, description = "Policy settings to override"),
    responses((status = 200, body = PolicyLayer), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/practices/{practice_id}/policy")]
pub async fn update_practice(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<PolicyOverrides>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let target = LayerTarget::Practice(path.into_inner());
    Ok(web::Json(
        layers::replace(
            &state.pool,
            &auth,
            &state.device_link,
            target,
            body.into_inner(),
        )
        .await?,
    ))
}

/// An appliance's own layer.
#[utoipa::path(
    tag = "policies",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = PolicyLayer), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/policy")]
pub async fn show_appliance(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let target = LayerTarget::Appliance(path.into_inner());
    Ok(web::Json(layers::show(&state.pool, &auth, target).await?))
}

/// Replaces an appliance's own layer.
#[utoipa::path(
    tag = "policies",
    params(("appliance_id" = Uuid, Path)),
    request_body(content = Object, description = "Policy settings to override"),
    responses((status = 200, body = PolicyLayer), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/appliances/{appliance_id}/policy")]
pub async fn update_appliance(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    body: web::Json<PolicyOverrides>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let target = LayerTarget::Appliance(path.into_inner());
    Ok(web::Json(
        layers::replace(
            &state.pool,
            &auth,
            &state.device_link,
            target,
            body.into_inner(),
        )
        .await?,
    ))
}

/// The appliance's effective policy (with where each value comes from), the desired version and
/// the version the appliance reports running.
#[utoipa::path(
    tag = "policies",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = ApplianceConfiguration), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/configuration")]
pub async fn configuration(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<ApplianceConfiguration>, ApiFailure> {
    let appliance = path.into_inner();
    Ok(web::Json(
        policy::configuration(&state.pool, &auth, appliance).await?,
    ))
}

/// What would take effect if a layer were saved with these overrides: the effective policy with
/// the source of each value, or the first invalid setting named. Nothing is stored.
#[utoipa::path(
    tag = "policies",
    request_body = PolicyPreviewRequest,
    responses((status = 200, body = EffectivePolicy), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/policy/preview")]
pub async fn preview(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<PolicyPreviewRequest>,
) -> Result<web::Json<EffectivePolicy>, ApiFailure> {
    auth.require(Permission::Configure)?;
    Ok(web::Json(
        layers::preview(&state.pool, &auth, body.into_inner()).await?,
    ))
}
