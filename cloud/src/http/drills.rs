//! Drills: the list (with those awaiting sign-off), one drill, the sign-off, and starting a drill
//! by hand on every online appliance of a practice ([`crate::domain::compliance::drills`]).

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stayopen_shared::PracticeId;
use stayopen_shared::api::{ApiError, CommandView, Page};
use stayopen_shared::compliance::{DrillRecord, SignOffDrill};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::compliance::ComplianceError;
use crate::domain::compliance::drills::{self, DrillFilter};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DrillListQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub practice_id: Option<PracticeId>,
    /// Only finished drills nobody has signed off yet.
    pub awaiting_sign_off: Option<bool>,
}

/// Drills, newest first.
#[utoipa::path(
    tag = "compliance",
    params(DrillListQuery),
    responses((status = 200, body = Page<DrillRecord>), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/drills")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<DrillListQuery>,
) -> Result<web::Json<Page<DrillRecord>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let filter = DrillFilter {
        practice: query.practice_id,
        awaiting_sign_off: query.awaiting_sign_off.unwrap_or(false),
    };
    let items = drills::list(&state.pool, &auth, filter, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |d: &DrillRecord| (d.started_at, d.id),
    )))
}

/// One drill with what it measured and its sign-off.
#[utoipa::path(
    tag = "compliance",
    params(("drill_id" = Uuid, Path)),
    responses((status = 200, body = DrillRecord), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/drills/{drill_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<DrillRecord>, ApiFailure> {
    Ok(web::Json(
        drills::show(&state.pool, &auth, path.into_inner()).await?,
    ))
}

/// Signs a finished drill off as reviewed (the practice's compliance officer or an MSP admin,
/// once).
#[utoipa::path(
    tag = "compliance",
    params(("drill_id" = Uuid, Path)),
    request_body = SignOffDrill,
    responses((status = 200, body = DrillRecord), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/drills/{drill_id}/sign-off")]
pub async fn sign_off(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<SignOffDrill>,
) -> Result<web::Json<DrillRecord>, ApiFailure> {
    Ok(web::Json(
        drills::sign_off(
            &state.pool,
            &auth,
            path.into_inner(),
            &body.comment,
            Utc::now(),
        )
        .await?,
    ))
}

/// How long a drill started by hand keeps traffic on the backup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartPracticeDrill {
    /// 10 to 3600 seconds.
    pub duration_secs: u32,
}

/// Starts a drill on every online appliance of a practice: one `start_drill` command each.
#[utoipa::path(
    tag = "compliance",
    params(("practice_id" = Uuid, Path)),
    request_body = StartPracticeDrill,
    responses((status = 201, body = Vec<CommandView>), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/practices/{practice_id}/drills")]
pub async fn start(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<StartPracticeDrill>,
) -> Result<HttpResponse, ApiFailure> {
    let queued = drills::start(
        &state.pool,
        &auth,
        &state.device_link,
        path.into_inner(),
        body.duration_secs,
    )
    .await
    .inspect_err(|e| {
        if let ComplianceError::Invalid(why) = e {
            state
                .metrics
                .increment(API_REJECTED, "reason", "invalid_drill");
            tracing::info!(duration_secs = body.duration_secs, %why, "drill refused");
        }
    })?;
    Ok(HttpResponse::Created().json(queued))
}
