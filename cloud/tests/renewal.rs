//! Issue 12: an appliance renews its device certificate by itself, well before it ends, over the
//! authenticated channel (a proof signed with its current key), and carries on under the new
//! certificate and MQTT password without anyone restarting it.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TestCloud, appliance_config, eventually, holds_for, spawn_cloud_with};
use stayopen_appliance::agent::{self, AgentOptions, Renewal};
use stayopen_appliance::identity::{self, RenewBefore};
use stayopen_shared::ApplianceId;
use tokio::sync::watch;

/// What the cloud knows of the appliance's connection and certificate.
#[derive(Debug, sqlx::FromRow)]
struct Seen {
    cert_serial: Option<String>,
    online: bool,
    last_seen: Option<DateTime<Utc>>,
    /// When the connection whose presence is in force was made (the appliance's clock).
    presence_at: Option<DateTime<Utc>>,
}

async fn seen(cloud: &TestCloud, appliance: ApplianceId) -> Seen {
    sqlx::query_as(
        "SELECT cert_serial, online, last_seen, presence_at FROM appliances WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("appliance row")
}

/// When the certificate with `serial` was superseded, if it was.
async fn superseded_at(cloud: &TestCloud, serial: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT superseded_at FROM device_certificates WHERE serial_hex = $1")
        .bind(serial)
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("certificate row")
}

/// Starts the agent with `renewal`, its cloud API at `api_url`; returns its stop switch and task.
fn start_agent(
    api_url: &str,
    token: &str,
    state: &std::path::Path,
    renewal: Renewal,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<agent::Exit, agent::AgentError>>,
) {
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run_with_renewal(
        AgentOptions {
            config: appliance_config(api_url, token, state, None),
            events_file: None,
            seed: 12,
        },
        renewal,
        stopped,
    ));
    (stop, run)
}

/// Waits until the appliance is online over a connection made after `since`; returns the
/// connection's time.
async fn online_since(
    cloud: &TestCloud,
    appliance: ApplianceId,
    since: DateTime<Utc>,
) -> DateTime<Utc> {
    eventually(Duration::from_secs(30), "a new connection", || async {
        let now = seen(cloud, appliance).await;
        now.presence_at.filter(|at| now.online && *at > since)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_due_at_start_renews_before_it_connects_and_without_the_cloud_carries_on() {
    let cloud = spawn_cloud_with(|c| c.broker.device_cert_days = 1).await;
    let demo = cloud.seed_demo().await;
    let token = &demo.practices[0].enrollment_token;
    let state = tempfile::tempdir().expect("state");
    let (stop, run) = start_agent(&cloud.base_url, token, state.path(), Renewal::default());
    let appliance = eventually(Duration::from_secs(20), "enrolment", || async {
        identity::load(state.path()).ok().flatten()
    })
    .await
    .appliance_id;
    online_since(&cloud, appliance, DateTime::<Utc>::MIN_UTC).await;
    let first_serial = seen(&cloud, appliance)
        .await
        .cert_serial
        .expect("a certificate");
    stop.send(true).expect("stop");
    run.await.expect("join").expect("the agent ran cleanly");

    // Restarted with its certificate due (less than two days "remain" of one) and the cloud's
    // API unreachable: the renewal fails and the agent connects with what it has.
    let always_due = Renewal {
        before: RenewBefore::Remaining(chrono::Duration::days(2)),
        ..Renewal::default()
    };
    let restarted = Utc::now();
    let (stop, run) = start_agent("http://127.0.0.1:1", token, state.path(), always_due);
    online_since(&cloud, appliance, restarted).await;
    assert_eq!(
        seen(&cloud, appliance).await.cert_serial.as_deref(),
        Some(first_serial.as_str())
    );
    assert!(superseded_at(&cloud, &first_serial).await.is_none());
    stop.send(true).expect("stop");
    run.await.expect("join").expect("the agent ran cleanly");

    // Restarted with the cloud reachable: renewed before the first connection, then left alone
    // until the next hourly look.
    let restarted = Utc::now();
    let (stop, run) = start_agent(&cloud.base_url, token, state.path(), always_due);
    let connected_at = online_since(&cloud, appliance, restarted).await;
    let renewed_at = superseded_at(&cloud, &first_serial)
        .await
        .expect("the first certificate is superseded");
    assert!(
        renewed_at < connected_at,
        "renewed at {renewed_at}, connected at {connected_at}"
    );
    let renewed_serial = seen(&cloud, appliance).await.cert_serial;
    assert_ne!(renewed_serial.as_deref(), Some(first_serial.as_str()));
    holds_for(
        Duration::from_secs(3),
        "one renewal, not one per look",
        || async { seen(&cloud, appliance).await.cert_serial == renewed_serial },
    )
    .await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("the agent ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_appliance_renews_its_certificate_by_itself_and_reconnects_under_the_new_one() {
    let cloud = spawn_cloud_with(|c| c.broker.device_cert_days = 1).await;
    let demo = cloud.seed_demo().await;
    let state = tempfile::tempdir().expect("state");
    // Renewal falls due 15 s after issue, when all but 15 s of the day "remain" (the default, a
    // third of the lifetime, would take 16 hours).
    let renewal = Renewal {
        before: RenewBefore::Remaining(chrono::Duration::days(1) - chrono::Duration::seconds(15)),
        ..Renewal::default()
    };
    let (stop, run) = start_agent(
        &cloud.base_url,
        &demo.practices[0].enrollment_token,
        state.path(),
        renewal,
    );

    let enrolled = eventually(Duration::from_secs(20), "enrolment", || async {
        identity::load(state.path()).ok().flatten()
    })
    .await;
    let appliance = enrolled.appliance_id;
    let first = eventually(Duration::from_secs(15), "the appliance online", || async {
        let now = seen(&cloud, appliance).await;
        now.online.then_some(now)
    })
    .await;
    let first_serial = first.cert_serial.expect("a certificate");
    assert!(
        superseded_at(&cloud, &first_serial).await.is_none(),
        "online under its first certificate"
    );

    let renewed_serial = eventually(Duration::from_secs(40), "a renewal", || async {
        seen(&cloud, appliance)
            .await
            .cert_serial
            .filter(|serial| *serial != first_serial)
    })
    .await;
    let renewed_at = superseded_at(&cloud, &first_serial)
        .await
        .expect("the first certificate is superseded");
    // Stored by the appliance once the cloud's answer arrives, just after the cloud's commit.
    let stored = eventually(
        Duration::from_secs(10),
        "the renewed identity stored",
        || async {
            identity::load(state.path())
                .ok()
                .flatten()
                .filter(|stored| stored.private_key_pem != enrolled.private_key_pem)
        },
    )
    .await;
    assert_ne!(stored.mqtt.password, enrolled.mqtt.password);
    assert_eq!(stored.appliance_id, appliance);
    assert_ne!(renewed_serial, first_serial);

    // A connection made after the renewal, so under the new certificate and password (the old
    // password no longer opens one), and never refused; telemetry keeps arriving over it.
    let reconnected_at = online_since(&cloud, appliance, renewed_at).await;
    eventually(
        Duration::from_secs(20),
        "telemetry over the new connection",
        || async {
            let now = seen(&cloud, appliance).await;
            now.last_seen
                .filter(|t| now.online && *t > reconnected_at + chrono::Duration::seconds(2))
        },
    )
    .await;
    for reason in ["bad_password", "revoked_appliance", "unknown_appliance"] {
        assert_eq!(
            cloud
                .counter(&format!(
                    "stayopen_broker_auth_rejected_total{{reason=\"{reason}\"}}"
                ))
                .await,
            0,
            "{reason}"
        );
    }
    stop.send(true).expect("stop");
    run.await.expect("join").expect("the agent ran cleanly");
}
