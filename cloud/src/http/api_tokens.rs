//! Long-lived API tokens for MSP automation: `sot_` plus 256 random bits, stored as a SHA-256
//! digest, scoped (`read` or `operate`), optionally expiring, revocable, audited.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::api::{ApiError, ApiTokenView, CreateApiToken, CreatedApiToken, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::api_tokens::{self, ApiTokenError};
use crate::domain::access::{AuthUser, Permission};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<ApiTokenError> for ApiFailure {
    fn from(e: ApiTokenError) -> Self {
        match e {
            ApiTokenError::Unknown => ApiFailure::Unauthenticated(e.to_string()),
            ApiTokenError::Expired => ApiFailure::TokenExpired,
            ApiTokenError::CreatorGone(why) => ApiFailure::Unauthenticated(why.into()),
            ApiTokenError::NotFound(what) => ApiFailure::NotFound(what),
            ApiTokenError::UnknownScope(_) => ApiFailure::Internal(e.to_string()),
            ApiTokenError::Database(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The MSP's API tokens, newest first (the secrets themselves are never shown again).
#[utoipa::path(
    tag = "api-tokens",
    params(TokenListQuery),
    responses((status = 200, body = Page<ApiTokenView>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/api-tokens")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<TokenListQuery>,
) -> Result<web::Json<Page<ApiTokenView>>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let tokens = api_tokens::list(&state.pool, &auth, after, fetch).await?;
    Ok(web::Json(pagination::page(tokens, fetch, |t| {
        (t.created_at, t.id)
    })))
}

/// Creates an API token. The token is in this response only.
#[utoipa::path(
    tag = "api-tokens",
    request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/api-tokens")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateApiToken>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiFailure::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    if body
        .expires_in_days
        .is_some_and(|d| !(1..=3650).contains(&d))
    {
        return Err(ApiFailure::BadRequest(
            "expires_in_days must be between 1 and 3650".into(),
        ));
    }
    let created =
        api_tokens::create(&state.pool, &auth, name, body.scope, body.expires_in_days).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Revokes an API token; it stops working at once.
#[utoipa::path(
    tag = "api-tokens",
    params(("token_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/api-tokens/{token_id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    api_tokens::revoke(&state.pool, &auth, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
