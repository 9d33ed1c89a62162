//! Nothing lost, nothing doubled: the appliance's outbox and the cloud's acknowledgements under a
//! cloud killed with SIGKILL, a cloud down while failovers and a drill happen, and an agent
//! restarted while the cloud is away. The cloud runs as a real process (`stayopen-cloud serve`)
//! with its embedded broker, on a real PostgreSQL; the appliance side is the real agent or its
//! real cloud link.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::burst::{Burst, start_burst};
use common::client::ApiClient;
use common::events::{emitted, outbox_empty_since, stored as stored_in, stored_at_least};
use common::process::CloudProcess;
use common::{appliance_config, eventually, settled};
use stayopen_appliance::agent::{self, AgentOptions, Exit};
use stayopen_appliance::cloud_link::CloudLink;
use stayopen_appliance::config::{ApplianceConfig, Outage, OutageKind};
use stayopen_appliance::control::{self, Request};
use stayopen_cloud::domain::seed;
use stayopen_shared::ApplianceId;
use stayopen_shared::telemetry::UplinkHealth;
use tokio::sync::watch;
use uuid::Uuid;

async fn appliance_id_of(cloud: &CloudProcess, serial: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT id FROM appliances WHERE serial = $1")
        .bind(serial)
        .fetch_optional(&cloud.owner_pool)
        .await
        .expect("query")
}

/// Telemetry every second and a 5 s clean period before failback: an appliance's life in test time.
fn quick_policy() -> serde_json::Value {
    serde_json::json!({"telemetry_interval_secs": 1, "failback_clean_period_secs": 5})
}

/// The demo tenant on an in-process cloud, its admin's token, and the quick policy in force.
async fn seeded_with_quick_policy(cloud: &common::TestCloud) -> (seed::DemoSeed, ApiClient) {
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    admin.set_policy(&quick_policy()).await.expect("policy");
    (demo, admin)
}

/// The events the cloud stored for `appliance`, in the order it stored them.
async fn stored(cloud: &CloudProcess, appliance: Uuid) -> Vec<(String, i64)> {
    stored_in(&cloud.owner_pool, appliance).await
}

/// The link's counters and the end of the cloud's log, for a failure message.
fn diagnose(cloud: &CloudProcess, link: &CloudLink) -> String {
    let log = cloud.log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    format!(
        "acknowledged {}, published (all, resent) {:?}, connections {}, connected {}, outbox {:?}; cloud log:\n{}",
        link.acknowledged_count(),
        link.published_count(),
        link.connections(),
        link.is_connected(),
        link.outbox_report(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

fn start_agent(
    config: ApplianceConfig,
    events_file: &Path,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<Exit, agent::AgentError>>,
) {
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config,
            events_file: Some(events_file.to_owned()),
            seed: 5,
        },
        stopped,
    ));
    (stop, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_ten_thousand_messages_survives_a_sigkill_of_the_cloud_with_none_lost_or_doubled()
 {
    const BURST: usize = 10_000;
    let mut cloud = CloudProcess::start(&[]).await;
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");
    let Burst {
        link,
        identity,
        appending: burst,
        inbound: _keep_listening,
        state: _keep_state,
    } = start_burst(
        &cloud.base_url(),
        &demo.practices[0].enrollment_token,
        "SO-BURST-0001",
        "02:53:4f:00:10:01",
        "burst",
        BURST,
    )
    .await;
    let acknowledged = tokio::time::timeout(Duration::from_secs(120), async {
        while link.acknowledged_count() < 1_500 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        acknowledged.is_ok(),
        "a part of the burst acknowledged: {}",
        diagnose(&cloud, &link)
    );
    cloud.kill();
    let acknowledged_before_kill = link.acknowledged_count();
    // The cloud stays away until the link has noticed it is gone.
    eventually(
        Duration::from_secs(30),
        "the link losing the cloud",
        || async { (!link.is_connected()).then_some(()) },
    )
    .await;
    cloud.spawn().await;
    burst.await.expect("burst appended");
    let drained = tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            if let Some(report) = link.outbox_report().filter(|r| r.pending == 0) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let report =
        drained.unwrap_or_else(|_| panic!("the outbox drained: {}", diagnose(&cloud, &link)));

    let appliance = identity.appliance_id.0;
    let (rows, distinct_ids, distinct_bodies): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT message_id), count(DISTINCT body->>'reason')
         FROM appliance_events WHERE appliance_id = $1 AND body->>'reason' LIKE 'burst %'",
    )
    .bind(appliance)
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("count");
    println!(
        "sigkill burst: sent {BURST}, acknowledged before the kill {acknowledged_before_kill}, \
         stored {rows}, distinct message ids {distinct_ids}, duplicates {}, lost {}",
        rows - distinct_ids,
        BURST as i64 - distinct_bodies
    );
    assert_eq!(
        distinct_bodies, BURST as i64,
        "every message of the burst stored"
    );
    assert_eq!(rows, distinct_ids, "no message stored twice");
    assert_eq!(rows, BURST as i64);
    assert_eq!(report.events_dropped, 0);
    assert_eq!(link.unstored(), 0);
    link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failovers_and_a_drill_while_the_cloud_is_down_arrive_exactly_once_and_in_order_across_an_agent_restart()
 {
    let mut cloud = CloudProcess::start(&[]).await;
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    admin.set_policy(&quick_policy()).await.expect("policy");
    let state = tempfile::tempdir().expect("state");
    let events_file = state.path().join("events.jsonl");
    // The primary goes black 14 s after the start: by then the cloud is dead.
    let config = appliance_config(
        &cloud.base_url(),
        &demo.practices[0].enrollment_token,
        state.path(),
        Some(Outage {
            start_secs: 14,
            duration_secs: 3,
            kind: OutageKind::Blackhole,
        }),
    );
    let (stop, run) = start_agent(config.clone(), &events_file);
    let appliance = eventually(
        Duration::from_secs(30),
        "the appliance enrolled",
        || async { appliance_id_of(&cloud, "SO-TEST-0001").await },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the policy applied and reported",
        || async {
            stored(&cloud, appliance)
                .await
                .iter()
                .any(|(kind, _)| kind == "policy_applied")
                .then_some(())
        },
    )
    .await;
    cloud.kill();

    // Offline: the outage (failover, failback), then a drill.
    let events_so_far = || emitted(&events_file);
    eventually(
        Duration::from_secs(40),
        "a failback while offline",
        || async {
            events_so_far()
                .iter()
                .any(|(kind, _)| kind == "failback")
                .then_some(())
        },
    )
    .await;
    let answer = control::request(state.path(), &Request::StartDrill { duration_secs: 3 })
        .await
        .expect("drill");
    assert!(format!("{answer:?}").contains("drill"), "{answer:?}");
    eventually(
        Duration::from_secs(30),
        "the drill finished while offline",
        || async {
            let kinds: Vec<_> = events_so_far().into_iter().map(|(k, _)| k).collect();
            (kinds
                .iter()
                .any(|k| k == "drill_finished" || k == "drill_failed")
                && kinds.iter().filter(|k| *k == "failback").count() >= 2)
                .then_some(())
        },
    )
    .await;

    // The agent restarts while the cloud is still away.
    stop.send(true).expect("stop");
    run.await.expect("agent task").expect("agent");
    let (stop, run) = start_agent(config, &events_file);
    eventually(
        Duration::from_secs(10),
        "the restarted agent's start event",
        || async {
            (events_so_far()
                .iter()
                .filter(|(kind, _)| kind == "agent_started")
                .count()
                == 2)
                .then_some(())
        },
    )
    .await;
    // The restarted agent runs offline: its links probed, its telemetry going to the outbox.
    eventually(
        Duration::from_secs(30),
        "the restarted agent probing its links offline",
        || async {
            match control::request(state.path(), &Request::Status).await {
                Ok(control::Response::Status(status)) => status
                    .uplinks
                    .iter()
                    .all(|u| u.health != UplinkHealth::Unknown)
                    .then_some(()),
                _ => None,
            }
        },
    )
    .await;

    cloud.spawn().await;
    let emitted_offline = events_so_far();
    eventually(
        Duration::from_secs(90),
        "every emitted event stored",
        || async { (stored(&cloud, appliance).await.len() >= emitted_offline.len()).then_some(()) },
    )
    .await;
    // Resends could still show up as duplicates until the appliance reports an empty outbox.
    let all_stored = Utc::now();
    eventually(
        Duration::from_secs(30),
        "an empty outbox reported",
        || async {
            outbox_empty_since(&cloud.owner_pool, appliance, all_stored)
                .await
                .then_some(())
        },
    )
    .await;
    stop.send(true).expect("stop");
    run.await.expect("agent task").expect("agent");
    let emitted_all = events_so_far();
    let stored_all = stored_at_least(&cloud.owner_pool, appliance, emitted_all.len()).await;
    let kinds: HashSet<&str> = emitted_all.iter().map(|(k, _)| k.as_str()).collect();
    for kind in ["failover", "failback", "drill_started", "agent_started"] {
        assert!(kinds.contains(kind), "{kind} emitted: {kinds:?}");
    }
    println!(
        "cloud down: emitted {}, stored {}, duplicates {}",
        emitted_all.len(),
        stored_all.len(),
        stored_all.len() as i64 - emitted_all.len() as i64
    );
    assert_eq!(
        stored_all, emitted_all,
        "the cloud stores every event once, in the order the appliance emitted them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloud_restart_raises_no_offline_alert_for_appliances_that_reconnect_but_one_that_went_away_gets_it()
 {
    let mut cloud = CloudProcess::start(&[
        ("STAYOPEN_FLEET__OFFLINE_AFTER_SECS", "4"),
        ("STAYOPEN_FLEET__OFFLINE_GRACE_SECS", "30"),
    ])
    .await;
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");
    // Telemetry every second, so a live box is never silent for the 4 s that mark one offline.
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    admin
        .set_policy(&serde_json::json!({"telemetry_interval_secs": 1}))
        .await
        .expect("policy");
    let token = &demo.practices[0].enrollment_token;
    let stays_dir = tempfile::tempdir().expect("state");
    let leaves_dir = tempfile::tempdir().expect("state");
    let stays = appliance_config(&cloud.base_url(), token, stays_dir.path(), None);
    let mut leaves = appliance_config(&cloud.base_url(), token, leaves_dir.path(), None);
    leaves.appliance.serial = Some("SO-TEST-0002".into());
    leaves.appliance.mac = Some("02:53:4f:00:00:02".into());
    let (stop_stays, run_stays) = start_agent(stays, &stays_dir.path().join("events.jsonl"));
    let (stop_leaves, run_leaves) = start_agent(leaves, &leaves_dir.path().join("events.jsonl"));
    let owner_pool = cloud.owner_pool.clone();
    let online = |serial: &'static str| {
        let pool = owner_pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM appliances WHERE serial = $1 AND online")
                .bind(serial)
                .fetch_optional(&pool)
                .await
                .expect("query")
        }
    };
    let stays_id = eventually(Duration::from_secs(30), "the first online", || {
        online("SO-TEST-0001")
    })
    .await;
    let leaves_id = eventually(Duration::from_secs(30), "the second online", || {
        online("SO-TEST-0002")
    })
    .await;

    cloud.kill();
    // One box goes away for good while the cloud is down; its goodbye reaches nobody.
    stop_leaves.send(true).expect("stop");
    run_leaves.await.expect("agent task").expect("agent");
    // Down for longer than the silence that marks a box offline: both boxes silent for twice
    // that in the cloud's records.
    eventually(
        Duration::from_secs(30),
        "both boxes silent for 8 s in the cloud's records",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT bool_and(last_seen < now() - interval '8 seconds') FROM appliances
                 WHERE id = ANY($1)",
            )
            .bind([stays_id, leaves_id])
            .fetch_one(&owner_pool)
            .await
            .expect("query")
            .then_some(())
        },
    )
    .await;
    cloud.spawn().await;

    let offline_alerts = |appliance: Uuid| {
        let pool = owner_pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM alerts WHERE appliance_id = $1 AND kind = 'appliance_offline'",
            )
            .bind(appliance)
            .fetch_one(&pool)
            .await
            .expect("query")
        }
    };
    eventually(
        Duration::from_secs(60),
        "the box that went away declared offline after the grace period",
        || async { (offline_alerts(leaves_id).await > 0).then_some(()) },
    )
    .await;
    assert_eq!(
        offline_alerts(stays_id).await,
        0,
        "the box that reconnected was never declared offline: {}",
        cloud.log()
    );
    assert!(online("SO-TEST-0001").await.is_some());
    stop_stays.send(true).expect("stop");
    run_stays.await.expect("agent task").expect("agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_on_a_cut_line_reaches_the_cloud_exactly_once_and_the_cut_line_fires_the_last_will()
{
    let line = common::proxy::CuttableLine::start().await;
    let cloud = common::spawn_cloud_with(|config| {
        config.broker.public_port = Some(line.addr.port());
    })
    .await;
    line.connect_to(cloud.broker);
    let (demo, admin) = seeded_with_quick_policy(&cloud).await;
    let state = tempfile::tempdir().expect("state");
    let events_file = state.path().join("events.jsonl");
    let config = appliance_config(
        &cloud.base_url,
        &demo.practices[0].enrollment_token,
        state.path(),
        None,
    );
    let (stop, run) = start_agent(config, &events_file);
    let online = || async {
        sqlx::query_scalar::<_, bool>("SELECT online FROM appliances WHERE serial = 'SO-TEST-0001'")
            .fetch_optional(&cloud.owner_pool)
            .await
            .expect("query")
    };
    let appliance: Uuid = eventually(
        Duration::from_secs(30),
        "the policy applied and reported",
        || async {
            let id: Option<Uuid> = sqlx::query_scalar(
                "SELECT appliance_id FROM appliance_events WHERE kind = 'policy_applied'",
            )
            .fetch_optional(&cloud.owner_pool)
            .await
            .expect("query");
            id
        },
    )
    .await;

    // The line dies without a word from the appliance: the broker publishes its last will.
    line.cut();
    eventually(
        Duration::from_secs(20),
        "the last will marking it offline",
        || async { (online().await == Some(false)).then_some(()) },
    )
    .await;
    let answer = control::request(state.path(), &Request::StartDrill { duration_secs: 2 })
        .await
        .expect("drill");
    assert!(format!("{answer:?}").contains("drill"), "{answer:?}");
    eventually(
        Duration::from_secs(30),
        "the drill finished on the cut line",
        || async {
            emitted(&events_file)
                .iter()
                .any(|(k, _)| k == "drill_finished" || k == "drill_failed")
                .then_some(())
        },
    )
    .await;
    line.restore();
    let emitted_offline = emitted(&events_file);
    eventually(
        Duration::from_secs(60),
        "every event stored after the line came back",
        || async {
            (stored_in(&cloud.owner_pool, appliance).await.len() >= emitted_offline.len())
                .then_some(())
        },
    )
    .await;
    let all_stored = Utc::now();
    // The appliance reports its outbox in its telemetry, and the API shows it: nothing waits,
    // nothing was given up. (Reported after every event was stored: resends that were going to
    // double anything would have been sent before it.)
    eventually(
        Duration::from_secs(15),
        "an empty outbox reported",
        || async {
            outbox_empty_since(&cloud.owner_pool, appliance, all_stored)
                .await
                .then_some(())
        },
    )
    .await;
    let outbox = eventually(
        Duration::from_secs(15),
        "an empty outbox in the API",
        || async {
            let view = admin.appliance(ApplianceId(appliance)).await.ok()?;
            view.outbox.filter(|o| o.pending == 0)
        },
    )
    .await;
    assert_eq!(
        outbox.events_dropped + outbox.telemetry_dropped,
        0,
        "{outbox:?}"
    );
    stop.send(true).expect("stop");
    run.await.expect("agent task").expect("agent");
    let emitted_all = emitted(&events_file);
    let stored_all = stored_at_least(&cloud.owner_pool, appliance, emitted_all.len()).await;
    assert!(
        emitted_all.iter().any(|(k, _)| k == "drill_started"),
        "{emitted_all:?}"
    );
    println!(
        "cut line: emitted {}, stored {}, duplicates {}",
        emitted_all.len(),
        stored_all.len(),
        stored_all.len() as i64 - emitted_all.len() as i64
    );
    assert_eq!(stored_all, emitted_all);
    // Offline by the broker's last will, seconds after the cut — not by the heartbeat sweep,
    // which needs 10 s of silence and words its alert "no message for …".
    let summaries: Vec<String> = sqlx::query_scalar(
        "SELECT summary FROM alerts WHERE appliance_id = $1 AND kind = 'appliance_offline'",
    )
    .bind(appliance)
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("alerts");
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("connection to the cloud closed")),
        "the last will raised the offline alert: {summaries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_gone_for_twenty_seconds_loses_no_event_and_declares_nobody_offline() {
    let cloud = common::spawn_cloud_with(|config| {
        config.fleet.offline_after_secs = 4;
        config.fleet.offline_grace_secs = 15;
    })
    .await;
    let (demo, _admin) = seeded_with_quick_policy(&cloud).await;
    let not_hearing = "stayopen_offline_judgement_suspended_total{reason=\"not_hearing\"}";
    let state = tempfile::tempdir().expect("state");
    let events_file = state.path().join("events.jsonl");
    let config = appliance_config(
        &cloud.base_url,
        &demo.practices[0].enrollment_token,
        state.path(),
        None,
    );
    let (stop, run) = start_agent(config, &events_file);
    let appliance: Uuid = eventually(
        Duration::from_secs(30),
        "the policy applied and reported",
        || async {
            sqlx::query_scalar(
                "SELECT appliance_id FROM appliance_events WHERE kind = 'policy_applied'",
            )
            .fetch_optional(&cloud.owner_pool)
            .await
            .expect("query")
        },
    )
    .await;
    // Past the start-up grace, so the sweep is judging: it stops counting suspensions.
    let suspended = settled(
        Duration::from_secs(60),
        Duration::from_secs(3),
        "the suspensions of the start-up grace",
        || cloud.counter(not_hearing),
    )
    .await;

    // The application role loses the database: its sessions end and new ones are refused.
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("name");
    let revoke = format!("REVOKE CONNECT ON DATABASE \"{database}\" FROM PUBLIC");
    sqlx::raw_sql(sqlx::AssertSqlSafe(revoke))
        .execute(&cloud.owner_pool)
        .await
        .expect("revoke");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND usename = 'stayopen_app'",
    )
    .execute(&cloud.owner_pool)
    .await
    .expect("terminate");
    eventually(
        Duration::from_secs(30),
        "the sweep suspended for want of the database",
        || async { (cloud.counter(not_hearing).await > suspended).then_some(()) },
    )
    .await;
    // Meanwhile the appliance drills (its events wait in the broker and its outbox).
    let answer = control::request(state.path(), &Request::StartDrill { duration_secs: 2 })
        .await
        .expect("drill");
    assert!(format!("{answer:?}").contains("drill"), "{answer:?}");
    // The database stays away until the appliance has been silent in the cloud's records for
    // twenty seconds (five times the offline threshold, past the grace) and its drill is over.
    eventually(
        Duration::from_secs(60),
        "twenty seconds of silence and the drill over",
        || async {
            let silent: bool = sqlx::query_scalar(
                "SELECT last_seen < now() - interval '20 seconds' FROM appliances WHERE id = $1",
            )
            .bind(appliance)
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("query");
            let drilled = emitted(&events_file)
                .iter()
                .any(|(k, _)| k == "drill_finished" || k == "drill_failed");
            (silent && drilled).then_some(())
        },
    )
    .await;
    let grant = format!("GRANT CONNECT ON DATABASE \"{database}\" TO PUBLIC");
    sqlx::raw_sql(sqlx::AssertSqlSafe(grant))
        .execute(&cloud.owner_pool)
        .await
        .expect("grant");

    let emitted_offline = emitted(&events_file);
    eventually(
        Duration::from_secs(60),
        "every event stored once the database is back",
        || async {
            (stored_in(&cloud.owner_pool, appliance).await.len() >= emitted_offline.len())
                .then_some(())
        },
    )
    .await;
    let offline = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM alerts WHERE appliance_id = $1 AND kind = 'appliance_offline'",
        )
        .bind(appliance)
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("alerts")
    };
    // Past the grace after hearing resumed, until the sweep has judged for a while (its
    // suspensions stop): a sweep that was going to misjudge would have.
    settled(
        Duration::from_secs(60),
        Duration::from_secs(3),
        "the suspensions of the grace after hearing resumed",
        || async {
            assert_eq!(
                offline().await,
                0,
                "nobody declared offline while the cloud could not hear"
            );
            cloud.counter(not_hearing).await
        },
    )
    .await;
    assert_eq!(
        offline().await,
        0,
        "nobody declared offline while the cloud could not hear"
    );
    stop.send(true).expect("stop");
    run.await.expect("agent task").expect("agent");
    let emitted_all = emitted(&events_file);
    let stored_all = stored_at_least(&cloud.owner_pool, appliance, emitted_all.len()).await;
    println!(
        "database gone: emitted {}, stored {}, duplicates {}",
        emitted_all.len(),
        stored_all.len(),
        stored_all.len() as i64 - emitted_all.len() as i64
    );
    assert!(emitted_all.iter().any(|(k, _)| k == "drill_started"));
    assert_eq!(stored_all, emitted_all);
    assert!(
        cloud.counter(not_hearing).await > suspended,
        "the sweep was suspended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigterm_during_a_burst_stops_the_cloud_within_its_deadline_and_loses_nothing() {
    const BURST: usize = 2_000;
    let mut cloud = CloudProcess::start(&[]).await;
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");
    let Burst {
        link,
        identity,
        appending: burst,
        inbound: _keep_listening,
        state: _keep_state,
    } = start_burst(
        &cloud.base_url(),
        &demo.practices[0].enrollment_token,
        "SO-TERM-0001",
        "02:53:4f:00:11:01",
        "term",
        BURST,
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "a part of the burst acknowledged",
        || async { (link.acknowledged_count() >= 300).then_some(()) },
    )
    .await;
    // Stopped as a service manager stops it, in the middle of the burst: HTTP finishes its
    // requests, ingest the message it holds, and the process exits on its own in time.
    let status = cloud
        .terminate(Duration::from_secs(25))
        .await
        .unwrap_or_else(|| panic!("the cloud did not stop within 25 s: {}", cloud.log()));
    assert!(status.success(), "{status}: {}", cloud.log());
    let log = cloud.log();
    assert!(
        log.contains("background work stopped") && log.contains("left=0"),
        "every background task stopped: {log}"
    );
    cloud.spawn().await;
    burst.await.expect("burst appended");
    eventually(Duration::from_secs(120), "the outbox drained", || async {
        link.outbox_report().filter(|r| r.pending == 0)
    })
    .await;
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT body->>'reason') FROM appliance_events
         WHERE appliance_id = $1 AND body->>'reason' LIKE 'term %'",
    )
    .bind(identity.appliance_id.0)
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("count");
    println!("sigterm burst: sent {BURST}, stored {rows}, distinct {distinct}");
    assert_eq!((rows, distinct), (BURST as i64, BURST as i64));
    link.shutdown().await;
}
