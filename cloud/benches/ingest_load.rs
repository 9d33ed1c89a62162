//! Ingest at load (issue 18): how many device messages a second ingest stores into PostgreSQL,
//! how long a failover event takes to become an alert at that load, and how fast the fleet
//! overview answers meanwhile. Cloud and PostgreSQL on this host.
//!
//! A real cloud runs in this process (fresh database, HTTP, its jobs), with a fleet of
//! `INGEST_APPLIANCES` (10,000) seeded as rows. The ingest under test is the cloud's own
//! [`ingest::run`] (its workers, batches and backpressure) fed through the channel the broker
//! forwarder feeds, so the figure is ingest's and PostgreSQL's, not the broker's or the TLS
//! clients' (the connect storm and the end-to-end rate over MQTT are `infra/scripts/bench-scale.sh`'s).
//! Messages are the load generator's: two-uplink telemetry and failover events.
//!
//! 1. **Drain**: `INGEST_MESSAGES` (200,000) telemetry messages, spread over the fleet, are handed
//!    to ingest as fast as it takes them; prints messages/s from the first to the last stored, and
//!    checks in PostgreSQL that every one is stored exactly once.
//! 2. **Steady**: telemetry offered at `INGEST_RATE` messages/s (20,000) for `INGEST_STEADY_SECS`
//!    (30); every `INGEST_EVENT_EVERY_MS` (100) a failover event of another appliance, timed from
//!    hand-over to its alert row (polled every 10 ms); every `INGEST_PAGE_EVERY_MS` (250) the
//!    fleet overview's two requests over HTTP (`/api/v1/fleet/totals`, the first page of
//!    practices), timed. Prints the rate stored, event → alert p50/p99 and the requests' p50/p95,
//!    and checks again that nothing offered was lost.
//!
//! `INGEST_INSTANCES=2` runs two ingests on the same database, as two cloud instances behind a
//! shared subscription (messages dealt to them in turn, so one appliance's reach both); the
//! broker itself is not part of this figure.
//!
//! `infra/scripts/bench-ingest.sh` starts PostgreSQL and runs it in a release build.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::spawn_cloud_with;
use stayopen_cloud::domain::ingest;
use stayopen_cloud::infra::device_link::DeviceLink;
use stayopen_cloud::infra::hearing::Hearing;
use stayopen_cloud::infra::metrics::{INGEST_ACCEPTED, INGEST_DUPLICATE, Metrics};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use stayopen_testkit::loadgen::{percentile, switch_event, telemetry_body};
use tokio::sync::mpsc;
use uuid::Uuid;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

type Incoming = (Vec<u8>, Vec<u8>);

/// The `tick`th telemetry message of the fleet's `index`th appliance.
fn telemetry_message(fleet: &[ApplianceId], index: usize, tick: u64) -> Incoming {
    let appliance = fleet[index % fleet.len()];
    let topic = DeviceTopic::new(appliance, Channel::Telemetry).to_string();
    let payload = Envelope::new(
        MessageId(Uuid::new_v4()),
        appliance,
        Utc::now(),
        telemetry_body(index, false, tick),
    )
    .encode();
    (topic.into_bytes(), payload)
}

/// Telemetry messages stored so far (new or resent) by the ingest under test.
fn stored(metrics: &Metrics) -> u64 {
    metrics.get(INGEST_ACCEPTED, "channel", Channel::Telemetry.as_str())
        + metrics.get(INGEST_DUPLICATE, "reason", "message_id")
}

/// Waits until `metrics` counts `target` stored telemetry messages; the instant it saw them.
async fn stored_reaches(metrics: &Metrics, target: u64, limit: Duration) -> Instant {
    let started = Instant::now();
    loop {
        if stored(metrics) >= target {
            return Instant::now();
        }
        assert!(
            started.elapsed() < limit,
            "ingest stored {} of {target} telemetry messages in {limit:?}",
            stored(metrics)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Telemetry rows of `tenant` in PostgreSQL: all, and distinct message ids.
async fn rows(owner: &sqlx::PgPool, tenant: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT message_id) FROM telemetry WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(owner)
    .await
    .expect("count telemetry")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let appliances = env_number("INGEST_APPLIANCES", 10_000);
    let drain_messages = env_number("INGEST_MESSAGES", 200_000);
    let rate = env_number("INGEST_RATE", 20_000);
    let steady_secs = env_number("INGEST_STEADY_SECS", 30);
    let event_every = Duration::from_millis(env_number("INGEST_EVENT_EVERY_MS", 100) as u64);
    let page_every = Duration::from_millis(env_number("INGEST_PAGE_EVERY_MS", 250) as u64);
    let instances = env_number("INGEST_INSTANCES", 1).max(1);
    println!("{instances} ingest instance(s), {appliances} appliances");

    let cloud = spawn_cloud_with(|c| c.database.max_connections = 10).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let seeding = Instant::now();
    common::fleet::seed(
        &cloud.owner_pool,
        demo.tenant_id.0,
        (appliances / 20).max(1),
        appliances,
    )
    .await;
    sqlx::query("ANALYZE")
        .execute(&cloud.owner_pool)
        .await
        .expect("analyze");
    // The seeded appliances not on their backup: each failover event goes to one of them, so
    // each raises an alert of its own rather than folding into an open one.
    let fleet: Vec<(ApplianceId, bool)> = sqlx::query_as::<_, (Uuid, bool)>(
        "SELECT id, on_backup FROM appliances WHERE tenant_id = $1 AND model = 'bench' ORDER BY serial",
    )
    .bind(demo.tenant_id.as_uuid())
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("fleet")
    .into_iter()
    .map(|(id, on_backup)| (ApplianceId(id), on_backup))
    .collect();
    let everyone: Vec<ApplianceId> = fleet.iter().map(|(id, _)| *id).collect();
    let mut for_events = fleet
        .iter()
        .filter(|(_, on_backup)| !on_backup)
        .map(|(id, _)| *id)
        .rev();
    println!(
        "seeded {} appliances in {:.1} s",
        everyone.len(),
        seeding.elapsed().as_secs_f64()
    );

    // The ingest under test: the cloud's, on a pool of its own (the application role). With
    // `INGEST_INSTANCES` > 1, that many ingests, as cloud instances sharing a subscription: the
    // broker deals each message to one of them, so one appliance's messages reach several.
    let metrics = Arc::new(Metrics::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut to_ingest = Vec::new();
    let mut events_to_ingest = Vec::new();
    let mut ingest_tasks = Vec::new();
    for _ in 0..instances {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(u32::try_from(ingest::WORKERS * 2).unwrap_or(8))
            .connect(&cloud.app_database_url)
            .await
            .expect("ingest pool");
        let (link, mut published) = DeviceLink::detached(metrics.clone());
        // The acknowledgements ingest publishes are read and dropped, as a broker would take them.
        tokio::spawn(async move { while published.recv().await.is_some() {} });
        let hearing = Arc::new(Hearing::new(Utc::now(), Duration::ZERO));
        // The two streams the broker feeds: telemetry, and events (served first).
        let (telemetry_tx, incoming) = mpsc::channel::<Incoming>(1000);
        let (events_tx, urgent) = mpsc::channel::<Incoming>(1000);
        to_ingest.push(telemetry_tx);
        events_to_ingest.push(events_tx);
        ingest_tasks.push(tokio::spawn(ingest::run(
            pool,
            metrics.clone(),
            link,
            hearing,
            incoming,
            urgent,
            stop.clone(),
        )));
    }

    // 1. Drain.
    let messages: Vec<Incoming> = (0..drain_messages)
        .map(|i| telemetry_message(&everyone, i, (i / everyone.len()) as u64 + 1))
        .collect();
    let started = Instant::now();
    let feeder = {
        let to_ingest = to_ingest.clone();
        tokio::spawn(async move {
            for (i, message) in messages.into_iter().enumerate() {
                to_ingest[i % to_ingest.len()]
                    .send(message)
                    .await
                    .expect("ingest takes messages");
            }
        })
    };
    let done = stored_reaches(&metrics, drain_messages as u64, Duration::from_secs(1800)).await;
    feeder.await.expect("feeder");
    let drain_secs = (done - started).as_secs_f64();
    let (count, distinct) = rows(&cloud.owner_pool, demo.tenant_id.0).await;
    assert_eq!(
        (count, distinct),
        (drain_messages as i64, drain_messages as i64),
        "every message stored exactly once"
    );
    println!("\n| phase | messages | time | stored per second | lost | duplicated |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| drain (as fast as ingest takes them) | {drain_messages} | {drain_secs:.1} s | {:.0} | 0 | 0 |",
        drain_messages as f64 / drain_secs
    );

    // 2. Steady: telemetry at the offered rate, events and page loads beside it.
    let before_steady = stored(&metrics);
    let steady = Duration::from_secs(steady_secs as u64);
    // Made before the phase, as the drain's are, so that generating them (serializing 20,000
    // envelopes a second) does not take the CPU the ingest under test is measured on. Counters go
    // on rising from where the drain left them, a sample per appliance per round, as an
    // appliance's would.
    let total = (rate as f64 * steady.as_secs_f64()) as usize;
    let steady_messages: Vec<Incoming> = (0..total)
        .map(|offered| {
            let tick = ((drain_messages + offered) / everyone.len()) as u64 + 1;
            telemetry_message(&everyone, offered, tick)
        })
        .collect();
    let producer = {
        let to_ingest = to_ingest.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let per_tick = rate as f64 * tick.as_secs_f64();
            let started = Instant::now();
            let mut offered = 0usize;
            let mut messages = steady_messages.into_iter();
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // Offered on schedule, never more than the rate allows: when ingest holds back
            // (backpressure), what the schedule missed is not made up after the phase.
            while started.elapsed() < steady {
                ticker.tick().await;
                let due = ((started.elapsed().as_secs_f64() / tick.as_secs_f64() * per_tick)
                    as usize)
                    .min(total);
                while offered < due && started.elapsed() < steady {
                    let Some(message) = messages.next() else {
                        return offered;
                    };
                    if to_ingest[offered % to_ingest.len()]
                        .send(message)
                        .await
                        .is_err()
                    {
                        return offered;
                    }
                    offered += 1;
                }
            }
            offered
        })
    };
    let mut event_latencies = Vec::new();
    let mut event_waits = tokio::task::JoinSet::new();
    let mut page_latencies: [Vec<Duration>; 3] = Default::default();
    let mut events_at = tokio::time::interval(event_every);
    let mut pages_at = tokio::time::interval(page_every);
    let steady_started = Instant::now();
    while steady_started.elapsed() < steady {
        tokio::select! {
            _ = events_at.tick() => {
                let Some(appliance) = for_events.next() else { continue };
                let topic = DeviceTopic::new(appliance, Channel::Events).to_string();
                let payload =
                    Envelope::new(MessageId(Uuid::new_v4()), appliance, Utc::now(), switch_event(true))
                        .encode();
                let handed = Instant::now();
                events_to_ingest[event_waits.len() % events_to_ingest.len()]
                    .send((topic.into_bytes(), payload))
                    .await
                    .expect("ingest takes events");
                let owner = cloud.owner_pool.clone();
                event_waits.spawn(async move {
                    loop {
                        let raised: bool = sqlx::query_scalar(
                            // Resolved or not: the appliance's next sample on the fibre may
                            // already have cleared it (alerts clear from the observed state).
                            "SELECT EXISTS (SELECT 1 FROM alerts WHERE appliance_id = $1 AND kind = 'failover')",
                        )
                        .bind(appliance.as_uuid())
                        .fetch_one(&owner)
                        .await
                        .expect("alert query");
                        if raised {
                            return handed.elapsed();
                        }
                        assert!(handed.elapsed() < Duration::from_secs(120), "no alert in 120 s");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
            }
            _ = pages_at.tick() => {
                let get = |path: &'static str| {
                    let request = cloud.http.get(cloud.url(path)).bearer_auth(&admin);
                    async move {
                        let started = Instant::now();
                        let response = request.send().await.expect("request");
                        assert!(response.status().is_success(), "{path}: {}", response.status());
                        response.bytes().await.expect("body");
                        started.elapsed()
                    }
                };
                let page = Instant::now();
                let (totals, practices) = tokio::join!(
                    get("/api/v1/fleet/totals"),
                    get("/api/v1/practices?limit=50")
                );
                page_latencies[0].push(totals);
                page_latencies[1].push(practices);
                page_latencies[2].push(page.elapsed());
            }
        }
    }
    let offered = producer.await.expect("producer");
    let steady_secs_measured = steady_started.elapsed().as_secs_f64();
    let stored_in_steady = stored(&metrics) - before_steady;
    while let Some(latency) = event_waits.join_next().await {
        event_latencies.push(latency.expect("event wait"));
    }
    // Whatever was still waiting is stored, then counted in PostgreSQL.
    stored_reaches(
        &metrics,
        (drain_messages + offered) as u64,
        Duration::from_secs(1800),
    )
    .await;
    let (count, distinct) = rows(&cloud.owner_pool, demo.tenant_id.0).await;
    let expected = (drain_messages + offered) as i64;
    let lost = expected - distinct;
    let duplicated = count - distinct;
    println!(
        "| steady, {rate}/s offered for {steady_secs} s | {offered} | {steady_secs_measured:.1} s | {:.0} | {lost} | {duplicated} |",
        stored_in_steady as f64 / steady_secs_measured
    );
    assert_eq!((lost, duplicated), (0, 0), "nothing lost, nothing doubled");

    event_latencies.sort();
    println!(
        "\n| at that load | samples | p50 | p95 | p99 | max | goal |\n|---|---|---|---|---|---|---|"
    );
    let row = |label: &str, times: &mut Vec<Duration>, goal: &str| {
        times.sort();
        println!(
            "| {label} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {goal} |",
            times.len(),
            ms(percentile(times, 50.0)),
            ms(percentile(times, 95.0)),
            ms(percentile(times, 99.0)),
            ms(percentile(times, 100.0)),
        );
    };
    row(
        "failover event → alert row",
        &mut event_latencies,
        "p99 ≤ 2 s",
    );
    let [totals, practices, page] = &mut page_latencies;
    row("`/api/v1/fleet/totals`", totals, "—");
    row("`/api/v1/practices?limit=50`", practices, "—");
    row("fleet overview (both, in parallel)", page, "p95 ≤ 100 ms");

    stop.cancel();
    drop((to_ingest, events_to_ingest));
    for task in ingest_tasks {
        task.await.expect("ingest stops");
    }
}
