//! Alert notifications reach a real HTTP receiver: signed (HMAC-SHA256 over timestamp and body),
//! as a ticket with a stable external id, routed by severity and practice, retried with backoff
//! when the receiver fails, and kept as a dead letter when it never answers.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::webhook::{Receiver, signature_valid, start_receiver};
use common::{TestCloud, dispatch_at, eventually, notifications_settled, spawn_cloud_with};
use stayopen_cloud::domain::alerts::AlertChange;
use stayopen_cloud::infra::config::AlertsConfig;
use stayopen_shared::alerts::{
    AlertKind, ChannelKind, CreateChannel, CreateRoutingRule, CreatedChannel, ResolveAlert,
    WebhookTicket,
};

/// The test cloud's alerting: webhooks to loopback, three quick attempts.
fn alerts_config() -> AlertsConfig {
    AlertsConfig {
        allow_private_webhook_targets: true,
        webhook_max_attempts: 3,
        webhook_retry_base_ms: 200,
        ..AlertsConfig::default()
    }
}

async fn test_cloud() -> TestCloud {
    spawn_cloud_with(|config| config.alerts = alerts_config()).await
}

async fn channel(cloud: &TestCloud, admin: &str, url: &str) -> CreatedChannel {
    let created = cloud
        .api(admin)
        .create_channel(&CreateChannel {
            name: "PSA".into(),
            kind: ChannelKind::default(),
            url: Some(url.into()),
            recipients: vec![],
            user_ids: vec![],
        })
        .await;
    created.expect("channel")
}

/// Creates the routing rule written as JSON.
async fn route(cloud: &TestCloud, admin: &str, rule: serde_json::Value) {
    let rule: CreateRoutingRule = serde_json::from_value(rule).expect("a routing rule");
    cloud
        .api(admin)
        .create_routing_rule(&rule)
        .await
        .expect("rule created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_changes_reach_the_webhook_signed_as_tickets_routed_by_severity_and_practice() {
    let cloud = test_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let receiver = Receiver::default();
    let url = start_receiver(&receiver);
    let created = channel(&cloud, &admin, &url).await;
    assert!(
        created
            .signing_secret
            .as_deref()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    // Riverside: warnings and worse. Hillcrest has no rule.
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": created.channel.id, "practice_id": demo.practices[0].id, "min_severity": "warning"}),
    )
    .await;
    let riverside = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-HOOK-1",
            "02:00:00:00:0f:01",
        )
        .await
        .enrolled
        .appliance_id;
    let hillcrest = cloud
        .enrol_device(
            &demo.practices[1].enrollment_token,
            "SO-HOOK-2",
            "02:00:00:00:0f:02",
        )
        .await
        .enrolled
        .appliance_id;

    let failover = AlertChange::Raise {
        kind: AlertKind::Failover,
        subject: String::new(),
        summary: "Failover fiber → lte".into(),
    };
    let alert = cloud
        .raise_alert(demo.tenant_id, riverside, failover.clone())
        .await;
    cloud.raise_alert(demo.tenant_id, hillcrest, failover).await;
    cloud
        .raise_alert(
            demo.tenant_id,
            riverside,
            AlertChange::Notice {
                kind: AlertKind::Failback,
                subject: String::new(),
                summary: "Failback".into(),
            },
        )
        .await;
    cloud
        .api(&admin)
        .resolve_alert(
            alert,
            &ResolveAlert {
                note: Some("fixed".into()),
            },
        )
        .await
        .expect("resolved");

    let got = eventually(
        Duration::from_secs(10),
        "open and close delivered",
        || async {
            let got = receiver.received();
            (got.len() >= 2).then_some(got)
        },
    )
    .await;
    // Once the dispatcher is idle, a day later brings nothing more.
    notifications_settled(&cloud.owner_pool).await;
    dispatch_at(
        &cloud.pool,
        &alerts_config(),
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    let got_all = receiver.received();
    assert_eq!(
        got_all.len(),
        2,
        "no info notice, no other practice: {got_all:?}"
    );
    let tickets: Vec<WebhookTicket> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("ticket"))
        .collect();
    assert_eq!(
        tickets.iter().map(|t| t.event.as_str()).collect::<Vec<_>>(),
        vec!["open", "close"]
    );
    for (received, ticket) in got.iter().zip(&tickets) {
        assert!(
            signature_valid(created.signing_secret.as_deref().expect("secret"), received),
            "signature of {}",
            ticket.event
        );
        assert!(!signature_valid("whsec_wrong", received));
        assert_eq!(received.event, ticket.event);
        assert_eq!(received.delivery, ticket.delivery_id.to_string());
        assert_eq!(
            ticket.external_id,
            alert.to_string(),
            "one stable id per alert"
        );
        let age = Utc::now().timestamp() - received.timestamp.parse::<i64>().expect("timestamp");
        assert!((0..60).contains(&age));
    }
    assert_eq!(tickets[0].alert.kind, AlertKind::Failover);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_and_an_unreachable_one_leaves_a_dead_letter() {
    let cloud = test_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let receiver = Receiver::default();
    receiver.script.lock().expect("lock").extend([500, 503]);
    let flaky = channel(&cloud, &admin, &start_receiver(&receiver)).await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dead = channel(
        &cloud,
        &admin,
        &format!("http://127.0.0.1:{closed_port}/hook"),
    )
    .await;
    for channel_id in [flaky.channel.id, dead.channel.id] {
        route(
            &cloud,
            &admin,
            serde_json::json!({"channel_id": channel_id, "min_severity": "critical"}),
        )
        .await;
    }
    let appliance = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-HOOK-3",
            "02:00:00:00:0f:03",
        )
        .await
        .enrolled
        .appliance_id;
    let alert = cloud
        .raise_alert(
            demo.tenant_id,
            appliance,
            AlertChange::Raise {
                kind: AlertKind::ApplianceOffline,
                subject: String::new(),
                summary: "Appliance offline".into(),
            },
        )
        .await;

    let deliveries = |status: &'static str| {
        let (cloud, admin) = (&cloud, &admin);
        async move {
            let page = cloud
                .api(admin)
                .notifications(&format!("status={status}&alert_id={alert}"))
                .await;
            page.expect("notifications").items
        }
    };
    let delivered = eventually(
        Duration::from_secs(15),
        "delivered on the third try",
        || async { deliveries("delivered").await.into_iter().next() },
    )
    .await;
    assert_eq!(delivered.attempts, 3);
    assert_eq!(delivered.channel_id, flaky.channel.id);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.delivery == got[0].delivery),
        "retries repeat the delivery id"
    );

    let dead_letter = eventually(Duration::from_secs(15), "a dead letter", || async {
        deliveries("dead").await.into_iter().next()
    })
    .await;
    assert_eq!(dead_letter.channel_id, dead.channel.id);
    assert_eq!(dead_letter.attempts, 3);
    assert!(
        dead_letter
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("request failed")),
        "{dead_letter:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_alert_escalates_and_reminds_until_someone_takes_it() {
    let cloud = test_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let (first_line, escalation, reminders) = (
        Receiver::default(),
        Receiver::default(),
        Receiver::default(),
    );
    let mut channels = Vec::new();
    for receiver in [&first_line, &escalation, &reminders] {
        channels.push(
            channel(&cloud, &admin, &start_receiver(receiver))
                .await
                .channel
                .id,
        );
    }
    // Escalation after ten minutes, reminders every five: the test moves the dispatcher's time
    // forward; the background dispatcher, on the wall clock, only sends what is due at once.
    for (channel_id, delay, repeat) in [
        (channels[0], 0, None),
        (channels[1], 600, None),
        (channels[2], 0, Some(300)),
    ] {
        route(
            &cloud,
            &admin,
            serde_json::json!({"channel_id": channel_id, "min_severity": "critical",
                                "delay_secs": delay, "repeat_secs": repeat}),
        )
        .await;
    }
    let appliance = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-ESC-1",
            "02:00:00:00:10:01",
        )
        .await
        .enrolled
        .appliance_id;
    let other = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-ESC-2",
            "02:00:00:00:10:02",
        )
        .await
        .enrolled
        .appliance_id;
    let offline = || AlertChange::Raise {
        kind: AlertKind::ApplianceOffline,
        subject: String::new(),
        summary: "Appliance offline".into(),
    };
    let raised_at = Utc::now();
    let ignored = cloud
        .raise_alert(demo.tenant_id, appliance, offline())
        .await;
    let taken = cloud.raise_alert(demo.tenant_id, other, offline()).await;
    // Someone takes the second alert at once.
    cloud
        .api(&admin)
        .acknowledge_alert(taken)
        .await
        .expect("acknowledged");

    let events_for = |receiver: &Receiver, alert: uuid::Uuid| -> Vec<String> {
        receiver
            .received()
            .iter()
            .map(|r| serde_json::from_slice::<WebhookTicket>(&r.body).expect("ticket"))
            .filter(|t| t.external_id == alert.to_string())
            .map(|t| t.event)
            .collect()
    };
    eventually(
        Duration::from_secs(10),
        "the first line and the reminder channel told at once",
        || async {
            (events_for(&first_line, ignored) == ["open"]
                && events_for(&reminders, ignored) == ["open"])
            .then_some(())
        },
    )
    .await;
    notifications_settled(&cloud.owner_pool).await;
    let config = alerts_config();
    let minutes_later = |minutes: i64| raised_at + chrono::Duration::seconds(minutes * 60 - 10);
    // Just short of ten minutes: a first reminder, no escalation yet.
    dispatch_at(&cloud.pool, &config, minutes_later(10)).await;
    assert!(
        events_for(&escalation, ignored).is_empty(),
        "no escalation before its delay"
    );
    assert_eq!(events_for(&reminders, ignored), ["open", "reminder"]);
    dispatch_at(&cloud.pool, &config, minutes_later(11)).await;
    assert_eq!(
        events_for(&escalation, ignored),
        ["open"],
        "the ignored alert escalated"
    );
    dispatch_at(&cloud.pool, &config, minutes_later(16)).await;
    assert_eq!(
        events_for(&reminders, ignored),
        ["open", "reminder", "reminder"],
        "reminded every five minutes"
    );
    assert_eq!(events_for(&first_line, ignored), ["open"]);
    assert!(
        events_for(&escalation, taken).is_empty(),
        "an acknowledged alert does not escalate"
    );
    assert_eq!(
        events_for(&reminders, taken),
        ["open", "update"],
        "nor is it repeated: its ticket hears of the acknowledgement once"
    );

    // Acknowledged: the reminders stop.
    cloud
        .api(&admin)
        .acknowledge_alert(ignored)
        .await
        .expect("acknowledged");
    let reminders_of = |events: Vec<String>| events.iter().filter(|e| *e == "reminder").count();
    let reminded = reminders_of(events_for(&reminders, ignored));
    dispatch_at(&cloud.pool, &config, minutes_later(60)).await;
    assert_eq!(
        reminders_of(events_for(&reminders, ignored)),
        reminded,
        "no reminder after acknowledgement"
    );
    let cancelled = cloud.api(&admin).notifications("status=cancelled").await;
    assert!(!cancelled.expect("notifications").items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psa_ticket_gets_signed_updates_for_an_acknowledgement_a_comment_and_a_repeat_and_none_after_it_closes()
 {
    let cloud = test_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let receiver = Receiver::default();
    let url = start_receiver(&receiver);
    let created = channel(&cloud, &admin, &url).await;
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": created.channel.id, "min_severity": "info"}),
    )
    .await;
    let appliance = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-PSA-1",
            "02:00:00:00:0f:11",
        )
        .await
        .enrolled
        .appliance_id;
    let failover = AlertChange::Raise {
        kind: AlertKind::Failover,
        subject: String::new(),
        summary: "Failover fiber → lte".into(),
    };
    let alert = cloud
        .raise_alert(demo.tenant_id, appliance, failover.clone())
        .await;
    let tickets = |count: usize| {
        let receiver = &receiver;
        async move {
            eventually(
                Duration::from_secs(10),
                &format!("{count} deliveries"),
                || async {
                    let got = receiver.received();
                    (got.len() >= count).then_some(got)
                },
            )
            .await
        }
    };
    tickets(1).await;

    let api = cloud.api(&admin);
    api.acknowledge_alert(alert).await.expect("acknowledged");
    tickets(2).await;
    api.comment_alert(
        alert,
        &stayopen_shared::alerts::CreateAlertComment {
            body: "ISP ticket 4711 opened".into(),
        },
    )
    .await
    .expect("commented");
    tickets(3).await;
    // The failover happens again: the alert folds (its count goes up) and the ticket hears it.
    cloud.raise_alert(demo.tenant_id, appliance, failover).await;
    tickets(4).await;
    api.resolve_alert(alert, &ResolveAlert { note: None })
        .await
        .expect("resolved");
    let got = tickets(5).await;
    // After the close, a comment updates nothing: the ticket is closed.
    api.comment_alert(
        alert,
        &stayopen_shared::alerts::CreateAlertComment {
            body: "post-mortem written".into(),
        },
    )
    .await
    .expect("commented");
    notifications_settled(&cloud.owner_pool).await;
    dispatch_at(
        &cloud.pool,
        &alerts_config(),
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    assert_eq!(receiver.received().len(), 5, "nothing after the close");

    let tickets: Vec<WebhookTicket> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("ticket"))
        .collect();
    let events: Vec<(&str, Vec<String>)> = tickets
        .iter()
        .map(|t| (t.event.as_str(), t.changes.clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("open", vec![]),
            ("update", vec!["acknowledged".to_owned()]),
            ("update", vec!["comment".to_owned()]),
            ("update", vec!["repeat".to_owned()]),
            ("close", vec![]),
        ]
    );
    let secret = created.signing_secret.as_deref().expect("secret");
    for (received, ticket) in got.iter().zip(&tickets) {
        assert!(signature_valid(secret, received), "{} signed", ticket.event);
        assert_eq!(received.event, ticket.event);
        assert_eq!(ticket.external_id, alert.to_string(), "the same ticket");
    }
    assert_eq!(
        tickets[1].alert.state,
        stayopen_shared::alerts::AlertState::Acknowledged
    );
    assert_eq!(
        tickets[2].alert.comments.last().map(|c| c.body.as_str()),
        Some("ISP ticket 4711 opened")
    );
    assert_eq!(tickets[3].alert.count, 2);
}
