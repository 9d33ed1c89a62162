//! Enrolment tokens: scoped to a practice (and optionally a site), expiring, with a use count.
//! Only the SHA-256 of a token is stored; the token itself is shown once.

use actix_web::{HttpResponse, post, web};
use chrono::{Duration, Utc};
use stayopen_shared::api::{ApiError, CreateEnrollmentToken, EnrollmentToken};
use stayopen_shared::{PracticeId, SiteId};
use uuid::Uuid;

use crate::audit::{self, Change};
use crate::auth::{AuthUser, Permission, random_secret, secret_digest};
use crate::db::Tx;
use crate::http::error::ApiFailure;
use crate::http::fleet::visible_practice;
use crate::startup::AppState;

pub const TOKEN_PREFIX: &str = "soe_";

/// Creates an enrolment token for a practice (its first site unless `site_id` is given).
#[utoipa::path(
    tag = "enrolment",
    params(("practice_id" = Uuid, Path)),
    request_body = CreateEnrollmentToken,
    responses(
        (status = 201, body = EnrollmentToken),
        (status = 400, body = ApiError),
        (status = 403, body = ApiError),
        (status = 404, body = ApiError),
    ),
    security(("bearer" = []))
)]
#[post("/practices/{practice_id}/enrollment-tokens")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<CreateEnrollmentToken>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    let practice_id = path.into_inner();
    let mut tx = auth.tx(&state).await?;
    visible_practice(&mut tx, &auth, practice_id).await?;
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
        &mut tx,
        &auth,
        practice_id,
        body.site_id,
        body.expires_in_hours,
        body.max_uses,
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(token))
}

/// Issues a token inside `tx` (the caller's tenant transaction) and audits it.
pub async fn issue(
    tx: &mut Tx,
    auth: &AuthUser,
    practice_id: PracticeId,
    site_id: Option<SiteId>,
    expires_in_hours: u32,
    max_uses: u32,
) -> Result<EnrollmentToken, ApiFailure> {
    let site: Option<Uuid> = sqlx::query_scalar(
        "SELECT s.id FROM sites s
         WHERE s.practice_id = $1 AND ($2::uuid IS NULL OR s.id = $2)
         ORDER BY s.created_at, s.id LIMIT 1",
    )
    .bind(practice_id.as_uuid())
    .bind(site_id.map(|s| s.0))
    .fetch_optional(&mut **tx)
    .await?;
    let site = site.ok_or(ApiFailure::NotFound("no such practice or site"))?;
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
        token,
        practice_id,
        site_id: SiteId(site),
        expires_at,
        max_uses,
    })
}
