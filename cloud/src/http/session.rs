//! Signing in and staying signed in (see [`crate::domain::access::sessions`]): the sign-in
//! throttle and the rejection counter are kept here, at the edge.

use actix_web::{HttpResponse, get, post, web};
use chrono::Duration;
use stayopen_shared::api::{
    ApiError, CurrentUser, LoginRequest, LoginResponse, RefreshRequest, TotpCode, TotpSetup,
};

use crate::domain::access::sessions::{self, Credentials, SessionError, SessionKeys};
use crate::http::caller::SessionUser;
use crate::http::error::ApiFailure;
use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;

impl From<SessionError> for ApiFailure {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::BadCredentials => ApiFailure::BadCredentials,
            SessionError::TotpRequired => ApiFailure::TotpRequired,
            SessionError::TotpInvalid => ApiFailure::TotpInvalid,
            SessionError::Unauthenticated(why) => ApiFailure::Unauthenticated(why.into()),
            SessionError::AccessExpired => ApiFailure::AccessExpired,
            SessionError::RefreshTokenInvalid => ApiFailure::RefreshTokenInvalid,
            SessionError::RefreshTokenReused => ApiFailure::RefreshTokenReused,
            SessionError::NotFound(what) => ApiFailure::NotFound(what),
            SessionError::Conflict(why) => ApiFailure::Conflict(why.into()),
            SessionError::UnknownRole(_) => ApiFailure::Internal(e.to_string()),
            SessionError::Signing(e) => ApiFailure::Internal(e.to_string()),
            SessionError::Blocking(e) => ApiFailure::Internal(e.to_string()),
            SessionError::Access(e) => e.into(),
            SessionError::Database(e) => e.into(),
        }
    }
}

fn session_keys(state: &AppState) -> SessionKeys<'_> {
    SessionKeys {
        tokens: &state.tokens,
        refresh_ttl: Duration::hours(i64::from(state.config.auth.refresh_ttl_hours)),
    }
}

fn throttle_failure(state: &AppState, email: &str, address: &str, reason: &'static str) {
    if let Ok(mut throttle) = state.login_throttle.lock() {
        throttle.record_failure(std::time::Instant::now(), email, address);
    }
    state.metrics.increment(API_REJECTED, "reason", reason);
    tracing::info!(%email, reason, "failed sign-in");
}

/// Signs in with e-mail, password and (when enabled) a TOTP code.
#[utoipa::path(
    tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse, description = "Signed in"),
        (status = 401, body = ApiError, description = "Wrong credentials, TOTP required or wrong"),
        (status = 429, body = ApiError, description = "Too many failed attempts; see Retry-After"),
    )
)]
#[post("/auth/login")]
pub async fn login(
    state: web::Data<AppState>,
    request: actix_web::HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<web::Json<LoginResponse>, ApiFailure> {
    let email = body.email.trim().to_lowercase();
    let address = request
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let throttled = state
        .login_throttle
        .lock()
        .map_err(|_| ApiFailure::Internal("login throttle poisoned".into()))?
        .check(std::time::Instant::now(), &email, &address);
    if let Err(retry_after) = throttled {
        state
            .metrics
            .increment(API_REJECTED, "reason", "too_many_attempts");
        tracing::warn!(%email, %address, "sign-in throttled");
        return Err(ApiFailure::TooManyAttempts(retry_after.as_secs().max(1)));
    }
    let credentials = Credentials {
        email: &email,
        password: &body.password,
        totp_code: body.totp_code.as_deref(),
    };
    let result = sessions::sign_in(&state.pool, session_keys(&state), credentials).await;
    match &result {
        Ok(_) => {
            if let Ok(mut throttle) = state.login_throttle.lock() {
                throttle.record_success(&email);
            }
        }
        Err(SessionError::BadCredentials) => {
            throttle_failure(&state, &email, &address, "bad_credentials");
        }
        Err(SessionError::TotpInvalid) => {
            throttle_failure(&state, &email, &address, "totp_invalid");
        }
        Err(SessionError::TotpRequired) => {
            state
                .metrics
                .increment(API_REJECTED, "reason", "totp_required");
        }
        Err(_) => {}
    }
    Ok(web::Json(result?))
}

/// Trades a refresh token for a new access token and the next refresh token. Each refresh token
/// works once; presenting a used one revokes every token of that sign-in.
#[utoipa::path(
    tag = "session",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, body = ApiError, description = "Unknown, expired, revoked or reused refresh token"),
    )
)]
#[post("/auth/refresh")]
pub async fn refresh(
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<web::Json<LoginResponse>, ApiFailure> {
    let result = sessions::refresh(&state.pool, session_keys(&state), &body.refresh_token)
        .await
        .map_err(ApiFailure::from);
    if let Err(failure) = &result {
        state
            .metrics
            .increment(API_REJECTED, "reason", failure.code());
    }
    result.map(web::Json)
}

/// Signs out: revokes the refresh token and every token of its sign-in.
#[utoipa::path(
    tag = "session",
    request_body = RefreshRequest,
    responses((status = 204, description = "Signed out"), (status = 401, body = ApiError))
)]
#[post("/auth/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiFailure> {
    sessions::sign_out(&state.pool, &body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The signed-in user.
#[utoipa::path(
    tag = "session",
    responses((status = 200, body = CurrentUser), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/me")]
pub async fn me(
    state: web::Data<AppState>,
    auth: SessionUser,
) -> Result<web::Json<CurrentUser>, ApiFailure> {
    Ok(web::Json(
        sessions::current_user(&state.pool, &auth.0).await?,
    ))
}

/// Starts TOTP enrolment: a new secret to add to an authenticator app. Not active until confirmed.
#[utoipa::path(
    tag = "session",
    responses(
        (status = 200, body = TotpSetup),
        (status = 409, body = ApiError, description = "TOTP is already enabled"),
    ),
    security(("bearer" = []))
)]
#[post("/auth/totp/setup")]
pub async fn totp_setup(
    state: web::Data<AppState>,
    auth: SessionUser,
) -> Result<web::Json<TotpSetup>, ApiFailure> {
    Ok(web::Json(
        sessions::start_totp_enrolment(&state.pool, &auth.0).await?,
    ))
}

/// Confirms TOTP enrolment with a current code; from then on sign-in needs a code. Sign in again
/// afterwards to leave a TOTP-enrolment-only session.
#[utoipa::path(
    tag = "session",
    request_body = TotpCode,
    responses(
        (status = 204, description = "TOTP enabled"),
        (status = 401, body = ApiError, description = "Wrong code"),
        (status = 409, body = ApiError, description = "No enrolment started, or already enabled"),
    ),
    security(("bearer" = []))
)]
#[post("/auth/totp/confirm")]
pub async fn totp_confirm(
    state: web::Data<AppState>,
    auth: SessionUser,
    body: web::Json<TotpCode>,
) -> Result<HttpResponse, ApiFailure> {
    sessions::confirm_totp(&state.pool, &auth.0, &body.code).await?;
    Ok(HttpResponse::NoContent().finish())
}
