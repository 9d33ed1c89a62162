//! Ingest against a hostile device (issue 15): values out of range are refused and counted by
//! reason, a clock far ahead cannot freeze presence, the active uplink or alert conditions, and
//! rows of 1e308 (refused by ingest today, or written around it) cannot stop the hourly roll-up
//! that every tenant's month charts read. Real cloud, real broker, real PostgreSQL.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::telemetry::uplink;
use common::{Device, DeviceConnection, TestCloud, eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::Presence;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use uuid::Uuid;

async fn publish(connection: &DeviceConnection, topic: String, payload: Vec<u8>) {
    connection
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish");
}

fn topic(appliance: ApplianceId, channel: Channel) -> String {
    DeviceTopic::new(appliance, channel).to_string()
}

async fn enrolled_and_connected(
    cloud: &TestCloud,
    token: &str,
    serial: &str,
) -> (Device, DeviceConnection) {
    let device = cloud.enrol_device(token, serial, "02:00:00:00:15:01").await;
    let connection = cloud.connect_device(&device).await.expect("connects");
    (device, connection)
}

async fn processed(cloud: &TestCloud) -> u64 {
    let metrics = cloud.metrics().await;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("stayopen_ingest_accepted_total")
                || l.starts_with("stayopen_ingest_rejected_total")
                || l.starts_with("stayopen_ingest_duplicate_total")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until ingest has processed `count` messages in all (accepted, rejected or duplicate).
async fn processed_at_least(cloud: &TestCloud, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while processed(cloud).await < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest processed {} of {count} messages: {}",
            processed(cloud).await,
            cloud.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_out_of_range_are_refused_and_counted_by_reason_while_the_valid_message_behind_them_is_stored()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (device, connection) =
        enrolled_and_connected(&cloud, &demo.practices[0].enrollment_token, "SO-VALUES-1").await;
    let me = device.enrolled.appliance_id;
    let telemetry_topic = topic(me, Channel::Telemetry);

    let hostile = [
        // Two uplinks at 1e308 ms: the sum that overflowed the hourly roll-up.
        telemetry(me).uplinks(vec![
            uplink("fiber", 0, Some(1e308), 0.0),
            uplink("lte", 1, Some(1e308), 0.0),
        ]),
        telemetry(me).uplinks(vec![uplink("fiber", 0, Some(-5.0), 0.0)]),
        telemetry(me).uplinks(vec![uplink("fiber", 0, Some(10.0), 250.0)]),
        telemetry(me).uplinks(vec![uplink(&"x".repeat(200), 0, Some(10.0), 0.0)]),
        telemetry(me).uplinks(
            (0..50)
                .map(|i| uplink(&format!("u{i}"), 0, Some(10.0), 0.0))
                .collect(),
        ),
        telemetry(me).uplinks(vec![
            uplink("fiber", 0, Some(10.0), 0.0),
            uplink("fiber", 1, Some(10.0), 0.0),
        ]),
    ];
    let expected = [
        ("value_out_of_range", 3),
        ("bad_uplink_name", 1),
        ("too_many_uplinks", 1),
        ("duplicate_uplink", 1),
        ("string_too_long", 1),
    ];
    for message in hostile {
        publish(&connection, telemetry_topic.clone(), message.encode()).await;
    }
    let long_reason = Envelope::new(
        MessageId(Uuid::new_v4()),
        me,
        Utc::now(),
        ApplianceEvent {
            kind: EventKind::UplinkDown,
            uplink: Some("fiber".into()),
            from: None,
            to: None,
            reason: "r".repeat(2_000),
            drill: None,
        },
    )
    .encode();
    publish(&connection, topic(me, Channel::Events), long_reason).await;
    let valid = telemetry(me).fibre_and_lte("fiber");
    publish(&connection, telemetry_topic.clone(), valid.encode()).await;
    processed_at_least(&cloud, 8).await;

    for (reason, count) in expected {
        assert_eq!(
            cloud
                .counter(&format!(
                    "stayopen_ingest_rejected_total{{reason=\"{reason}\"}}"
                ))
                .await,
            count,
            "rejections for {reason}"
        );
    }
    let stored: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT body FROM telemetry WHERE appliance_id = $1")
            .bind(me.as_uuid())
            .fetch_all(&cloud.owner_pool)
            .await
            .expect("telemetry");
    assert_eq!(stored.len(), 1, "only the valid message is stored");
    assert_eq!(stored[0]["uplinks"][1]["rtt_ms"], 48.0);
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM appliance_events WHERE appliance_id = $1")
            .bind(me.as_uuid())
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("events");
    assert_eq!(
        events, 0,
        "the event with a 2,000-character reason is refused"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_rejections")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("rejections");
    assert_eq!(kept, 7, "every refused message is kept for the operator");
    assert!(
        !connection.is_closed(),
        "bad values do not cost the device its connection"
    );
}

/// Telemetry of `appliance` at `at`: the fibre slow (900 ms, degraded past 250 ms) and active.
fn slow_fibre(appliance: ApplianceId, at: chrono::DateTime<Utc>) -> Vec<u8> {
    telemetry(appliance)
        .sent_at(at)
        .uplinks(vec![
            uplink("fiber", 0, Some(900.0), 0.0),
            uplink("lte", 1, Some(40.0), 0.0),
        ])
        .encode()
}

async fn appliance_row(cloud: &TestCloud, appliance: ApplianceId) -> (bool, Option<String>) {
    sqlx::query_as("SELECT online, active_uplink FROM appliances WHERE id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("appliance")
}

async fn fibre_degraded_alert(cloud: &TestCloud, appliance: ApplianceId) -> Option<String> {
    sqlx::query_scalar(
        "SELECT state FROM alerts
         WHERE appliance_id = $1 AND kind = 'uplink_degraded' AND subject = 'fiber'
         ORDER BY first_seen DESC LIMIT 1",
    )
    .bind(appliance.as_uuid())
    .fetch_optional(&cloud.owner_pool)
    .await
    .expect("alerts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_message_stamped_a_year_ahead_normal_messages_still_move_presence_the_active_uplink_and_an_alert_condition()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (device, connection) =
        enrolled_and_connected(&cloud, &demo.practices[0].enrollment_token, "SO-CLOCK-1").await;
    let me = device.enrolled.appliance_id;
    let year = chrono::Duration::days(365);

    // The fibre has been slow since 200 s ago (the default policy alerts after 120 s) …
    publish(
        &connection,
        topic(me, Channel::Telemetry),
        slow_fibre(me, Utc::now() - chrono::Duration::seconds(200)),
    )
    .await;
    processed_at_least(&cloud, 1).await;
    // … and the device's clock jumps a year ahead.
    publish(
        &connection,
        topic(me, Channel::Telemetry),
        slow_fibre(me, Utc::now() + year),
    )
    .await;
    processed_at_least(&cloud, 2).await;
    assert_eq!(
        cloud
            .counter("stayopen_ingest_corrected_total{reason=\"sent_at_future\"}")
            .await,
        1,
        "the stamp from the future is counted"
    );
    let stamped: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT max(sent_at) FROM telemetry WHERE appliance_id = $1")
            .bind(me.as_uuid())
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("sent_at");
    assert!(
        stamped <= Utc::now(),
        "stored at the cloud's time, not a year ahead: {stamped}"
    );
    eventually(
        Duration::from_secs(10),
        "the degraded fibre alert fired",
        || async {
            (fibre_degraded_alert(&cloud, me).await.as_deref() == Some("open")).then_some(())
        },
    )
    .await;

    // Back to normal time: traffic moves to LTE, the fibre is clean again (down, not probing).
    publish(
        &connection,
        topic(me, Channel::Telemetry),
        telemetry(me).fibre_and_lte("lte").encode(),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the active uplink to follow and the alert to clear",
        || async {
            let (_, active) = appliance_row(&cloud, me).await;
            let alert = fibre_degraded_alert(&cloud, me).await;
            (active.as_deref() == Some("lte") && alert.as_deref() == Some("resolved")).then_some(())
        },
    )
    .await;

    // Presence: offline stamped a year ahead, then online now.
    let presence = |online: bool, at: chrono::DateTime<Utc>| {
        Envelope::new(
            MessageId(Uuid::new_v4()),
            me,
            at,
            Presence {
                online,
                agent_version: "test".into(),
            },
        )
        .encode()
    };
    publish(
        &connection,
        topic(me, Channel::Status),
        presence(false, Utc::now() + year),
    )
    .await;
    eventually(Duration::from_secs(10), "offline applied", || async {
        (!appliance_row(&cloud, me).await.0).then_some(())
    })
    .await;
    publish(
        &connection,
        topic(me, Channel::Status),
        presence(true, Utc::now()),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "online again after a normal presence",
        || async { appliance_row(&cloud, me).await.0.then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_1e308_and_a_device_publishing_them_do_not_stop_the_roll_up_and_another_tenants_month_chart_stays_right()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let (a_device, a_connection) =
        enrolled_and_connected(&cloud, &demo.practices[0].enrollment_token, "SO-ROLLUP-A").await;
    let a = a_device.enrolled.appliance_id;
    let (_, b_admin_token, b_practice) = cloud.other_msp("rollup-b.example").await;
    let b_admin = cloud.api(&b_admin_token);
    let b_enrolment = common::enrolment_token(&cloud, &b_admin_token, b_practice).await;
    let b = cloud
        .enrol_device(&b_enrolment, "SO-ROLLUP-B", "02:00:00:00:15:0b")
        .await
        .enrolled
        .appliance_id;

    // The device publishes two uplinks at 1e308 ms: refused, counted.
    publish(
        &a_connection,
        topic(a, Channel::Telemetry),
        telemetry(a)
            .uplinks(vec![
                uplink("fiber", 0, Some(1e308), 0.0),
                uplink("lte", 1, Some(1e308), 0.0),
            ])
            .encode(),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the 1e308 message refused",
        || async {
            (cloud
                .counter("stayopen_ingest_rejected_total{reason=\"value_out_of_range\"}")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;

    // Rows written around ingest, as an older cloud stored them: A's two samples at 1e308 on each
    // uplink (their sum overflows a double) and one sound one; B's two sound samples. The
    // watermark is moved back so this run of the roll-up takes them.
    let sent_at = Utc::now() - chrono::Duration::minutes(5);
    let mut tx = cloud.owner_pool.begin().await.expect("tx");
    sqlx::query(
        "UPDATE telemetry_rollup_watermark SET received_before = now() - interval '10 minutes'",
    )
    .execute(&mut *tx)
    .await
    .expect("watermark");
    let rows: [(ApplianceId, serde_json::Value); 5] = [
        (
            a,
            serde_json::json!([{"name": "fiber", "rtt_ms": 1e308, "loss_pct": 0.0},
                                {"name": "lte", "rtt_ms": 1e308, "loss_pct": 0.0}]),
        ),
        (
            a,
            serde_json::json!([{"name": "fiber", "rtt_ms": 1e308, "loss_pct": 0.0},
                                {"name": "lte", "rtt_ms": 1e308, "loss_pct": 1e308}]),
        ),
        (
            a,
            serde_json::json!([{"name": "fiber", "rtt_ms": 10.0, "loss_pct": 0.0}]),
        ),
        (
            b,
            serde_json::json!([{"name": "fiber", "rtt_ms": 20.0, "loss_pct": 0.0}]),
        ),
        (
            b,
            serde_json::json!([{"name": "fiber", "rtt_ms": 30.0, "loss_pct": 10.0}]),
        ),
    ];
    for (appliance, uplinks) in rows {
        sqlx::query(
            "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, received_at, body)
             SELECT $1, id, tenant_id, $2, now() - interval '5 minutes', $3
             FROM appliances WHERE id = $4",
        )
        .bind(Uuid::new_v4())
        .bind(sent_at)
        .bind(serde_json::json!({"active_uplink": "fiber", "uplinks": uplinks}))
        .bind(appliance.as_uuid())
        .execute(&mut *tx)
        .await
        .expect("insert around ingest");
    }
    tx.commit().await.expect("commit");

    stayopen_cloud::infra::db::roll_up_telemetry(&cloud.pool)
        .await
        .expect("the roll-up runs");
    let watermark: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT received_before FROM telemetry_rollup_watermark")
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("watermark");
    assert!(
        watermark > Utc::now() - chrono::Duration::minutes(2),
        "the watermark advanced past the rows: {watermark}"
    );
    let hourly = |appliance: ApplianceId| {
        let pool = cloud.owner_pool.clone();
        async move {
            let rows: Vec<(String, i32, f64, i32, f64)> = sqlx::query_as(
                "SELECT uplink, samples, rtt_sum, rtt_samples, loss_sum FROM telemetry_hourly
                 WHERE appliance_id = $1 ORDER BY uplink",
            )
            .bind(appliance.as_uuid())
            .fetch_all(&pool)
            .await
            .expect("hourly");
            rows
        }
    };
    assert_eq!(
        hourly(b).await,
        vec![("fiber".to_owned(), 2, 50.0, 2, 10.0)],
        "the other tenant's hour is rolled up in full"
    );
    assert_eq!(
        hourly(a).await,
        vec![("fiber".to_owned(), 1, 10.0, 1, 0.0)],
        "of the hostile device's hour, only the sound sample"
    );

    // The other tenant's month chart is right; the hostile tenant's hour chart still answers.
    let month = b_admin
        .appliance_metrics(b, "month")
        .await
        .expect("month chart");
    let fibre = month
        .series
        .iter()
        .find(|s| s.uplink == "fiber")
        .expect("fibre series");
    let points: Vec<(Option<f64>, Option<f64>)> = fibre
        .points
        .iter()
        .filter(|p| p.rtt_ms.is_some())
        .map(|p| (p.rtt_ms, p.loss_pct))
        .collect();
    assert_eq!(points, vec![(Some(25.0), Some(5.0))]);
    let a_admin = cloud.api_as(&demo.email, &demo.password).await;
    let hour = a_admin
        .appliance_metrics(a, "hour")
        .await
        .expect("the hour chart of the device with 1e308 rows answers");
    let a_fibre: Vec<f64> = hour
        .series
        .iter()
        .filter(|s| s.uplink == "fiber")
        .flat_map(|s| s.points.iter().filter_map(|p| p.rtt_ms))
        .collect();
    assert_eq!(
        a_fibre,
        vec![10.0],
        "the 1e308 samples are left out of the chart"
    );
}

/// An LTE uplink of `appliance` whose modem reports `report`.
fn with_modem(
    appliance: ApplianceId,
    report: stayopen_shared::cellular::CellularReport,
) -> common::telemetry::TelemetryBuilder {
    let mut lte = uplink("lte", 1, Some(45.0), 0.0);
    lte.cellular = Some(report);
    telemetry(appliance).uplinks(vec![uplink("fiber", 0, Some(10.0), 0.0), lte])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_modem_figures_are_refused_and_counted_and_the_last_plausible_report_stays_shown()
 {
    use stayopen_shared::cellular::{CellularReport, ModemStatus};

    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let (device, connection) =
        enrolled_and_connected(&cloud, &demo.practices[0].enrollment_token, "SO-MODEM-1").await;
    let me = device.enrolled.appliance_id;
    let telemetry_topic = topic(me, Channel::Telemetry);
    let plausible = CellularReport {
        operator_name: Some("Example Mobile".into()),
        rsrp_dbm: Some(-97.0),
        sinr_db: Some(4.0),
        sim_rx_bytes: Some(10_000_000),
        ..CellularReport::status_only(ModemStatus::Connected)
    };
    publish(
        &connection,
        telemetry_topic.clone(),
        with_modem(me, plausible.clone()).encode(),
    )
    .await;
    processed_at_least(&cloud, 1).await;
    let before = cloud
        .counter("stayopen_ingest_rejected_total{reason=\"value_out_of_range\"}")
        .await;

    // A compromised or broken appliance: a signal stronger than a transmitter next to the
    // antenna, a counter that overflows the roll-up's bigint, a terminal escape in the operator
    // name, and a flood of "problems".
    let hostile = [
        CellularReport {
            rsrp_dbm: Some(30.0),
            ..plausible.clone()
        },
        CellularReport {
            sinr_db: Some(-1e300),
            ..plausible.clone()
        },
        CellularReport {
            sim_rx_bytes: Some(u64::MAX),
            ..plausible.clone()
        },
        CellularReport {
            operator_name: Some("\u{1b}]0;pwned\u{7}Example".into()),
            ..plausible.clone()
        },
        CellularReport {
            problems: vec!["x".into(); 100],
            ..plausible.clone()
        },
    ];
    let sent = hostile.len() as u64;
    for report in hostile {
        publish(
            &connection,
            telemetry_topic.clone(),
            with_modem(me, report).encode(),
        )
        .await;
    }
    processed_at_least(&cloud, 1 + sent).await;
    assert_eq!(
        cloud
            .counter("stayopen_ingest_rejected_total{reason=\"value_out_of_range\"}")
            .await
            - before,
        sent,
        "every impossible report is refused and counted"
    );
    let shown = cloud
        .api(&admin)
        .appliance(me)
        .await
        .expect("the appliance")
        .uplinks
        .into_iter()
        .find_map(|u| u.cellular);
    assert_eq!(
        shown,
        Some(plausible),
        "the page keeps the last plausible report"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
        .bind(me.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("telemetry");
    assert_eq!(stored, 1);
    assert!(!connection.is_closed());
}
