//! Enrolment tokens: scoped to a practice (and optionally a site), expiring, with a use count,
//! revocable. Only the SHA-256 of a token is stored; the token itself is shown once.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::PracticeId;
use stayopen_shared::api::{
    ApiError, CreateEnrollmentToken, EnrollmentToken, EnrollmentTokenView, Page,
};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::enrolment::tokens::{self, EnrolmentTokenError, TokenRequest};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<EnrolmentTokenError> for ApiFailure {
    fn from(e: EnrolmentTokenError) -> Self {
        match e {
            EnrolmentTokenError::Invalid(why) => ApiFailure::BadRequest(why),
            EnrolmentTokenError::NotFound(what) => ApiFailure::NotFound(what),
            EnrolmentTokenError::Access(e) => e.into(),
            EnrolmentTokenError::Database(e) => e.into(),
        }
    }
}

/// Creates an enrolment token for a practice (its first site unless `site_id` is given).
#[utoipa::path(
    tag = "enrolment",
    params(("practice_id" = Uuid, Path)),
    request_body = CreateEnrollmentToken,
    responses(
        (status = 201, body = EnrollmentToken),
        (status = 400, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ),
    security(("bearer" = []))
)]
#[post("/practices/{practice_id}/enrollment-tokens")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<CreateEnrollmentToken>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    let request = TokenRequest {
        practice: path.into_inner(),
        site: body.site_id,
        expires_in_hours: body.expires_in_hours,
        max_uses: body.max_uses,
    };
    let token = tokens::create(&state.pool, &auth, request).await?;
    Ok(HttpResponse::Created().json(token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenListQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A practice's enrolment tokens, newest first: uses, expiry and revocation, never the token.
#[utoipa::path(
    tag = "enrolment",
    params(("practice_id" = Uuid, Path), TokenListQuery),
    responses(
        (status = 200, body = Page<EnrollmentTokenView>),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/enrollment-tokens")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    query: web::Query<TokenListQuery>,
) -> Result<web::Json<Page<EnrollmentTokenView>>, ApiFailure> {
    let practice = path.into_inner();
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let items = tokens::list(&state.pool, &auth, practice, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |t: &EnrollmentTokenView| (t.created_at, t.id),
    )))
}

/// Revokes an enrolment token: enrolling with it is refused from then on (appliances it enrolled
/// stay enrolled). Audited.
#[utoipa::path(
    tag = "enrolment",
    params(("enrollment_token_id" = Uuid, Path)),
    responses(
        (status = 200, body = EnrollmentTokenView),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ),
    security(("bearer" = []))
)]
#[post("/enrollment-tokens/{enrollment_token_id}/revoke")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<EnrollmentTokenView>, ApiFailure> {
    let view = tokens::revoke(&state.pool, &auth, path.into_inner()).await?;
    Ok(web::Json(view))
}
