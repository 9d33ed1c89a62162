//! Signing in and staying signed in: password (and TOTP) sign-in, refresh-token rotation with reuse
//! detection, sign-out, the current user, and TOTP enrolment.
//!
//! Design: an access token is a short-lived JWT that no request has to look up. A refresh token is
//! an opaque, single-use secret stored hashed; each sign-in starts a *family*, and every refresh
//! retires the presented token and issues the next one of the family. A retired token presented
//! again can only mean a copy exists elsewhere, so the whole family is revoked at once.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Duration, Utc};
use stayopen_shared::api::{
    ApiError, CurrentUser, LoginRequest, LoginResponse, RefreshRequest, Role, TotpCode, TotpSetup,
};
use stayopen_shared::{PracticeId, TenantId, UserId};
use uuid::Uuid;

use crate::domain::access::totp;
use crate::domain::access::{AuthUser, Principal, random_secret, secret_digest, verify_password};
use crate::domain::audit::{self, Change};
use crate::http::caller::SessionUser;
use crate::http::error::ApiFailure;
use crate::infra::db::{self, Tx, lookup};
use crate::infra::metrics::API_REJECTED;
use crate::state::AppState;

/// Everything sign-in and refresh need to know about a user, read inside the user's tenant.
#[derive(sqlx::FromRow)]
pub(crate) struct UserRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: String,
    pub practice_ids: Vec<Uuid>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub totp_secret: Option<Vec<u8>>,
    pub totp_enabled: bool,
    pub totp_last_step: Option<i64>,
    pub require_totp_for_admins: bool,
}

impl UserRecord {
    pub(crate) async fn load(tx: &mut Tx, user: Uuid) -> Result<Option<Self>, sqlx::Error> {
        sqlx::query_as(
            "SELECT u.id, u.tenant_id, t.name AS tenant_name, u.email, u.display_name, u.password_hash,
                    u.role, u.access_expires_at, u.disabled_at, u.totp_secret, u.totp_enabled,
                    u.totp_last_step, t.require_totp_for_admins,
                    COALESCE(array_agg(up.practice_id ORDER BY up.practice_id)
                             FILTER (WHERE up.practice_id IS NOT NULL), '{}') AS practice_ids
             FROM users u
             JOIN tenants t ON t.id = u.tenant_id
             LEFT JOIN user_practices up ON up.user_id = u.id
             WHERE u.id = $1
             GROUP BY u.id, t.id",
        )
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
    }

    fn role(&self) -> Result<Role, ApiFailure> {
        Role::parse(&self.role).ok_or_else(|| {
            ApiFailure::Internal(format!("unknown role {:?} in database", self.role))
        })
    }

    /// Refuses a disabled account or an auditor whose access has ended.
    fn check_active(&self, now: DateTime<Utc>) -> Result<(), ApiFailure> {
        if self.disabled_at.is_some() {
            return Err(ApiFailure::Unauthenticated(
                "this account is disabled".into(),
            ));
        }
        if self.access_expires_at.is_some_and(|end| end <= now) {
            return Err(ApiFailure::AccessExpired);
        }
        Ok(())
    }

    pub(crate) fn current_user(&self) -> Result<CurrentUser, ApiFailure> {
        Ok(CurrentUser {
            id: UserId(self.id),
            tenant_id: TenantId(self.tenant_id),
            tenant_name: self.tenant_name.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            role: self.role()?,
            practice_ids: self.practice_ids.iter().copied().map(PracticeId).collect(),
            access_expires_at: self.access_expires_at,
            totp_enabled: self.totp_enabled,
        })
    }

    fn auth_user(&self) -> Result<AuthUser, ApiFailure> {
        let role = self.role()?;
        Ok(AuthUser {
            principal: Principal::User(UserId(self.id)),
            tenant_id: TenantId(self.tenant_id),
            role,
            practices: if role.is_msp_wide() {
                Vec::new()
            } else {
                self.practice_ids.iter().copied().map(PracticeId).collect()
            },
            api_scope: None,
            totp_enrolment_only: role == Role::MspAdmin
                && self.require_totp_for_admins
                && !self.totp_enabled,
        })
    }
}

/// The signed-in user an access token names, as the database has them now. The token proves who
/// signed in; whether they still may, and with which role and practices, is read on every request,
/// so disabling an account, ending an auditor's access or changing a user's role or practices
/// takes effect at once rather than when the 15-minute token runs out.
pub(crate) async fn signed_in_user(
    state: &AppState,
    tenant: TenantId,
    user: UserId,
) -> Result<AuthUser, ApiFailure> {
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    let record = UserRecord::load(&mut tx, user.0)
        .await?
        .ok_or_else(|| ApiFailure::Unauthenticated("this account no longer exists".into()))?;
    record.check_active(Utc::now())?;
    record.auth_user()
}

/// Issues an access token and a new refresh token of `family`, inside `tx`.
async fn issue_session(
    state: &AppState,
    tx: &mut Tx,
    user: &UserRecord,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<LoginResponse, ApiFailure> {
    let refresh_token = random_secret();
    let refresh_expires_at = now + Duration::hours(i64::from(state.config.auth.refresh_ttl_hours));
    sqlx::query(
        "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::new_v4())
    .bind(user.tenant_id)
    .bind(user.id)
    .bind(family)
    .bind(secret_digest(&refresh_token))
    .bind(refresh_expires_at)
    .execute(&mut **tx)
    .await?;
    let (access_token, expires_at) = state
        .tokens
        .issue(&user.auth_user()?, now)
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    Ok(LoginResponse {
        access_token,
        expires_at,
        refresh_token,
        refresh_expires_at,
        user: user.current_user()?,
    })
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
    let found = lookup::user_by_email(&state.pool, &email).await?;
    let mut session = match found {
        Some((user_id, tenant)) => {
            let mut tx = db::tenant_tx(&state.pool, tenant).await?;
            UserRecord::load(&mut tx, user_id.0)
                .await?
                .map(|user| (tx, user))
        }
        None => None,
    };
    let password = body.password.clone();
    let hash = session.as_ref().map(|(_, u)| u.password_hash.clone());
    let verified = web::block(move || verify_password(&password, hash.as_deref()))
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    let Some((mut tx, mut user)) = session.take().filter(|_| verified) else {
        throttle_failure(&state, &email, &address, "bad_credentials");
        return Err(ApiFailure::BadCredentials);
    };
    let now = Utc::now();
    user.check_active(now)?;
    if user.totp_enabled {
        let secret = user.totp_secret.clone().unwrap_or_default();
        let Some(code) = body.totp_code.as_deref() else {
            state
                .metrics
                .increment(API_REJECTED, "reason", "totp_required");
            return Err(ApiFailure::TotpRequired);
        };
        let Some(step) = totp::verify(&secret, code, now.timestamp(), user.totp_last_step) else {
            throttle_failure(&state, &email, &address, "totp_invalid");
            return Err(ApiFailure::TotpInvalid);
        };
        sqlx::query("UPDATE users SET totp_last_step = $2 WHERE id = $1")
            .bind(user.id)
            .bind(step)
            .execute(&mut *tx)
            .await?;
        user.totp_last_step = Some(step);
    }
    if let Ok(mut throttle) = state.login_throttle.lock() {
        throttle.record_success(&email);
    }
    let response = issue_session(&state, &mut tx, &user, Uuid::new_v4(), now).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, tenant_id = %user.tenant_id, "signed in");
    Ok(web::Json(response))
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    id: Uuid,
    user_id: Uuid,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

async fn find_refresh_token(state: &AppState, token: &str) -> Result<(Tx, RefreshRow), ApiFailure> {
    let hash = secret_digest(token.trim());
    let tenant = lookup::refresh_token_tenant(&state.pool, hash.clone())
        .await?
        .ok_or(ApiFailure::RefreshTokenInvalid)?;
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    let row: RefreshRow = sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, used_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiFailure::RefreshTokenInvalid)?;
    Ok((tx, row))
}

async fn revoke_family(tx: &mut Tx, family: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    let result = refresh_inner(&state, &body.refresh_token).await;
    if let Err(failure) = &result {
        state
            .metrics
            .increment(API_REJECTED, "reason", failure.code());
    }
    result.map(web::Json)
}

async fn refresh_inner(state: &AppState, token: &str) -> Result<LoginResponse, ApiFailure> {
    let (mut tx, row) = find_refresh_token(state, token).await?;
    let now = Utc::now();
    if row.revoked_at.is_some() || row.expires_at <= now {
        return Err(ApiFailure::RefreshTokenInvalid);
    }
    if row.used_at.is_some() {
        revoke_family(&mut tx, row.family_id).await?;
        tx.commit().await?;
        tracing::warn!(user_id = %row.user_id, family = %row.family_id,
            "a used refresh token was presented again; revoked its whole family");
        return Err(ApiFailure::RefreshTokenReused);
    }
    let user = UserRecord::load(&mut tx, row.user_id)
        .await?
        .ok_or(ApiFailure::RefreshTokenInvalid)?;
    if let Err(failure) = user.check_active(now) {
        revoke_family(&mut tx, row.family_id).await?;
        tx.commit().await?;
        return Err(failure);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    let response = issue_session(state, &mut tx, &user, row.family_id, now).await?;
    tx.commit().await?;
    Ok(response)
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
    let (mut tx, row) = find_refresh_token(&state, &body.refresh_token).await?;
    revoke_family(&mut tx, row.family_id).await?;
    tx.commit().await?;
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
    let user_id = auth.0.user_id()?;
    let mut tx = auth.0.tx(&state.pool).await?;
    let user = UserRecord::load(&mut tx, user_id.0)
        .await?
        .ok_or(ApiFailure::Unauthenticated(
            "the user no longer exists".into(),
        ))?;
    Ok(web::Json(user.current_user()?))
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
    let user_id = auth.0.user_id()?;
    let mut tx = auth.0.tx(&state.pool).await?;
    let user = UserRecord::load(&mut tx, user_id.0)
        .await?
        .ok_or(ApiFailure::NotFound("no such user"))?;
    if user.totp_enabled {
        return Err(ApiFailure::Conflict(
            "TOTP is already enabled for this account".into(),
        ));
    }
    let secret = totp::new_secret();
    sqlx::query("UPDATE users SET totp_secret = $2 WHERE id = $1")
        .bind(user.id)
        .bind(&secret)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(web::Json(TotpSetup {
        secret_base32: totp::secret_base32(&secret),
        otpauth_uri: totp::otpauth_uri(&secret, "StayOpen", &user.email),
    }))
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
    let user_id = auth.0.user_id()?;
    let mut tx = auth.0.tx(&state.pool).await?;
    let user = UserRecord::load(&mut tx, user_id.0)
        .await?
        .ok_or(ApiFailure::NotFound("no such user"))?;
    let Some(secret) = user.totp_secret.as_deref().filter(|_| !user.totp_enabled) else {
        return Err(ApiFailure::Conflict(
            "start TOTP enrolment first (POST /api/v1/auth/totp/setup)".into(),
        ));
    };
    let step = totp::verify(
        secret,
        &body.code,
        Utc::now().timestamp(),
        user.totp_last_step,
    )
    .ok_or(ApiFailure::TotpInvalid)?;
    sqlx::query("UPDATE users SET totp_enabled = true, totp_last_step = $2 WHERE id = $1")
        .bind(user.id)
        .bind(step)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        TenantId(user.tenant_id),
        &auth.0.actor(),
        Change {
            action: "user.totp_enable",
            target_type: "user",
            target_id: user.id.to_string(),
            before: Some(serde_json::json!({ "totp_enabled": false })),
            after: Some(serde_json::json!({ "totp_enabled": true })),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "TOTP enabled");
    Ok(HttpResponse::NoContent().finish())
}
