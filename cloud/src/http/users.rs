//! User management (MSP admins) and the MSP's security settings. Every change is audited with the
//! user as it was before and after, never with a password hash.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::api::{
    ApiError, CreateUser, Page, PracticeLabel, Role, SecuritySettings, UpdateUser, UserView,
};
use stayopen_shared::{PracticeId, UserId};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{AuthUser, Permission, check_password_strength, hash_password};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::db::Tx;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    practice_ids: Vec<Uuid>,
    practice_names: Vec<String>,
    access_expires_at: Option<DateTime<Utc>>,
    totp_enabled: bool,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl UserRow {
    fn view(self) -> Result<UserView, ApiFailure> {
        Ok(UserView {
            id: UserId(self.id),
            role: Role::parse(&self.role)
                .ok_or_else(|| ApiFailure::Internal(format!("unknown role {:?}", self.role)))?,
            email: self.email,
            display_name: self.display_name,
            practices: practice_labels(&self.practice_ids, self.practice_names),
            practice_ids: self.practice_ids.into_iter().map(PracticeId).collect(),
            access_expires_at: self.access_expires_at,
            totp_enabled: self.totp_enabled,
            disabled: self.disabled_at.is_some(),
            created_at: self.created_at,
        })
    }
}

/// The names come in the same order as the ids, so the two zip into labels.
fn practice_labels(ids: &[Uuid], names: Vec<String>) -> Vec<PracticeLabel> {
    let mut labels: Vec<PracticeLabel> = ids
        .iter()
        .zip(names)
        .map(|(id, name)| PracticeLabel {
            id: PracticeId(*id),
            name,
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.0.cmp(&b.id.0)));
    labels
}

const USER_SELECT: &str =
    "SELECT u.id, u.email, u.display_name, u.role, u.access_expires_at, u.totp_enabled,
        u.disabled_at, u.created_at,
        COALESCE(array_agg(up.practice_id ORDER BY up.practice_id)
                 FILTER (WHERE up.practice_id IS NOT NULL), '{}') AS practice_ids,
        COALESCE(array_agg(p.name ORDER BY up.practice_id)
                 FILTER (WHERE up.practice_id IS NOT NULL), '{}') AS practice_names
     FROM users u LEFT JOIN user_practices up ON up.user_id = u.id
          LEFT JOIN practices p ON p.id = up.practice_id";

async fn load_user(tx: &mut Tx, id: Uuid) -> Result<UserView, ApiFailure> {
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{USER_SELECT} WHERE u.id = $1 GROUP BY u.id"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.ok_or(ApiFailure::NotFound("no such user"))?.view()
}

fn audit_json(user: &UserView) -> serde_json::Value {
    serde_json::json!({
        "email": user.email,
        "display_name": user.display_name,
        "role": user.role,
        "practice_ids": user.practice_ids,
        "access_expires_at": user.access_expires_at,
        "disabled": user.disabled,
        "totp_enabled": user.totp_enabled,
    })
}

/// Checks that a role, its practices and its expiry fit together, and that the practices exist in
/// this tenant (row-level security hides every other tenant's).
async fn check_assignment(
    tx: &mut Tx,
    role: Role,
    practices: &[PracticeId],
    access_expires_at: Option<DateTime<Utc>>,
) -> Result<(), ApiFailure> {
    match role {
        Role::MspAdmin | Role::MspTechnician if !practices.is_empty() => {
            return Err(ApiFailure::BadRequest(
                "MSP roles see every practice; practice_ids must be empty".into(),
            ));
        }
        Role::ComplianceOfficer if practices.is_empty() => {
            return Err(ApiFailure::BadRequest(
                "a compliance officer needs at least one practice".into(),
            ));
        }
        Role::Auditor if practices.len() != 1 => {
            return Err(ApiFailure::BadRequest(
                "an auditor is given exactly one practice".into(),
            ));
        }
        _ => {}
    }
    match (role, access_expires_at) {
        (Role::Auditor, None) => {
            return Err(ApiFailure::BadRequest(
                "an auditor's access needs access_expires_at".into(),
            ));
        }
        (Role::Auditor, Some(end)) if end <= Utc::now() => {
            return Err(ApiFailure::BadRequest(
                "access_expires_at must be in the future".into(),
            ));
        }
        (Role::Auditor, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(ApiFailure::BadRequest(
                "only auditors' access expires; leave access_expires_at out".into(),
            ));
        }
    }
    let ids: Vec<Uuid> = practices.iter().map(|p| p.0).collect();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM practices WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&mut **tx)
        .await?;
    if found != ids.len() as i64 {
        return Err(ApiFailure::NotFound("no such practice"));
    }
    Ok(())
}

async fn set_practices(
    tx: &mut Tx,
    auth: &AuthUser,
    user: Uuid,
    practices: &[PracticeId],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_practices WHERE user_id = $1")
        .bind(user)
        .execute(&mut **tx)
        .await?;
    for practice in practices {
        sqlx::query(
            "INSERT INTO user_practices (tenant_id, user_id, practice_id) VALUES ($1, $2, $3)",
        )
        .bind(auth.tenant_id.as_uuid())
        .bind(user)
        .bind(practice.as_uuid())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub role: Option<Role>,
}

/// The MSP's users, by e-mail.
#[utoipa::path(
    tag = "users",
    params(UserListQuery),
    responses((status = 200, body = Page<UserView>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/users")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<UserListQuery>,
) -> Result<web::Json<Page<UserView>>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<String> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{USER_SELECT} WHERE ($1::text IS NULL OR u.email > $1) AND ($2::text IS NULL OR u.role = $2)
         GROUP BY u.id ORDER BY u.email LIMIT $3"
    )))
    .bind(after)
    .bind(query.role.map(Role::as_str))
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let users = rows
        .into_iter()
        .map(UserRow::view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(pagination::page(users, fetch, |u| {
        u.email.clone()
    })))
}

/// Creates a user with a role (and practices, for compliance officers and auditors).
#[utoipa::path(
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, body = UserView),
        (status = 400, body = ApiError),
        (status = 403, body = ApiError),
        (status = 409, body = ApiError, description = "The e-mail is taken"),
    ),
    security(("bearer" = []))
)]
#[post("/users")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateUser>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let email = body.email.trim().to_lowercase();
    if !email.contains('@') || email.starts_with('@') || email.len() > 254 {
        return Err(ApiFailure::BadRequest(format!(
            "{:?} is not an e-mail address",
            body.email
        )));
    }
    if body.display_name.len() > 200 {
        return Err(ApiFailure::BadRequest(
            "display_name must be at most 200 characters".into(),
        ));
    }
    check_password_strength(&body.password).map_err(ApiFailure::BadRequest)?;
    let mut tx = auth.tx(&state.pool).await?;
    check_assignment(
        &mut tx,
        body.role,
        &body.practice_ids,
        body.access_expires_at,
    )
    .await?;
    let password = body.password.clone();
    let hash = web::block(move || hash_password(&password))
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO users (id, tenant_id, email, display_name, password_hash, role, access_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(&email)
    .bind(body.display_name.trim())
    .bind(hash)
    .bind(body.role.as_str())
    .bind(body.access_expires_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiFailure::Conflict(format!(
            "a user with e-mail {email} already exists"
        )));
    }
    set_practices(&mut tx, &auth, id, &body.practice_ids).await?;
    let user = load_user(&mut tx, id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "user.create",
            target_type: "user",
            target_id: id.to_string(),
            before: None,
            after: Some(audit_json(&user)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(user))
}

/// One user.
#[utoipa::path(
    tag = "users",
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/users/{user_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<UserId>,
) -> Result<web::Json<UserView>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let mut tx = auth.tx(&state.pool).await?;
    Ok(web::Json(load_user(&mut tx, path.0).await?))
}

/// Changes a user's name, role, practices, expiry or disabled state. Disabling a user ends their
/// sessions. An admin cannot demote, disable or delete themselves, so an MSP is never locked out.
#[utoipa::path(
    tag = "users",
    params(("user_id" = Uuid, Path)),
    request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[patch("/users/{user_id}")]
pub async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<UserId>,
    body: web::Json<UpdateUser>,
) -> Result<web::Json<UserView>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let before = load_user(&mut tx, id.0).await?;
    let is_self = auth.user_id().ok() == Some(id);
    if is_self && (body.role.is_some_and(|r| r != before.role) || body.disabled == Some(true)) {
        return Err(ApiFailure::BadRequest(
            "you cannot change your own role or disable yourself".into(),
        ));
    }
    let role = body.role.unwrap_or(before.role);
    let practices = body
        .practice_ids
        .clone()
        .unwrap_or_else(|| before.practice_ids.clone());
    let practices = if role.is_msp_wide() && body.practice_ids.is_none() {
        Vec::new()
    } else {
        practices
    };
    let expires = if role == Role::Auditor {
        body.access_expires_at.or(before.access_expires_at)
    } else {
        body.access_expires_at
    };
    check_assignment(&mut tx, role, &practices, expires).await?;
    let display_name = body
        .display_name
        .as_deref()
        .map(str::trim)
        .unwrap_or(&before.display_name);
    if display_name.len() > 200 {
        return Err(ApiFailure::BadRequest(
            "display_name must be at most 200 characters".into(),
        ));
    }
    let disabled = body.disabled.unwrap_or(before.disabled);
    sqlx::query(
        "UPDATE users SET display_name = $2, role = $3, access_expires_at = $4,
                disabled_at = CASE WHEN $5 THEN coalesce(disabled_at, now()) ELSE NULL END
         WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(display_name)
    .bind(role.as_str())
    .bind(expires)
    .bind(disabled)
    .execute(&mut *tx)
    .await?;
    set_practices(&mut tx, &auth, id.0, &practices).await?;
    if disabled || role != before.role || practices != before.practice_ids {
        // Sessions carry the role and practices; make the user sign in again to pick them up.
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    }
    let after = load_user(&mut tx, id.0).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "user.update",
            target_type: "user",
            target_id: id.to_string(),
            before: Some(audit_json(&before)),
            after: Some(audit_json(&after)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(after))
}

/// Deletes a user and ends their sessions.
#[utoipa::path(
    tag = "users",
    params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/users/{user_id}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<UserId>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let id = path.into_inner();
    if auth.user_id().ok() == Some(id) {
        return Err(ApiFailure::BadRequest("you cannot delete yourself".into()));
    }
    let mut tx = auth.tx(&state.pool).await?;
    let before = load_user(&mut tx, id.0).await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "user.delete",
            target_type: "user",
            target_id: id.to_string(),
            before: Some(audit_json(&before)),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The MSP's security settings.
#[utoipa::path(
    tag = "settings",
    responses((status = 200, body = SecuritySettings), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/settings/security")]
pub async fn security_settings(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<SecuritySettings>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let mut tx = auth.tx(&state.pool).await?;
    let require_totp_for_admins: bool =
        sqlx::query_scalar("SELECT require_totp_for_admins FROM tenants WHERE id = $1")
            .bind(auth.tenant_id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    Ok(web::Json(SecuritySettings {
        require_totp_for_admins,
    }))
}

/// Changes the MSP's security settings (audited).
#[utoipa::path(
    tag = "settings",
    request_body = SecuritySettings,
    responses((status = 200, body = SecuritySettings), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/settings/security")]
pub async fn update_security_settings(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<SecuritySettings>,
) -> Result<web::Json<SecuritySettings>, ApiFailure> {
    auth.require(Permission::ManageAccess)?;
    let mut tx = auth.tx(&state.pool).await?;
    let before: bool =
        sqlx::query_scalar("SELECT require_totp_for_admins FROM tenants WHERE id = $1")
            .bind(auth.tenant_id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("UPDATE tenants SET require_totp_for_admins = $2 WHERE id = $1")
        .bind(auth.tenant_id.as_uuid())
        .bind(body.require_totp_for_admins)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "settings.security.update",
            target_type: "msp",
            target_id: auth.tenant_id.to_string(),
            before: Some(serde_json::json!({ "require_totp_for_admins": before })),
            after: Some(
                serde_json::json!({ "require_totp_for_admins": body.require_totp_for_admins }),
            ),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(body.into_inner()))
}
