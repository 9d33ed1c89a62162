//! Alerts: raised by what appliances report, folded together while unresolved, cleared by the
//! condition clearing, and acknowledged, resolved and commented on by people (audited).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{appliance_config, eventually, spawn_cloud};
use rumqttc::QoS;
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_appliance::config::{Outage, OutageKind};
use stayopen_cloud::domain::alerts::{self, AlertChange, sweeps};
use stayopen_cloud::infra::db;
use stayopen_shared::alerts::{
    AlertKind, AlertState, AlertView, CreateAlertComment, ResolveAlert, Severity,
};
use stayopen_shared::api::Role;
use stayopen_shared::{Channel, DeviceTopic, MessageId};
use tokio::sync::watch;
use uuid::Uuid;

async fn alerts_of(cloud: &common::TestCloud, token: &str, query: &str) -> Vec<AlertView> {
    let page = cloud.api(token).alerts(query).await;
    page.unwrap_or_else(|refused| panic!("{query}: {refused:?}"))
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_opens_a_critical_alert_that_the_failback_resolves_by_itself() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    cloud
        .api(&admin)
        .set_policy(
            &serde_json::json!({"telemetry_interval_secs": 1, "failback_clean_period_secs": 5}),
        )
        .await
        .expect("policy set");
    let state = tempfile::tempdir().expect("state");
    let (stop, stopped) = watch::channel(false);
    let outage = Outage {
        start_secs: 3,
        duration_secs: 2,
        kind: OutageKind::Blackhole,
    };
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(
                &cloud.base_url,
                &demo.practices[0].enrollment_token,
                state.path(),
                Some(outage),
            ),
            events_file: None,
            seed: 9,
        },
        stopped,
    ));

    let open = eventually(
        Duration::from_secs(20),
        "an open failover alert",
        || async {
            alerts_of(&cloud, &admin, "kind=failover")
                .await
                .into_iter()
                .find(|a| a.state == AlertState::Open)
        },
    )
    .await;
    assert_eq!(open.severity, Severity::Critical);
    assert!(open.summary.contains("fiber → lte"), "{}", open.summary);

    let resolved = eventually(
        Duration::from_secs(30),
        "the failback resolving it",
        || async {
            alerts_of(&cloud, &admin, "kind=failover")
                .await
                .into_iter()
                .find(|a| a.id == open.id && a.state == AlertState::Resolved)
        },
    )
    .await;
    assert_eq!(resolved.resolved_by.as_deref(), Some("system"));
    let failback = alerts_of(&cloud, &admin, "kind=failback").await;
    assert_eq!(failback.len(), 1);
    let both = alerts_of(&cloud, &admin, "kinds=failover,failback").await;
    assert!(
        both.len() >= 2
            && both
                .iter()
                .all(|a| matches!(a.kind, AlertKind::Failover | AlertKind::Failback)),
        "{both:?}"
    );
    assert_eq!(failback[0].severity, Severity::Info);
    let uplink = alerts_of(&cloud, &admin, "kind=uplink_down").await;
    assert!(
        uplink
            .iter()
            .any(|a| a.subject == "fiber" && a.state == AlertState::Resolved),
        "{uplink:?}"
    );
    assert!(
        alerts_of(&cloud, &admin, "unresolved=true")
            .await
            .is_empty()
    );
    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeating_condition_folds_into_one_alert_that_people_acknowledge_comment_and_resolve() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-ALERT-1",
            "02:00:00:00:0e:01",
        )
        .await;
    let appliance = device.enrolled.appliance_id;
    let raise = [AlertChange::Raise {
        kind: AlertKind::UplinkDown,
        subject: "fiber".into(),
        summary: "Uplink fiber down".into(),
    }];
    for _ in 0..3 {
        let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
            .await
            .expect("tx");
        alerts::apply(&mut tx, demo.tenant_id, appliance, &raise, Utc::now())
            .await
            .expect("apply");
        tx.commit().await.expect("commit");
    }
    let listed = alerts_of(&cloud, &admin, "state=open").await;
    assert_eq!(listed.len(), 1, "one alert for one condition");
    let alert = &listed[0];
    assert_eq!(alert.count, 3);
    assert!(alert.last_seen >= alert.first_seen);

    // A compliance officer of the practice sees it but does not act on it.
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![demo.practices[0].id],
        )
        .await;
    assert_eq!(alerts_of(&cloud, &officer, "").await.len(), 1);
    let refused = cloud
        .api(&officer)
        .acknowledge_alert(alert.id)
        .await
        .expect_err("an officer does not act on alerts");
    assert_eq!(refused.status, 403);

    let api = cloud.api(&admin);
    let acked = api.acknowledge_alert(alert.id).await.expect("alert");
    assert_eq!(acked.state, AlertState::Acknowledged);
    assert_eq!(
        acked.acknowledged_by.as_deref(),
        Some(demo.email.as_str()),
        "people are shown by their address"
    );
    assert!(acked.acknowledged_at.is_some());
    let refused = api
        .acknowledge_alert(alert.id)
        .await
        .expect_err("only an open alert can be acknowledged");
    assert_eq!(
        refused.status, 409,
        "only an open alert can be acknowledged"
    );
    let commented = api
        .comment_alert(
            alert.id,
            &CreateAlertComment {
                body: "ISP ticket 4711 opened".into(),
            },
        )
        .await;
    assert_eq!(
        commented.expect("alert").comments[0].body,
        "ISP ticket 4711 opened"
    );
    let listed = alerts_of(&cloud, &admin, "").await;
    let listed = listed.iter().find(|a| a.id == alert.id).expect("listed");
    assert_eq!(
        listed
            .comments
            .iter()
            .map(|c| (c.author.as_str(), c.body.as_str()))
            .collect::<Vec<_>>(),
        vec![(demo.email.as_str(), "ISP ticket 4711 opened")],
        "the list shows each alert's comments, by their author's address"
    );
    let resolved = api
        .resolve_alert(
            alert.id,
            &ResolveAlert {
                note: Some("line repaired".into()),
            },
        )
        .await
        .expect("alert");
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.resolution.as_deref(), Some("line repaired"));

    // The same condition after resolution is a new alert.
    let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
        .await
        .expect("tx");
    alerts::apply(&mut tx, demo.tenant_id, appliance, &raise, Utc::now())
        .await
        .expect("apply");
    tx.commit().await.expect("commit");
    let open = alerts_of(&cloud, &admin, "unresolved=true").await;
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].id, alert.id);
    assert_eq!(open[0].count, 1);

    let log = api.audit_log(&format!("target_id={}", alert.id)).await;
    let actions: Vec<String> = log
        .expect("audit")
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        vec!["alert.resolve", "alert.comment", "alert.acknowledge"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_silent_past_the_heartbeat_goes_offline_with_an_alert_that_clears_when_it_talks()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-ALERT-2",
            "02:00:00:00:0e:02",
        )
        .await;
    let id = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connects");
    let telemetry = || common::telemetry_payload(id, MessageId(Uuid::new_v4()));
    let topic = DeviceTopic::new(id, Channel::Telemetry).to_string();
    connection
        .client
        .publish(topic.clone(), QoS::AtLeastOnce, false, telemetry())
        .await
        .expect("publish");
    // The test cloud's heartbeat is 10 s; the device stays connected but says nothing.
    let offline = eventually(Duration::from_secs(25), "the offline alert", || async {
        alerts_of(&cloud, &admin, "kind=appliance_offline&state=open")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(offline.severity, Severity::Critical);
    assert!(
        offline.summary.contains("no message for 10 s"),
        "{}",
        offline.summary
    );

    connection
        .client
        .publish(topic, QoS::AtLeastOnce, false, telemetry())
        .await
        .expect("publish");
    eventually(
        Duration::from_secs(10),
        "the offline alert cleared",
        || async {
            alerts_of(&cloud, &admin, "kind=appliance_offline&state=resolved")
                .await
                .into_iter()
                .find(|a| a.id == offline.id)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_lasting_past_the_policys_threshold_raises_on_backup_too_long() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let api = cloud.api(&admin);
    api.set_policy(&serde_json::json!({"telemetry_interval_secs": 1, "on_backup_alert_secs": 600}))
        .await
        .expect("policy set");
    let refused = api
        .set_policy(&serde_json::json!({"on_backup_alert_secs": 5}))
        .await
        .expect_err("thresholds under 10 s are refused");
    assert_eq!(refused.status, 400, "thresholds under 10 s are refused");
    let state = tempfile::tempdir().expect("state");
    let (stop, stopped) = watch::channel(false);
    let outage = Outage {
        start_secs: 3,
        duration_secs: 120,
        kind: OutageKind::Blackhole,
    };
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(
                &cloud.base_url,
                &demo.practices[0].enrollment_token,
                state.path(),
                Some(outage),
            ),
            events_file: None,
            seed: 11,
        },
        stopped,
    ));
    let failover = eventually(Duration::from_secs(20), "the failover alert", || async {
        alerts_of(&cloud, &admin, "kind=failover&state=open")
            .await
            .into_iter()
            .next()
    })
    .await;
    // The sweep, run at times of the test's choosing: seconds into the failover (the background
    // sweep, on the wall clock, is not there yet).
    let into_failover = |secs: i64| failover.first_seen + chrono::Duration::seconds(secs);
    let pool = &cloud.pool;
    let sweep = |secs: i64| async move {
        sweeps::long_backup_sweep(pool, into_failover(secs))
            .await
            .expect("sweep")
    };
    assert_eq!(sweep(599).await, 0, "not before the threshold");
    assert!(
        alerts_of(&cloud, &admin, "kind=on_backup_long")
            .await
            .is_empty()
    );
    assert_eq!(sweep(601).await, 1);
    let long = alerts_of(&cloud, &admin, "kind=on_backup_long&state=open").await;
    let [long] = &long[..] else {
        panic!("one on-backup alert: {long:?}");
    };
    assert_eq!(long.severity, Severity::Warning);
    assert_eq!(long.appliance_id, failover.appliance_id);
    assert!((long.first_seen - failover.first_seen).num_seconds() >= 600);
    assert!(long.summary.contains("for 10 min"), "{}", long.summary);
    assert_eq!(
        sweep(3600).await,
        0,
        "an hour on backup raises nothing more"
    );
    assert_eq!(
        alerts_of(&cloud, &admin, "kind=on_backup_long").await.len(),
        1,
        "raised once per failover"
    );
    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_near_its_end_raises_an_alert_that_renewing_clears() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = &demo.practices[0].enrollment_token;
    let device = cloud
        .enrol_device(token, "SO-CERT-1", "02:00:00:00:11:01")
        .await;
    assert!(
        alerts_of(&cloud, &admin, "kind=certificate_expiring")
            .await
            .is_empty(),
        "a fresh certificate is far from its end"
    );
    sqlx::query("UPDATE appliances SET cert_not_after = now() + interval '10 days' WHERE id = $1")
        .bind(device.enrolled.appliance_id.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("age the certificate");
    let alert = eventually(Duration::from_secs(15), "the expiry alert", || async {
        alerts_of(&cloud, &admin, "kind=certificate_expiring&state=open")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(alert.severity, Severity::Warning);
    assert!(
        alert.summary.contains("enrol the appliance again"),
        "{}",
        alert.summary
    );

    // The appliance renews, proving its current key.
    let id = device.enrolled.appliance_id;
    let (_, csr_pem) = stayopen_appliance::identity::new_key_and_request().expect("csr");
    let signed_at = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now");
    let signature =
        stayopen_appliance::identity::sign_renewal(&device.key_pem, id, signed_at, &csr_pem)
            .expect("signed");
    let renewed = cloud
        .anonymous()
        .renew(&stayopen_shared::api::RenewRequest {
            appliance_id: id,
            csr_pem,
            signed_at,
            signature,
            wireguard_public_key: None,
        })
        .await;
    assert_eq!(renewed.expect("renewed").appliance_id, id);
    let resolved = alerts_of(&cloud, &admin, "kind=certificate_expiring&state=resolved").await;
    assert_eq!(resolved.len(), 1, "renewing replaced the certificate");
    // The sweep, run after the renewal, finds nothing to warn about.
    assert_eq!(
        sweeps::expiring_certificate_sweep(&cloud.pool, Utc::now())
            .await
            .expect("sweep"),
        0
    );
    assert!(
        alerts_of(&cloud, &admin, "kind=certificate_expiring&unresolved=true")
            .await
            .is_empty(),
        "and the new one raises nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_alerts_clear_when_telemetry_shows_the_primary_carrying_traffic_whatever_path_led_back()
 {
    use stayopen_cloud::domain::ingest;
    use stayopen_cloud::infra::device_link::DeviceLink;
    use stayopen_cloud::infra::hearing::Hearing;
    use stayopen_cloud::infra::metrics::Metrics;
    use stayopen_shared::events::{ApplianceEvent, EventKind};
    use stayopen_shared::{ApplianceId, Envelope};

    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let appliance: ApplianceId =
        common::fleet::seed_and_list(&cloud.owner_pool, demo.tenant_id.0, 1, 1).await[0];
    sqlx::query(
        "UPDATE appliances SET last_telemetry = NULL, last_telemetry_at = NULL, on_backup = false,
                               online = true, last_seen = now() WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .execute(&cloud.owner_pool)
    .await
    .expect("a fresh appliance");
    let metrics = std::sync::Arc::new(Metrics::default());
    let (link, mut published) = DeviceLink::detached(metrics.clone());
    tokio::spawn(async move { while published.recv().await.is_some() {} });
    let hearing = Hearing::new(Utc::now(), Duration::ZERO);
    let ingest = |raw: (Vec<u8>, Vec<u8>)| {
        let (pool, link, metrics, hearing) = (&cloud.pool, &link, &metrics, &hearing);
        async move { ingest::ingest_batch(pool, link, metrics, hearing, vec![raw]).await }
    };
    let sample = |at: chrono::DateTime<Utc>, active: &str| {
        (
            DeviceTopic::new(appliance, Channel::Telemetry)
                .to_string()
                .into_bytes(),
            common::telemetry(appliance)
                .sent_at(at)
                .fibre_and_lte(active)
                .encode(),
        )
    };
    let switch = |at: chrono::DateTime<Utc>, from: &str, to: &str, reason: &str| {
        (
            DeviceTopic::new(appliance, Channel::Events)
                .to_string()
                .into_bytes(),
            Envelope::new(
                MessageId(Uuid::new_v4()),
                appliance,
                at,
                ApplianceEvent {
                    kind: EventKind::Failover,
                    uplink: None,
                    from: Some(from.into()),
                    to: Some(to.into()),
                    reason: reason.into(),
                    drill: None,
                },
            )
            .encode(),
        )
    };
    let failover_alerts = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT state, resolution FROM alerts WHERE appliance_id = $1 AND kind = 'failover'
             ORDER BY first_seen",
        )
        .bind(appliance.as_uuid())
        .fetch_all(&cloud.owner_pool)
        .await
        .expect("alerts")
    };
    let critical_now = || async {
        cloud
            .api(&admin)
            .fleet_totals()
            .await
            .expect("totals")
            .critical_alerts
    };

    let t0 = Utc::now() - chrono::Duration::minutes(2);
    ingest(sample(t0, "fiber")).await;
    ingest(switch(
        t0 + chrono::Duration::seconds(10),
        "fiber",
        "lte",
        "fiber stopped answering",
    ))
    .await;
    assert_eq!(failover_alerts().await, vec![("open".to_owned(), None)]);
    assert_eq!(critical_now().await, 1);

    // A sample taken before the failover, arriving after it, is older news: the alert stays.
    ingest(sample(t0 + chrono::Duration::seconds(5), "fiber")).await;
    // So does one on the backup.
    ingest(sample(t0 + chrono::Duration::seconds(20), "lte")).await;
    assert_eq!(failover_alerts().await, vec![("open".to_owned(), None)]);

    // No failback event ever comes; a sample shows the fibre carrying traffic again.
    ingest(sample(t0 + chrono::Duration::seconds(30), "fiber")).await;
    let alerts = failover_alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].0, "resolved");
    let resolution = alerts[0].1.clone().unwrap_or_default();
    assert!(
        resolution.contains("primary uplink fiber"),
        "the resolution names what cleared it: {resolution}"
    );
    assert_eq!(critical_now().await, 0, "critical means broken now");

    // An aborted drill reports its way back as "failover lte → fiber": a return to the primary,
    // which opens nothing.
    ingest(switch(
        t0 + chrono::Duration::seconds(40),
        "lte",
        "fiber",
        "drill aborted",
    ))
    .await;
    let alerts = failover_alerts().await;
    assert!(
        alerts.iter().all(|(state, _)| state == "resolved"),
        "{alerts:?}"
    );
    assert_eq!(critical_now().await, 0);
}
