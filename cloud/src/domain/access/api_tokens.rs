//! Long-lived API tokens for MSP automation: `sot_` plus 256 random bits, stored as a SHA-256
//! digest, scoped (`read` or `operate`), optionally expiring, revocable, audited.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use stayopen_shared::TenantId;
use stayopen_shared::api::{ApiTokenScope, ApiTokenView, CreatedApiToken, Role};
use uuid::Uuid;

use super::{API_TOKEN_PREFIX, AuthUser, Principal, random_secret, secret_digest};
use crate::domain::audit::{self, Change};
use crate::infra::db::{self, lookup};

#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    /// The presented token is unknown or revoked (the two are not told apart).
    #[error("the API token is unknown or revoked")]
    Unknown,
    #[error("the API token has expired")]
    Expired,
    /// The user who created the token was deleted or disabled, or is no longer an MSP admin.
    #[error("{0}")]
    CreatorGone(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("unknown API token scope {0:?}")]
    UnknownScope(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    scope: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn parse_scope(scope: &str) -> Result<ApiTokenScope, ApiTokenError> {
    ApiTokenScope::parse(scope).ok_or_else(|| ApiTokenError::UnknownScope(scope.to_owned()))
}

impl TokenRow {
    fn view(self) -> Result<ApiTokenView, ApiTokenError> {
        Ok(ApiTokenView {
            id: self.id,
            name: self.name,
            scope: parse_scope(&self.scope)?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked: self.revoked_at.is_some(),
        })
    }
}

const TOKEN_SELECT: &str =
    "SELECT id, tenant_id, name, scope, created_at, expires_at, last_used_at, revoked_at
     FROM api_tokens";

/// The token with the state of the user who created it: a token acts on its creator's authority,
/// so it stops working when the creator is deleted (`created_by` becomes NULL), disabled, or no
/// longer an MSP admin.
#[derive(sqlx::FromRow)]
struct TokenWithCreator {
    #[sqlx(flatten)]
    token: TokenRow,
    creator_role: Option<String>,
    creator_disabled_at: Option<DateTime<Utc>>,
}

const TOKEN_WITH_CREATOR_SELECT: &str =
    "SELECT t.id, t.tenant_id, t.name, t.scope, t.created_at, t.expires_at, t.last_used_at,
            t.revoked_at, u.role AS creator_role, u.disabled_at AS creator_disabled_at
     FROM api_tokens t LEFT JOIN users u ON u.id = t.created_by";

impl TokenWithCreator {
    /// Why this token may not be used at `now`, if it may not.
    fn refusal(&self, now: DateTime<Utc>) -> Option<ApiTokenError> {
        if self.token.revoked_at.is_some() {
            return Some(ApiTokenError::Unknown);
        }
        if self.token.expires_at.is_some_and(|end| end <= now) {
            return Some(ApiTokenError::Expired);
        }
        match (&self.creator_role, self.creator_disabled_at) {
            (None, _) => Some(ApiTokenError::CreatorGone(
                "the API token's creator was deleted",
            )),
            (Some(_), Some(_)) => Some(ApiTokenError::CreatorGone(
                "the API token's creator is disabled",
            )),
            (Some(role), None) if Role::parse(role) != Some(Role::MspAdmin) => Some(
                ApiTokenError::CreatorGone("the API token's creator is no longer an MSP admin"),
            ),
            (Some(_), None) => None,
        }
    }

    fn caller(&self) -> Result<AuthUser, ApiTokenError> {
        let scope = parse_scope(&self.token.scope)?;
        Ok(AuthUser {
            principal: Principal::ApiToken(self.token.id),
            tenant_id: TenantId(self.token.tenant_id),
            role: match scope {
                ApiTokenScope::Read | ApiTokenScope::Operate => Role::MspTechnician,
            },
            practices: Vec::new(),
            api_scope: Some(scope),
            totp_enrolment_only: false,
        })
    }
}

/// Turns a presented API token into a caller: MSP-wide, acting with the token's scope.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<AuthUser, ApiTokenError> {
    let hash = secret_digest(token);
    let tenant = lookup::api_token_tenant(pool, hash.clone())
        .await?
        .ok_or(ApiTokenError::Unknown)?;
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let row: TokenWithCreator = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_WITH_CREATOR_SELECT} WHERE t.token_hash = $1"
    )))
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiTokenError::Unknown)?;
    let now = Utc::now();
    if let Some(refusal) = row.refusal(now) {
        if let ApiTokenError::CreatorGone(why) = &refusal {
            tracing::info!(token_id = %row.token.id, why, "API token refused");
        }
        return Err(refusal);
    }
    // Once a minute is precise enough for "last used" and keeps automation from writing per call.
    if row
        .token
        .last_used_at
        .is_none_or(|used| now - used > Duration::minutes(1))
    {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(row.token.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    row.caller()
}

/// The caller API token `id` of `tenant` stands for now, if it may still be used (for a live
/// stream it opened, checked again periodically).
pub async fn authorise_by_id(
    pool: &PgPool,
    tenant: TenantId,
    id: Uuid,
) -> Result<AuthUser, ApiTokenError> {
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let row: TokenWithCreator = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_WITH_CREATOR_SELECT} WHERE t.id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiTokenError::Unknown)?;
    if let Some(refusal) = row.refusal(Utc::now()) {
        return Err(refusal);
    }
    row.caller()
}

/// The MSP's API tokens, newest first, after the `(created_at, id)` of `after`; at most `limit`.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ApiTokenView>, ApiTokenError> {
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_SELECT} WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter().map(TokenRow::view).collect()
}

/// Creates an API token (audited). The token itself is returned this once.
pub async fn create(
    pool: &PgPool,
    auth: &AuthUser,
    name: &str,
    scope: ApiTokenScope,
    expires_in_days: Option<u32>,
) -> Result<CreatedApiToken, ApiTokenError> {
    let token = format!("{API_TOKEN_PREFIX}{}", random_secret());
    let id = Uuid::new_v4();
    let expires_at = expires_in_days.map(|d| Utc::now() + Duration::days(i64::from(d)));
    let mut tx = auth.tx(pool).await?;
    let row: TokenRow = sqlx::query_as(
        "INSERT INTO api_tokens (id, tenant_id, name, token_hash, scope, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, tenant_id, name, scope, created_at, expires_at, last_used_at, revoked_at",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(name)
    .bind(secret_digest(&token))
    .bind(scope)
    .bind(auth.user_id().ok().map(|u| u.0))
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    let details = row.view()?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "api_token.create",
            target_type: "api_token",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "name": details.name,
                "scope": details.scope,
                "expires_at": details.expires_at,
            })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedApiToken { token, details })
}

/// Revokes an API token (audited); it stops working at once.
pub async fn revoke(pool: &PgPool, auth: &AuthUser, id: Uuid) -> Result<(), ApiTokenError> {
    let mut tx = auth.tx(pool).await?;
    let revoked =
        sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if revoked.rows_affected() == 0 {
        return Err(ApiTokenError::NotFound("no such API token"));
    }
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "api_token.revoke",
            target_type: "api_token",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({ "revoked": true })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Option<&str>, disabled: bool) -> TokenWithCreator {
        TokenWithCreator {
            token: TokenRow {
                id: Uuid::from_u128(1),
                tenant_id: Uuid::from_u128(2),
                name: "automation".into(),
                scope: "read".into(),
                created_at: Utc::now(),
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
            },
            creator_role: role.map(str::to_owned),
            creator_disabled_at: disabled.then(Utc::now),
        }
    }

    #[test]
    fn a_token_works_only_while_its_creator_is_an_enabled_msp_admin() {
        let now = Utc::now();
        assert!(token(Some("msp_admin"), false).refusal(now).is_none());
        for (role, disabled) in [
            (Some("msp_admin"), true),
            (None, false),
            (Some("msp_technician"), false),
            (Some("auditor"), false),
        ] {
            assert!(
                matches!(
                    token(role, disabled).refusal(now),
                    Some(ApiTokenError::CreatorGone(_))
                ),
                "{role:?} disabled={disabled}"
            );
        }
    }

    #[test]
    fn a_revoked_or_expired_token_is_refused_whoever_created_it() {
        let now = Utc::now();
        let mut revoked = token(Some("msp_admin"), false);
        revoked.token.revoked_at = Some(now);
        assert!(matches!(revoked.refusal(now), Some(ApiTokenError::Unknown)));
        let mut expired = token(Some("msp_admin"), false);
        expired.token.expires_at = Some(now);
        assert!(matches!(expired.refusal(now), Some(ApiTokenError::Expired)));
    }
}
