//! Signing in, and who the caller is.

use actix_web::web;
use chrono::Utc;
use stayopen_shared::api::{CurrentUser, LoginRequest, LoginResponse, Role};
use stayopen_shared::{PracticeId, TenantId, UserId};
use uuid::Uuid;

use crate::auth::{AuthUser, verify_password};
use crate::http::error::ApiFailure;
use crate::metrics::API_REJECTED;
use crate::startup::AppState;

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    tenant_id: Uuid,
    tenant_name: String,
    email: String,
    password_hash: String,
    role: String,
    practice_id: Option<Uuid>,
}

fn parse_role(role: &str) -> Result<Role, ApiFailure> {
    match role {
        "msp_admin" => Ok(Role::MspAdmin),
        "practice_viewer" => Ok(Role::PracticeViewer),
        other => Err(ApiFailure::Internal(format!(
            "unknown role {other:?} in database"
        ))),
    }
}

impl UserRow {
    fn current_user(&self) -> Result<CurrentUser, ApiFailure> {
        Ok(CurrentUser {
            id: UserId(self.id),
            tenant_id: TenantId(self.tenant_id),
            tenant_name: self.tenant_name.clone(),
            email: self.email.clone(),
            role: parse_role(&self.role)?,
            practice_id: self.practice_id.map(PracticeId),
        })
    }
}

macro_rules! user_query {
    ($filter:literal) => {
        concat!(
            "SELECT u.id, u.tenant_id, t.name AS tenant_name, u.email, u.password_hash, u.role, u.practice_id
             FROM users u JOIN tenants t ON t.id = u.tenant_id ",
            $filter
        )
    };
}

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
    let row: Option<UserRow> = sqlx::query_as(user_query!("WHERE u.email = $1"))
        .bind(&email)
        .fetch_optional(&state.pool)
        .await?;
    let password = body.password.clone();
    let hash = row.as_ref().map(|r| r.password_hash.clone());
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let verified = web::block(move || verify_password(&password, hash.as_deref()))
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    let Some(row) = row.filter(|_| verified) else {
        if let Ok(mut throttle) = state.login_throttle.lock() {
            throttle.record_failure(std::time::Instant::now(), &email, &address);
        }
        state
            .metrics
            .increment(API_REJECTED, "reason", "bad_credentials");
        tracing::info!(%email, "failed sign-in");
        return Err(ApiFailure::BadCredentials);
    };
    if let Ok(mut throttle) = state.login_throttle.lock() {
        throttle.record_success(&email);
    }
    let user = row.current_user()?;
    let auth = AuthUser {
        user_id: user.id,
        tenant_id: user.tenant_id,
        role: user.role.clone(),
        practice_id: user.practice_id,
    };
    let (access_token, expires_at) = state
        .tokens
        .issue(&auth, Utc::now())
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    tracing::info!(user_id = %user.id, tenant_id = %user.tenant_id, "signed in");
    Ok(web::Json(LoginResponse {
        access_token,
        expires_at,
        user,
    }))
}

pub async fn me(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<CurrentUser>, ApiFailure> {
    let row: Option<UserRow> = sqlx::query_as(user_query!("WHERE u.id = $1 AND u.tenant_id = $2"))
        .bind(auth.user_id.as_uuid())
        .bind(auth.tenant_id.as_uuid())
        .fetch_optional(&state.pool)
        .await?;
    let row = row.ok_or(ApiFailure::Unauthenticated(
        "the user no longer exists".into(),
    ))?;
    Ok(web::Json(row.current_user()?))
}
