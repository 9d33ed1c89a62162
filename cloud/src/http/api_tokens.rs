//! Long-lived API tokens for MSP automation: `sot_` plus 256 random bits, stored as a SHA-256
//! digest, scoped (`read` or `operate`), optionally expiring, revocable, audited.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stayopen_shared::TenantId;
use stayopen_shared::api::{
    ApiError, ApiTokenScope, ApiTokenView, CreateApiToken, CreatedApiToken, Page, Role,
};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{
    API_TOKEN_PREFIX, AuthUser, Permission, Principal, random_secret, secret_digest,
};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::db::{self, lookup};
use crate::state::AppState;

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

fn parse_scope(scope: &str) -> Result<ApiTokenScope, ApiFailure> {
    match scope {
        "read" => Ok(ApiTokenScope::Read),
        "operate" => Ok(ApiTokenScope::Operate),
        other => Err(ApiFailure::Internal(format!(
            "unknown API token scope {other:?}"
        ))),
    }
}

fn scope_str(scope: ApiTokenScope) -> &'static str {
    match scope {
        ApiTokenScope::Read => "read",
        ApiTokenScope::Operate => "operate",
    }
}

impl TokenRow {
    fn view(self) -> Result<ApiTokenView, ApiFailure> {
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

/// Turns a presented API token into a caller: MSP-wide, acting with the token's scope.
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiFailure> {
    let hash = secret_digest(token);
    let invalid = || ApiFailure::Unauthenticated("the API token is unknown or revoked".into());
    let tenant = lookup::api_token_tenant(&state.pool, hash.clone())
        .await?
        .ok_or_else(invalid)?;
    let mut tx = db::tenant_tx(&state.pool, tenant).await?;
    let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_SELECT} WHERE token_hash = $1"
    )))
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(invalid)?;
    let now = Utc::now();
    if row.revoked_at.is_some() {
        return Err(invalid());
    }
    if row.expires_at.is_some_and(|end| end <= now) {
        return Err(ApiFailure::TokenExpired);
    }
    // Once a minute is precise enough for "last used" and keeps automation from writing per call.
    if row
        .last_used_at
        .is_none_or(|used| now - used > Duration::minutes(1))
    {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(row.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let scope = parse_scope(&row.scope)?;
    Ok(AuthUser {
        principal: Principal::ApiToken(row.id),
        tenant_id: TenantId(row.tenant_id),
        role: match scope {
            ApiTokenScope::Read | ApiTokenScope::Operate => Role::MspTechnician,
        },
        practices: Vec::new(),
        api_scope: Some(scope),
        totp_enrolment_only: false,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The MSP's API tokens, newest first (the secrets themselves are never shown again).
#[utoipa::path(
    tag = "api-tokens",
    params(TokenListQuery),
    responses((status = 200, body = Page<ApiTokenView>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/api-tokens")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<TokenListQuery>,
) -> Result<web::Json<Page<ApiTokenView>>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{TOKEN_SELECT} WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let tokens = rows
        .into_iter()
        .map(TokenRow::view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(pagination::page(tokens, fetch, |t| {
        (t.created_at, t.id)
    })))
}

/// Creates an API token. The token is in this response only.
#[utoipa::path(
    tag = "api-tokens",
    request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/api-tokens")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateApiToken>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiFailure::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    if body
        .expires_in_days
        .is_some_and(|d| !(1..=3650).contains(&d))
    {
        return Err(ApiFailure::BadRequest(
            "expires_in_days must be between 1 and 3650".into(),
        ));
    }
    let token = format!("{API_TOKEN_PREFIX}{}", random_secret());
    let id = Uuid::new_v4();
    let expires_at = body
        .expires_in_days
        .map(|d| Utc::now() + Duration::days(i64::from(d)));
    let mut tx = auth.tx(&state.pool).await?;
    let row: TokenRow = sqlx::query_as(
        "INSERT INTO api_tokens (id, tenant_id, name, token_hash, scope, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, tenant_id, name, scope, created_at, expires_at, last_used_at, revoked_at",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(name)
    .bind(secret_digest(&token))
    .bind(scope_str(body.scope))
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
    Ok(HttpResponse::Created().json(CreatedApiToken { token, details }))
}

/// Revokes an API token; it stops working at once.
#[utoipa::path(
    tag = "api-tokens",
    params(("token_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/api-tokens/{token_id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let revoked =
        sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if revoked.rows_affected() == 0 {
        return Err(ApiFailure::NotFound("no such API token"));
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
    Ok(HttpResponse::NoContent().finish())
}
