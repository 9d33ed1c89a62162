//! Alert notifications: the outbox ([`enqueue`], in the alert change's own transaction) and the
//! dispatcher that delivers it to webhooks, signed, with retries and a dead letter at the end.
//!
//! Design: delivery is at-least-once and in order per alert and channel (a ticket's `close` never
//! overtakes its `open`). Each notification is claimed with a lease (its next attempt
//! moved 30 s ahead) before the HTTP call, so a crash mid-delivery retries rather than loses it;
//! receivers deduplicate by `X-StayOpen-Delivery`. Failures back off exponentially (1 s, 2 s, 4 s …
//! capped at 5 min); after the configured number of attempts the notification stays as `dead` with
//! its last error.

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use stayopen_shared::TenantId;
use stayopen_shared::alerts::WebhookTicket;
use uuid::Uuid;

use crate::alerts::Transition;
use crate::db::{self, Tx};

const LEASE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// Queues one notification per matching routing rule's channel for each alert change.
pub async fn enqueue(tx: &mut Tx, changes: &[(Uuid, Transition)]) -> Result<(), sqlx::Error> {
    for (alert, transition) in changes {
        let event = match transition {
            Transition::Opened => "open",
            Transition::Resolved => "close",
            Transition::Notice => "notice",
            Transition::Folded => continue,
        };
        // Delays and repeats apply to an alert opening; closing and notices go out at once.
        sqlx::query(
            "INSERT INTO notifications (id, tenant_id, alert_id, channel_id, event,
                                        next_attempt_at, requires_open, repeat_secs)
             SELECT DISTINCT ON (r.channel_id) gen_random_uuid(), a.tenant_id, a.id, r.channel_id, $2,
                    now() + make_interval(secs => CASE WHEN $2 = 'open' THEN r.delay_secs ELSE 0 END),
                    $2 = 'open' AND r.delay_secs > 0,
                    CASE WHEN $2 = 'open' THEN r.repeat_secs END
             FROM alerts a
             JOIN routing_rules r ON r.tenant_id = a.tenant_id
             WHERE a.id = $1
               AND (r.practice_id IS NULL OR r.practice_id = a.practice_id)
               AND (r.kinds IS NULL OR a.kind = ANY(r.kinds))
               AND array_position(ARRAY['info', 'warning', 'critical'], a.severity)
                   >= array_position(ARRAY['info', 'warning', 'critical'], r.min_severity)
             ORDER BY r.channel_id, r.delay_secs
             ON CONFLICT (alert_id, channel_id, event) WHERE event <> 'reminder' DO NOTHING",
        )
        .bind(alert)
        .bind(event)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
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

/// Runs forever: delivers due notifications of every tenant.
pub async fn dispatch_loop(pool: PgPool, allow_private_targets: bool, retry: RetryPolicy) {
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
    loop {
        if let Err(e) = dispatch_once(&pool, &http, allow_private_targets, retry).await {
            tracing::error!(error = %e, "notification dispatch failed");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    alert_id: Uuid,
    channel_id: Uuid,
    event: String,
    attempts: i32,
    url: String,
    secret: String,
    requires_open: bool,
    repeat_secs: Option<i32>,
    alert_open: bool,
}

pub async fn dispatch_once(
    pool: &PgPool,
    http: &reqwest::Client,
    allow_private_targets: bool,
    retry: RetryPolicy,
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
             RETURNING n.id, n.alert_id, n.channel_id, n.event, n.attempts, c.url, c.secret,
                       n.requires_open, n.repeat_secs,
                       (SELECT state = 'open' FROM alerts WHERE id = n.alert_id) AS alert_open",
        )
        .bind(LEASE.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        // An escalation or reminder whose alert someone took (or that resolved) is not sent.
        let (due, moot): (Vec<Due>, Vec<Due>) = due
            .into_iter()
            .partition(|n| !n.requires_open || n.alert_open);
        for notification in &moot {
            sqlx::query(
                "UPDATE notifications SET status = 'cancelled',
                        last_error = 'the alert was acknowledged or resolved first' WHERE id = $1",
            )
            .bind(notification.id)
            .execute(&mut *tx)
            .await?;
        }
        let mut tickets = Vec::with_capacity(due.len());
        for notification in &due {
            let alert =
                crate::http::alerts::load_for_notification(&mut tx, notification.alert_id).await?;
            tickets.push(alert);
        }
        tx.commit().await?;
        let outcomes: Vec<(Uuid, i32, Result<(), String>)> =
            futures_util::future::join_all(due.iter().zip(tickets).map(
                |(notification, alert)| async move {
                    let outcome = match alert {
                        Some(alert) => {
                            deliver(http, notification, alert, allow_private_targets).await
                        }
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
                    if let Some(every) = notification.repeat_secs {
                        // Until someone acknowledges: the next reminder (cancelled if they do).
                        sqlx::query(
                            "INSERT INTO notifications (id, tenant_id, alert_id, channel_id, event,
                                                        next_attempt_at, requires_open, repeat_secs)
                             SELECT gen_random_uuid(), tenant_id, id, $2, 'reminder',
                                    now() + make_interval(secs => $3), true, $3
                             FROM alerts WHERE id = $1 AND state = 'open'",
                        )
                        .bind(notification.alert_id)
                        .bind(notification.channel_id)
                        .bind(every)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Err(error) => {
                    let dead = attempts >= retry.max_attempts;
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
                    .bind(retry.backoff(attempts).as_secs_f64())
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
    notification: &Due,
    alert: stayopen_shared::alerts::AlertView,
    allow_private_targets: bool,
) -> Result<(), String> {
    let url = reqwest::Url::parse(&notification.url).map_err(|e| format!("bad URL: {e}"))?;
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
            .all(|a| target_allowed(*a, allow_private_targets))
    {
        return Err(format!(
            "{host} resolves to an address webhooks may not reach"
        ));
    }
    let ticket = WebhookTicket {
        event: notification.event.clone(),
        external_id: notification.alert_id.to_string(),
        delivery_id: notification.id,
        attempt: u32::try_from(notification.attempts + 1).unwrap_or(u32::MAX),
        sent_at: Utc::now(),
        alert,
    };
    let body = serde_json::to_vec(&ticket).map_err(|e| e.to_string())?;
    let timestamp = Utc::now().timestamp();
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-stayopen-event", &notification.event)
        .header("x-stayopen-delivery", notification.id.to_string())
        .header("x-stayopen-timestamp", timestamp.to_string())
        .header(
            "x-stayopen-signature",
            signature(&notification.secret, timestamp, &body),
        )
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
