//! The REST API (`/api/v1`), health endpoints, metrics and the dashboard's static files.
//!
//! Handlers return `Result<_, ApiFailure>`; the HTTP status is chosen only in [`error`].

pub mod enroll;
pub mod error;
pub mod fleet;
pub mod health;
pub mod session;
pub mod tokens;

use std::path::PathBuf;

use actix_web::web;

use crate::metrics::API_REJECTED;
use crate::startup::AppState;
use error::ApiFailure;

pub fn configure(cfg: &mut web::ServiceConfig, static_dir: Option<PathBuf>) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .app_data(query_config())
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/api/v1")
                .route("/auth/login", web::post().to(session::login))
                .route("/me", web::get().to(session::me))
                .route("/enroll", web::post().to(enroll::enroll))
                .route("/fleet", web::get().to(fleet::fleet))
                .route(
                    "/appliances/{appliance_id}/telemetry",
                    web::get().to(fleet::appliance_telemetry),
                )
                .route(
                    "/practices/{practice_id}/enrollment-tokens",
                    web::post().to(tokens::create),
                )
                .default_service(web::to(|| async {
                    ApiFailure::NotFound("no such API endpoint")
                })),
        );
    if let Some(dir) = static_dir {
        let index = dir.join("index.html");
        cfg.service(
            actix_files::Files::new("/", dir)
                .index_file("index.html")
                .default_handler(web::to(move |req: actix_web::HttpRequest| {
                    // Client-side routes (/login, /fleet …) all load the single-page app.
                    let index = index.clone();
                    async move {
                        actix_files::NamedFile::open_async(index)
                            .await
                            .map(|f| f.into_response(&req))
                    }
                })),
        );
    }
}

fn record_bad_request(
    req: &actix_web::HttpRequest,
    reason: &'static str,
    detail: String,
) -> actix_web::Error {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        state.metrics.increment(API_REJECTED, "reason", reason);
    }
    tracing::info!(path = %req.path(), reason, %detail, "rejected request");
    ApiFailure::BadRequest(detail).into()
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|err, req| record_bad_request(req, "bad_json_body", err.to_string()))
}

fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, req| record_bad_request(req, "bad_path", err.to_string()))
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, req| record_bad_request(req, "bad_query", err.to_string()))
}
