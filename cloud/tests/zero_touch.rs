//! Zero-touch enrolment: an MSP registers a box's serial number and factory key for a practice;
//! the box enrols with them — nothing typed on site — and a serial belongs to one MSP only.

mod common;

use std::time::Duration;

use common::{appliance_config, eventually, spawn_cloud};
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_shared::api::{ClaimSerial, ClaimedSerialView, Fleet, Page};
use tokio::sync::watch;

const FACTORY_KEY: &str = "fk_5b0d7e9c2a4f41c38e6a0b1d9c7f3e2a5b8d0c6e4f2a1b3c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_serial_enrols_with_its_factory_key_into_its_practice() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let hillcrest = demo.practices[1].id;
    let claim = ClaimSerial {
        serial: "SO-TEST-0001".into(),
        factory_key: FACTORY_KEY.into(),
        site_id: None,
    };
    let (status, _) = cloud
        .post::<_, ClaimedSerialView>(
            Some(&admin),
            &format!("/api/v1/practices/{hillcrest}/claimed-serials"),
            &claim,
        )
        .await;
    assert_eq!(status, 201);

    // Another MSP cannot take the same box.
    let (_, other, other_practice) = cloud.other_msp("other.example").await;
    let (status, _) = cloud
        .post::<_, serde_json::Value>(
            Some(&other),
            &format!("/api/v1/practices/{other_practice}/claimed-serials"),
            &claim,
        )
        .await;
    assert_eq!(status, 409);

    // Wrong key, unknown serial: the same refusal, so serials cannot be probed.
    for (serial, key) in [
        ("SO-TEST-0001", "fk_wrong_wrong_wrong_wrong_wrong_wrong"),
        ("SO-NOT-REGISTERED", FACTORY_KEY),
    ] {
        let (_, csr) = stayopen_appliance::identity::new_key_and_request().expect("csr");
        let (status, body) = cloud
            .post::<_, serde_json::Value>(
                None,
                "/api/v1/enroll/claim",
                &serde_json::json!({
                    "factory_key": key,
                    "hardware": {"serial": serial, "mac": "02:53:4f:00:00:01", "model": "test"},
                    "agent_version": "test",
                    "csr_pem": csr,
                }),
            )
            .await;
        assert_eq!(status, 401, "{serial}");
        assert_eq!(body.expect("error")["error"]["code"], "claim_refused");
    }

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
            let (_, fleet) = cloud.get::<Fleet>(&admin, "/api/v1/fleet").await;
            fleet?
                .practices
                .into_iter()
                .find(|p| p.id == hillcrest)?
                .appliances
                .into_iter()
                .find(|a| a.online && a.serial == "SO-TEST-0001")
        },
    )
    .await;
    let (_, claims) = cloud
        .get::<Page<ClaimedSerialView>>(&admin, "/api/v1/claimed-serials")
        .await;
    let claims = claims.expect("claims").items;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].appliance_id, Some(appliance.id));
    let (_, theirs) = cloud
        .get::<Page<ClaimedSerialView>>(&other, "/api/v1/claimed-serials")
        .await;
    assert!(
        theirs.expect("claims").items.is_empty(),
        "the other MSP sees none of it"
    );
    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent ran cleanly");
}
