//! Alert notifications: the outbox ([`enqueue`], in the alert change's own transaction, routed by
//! [`plan`]), the digests a practice's rate limit produces ([`queue_digests`]) and the dispatcher
//! that delivers them — signed webhooks and e-mail — with retries and a dead letter at the end.
//!
//! Design: delivery is at-least-once and in order per alert and channel (a ticket's `close` never
//! overtakes its `open`). Each notification is claimed with a lease (its next attempt
//! moved 30 s ahead) before the HTTP call, so a crash mid-delivery retries rather than loses it;
//! receivers deduplicate by `X-StayOpen-Delivery`. Failures back off exponentially (1 s, 2 s, 4 s …
//! capped at 5 min); after the configured number of attempts the notification stays as `dead` with
//! its last error.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use sqlx::types::Json;
use stayopen_shared::alerts::{
    AlertView, ChannelKind, ClinicHours, RouteDuring, WebhookDigest, WebhookTicket,
};
use stayopen_shared::{PracticeId, TenantId};
use uuid::Uuid;

use crate::alerts::Transition;
use crate::clinic::{ClinicNow, clinic_now};
use crate::db::{self, Tx};
use crate::email::{self, EmailError, Mailer};

const LEASE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// A routing rule that matches an alert (its practice, kind and severity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchingRule {
    pub channel_id: Uuid,
    pub delay_secs: i32,
    pub repeat_secs: Option<i32>,
    pub during: RouteDuring,
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub channel_id: Uuid,
    pub deliver_at: DateTime<Utc>,
    /// Deliver only if the alert is still open (unacknowledged) then; otherwise it is cancelled.
    pub requires_open: bool,
    pub repeat_secs: Option<i32>,
}

/// Which channels hear about an alert opening (`notice` false) or an informational notice, and
/// when: per channel the earliest of its matching rules, by their delay and the practice's clinic
/// hours. A `clinic_hours` rule defers an after-hours opening to the next opening (if nobody has
/// taken the alert by then); an `after_hours` rule applies only while the practice is closed.
pub fn plan(
    notice: bool,
    rules: &[MatchingRule],
    clinic: ClinicNow,
    now: DateTime<Utc>,
) -> Vec<Planned> {
    let mut planned: Vec<Planned> = Vec::new();
    for rule in rules {
        let delay = chrono::Duration::seconds(i64::from(rule.delay_secs.max(0)));
        let start = match (rule.during, clinic.open) {
            (RouteDuring::Always, _)
            | (RouteDuring::ClinicHours, true)
            | (RouteDuring::AfterHours, false) => now,
            (RouteDuring::ClinicHours, false) if !notice => match clinic.next_opening {
                Some(opening) => opening,
                None => continue,
            },
            _ => continue,
        };
        let candidate = if notice {
            Planned {
                channel_id: rule.channel_id,
                deliver_at: now,
                requires_open: false,
                repeat_secs: None,
            }
        } else {
            Planned {
                channel_id: rule.channel_id,
                deliver_at: start + delay,
                requires_open: start + delay > now,
                repeat_secs: rule.repeat_secs,
            }
        };
        match planned
            .iter_mut()
            .find(|p| p.channel_id == candidate.channel_id)
        {
            Some(existing) if existing.deliver_at <= candidate.deliver_at => {}
            Some(existing) => *existing = candidate,
            None => planned.push(candidate),
        }
    }
    planned
}

#[derive(sqlx::FromRow)]
struct AlertForRouting {
    practice_id: Uuid,
    muted: bool,
    time_zone: String,
    clinic_hours: Option<Json<ClinicHours>>,
    per_hour: i32,
}

/// Queues the notifications each alert change calls for, in the change's transaction: openings and
/// notices by the routing rules ([`plan`]), closings to the channels that heard of the opening.
/// A muted alert (maintenance) notifies nobody. Past the practice's `notifications_per_hour` on a
/// channel, notifications due now are held for the digest.
pub async fn enqueue(tx: &mut Tx, changes: &[(Uuid, Transition)]) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    for (alert, transition) in changes {
        if *transition == Transition::Folded {
            continue;
        }
        let Some(routing): Option<AlertForRouting> = sqlx::query_as(
            "SELECT a.practice_id, a.muted, p.time_zone, p.clinic_hours,
                    coalesce((ap.desired_policy ->> 'notifications_per_hour')::integer, 20) AS per_hour
             FROM alerts a
             JOIN practices p ON p.id = a.practice_id
             JOIN appliances ap ON ap.id = a.appliance_id
             WHERE a.id = $1",
        )
        .bind(alert)
        .fetch_optional(&mut **tx)
        .await?
        else {
            continue;
        };
        let (event, planned) = match transition {
            Transition::Folded => continue,
            Transition::Resolved => {
                // Escalations and reminders waiting for this alert are moot now.
                sqlx::query(
                    "UPDATE notifications SET status = 'cancelled',
                            last_error = 'the alert resolved first'
                     WHERE alert_id = $1 AND status = 'pending' AND requires_open",
                )
                .bind(alert)
                .execute(&mut **tx)
                .await?;
                let channels: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT DISTINCT channel_id FROM notifications
                     WHERE alert_id = $1 AND event = 'open'
                       AND status IN ('pending', 'delivered', 'held', 'digested', 'dead')",
                )
                .bind(alert)
                .fetch_all(&mut **tx)
                .await?;
                let planned = channels
                    .into_iter()
                    .map(|channel_id| Planned {
                        channel_id,
                        deliver_at: now,
                        requires_open: false,
                        repeat_secs: None,
                    })
                    .collect();
                ("close", planned)
            }
            Transition::Opened | Transition::Notice => {
                if routing.muted {
                    continue;
                }
                let rules: Vec<(Uuid, i32, Option<i32>, String)> = sqlx::query_as(
                    "SELECT r.channel_id, r.delay_secs, r.repeat_secs, r.during
                     FROM alerts a
                     JOIN routing_rules r ON r.tenant_id = a.tenant_id
                     WHERE a.id = $1
                       AND (r.practice_id IS NULL OR r.practice_id = a.practice_id)
                       AND (r.kinds IS NULL OR a.kind = ANY(r.kinds))
                       AND array_position(ARRAY['info', 'warning', 'critical'], a.severity)
                           >= array_position(ARRAY['info', 'warning', 'critical'], r.min_severity)",
                )
                .bind(alert)
                .fetch_all(&mut **tx)
                .await?;
                let rules: Vec<MatchingRule> = rules
                    .into_iter()
                    .map(
                        |(channel_id, delay_secs, repeat_secs, during)| MatchingRule {
                            channel_id,
                            delay_secs,
                            repeat_secs,
                            during: RouteDuring::parse(&during).unwrap_or_default(),
                        },
                    )
                    .collect();
                let clinic = clinic_now(
                    &routing.time_zone,
                    routing.clinic_hours.as_ref().map(|h| &h.0),
                    now,
                );
                let notice = *transition == Transition::Notice;
                (
                    if notice { "notice" } else { "open" },
                    plan(notice, &rules, clinic, now),
                )
            }
        };
        for planned in planned {
            let held = planned.deliver_at <= now
                && over_rate_limit(
                    tx,
                    *alert,
                    planned.channel_id,
                    routing.practice_id,
                    routing.per_hour,
                )
                .await?;
            sqlx::query(
                "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id, event,
                                            status, next_attempt_at, requires_open, repeat_secs)
                 SELECT gen_random_uuid(), a.tenant_id, a.id, a.practice_id, $2, $3, $4, $5, $6, $7
                 FROM alerts a WHERE a.id = $1
                 ON CONFLICT (alert_id, channel_id, event) WHERE event <> 'reminder' DO NOTHING",
            )
            .bind(alert)
            .bind(planned.channel_id)
            .bind(event)
            .bind(if held { "held" } else { "pending" })
            .bind(planned.deliver_at)
            .bind(planned.requires_open)
            .bind(planned.repeat_secs)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Whether `channel` has had its hourly share of notifications about `practice` (digests aside),
/// or already holds this alert's earlier notification (so its close waits with it).
async fn over_rate_limit(
    tx: &mut Tx,
    alert: Uuid,
    channel: Uuid,
    practice: Uuid,
    per_hour: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notifications
                        WHERE alert_id = $1 AND channel_id = $2 AND status = 'held')
             OR (SELECT count(*) FROM notifications
                 WHERE channel_id = $2 AND practice_id = $3 AND event <> 'digest'
                   AND created_at > now() - interval '1 hour'
                   AND status IN ('pending', 'delivered', 'dead', 'held', 'digested')) >= $4",
    )
    .bind(alert)
    .bind(channel)
    .bind(practice)
    .bind(i64::from(per_hour))
    .fetch_one(&mut **tx)
    .await
}

/// Folds each channel's held notifications about a practice into one digest once the first has
/// waited `digest_after`. Returns the digests queued.
pub async fn queue_digests(pool: &PgPool, digest_after: Duration) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_due_digests($1)")
        .bind(digest_after.as_secs_f64())
        .fetch_all(pool)
        .await?;
    let mut queued = 0;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let digests: Vec<Uuid> = sqlx::query_scalar(
            "WITH due AS (
                 SELECT channel_id, practice_id, array_agg(DISTINCT alert_id) AS alerts,
                        array_agg(id) AS held
                 FROM notifications WHERE status = 'held'
                 GROUP BY channel_id, practice_id
                 HAVING min(created_at) < now() - make_interval(secs => $1)
             ), folded AS (
                 UPDATE notifications n SET status = 'digested'
                 FROM due WHERE n.id = ANY(due.held) RETURNING n.id
             )
             INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id, event, digest_of)
             SELECT gen_random_uuid(), stayopen_current_tenant(), NULL, practice_id, channel_id,
                    'digest', alerts
             FROM due WHERE (SELECT count(*) FROM folded) > 0
             RETURNING id",
        )
        .bind(digest_after.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        queued += digests.len();
    }
    Ok(queued)
}

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
    pub fn from_config(config: &crate::config::AlertsConfig) -> Self {
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

/// Whether a webhook may be sent to `addr`: unless private targets are allowed (tests, on-premise
/// receivers), loopback, private, link-local and unspecified addresses are refused, so a webhook
/// cannot be aimed at the cloud's own network.
pub fn target_allowed(addr: IpAddr, allow_private: bool) -> bool {
    if allow_private {
        return true;
    }
    match addr {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// How the dispatcher delivers.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub allow_private_targets: bool,
    pub retry: RetryPolicy,
    pub digest_after: Duration,
    pub dashboard_url: Option<String>,
    /// `None` without `alerts.smtp`: e-mail notifications fail with that reason.
    pub mailer: Option<Mailer>,
}

impl Dispatch {
    pub fn from_config(config: &crate::config::AlertsConfig) -> Self {
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
        Self {
            allow_private_targets: config.allow_private_webhook_targets,
            retry: RetryPolicy::from_config(config),
            digest_after: Duration::from_secs(config.digest_after_secs),
            dashboard_url: config.dashboard_url.clone(),
            mailer,
        }
    }
}

/// Runs forever: folds held notifications into digests and delivers due notifications of every
/// tenant. It wakes when an alert changes anywhere (the live-update hub hears every instance's
/// commits) and otherwise every [`POLL`], for retries, escalations and reminders coming due.
pub async fn dispatch_loop(
    pool: PgPool,
    dispatch: Dispatch,
    hub: crate::stream::Hub,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut changes = hub.subscribe();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; no notifications");
            return;
        }
    };
    // A round runs to its end (a webhook sent is marked sent); the stop is heard between rounds.
    while !stop.is_cancelled() {
        if let Err(e) = queue_digests(&pool, dispatch.digest_after).await {
            tracing::error!(error = %e, "digest sweep failed");
        }
        if let Err(e) = dispatch_once(&pool, &http, &dispatch).await {
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
}

/// What a notification carries: one alert, or a digest's alerts.
enum Payload {
    Alert(AlertView),
    Digest {
        practice_name: String,
        alerts: Vec<AlertView>,
    },
}

async fn payload(tx: &mut Tx, notification: &Due) -> Result<Option<Payload>, sqlx::Error> {
    if let Some(alert) = notification.alert_id {
        return Ok(crate::http::alerts::load_for_notification(tx, alert)
            .await?
            .map(Payload::Alert));
    }
    let practice_name: Option<String> =
        sqlx::query_scalar("SELECT name FROM practices WHERE id = $1")
            .bind(notification.practice_id)
            .fetch_optional(&mut **tx)
            .await?;
    let mut alerts = Vec::new();
    for id in notification.digest_of.iter().flatten() {
        if let Some(alert) = crate::http::alerts::load_for_notification(tx, *id).await? {
            alerts.push(alert);
        }
    }
    Ok(practice_name.map(|practice_name| Payload::Digest {
        practice_name,
        alerts,
    }))
}

pub async fn dispatch_once(
    pool: &PgPool,
    http: &reqwest::Client,
    dispatch: &Dispatch,
) -> Result<(), sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_due_notifications()")
        .fetch_all(pool)
        .await?;
    for tenant in tenants.into_iter().map(TenantId) {
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE notifications n SET next_attempt_at = now() + make_interval(secs => $1)
             FROM notification_channels c
             WHERE c.id = n.channel_id AND n.id IN (
                 SELECT p.id FROM notifications p
                 WHERE p.status = 'pending' AND p.next_attempt_at <= now()
                   -- One at a time per alert and channel, oldest first.
                   AND NOT EXISTS (
                       SELECT 1 FROM notifications e
                       WHERE e.alert_id = p.alert_id AND e.channel_id = p.channel_id
                         AND e.status = 'pending' AND e.seq < p.seq)
                 ORDER BY p.seq LIMIT 50 FOR UPDATE SKIP LOCKED)
             RETURNING n.id, n.alert_id, n.practice_id, n.channel_id, n.event, n.attempts,
                       c.kind, c.url, c.secret,
                       c.recipients || coalesce((SELECT array_agg(u.email ORDER BY u.email) FROM users u
                                                 WHERE u.id = ANY(c.user_ids) AND u.disabled_at IS NULL),
                                                '{}') AS recipients,
                       n.digest_of, n.requires_open, n.repeat_secs,
                       (SELECT state = 'open' FROM alerts WHERE id = n.alert_id) AS alert_open",
        )
        .bind(LEASE.as_secs_f64())
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
        let outcomes: Vec<(Uuid, i32, Result<(), String>)> =
            futures_util::future::join_all(due.iter().zip(payloads).map(
                |(notification, payload)| async move {
                    let outcome = match payload {
                        Some(payload) => deliver(http, dispatch, notification, payload).await,
                        None => Err("the alert no longer exists".to_owned()),
                    };
                    (notification.id, notification.attempts, outcome)
                },
            ))
            .await;
        let mut tx = db::tenant_tx(pool, tenant).await?;
        for (notification, (id, attempts, outcome)) in due.iter().zip(outcomes) {
            let attempts = attempts + 1;
            match outcome {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE notifications SET status = 'delivered', attempts = $2,
                                delivered_at = now(), last_error = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .execute(&mut *tx)
                    .await?;
                    if let (Some(every), Some(alert)) =
                        (notification.repeat_secs, notification.alert_id)
                    {
                        // Until someone acknowledges: the next reminder (cancelled if they do).
                        sqlx::query(
                            "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id,
                                                        event, next_attempt_at, requires_open, repeat_secs)
                             SELECT gen_random_uuid(), tenant_id, id, practice_id, $2, 'reminder',
                                    now() + make_interval(secs => $3), true, $3
                             FROM alerts WHERE id = $1 AND state = 'open'",
                        )
                        .bind(alert)
                        .bind(notification.channel_id)
                        .bind(every)
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
                                next_attempt_at = now() + make_interval(secs => $5)
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(attempts)
                    .bind(&error)
                    .bind(dead)
                    .bind(dispatch.retry.backoff(attempts).as_secs_f64())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
    }
    Ok(())
}

async fn deliver(
    http: &reqwest::Client,
    dispatch: &Dispatch,
    notification: &Due,
    payload: Payload,
) -> Result<(), String> {
    match ChannelKind::parse(&notification.kind) {
        Some(ChannelKind::Webhook) => deliver_webhook(http, dispatch, notification, payload).await,
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

async fn deliver_webhook(
    http: &reqwest::Client,
    dispatch: &Dispatch,
    notification: &Due,
    payload: Payload,
) -> Result<(), String> {
    let url = notification
        .url
        .as_deref()
        .ok_or("the webhook has no URL")?;
    let secret = notification
        .secret
        .as_deref()
        .ok_or("the webhook has no signing secret")?;
    let url = reqwest::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty()
        || !addrs
            .iter()
            .all(|a| target_allowed(*a, dispatch.allow_private_targets))
    {
        return Err(format!(
            "{host} resolves to an address webhooks may not reach"
        ));
    }
    let attempt = u32::try_from(notification.attempts + 1).unwrap_or(u32::MAX);
    let body = match payload {
        Payload::Alert(alert) => serde_json::to_vec(&WebhookTicket {
            event: notification.event.clone(),
            external_id: alert.id.to_string(),
            delivery_id: notification.id,
            attempt,
            sent_at: Utc::now(),
            alert,
        }),
        Payload::Digest {
            practice_name,
            alerts,
        } => serde_json::to_vec(&WebhookDigest {
            event: notification.event.clone(),
            delivery_id: notification.id,
            attempt,
            sent_at: Utc::now(),
            practice_id: PracticeId(notification.practice_id),
            practice_name,
            alerts,
        }),
    }
    .map_err(|e| e.to_string())?;
    let timestamp = Utc::now().timestamp();
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-stayopen-event", &notification.event)
        .header("x-stayopen-delivery", notification.id.to_string())
        .header("x-stayopen-timestamp", timestamp.to_string())
        .header("x-stayopen-signature", signature(secret, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(channel: u128, delay_secs: i32, during: RouteDuring) -> MatchingRule {
        MatchingRule {
            channel_id: Uuid::from_u128(channel),
            delay_secs,
            repeat_secs: None,
            during,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn in_clinic_hours_the_daytime_route_hears_at_once_and_the_on_call_route_not_at_all() {
        let now = at("2026-11-23T16:00:00Z");
        let open = ClinicNow {
            open: true,
            next_opening: None,
        };
        let rules = [
            rule(1, 0, RouteDuring::ClinicHours),
            rule(2, 0, RouteDuring::AfterHours),
        ];
        let planned = plan(false, &rules, open, now);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].channel_id, Uuid::from_u128(1));
        assert_eq!(planned[0].deliver_at, now);
        assert!(!planned[0].requires_open);
    }

    #[test]
    fn after_hours_the_daytime_route_waits_for_the_opening_and_only_if_nobody_took_the_alert() {
        let now = at("2026-11-22T09:00:00Z");
        let opening = at("2026-11-23T14:00:00Z");
        let closed = ClinicNow {
            open: false,
            next_opening: Some(opening),
        };
        let rules = [
            rule(1, 600, RouteDuring::ClinicHours),
            rule(2, 0, RouteDuring::AfterHours),
        ];
        let planned = plan(false, &rules, closed, now);
        let daytime = planned
            .iter()
            .find(|p| p.channel_id == Uuid::from_u128(1))
            .expect("deferred");
        assert_eq!(daytime.deliver_at, opening + chrono::Duration::seconds(600));
        assert!(daytime.requires_open);
        let on_call = planned
            .iter()
            .find(|p| p.channel_id == Uuid::from_u128(2))
            .expect("paged");
        assert_eq!(on_call.deliver_at, now);
        // Informational notices do not wait for the morning.
        assert_eq!(plan(true, &rules, closed, now).len(), 1);
    }

    #[test]
    fn a_channel_with_several_matching_rules_hears_once_at_the_earliest() {
        let now = at("2026-11-23T16:00:00Z");
        let open = ClinicNow {
            open: true,
            next_opening: None,
        };
        let rules = [
            rule(1, 900, RouteDuring::Always),
            rule(1, 0, RouteDuring::Always),
        ];
        let planned = plan(false, &rules, open, now);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].deliver_at, now);
        assert!(
            !planned[0].requires_open,
            "an immediate route is not an escalation"
        );
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
    fn webhooks_may_not_reach_private_addresses_unless_allowed() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
        ] {
            let addr: IpAddr = blocked.parse().expect("ip");
            assert!(!target_allowed(addr, false), "{blocked}");
            assert!(target_allowed(addr, true), "{blocked}");
        }
        assert!(target_allowed("203.0.113.7".parse().expect("ip"), false));
    }
}
