//! Ingest validates every device message: bad input is counted, logged and kept, and never stops
//! the good messages behind it. The broker admits only devices with a certificate of the device CA
//! and the credentials issued at enrolment.

mod common;

use std::time::Duration;

use common::{eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, MessageId};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_kept_while_valid_ones_behind_them_are_stored_once() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-INGEST-1",
            "02:00:00:00:00:01",
        )
        .await;
    let me = device.enrolled.appliance_id;
    let connection = cloud
        .connect_device(&device)
        .await
        .expect("device connects");
    let my_topic = DeviceTopic::new(me, Channel::Telemetry).to_string();
    let stranger = ApplianceId(Uuid::new_v4());

    let mut wrong_schema: serde_json::Value =
        serde_json::from_slice(&telemetry(me).encode()).expect("json");
    wrong_schema["schema_version"] = 99.into();
    let bad: Vec<Vec<u8>> = vec![
        b"{definitely not json".to_vec(),
        serde_json::to_vec(&wrong_schema).expect("json"),
        // On its own topic, but the envelope speaks for another appliance.
        telemetry(stranger).encode(),
    ];
    for payload in bad {
        connection
            .client
            .publish(my_topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    // The same valid message twice: stored once.
    let valid = MessageId(Uuid::new_v4());
    for _ in 0..2 {
        connection
            .client
            .publish(
                my_topic.clone(),
                QoS::AtLeastOnce,
                false,
                telemetry(me).message(valid).encode(),
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
    for reason in ["malformed", "unsupported_schema", "appliance_mismatch"] {
        assert_eq!(
            cloud
                .counter(&format!(
                    "stayopen_ingest_rejected_total{{reason=\"{reason}\"}}"
                ))
                .await,
            1,
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
    assert_eq!(
        kept,
        vec!["malformed", "unsupported_schema", "appliance_mismatch"]
    );
    assert!(
        !connection.is_closed(),
        "bad payloads on its own topics do not cost a device its connection"
    );
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
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-AUTH-1",
            "02:00:00:00:00:02",
        )
        .await;
    let mqtt = &device.enrolled.mqtt;
    let cert = &device.enrolled.client_cert_pem;
    assert!(
        cloud
            .mqtt_connect(
                cert,
                &device.key_pem,
                &mqtt.username,
                &mqtt.username,
                "wrong-password"
            )
            .await
            .is_err()
    );
    let stranger = Uuid::new_v4().to_string();
    assert!(
        cloud
            .mqtt_connect(cert, &device.key_pem, &stranger, &stranger, &mqtt.password)
            .await
            .is_err()
    );
    assert!(cloud.connect_device(&device).await.is_ok());
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
