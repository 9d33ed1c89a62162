//! What the dashboard shows at a glance: fleet totals for the caller's scope, and an appliance's
//! latency and loss over a period ([`crate::domain::fleet::overview`]).

use actix_web::{get, web};
use chrono::Utc;
use serde::Deserialize;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{ApiError, ApplianceMetrics, FleetTotals, MetricsPeriod};
use utoipa::IntoParams;

use crate::domain::access::AuthUser;
use crate::domain::fleet::overview;
use crate::http::error::ApiFailure;
use crate::state::AppState;

/// Counts over every practice and appliance the caller may see.
#[utoipa::path(
    tag = "fleet",
    responses((status = 200, body = FleetTotals), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/fleet/totals")]
pub async fn totals(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<FleetTotals>, ApiFailure> {
    let offline_after_secs = state.config.fleet.offline_after_secs;
    Ok(web::Json(
        overview::totals(&state.pool, &auth, offline_after_secs).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// `hour` (default, 1-minute points), `day` (15-minute points) or `month` (30 days, 6-hour
    /// points).
    pub period: Option<MetricsPeriod>,
}

/// An appliance's latency and loss per uplink over the period, one mean per bucket.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path), MetricsQuery),
    responses((status = 200, body = ApplianceMetrics), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/metrics")]
pub async fn appliance_metrics(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<MetricsQuery>,
) -> Result<web::Json<ApplianceMetrics>, ApiFailure> {
    let appliance = path.into_inner();
    let period = query.period.unwrap_or_default();
    Ok(web::Json(
        overview::appliance_metrics(&state.pool, &auth, appliance, period, Utc::now()).await?,
    ))
}
