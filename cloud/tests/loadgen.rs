//! The load generator against a real cloud (issue 18), scaled down for CI: 50 light simulated
//! appliances enrol through the API, keep TLS sessions on the embedded broker with their own
//! certificates, publish telemetry every second and fail over and back for 10 s. What the
//! generator reports as acknowledged must be in PostgreSQL exactly once, and the fleet API must
//! count every appliance online while they run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{eventually, spawn_cloud};
use stayopen_shared::ApplianceId;
use stayopen_shared::api::CreateEnrollmentToken;
use stayopen_testkit::loadgen::{self, LoadOptions, MessageKind};
use uuid::Uuid;

const APPLIANCES: usize = 50;

/// How many rows of `table` hold each of `ids` (ids with no row are absent).
async fn rows_by_id(pool: &sqlx::PgPool, table: &str, ids: &[Uuid]) -> BTreeMap<Uuid, i64> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT message_id, count(*) FROM {table} WHERE message_id = ANY($1) GROUP BY message_id"
    )))
    .bind(ids)
    .fetch_all(pool)
    .await
    .expect("count rows by message id");
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simulated_appliances_lose_and_duplicate_nothing_the_cloud_acknowledged_and_all_show_online()
 {
    let cloud = spawn_cloud().await;
    let seed = cloud.seed_demo().await;
    let admin = cloud.api_as(&seed.email, &seed.password).await;
    let mut tokens = Vec::new();
    for practice in &seed.practices {
        let token = admin
            .create_enrollment_token(
                practice.id,
                &CreateEnrollmentToken {
                    expires_in_hours: 1,
                    max_uses: APPLIANCES as u32,
                    site_id: None,
                },
            )
            .await
            .expect("an enrolment token");
        tokens.push(token.token);
    }

    let options = LoadOptions {
        enrol_concurrency: 8,
        connect_concurrency: APPLIANCES,
        telemetry_interval: Duration::from_secs(1),
        failovers_per_sec: 2.0,
        failback_after: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(30),
        ..LoadOptions::new(&cloud.base_url, tokens, APPLIANCES)
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(loadgen::run(options, stop_rx));

    // While the fleet runs, the API counts all of it online.
    let totals = eventually(Duration::from_secs(40), "50 appliances online", || async {
        let totals = admin.fleet_totals().await.ok()?;
        (totals.online as usize == APPLIANCES).then_some(totals)
    })
    .await;
    assert_eq!(totals.appliances as usize, APPLIANCES);
    let fleet: BTreeSet<ApplianceId> = admin
        .fleet()
        .await
        .expect("the fleet")
        .practices
        .into_iter()
        .flat_map(|p| p.appliances)
        .filter(|a| a.online)
        .map(|a| a.id)
        .collect();

    let report = run
        .await
        .expect("the load generator's task")
        .expect("the load generator runs");
    println!("{}", report.summary());
    assert_eq!(
        report.enrolment.enrolled, APPLIANCES,
        "{:?}",
        report.enrolment
    );
    assert_eq!(report.connect.connected, APPLIANCES);
    assert!(report.connect.all_connected_secs.is_some());
    assert_eq!(
        report
            .appliance_ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        fleet,
        "the appliances online in the fleet API are the generator's"
    );
    assert!(report.drained, "the cloud acknowledged everything");
    assert!(
        report.failovers >= 5 && report.failbacks == report.failovers,
        "failovers injected and each failed back: {} / {}",
        report.failovers,
        report.failbacks
    );
    // Nothing was held back by the generator itself, so every record sent counts.
    for counts in [&report.telemetry, &report.events] {
        assert_eq!(counts.not_queued, 0);
        assert_eq!(counts.cloud_refused, 0);
        assert_eq!(counts.broker_acknowledged, counts.sent, "{counts:?}");
        assert_eq!(counts.cloud_stored, counts.sent, "{counts:?}");
    }
    assert!(report.telemetry.sent >= (APPLIANCES * 8) as u64);
    assert_eq!(report.events.sent, report.failovers + report.failbacks);

    // PostgreSQL holds each acknowledged record exactly once, and nothing else from this fleet.
    for (kind, table) in [
        (MessageKind::Telemetry, "telemetry"),
        (MessageKind::Event, "appliance_events"),
    ] {
        let acknowledged: Vec<Uuid> = report
            .broker_acknowledged_records()
            .filter(|m| m.kind == kind)
            .map(|m| m.id.0)
            .collect();
        let rows = rows_by_id(&cloud.owner_pool, table, &acknowledged).await;
        let lost: Vec<&Uuid> = acknowledged
            .iter()
            .filter(|id| !rows.contains_key(id))
            .collect();
        let doubled: Vec<(&Uuid, &i64)> = rows.iter().filter(|(_, n)| **n != 1).collect();
        assert!(lost.is_empty(), "{table}: {} lost: {lost:?}", lost.len());
        assert!(doubled.is_empty(), "{table}: duplicated: {doubled:?}");
        let appliances: Vec<Uuid> = report.appliance_ids.iter().map(|a| a.0).collect();
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE appliance_id = ANY($1)"
        )))
        .bind(&appliances)
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count the fleet's rows");
        assert_eq!(
            stored as usize,
            acknowledged.len(),
            "{table}: the fleet's rows are exactly what it sent"
        );
    }
    // The failovers were taken as such: each appliance's events alternate failover, failback.
    let kinds: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT appliance_id, kind FROM appliance_events ORDER BY appliance_id, sent_at",
    )
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("events");
    let mut by_appliance: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for (appliance, kind) in kinds {
        by_appliance.entry(appliance).or_default().push(kind);
    }
    for (appliance, kinds) in by_appliance {
        for pair in kinds.chunks(2) {
            assert_eq!(pair, ["failover", "failback"], "{appliance}: {kinds:?}");
        }
    }
}
