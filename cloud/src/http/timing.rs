//! The API's latency histogram: each request's duration by route template (never the raw path,
//! whose ids would make a series per appliance) and status class, recorded into
//! [`crate::infra::metrics::Metrics::record_http`] (`/metrics` and, when enabled, OTLP).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::state::AppState;

/// Middleware (`middleware::from_fn`): times the rest of the chain.
pub async fn request_duration(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    // Unmatched paths (probes, typos) share one series.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(req).await;
    if let Some(state) = state {
        let status = match &response {
            Ok(response) => response.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        state.metrics.record_http(&route, status, started.elapsed());
    }
    response
}
