//! Issue 12: the broker's own certificate is renewed before it ends, without a restart. rumqttd
//! reads the certificate files for every new connection, so the renewal task only rewrites them
//! (`DeviceCa::broker_files`, as at start); these tests show a running broker then serves the new
//! certificate and devices keep connecting.

mod common;

use std::time::Duration;

use common::{TestCloud, spawn_cloud};
use stayopen_cloud::infra::pki::DeviceCa;

/// The serial (hex) of the certificate the broker serves to a new TLS connection, made as a device
/// presenting `cert_pem`/`key_pem` and trusting the cloud's device CA only.
async fn served_serial(cloud: &TestCloud, cert_pem: &str, key_pem: &str) -> String {
    let ca = std::fs::read_to_string(cloud.tls_dir.path().join("ca.pem")).expect("ca");
    let config = stayopen_shared::mqtt_tls::client_config(&ca, cert_pem, key_pem).expect("tls");
    let addr = cloud.broker;
    tokio::task::spawn_blocking(move || {
        let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).expect("name");
        let mut tls = rustls::ClientConnection::new(config, name).expect("TLS client");
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect to the broker");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).expect("TLS handshake");
        }
        let served = tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the broker's certificate")
            .clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&served).expect("parse");
        hex::encode(cert.raw_serial())
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_serves_a_renewed_certificate_to_new_connections_without_a_restart() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-BROKER-CERT-1",
            "02:00:00:00:12:51",
        )
        .await;
    let (cert, key) = (&device.enrolled.client_cert_pem, &device.key_pem);
    let before = served_serial(&cloud, cert, key).await;
    let open = cloud
        .connect_device(&device)
        .await
        .expect("the device connects");

    // What the renewal task does when the certificate is due.
    let ca = DeviceCa::load_or_create(cloud.tls_dir.path()).expect("the cloud's CA");
    let hosts = vec!["localhost".to_owned(), cloud.broker.ip().to_string()];
    let renewed = ca
        .broker_files(cloud.tls_dir.path(), &hosts)
        .expect("reissue the broker's certificate");
    assert_ne!(renewed.serial_hex, before);

    let after = served_serial(&cloud, cert, key).await;
    assert_eq!(
        after, renewed.serial_hex,
        "a new connection gets the new one"
    );
    assert!(!open.is_closed(), "an open connection keeps its session");
    open.client.disconnect().await.expect("disconnect");
    common::eventually(
        Duration::from_secs(10),
        "the old session closed",
        || async { open.is_closed().then_some(()) },
    )
    .await;
    let again = cloud
        .connect_device(&device)
        .await
        .expect("the device connects under the renewed certificate");
    let published_at = chrono::Utc::now() - chrono::Duration::milliseconds(500);
    again
        .client
        .publish(
            stayopen_shared::DeviceTopic::new(
                device.enrolled.appliance_id,
                stayopen_shared::Channel::Telemetry,
            )
            .to_string(),
            rumqttc::QoS::AtLeastOnce,
            false,
            common::telemetry(device.enrolled.appliance_id).encode(),
        )
        .await
        .expect("publish");
    common::eventually(Duration::from_secs(10), "its telemetry stored", || async {
        let seen: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_seen FROM appliances WHERE id = $1")
                .bind(device.enrolled.appliance_id.as_uuid())
                .fetch_one(&cloud.owner_pool)
                .await
                .expect("appliance");
        seen.filter(|seen| *seen >= published_at)
    })
    .await;
}
