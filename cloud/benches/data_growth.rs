//! Disk per appliance per month, and per year at 10,000 appliances (issue 18, data growth).
//!
//! What is measured: one simulated appliance (the demo fleet's configuration: fibre and an LTE
//! backup with its modem, the five-application register, the session-safe tunnel) runs against a
//! test cloud and its telemetry goes through ingest into PostgreSQL; the median stored body is
//! then written `SAMPLE_APPLIANCES` × one day at the 10-second cadence into a monthly partition
//! of its own, and the hourly roll-ups (`telemetry_hourly` per uplink, `availability_hourly`) for
//! the same appliance-days. Sizes are PostgreSQL's (`pg_total_relation_size`: heap, TOAST and
//! indexes) after `VACUUM ANALYZE`, divided by rows. Events are measured the same way from the
//! rows ingest stored; their monthly count is an assumption, printed with the result.
//!
//! `STAYOPEN_TEST_DATABASE_URL=… cargo bench -p stayopen-cloud --bench data_growth`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{eventually, spawn_cloud};
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_testkit::fleet_sim::{FleetOptions, appliance_config};
use tokio::sync::watch;

/// Appliance-days written for the measurement.
const SAMPLE_APPLIANCES: i64 = 5;
/// Telemetry every 10 s: the default cadence.
const ROWS_PER_DAY: i64 = 8_640;
const DAYS_PER_MONTH: f64 = 30.44;
const FLEET: f64 = 10_000.0;
/// Raw telemetry kept (`retention.telemetry_days`, default 90); roll-ups and events six years.
const RAW_RETENTION_DAYS: f64 = 90.0;
/// Events per appliance per month assumed for the totals: a weekly failover and failback, a
/// monthly drill's start and finish, uplink flaps and agent restarts — generous for a healthy line.
const EVENTS_PER_MONTH: f64 = 100.0;

async fn size_of(pool: &sqlx::PgPool, relation: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
        .bind(relation)
        .fetch_one(pool)
        .await
        .expect("size")
}

async fn vacuum(pool: &sqlx::PgPool, relation: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {relation}")))
        .execute(pool)
        .await
        .expect("vacuum");
}

fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn gb(bytes: f64) -> String {
    format!("{:.0} GB", bytes / 1e9)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    stayopen_cloud::domain::seed::seed_demo_compliance(
        &cloud.pool,
        demo.tenant_id,
        chrono::Utc::now(),
    )
    .await
    .expect("register");
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    admin
        .set_policy(&serde_json::json!({"telemetry_interval_secs": 1}))
        .await
        .expect("policy");
    let state = tempfile::tempdir().expect("state");
    let options = FleetOptions {
        api_url: cloud.base_url.clone(),
        enrollment_tokens: vec![demo.practices[0].enrollment_token.clone()],
        first_index: 0,
        count: 1,
        state_root: state.path().to_owned(),
        telemetry_interval_secs: 1,
    };
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(&options, 1),
            events_file: None,
            seed: 1,
        },
        stopped,
    ));
    let db = &cloud.owner_pool;
    // Telemetry with the applications' checks and the tunnel's report in it, as in steady state.
    eventually(
        Duration::from_secs(90),
        "telemetry with applications and the tunnel",
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM telemetry
                 WHERE jsonb_array_length(body->'apps') > 0 AND body ? 'tunnel'",
            )
            .fetch_one(db)
            .await
            .ok()?;
            (n >= 20).then_some(())
        },
    )
    .await;
    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent");

    let (appliance, tenant, body, body_bytes): (uuid::Uuid, uuid::Uuid, serde_json::Value, i32) =
        sqlx::query_as(
            "SELECT appliance_id, tenant_id, body, pg_column_size(body) FROM telemetry
             WHERE jsonb_array_length(body->'apps') > 0
             ORDER BY pg_column_size(body) LIMIT 1
             OFFSET (SELECT count(*) / 2 FROM telemetry WHERE jsonb_array_length(body->'apps') > 0)",
        )
        .fetch_one(db)
        .await
        .expect("a stored body");

    // Raw telemetry: a month partition of its own, filled at the 10 s cadence.
    sqlx::query("SELECT stayopen_ensure_telemetry_partition('2025-01-01')")
        .execute(db)
        .await
        .expect("partition");
    let rows = SAMPLE_APPLIANCES * ROWS_PER_DAY;
    sqlx::query(
        "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, received_at, body)
         SELECT gen_random_uuid(), $1, $2,
                timestamptz '2025-01-10 00:00:00+00' + (n / $4) * interval '1 day'
                    + (n % $4) * interval '10 seconds',
                timestamptz '2025-01-10 00:00:00+00' + (n / $4) * interval '1 day'
                    + (n % $4) * interval '10 seconds' + interval '80 milliseconds',
                $3
         FROM generate_series(0, $5 - 1) AS n",
    )
    .bind(appliance)
    .bind(tenant)
    .bind(&body)
    .bind(ROWS_PER_DAY)
    .bind(rows)
    .execute(db)
    .await
    .expect("raw telemetry");
    vacuum(db, "telemetry_2025_01").await;
    let raw_bytes = size_of(db, "telemetry_2025_01").await as f64 / rows as f64;

    // The hourly roll-ups of the same appliance-days: two uplinks, one availability row.
    let hours = SAMPLE_APPLIANCES * 24;
    let (hourly_before, availability_before) = (
        size_of(db, "telemetry_hourly").await,
        size_of(db, "availability_hourly").await,
    );
    let (hourly_rows_before, availability_rows_before): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM telemetry_hourly), (SELECT count(*) FROM availability_hourly)",
    )
    .fetch_one(db)
    .await
    .expect("counts");
    for uplink in ["fiber", "lte"] {
        sqlx::query(
            "INSERT INTO telemetry_hourly
                 (tenant_id, appliance_id, uplink, hour, samples, rtt_sum, rtt_samples, loss_sum)
             SELECT $1, $2, $3, timestamptz '2024-01-01 00:00:00+00' + n * interval '1 hour',
                    360, 4321.5, 360, 12.5
             FROM generate_series(0, $4 - 1) AS n",
        )
        .bind(tenant)
        .bind(appliance)
        .bind(uplink)
        .bind(hours)
        .execute(db)
        .await
        .expect("telemetry_hourly");
    }
    sqlx::query(
        "INSERT INTO availability_hourly
             (tenant_id, appliance_id, hour, observed_secs, primary_secs, effective_secs, backup_secs)
         SELECT $1, $2, timestamptz '2024-01-01 00:00:00+00' + n * interval '1 hour', 3600, 3600, 3600, 0
         FROM generate_series(0, $3 - 1) AS n",
    )
    .bind(tenant)
    .bind(appliance)
    .bind(hours)
    .execute(db)
    .await
    .expect("availability_hourly");
    vacuum(db, "telemetry_hourly").await;
    vacuum(db, "availability_hourly").await;
    let (hourly_rows, availability_rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM telemetry_hourly), (SELECT count(*) FROM availability_hourly)",
    )
    .fetch_one(db)
    .await
    .expect("counts");
    let hourly_bytes = (size_of(db, "telemetry_hourly").await - hourly_before) as f64
        / (hourly_rows - hourly_rows_before) as f64;
    let availability_bytes = (size_of(db, "availability_hourly").await - availability_before)
        as f64
        / (availability_rows - availability_rows_before) as f64;

    // Events: the stored failover event, written 10,000 times (a table's first pages and
    // indexes would swamp a handful of rows).
    const EVENT_COPIES: i64 = 10_000;
    vacuum(db, "appliance_events").await;
    let events_before = size_of(db, "appliance_events").await;
    let inserted = sqlx::query(
        "INSERT INTO appliance_events (message_id, appliance_id, tenant_id, kind, sent_at, body)
         SELECT gen_random_uuid(), e.appliance_id, e.tenant_id, e.kind,
                timestamptz '2025-01-10 00:00:00+00' + n * interval '1 minute', e.body
         FROM (SELECT * FROM appliance_events ORDER BY pg_column_size(body) DESC LIMIT 1) e,
              generate_series(1, $1) AS n",
    )
    .bind(EVENT_COPIES)
    .execute(db)
    .await
    .expect("events")
    .rows_affected();
    assert_eq!(
        inserted, EVENT_COPIES as u64,
        "the agent's events were stored"
    );
    vacuum(db, "appliance_events").await;
    let events = EVENT_COPIES;
    let event_bytes =
        (size_of(db, "appliance_events").await - events_before) as f64 / events as f64;

    let raw_month = raw_bytes * ROWS_PER_DAY as f64 * DAYS_PER_MONTH;
    let rollup_month = (2.0 * hourly_bytes + availability_bytes) * 24.0 * DAYS_PER_MONTH;
    let events_month = event_bytes * EVENTS_PER_MONTH;
    let per_appliance_month = raw_month + rollup_month + events_month;
    let raw_steady = raw_month * RAW_RETENTION_DAYS / DAYS_PER_MONTH;
    let records_year = (rollup_month + events_month) * 12.0;
    println!(
        "stored telemetry body (median of the simulated appliance's): {body_bytes} bytes; \
         per raw row with its indexes: {raw_bytes:.0} bytes ({rows} rows measured)"
    );
    println!(
        "roll-ups per row: telemetry_hourly {hourly_bytes:.0} bytes (one per uplink-hour), \
         availability_hourly {availability_bytes:.0} bytes (one per hour); events {event_bytes:.0} bytes \
         per event ({events} measured)"
    );
    println!(
        "per appliance per month (10 s telemetry, two uplinks, {EVENTS_PER_MONTH:.0} events): raw {}, \
         roll-ups {}, events {}, total {}",
        mb(raw_month),
        mb(rollup_month),
        mb(events_month),
        mb(per_appliance_month)
    );
    println!(
        "10,000 appliances: raw telemetry {} a month, held at {} with {RAW_RETENTION_DAYS:.0}-day \
         retention (whole months dropped as partitions); roll-ups and events {} a year, kept six \
         years ({} at the sixth); first year on disk {}",
        gb(raw_month * FLEET),
        gb(raw_steady * FLEET),
        gb(records_year * FLEET),
        gb(records_year * 6.0 * FLEET),
        gb((raw_steady + records_year) * FLEET)
    );
}
