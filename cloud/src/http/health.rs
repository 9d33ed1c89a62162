use actix_web::{HttpResponse, web};
use stayopen_shared::api::Readiness;

use crate::infra::db;
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Readiness: the database answers and the broker's listener is up.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = db::ping(&state.pool).await;
    let broker = state.broker.is_alive();
    let readiness = Readiness { database, broker };
    if database && broker {
        HttpResponse::Ok().json(readiness)
    } else {
        HttpResponse::ServiceUnavailable().json(readiness)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render_prometheus())
}
