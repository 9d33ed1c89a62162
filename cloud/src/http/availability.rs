//! A practice's availability per month and day, computed on the server from the hourly roll-up
//! ([`crate::domain::compliance::availability`]).

use actix_web::{get, web};
use chrono::NaiveDate;
use serde::Deserialize;
use stayopen_shared::PracticeId;
use stayopen_shared::api::ApiError;
use stayopen_shared::compliance::AvailabilityMonth;
use utoipa::IntoParams;

use crate::domain::access::AuthUser;
use crate::domain::compliance::availability;
use crate::http::error::ApiFailure;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    /// The first day (UTC), `2026-01-01`.
    pub from: NaiveDate,
    /// The last day (UTC), inclusive.
    pub to: NaiveDate,
}

/// Primary-line and effective availability per month of `[from, to]`, each with its days; time no
/// appliance reported on is a gap, never up.
#[utoipa::path(
    tag = "compliance",
    params(("practice_id" = Uuid, Path), AvailabilityQuery),
    responses((status = 200, body = Vec<AvailabilityMonth>), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/availability")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    query: web::Query<AvailabilityQuery>,
) -> Result<web::Json<Vec<AvailabilityMonth>>, ApiFailure> {
    Ok(web::Json(
        availability::for_caller(&state.pool, &auth, path.into_inner(), query.from, query.to)
            .await?,
    ))
}
