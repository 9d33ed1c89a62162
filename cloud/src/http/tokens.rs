//! Enrolment tokens: an MSP administrator creates one for a practice and types it into (or ships it
//! with) the appliance.

use actix_web::web;
use chrono::{Duration, Utc};
use stayopen_shared::api::{CreateEnrollmentToken, EnrollmentToken};
use stayopen_shared::{PracticeId, SiteId};
use uuid::Uuid;

use crate::audit::{self, Actor, Change};
use crate::auth::{AuthUser, random_secret, secret_digest};
use crate::http::error::ApiFailure;
use crate::startup::AppState;

/// Tokens are prefixed so they are recognisable in logs and secret scanners.
pub const TOKEN_PREFIX: &str = "soe_";

pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<CreateEnrollmentToken>,
) -> Result<web::Json<EnrollmentToken>, ApiFailure> {
    auth.require_msp_admin()?;
    let practice_id = path.into_inner();
    if !(1..=24 * 30).contains(&body.expires_in_hours) {
        return Err(ApiFailure::BadRequest(
            "expires_in_hours must be between 1 and 720".into(),
        ));
    }
    if !(1..=1000).contains(&body.max_uses) {
        return Err(ApiFailure::BadRequest(
            "max_uses must be between 1 and 1000".into(),
        ));
    }
    let token = issue(
        &state.pool,
        &auth,
        practice_id,
        body.site_id,
        body.expires_in_hours,
        body.max_uses,
    )
    .await?;
    Ok(web::Json(token))
}

/// Creates a token for a practice of the caller's tenant. Also used by the demo seeding.
pub async fn issue(
    pool: &sqlx::PgPool,
    auth: &AuthUser,
    practice_id: PracticeId,
    site_id: Option<SiteId>,
    expires_in_hours: u32,
    max_uses: u32,
) -> Result<EnrollmentToken, ApiFailure> {
    // The site must belong to the practice, and the practice to the caller's tenant; otherwise the
    // practice "does not exist" for this caller.
    let site: Option<Uuid> = sqlx::query_scalar(
        "SELECT s.id FROM sites s
         WHERE s.tenant_id = $1 AND s.practice_id = $2 AND ($3::uuid IS NULL OR s.id = $3)
         ORDER BY s.created_at, s.id LIMIT 1",
    )
    .bind(auth.tenant_id.as_uuid())
    .bind(practice_id.as_uuid())
    .bind(site_id.map(|s| s.0))
    .fetch_optional(pool)
    .await?;
    let site = site.ok_or(ApiFailure::NotFound("no such practice or site"))?;
    let token = format!("{TOKEN_PREFIX}{}", random_secret());
    let expires_at = Utc::now() + Duration::hours(i64::from(expires_in_hours));
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
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
    .bind(auth.user_id.as_uuid())
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &Actor::User(auth.user_id.0),
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
    tx.commit().await?;
    tracing::info!(tenant_id = %auth.tenant_id, %practice_id, "enrolment token created");
    Ok(EnrollmentToken {
        token,
        practice_id,
        site_id: SiteId(site),
        expires_at,
        max_uses,
    })
}
