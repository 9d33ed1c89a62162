//! Enrolment tokens: scoped to a practice (and optionally a site), expiring, with a use count,
//! revocable. Only the SHA-256 of a token is stored; the token itself is shown once.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use stayopen_shared::api::{EnrollmentToken, EnrollmentTokenView};
use stayopen_shared::{PracticeId, SiteId, UserId};
use uuid::Uuid;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AccessError, AuthUser, Permission, random_secret, secret_digest};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;

/// Enrolment tokens start with this (secret scanners can recognise a leaked one).
pub const TOKEN_PREFIX: &str = "soe_";

/// How long a token may live, in hours: up to 30 days.
const EXPIRY_HOURS: std::ops::RangeInclusive<u32> = 1..=24 * 30;
/// How many appliances one token may enrol.
const USES: std::ops::RangeInclusive<u32> = 1..=1000;

#[derive(Debug, thiserror::Error)]
pub enum EnrolmentTokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a new token is for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest {
    pub practice: PracticeId,
    /// The practice's first site when `None`.
    pub site: Option<SiteId>,
    pub expires_in_hours: u32,
    pub max_uses: u32,
}

/// Creates an enrolment token for a practice the caller may see, audited.
pub async fn create(
    pool: &PgPool,
    auth: &AuthUser,
    request: TokenRequest,
) -> Result<EnrollmentToken, EnrolmentTokenError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, request.practice).await?;
    if !EXPIRY_HOURS.contains(&request.expires_in_hours) {
        return Err(EnrolmentTokenError::Invalid(
            "expires_in_hours must be between 1 and 720".into(),
        ));
    }
    if !USES.contains(&request.max_uses) {
        return Err(EnrolmentTokenError::Invalid(
            "max_uses must be between 1 and 1000".into(),
        ));
    }
    let token = issue(&mut tx, auth, request).await?;
    tx.commit().await?;
    Ok(token)
}

/// Issues a token inside `tx` (the caller's tenant transaction) and audits it.
pub async fn issue(
    tx: &mut Tx,
    auth: &AuthUser,
    request: TokenRequest,
) -> Result<EnrollmentToken, EnrolmentTokenError> {
    let TokenRequest {
        practice: practice_id,
        site: site_id,
        expires_in_hours,
        max_uses,
    } = request;
    let site: Option<Uuid> = sqlx::query_scalar(
        "SELECT s.id FROM sites s
         WHERE s.practice_id = $1 AND ($2::uuid IS NULL OR s.id = $2)
         ORDER BY s.created_at, s.id LIMIT 1",
    )
    .bind(practice_id.as_uuid())
    .bind(site_id.map(|s| s.0))
    .fetch_optional(&mut **tx)
    .await?;
    let site = site.ok_or(EnrolmentTokenError::NotFound("no such practice or site"))?;
    let token = format!("{TOKEN_PREFIX}{}", random_secret());
    let expires_at = Utc::now() + Duration::hours(i64::from(expires_in_hours));
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, tenant_id, practice_id, site_id, token_hash, expires_at, max_uses, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(practice_id.as_uuid())
    .bind(site)
    .bind(secret_digest(&token))
    .bind(expires_at)
    .bind(i32::try_from(max_uses).unwrap_or(i32::MAX))
    .bind(auth.user_id().ok().map(|u| u.0))
    .execute(&mut **tx)
    .await?;
    audit::record(
        tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "enrollment_token.create",
            target_type: "enrollment_token",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "practice_id": practice_id,
                "site_id": site,
                "expires_at": expires_at,
                "max_uses": max_uses,
            })),
        },
    )
    .await?;
    tracing::info!(tenant_id = %auth.tenant_id, %practice_id, "enrolment token created");
    Ok(EnrollmentToken {
        id,
        token,
        practice_id,
        site_id: SiteId(site),
        expires_at,
        max_uses,
    })
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    practice_id: Uuid,
    site_id: Uuid,
    created_by: Option<Uuid>,
    created_by_email: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    uses: i32,
    max_uses: i32,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for EnrollmentTokenView {
    fn from(row: TokenRow) -> Self {
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        EnrollmentTokenView {
            id: row.id,
            practice_id: PracticeId(row.practice_id),
            site_id: SiteId(row.site_id),
            created_by: row.created_by.map(UserId),
            created_by_email: row.created_by_email,
            created_at: row.created_at,
            expires_at: row.expires_at,
            uses: count(row.uses),
            max_uses: count(row.max_uses),
            revoked_at: row.revoked_at,
        }
    }
}

const TOKEN_SELECT: &str =
    "SELECT t.id, t.practice_id, t.site_id, t.created_by, u.email AS created_by_email,
        t.created_at, t.expires_at, t.uses, t.max_uses, t.revoked_at
     FROM enrollment_tokens t LEFT JOIN users u ON u.id = t.created_by";

/// A practice's enrolment tokens, newest first, after the `(created_at, id)` of `after`; at most
/// `limit` of them.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EnrollmentTokenView>, EnrolmentTokenError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    auth.require(Permission::Configure)?;
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_SELECT}
         WHERE t.practice_id = $1
           AND ($2::timestamptz IS NULL OR (t.created_at, t.id) < ($2, $3))
         ORDER BY t.created_at DESC, t.id DESC LIMIT $4"
    )))
    .bind(practice.as_uuid())
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(EnrollmentTokenView::from).collect())
}

/// Revokes an enrolment token (audited); revoking twice changes and records nothing.
pub async fn revoke(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<EnrollmentTokenView, EnrolmentTokenError> {
    let mut tx = auth.tx(pool).await?;
    let (practice, revoked_at): (Uuid, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT practice_id, revoked_at FROM enrollment_tokens WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .filter(|(p, _)| auth.may_see_practice(PracticeId(*p)))
    .ok_or(EnrolmentTokenError::NotFound("no such enrolment token"))?;
    auth.require(Permission::Configure)?;
    if revoked_at.is_none() {
        sqlx::query("UPDATE enrollment_tokens SET revoked_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut tx,
            auth.tenant_id,
            &auth.actor(),
            Change {
                action: "enrollment_token.revoke",
                target_type: "enrollment_token",
                target_id: id.to_string(),
                before: None,
                after: Some(serde_json::json!({ "practice_id": practice, "revoked": true })),
            },
        )
        .await?;
        tracing::info!(tenant_id = %auth.tenant_id, token_id = %id, "enrolment token revoked");
    }
    let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_SELECT} WHERE t.id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.into())
}
