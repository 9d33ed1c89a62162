//! Commands for appliances: queue (audited), list, show; the queue and its delivery are
//! [`crate::domain::commands`].

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{ApiError, CommandView, CreateCommand, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::commands::{self, CommandError};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;

impl From<CommandError> for ApiFailure {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(what) => ApiFailure::NotFound(what),
            CommandError::Invalid(why) => ApiFailure::BadRequest(why),
            e @ CommandError::UnknownStatus(_) => ApiFailure::Internal(e.to_string()),
            CommandError::Access(e) => ApiFailure::from(e),
            CommandError::Database(e) => ApiFailure::from(e),
        }
    }
}

/// Queues a command; it is delivered as soon as the appliance is online.
#[utoipa::path(
    tag = "commands",
    params(("appliance_id" = Uuid, Path)),
    request_body = CreateCommand,
    responses((status = 201, body = CommandView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/commands")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    body: web::Json<CreateCommand>,
) -> Result<HttpResponse, ApiFailure> {
    let appliance = path.into_inner();
    let view = commands::queue(
        &state.pool,
        &auth,
        &state.device_link,
        appliance,
        &body.spec,
        body.expires_in_secs,
    )
    .await
    .inspect_err(|e| {
        if let CommandError::Invalid(why) = e {
            state
                .metrics
                .increment(API_REJECTED, "reason", "invalid_command");
            tracing::info!(%appliance, kind = body.spec.kind(), %why, "command refused");
        }
    })?;
    Ok(HttpResponse::Created().json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CommandListQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// An appliance's commands, newest first.
#[utoipa::path(
    tag = "commands",
    params(("appliance_id" = Uuid, Path), CommandListQuery),
    responses((status = 200, body = Page<CommandView>), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/commands")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<CommandListQuery>,
) -> Result<web::Json<Page<CommandView>>, ApiFailure> {
    let appliance = path.into_inner();
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let items = commands::list(&state.pool, &auth, appliance, after, fetch).await?;
    Ok(web::Json(pagination::page(items, fetch, |c| {
        (c.created_at, c.id)
    })))
}

/// One command and its outcome.
#[utoipa::path(
    tag = "commands",
    params(("command_id" = Uuid, Path)),
    responses((status = 200, body = CommandView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/commands/{command_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<CommandView>, ApiFailure> {
    Ok(web::Json(
        commands::show(&state.pool, &auth, path.into_inner()).await?,
    ))
}
