//! Notification channels, routing rules and the delivery log (with dead letters). Changes are
//! audited; a channel's signing secret is shown once.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::PracticeId;
use stayopen_shared::alerts::{
    AlertKind, ChannelKind, ChannelView, CreateChannel, CreateRoutingRule, CreatedChannel,
    NotificationView, RouteDuring, RoutingRuleView, Severity,
};
use stayopen_shared::api::{ApiError, Page};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission, random_secret};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ChannelRow {
    id: Uuid,
    name: String,
    kind: String,
    url: Option<String>,
    recipients: Vec<String>,
    user_ids: Vec<Uuid>,
    created_at: DateTime<Utc>,
}

const CHANNEL_COLUMNS: &str = "id, name, kind, url, recipients, user_ids, created_at";

impl From<ChannelRow> for ChannelView {
    fn from(row: ChannelRow) -> Self {
        ChannelView {
            id: row.id,
            name: row.name,
            kind: ChannelKind::parse(&row.kind).unwrap_or_default(),
            url: row.url,
            recipients: row.recipients,
            user_ids: row.user_ids,
            created_at: row.created_at,
        }
    }
}

/// A webhook's URL, checked: http(s) with a host.
fn webhook_url(url: Option<&str>) -> Result<String, ApiFailure> {
    let url = url
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiFailure::BadRequest("a webhook channel needs a url".into()))?;
    let url = reqwest::Url::parse(url).map_err(|e| ApiFailure::BadRequest(format!("url: {e}")))?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host_str().is_none()
        || url.as_str().len() > 2000
    {
        return Err(ApiFailure::BadRequest(
            "url must be an http(s) URL with a host".into(),
        ));
    }
    Ok(url.to_string())
}

/// An e-mail channel's addresses, checked and normalised; its users must belong to the MSP.
async fn email_targets(
    tx: &mut crate::infra::db::Tx,
    body: &CreateChannel,
) -> Result<(Vec<String>, Vec<Uuid>), ApiFailure> {
    if body.recipients.is_empty() && body.user_ids.is_empty() {
        return Err(ApiFailure::BadRequest(
            "an email channel needs recipients or user_ids".into(),
        ));
    }
    if body.recipients.len() + body.user_ids.len() > 50 {
        return Err(ApiFailure::BadRequest(
            "an email channel has at most 50 recipients and users".into(),
        ));
    }
    let mut recipients = Vec::new();
    for address in &body.recipients {
        let parsed = address.trim().parse::<lettre::Address>().map_err(|e| {
            ApiFailure::BadRequest(format!(
                "recipients: {address:?} is not a mail address: {e}"
            ))
        })?;
        recipients.push(parsed.to_string());
    }
    let known: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
        .bind(&body.user_ids)
        .fetch_all(&mut **tx)
        .await?;
    if let Some(unknown) = body.user_ids.iter().find(|id| !known.contains(id)) {
        return Err(ApiFailure::BadRequest(format!(
            "user_ids: no such user {unknown}"
        )));
    }
    Ok((recipients, body.user_ids.clone()))
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
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiFailure::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let mut tx = auth.tx(&state.pool).await?;
    let (url, secret, recipients, user_ids) = match body.kind {
        ChannelKind::Webhook => {
            if !body.recipients.is_empty() || !body.user_ids.is_empty() {
                return Err(ApiFailure::BadRequest(
                    "a webhook channel takes a url, not recipients or user_ids".into(),
                ));
            }
            let url = webhook_url(body.url.as_deref())?;
            (
                Some(url),
                Some(format!("whsec_{}", random_secret())),
                Vec::new(),
                Vec::new(),
            )
        }
        ChannelKind::Email => {
            if body.url.is_some() {
                return Err(ApiFailure::BadRequest(
                    "an email channel takes recipients or user_ids, not a url".into(),
                ));
            }
            let (recipients, user_ids) = email_targets(&mut tx, &body).await?;
            (None, None, recipients, user_ids)
        }
    };
    let row: ChannelRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO notification_channels
             (id, tenant_id, name, kind, url, secret, recipients, user_ids, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING {CHANNEL_COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(auth.tenant_id.as_uuid())
    .bind(name)
    .bind(body.kind.as_str())
    .bind(&url)
    .bind(&secret)
    .bind(&recipients)
    .bind(&user_ids)
    .bind(auth.actor().label())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "notification_channel.create",
            target_type: "notification_channel",
            target_id: row.id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "name": row.name, "kind": row.kind, "url": row.url,
                "recipients": row.recipients, "user_ids": row.user_ids,
            })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(CreatedChannel {
        channel: row.into(),
        signing_secret: secret,
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
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<ChannelRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHANNEL_COLUMNS} FROM notification_channels
         WHERE ($1::text IS NULL OR (name, id) > ($1, $2)) ORDER BY name, id LIMIT $3"
    )))
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows.into_iter().map(ChannelView::from).collect();
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
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let name: String =
        sqlx::query_scalar("DELETE FROM notification_channels WHERE id = $1 RETURNING name")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ApiFailure::NotFound("no such channel"))?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "notification_channel.delete",
            target_type: "notification_channel",
            target_id: id.to_string(),
            before: Some(serde_json::json!({ "name": name })),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(sqlx::FromRow)]
struct RuleRow {
    id: Uuid,
    channel_id: Uuid,
    practice_id: Option<Uuid>,
    kinds: Option<Vec<String>>,
    min_severity: String,
    delay_secs: i32,
    repeat_secs: Option<i32>,
    during: String,
    created_at: DateTime<Utc>,
}

impl RuleRow {
    fn view(self) -> RoutingRuleView {
        RoutingRuleView {
            id: self.id,
            channel_id: self.channel_id,
            practice_id: self.practice_id.map(PracticeId),
            kinds: self
                .kinds
                .map(|kinds| kinds.iter().filter_map(|k| AlertKind::parse(k)).collect()),
            min_severity: Severity::parse(&self.min_severity).unwrap_or(Severity::Critical),
            delay_secs: u32::try_from(self.delay_secs).unwrap_or(0),
            repeat_secs: self.repeat_secs.and_then(|r| u32::try_from(r).ok()),
            during: RouteDuring::parse(&self.during).unwrap_or_default(),
            created_at: self.created_at,
        }
    }
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
    let mut tx = auth.tx(&state.pool).await?;
    let channel: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM notification_channels WHERE id = $1")
            .bind(body.channel_id)
            .fetch_optional(&mut *tx)
            .await?;
    channel.ok_or(ApiFailure::NotFound("no such channel"))?;
    if let Some(practice) = body.practice_id {
        visible_practice(&mut tx, &auth, practice).await?;
    }
    if body.delay_secs > 86_400 || body.repeat_secs.is_some_and(|r| !(1..=86_400).contains(&r)) {
        return Err(ApiFailure::BadRequest(
            "delay_secs must be at most 86400 and repeat_secs between 1 and 86400".into(),
        ));
    }
    if body.kinds.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiFailure::BadRequest(
            "kinds, when given, must name at least one kind".into(),
        ));
    }
    let kinds: Option<Vec<&str>> = body
        .kinds
        .as_ref()
        .map(|kinds| kinds.iter().map(|k| k.as_str()).collect());
    let row: RuleRow = sqlx::query_as(
        "INSERT INTO routing_rules (id, tenant_id, channel_id, practice_id, kinds, min_severity, created_by,
                                    delay_secs, repeat_secs, during)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING id, channel_id, practice_id, kinds, min_severity, delay_secs, repeat_secs, during,
                   created_at",
    )
    .bind(Uuid::new_v4())
    .bind(auth.tenant_id.as_uuid())
    .bind(body.channel_id)
    .bind(body.practice_id.map(|p| p.0))
    .bind(kinds)
    .bind(body.min_severity.as_str())
    .bind(auth.actor().label())
    .bind(i32::try_from(body.delay_secs).unwrap_or(0))
    .bind(body.repeat_secs.and_then(|r| i32::try_from(r).ok()))
    .bind(body.during.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let view = row.view();
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "routing_rule.create",
            target_type: "routing_rule",
            target_id: view.id.to_string(),
            before: None,
            after: Some(serde_json::to_value(&view).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await?;
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
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<RuleRow> = sqlx::query_as(
        "SELECT id, channel_id, practice_id, kinds, min_severity, delay_secs, repeat_secs, during,
                created_at
         FROM routing_rules
         WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2)) ORDER BY created_at, id LIMIT $3",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows.into_iter().map(RuleRow::view).collect();
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
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let deleted = sqlx::query("DELETE FROM routing_rules WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiFailure::NotFound("no such routing rule"));
    }
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "routing_rule.delete",
            target_type: "routing_rule",
            target_id: id.to_string(),
            before: None,
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
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

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: Uuid,
    alert_id: Option<Uuid>,
    practice_id: Uuid,
    channel_id: Uuid,
    event: String,
    status: String,
    digest_of: Option<Vec<Uuid>>,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
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
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<NotificationRow> = sqlx::query_as(
        "SELECT id, alert_id, practice_id, channel_id, event, status, digest_of, attempts, last_error,
                created_at, delivered_at
         FROM notifications
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR alert_id = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(query.status.as_deref())
    .bind(query.alert_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows
        .into_iter()
        .map(|r| NotificationView {
            id: r.id,
            alert_id: r.alert_id,
            practice_id: PracticeId(r.practice_id),
            channel_id: r.channel_id,
            event: r.event,
            status: r.status,
            digest_of: r.digest_of.unwrap_or_default(),
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        })
        .collect();
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |n: &NotificationView| (n.created_at, n.id),
    )))
}
