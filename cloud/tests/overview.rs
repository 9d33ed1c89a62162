//! What the dashboard reads: practices rolled up by how their appliances are doing (and filtered
//! by it), fleet totals, latency and loss bucketed over a period, a policy preview before saving,
//! and the live-update stream — each only within the caller's scope.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::telemetry::uplink;
use common::{TestCloud, eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use stayopen_cloud::domain::alerts::AlertChange;
use stayopen_shared::alerts::AlertKind;
use stayopen_shared::api::{PracticeStatus, PracticeSummary, Role, StreamEvent};
use stayopen_shared::policy::{EffectivePolicy, PolicyScope};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic};
use uuid::Uuid;

/// Enrols an appliance and has it report `active` over real MQTT; returns its id.
async fn reporting(
    cloud: &TestCloud,
    token: &str,
    serial: &str,
    n: u8,
    active: &str,
) -> ApplianceId {
    let device = cloud
        .enrol_device(token, serial, &format!("02:00:00:00:2e:{n:02x}"))
        .await;
    let id = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connect");
    let payload = telemetry(id).fibre_and_lte(active).encode();
    connection
        .client
        .publish(
            DeviceTopic::new(id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .expect("publish");
    eventually(Duration::from_secs(10), "telemetry stored", || async {
        sqlx::query_scalar::<_, bool>("SELECT online FROM appliances WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_one(&cloud.owner_pool)
            .await
            .ok()
            .filter(|online| *online)
    })
    .await;
    connection.client.disconnect().await.ok();
    id
}

async fn practices(cloud: &TestCloud, token: &str, query: &str) -> Vec<PracticeSummary> {
    cloud
        .api(token)
        .practices(query)
        .await
        .unwrap_or_else(|refused| panic!("{query}: {refused:?}"))
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practices_roll_up_from_their_appliances_states_and_filter_by_it() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let (riverside, hillcrest) = (&demo.practices[0], &demo.practices[1]);
    let on_backup = reporting(&cloud, &riverside.enrollment_token, "SO-ROLL-1", 1, "lte").await;
    reporting(&cloud, &riverside.enrollment_token, "SO-ROLL-2", 2, "fiber").await;
    reporting(&cloud, &hillcrest.enrollment_token, "SO-ROLL-3", 3, "fiber").await;
    let silent = reporting(&cloud, &hillcrest.enrollment_token, "SO-ROLL-4", 4, "fiber").await;
    // The last one went quiet long ago (no last will): it counts as offline.
    sqlx::query("UPDATE appliances SET last_seen = now() - interval '1 hour' WHERE id = $1")
        .bind(silent.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("silence");
    // The heartbeat sweep notices within a second and raises its offline alert.
    eventually(Duration::from_secs(10), "the offline alert", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM alerts WHERE appliance_id = $1 AND kind = 'appliance_offline'",
        )
        .bind(silent.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .ok()
        .filter(|n| *n == 1)
    })
    .await;

    let all = practices(&cloud, &admin, "").await;
    let by_name = |name: &str| {
        all.iter()
            .find(|p| p.name == name)
            .cloned()
            .expect("practice")
    };
    let river = by_name(&riverside.name);
    assert_eq!(
        (
            river.appliances,
            river.online,
            river.on_backup,
            river.offline
        ),
        (2, 2, 1, 0)
    );
    assert_eq!(river.status, PracticeStatus::OnBackup);
    let hill = by_name(&hillcrest.name);
    assert_eq!((hill.appliances, hill.online, hill.offline), (2, 1, 1));
    assert_eq!(
        hill.status,
        PracticeStatus::Degraded,
        "one of two offline is degraded: \"offline\" is every appliance offline"
    );

    let only = |status: &str| {
        let cloud = &cloud;
        let admin = admin.clone();
        let status = status.to_owned();
        async move {
            practices(cloud, &admin, &format!("status={status}"))
                .await
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(only("on_backup").await, vec![riverside.name.clone()]);
    assert_eq!(only("degraded").await, vec![hillcrest.name.clone()]);
    assert!(only("offline").await.is_empty());
    assert!(only("primary").await.is_empty());
    let api = cloud.api(&admin);
    let refused = api.practices("status=sideways").await.expect_err("refused");
    assert_eq!(refused.status, 400);

    let backups = api.appliances("on_backup=true").await.expect("page");
    let backups: Vec<ApplianceId> = backups.items.iter().map(|a| a.id).collect();
    assert_eq!(backups, vec![on_backup]);

    cloud
        .raise_alert(
            demo.tenant_id,
            on_backup,
            AlertChange::Raise {
                kind: AlertKind::Failover,
                subject: String::new(),
                summary: "Failover fiber to lte".into(),
            },
        )
        .await;
    let totals = api.fleet_totals().await.expect("totals");
    assert_eq!(
        (
            totals.practices,
            totals.appliances,
            totals.online,
            totals.on_backup,
            totals.offline
        ),
        (demo.practices.len() as u32, 4, 3, 1, 1)
    );
    assert_eq!(
        (
            totals.practices_offline,
            totals.practices_on_backup,
            totals.practices_degraded
        ),
        (0, 1, 1)
    );
    assert_eq!(
        (totals.open_alerts, totals.critical_alerts),
        (2, 2),
        "the silent appliance's offline alert and the failover"
    );

    // A compliance officer of Riverside counts Riverside only.
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![riverside.id],
        )
        .await;
    let mine = cloud.api(&officer).fleet_totals().await.expect("totals");
    assert_eq!((mine.practices, mine.appliances, mine.offline), (1, 2, 0));
    assert_eq!(
        practices(&cloud, &officer, "status=degraded").await.len(),
        0,
        "Hillcrest is not theirs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_loss_come_bucketed_over_the_period_with_gaps_where_nothing_was_heard() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let appliance = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-CHART-1",
            "02:00:00:00:2f:01",
        )
        .await
        .enrolled
        .appliance_id;
    // Two samples in one minute five minutes ago, one ten minutes ago, nothing in between.
    let minute = |ago: i64| {
        let now = Utc::now().timestamp();
        DateTime::from_timestamp(now - now.rem_euclid(60) - ago * 60 + 5, 0).expect("time")
    };
    for (at, rtt, loss) in [
        (minute(5), 10.0, 0.0),
        (minute(5) + chrono::Duration::seconds(20), 30.0, 10.0),
        (minute(10), 50.0, 0.0),
    ] {
        let body = telemetry(appliance).uplinks(vec![uplink("fiber", 0, Some(rtt), loss)]);
        sqlx::query(
            "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, body)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Uuid::new_v4())
        .bind(appliance.as_uuid())
        .bind(demo.tenant_id.as_uuid())
        .bind(at)
        .bind(serde_json::to_value(body.body()).expect("json"))
        .execute(&cloud.owner_pool)
        .await
        .expect("telemetry");
    }
    let metrics = admin
        .appliance_metrics(appliance, "hour")
        .await
        .expect("metrics");
    assert_eq!(metrics.bucket_secs, 60);
    assert_eq!(metrics.series.len(), 1);
    let fiber = &metrics.series[0];
    assert_eq!(fiber.uplink, "fiber");
    assert_eq!(fiber.points.len(), 60, "one point per minute, heard or not");
    let at = |t: DateTime<Utc>| {
        fiber
            .points
            .iter()
            .find(|p| p.at <= t && t < p.at + chrono::Duration::seconds(60))
            .expect("bucket")
    };
    assert_eq!(at(minute(5)).rtt_ms, Some(20.0), "the mean of the bucket");
    assert_eq!(at(minute(5)).loss_pct, Some(5.0));
    assert_eq!(at(minute(10)).rtt_ms, Some(50.0));
    assert_eq!(at(minute(7)).rtt_ms, None, "a gap stays a gap");
    let refused = admin
        .appliance_metrics(appliance, "year")
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 400);
    // A month comes from the hourly roll-up, which counts what arrived up to a minute ago.
    for (days_ago, rtt) in [(3, 40.0), (3, 60.0), (12, 80.0)] {
        let body = telemetry(appliance).uplinks(vec![uplink("fiber", 0, Some(rtt), 0.0)]);
        sqlx::query(
            "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, received_at, body)
             VALUES ($1, $2, $3, now() - make_interval(days => $4), now() - interval '2 minutes', $5)",
        )
        .bind(Uuid::new_v4())
        .bind(appliance.as_uuid())
        .bind(demo.tenant_id.as_uuid())
        .bind(days_ago)
        .bind(serde_json::to_value(body.body()).expect("json"))
        .execute(&cloud.owner_pool)
        .await
        .expect("telemetry");
    }
    // These rows are stamped as received two minutes ago, before the cloud's own roll-up ran at
    // start: take its watermark back so the next run sees them.
    sqlx::query("UPDATE telemetry_rollup_watermark SET received_before = '-infinity'")
        .execute(&cloud.owner_pool)
        .await
        .expect("rewind");
    stayopen_cloud::infra::db::roll_up_telemetry(&cloud.pool)
        .await
        .expect("roll-up");
    assert_eq!(
        stayopen_cloud::infra::db::roll_up_telemetry(&cloud.pool)
            .await
            .expect("again"),
        0,
        "each row is counted once"
    );
    let month = admin
        .appliance_metrics(appliance, "month")
        .await
        .expect("month");
    assert_eq!(
        month.series[0].points.len(),
        120,
        "30 days of 6-hour points"
    );
    let heard: Vec<f64> = month.series[0]
        .points
        .iter()
        .filter_map(|p| p.rtt_ms)
        .collect();
    assert_eq!(
        heard,
        vec![80.0, 50.0],
        "oldest first, each bucket its mean"
    );
    let day = admin
        .appliance_metrics(appliance, "day")
        .await
        .expect("day");
    assert_eq!(day.series[0].points.len(), 96);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_preview_shows_the_effective_result_and_names_a_bad_setting_without_saving() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let api = cloud.api(&admin);
    let practice = demo.practices[0].id;
    api.set_policy(&serde_json::json!({"telemetry_interval_secs": 30}))
        .await
        .expect("policy");
    let (status, preview) = api
        .post::<_, EffectivePolicy>(
            "/api/v1/policy/preview",
            &serde_json::json!({"scope": "practice", "practice_id": practice,
                                "overrides": {"failback_clean_period_secs": 120}}),
        )
        .await;
    assert_eq!(status, 200);
    let preview = preview.expect("preview");
    assert_eq!(preview.policy.failback_clean_period_secs, 120);
    assert_eq!(preview.policy.telemetry_interval_secs, 30);
    assert_eq!(
        preview.sources["failback_clean_period_secs"],
        PolicyScope::Practice
    );
    assert_eq!(preview.sources["telemetry_interval_secs"], PolicyScope::Msp);
    assert_eq!(preview.sources["recovery_ms"], PolicyScope::Default);
    let (status, body) = api
        .post::<_, serde_json::Value>(
            "/api/v1/policy/preview",
            &serde_json::json!({"scope": "practice", "practice_id": practice,
                                "overrides": {"detection_silence_ms": 50}}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body.expect("error")
            .to_string()
            .contains("detection_silence_ms")
    );
    let layer = api.practice_policy(practice).await.expect("layer");
    assert_eq!(layer.revision, 0, "nothing was saved");
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    let (status, _) = cloud
        .api(&officer)
        .post::<_, serde_json::Value>(
            "/api/v1/policy/preview",
            &serde_json::json!({"scope": "msp", "overrides": {}}),
        )
        .await;
    assert_eq!(status, 403);
}

/// Reads Server-Sent Events from `response` until `want` events arrived or `timeout` passed.
async fn read_events(
    response: &mut reqwest::Response,
    want: usize,
    timeout: Duration,
) -> Vec<StreamEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut text = String::new();
    loop {
        let events: Vec<StreamEvent> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|json| serde_json::from_str(json).expect("event"))
            .collect();
        if events.len() >= want {
            return events;
        }
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return events,
        }
    }
}

async fn open_stream(cloud: &TestCloud, token: &str) -> reqwest::Response {
    let ticket = cloud
        .api(token)
        .stream_ticket()
        .await
        .expect("a stream ticket")
        .ticket;
    let response = cloud
        .http
        .get(format!("{}/api/v1/stream?ticket={ticket}", cloud.base_url))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_tells_each_dashboard_within_two_seconds_about_what_it_may_see_only() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let (riverside, hillcrest) = (&demo.practices[0], &demo.practices[1]);
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![riverside.id],
        )
        .await;
    let (other_tenant, other_admin, other_practice) = cloud.other_msp("other.example").await;
    let _ = other_practice;
    let no_token = cloud
        .http
        .get(format!("{}/api/v1/stream", cloud.base_url))
        .send()
        .await
        .expect("stream");
    assert_eq!(no_token.status(), 401);

    let mut admin_stream = open_stream(&cloud, &admin).await;
    let mut officer_stream = open_stream(&cloud, &officer).await;
    let mut other_stream = open_stream(&cloud, &other_admin).await;

    let hill = reporting(&cloud, &hillcrest.enrollment_token, "SO-LIVE-1", 1, "fiber").await;
    let river = reporting(&cloud, &riverside.enrollment_token, "SO-LIVE-2", 2, "fiber").await;
    let raised = tokio::time::Instant::now();
    let alert = cloud
        .raise_alert(
            demo.tenant_id,
            river,
            AlertChange::Raise {
                kind: AlertKind::Failover,
                subject: String::new(),
                summary: "Failover fiber to lte".into(),
            },
        )
        .await;
    let seen = read_events(&mut admin_stream, 3, Duration::from_secs(5)).await;
    assert!(
        raised.elapsed() < Duration::from_secs(2),
        "the alert reached the dashboard in {:?}",
        raised.elapsed()
    );
    let has = |events: &[StreamEvent], topic: &str, id: Uuid| {
        events.iter().any(|e| e.topic == topic && e.id == id)
    };
    assert!(has(&seen, "appliance", hill.0), "{seen:?}");
    assert!(has(&seen, "appliance", river.0), "{seen:?}");
    assert!(has(&seen, "alert", alert), "{seen:?}");

    let theirs = read_events(&mut officer_stream, 2, Duration::from_secs(3)).await;
    assert!(
        has(&theirs, "appliance", river.0) && has(&theirs, "alert", alert),
        "{theirs:?}"
    );
    assert!(
        theirs.iter().all(|e| e.practice_id == riverside.id),
        "nothing of Hillcrest: {theirs:?}"
    );
    let other = read_events(&mut other_stream, 1, Duration::from_secs(2)).await;
    assert!(other.is_empty(), "another MSP hears nothing: {other:?}");
    let _ = other_tenant;
}
