//! Delivering queued notifications: signed webhooks and e-mail, with retries and a dead letter at
//! the end. See the parent module for the design.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use stayopen_shared::alerts::{AlertView, ChannelKind, WebhookDigest, WebhookTicket};
use stayopen_shared::{PracticeId, TenantId};
use uuid::Uuid;

use super::queue_digests;
use super::target::{DeliveryFailure, Network, TargetPolicy, webhook_client};
use crate::domain::alerts::AlertError;
use crate::domain::alerts::views::for_notification;
use crate::infra::clock::Clock;
use crate::infra::db::{self, Tx};
use crate::infra::email::{self, EmailError, Mailer};
use crate::infra::metrics::{self, Metrics};

const LEASE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// `sha256=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length.
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub base: Duration,
}

impl RetryPolicy {
    pub fn from_config(config: &crate::infra::config::AlertsConfig) -> Self {
        Self {
            max_attempts: i32::try_from(config.webhook_max_attempts).unwrap_or(8),
            base: Duration::from_millis(config.webhook_retry_base_ms),
        }
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failures.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
        self.base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(Duration::from_secs(300))
    }
}

/// How the dispatcher delivers.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Which addresses webhooks may reach (see [`super::target`]).
    pub targets: Arc<TargetPolicy>,
    pub retry: RetryPolicy,
    pub digest_after: Duration,
    pub dashboard_url: Option<String>,
    /// `None` without `alerts.smtp`: e-mail notifications fail with that reason.
    pub mailer: Option<Mailer>,
    /// Where refused targets and failed deliveries are counted.
    pub metrics: Arc<Metrics>,
    /// The only client webhooks go through: it connects to vetted addresses alone. `None` if it
    /// could not be built (logged; webhooks then fail with that reason).
    http: Option<reqwest::Client>,
}

impl Dispatch {
    pub fn from_config(config: &crate::infra::config::AlertsConfig) -> Self {
        Self::with_metrics(config, Arc::new(Metrics::default()))
    }

    /// As [`Dispatch::from_config`], counting into the cloud's `metrics`.
    pub fn with_metrics(
        config: &crate::infra::config::AlertsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mailer = config
            .smtp
            .as_ref()
            .and_then(|smtp| match Mailer::from_config(smtp) {
                Ok(mailer) => Some(mailer),
                Err(e) => {
                    tracing::error!(error = %e, "alert e-mail disabled");
                    None
                }
            });
        let allowed = config
            .webhook_allowed_networks
            .iter()
            .filter_map(|n| match n.parse::<Network>() {
                Ok(network) => Some(network),
                Err(e) => {
                    // Ignoring it refuses more, never less.
                    tracing::error!(error = %e, "alerts.webhook_allowed_networks entry ignored");
                    None
                }
            })
            .collect();
        let targets = Arc::new(TargetPolicy {
            allow_all: config.allow_private_webhook_targets,
            allowed,
        });
        let http = match webhook_client(targets.clone(), metrics.clone()) {
            Ok(http) => Some(http),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks fail");
                None
            }
        };
        Self {
            targets,
            retry: RetryPolicy::from_config(config),
            digest_after: Duration::from_secs(config.digest_after_secs),
            dashboard_url: config.dashboard_url.clone(),
            mailer,
            metrics,
            http,
        }
    }
}

/// Why a dispatch round stopped short (the next round tries again).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("loading an alert to send: {0}")]
    Alert(#[from] AlertError),
}

/// Runs until `stop`: folds held notifications into digests and delivers due notifications of
/// every tenant, at the time `clock` tells. It wakes when an alert changes anywhere (the
/// live-update hub hears every instance's commits) and otherwise every [`POLL`], for retries,
/// escalations and reminders coming due.
pub async fn dispatch_loop(
    pool: PgPool,
    dispatch: Dispatch,
    clock: Clock,
    hub: crate::infra::stream::Hub,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut changes = hub.subscribe();
    // A round runs to its end (a webhook sent is marked sent); the stop is heard between rounds.
    while !stop.is_cancelled() {
        if let Err(e) = queue_digests(&pool, dispatch.digest_after, clock.now()).await {
            tracing::error!(error = %e, "digest sweep failed");
        }
        if let Err(e) = dispatch_once(&pool, &dispatch, &clock).await {
            tracing::error!(error = %e, "notification dispatch failed");
        }
        let alert_changed = async {
            loop {
                match changes.recv().await {
                    Ok(event) if event.event.topic == "alert" => return,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    // The hub is gone: fall back to polling alone.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(POLL, alert_changed) => {}
            () = stop.cancelled() => break,
        }
        // One pass serves every change that arrived meanwhile: a storm is not a busy loop.
        while changes.try_recv().is_ok() {}
    }
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    alert_id: Option<Uuid>,
    practice_id: Uuid,
    channel_id: Uuid,
    event: String,
    attempts: i32,
    kind: String,
    url: Option<String>,
    secret: Option<String>,
    /// The channel's addresses and its enabled users' current addresses.
    recipients: Vec<String>,
    digest_of: Option<Vec<Uuid>>,
    requires_open: bool,
    repeat_secs: Option<i32>,
    alert_open: Option<bool>,
    /// The `traceparent` of the alert transition that queued it.
    trace_context: Option<String>,
    /// An update's changes.
    changes: Option<Vec<String>>,
}

/// What a notification carries: one alert, or a digest's alerts.
enum Payload {
    Alert(AlertView),
    Digest {
        practice_name: String,
        alerts: Vec<AlertView>,
    },
}

async fn payload(tx: &mut Tx, notification: &Due) -> Result<Option<Payload>, DispatchError> {
    if let Some(alert) = notification.alert_id {
        return Ok(for_notification(tx, alert).await?.map(Payload::Alert));
    }
    let practice_name: Option<String> =
        sqlx::query_scalar("SELECT name FROM practices WHERE id = $1")
            .bind(notification.practice_id)
            .fetch_optional(&mut **tx)
            .await?;
    let mut alerts = Vec::new();
    for id in notification.digest_of.iter().flatten() {
        if let Some(alert) = for_notification(tx, *id).await? {
            alerts.push(alert);
        }
    }
    Ok(practice_name.map(|practice_name| Payload::Digest {
        practice_name,
        alerts,
    }))
}

/// One round: claims the notifications due at `clock`'s now (each with a lease, so a crash
/// mid-delivery retries it), cancels the escalations and reminders nobody needs any more,
/// delivers the rest and records each outcome (retry, dead letter, next reminder) at the time it
/// is known.
pub async fn dispatch_once(
    pool: &PgPool,
    dispatch: &Dispatch,
    clock: &Clock,
) -> Result<(), DispatchError> {
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT stayopen_tenants_with_due_notifications($1)")
            .bind(clock.now())
            .fetch_all(pool)
            .await?;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let now = clock.now();
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE notifications n SET next_attempt_at = $2 + make_interval(secs => $1)
             FROM notification_channels c
             WHERE c.id = n.channel_id AND n.id IN (
                 SELECT p.id FROM notifications p
                 WHERE p.status = 'pending' AND p.next_attempt_at <= $2
                   -- One at a time per alert and channel, oldest first; a reminder or
                   -- escalation waiting for its later time (sent only if nobody took the
                   -- alert) holds up nothing due before it, such as an update.
                   AND NOT EXISTS (
                       SELECT 1 FROM notifications e
                       WHERE e.alert_id = p.alert_id AND e.channel_id = p.channel_id
                         AND e.status = 'pending' AND e.seq < p.seq
                         AND NOT (e.requires_open AND e.next_attempt_at > p.next_attempt_at))
                 ORDER BY p.seq LIMIT 50 FOR UPDATE SKIP LOCKED)
             RETURNING n.id, n.alert_id, n.practice_id, n.channel_id, n.event, n.attempts,
                       c.kind, c.url, c.secret,
                       c.recipients || coalesce((SELECT array_agg(u.email ORDER BY u.email) FROM users u
                                                 WHERE u.id = ANY(c.user_ids) AND u.disabled_at IS NULL),
                                                '{}') AS recipients,
                       n.digest_of, n.requires_open, n.repeat_secs,
                       (SELECT state = 'open' FROM alerts WHERE id = n.alert_id) AS alert_open,
                       n.trace_context, n.changes",
        )
        .bind(LEASE.as_secs_f64())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        // An escalation or reminder whose alert someone took (or that resolved) is not sent.
        let (due, moot): (Vec<Due>, Vec<Due>) = due
            .into_iter()
            .partition(|n| !n.requires_open || n.alert_open == Some(true));
        for notification in &moot {
            sqlx::query(
                "UPDATE notifications SET status = 'cancelled',
                        last_error = 'the alert was acknowledged or resolved first' WHERE id = $1",
            )
            .bind(notification.id)
            .execute(&mut *tx)
            .await?;
        }
        let mut payloads = Vec::with_capacity(due.len());
        for notification in &due {
            payloads.push(payload(&mut tx, notification).await?);
        }
        tx.commit().await?;
        let outcomes: Vec<(Uuid, i32, Result<(), String>)> = futures_util::future::join_all(
            due.iter().zip(payloads).map(|(notification, payload)| {
                use tracing::Instrument;
                let span = tracing::info_span!(
                    "notification.delivery",
                    notification_id = %notification.id,
                    channel_kind = %notification.kind,
                    event = %notification.event,
                    attempt = notification.attempts + 1,
                    outcome = tracing::field::Empty,
                    otel.kind = "producer",
                );
                crate::infra::observability::span_from_traceparent(
                    &span,
                    notification.trace_context.as_deref(),
                );
                async move {
                    let started = std::time::Instant::now();
                    let outcome = match payload {
                        Some(payload) => {
                            deliver(dispatch, notification, payload, clock.now()).await
                        }
                        None => Err("the alert no longer exists".to_owned()),
                    };
                    let label = if outcome.is_ok() {
                        "delivered"
                    } else {
                        "failed"
                    };
                    dispatch
                        .metrics
                        .record_delivery(&notification.kind, label, started.elapsed());
                    tracing::Span::current().record("outcome", label);
                    (notification.id, notification.attempts, outcome)
                }
                .instrument(span)
            }),
        )
        .await;
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let now = clock.now();
        for (notification, (id, attempts, outcome)) in due.iter().zip(outcomes) {
            let attempts = attempts + 1;
            match outcome {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE notifications SET status = 'delivered', attempts = $2,
                                delivered_at = $3, last_error = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if let (Some(every), Some(alert)) =
                        (notification.repeat_secs, notification.alert_id)
                    {
                        // Until someone acknowledges: the next reminder (cancelled if they do).
                        sqlx::query(
                            "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id,
                                                        event, next_attempt_at, requires_open, repeat_secs,
                                                        trace_context)
                             SELECT gen_random_uuid(), tenant_id, id, practice_id, $2, 'reminder',
                                    $4 + make_interval(secs => $3), true, $3, $5
                             FROM alerts WHERE id = $1 AND state = 'open'",
                        )
                        .bind(alert)
                        .bind(notification.channel_id)
                        .bind(every)
                        .bind(now)
                        // A reminder stays in the trace of the transition that raised the alert.
                        .bind(&notification.trace_context)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Err(error) => {
                    let dead = attempts >= dispatch.retry.max_attempts;
                    if dead {
                        tracing::error!(notification = %id, %error, "notification dead after {attempts} attempts");
                    } else {
                        tracing::warn!(notification = %id, %error, attempts, "notification failed; retrying");
                    }
                    sqlx::query(
                        "UPDATE notifications SET attempts = $2, last_error = $3,
                                status = CASE WHEN $4 THEN 'dead' ELSE 'pending' END,
                                next_attempt_at = $6 + make_interval(secs => $5)
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .bind(&error)
                    .bind(dead)
                    .bind(dispatch.retry.backoff(attempts).as_secs_f64())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Sends one notification, `sent_at` the time it goes out.
async fn deliver(
    dispatch: &Dispatch,
    notification: &Due,
    payload: Payload,
    sent_at: DateTime<Utc>,
) -> Result<(), String> {
    match ChannelKind::parse(&notification.kind) {
        Some(ChannelKind::Webhook) => deliver_webhook(dispatch, notification, payload, sent_at)
            .await
            .map_err(|failure| {
                dispatch
                    .metrics
                    .increment(metrics::WEBHOOK_FAILED, "class", failure.label());
                failure.to_string()
            }),
        Some(ChannelKind::Email) => {
            let mailer = dispatch
                .mailer
                .as_ref()
                .ok_or_else(|| EmailError::NotConfigured.to_string())?;
            let dashboard = dispatch.dashboard_url.as_deref();
            let (mail, thread) = match &payload {
                Payload::Alert(alert) => (
                    email::render_alert(&notification.event, alert, dashboard),
                    Some(alert.id),
                ),
                Payload::Digest {
                    practice_name,
                    alerts,
                } => (email::render_digest(practice_name, alerts, dashboard), None),
            };
            mailer
                .send(&notification.recipients, &mail, thread, notification.id)
                .await
                .map_err(|e| e.to_string())
        }
        None => Err(format!("unknown channel kind {:?}", notification.kind)),
    }
}

/// Sends one webhook through the vetting client; a failure is only its class.
async fn deliver_webhook(
    dispatch: &Dispatch,
    notification: &Due,
    payload: Payload,
    sent_at: DateTime<Utc>,
) -> Result<(), DeliveryFailure> {
    let http = dispatch.http.as_ref().ok_or(DeliveryFailure::NoClient)?;
    let url = notification.url.as_deref().ok_or(DeliveryFailure::NoUrl)?;
    let secret = notification
        .secret
        .as_deref()
        .ok_or(DeliveryFailure::NoSecret)?;
    let url = reqwest::Url::parse(url).map_err(|_| DeliveryFailure::BadUrl)?;
    // A name is vetted by the client's resolver; an IP literal is never resolved, so here.
    if let Err(why) = dispatch.targets.vet_url(&url) {
        dispatch
            .metrics
            .increment(metrics::WEBHOOK_REFUSED, "reason", why.label());
        tracing::warn!(notification = %notification.id, reason = why.label(), "webhook target refused");
        return Err(DeliveryFailure::Refused(why));
    }
    let attempt = u32::try_from(notification.attempts + 1).unwrap_or(u32::MAX);
    let body = match payload {
        Payload::Alert(alert) => serde_json::to_vec(&WebhookTicket {
            event: notification.event.clone(),
            changes: notification.changes.clone().unwrap_or_default(),
            external_id: alert.id.to_string(),
            delivery_id: notification.id,
            attempt,
            sent_at,
            alert,
        }),
        Payload::Digest {
            practice_name,
            alerts,
        } => serde_json::to_vec(&WebhookDigest {
            event: notification.event.clone(),
            delivery_id: notification.id,
            attempt,
            sent_at,
            practice_id: PracticeId(notification.practice_id),
            practice_name,
            alerts,
        }),
    }
    .map_err(|_| DeliveryFailure::NoHttpAnswer)?;
    let timestamp = sent_at.timestamp();
    let mut request = http.post(url);
    // The receiver continues the trace, as a child of this delivery's span.
    if let Some(traceparent) = crate::infra::observability::current_traceparent() {
        request = request.header("traceparent", traceparent);
    }
    let response = request
        .header("content-type", "application/json")
        .header("x-stayopen-event", &notification.event)
        .header("x-stayopen-delivery", notification.id.to_string())
        .header("x-stayopen-timestamp", timestamp.to_string())
        .header("x-stayopen-signature", signature(secret, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| {
            // Without the URL: a webhook URL may carry the receiver's token.
            let e = e.without_url();
            let failure = DeliveryFailure::of(&e);
            // The details stay in the cloud's log, out of technicians' sight.
            tracing::info!(notification = %notification.id, error = %e, class = failure.label(), "webhook request failed");
            failure
        })?;
    // The body is never read: whatever the receiver says stays with it.
    if response.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryFailure::answered(response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let retry = RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
        };
        assert_eq!(retry.backoff(1), Duration::from_secs(1));
        assert_eq!(retry.backoff(2), Duration::from_secs(2));
        assert_eq!(retry.backoff(4), Duration::from_secs(8));
        assert_eq!(retry.backoff(30), Duration::from_secs(300));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key and data, framed as "{timestamp}.{body}".
        let sig = signature("Jefe", 0, b"what do ya want for nothing?");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert_ne!(sig, signature("Jefe", 1, b"what do ya want for nothing?"));
        assert_ne!(sig, signature("Jeff", 0, b"what do ya want for nothing?"));
    }
}
