//! The cloud reachable only through the appliance's uplinks: the real cloud process runs in the
//! testbed's "internet" namespace, the real agent on the Linux dataplane in the appliance namespace
//! (`infra/testbed/testbed.sh`). A blackholed primary kills the MQTT connection at the moment the
//! failover event is produced; every event of the failover and of the later failback must still be
//! stored exactly once, in order. Needs root, `ip`, `nft` and `conntrack`, and the workspace's
//! binaries (`cargo test --workspace`, as infra/scripts/test.sh runs it).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::events::{outbox_empty_since, stored};
use common::eventually;
use common::process::CloudProcess;
use stayopen_cloud::domain::seed;
use stayopen_testkit::testbed::Testbed;
use uuid::Uuid;

/// Where the cloud listens inside the internet namespace.
const CLOUD_IP: &str = "203.0.113.40";

/// A binary of the workspace built next to this test.
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (infra/scripts/test.sh)",
        path.display()
    );
    path
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn emitted(bed: &Testbed) -> Vec<(String, i64)> {
    common::events::emitted(&bed.events_path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_failover_that_cuts_the_cloud_connection_and_of_the_failback_is_stored_once_in_order()
 {
    assert!(
        is_root(),
        "the netns tests need root (network namespaces, nftables); CI runs them as root"
    );
    let socket_dir = std::env::var("STAYOPEN_TEST_PG_SOCKET_DIR").expect(
        "STAYOPEN_TEST_PG_SOCKET_DIR must name the test PostgreSQL's socket folder; \
         run the tests with infra/scripts/test.sh",
    );
    let tools = workspace_binary("stayopen-testbed");
    let appliance_bin = workspace_binary("stayopen-appliance");
    let prefix = format!("sd{}", std::process::id() % 10_000);
    let mut bed = Testbed::up(&prefix).unwrap_or_else(|e| panic!("{e}"));
    bed.start_servers(&tools).expect("servers");
    bed.add_internet_address(CLOUD_IP).expect("cloud address");
    // The box boots with a default route through the primary, as its network configuration gives
    // it; the agent enrols through it and takes the default route over once its dataplane runs.
    let routed = std::process::Command::new("ip")
        .args([
            "-n",
            &bed.namespace("app"),
            "route",
            "replace",
            "default",
            "via",
            "100.64.1.1",
        ])
        .status()
        .expect("ip route");
    assert!(routed.success(), "boot-time default route");
    let cloud = CloudProcess::start_in_netns(&bed.namespace("net"), CLOUD_IP, &socket_dir).await;
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");

    let config = format!(
        "{}\n[cloud]\napi_url = \"http://{CLOUD_IP}:8080\"\nallow_plain_http = true\nenrollment_token = \"{}\"\ntelemetry_interval_secs = 2\n",
        bed.agent_config(3, false),
        demo.practices[0].enrollment_token
    );
    bed.start_agent_with_config(&appliance_bin, &config)
        .expect("agent");
    let mut appliance = None;
    for _ in 0..600 {
        appliance =
            sqlx::query_scalar("SELECT id FROM appliances WHERE serial = 'SO-TESTBED' AND online")
                .fetch_optional(&cloud.owner_pool)
                .await
                .expect("query");
        if appliance.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let appliance: Uuid = appliance.unwrap_or_else(|| {
        panic!(
            "the appliance enrolled and online through isp1; agent log:\n{}\ncloud log:\n{}",
            bed.agent_log(),
            cloud.log()
        )
    });
    bed.wait_healthy(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", bed.agent_log()));

    // The primary goes black: the MQTT connection through it dies with it.
    bed.fault(&["blackhole", "1"]).expect("fault");
    bed.wait_for("failover", Duration::from_secs(10), |s| {
        s.active.as_deref() == Some("isp2")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", bed.agent_log()));
    eventually(
        Duration::from_secs(60),
        "the failover event stored, sent through the backup",
        || async {
            stored(&cloud.owner_pool, appliance)
                .await
                .iter()
                .any(|(kind, _)| kind == "failover")
                .then_some(())
        },
    )
    .await;

    bed.fault(&["clear"]).expect("clear");
    bed.wait_for("failback", Duration::from_secs(90), |s| {
        s.active.as_deref() == Some("isp1")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", bed.agent_log()));
    eventually(
        Duration::from_secs(60),
        "the failback event stored",
        || async {
            stored(&cloud.owner_pool, appliance)
                .await
                .iter()
                .any(|(kind, _)| kind == "failback")
                .then_some(())
        },
    )
    .await;
    // Resends that were going to double anything are sent before the appliance reports an empty
    // outbox.
    let failback_stored = chrono::Utc::now();
    eventually(
        Duration::from_secs(30),
        "an empty outbox reported",
        || async {
            outbox_empty_since(&cloud.owner_pool, appliance, failback_stored)
                .await
                .then_some(())
        },
    )
    .await;
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let emitted_now = emitted(&bed);
        let stored_now = stored(&cloud.owner_pool, appliance).await;
        if emitted_now == stored_now {
            break;
        }
        last = (emitted_now, stored_now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (emitted_all, stored_all) = (emitted(&bed), stored(&cloud.owner_pool, appliance).await);
    println!(
        "netns failover: emitted {}, stored {}, kinds {:?}",
        emitted_all.len(),
        stored_all.len(),
        stored_all
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        stored_all,
        emitted_all,
        "every event stored once, in the order the appliance emitted them (last mismatch {last:?}): {}",
        bed.agent_log()
    );
    assert_eq!(
        stored_all.iter().filter(|(k, _)| k == "failover").count(),
        1,
        "one failover, stored once"
    );
    drop(bed);
}
