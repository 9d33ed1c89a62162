//! The REST API (`/api/v1`), health endpoints, metrics and the dashboard's static files.
//!
//! Handlers return `Result<_, ApiFailure>`; the HTTP status is chosen only in [`error`].

pub mod alerts;
pub mod api_tokens;
pub mod audit_log;
pub mod availability;
pub mod caller;
pub mod claims;
pub mod commands;
pub mod critical_apps;
pub mod csv;
pub mod device_identity;
pub mod drills;
pub mod enroll;
pub mod error;
pub mod evidence;
pub mod fleet;
pub mod health;
pub mod incidents;
pub mod maintenance;
pub mod notifications;
pub mod overview;
pub mod pagination;
pub mod policies;
pub mod relay;
pub mod schedule;
pub mod security_headers;
pub mod session;
pub mod stream;
pub mod timing;
pub mod tokens;
pub mod users;

use std::path::PathBuf;

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_actix_web::{AppExt, scope, service_config::ServiceConfig};

use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;
use error::ApiFailure;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StayOpen cloud API",
        version = "1",
        description = "Multi-tenant API for MSPs and their practices. Errors are `{\"error\": {\"code\", \"message\"}}`; lists are paginated with `limit` and `cursor`."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("access JWT, or an sot_ API token")
                    .description(Some(
                        "An access token from /auth/login or /auth/refresh, or an API token",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "relay_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("an sor_ relay token")
                    .description(Some(
                        "A relay's token, printed once by `stayopen-cloud admin relay-add`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every `/api/v1` endpoint. Each is registered with `service(…)` from its `#[utoipa::path]`
/// handler, so the OpenAPI document is generated from the very routes that serve.
pub fn api_routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope::scope("/api/v1")
            .service(session::login)
            .service(session::refresh)
            .service(session::logout)
            .service(session::me)
            .service(session::totp_setup)
            .service(session::totp_confirm)
            .service(users::list)
            .service(users::create)
            .service(users::show)
            .service(users::update)
            .service(users::remove)
            .service(users::security_settings)
            .service(users::update_security_settings)
            .service(api_tokens::list)
            .service(api_tokens::create)
            .service(api_tokens::revoke)
            .service(enroll::enroll)
            .service(enroll::enroll_claimed)
            .service(enroll::renew)
            .service(claims::create)
            .service(claims::list)
            .service(claims::remove)
            .service(fleet::show_fleet)
            .service(overview::totals)
            .service(overview::appliance_metrics)
            .service(stream::live_updates)
            .service(stream::create_ticket)
            .service(policies::preview)
            .service(fleet::list_practices)
            .service(fleet::export_practices)
            .service(fleet::create_practice)
            .service(fleet::show_practice)
            .service(fleet::set_practice_tags)
            .service(fleet::list_sites)
            .service(fleet::create_site)
            .service(fleet::update_site)
            .service(fleet::list_appliances)
            .service(fleet::export_appliances)
            .service(fleet::bulk_appliances)
            .service(fleet::show_appliance)
            .service(fleet::revoke_appliance)
            .service(device_identity::show)
            .service(device_identity::approve_reenrollment)
            .service(device_identity::restore)
            .service(fleet::appliance_telemetry)
            .service(fleet::appliance_events)
            .service(tokens::create)
            .service(tokens::list)
            .service(tokens::revoke)
            .service(policies::show_msp)
            .service(policies::update_msp)
            .service(policies::show_practice)
            .service(policies::update_practice)
            .service(policies::show_appliance)
            .service(policies::update_appliance)
            .service(policies::configuration)
            .service(commands::create)
            .service(commands::list)
            .service(commands::show)
            .service(audit_log::list)
            .service(audit_log::export)
            .service(alerts::list)
            .service(alerts::export)
            .service(alerts::bulk)
            .service(alerts::show)
            .service(alerts::acknowledge)
            .service(alerts::resolve)
            .service(alerts::comment)
            .service(notifications::create_channel)
            .service(notifications::list_channels)
            .service(notifications::delete_channel)
            .service(notifications::create_rule)
            .service(notifications::list_rules)
            .service(notifications::delete_rule)
            .service(notifications::list_notifications)
            .service(schedule::show)
            .service(schedule::update)
            .service(maintenance::create)
            .service(maintenance::list)
            .service(maintenance::remove)
            .service(critical_apps::list)
            .service(critical_apps::create)
            .service(critical_apps::update)
            .service(critical_apps::remove)
            .service(drills::list)
            .service(drills::show)
            .service(drills::sign_off)
            .service(drills::start)
            .service(incidents::list)
            .service(incidents::export)
            .service(incidents::show)
            .service(incidents::update)
            .service(incidents::comment)
            .service(availability::show)
            .service(evidence::public_key)
            .service(evidence::create)
            .service(evidence::list)
            .service(evidence::show)
            .service(evidence::download)
            .service(relay::peers)
            .route("/openapi.json", web::get().to(openapi_json))
            .default_service(web::to(|| async {
                ApiFailure::NotFound("no such API endpoint")
            })),
    );
}

/// The OpenAPI document of [`api_routes`], built once at start.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, openapi) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(api_routes)
        .split_for_parts();
    openapi
}

async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// Extractor settings (bad bodies, paths and queries are counted and answered with `ApiError`).
pub fn extractor_config(cfg: &mut ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(path_config())
        .app_data(query_config());
}

/// Health, metrics and the dashboard's files; registered after [`api_routes`].
pub fn configure(cfg: &mut web::ServiceConfig, static_dir: Option<PathBuf>) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics));
    if let Some(dir) = static_dir {
        let index = dir.join("index.html");
        // The dashboard's files go out compressed (brotli, zstd or gzip, as the browser accepts):
        // its wasm is a third of its size gzipped. Only these static files: the API's answers,
        // which carry secrets next to text a caller chooses, stay uncompressed (BREACH), and the
        // event stream must not wait in an encoder's buffer.
        cfg.service(
            web::scope("")
                .wrap(actix_web::middleware::from_fn(dashboard_caching))
                .wrap(actix_web::middleware::Compress::default())
                .service(
                    actix_files::Files::new("/", dir)
                        .index_file("index.html")
                        .default_handler(web::to(move |req: actix_web::HttpRequest| {
                            // Client-side routes (/login, /fleet …) all load the single-page app;
                            // a build's file that is not there (an older build's, asked for by a
                            // tab opened before a deployment) is a plain 404.
                            let index = index.clone();
                            async move {
                                if req.path().starts_with(VERSIONED_FILES) {
                                    return Ok(HttpResponse::NotFound().finish());
                                }
                                actix_files::NamedFile::open_async(index)
                                    .await
                                    .map(|f| f.into_response(&req))
                            }
                        })),
                ),
        );
    }
}

/// Where `infra/scripts/build-frontend.sh` puts a build's code: `/app-<hash of its wasm>/`, so
/// each build's files have names of their own.
const VERSIONED_FILES: &str = "/app-";

/// How long browsers keep the dashboard's files. A build's code (under [`VERSIONED_FILES`]) never
/// changes under its name: kept for a year without asking again. Everything else (`index.html`,
/// `boot.js`, which names the build to load, and the style sheet) is asked again each time (an
/// unchanged file answers 304), so a new build is picked up on the next load and a tab never mixes
/// one build's main module with another's page modules.
async fn dashboard_caching(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let versioned = req.path().starts_with(VERSIONED_FILES);
    let mut response = next.call(req).await?;
    let policy = if versioned && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static(policy),
    );
    Ok(response)
}

fn record_bad_request(
    req: &actix_web::HttpRequest,
    reason: &'static str,
    detail: String,
) -> actix_web::Error {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        state.metrics.increment(API_REJECTED, "reason", reason);
    }
    // Parser errors quote the value they could not read: never into the log.
    let logged = security_headers::redact_quoted(&detail);
    tracing::info!(path = %req.path(), reason, detail = %logged, "rejected request");
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
