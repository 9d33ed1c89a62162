//! Alert notifications: the outbox ([`enqueue`], in the alert change's own transaction, routed by
//! [`plan`]), the digests a practice's rate limit produces ([`queue_digests`]) and the dispatcher
//! that delivers them ([`delivery`]) — signed webhooks and e-mail — with retries and a dead letter
//! at the end. The MSP configures where they go in [`channels`] and reads what went out in
//! [`history`]. Webhooks reach only the addresses [`target`] allows, and report only the class of
//! a failure.
//!
//! Routing ranks below alerts (an alert change queues its notifications); delivery ranks above
//! them (it loads the alerts it sends).
//!
//! Design: delivery is at-least-once and in order per alert and channel (a ticket's `close` never
//! overtakes its `open`). Each notification is claimed with a lease (its next attempt
//! moved 30 s ahead) before the HTTP call, so a crash mid-delivery retries rather than loses it;
//! receivers deduplicate by `X-StayOpen-Delivery`. Failures back off exponentially (1 s, 2 s, 4 s …
//! capped at 5 min); after the configured number of attempts the notification stays as `dead` with
//! its last error.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use stayopen_shared::TenantId;
use stayopen_shared::alerts::{ClinicHours, RouteDuring};
use uuid::Uuid;

use crate::domain::clinic::{ClinicNow, clinic_now};
use crate::infra::db::{self, Tx};

pub mod channels;
pub mod delivery;
pub mod history;
pub mod target;

/// What a change did to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    /// The condition repeated while the alert was unresolved.
    Folded,
    /// An informational alert, over as it happened.
    Notice,
    Resolved,
}

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
/// channel, notifications due now are held for the digest. Delays and clinic hours count from
/// `now`.
pub async fn enqueue(
    tx: &mut Tx,
    changes: &[(Uuid, Transition)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for (alert, transition) in changes {
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
            Transition::Folded => {
                enqueue_update(tx, *alert, TicketChange::Repeated, now).await?;
                continue;
            }
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
                    now,
                )
                .await?;
            sqlx::query(
                "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id, event,
                                            status, next_attempt_at, requires_open, repeat_secs,
                                            trace_context)
                 SELECT gen_random_uuid(), a.tenant_id, a.id, a.practice_id, $2, $3, $4, $5, $6, $7, $8
                 FROM alerts a WHERE a.id = $1
                 ON CONFLICT (alert_id, channel_id, event) WHERE event NOT IN ('reminder', 'update')
                 DO NOTHING",
            )
            .bind(alert)
            .bind(planned.channel_id)
            .bind(event)
            .bind(if held { "held" } else { "pending" })
            .bind(planned.deliver_at)
            .bind(planned.requires_open)
            .bind(planned.repeat_secs)
            // The alert transition's span, which the delivery continues (maybe elsewhere, later).
            .bind(crate::infra::observability::current_traceparent())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// What changed on an alert that a PSA ticket should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketChange {
    Acknowledged,
    Commented,
    /// The condition happened again (the alert's count went up).
    Repeated,
}

impl TicketChange {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketChange::Acknowledged => "acknowledged",
            TicketChange::Commented => "comment",
            TicketChange::Repeated => "repeat",
        }
    }
}

/// Queues an `update` of `alert` to each webhook channel whose ticket for it is open (its `open`
/// delivered, or waiting without conditions, so the update never arrives before it), in the
/// change's transaction. One update waits per alert and channel at most: a later change joins it,
/// and it carries the alert as it is when delivered. E-mail is left alone: people get the
/// opening and the closing, not every comment.
pub async fn enqueue_update(
    tx: &mut Tx,
    alert: Uuid,
    change: TicketChange,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notifications (id, tenant_id, alert_id, practice_id, channel_id, event, status,
                                    next_attempt_at, requires_open, changes, trace_context)
         SELECT gen_random_uuid(), o.tenant_id, o.alert_id, o.practice_id, o.channel_id, 'update',
                'pending', $2, false, ARRAY[$3], $4
         FROM (SELECT DISTINCT ON (n.channel_id) n.tenant_id, n.alert_id, n.practice_id, n.channel_id
               FROM notifications n JOIN notification_channels c ON c.id = n.channel_id
               WHERE n.alert_id = $1 AND n.event = 'open' AND c.kind = 'webhook'
                 AND (n.status = 'delivered' OR (n.status = 'pending' AND NOT n.requires_open))
               ORDER BY n.channel_id) o
         WHERE NOT EXISTS (SELECT 1 FROM notifications cl
                           WHERE cl.alert_id = o.alert_id AND cl.channel_id = o.channel_id
                             AND cl.event = 'close')
         ON CONFLICT (alert_id, channel_id) WHERE event = 'update' AND status = 'pending'
         DO UPDATE SET changes = CASE WHEN $3 = ANY(notifications.changes) THEN notifications.changes
                                      ELSE notifications.changes || $3 END",
    )
    .bind(alert)
    .bind(now)
    .bind(change.as_str())
    .bind(crate::infra::observability::current_traceparent())
    .execute(&mut **tx)
    .await?;
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
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notifications
                        WHERE alert_id = $1 AND channel_id = $2 AND status = 'held')
             OR (SELECT count(*) FROM notifications
                 WHERE channel_id = $2 AND practice_id = $3 AND event <> 'digest'
                   AND created_at > $5 - interval '1 hour'
                   AND status IN ('pending', 'delivered', 'dead', 'held', 'digested')) >= $4",
    )
    .bind(alert)
    .bind(channel)
    .bind(practice)
    .bind(i64::from(per_hour))
    .bind(now)
    .fetch_one(&mut **tx)
    .await
}

/// Folds each channel's held notifications about a practice into one digest once the first has
/// waited `digest_after` at `now`. Returns the digests queued.
pub async fn queue_digests(
    pool: &PgPool,
    digest_after: Duration,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_due_digests($1, $2)")
        .bind(digest_after.as_secs_f64())
        .bind(now)
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
                 HAVING min(created_at) < $2 - make_interval(secs => $1)
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
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        queued += digests.len();
    }
    Ok(queued)
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
}
