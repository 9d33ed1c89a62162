//! Turns a request's bearer token into the authenticated caller ([`AuthUser`]), confined to one
//! tenant. Every rejection is counted under `api_rejected` and logged.

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::LocalBoxFuture;

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
        Box::pin(async move {
            let user = authenticate(&req).await?;
            if user.totp_enrolment_only {
                return Err(reject(&req, ApiFailure::TotpEnrolmentRequired));
            }
            Ok(user)
        })
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
        Box::pin(async move { authenticate(&req).await.map(SessionUser) })
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

#[derive(serde::Deserialize)]
struct StreamAuth {
    access_token: Option<String>,
}

async fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiFailure> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiFailure::Internal("application state missing".into()))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // EventSource cannot send headers: the live-update stream alone takes the token in its query.
    let query_token = (req.path() == crate::http::stream::STREAM_PATH)
        .then(|| {
            web::Query::<StreamAuth>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.into_inner().access_token)
        })
        .flatten();
    let result = match header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query_token.as_deref())
    {
        None => Err(ApiFailure::Unauthenticated("missing bearer token".into())),
        Some(token) if token.starts_with(API_TOKEN_PREFIX) => {
            api_tokens::authenticate(&state.pool, token)
                .await
                .map_err(ApiFailure::from)
        }
        Some(token) => match state.tokens.verify(token) {
            Ok(AuthUser {
                principal: Principal::User(user),
                tenant_id,
                ..
            }) => sessions::signed_in_user(&state.pool, tenant_id, user)
                .await
                .map_err(ApiFailure::from),
            Ok(other) => Ok(other),
            Err(TokenError::Expired) => Err(ApiFailure::TokenExpired),
            Err(e) => Err(ApiFailure::Unauthenticated(e.to_string())),
        },
    };
    result.map_err(|failure| reject(req, failure))
}
