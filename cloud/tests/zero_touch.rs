//! Zero-touch enrolment: an MSP registers a box's serial number and factory key for a practice;
//! the box enrols with them — nothing typed on site — into the MSP that holds its factory key,
//! registering its WireGuard key for the tunnel as it does.

mod common;

use std::time::Duration;

use common::{appliance_config, eventually, spawn_cloud};
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_shared::api::{ClaimEnrollRequest, ClaimSerial, HardwareIdentity};
use tokio::sync::watch;

const FACTORY_KEY: &str = "fk_5b0d7e9c2a4f41c38e6a0b1d9c7f3e2a5b8d0c6e4f2a1b3c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_serial_enrols_with_its_factory_key_into_its_practice() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let hillcrest = demo.practices[1].id;
    let claim = ClaimSerial {
        serial: "SO-TEST-0001".into(),
        factory_key: FACTORY_KEY.into(),
        site_id: None,
    };
    admin
        .claim_serial(hillcrest, &claim)
        .await
        .expect("serial claimed");

    // Another MSP may register the same serial (a refusal would tell it the first MSP has it);
    // the box still enrols into the MSP that registered it first with its factory key.
    let (_, other, other_practice) = cloud.other_msp("other.example").await;
    let other = cloud.api(&other);
    other
        .claim_serial(other_practice, &claim)
        .await
        .expect("registered in the other MSP, which learns nothing");

    // Wrong key, unknown serial: the same refusal, so serials cannot be probed.
    for (serial, key) in [
        ("SO-TEST-0001", "fk_wrong_wrong_wrong_wrong_wrong_wrong"),
        ("SO-NOT-REGISTERED", FACTORY_KEY),
    ] {
        let (_, csr) = stayopen_appliance::identity::new_key_and_request().expect("csr");
        let refused = cloud
            .anonymous()
            .enroll_claimed(&ClaimEnrollRequest {
                factory_key: key.into(),
                hardware: HardwareIdentity {
                    serial: serial.into(),
                    mac: "02:53:4f:00:00:01".into(),
                    model: "test".into(),
                },
                agent_version: "test".into(),
                csr_pem: csr,
                wireguard_public_key: None,
            })
            .await
            .expect_err(serial);
        assert_eq!(refused.status, 401, "{serial}");
        assert_eq!(refused.code().as_deref(), Some("claim_refused"));
    }

    // A relay for the tunnel: the box registers its WireGuard key when it enrols.
    let relay_token = stayopen_cloud::domain::relays::create(
        &cloud.pool,
        "relay-zero-touch",
        "relay-zero-touch.example.net:51820",
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
    )
    .await
    .expect("relay registered")
    .token;

    // The box itself, with only its factory key on disk.
    let state = tempfile::tempdir().expect("state");
    let key_file = state.path().join("factory.key");
    std::fs::write(&key_file, format!("{FACTORY_KEY}\n")).expect("key file");
    let mut config = appliance_config(&cloud.base_url, "", state.path(), None);
    if let Some(section) = config.cloud.as_mut() {
        section.enrollment_token = None;
        section.factory_key_file = Some(key_file);
    }
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config,
            events_file: None,
            seed: 3,
        },
        stopped,
    ));
    let appliance = eventually(
        Duration::from_secs(20),
        "the box online in Hillcrest",
        || async {
            admin
                .fleet()
                .await
                .ok()?
                .practices
                .into_iter()
                .find(|p| p.id == hillcrest)?
                .appliances
                .into_iter()
                .find(|a| a.online && a.serial == "SO-TEST-0001")
        },
    )
    .await;
    let claims = admin.claimed_serials().await.expect("claims").items;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].appliance_id, Some(appliance.id));
    let theirs = other.claimed_serials().await.expect("claims").items;
    assert!(
        theirs.len() == 1 && theirs[0].appliance_id.is_none(),
        "the other MSP sees only its own registration, unused: {theirs:?}"
    );
    // Its WireGuard key, registered by the claim, is in the relay's peer list.
    let key = stayopen_appliance::identity::Identity::wireguard_public_key(state.path())
        .expect("the box's WireGuard key");
    let peers: stayopen_shared::tunnel::RelayPeerList = cloud
        .http
        .get(cloud.url("/api/v1/relay/peers"))
        .bearer_auth(&relay_token)
        .send()
        .await
        .expect("peer list")
        .json()
        .await
        .expect("a peer list");
    assert!(
        peers
            .peers
            .iter()
            .any(|p| p.appliance_id == appliance.id && p.public_key == key),
        "the claimed box's key is registered: {peers:?}"
    );
    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent ran cleanly");
}
