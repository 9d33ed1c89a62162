//! Who hears about an alert, when, and how: e-mail through a real SMTP server (aiosmtpd, recording
//! to a maildir), clinic hours in the practice's own time zone choosing the route and capping the
//! severity, maintenance windows muting planned work, a storm folded into one digest, and the
//! alert kinds that come from what a real agent reports over MQTT (flapping, a degraded uplink,
//! metered data over budget) or from the sweep (drill overdue).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::smtp::{SmtpSink, header};
use common::webhook::{Receiver, signature_valid, start_receiver};
use common::{
    TestCloud, appliance_config, dispatch_at, eventually, notifications_settled, spawn_cloud_with,
};
use serde::de::DeserializeOwned;
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_appliance::config::{DataplaneSection, Outage, OutageKind};
use stayopen_cloud::domain::alerts::{self, AlertChange, sweeps};
use stayopen_cloud::infra::config::{AlertsConfig, SmtpConfig, SmtpSecurity};
use stayopen_shared::alerts::{
    AlertKind, AlertView, ChannelKind, CreateChannel, CreatedChannel, MaintenanceWindowView,
    NotificationView, Severity, WebhookDigest, WebhookTicket,
};
use stayopen_shared::api::Page;
use stayopen_shared::{ApplianceId, PracticeId};
use tokio::sync::watch;
use uuid::Uuid;

/// The test cloud's alerting: webhooks to loopback, quick retries and digests.
fn alerts_config(smtp_port: Option<u16>) -> AlertsConfig {
    AlertsConfig {
        allow_private_webhook_targets: true,
        webhook_retry_base_ms: 200,
        digest_after_secs: 2,
        dashboard_url: Some("https://dash.example".into()),
        smtp: smtp_port.map(|port| SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "StayOpen alerts <alerts@lakeside-it.example>".into(),
        }),
        ..AlertsConfig::default()
    }
}

async fn test_cloud(smtp_port: Option<u16>) -> TestCloud {
    spawn_cloud_with(|config| config.alerts = alerts_config(smtp_port)).await
}

/// A request body of the wire type `T`, written as JSON.
fn body<T: DeserializeOwned>(json: serde_json::Value) -> T {
    serde_json::from_value(json).unwrap_or_else(|e| panic!("a valid request body ({e})"))
}

async fn webhook(cloud: &TestCloud, admin: &str, name: &str, url: &str) -> CreatedChannel {
    let created = cloud
        .api(admin)
        .create_channel(&CreateChannel {
            name: name.into(),
            kind: ChannelKind::Webhook,
            url: Some(url.into()),
            recipients: vec![],
            user_ids: vec![],
        })
        .await;
    created.expect("channel")
}

async fn route(cloud: &TestCloud, admin: &str, rule: serde_json::Value) {
    cloud
        .api(admin)
        .create_routing_rule(&body(rule))
        .await
        .unwrap_or_else(|refused| panic!("{refused:?}"));
}

async fn notifications_of(cloud: &TestCloud, admin: &str, alert: Uuid) -> Vec<NotificationView> {
    let page = cloud
        .api(admin)
        .notifications(&format!("alert_id={alert}"))
        .await;
    page.expect("notifications").items
}

async fn alert(cloud: &TestCloud, admin: &str, id: Uuid) -> AlertView {
    cloud.api(admin).alert(id).await.expect("alert")
}

fn failover() -> AlertChange {
    AlertChange::Raise {
        kind: AlertKind::Failover,
        subject: String::new(),
        summary: "Failover fiber to lte: active uplink down".into(),
    }
}

fn uplink_down(uplink: &str) -> AlertChange {
    AlertChange::Raise {
        kind: AlertKind::UplinkDown,
        subject: uplink.into(),
        summary: format!("Uplink {uplink} down"),
    }
}

async fn enrol(cloud: &TestCloud, token: &str, serial: &str, n: u8) -> ApplianceId {
    cloud
        .enrol_device(token, serial, &format!("02:00:00:00:1e:{n:02x}"))
        .await
        .enrolled
        .appliance_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_mail_reaches_a_real_smtp_server_with_text_and_html_parts_threaded_per_alert() {
    let sink = SmtpSink::start().await;
    let cloud = test_cloud(Some(sink.port)).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let admin_id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&demo.email)
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("admin");
    // A bad address and a foreign user are refused with the field named.
    for (bad, field) in [
        (
            serde_json::json!({"name": "x", "kind": "email", "recipients": ["not an address"]}),
            "recipients",
        ),
        (
            serde_json::json!({"name": "x", "kind": "email", "user_ids": [Uuid::new_v4()]}),
            "user_ids",
        ),
        (
            serde_json::json!({"name": "x", "kind": "email", "url": "https://x.example"}),
            "url",
        ),
    ] {
        let refused = cloud
            .api(&admin)
            .create_channel(&body(bad))
            .await
            .expect_err(field);
        assert_eq!(refused.status, 400);
        assert!(
            refused.body.expect("error").to_string().contains(field),
            "{field}"
        );
    }
    let created = cloud
        .api(&admin)
        .create_channel(&CreateChannel {
            name: "NOC mail".into(),
            kind: ChannelKind::Email,
            url: None,
            recipients: vec!["noc@lakeside-it.example".into()],
            user_ids: vec![admin_id],
        })
        .await;
    let created = created.expect("channel");
    assert_eq!(created.signing_secret, None, "mail has nothing to sign");
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": created.channel.id, "min_severity": "warning"}),
    )
    .await;
    let appliance = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-MAIL-1", 1).await;
    let id = cloud
        .raise_alert(demo.tenant_id, appliance, failover())
        .await;
    cloud
        .raise_alert(
            demo.tenant_id,
            appliance,
            AlertChange::Clear {
                kind: AlertKind::Failover,
                subject: None,
                reason: "failed back".into(),
            },
        )
        .await;

    let mails = eventually(Duration::from_secs(15), "open and close mailed", || async {
        let mails = sink.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 2);
    let (open, close) = (&mails[0], &mails[1]);
    let subject = header(open, "Subject").expect("subject");
    assert!(
        subject.starts_with("[StayOpen] CRITICAL: Failover fiber to lte")
            && subject.contains(&demo.practices[0].name)
            && subject.contains("SO-MAIL-1"),
        "{subject}"
    );
    assert!(
        header(close, "Subject")
            .expect("subject")
            .starts_with("[StayOpen] Resolved: "),
        "{close}"
    );
    for mail in [open, close] {
        let recipients = header(mail, "X-RcptTo").expect("envelope recipients");
        assert!(
            recipients.contains("noc@lakeside-it.example"),
            "{recipients}"
        );
        assert!(
            recipients.contains(&demo.email),
            "the user, at their address"
        );
        assert!(
            header(mail, "Content-Type")
                .expect("type")
                .starts_with("multipart/alternative"),
            "{mail}"
        );
        assert!(mail.contains("Content-Type: text/plain"), "{mail}");
        assert!(mail.contains("Content-Type: text/html"), "{mail}");
        assert!(mail.contains("https://dash.example/alerts/"), "{mail}");
        assert_eq!(
            header(mail, "References").as_deref(),
            Some(format!("<alert-{id}@stayopen>").as_str()),
            "one thread per alert"
        );
    }
    let delivered = notifications_of(&cloud, &admin, id).await;
    assert!(
        delivered.iter().all(|n| n.status == "delivered"),
        "{delivered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinic_hours_choose_the_route_and_cap_the_severity_after_hours() {
    let cloud = test_cloud(None).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let daytime = Receiver::default();
    let on_call = Receiver::default();
    let daytime_channel = webhook(&cloud, &admin, "front desk", &start_receiver(&daytime)).await;
    let on_call_channel = webhook(&cloud, &admin, "on-call", &start_receiver(&on_call)).await;
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": daytime_channel.channel.id, "min_severity": "warning",
                           "during": "clinic_hours"}),
    )
    .await;
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": on_call_channel.channel.id, "min_severity": "warning",
                           "during": "after_hours"}),
    )
    .await;
    let appliance = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-HOURS-1", 2).await;

    // Bad schedules are refused with the field named.
    for (bad, field) in [
        (serde_json::json!({"time_zone": "Mars/Base"}), "time_zone"),
        (
            serde_json::json!({"time_zone": "UTC", "clinic_hours": {"mon": [{"open": "18:00", "close": "08:00"}]}}),
            "clinic_hours",
        ),
    ] {
        let refused = cloud
            .api(&admin)
            .set_schedule(practice, &body(bad))
            .await
            .expect_err(field);
        assert_eq!(refused.status, 400);
        assert!(
            refused.body.expect("error").to_string().contains(field),
            "{field}"
        );
    }
    // Open only the day after tomorrow (in the practice's zone): closed now.
    let zone = "America/Chicago";
    let local_today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get(zone).expect("zone"))
        .weekday()
        .to_monday_zero_offset();
    let open_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [usize::try_from((local_today + 2) % 7).expect("day")];
    let schedule = cloud
        .api(&admin)
        .set_schedule(
            practice,
            &body(serde_json::json!({"time_zone": zone,
                                "clinic_hours": {open_day: [{"open": "08:00", "close": "18:00"}]}})),
        )
        .await;
    let schedule = schedule.expect("schedule");
    assert!(!schedule.open_now, "{schedule:?}");
    let next_opening: chrono::DateTime<Utc> = schedule.next_opening.expect("next opening");
    assert!(next_opening > Utc::now() + chrono::Duration::hours(24));

    // After hours: the outage is capped at warning and goes to on-call at once; the front desk
    // hears at the opening, if nobody has taken it by then.
    let night = cloud
        .raise_alert(demo.tenant_id, appliance, failover())
        .await;
    let night_alert = alert(&cloud, &admin, night).await;
    assert_eq!(night_alert.severity, Severity::Warning);
    assert!(night_alert.after_hours);
    let got = eventually(Duration::from_secs(10), "on-call paged", || async {
        let got = on_call.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let ticket: WebhookTicket = serde_json::from_slice(&got[0].body).expect("ticket");
    assert_eq!((ticket.event.as_str(), ticket.alert.id), ("open", night));
    // The on-call ticket arrives a moment before its row is marked delivered: wait for that,
    // then only the front desk's notification is left, waiting for the opening.
    let expected = vec![(daytime_channel.channel.id, next_opening, true)];
    eventually(
        Duration::from_secs(10),
        "only the front desk waiting for the opening",
        || async {
            let deferred: Vec<(Uuid, chrono::DateTime<Utc>, bool)> = sqlx::query_as(
                "SELECT channel_id, next_attempt_at, requires_open FROM notifications
                 WHERE alert_id = $1 AND status = 'pending'",
            )
            .bind(night)
            .fetch_all(&cloud.owner_pool)
            .await
            .expect("pending");
            (deferred == expected).then_some(())
        },
    )
    .await;
    // A minute before the opening the front desk has heard nothing; at the opening the alert is
    // still unacknowledged, so it goes out.
    dispatch_at(
        &cloud.pool,
        &alerts_config(None),
        next_opening - chrono::Duration::minutes(1),
    )
    .await;
    assert!(daytime.received().is_empty(), "not before the opening");
    dispatch_at(&cloud.pool, &alerts_config(None), next_opening).await;
    let morning: Vec<WebhookTicket> = daytime
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("ticket"))
        .collect();
    assert_eq!(
        morning
            .iter()
            .map(|t| (t.event.as_str(), t.alert.id))
            .collect::<Vec<_>>(),
        vec![("open", night)],
        "the front desk hears in the morning"
    );

    // Open now (every day, all day): critical again, the front desk at once, on-call not at all.
    let all_day = serde_json::json!([{"open": "00:00", "close": "24:00"}]);
    let schedule = cloud
        .api(&admin)
        .set_schedule(
            practice,
            &body(serde_json::json!({"time_zone": zone, "clinic_hours": {
                "mon": all_day, "tue": all_day, "wed": all_day, "thu": all_day,
                "fri": all_day, "sat": all_day, "sun": all_day}})),
        )
        .await;
    assert!(schedule.expect("schedule").open_now);
    let other = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-HOURS-2", 3).await;
    let day = cloud.raise_alert(demo.tenant_id, other, failover()).await;
    let day_alert = alert(&cloud, &admin, day).await;
    assert_eq!(day_alert.severity, Severity::Critical);
    assert!(!day_alert.after_hours);
    eventually(
        Duration::from_secs(10),
        "the front desk hears at once",
        || async {
            daytime
                .received()
                .iter()
                .any(|r| {
                    serde_json::from_slice::<WebhookTicket>(&r.body)
                        .is_ok_and(|t| t.alert.id == day)
                })
                .then_some(())
        },
    )
    .await;
    // Nothing is waiting to page on-call about it, now or a day later.
    notifications_settled(&cloud.owner_pool).await;
    assert_eq!(
        notifications_of(&cloud, &admin, day)
            .await
            .iter()
            .map(|n| n.channel_id)
            .collect::<Vec<_>>(),
        vec![daytime_channel.channel.id]
    );
    dispatch_at(
        &cloud.pool,
        &alerts_config(None),
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    assert_eq!(
        on_call.received().len(),
        1,
        "on-call is not paged in clinic hours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_records_alerts_but_notifies_nobody() {
    let cloud = test_cloud(None).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let receiver = Receiver::default();
    let channel = webhook(&cloud, &admin, "PSA", &start_receiver(&receiver)).await;
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": channel.channel.id, "min_severity": "info"}),
    )
    .await;
    let practice: PracticeId = demo.practices[0].id;
    let appliance = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-MAINT-1", 4).await;
    let now = Utc::now();
    let window = serde_json::json!({"practice_id": practice, "starts_at": now - chrono::Duration::minutes(1),
                                    "ends_at": now + chrono::Duration::hours(1),
                                    "reason": "ISP replaces the fibre modem"});
    let created = cloud
        .api(&admin)
        .create_maintenance_window(&body(window.clone()))
        .await;
    let window_id = created.expect("window").id;
    // Another MSP cannot plan work on this practice, nor see the window.
    let (_, _, other_practice) = cloud.other_msp("other.example").await;
    let mut foreign = window.clone();
    foreign["practice_id"] = serde_json::json!(other_practice);
    let refused = cloud
        .api(&admin)
        .create_maintenance_window(&body(foreign))
        .await
        .expect_err("another MSP's practice");
    assert_eq!(refused.status, 404);

    let muted = cloud
        .raise_alert(demo.tenant_id, appliance, failover())
        .await;
    let recorded = alert(&cloud, &admin, muted).await;
    assert!(recorded.muted, "kept on record, marked muted");
    cloud
        .raise_alert(
            demo.tenant_id,
            appliance,
            AlertChange::Clear {
                kind: AlertKind::Failover,
                subject: None,
                reason: "failed back".into(),
            },
        )
        .await;
    // Nothing was queued, so even a day later nobody has heard.
    dispatch_at(
        &cloud.pool,
        &alerts_config(None),
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    assert!(
        receiver.received().is_empty(),
        "nobody hears about planned work"
    );
    assert!(notifications_of(&cloud, &admin, muted).await.is_empty());

    // The work is done early: cancel the window, and the next outage is heard.
    cloud
        .api(&admin)
        .delete_maintenance_window(window_id)
        .await
        .expect("window cancelled");
    let heard = cloud
        .raise_alert(demo.tenant_id, appliance, failover())
        .await;
    assert!(!alert(&cloud, &admin, heard).await.muted);
    eventually(
        Duration::from_secs(10),
        "the outage after the window is heard",
        || async { (!receiver.received().is_empty()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_for_one_appliance_mutes_only_it_and_is_listed_where_it_applies() {
    let cloud = test_cloud(None).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice: PracticeId = demo.practices[0].id;
    let token = &demo.practices[0].enrollment_token;
    let serviced = enrol(&cloud, token, "SO-MAINT-A", 6).await;
    let untouched = enrol(&cloud, token, "SO-MAINT-B", 7).await;
    let now = Utc::now();
    let window = serde_json::json!({"practice_id": practice, "appliance_id": serviced,
                                    "starts_at": now - chrono::Duration::minutes(1),
                                    "ends_at": now + chrono::Duration::hours(1),
                                    "reason": "LTE antenna moved"});
    let created = cloud
        .api(&admin)
        .create_maintenance_window(&body(window.clone()))
        .await;
    let created = created.expect("window");
    assert_eq!(created.appliance_serial.as_deref(), Some("SO-MAINT-A"));

    let covering = |appliance: ApplianceId| {
        let cloud = &cloud;
        let admin = &admin;
        async move {
            // No typed method takes the list's filters: raw.
            let (status, page) = cloud
                .api(admin)
                .get::<Page<MaintenanceWindowView>>(&format!(
                    "/api/v1/maintenance-windows?appliance_id={appliance}&upcoming=true"
                ))
                .await;
            assert_eq!(status, 200);
            page.expect("page")
                .items
                .into_iter()
                .map(|w| w.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(covering(serviced).await, vec![created.id]);
    assert!(covering(untouched).await.is_empty(), "not its window");

    assert!(
        alert(
            &cloud,
            &admin,
            cloud
                .raise_alert(demo.tenant_id, serviced, failover())
                .await
        )
        .await
        .muted
    );
    assert!(
        !alert(
            &cloud,
            &admin,
            cloud
                .raise_alert(demo.tenant_id, untouched, failover())
                .await
        )
        .await
        .muted,
        "the practice's other appliance is not under maintenance"
    );

    // A window for the whole practice covers every appliance of it.
    let mut whole = window.clone();
    whole["appliance_id"] = serde_json::Value::Null;
    let practice_wide = cloud
        .api(&admin)
        .create_maintenance_window(&body(whole))
        .await;
    let practice_wide = practice_wide.expect("window");
    assert_eq!(practice_wide.appliance_serial, None);
    assert_eq!(covering(untouched).await, vec![practice_wide.id]);
    assert_eq!(covering(serviced).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_past_the_practices_rate_limit_arrives_as_one_signed_digest() {
    let cloud = test_cloud(None).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    cloud
        .api(&admin)
        .set_policy(&serde_json::json!({"notifications_per_hour": 3}))
        .await
        .expect("policy set");
    let receiver = Receiver::default();
    let channel = webhook(&cloud, &admin, "PSA", &start_receiver(&receiver)).await;
    route(
        &cloud,
        &admin,
        serde_json::json!({"channel_id": channel.channel.id, "min_severity": "warning"}),
    )
    .await;
    let appliance = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-STORM-1", 5).await;
    let mut storm = Vec::new();
    for n in 0..10 {
        storm.push(
            cloud
                .raise_alert(demo.tenant_id, appliance, uplink_down(&format!("wan{n}")))
                .await,
        );
    }
    let got = eventually(
        Duration::from_secs(15),
        "three tickets and a digest",
        || async {
            let got = receiver.received();
            got.iter().any(|r| r.event == "digest").then_some(got)
        },
    )
    .await;
    let secret = channel.signing_secret.as_deref().expect("secret");
    assert!(got.iter().all(|r| signature_valid(secret, r)));
    let singles: Vec<WebhookTicket> = got
        .iter()
        .filter(|r| r.event == "open")
        .map(|r| serde_json::from_slice(&r.body).expect("ticket"))
        .collect();
    assert_eq!(singles.len(), 3, "the hourly limit");
    let digest: WebhookDigest = got
        .iter()
        .find(|r| r.event == "digest")
        .map(|r| serde_json::from_slice(&r.body).expect("digest"))
        .expect("digest");
    assert_eq!(digest.practice_id, demo.practices[0].id);
    assert_eq!(digest.practice_name, demo.practices[0].name);
    let mut carried: Vec<Uuid> = digest.alerts.iter().map(|a| a.id).collect();
    carried.extend(singles.iter().map(|t| t.alert.id));
    carried.sort();
    storm.sort();
    assert_eq!(
        carried, storm,
        "every alert arrives once, alone or in the digest"
    );
    // Once the dispatcher is idle, a day later brings nothing more.
    notifications_settled(&cloud.owner_pool).await;
    dispatch_at(
        &cloud.pool,
        &alerts_config(None),
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    assert_eq!(receiver.received().len(), 4, "one digest, not seven mails");
}

async fn alerts_of(cloud: &TestCloud, admin: &str, appliance: ApplianceId) -> Vec<AlertView> {
    let page = cloud
        .api(admin)
        .alerts(&format!("appliance_id={appliance}&limit=100"))
        .await;
    page.expect("alerts").items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_a_degraded_uplink_and_metered_data_over_budget_come_from_what_a_real_agent_reports()
 {
    let cloud = test_cloud(None).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    cloud
        .api(&admin)
        .set_policy(
            &serde_json::json!({"telemetry_interval_secs": 1, "failback_clean_period_secs": 5,
                                "flapping_failovers": 2, "degraded_for_secs": 10,
                                "degraded_rtt_ms": 250, "metered_data_alert_mb": 1,
                                "alert_severity": {"flapping": "critical"}}),
        )
        .await
        .unwrap_or_else(|refused| panic!("{refused:?}"));
    let state = tempfile::tempdir().expect("state");
    let mut config = appliance_config(
        &cloud.base_url,
        &demo.practices[0].enrollment_token,
        state.path(),
        None,
    );
    // The fibre drops twice; the LTE backup is slow (400 ms) and carries 2 MB/s while active.
    let DataplaneSection::Simulated { links } = &mut config.dataplane else {
        panic!("the test appliance runs on the simulated dataplane");
    };
    let fiber = links.entry("fiber".into()).or_default();
    fiber.outages = vec![
        Outage {
            start_secs: 3,
            duration_secs: 2,
            kind: OutageKind::Blackhole,
        },
        Outage {
            start_secs: 16,
            duration_secs: 2,
            kind: OutageKind::Blackhole,
        },
    ];
    let lte = links.entry("lte".into()).or_default();
    lte.rtt_ms = 400.0;
    lte.traffic_bytes_per_sec = 2_000_000;
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config,
            events_file: None,
            seed: 11,
        },
        stopped,
    ));
    let appliance = eventually(Duration::from_secs(20), "enrolled", || async {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM appliances WHERE serial = 'SO-TEST-0001'")
            .fetch_optional(&cloud.owner_pool)
            .await
            .ok()
            .flatten()
            .map(ApplianceId)
    })
    .await;
    let found = eventually(
        Duration::from_secs(60),
        "flapping, degraded and over-budget alerts",
        || async {
            let alerts = alerts_of(&cloud, &admin, appliance).await;
            let has = |kind: AlertKind| alerts.iter().find(|a| a.kind == kind).cloned();
            Some((
                has(AlertKind::Flapping)?,
                has(AlertKind::UplinkDegraded)?,
                has(AlertKind::MeteredOverBudget)?,
            ))
        },
    )
    .await;
    stop.send(true).expect("stop");
    run.await.expect("agent task").expect("agent");
    let (flapping, degraded, over_budget) = found;
    assert_eq!(flapping.severity, Severity::Critical, "tuned in policy");
    assert!(
        flapping.summary.contains("2 failovers"),
        "{}",
        flapping.summary
    );
    assert_eq!(degraded.subject, "lte");
    assert!(
        degraded.summary.contains("ms round trip"),
        "{}",
        degraded.summary
    );
    assert_eq!(over_budget.subject, "lte");
    assert_eq!(over_budget.severity, Severity::Warning);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_overdue_alert_is_raised_by_the_sweep_and_cleared_by_a_completed_drill() {
    let cloud = test_cloud(None).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let appliance = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-DRILL-1", 6).await;
    let fresh = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-DRILL-2", 7).await;
    sqlx::query("UPDATE appliances SET enrolled_at = now() - interval '120 days' WHERE id = $1")
        .bind(appliance.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("backdate");
    sweeps::drill_and_flapping_sweep(&cloud.pool, Utc::now())
        .await
        .expect("sweep");
    let overdue: Vec<AlertView> = alerts_of(&cloud, &admin, appliance)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::DrillOverdue)
        .collect();
    assert_eq!(overdue.len(), 1);
    assert!(
        overdue[0].summary.contains("since enrolment"),
        "{}",
        overdue[0].summary
    );
    assert!(
        alerts_of(&cloud, &admin, fresh).await.is_empty(),
        "105 days not passed"
    );
    // Sweeping again does not repeat it.
    sweeps::drill_and_flapping_sweep(&cloud.pool, Utc::now())
        .await
        .expect("sweep");
    assert_eq!(alert(&cloud, &admin, overdue[0].id).await.count, 1);
    let drilled = alerts::rules_for_event(
        &stayopen_shared::events::ApplianceEvent {
            kind: stayopen_shared::events::EventKind::DrillFinished,
            uplink: None,
            from: None,
            to: None,
            reason: "drill passed".into(),
            drill: None,
        },
        Some("fiber"),
    );
    let mut tx = stayopen_cloud::infra::db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    alerts::apply(&mut tx, demo.tenant_id, appliance, &drilled, Utc::now())
        .await
        .expect("apply");
    tx.commit().await.expect("commit");
    let cleared = alert(&cloud, &admin, overdue[0].id).await;
    assert_eq!(cleared.state, stayopen_shared::alerts::AlertState::Resolved);
}
