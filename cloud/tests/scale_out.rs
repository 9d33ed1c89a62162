//! Two cloud instances of one deployment — one database, one PKI folder (the device CA), one
//! Mosquitto — behind Debian's HAProxy, as the scale-out deployment runs them
//! (docs/ARCHITECTURE.md § Scale-out). Each instance connects to the broker with its own client id
//! and joins the shared ingest group, so the broker hands each device message to one of them.
//! Appliances enrol through the load balancer and publish a burst through their real cloud links;
//! one instance is SIGKILLed in the middle. Nothing may be lost and nothing stored twice, and a
//! command, a policy or a revocation made on either instance must reach its appliance. Needs
//! Mosquitto and HAProxy (infra/scripts/test.sh installs Debian's packages).

mod common;

use std::time::Duration;

use common::burst::{Burst, start_burst};
use common::eventually;
use common::process::CloudProcess;
use stayopen_appliance::cloud_link::Inbound;
use stayopen_cloud::domain::seed;
use stayopen_cloud::infra::metrics::INGEST_ACCEPTED;
use stayopen_shared::api::CreateCommand;
use stayopen_shared::commands::CommandSpec;

const APPLIANCES: usize = 3;
const BURST: usize = 1_500;

async fn ready(cloud: &CloudProcess) -> Option<()> {
    reqwest::get(format!("{}/readyz", cloud.base_url()))
        .await
        .ok()
        .filter(|r| r.status().is_success())
        .map(|_| ())
}

/// Events one instance's ingest accepted (its own counter).
async fn accepted_events(cloud: &CloudProcess) -> u64 {
    cloud
        .counter(&format!("{INGEST_ACCEPTED}{{channel=\"events\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_ingest_and_killing_one_mid_burst_loses_nothing_and_stores_nothing_twice()
 {
    let mqtt_port = common::mosquitto::free_port().to_string();
    let external = [
        ("STAYOPEN_BROKER__EXTERNAL__HOST", "127.0.0.1"),
        ("STAYOPEN_BROKER__EXTERNAL__PORT", mqtt_port.as_str()),
    ];
    let mut a = CloudProcess::start(
        &[
            &external[..],
            &[("STAYOPEN_BROKER__EXTERNAL__CLIENT_ID", "stayopen-cloud-a")],
        ]
        .concat(),
    )
    .await;
    // Mosquitto uses the certificates the first instance made; the second shares its PKI folder.
    let mosquitto = common::mosquitto::start(a.tls_dir.path(), mqtt_port.parse().expect("port"));
    let mut b = a
        .sibling(&[("STAYOPEN_BROKER__EXTERNAL__CLIENT_ID", "stayopen-cloud-b")])
        .await;
    b.spawn().await;
    eventually(
        Duration::from_secs(30),
        "both instances connected to Mosquitto",
        || async { ready(&a).await.and(ready(&b).await) },
    )
    .await;
    let lb = common::haproxy::start(&[a.http, b.http]);
    let demo = seed::seed_demo(&a.pool).await.expect("seed");

    // The appliances enrol through the load balancer, wherever it sends them.
    let mut bursts: Vec<Burst> = Vec::new();
    for i in 0..APPLIANCES {
        bursts.push(
            start_burst(
                &lb.base_url(),
                &demo.practices[i % demo.practices.len()].enrollment_token,
                &format!("SO-SCALE-{i:04}"),
                &format!("02:53:4f:00:18:{i:02x}"),
                "scale",
                BURST,
            )
            .await,
        );
    }

    // Commands created on each instance reach their appliance through the shared broker.
    let on_a = a.api_as(&demo.email, &demo.password).await;
    let on_b = b.api_as(&demo.email, &demo.password).await;
    let command = CreateCommand {
        spec: CommandSpec::CollectDiagnostics,
        expires_in_secs: None,
    };
    let from_a = on_a
        .create_command(bursts[0].identity.appliance_id, &command)
        .await
        .expect("command on instance a")
        .id;
    let from_b = on_b
        .create_command(bursts[1].identity.appliance_id, &command)
        .await
        .expect("command on instance b")
        .id;
    // So do policies: each appliance gets the override set through the other instance.
    on_b.set_appliance_policy(
        bursts[0].identity.appliance_id,
        &serde_json::json!({"detection_quorum": 2}),
    )
    .await
    .expect("policy on instance b");
    on_a.set_appliance_policy(
        bursts[1].identity.appliance_id,
        &serde_json::json!({"detection_quorum": 3}),
    )
    .await
    .expect("policy on instance a");

    // Both instances take a share of the burst before one of them dies.
    eventually(
        Duration::from_secs(60),
        "both instances ingesting a share of the burst",
        || async {
            let acknowledged: u64 = bursts.iter().map(|b| b.link.acknowledged_count()).sum();
            (acknowledged >= (APPLIANCES * BURST / 4) as u64
                && accepted_events(&a).await > 0
                && accepted_events(&b).await > 0)
                .then_some(())
        },
    )
    .await;
    let (share_a, share_b) = (accepted_events(&a).await, accepted_events(&b).await);
    a.kill();

    for burst in &mut bursts {
        (&mut burst.appending).await.expect("burst appended");
    }
    let drained = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if bursts.iter().all(|b| {
                b.link
                    .outbox_report()
                    .is_some_and(|r| r.pending == 0 && r.events_dropped == 0)
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "every outbox drained through the surviving instance; acknowledged {:?}; instance b's log:\n{}",
        bursts
            .iter()
            .map(|b| b.link.acknowledged_count())
            .collect::<Vec<_>>(),
        b.log()
    );

    for burst in &bursts {
        let (rows, distinct_ids, distinct_reasons): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT message_id), count(DISTINCT body->>'reason')
             FROM appliance_events WHERE appliance_id = $1 AND body->>'reason' LIKE 'scale %'",
        )
        .bind(burst.identity.appliance_id.0)
        .fetch_one(&a.owner_pool)
        .await
        .expect("count");
        println!(
            "appliance {}: sent {BURST}, stored {rows}, distinct ids {distinct_ids}, lost {}",
            burst.identity.appliance_id,
            BURST as i64 - distinct_reasons
        );
        assert_eq!(distinct_reasons, BURST as i64, "every event stored");
        assert_eq!(rows, distinct_ids, "no event stored twice");
        assert_eq!(rows, BURST as i64);
        assert_eq!(burst.link.unstored(), 0);
    }
    println!(
        "ingest split before the kill: instance a {share_a}, instance b {share_b} events; \
         after it instance b {} events",
        accepted_events(&b).await
    );

    // The commands and policies: each appliance received the command created for it and the
    // policy set for it, whichever instance took them.
    for ((burst, id), quorum) in bursts.iter_mut().take(2).zip([from_a, from_b]).zip([2, 3]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let (mut command_received, mut policy_received) = (false, false);
        while !(command_received && policy_received) && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), burst.inbound.recv()).await {
                Ok(Some(Inbound::Command(command))) => command_received |= command.id == id,
                Ok(Some(Inbound::Policy(policy))) => {
                    policy_received |= policy.detection_quorum == quorum;
                }
                _ => {}
            }
        }
        assert!(command_received, "command {id} reached its appliance");
        assert!(
            policy_received,
            "the policy with detection quorum {quorum} reached its appliance"
        );
    }

    // The load balancer took the dead instance out of rotation: the API still answers through it.
    let fleet = common::client::ApiClient::new(reqwest::Client::new(), &lb.base_url(), None)
        .login(&demo.email, &demo.password)
        .await;
    assert!(
        fleet.is_ok(),
        "sign-in through the load balancer after the kill"
    );

    // A revocation made on either instance reaches the appliance through the shared broker. The
    // third appliance's own link stops; a session of its own certificate and credentials stands in
    // for it. Instance b revokes it (a, which may have enrolled it, is dead): b closes the live
    // session through Mosquitto and writes the revocation list into the PKI folder the deployment
    // shares, and once Mosquitto reloads the list the certificate is refused.
    for burst in &bursts {
        burst.link.shutdown().await;
    }
    let revoked = &bursts[2].identity;
    let broker = tokio::net::lookup_host((revoked.mqtt.host.as_str(), revoked.mqtt.port))
        .await
        .expect("broker address")
        .next()
        .expect("an address");
    let credentials = common::device::Credentials {
        ca_pem: &revoked.ca_cert_pem,
        cert_pem: &revoked.client_cert_pem,
        key_pem: &revoked.private_key_pem,
        client_id: &revoked.mqtt.username,
        username: &revoked.mqtt.username,
        password: &revoked.mqtt.password,
    };
    let session = common::device::connect(broker, &credentials)
        .await
        .expect("the appliance's session, before revocation");
    on_b.revoke_appliance(revoked.appliance_id)
        .await
        .expect("revoked through instance b");
    eventually(
        Duration::from_secs(10),
        "the revoked appliance's session closed by instance b",
        || async { session.is_closed().then_some(()) },
    )
    .await;
    mosquitto.reload();
    eventually(
        Duration::from_secs(10),
        "the revoked appliance's certificate refused by Mosquitto",
        || async {
            common::device::connect(broker, &credentials)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}
