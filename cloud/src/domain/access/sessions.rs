//! Signing in and staying signed in: password (and TOTP) sign-in, refresh-token rotation with reuse
//! detection, sign-out, the current user, and TOTP enrolment.
//!
//! Design: an access token is a short-lived JWT that no request has to look up. A refresh token is
//! an opaque, single-use secret stored hashed; each sign-in starts a *family*, and every refresh
//! retires the presented token and issues the next one of the family. A retired token presented
//! again can only mean a copy exists elsewhere, so the whole family is revoked at once.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use stayopen_shared::api::{CurrentUser, LoginResponse, Role, TotpSetup};
use stayopen_shared::{PracticeId, TenantId, UserId};
use uuid::Uuid;

use super::verify_password;
use super::{
    AccessError, AuthUser, Principal, REFRESH_TOKEN_PREFIX, TokenKeys, random_secret,
    secret_digest, totp,
};
use crate::domain::audit::{self, Change};
use crate::infra::db::{self, Tx, lookup};

/// Why signing in, refreshing or a session request was refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("wrong e-mail or password")]
    BadCredentials,
    /// The account has TOTP enabled and no code was sent.
    #[error("a second factor is required")]
    TotpRequired,
    #[error("the second-factor code is wrong or was already used")]
    TotpInvalid,
    /// The address and password open accounts at several MSPs; the MSP's name must be given.
    #[error(
        "this e-mail address and password open accounts at more than one MSP: give the MSP's name (msp)"
    )]
    MspRequired,
    /// The account is disabled or gone.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// An auditor's access has ended.
    #[error("access expired")]
    AccessExpired,
    #[error("the refresh token is unknown, expired or revoked")]
    RefreshTokenInvalid,
    #[error("the refresh token was already used")]
    RefreshTokenReused,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("unknown role {0:?} in database")]
    UnknownRole(String),
    #[error("signing the access token: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
    #[error("verifying the password: {0}")]
    Blocking(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What issuing a session needs: the access-token keys and how long a refresh token lives.
#[derive(Debug, Clone, Copy)]
pub struct SessionKeys<'a> {
    pub tokens: &'a TokenKeys,
    pub refresh_ttl: Duration,
}

/// Everything sign-in and refresh need to know about a user, read inside the user's tenant.
#[derive(sqlx::FromRow)]
struct UserRecord {
    id: Uuid,
    tenant_id: Uuid,
    tenant_name: String,
    email: String,
    display_name: String,
    password_hash: String,
    role: String,
    practice_ids: Vec<Uuid>,
    access_expires_at: Option<DateTime<Utc>>,
    disabled_at: Option<DateTime<Utc>>,
    totp_secret: Option<Vec<u8>>,
    totp_enabled: bool,
    totp_last_step: Option<i64>,
    require_totp_for_admins: bool,
}

impl UserRecord {
    async fn load(tx: &mut Tx, user: Uuid) -> Result<Option<Self>, sqlx::Error> {
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

    fn role(&self) -> Result<Role, SessionError> {
        Role::parse(&self.role).ok_or_else(|| SessionError::UnknownRole(self.role.clone()))
    }

    /// Refuses a disabled account or an auditor whose access has ended.
    fn check_active(&self, now: DateTime<Utc>) -> Result<(), SessionError> {
        if self.disabled_at.is_some() {
            return Err(SessionError::Unauthenticated("this account is disabled"));
        }
        if self.access_expires_at.is_some_and(|end| end <= now) {
            return Err(SessionError::AccessExpired);
        }
        Ok(())
    }

    fn current_user(&self) -> Result<CurrentUser, SessionError> {
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

    fn auth_user(&self) -> Result<AuthUser, SessionError> {
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
pub async fn signed_in_user(
    pool: &PgPool,
    tenant: TenantId,
    user: UserId,
) -> Result<AuthUser, SessionError> {
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let record = UserRecord::load(&mut tx, user.0)
        .await?
        .ok_or(SessionError::Unauthenticated(
            "this account no longer exists",
        ))?;
    record.check_active(Utc::now())?;
    record.auth_user()
}

/// Issues an access token and a new refresh token of `family`, inside `tx`.
async fn issue_session(
    keys: SessionKeys<'_>,
    tx: &mut Tx,
    user: &UserRecord,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<LoginResponse, SessionError> {
    let refresh_token = format!("{REFRESH_TOKEN_PREFIX}{}", random_secret());
    let refresh_expires_at = now + keys.refresh_ttl;
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
    let (access_token, expires_at) =
        keys.tokens
            .issue_for_session(&user.auth_user()?, Some(family), now)?;
    Ok(LoginResponse {
        access_token,
        expires_at,
        refresh_token,
        refresh_expires_at,
        user: user.current_user()?,
    })
}

/// What a user signs in with.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// Trimmed and lower-cased.
    pub email: &'a str,
    pub password: &'a str,
    pub totp_code: Option<&'a str>,
    /// The MSP's name, needed only when the address and password open accounts at several MSPs.
    pub msp: Option<&'a str>,
}

/// Sign-in checks at least this many passwords, so whether an address has accounts at one MSP or
/// at two (or none) takes the same time: an MSP that creates a user cannot time sign-in to learn
/// that another MSP uses the address.
pub const MIN_PASSWORD_CHECKS: usize = 2;
/// At most this many accounts with one address are tried (the rest need `msp`): sign-in's work
/// stays bounded however many MSPs use an address.
pub const MAX_CANDIDATES: usize = 8;

/// One account with the signed-in address, as sign-in weighs it.
#[derive(sqlx::FromRow)]
struct Candidate {
    user_id: Uuid,
    tenant_id: Uuid,
    tenant_name: String,
}

/// Consumes TOTP time step `step` for `user`: succeeds for exactly one of any number of concurrent
/// sign-ins presenting the same code (the row lock orders them; the later ones see the step
/// consumed), and never for a step at or before one already used.
async fn consume_totp_step(tx: &mut Tx, user: Uuid, step: i64) -> Result<bool, sqlx::Error> {
    let consumed: Option<Uuid> = sqlx::query_scalar(
        "UPDATE users SET totp_last_step = $2
         WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2) RETURNING id",
    )
    .bind(user)
    .bind(step)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(consumed.is_some())
}

/// Signs in with e-mail, password and (when enabled) a TOTP code, starting a new refresh-token
/// family.
///
/// An address may belong to accounts at several MSPs (addresses are unique per MSP, so that no MSP
/// learns another's users). Every account with the address (at most [`MAX_CANDIDATES`]; only the
/// named MSP's when `msp` is given) has its password checked — all of them, at least
/// [`MIN_PASSWORD_CHECKS`] checks, whatever matches — and the one whose password matches signs
/// in. When several match (one person, one password, two MSPs), sign-in asks for the MSP's name.
/// An unknown e-mail costs the same password checks as a wrong password.
pub async fn sign_in(
    pool: &PgPool,
    keys: SessionKeys<'_>,
    credentials: Credentials<'_>,
) -> Result<LoginResponse, SessionError> {
    let mut candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT user_id, tenant_id, tenant_name FROM stayopen_signin_candidates($1)",
    )
    .bind(credentials.email)
    .fetch_all(pool)
    .await?;
    if let Some(msp) = credentials.msp.map(str::trim) {
        candidates.retain(|c| c.tenant_name.eq_ignore_ascii_case(msp));
    }
    candidates.truncate(MAX_CANDIDATES);
    let mut hashes = Vec::with_capacity(candidates.len().max(MIN_PASSWORD_CHECKS));
    for candidate in &candidates {
        let mut tx = db::tenant_tx(pool, TenantId(candidate.tenant_id)).await?;
        let hash: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                .bind(candidate.user_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        hashes.push(hash);
    }
    while hashes.len() < MIN_PASSWORD_CHECKS {
        hashes.push(None);
    }
    let password = credentials.password.to_owned();
    // Argon2 takes tens of milliseconds of CPU: off the async workers. Every hash is checked.
    let (hashes, verified): (Vec<Option<String>>, Vec<bool>) =
        tokio::task::spawn_blocking(move || {
            let verified = hashes
                .iter()
                .map(|hash| verify_password(&password, hash.as_deref()))
                .collect();
            (hashes, verified)
        })
        .await?;
    let matching: Vec<(&Candidate, Option<&str>)> = candidates
        .iter()
        .zip(hashes.iter().map(Option::as_deref))
        .zip(verified)
        .filter_map(|(candidate, ok)| ok.then_some(candidate))
        .collect();
    let (winner, verified_hash) = match matching.as_slice() {
        [winner] => *winner,
        [] => return Err(SessionError::BadCredentials),
        // The password is right for accounts at several MSPs: which one is meant?
        _ => return Err(SessionError::MspRequired),
    };
    let mut tx = db::tenant_tx(pool, TenantId(winner.tenant_id)).await?;
    let mut user = UserRecord::load(&mut tx, winner.user_id)
        .await?
        .ok_or(SessionError::BadCredentials)?;
    let now = Utc::now();
    if Some(user.password_hash.as_str()) != verified_hash {
        // The password changed while it was being checked.
        return Err(SessionError::BadCredentials);
    }
    user.check_active(now)?;
    if user.totp_enabled {
        let secret = user.totp_secret.clone().unwrap_or_default();
        let code = credentials.totp_code.ok_or(SessionError::TotpRequired)?;
        let step = totp::verify(&secret, code, now.timestamp(), user.totp_last_step)
            .ok_or(SessionError::TotpInvalid)?;
        if !consume_totp_step(&mut tx, user.id, step).await? {
            return Err(SessionError::TotpInvalid);
        }
        user.totp_last_step = Some(step);
    }
    let response = issue_session(keys, &mut tx, &user, Uuid::new_v4(), now).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, tenant_id = %user.tenant_id, "signed in");
    Ok(response)
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

async fn find_refresh_token(pool: &PgPool, token: &str) -> Result<(Tx, RefreshRow), SessionError> {
    let hash = secret_digest(token.trim());
    let tenant = lookup::refresh_token_tenant(pool, hash.clone())
        .await?
        .ok_or(SessionError::RefreshTokenInvalid)?;
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let row: RefreshRow = sqlx::query_as(
        "SELECT id, user_id, family_id, expires_at, used_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(SessionError::RefreshTokenInvalid)?;
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

/// Trades a refresh token for a new access token and the next refresh token of its family. A
/// used token presented again revokes the whole family; so does a user who may no longer sign in.
pub async fn refresh(
    pool: &PgPool,
    keys: SessionKeys<'_>,
    token: &str,
) -> Result<LoginResponse, SessionError> {
    let (mut tx, row) = find_refresh_token(pool, token).await?;
    let now = Utc::now();
    if row.revoked_at.is_some() || row.expires_at <= now {
        return Err(SessionError::RefreshTokenInvalid);
    }
    if row.used_at.is_some() {
        revoke_family(&mut tx, row.family_id).await?;
        tx.commit().await?;
        tracing::warn!(user_id = %row.user_id, family = %row.family_id,
            "a used refresh token was presented again; revoked its whole family");
        return Err(SessionError::RefreshTokenReused);
    }
    let user = UserRecord::load(&mut tx, row.user_id)
        .await?
        .ok_or(SessionError::RefreshTokenInvalid)?;
    if let Err(refusal) = user.check_active(now) {
        revoke_family(&mut tx, row.family_id).await?;
        tx.commit().await?;
        return Err(refusal);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    let response = issue_session(keys, &mut tx, &user, row.family_id, now).await?;
    tx.commit().await?;
    Ok(response)
}

/// Signs out: revokes the refresh token and every token of its sign-in.
pub async fn sign_out(pool: &PgPool, token: &str) -> Result<(), SessionError> {
    let (mut tx, row) = find_refresh_token(pool, token).await?;
    revoke_family(&mut tx, row.family_id).await?;
    tx.commit().await?;
    Ok(())
}

/// The signed-in user, as the database has them now.
pub async fn current_user(pool: &PgPool, auth: &AuthUser) -> Result<CurrentUser, SessionError> {
    let user_id = auth.user_id()?;
    let mut tx = auth.tx(pool).await?;
    let user = UserRecord::load(&mut tx, user_id.0)
        .await?
        .ok_or(SessionError::Unauthenticated("the user no longer exists"))?;
    user.current_user()
}

/// Starts TOTP enrolment: a new secret to add to an authenticator app, not active until
/// [`confirm_totp`].
pub async fn start_totp_enrolment(
    pool: &PgPool,
    auth: &AuthUser,
) -> Result<TotpSetup, SessionError> {
    let user_id = auth.user_id()?;
    let mut tx = auth.tx(pool).await?;
    let user = UserRecord::load(&mut tx, user_id.0)
        .await?
        .ok_or(SessionError::NotFound("no such user"))?;
    if user.totp_enabled {
        return Err(SessionError::Conflict(
            "TOTP is already enabled for this account",
        ));
    }
    let secret = totp::new_secret();
    sqlx::query("UPDATE users SET totp_secret = $2 WHERE id = $1")
        .bind(user.id)
        .bind(&secret)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(TotpSetup {
        secret_base32: totp::secret_base32(&secret),
        otpauth_uri: totp::otpauth_uri(&secret, "StayOpen", &user.email),
    })
}

/// Confirms TOTP enrolment with a current code; from then on sign-in needs a code. Audited.
pub async fn confirm_totp(pool: &PgPool, auth: &AuthUser, code: &str) -> Result<(), SessionError> {
    let user_id = auth.user_id()?;
    let mut tx = auth.tx(pool).await?;
    let user = UserRecord::load(&mut tx, user_id.0)
        .await?
        .ok_or(SessionError::NotFound("no such user"))?;
    let Some(secret) = user.totp_secret.as_deref().filter(|_| !user.totp_enabled) else {
        return Err(SessionError::Conflict(
            "start TOTP enrolment first (POST /api/v1/auth/totp/setup)",
        ));
    };
    let step = totp::verify(secret, code, Utc::now().timestamp(), user.totp_last_step)
        .ok_or(SessionError::TotpInvalid)?;
    if !consume_totp_step(&mut tx, user.id, step).await? {
        return Err(SessionError::TotpInvalid);
    }
    sqlx::query("UPDATE users SET totp_enabled = true WHERE id = $1")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        TenantId(user.tenant_id),
        &auth.actor(),
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
    Ok(())
}
