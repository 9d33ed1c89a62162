//! Where notifications go and which alerts they are about: an MSP's channels (signed webhooks,
//! e-mail to addresses and users) and routing rules. Every change is audited; a webhook's signing
//! secret is returned once, when the channel is created.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::PracticeId;
use stayopen_shared::alerts::{
    AlertKind, ChannelKind, ChannelView, CreateChannel, CreateRoutingRule, RouteDuring,
    RoutingRuleView, Severity,
};
use uuid::Uuid;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AccessError, AuthUser, random_secret};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;

/// Why a change to channels or routing rules failed.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// No such channel or rule (the message says which).
    #[error("{0}")]
    NotFound(&'static str),
    /// The request's content is not acceptable; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
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
fn webhook_url(url: Option<&str>) -> Result<String, NotificationError> {
    let url = url
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| NotificationError::Invalid("a webhook channel needs a url".into()))?;
    let url =
        reqwest::Url::parse(url).map_err(|e| NotificationError::Invalid(format!("url: {e}")))?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host_str().is_none()
        || url.as_str().len() > 2000
    {
        return Err(NotificationError::Invalid(
            "url must be an http(s) URL with a host".into(),
        ));
    }
    Ok(url.to_string())
}

/// An e-mail channel's addresses, checked and normalised; its users must belong to the MSP.
async fn email_targets(
    tx: &mut Tx,
    body: &CreateChannel,
) -> Result<(Vec<String>, Vec<Uuid>), NotificationError> {
    if body.recipients.is_empty() && body.user_ids.is_empty() {
        return Err(NotificationError::Invalid(
            "an email channel needs recipients or user_ids".into(),
        ));
    }
    if body.recipients.len() + body.user_ids.len() > 50 {
        return Err(NotificationError::Invalid(
            "an email channel has at most 50 recipients and users".into(),
        ));
    }
    let mut recipients = Vec::new();
    for address in &body.recipients {
        let parsed = address.trim().parse::<lettre::Address>().map_err(|e| {
            NotificationError::Invalid(format!(
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
        return Err(NotificationError::Invalid(format!(
            "user_ids: no such user {unknown}"
        )));
    }
    Ok((recipients, body.user_ids.clone()))
}

/// Creates a channel: a webhook (with a fresh signing secret, returned here and never again) or
/// e-mail to addresses and users.
pub async fn create_channel(
    pool: &PgPool,
    auth: &AuthUser,
    body: &CreateChannel,
) -> Result<(ChannelView, Option<String>), NotificationError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(NotificationError::Invalid(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let mut tx = auth.tx(pool).await?;
    let (url, secret, recipients, user_ids) = match body.kind {
        ChannelKind::Webhook => {
            if !body.recipients.is_empty() || !body.user_ids.is_empty() {
                return Err(NotificationError::Invalid(
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
                return Err(NotificationError::Invalid(
                    "an email channel takes recipients or user_ids, not a url".into(),
                ));
            }
            let (recipients, user_ids) = email_targets(&mut tx, body).await?;
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
    .bind(body.kind)
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
    Ok((row.into(), secret))
}

/// Up to `limit` of the MSP's channels by name, after the `after` (name, id) of a previous page.
pub async fn list_channels(
    pool: &PgPool,
    auth: &AuthUser,
    after: Option<(String, Uuid)>,
    limit: i64,
) -> Result<Vec<ChannelView>, NotificationError> {
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<ChannelRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHANNEL_COLUMNS} FROM notification_channels
         WHERE ($1::text IS NULL OR (name, id) > ($1, $2)) ORDER BY name, id LIMIT $3"
    )))
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(ChannelView::from).collect())
}

/// Deletes a channel, its routing rules and its pending notifications.
pub async fn delete_channel(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<(), NotificationError> {
    let mut tx = auth.tx(pool).await?;
    let name: String =
        sqlx::query_scalar("DELETE FROM notification_channels WHERE id = $1 RETURNING name")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(NotificationError::NotFound("no such channel"))?;
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
    Ok(())
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

/// The longest escalation delay and reminder interval: a day.
pub const MAX_ROUTE_SECS: u32 = 86_400;

/// Routes alerts (optionally of one practice the caller may see, optionally of some kinds, at or
/// above a severity, at some hours) to an existing channel.
pub async fn create_rule(
    pool: &PgPool,
    auth: &AuthUser,
    body: &CreateRoutingRule,
) -> Result<RoutingRuleView, NotificationError> {
    let mut tx = auth.tx(pool).await?;
    let channel: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM notification_channels WHERE id = $1")
            .bind(body.channel_id)
            .fetch_optional(&mut *tx)
            .await?;
    channel.ok_or(NotificationError::NotFound("no such channel"))?;
    if let Some(practice) = body.practice_id {
        visible_practice(&mut tx, auth, practice).await?;
    }
    if body.delay_secs > MAX_ROUTE_SECS
        || body
            .repeat_secs
            .is_some_and(|r| !(1..=MAX_ROUTE_SECS).contains(&r))
    {
        return Err(NotificationError::Invalid(
            "delay_secs must be at most 86400 and repeat_secs between 1 and 86400".into(),
        ));
    }
    if body.kinds.as_ref().is_some_and(Vec::is_empty) {
        return Err(NotificationError::Invalid(
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
    .bind(body.min_severity)
    .bind(auth.actor().label())
    .bind(i32::try_from(body.delay_secs).unwrap_or(0))
    .bind(body.repeat_secs.and_then(|r| i32::try_from(r).ok()))
    .bind(body.during)
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
    Ok(view)
}

/// Up to `limit` of the MSP's routing rules, oldest first, after the `after` (created at, id) of a
/// previous page.
pub async fn list_rules(
    pool: &PgPool,
    auth: &AuthUser,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<RoutingRuleView>, NotificationError> {
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<RuleRow> = sqlx::query_as(
        "SELECT id, channel_id, practice_id, kinds, min_severity, delay_secs, repeat_secs, during,
                created_at
         FROM routing_rules
         WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2)) ORDER BY created_at, id LIMIT $3",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(RuleRow::view).collect())
}

/// Deletes a routing rule.
pub async fn delete_rule(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<(), NotificationError> {
    let mut tx = auth.tx(pool).await?;
    let deleted = sqlx::query("DELETE FROM routing_rules WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(NotificationError::NotFound("no such routing rule"));
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
    Ok(())
}
