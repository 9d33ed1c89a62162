//! Ingest validates every device message: bad input is counted, logged and kept, and never stops
//! the good messages behind it.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{eventually, spawn_cloud};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use stayopen_shared::api::{EnrollRequest, EnrollResponse, HardwareIdentity};
use stayopen_shared::telemetry::Telemetry;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use uuid::Uuid;

async fn enrol(cloud: &common::TestCloud, token: &str, serial: &str) -> EnrollResponse {
    let (status, body) = cloud
        .post::<_, EnrollResponse>(
            None,
            "/api/v1/enroll",
            &EnrollRequest {
                token: token.into(),
                hardware: HardwareIdentity {
                    serial: serial.into(),
                    mac: "02:00:00:00:00:01".into(),
                    model: "test".into(),
                },
                agent_version: "test".into(),
            },
        )
        .await;
    assert_eq!(status, 200);
    body.expect("enrol body")
}

/// Connects as the device and returns the client once the broker accepted the connection, or the
/// refusal.
async fn connect(
    cloud: &common::TestCloud,
    username: &str,
    password: &str,
) -> Result<AsyncClient, String> {
    let mut options =
        MqttOptions::new(username, cloud.broker.ip().to_string(), cloud.broker.port());
    options
        .set_credentials(username, password)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no answer from the broker".to_string())?;
    connack?;
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    Ok(client)
}

fn telemetry(appliance: ApplianceId, message: MessageId) -> Vec<u8> {
    Envelope::new(
        message,
        appliance,
        Utc::now(),
        Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![],
            policy_version: None,
        },
    )
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_kept_while_valid_ones_behind_them_are_stored_once() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let enrolled = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-INGEST-1").await;
    let me = enrolled.appliance_id;
    let client = connect(&cloud, &enrolled.mqtt.username, &enrolled.mqtt.password)
        .await
        .expect("device connects");
    let my_topic = DeviceTopic::new(me, Channel::Telemetry).to_string();
    let stranger = ApplianceId(Uuid::new_v4());

    let mut wrong_schema: serde_json::Value =
        serde_json::from_slice(&telemetry(me, MessageId(Uuid::new_v4()))).expect("json");
    wrong_schema["schema_version"] = 99.into();
    let bad: Vec<(String, Vec<u8>)> = vec![
        (my_topic.clone(), b"{definitely not json".to_vec()),
        (
            my_topic.clone(),
            serde_json::to_vec(&wrong_schema).expect("json"),
        ),
        (
            my_topic.clone(),
            telemetry(stranger, MessageId(Uuid::new_v4())),
        ),
        (
            DeviceTopic::new(stranger, Channel::Telemetry).to_string(),
            telemetry(stranger, MessageId(Uuid::new_v4())),
        ),
        ("/tenants/not-a-uuid/telemetry".into(), b"{}".to_vec()),
    ];
    for (topic, payload) in bad {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    // The same valid message twice: stored once.
    let valid = MessageId(Uuid::new_v4());
    for _ in 0..2 {
        client
            .publish(
                my_topic.clone(),
                QoS::AtLeastOnce,
                false,
                telemetry(me, valid),
            )
            .await
            .expect("publish");
    }

    eventually(
        Duration::from_secs(15),
        "every message to be processed",
        || async {
            (cloud
                .counter("stayopen_ingest_duplicate_total{reason=\"message_id\"}")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;
    for (reason, expected) in [
        ("malformed", 1),
        ("unsupported_schema", 1),
        ("appliance_mismatch", 1),
        ("unknown_appliance", 1),
        ("bad_topic", 1),
    ] {
        assert_eq!(
            cloud
                .counter(&format!(
                    "stayopen_ingest_rejected_total{{reason=\"{reason}\"}}"
                ))
                .await,
            expected,
            "rejections for {reason}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
        .bind(me.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count");
    assert_eq!(stored, 1);
    let kept: Vec<String> = sqlx::query_scalar("SELECT reason FROM ingest_rejections ORDER BY id")
        .fetch_all(&cloud.owner_pool)
        .await
        .expect("rejections");
    assert_eq!(kept.len(), 5, "{kept:?}");
    let ready = cloud
        .http
        .get(cloud.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "ingest survived bad input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_devices_without_valid_credentials() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let enrolled = enrol(&cloud, &demo.practices[0].enrollment_token, "SO-AUTH-1").await;
    assert!(
        connect(&cloud, &enrolled.mqtt.username, "wrong-password")
            .await
            .is_err()
    );
    assert!(
        connect(&cloud, &Uuid::new_v4().to_string(), &enrolled.mqtt.password)
            .await
            .is_err()
    );
    assert!(
        connect(&cloud, &enrolled.mqtt.username, &enrolled.mqtt.password)
            .await
            .is_ok()
    );
    assert_eq!(
        cloud
            .counter("stayopen_broker_auth_rejected_total{reason=\"bad_password\"}")
            .await,
        1
    );
    assert_eq!(
        cloud
            .counter("stayopen_broker_auth_rejected_total{reason=\"unknown_appliance\"}")
            .await,
        1
    );
}
