//! User management (MSP admins) and the MSP's security settings. Every change is audited with the
//! user as it was before and after, never with a password hash.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use serde::Deserialize;
use stayopen_shared::UserId;
use stayopen_shared::api::{
    ApiError, CreateUser, Page, Role, SecuritySettings, UpdateUser, UserView,
};
use utoipa::IntoParams;

use crate::domain::access::users::{self, UserError};
use crate::domain::access::{AuthUser, Permission};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<UserError> for ApiFailure {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(why) => ApiFailure::BadRequest(why),
            UserError::NotFound(what) => ApiFailure::NotFound(what),
            UserError::Conflict(why) => ApiFailure::Conflict(why),
            UserError::UnknownRole(_) => ApiFailure::Internal(e.to_string()),
            UserError::Hash(e) => ApiFailure::Internal(e.to_string()),
            UserError::Blocking(e) => ApiFailure::Internal(e.to_string()),
            UserError::Access(e) => e.into(),
            UserError::Database(e) => e.into(),
        }
    }
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
    let users = users::list(&state.pool, &auth, after, query.role, fetch).await?;
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
    let user = users::create(&state.pool, &auth, &body).await?;
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
    Ok(web::Json(
        users::show(&state.pool, &auth, path.into_inner()).await?,
    ))
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
    let user = users::update(&state.pool, &auth, path.into_inner(), &body).await?;
    Ok(web::Json(user))
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
    users::remove(&state.pool, &auth, path.into_inner()).await?;
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
    Ok(web::Json(
        users::security_settings(&state.pool, &auth).await?,
    ))
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
    let settings = users::update_security_settings(&state.pool, &auth, body.into_inner()).await?;
    Ok(web::Json(settings))
}
