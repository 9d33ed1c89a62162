//! Device identity: a device holds a certificate of the cloud's device CA whose Subject O confines
//! it to its own topic prefix. It cannot publish or subscribe outside that prefix, a wildcard
//! subscription shows it nothing of other devices, a certificate from another CA is refused, and a
//! revoked appliance is disconnected and refused from then on.

mod common;

use std::time::Duration;

use common::{Device, DeviceConnection, TestCloud, eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use stayopen_cloud::infra::pki::DeviceCa;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic};

async fn two_devices(cloud: &TestCloud) -> (Device, Device) {
    let demo = cloud.seed_demo().await;
    let token = &demo.practices[0].enrollment_token;
    let a = cloud
        .enrol_device(token, "SO-ID-A", "02:00:00:00:0a:01")
        .await;
    let b = cloud
        .enrol_device(token, "SO-ID-B", "02:00:00:00:0b:01")
        .await;
    (a, b)
}

async fn stored_telemetry(cloud: &TestCloud, appliance: ApplianceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count")
}

async fn closed_soon(connection: &DeviceConnection) -> bool {
    for _ in 0..50 {
        if connection.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_can_neither_publish_nor_subscribe_outside_its_own_prefix() {
    let cloud = spawn_cloud().await;
    let (a, b) = two_devices(&cloud).await;
    let (a_id, b_id) = (a.enrolled.appliance_id, b.enrolled.appliance_id);
    assert_eq!(a.enrolled.topic_prefix, DeviceTopic::prefix(a_id));

    // Publishing as B: the broker closes A's connection and nothing reaches ingest.
    let a_conn = cloud.connect_device(&a).await.expect("A connects");
    a_conn
        .client
        .publish(
            DeviceTopic::new(b_id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            telemetry(b_id).encode(),
        )
        .await
        .expect("queued");
    assert!(
        closed_soon(&a_conn).await,
        "the broker drops a device publishing outside its prefix"
    );

    // Subscribing to B's commands, or to everything: refused the same way.
    // B's connections are kept until its messages are stored (a dropped handle stops its client).
    let mut b_connections = Vec::new();
    for filter in [
        DeviceTopic::new(b_id, Channel::Commands).to_string(),
        "#".to_owned(),
        "/tenants/+/policy".to_owned(),
    ] {
        let mut conn = cloud.connect_device(&a).await.expect("A connects");
        conn.client
            .subscribe(filter.clone(), QoS::AtLeastOnce)
            .await
            .expect("queued");
        // B is busy meanwhile: none of it may reach A.
        let b_conn = cloud.connect_device(&b).await.expect("B connects");
        b_conn
            .client
            .publish(
                DeviceTopic::new(b_id, Channel::Telemetry).to_string(),
                QoS::AtLeastOnce,
                false,
                telemetry(b_id).encode(),
            )
            .await
            .expect("B publishes");
        assert!(
            closed_soon(&conn).await,
            "subscribing to {filter} outside the prefix is refused"
        );
        b_connections.push(b_conn);
        while let Ok((topic, _)) = conn.received.try_recv() {
            assert!(
                topic.starts_with(&DeviceTopic::prefix(a_id)),
                "A received {topic} of another device"
            );
        }
    }
    eventually(
        Duration::from_secs(10),
        "B's own telemetry stored",
        || async { (stored_telemetry(&cloud, b_id).await >= 3).then_some(()) },
    )
    .await;
    drop(b_connections);
    assert_eq!(
        stored_telemetry(&cloud, b_id).await,
        3,
        "only B's own three messages"
    );

    // Its own channels work (a wildcard even within its prefix is refused: issue 15's topic
    // allow-list, cloud/tests/security_broker.rs).
    let own = cloud.connect_device(&a).await.expect("A connects");
    own.client
        .subscribe(
            DeviceTopic::new(a_id, Channel::Commands).to_string(),
            QoS::AtLeastOnce,
        )
        .await
        .expect("subscribe");
    own.client
        .publish(
            DeviceTopic::new(a_id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            telemetry(a_id).encode(),
        )
        .await
        .expect("publish");
    eventually(Duration::from_secs(10), "A's telemetry stored", || async {
        (stored_telemetry(&cloud, a_id).await == 1).then_some(())
    })
    .await;
    assert!(!own.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_is_refused_even_with_the_right_password() {
    let cloud = spawn_cloud().await;
    let (a, _) = two_devices(&cloud).await;
    let elsewhere = tempfile::tempdir().expect("dir");
    let foreign_ca = DeviceCa::load_or_create(elsewhere.path()).expect("foreign CA");
    let (key, csr) = stayopen_appliance::identity::new_key_and_request().expect("csr");
    let forged = foreign_ca
        .sign_device(&csr, a.enrolled.appliance_id, 30)
        .expect("signed elsewhere");
    let mqtt = &a.enrolled.mqtt;
    let refused = cloud
        .mqtt_connect(
            &forged.cert_pem,
            &key,
            &mqtt.username,
            &mqtt.username,
            &mqtt.password,
        )
        .await;
    assert!(
        refused.is_err(),
        "a certificate the device CA did not sign is refused"
    );
    assert!(
        cloud.connect_device(&a).await.is_ok(),
        "the genuine one works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_appliance_disconnects_it_and_refuses_it_from_then_on() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-REVOKE",
            "02:00:00:00:0c:01",
        )
        .await;
    let id = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connects");

    cloud
        .api(&admin)
        .revoke_appliance(id)
        .await
        .expect("revoked");
    assert!(
        closed_soon(&connection).await,
        "the revoked appliance's session is closed"
    );
    assert!(
        cloud.connect_device(&device).await.is_err(),
        "its certificate and credentials are refused"
    );
    assert_eq!(
        cloud
            .counter("stayopen_broker_auth_rejected_total{reason=\"revoked_appliance\"}")
            .await,
        1
    );
    let log = cloud
        .api(&admin)
        .audit_log("action=appliance.revoke")
        .await
        .expect("audit");
    assert_eq!(log.items.len(), 1);
}
