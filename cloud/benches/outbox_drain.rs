//! How long one hour of an appliance's backlog takes to drain into the cloud after the connection
//! comes back (issue 12): `bash infra/scripts/bench-outbox.sh`, which runs `cargo bench -p
//! stayopen-cloud --bench outbox_drain` against a private PostgreSQL.
//!
//! A real cloud (embedded broker, ingest, PostgreSQL) and the appliance's real cloud link: the
//! outbox is filled with an hour of outage at the default cadence (a telemetry sample every 10 s,
//! a failover and a failback every 10 minutes) before the link starts, as after a reconnect or an
//! agent restart; the clock runs from the link's start until the last message is acknowledged.
//! Also drains `STAYOPEN_BENCH_DRAIN_HOURS` (default 24) hours the same way.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::{Duration, Utc};
use stayopen_appliance::cloud_link::CloudLink;
use stayopen_appliance::identity::{self, Proof};
use stayopen_appliance::outbox::{DEFAULT_LIMIT_BYTES, Kind, Outbox};
use stayopen_shared::api::HardwareIdentity;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth, UplinkTelemetry};
use stayopen_shared::{ApplianceId, Envelope, MessageId};
use uuid::Uuid;

fn fill(outbox: &Outbox, appliance: ApplianceId, hours: i64) -> usize {
    let start = Utc::now() - Duration::hours(hours);
    let uplink = |name: &str, priority: u8, metered: bool| UplinkTelemetry {
        name: name.into(),
        priority,
        metered,
        health: UplinkHealth::Up,
        rtt_ms: Some(14.0),
        loss_pct: 0.0,
        rx_bytes: 1_000_000,
        tx_bytes: 500_000,
        cellular: None,
    };
    let mut count = 0;
    for n in 0..(hours * 360) {
        let at = start + Duration::seconds(n * 10);
        let id = MessageId(Uuid::new_v4());
        let body = Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![uplink("fiber", 0, false), uplink("lte", 1, true)],
            policy_version: None,
            samples: None,
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
        };
        outbox
            .append(
                Kind::Telemetry,
                id,
                &Envelope::new(id, appliance, at, body).encode(),
            )
            .expect("append");
        count += 1;
        if n % 60 == 0 {
            for (kind, from, to) in [
                (EventKind::Failover, "fiber", "lte"),
                (EventKind::Failback, "lte", "fiber"),
            ] {
                let id = MessageId(Uuid::new_v4());
                let body = ApplianceEvent {
                    kind,
                    uplink: None,
                    from: Some(from.into()),
                    to: Some(to.into()),
                    reason: "bench".into(),
                    drill: None,
                };
                outbox
                    .append(
                        Kind::Event,
                        id,
                        &Envelope::new(id, appliance, at, body).encode(),
                    )
                    .expect("append");
                count += 1;
            }
        }
    }
    count
}

async fn drain(cloud: &common::TestCloud, token: &str, serial: &str, hours: i64) {
    let state = tempfile::tempdir().expect("state");
    let identity = identity::load_or_enroll(
        state.path(),
        &cloud.http,
        &cloud.base_url,
        &Proof::Token(token.into()),
        HardwareIdentity {
            serial: serial.into(),
            mac: format!("02:53:4f:00:20:{:02x}", hours),
            model: "bench".into(),
        },
    )
    .await
    .expect("enrol");
    let outbox =
        Outbox::open(&state.path().join("outbox.redb"), DEFAULT_LIMIT_BYTES).expect("outbox");
    let messages = fill(&outbox, identity.appliance_id, hours);
    let started = Instant::now();
    let (link, _inbound) = CloudLink::start(&identity, outbox).expect("link");
    let connected = loop {
        if link.is_connected() {
            break started.elapsed();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    loop {
        if link.outbox_report().is_some_and(|r| r.pending == 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let total = started.elapsed();
    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM telemetry WHERE appliance_id = $1)
              + (SELECT count(*) FROM appliance_events WHERE appliance_id = $1)",
    )
    .bind(identity.appliance_id.0)
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("count");
    println!(
        "drain {hours} h of backlog ({messages} messages): connected after {:.0} ms, all acknowledged after {:.2} s \
         ({:.0} messages/s); stored {stored}",
        connected.as_secs_f64() * 1000.0,
        total.as_secs_f64(),
        messages as f64 / (total - connected).as_secs_f64(),
    );
    assert_eq!(stored, messages as i64, "every message stored once");
    link.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cloud = common::spawn_cloud_with(|config| {
        config.database.max_connections = 10;
        config.http.workers = 2;
    })
    .await;
    let demo = cloud.seed_demo().await;
    let token = &demo.practices[0].enrollment_token;
    drain(&cloud, token, "SO-BENCH-0001", 1).await;
    let hours = std::env::var("STAYOPEN_BENCH_DRAIN_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    drain(&cloud, token, "SO-BENCH-0002", hours).await;
}
