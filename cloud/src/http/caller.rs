//! Turns a request's bearer token into the authenticated caller ([`AuthUser`]), confined to one
//! tenant. Every rejection is counted under `api_rejected` and logged.

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use crate::domain::access::{
    API_TOKEN_PREFIX, AuthUser, Principal, TokenError, api_tokens, sessions,
};
use crate::http::error::ApiFailure;
use crate::state::AppState;

impl FromRequest for AuthUser {
    type Error = ApiFailure;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { CallerSession::extract(&req).await.map(|c| c.user) })
    }
}

/// A caller (as [`AuthUser`]) with the sign-in its access token belongs to, for the endpoint that
/// issues live-update stream tickets: the stream ends when that sign-in does.
#[derive(Debug, Clone)]
pub struct CallerSession {
    pub user: AuthUser,
    /// The refresh-token family of the access token; `None` for API tokens.
    pub session: Option<Uuid>,
}

impl CallerSession {
    async fn extract(req: &HttpRequest) -> Result<Self, ApiFailure> {
        let (user, session) = authenticate(req).await?;
        if user.totp_enrolment_only {
            return Err(reject(req, ApiFailure::TotpEnrolmentRequired));
        }
        Ok(Self { user, session })
    }
}

impl FromRequest for CallerSession {
    type Error = ApiFailure;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Self::extract(&req).await })
    }
}

/// A caller who may also hold a TOTP-enrolment-only token: for the endpoints that let such an
/// admin see who they are and enrol their second factor.
#[derive(Debug, Clone)]
pub struct SessionUser(pub AuthUser);

impl FromRequest for SessionUser {
    type Error = ApiFailure;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await.map(|(user, _)| SessionUser(user)) })
    }
}

fn reject(req: &HttpRequest, failure: ApiFailure) -> ApiFailure {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        state.metrics.increment(
            crate::infra::metrics::API_REJECTED,
            "reason",
            failure.code(),
        );
    }
    tracing::info!(path = %req.path(), reason = failure.code(), "rejected unauthenticated request");
    failure
}

/// The bearer token of the `Authorization` header: an access token or an API token. Tokens are
/// never taken from the query string, where logs and proxies would keep them (the live-update
/// stream opens with a single-use ticket instead).
async fn authenticate(req: &HttpRequest) -> Result<(AuthUser, Option<Uuid>), ApiFailure> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiFailure::Internal("application state missing".into()))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let result = match header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
    {
        None => Err(ApiFailure::Unauthenticated("missing bearer token".into())),
        Some(token) if token.starts_with(API_TOKEN_PREFIX) => {
            api_tokens::authenticate(&state.pool, token)
                .await
                .map(|user| (user, None))
                .map_err(ApiFailure::from)
        }
        Some(token) => match state.tokens.verify_session(token) {
            Ok((
                AuthUser {
                    principal: Principal::User(user),
                    tenant_id,
                    ..
                },
                session,
            )) => sessions::signed_in_user(&state.pool, tenant_id, user)
                .await
                .map(|user| (user, session))
                .map_err(ApiFailure::from),
            Ok(other) => Ok(other),
            Err(TokenError::Expired) => Err(ApiFailure::TokenExpired),
            Err(e) => Err(ApiFailure::Unauthenticated(e.to_string())),
        },
    };
    result.map_err(|failure| reject(req, failure))
}
