//! The outbox's figures (issue 12), from a release build: `cargo bench -p stayopen-appliance --bench
//! outbox`. Prints the write throughput (each append fsynced, as the agent does), and the disk an
//! hour of outage takes at the default cadence (one telemetry sample every 10 s, two uplinks, plus
//! the events of a failover and a failback every ten minutes). The drain time into a real cloud is
//! the cloud's `outbox_drain` bench.
//!
//! The outbox is created in `STAYOPEN_BENCH_DIR` (default: a temporary folder under /var/tmp, a
//! disk, not a tmpfs, so fsync costs what it costs on a box).

use std::time::Instant;

use chrono::{Duration, Utc};
use stayopen_appliance::outbox::{DEFAULT_LIMIT_BYTES, Kind, Outbox};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth, UplinkTelemetry};
use stayopen_shared::{ApplianceId, Envelope, MessageId};
use uuid::Uuid;

const TELEMETRY_INTERVAL_SECS: i64 = 10;

fn telemetry(appliance: ApplianceId, at: chrono::DateTime<Utc>, n: u64) -> (MessageId, Vec<u8>) {
    let uplink = |name: &str, priority: u8, metered: bool| UplinkTelemetry {
        name: name.into(),
        priority,
        metered,
        health: UplinkHealth::Up,
        rtt_ms: Some(12.5 + (n % 7) as f64),
        loss_pct: 0.0,
        rx_bytes: 1_234_567_890 + n * 4096,
        tx_bytes: 987_654_321 + n * 2048,
        cellular: None,
    };
    let id = MessageId(Uuid::new_v4());
    let body = Telemetry {
        active_uplink: Some("fiber".into()),
        uplinks: vec![uplink("fiber", 0, false), uplink("lte", 1, true)],
        policy_version: Some(7),
        samples: None,
        outbox: None,
        apps: Vec::new(),
        tunnel: None,
    };
    (id, Envelope::new(id, appliance, at, body).encode())
}

fn event(
    appliance: ApplianceId,
    at: chrono::DateTime<Utc>,
    kind: EventKind,
) -> (MessageId, Vec<u8>) {
    let id = MessageId(Uuid::new_v4());
    let body = ApplianceEvent {
        kind,
        uplink: Some("fiber".into()),
        from: Some("fiber".into()),
        to: Some("lte".into()),
        reason: "fiber: no probe answered for 700 ms".into(),
        drill: None,
    };
    (id, Envelope::new(id, appliance, at, body).encode())
}

/// Appends one hour of outage at the default cadence; returns the messages appended.
fn one_hour(outbox: &Outbox, appliance: ApplianceId, start: chrono::DateTime<Utc>) -> usize {
    let mut count = 0;
    for n in 0..(3600 / TELEMETRY_INTERVAL_SECS) {
        let at = start + Duration::seconds(n * TELEMETRY_INTERVAL_SECS);
        let (id, payload) = telemetry(appliance, at, n as u64);
        outbox
            .append(Kind::Telemetry, id, &payload)
            .expect("append");
        count += 1;
        if n % 60 == 0 {
            for kind in [EventKind::Failover, EventKind::Failback] {
                let (id, payload) = event(appliance, at, kind);
                outbox.append(Kind::Event, id, &payload).expect("append");
                count += 1;
            }
        }
    }
    count
}

fn main() {
    let base = std::env::var("STAYOPEN_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let appliance = ApplianceId(Uuid::new_v4());

    // Throughput: fsynced appends of telemetry-sized messages.
    let path = dir.path().join("throughput.redb");
    let outbox = Outbox::open(&path, DEFAULT_LIMIT_BYTES).expect("outbox");
    let messages = 2_000;
    let sample = telemetry(appliance, Utc::now(), 0).1.len();
    let started = Instant::now();
    for n in 0..messages {
        let (id, payload) = telemetry(appliance, Utc::now(), n);
        outbox
            .append(Kind::Telemetry, id, &payload)
            .expect("append");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "outbox write: {messages} appends of {sample} B, each fsynced: {:.0} messages/s ({:.2} ms each)",
        messages as f64 / elapsed,
        elapsed * 1000.0 / messages as f64
    );
    let ids: Vec<MessageId> = outbox
        .after(0, messages as usize)
        .expect("read")
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    let started = Instant::now();
    for chunk in ids.chunks(256) {
        outbox.acknowledge(chunk).expect("ack");
    }
    println!(
        "outbox acknowledge: {} messages in batches of 256: {:.0} messages/s",
        ids.len(),
        ids.len() as f64 / started.elapsed().as_secs_f64()
    );
    drop(outbox);

    // Disk per hour of outage at the default cadence.
    let path = dir.path().join("hour.redb");
    let outbox = Outbox::open(&path, DEFAULT_LIMIT_BYTES).expect("outbox");
    let start = Utc::now() - Duration::hours(1);
    let appended = one_hour(&outbox, appliance, start);
    let report = outbox.report().expect("report");
    let file = std::fs::metadata(&path).expect("file").len();
    println!(
        "one hour of outage at the default cadence ({}s telemetry, 2 uplinks, a failover and failback every 10 min): \
         {appended} messages, {:.1} KiB of messages, outbox file {:.1} KiB",
        TELEMETRY_INTERVAL_SECS,
        report.pending_bytes as f64 / 1024.0,
        file as f64 / 1024.0
    );
    println!(
        "the default {} MiB bound holds {:.0} hours ({:.1} days) of such an outage before telemetry is rolled up",
        DEFAULT_LIMIT_BYTES / (1024 * 1024),
        DEFAULT_LIMIT_BYTES as f64 / report.pending_bytes as f64,
        DEFAULT_LIMIT_BYTES as f64 / report.pending_bytes as f64 / 24.0
    );
}
