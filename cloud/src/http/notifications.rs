//! Notification channels, routing rules and the delivery log (with dead letters). Changes are
//! audited; a channel's signing secret is shown once.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::alerts::{
    ChannelView, CreateChannel, CreateRoutingRule, CreatedChannel, NotificationView,
    RoutingRuleView,
};
use stayopen_shared::api::{ApiError, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::notifications::channels::{self, NotificationError};
use crate::domain::notifications::history::{self, NotificationFilter};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<NotificationError> for ApiFailure {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::NotFound(what) => ApiFailure::NotFound(what),
            NotificationError::Invalid(why) => ApiFailure::BadRequest(why),
            NotificationError::Access(e) => e.into(),
            NotificationError::Database(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Creates a channel: a webhook (the response holds its signing secret, shown only here) or
/// e-mail to addresses and users.
#[utoipa::path(
    tag = "notifications",
    request_body = CreateChannel,
    responses((status = 201, body = CreatedChannel), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/notification-channels")]
pub async fn create_channel(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateChannel>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    let (channel, signing_secret) = channels::create_channel(&state.pool, &auth, &body).await?;
    Ok(HttpResponse::Created().json(CreatedChannel {
        channel,
        signing_secret,
    }))
}

/// The MSP's notification channels.
#[utoipa::path(
    tag = "notifications",
    params(ListQuery),
    responses((status = 200, body = Page<ChannelView>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/notification-channels")]
pub async fn list_channels(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<ChannelView>>, ApiFailure> {
    auth.require(Permission::Configure)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(String, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let items = channels::list_channels(&state.pool, &auth, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |c: &ChannelView| (c.name.clone(), c.id),
    )))
}

/// Deletes a channel, its routing rules and its pending notifications.
#[utoipa::path(
    tag = "notifications",
    params(("channel_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/notification-channels/{channel_id}")]
pub async fn delete_channel(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    channels::delete_channel(&state.pool, &auth, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Routes alerts (optionally of one practice, optionally of some kinds, at or above a severity,
/// at some hours) to a channel.
#[utoipa::path(
    tag = "notifications",
    request_body = CreateRoutingRule,
    responses((status = 201, body = RoutingRuleView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/routing-rules")]
pub async fn create_rule(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateRoutingRule>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    let view = channels::create_rule(&state.pool, &auth, &body).await?;
    Ok(HttpResponse::Created().json(view))
}

/// The MSP's routing rules.
#[utoipa::path(
    tag = "notifications",
    params(ListQuery),
    responses((status = 200, body = Page<RoutingRuleView>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/routing-rules")]
pub async fn list_rules(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<RoutingRuleView>>, ApiFailure> {
    auth.require(Permission::Configure)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let items = channels::list_rules(&state.pool, &auth, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |r: &RoutingRuleView| (r.created_at, r.id),
    )))
}

/// Deletes a routing rule.
#[utoipa::path(
    tag = "notifications",
    params(("rule_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[delete("/routing-rules/{rule_id}")]
pub async fn delete_rule(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    channels::delete_rule(&state.pool, &auth, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `pending`, `delivered`, `dead`, `cancelled`, `held` or `digested`.
    pub status: Option<String>,
    pub alert_id: Option<Uuid>,
}

/// Deliveries of alert notifications, with dead letters (`status=dead`).
#[utoipa::path(
    tag = "notifications",
    params(NotificationQuery),
    responses((status = 200, body = Page<NotificationView>), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/notifications")]
pub async fn list_notifications(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<NotificationQuery>,
) -> Result<web::Json<Page<NotificationView>>, ApiFailure> {
    auth.require(Permission::Configure)?;
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let filter = NotificationFilter {
        status: query.status.as_deref(),
        alert_id: query.alert_id,
    };
    let items = history::list(&state.pool, &auth, &filter, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |n: &NotificationView| (n.created_at, n.id),
    )))
}
