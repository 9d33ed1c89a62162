//! The dashboard at fleet size: one MSP with 10,000 appliances in 500 practices (a few offline, a
//! few on their backup, some open alerts) and a month of 10-second telemetry for one appliance;
//! prints the response times of the requests the fleet overview, the fleet-wide appliance list
//! (sorted, searched, filtered, exported), a practice page and an appliance chart make, measured
//! end to end over HTTP against the real cloud and PostgreSQL.
//!
//! `STAYOPEN_TEST_DATABASE_URL=… cargo bench -p stayopen-cloud --bench fleet_overview`
//! (infra/scripts/bench-fleet.sh starts PostgreSQL). `FLEET_APPLIANCES` and `FLEET_PRACTICES`
//! change the size, `FLEET_SAMPLES` the requests per figure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestCloud, spawn_cloud};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Inserts the fleet ([`common::fleet::seed`]) and a month of telemetry for the first appliance.
async fn seed(cloud: &TestCloud, tenant: uuid::Uuid, practices: usize, appliances: usize) {
    let started = Instant::now();
    common::fleet::seed(&cloud.owner_pool, tenant, practices, appliances).await;
    sqlx::query(
        "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, received_at, body)
         SELECT gen_random_uuid(), a.id, a.tenant_id, now() - make_interval(secs => n * 10),
                now() - make_interval(secs => n * 10 - 1),
                jsonb_build_object('active_uplink', 'fiber', 'uplinks', jsonb_build_array(
                    jsonb_build_object('name', 'fiber', 'priority', 0, 'metered', false, 'health', 'up',
                                       'rtt_ms', 10 + (n % 7), 'loss_pct', (n % 50 = 0)::int * 2.0,
                                       'rx_bytes', 0, 'tx_bytes', 0),
                    jsonb_build_object('name', 'lte', 'priority', 1, 'metered', true, 'health', 'up',
                                       'rtt_ms', 45 + (n % 11), 'loss_pct', 0.0,
                                       'rx_bytes', 0, 'tx_bytes', 0)))
         FROM (SELECT id, tenant_id FROM appliances WHERE tenant_id = $1 ORDER BY serial LIMIT 1) a
         CROSS JOIN generate_series(0, 30 * 8640 - 1) n",
    )
    .bind(tenant)
    .execute(&cloud.owner_pool)
    .await
    .expect("telemetry");
    // The month arrived over the month: roll it up as the cloud's job would have, hour by hour.
    sqlx::query("UPDATE telemetry_rollup_watermark SET received_before = '-infinity'")
        .execute(&cloud.owner_pool)
        .await
        .expect("rewind");
    let rolling = Instant::now();
    let hours = stayopen_cloud::infra::db::roll_up_telemetry(&cloud.pool)
        .await
        .expect("roll-up");
    println!(
        "rolled the month up into {hours} hourly rows in {:.1} s",
        rolling.elapsed().as_secs_f64()
    );
    sqlx::query("ANALYZE")
        .execute(&cloud.owner_pool)
        .await
        .expect("analyze");
    println!(
        "seeded {practices} practices, {appliances} appliances and 259,200 telemetry rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// p50, p95 and max of `samples` timed GETs of `path`.
async fn measure(cloud: &TestCloud, token: &str, label: &str, path: &str, samples: usize) {
    // One unmeasured request warms caches and connections.
    let (status, _) = cloud.api(token).get::<serde_json::Value>(path).await;
    assert_eq!(status, 200, "{path}");
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let response = cloud
            .http
            .get(format!("{}{path}", cloud.base_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        times.push(started.elapsed());
        assert!(status.is_success(), "{path}: {status}");
        assert!(!body.is_empty());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {label} | `{path}` | {samples} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let appliances = env_number("FLEET_APPLIANCES", 10_000);
    let practices = env_number("FLEET_PRACTICES", 500);
    let samples = env_number("FLEET_SAMPLES", 50);
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    seed(&cloud, demo.tenant_id.0, practices, appliances).await;

    let first = cloud
        .api(&admin)
        .practices("limit=50")
        .await
        .expect("first page");
    let cursor = first.next_cursor.clone().expect("a second page");
    let practice = first.items[10].id;
    let appliance: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM appliances WHERE tenant_id = $1 ORDER BY serial LIMIT 1",
    )
    .bind(demo.tenant_id.as_uuid())
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("appliance");

    let appliance_cursor = cloud
        .api(&admin)
        .appliances("limit=50")
        .await
        .expect("first page of appliances")
        .next_cursor
        .expect("a second page of appliances");
    // One appliance in 100 tagged "pilot", as an MSP tags a rollout group.
    sqlx::query(
        "UPDATE appliances SET tags = '{pilot}'
         WHERE tenant_id = $1 AND right(serial, 2) = '00'",
    )
    .bind(demo.tenant_id.as_uuid())
    .execute(&cloud.owner_pool)
    .await
    .expect("tags");

    println!("\n| request | path | samples | p50 | p95 | max |\n|---|---|---|---|---|---|");
    let requests = [
        ("fleet totals", "/api/v1/fleet/totals".to_owned()),
        (
            "practices, first page",
            "/api/v1/practices?limit=50".to_owned(),
        ),
        (
            "practices, next page",
            format!("/api/v1/practices?limit=50&cursor={cursor}"),
        ),
        (
            "practices, offline only",
            "/api/v1/practices?limit=50&status=offline".to_owned(),
        ),
        (
            "practices, on backup only",
            "/api/v1/practices?limit=50&status=on_backup".to_owned(),
        ),
        (
            "practices, search",
            "/api/v1/practices?limit=50&q=Practice%200042".to_owned(),
        ),
        (
            "appliances of a practice",
            format!("/api/v1/appliances?limit=50&practice_id={practice}"),
        ),
        (
            "appliances on backup, fleet-wide",
            "/api/v1/appliances?limit=50&on_backup=true".to_owned(),
        ),
        (
            "all appliances, first page by serial",
            "/api/v1/appliances?limit=50".to_owned(),
        ),
        (
            "all appliances, next page by serial",
            format!("/api/v1/appliances?limit=50&cursor={appliance_cursor}"),
        ),
        (
            "all appliances, worst state first",
            "/api/v1/appliances?limit=50&sort=state".to_owned(),
        ),
        (
            "all appliances, last seen newest first",
            "/api/v1/appliances?limit=50&sort=last_seen&order=desc".to_owned(),
        ),
        (
            "all appliances, by practice",
            "/api/v1/appliances?limit=50&sort=practice".to_owned(),
        ),
        (
            "appliances, serial prefix search",
            "/api/v1/appliances?limit=50&q=SO-0042".to_owned(),
        ),
        (
            "appliances, offline only",
            "/api/v1/appliances?limit=50&state=offline".to_owned(),
        ),
        (
            "appliances, cellular uplink only",
            "/api/v1/appliances?limit=50&uplink_kind=cellular".to_owned(),
        ),
        (
            "appliances, one tag",
            "/api/v1/appliances?limit=50&tag=pilot".to_owned(),
        ),
        (
            "CSV export, all appliances (streamed)",
            "/api/v1/appliances.csv".to_owned(),
        ),
        (
            "CSV export, open alerts",
            "/api/v1/alerts.csv?unresolved=true".to_owned(),
        ),
        (
            "open alerts, fleet-wide",
            "/api/v1/alerts?limit=50&unresolved=true".to_owned(),
        ),
        (
            "appliance chart, last hour",
            format!("/api/v1/appliances/{appliance}/metrics?period=hour"),
        ),
        (
            "appliance chart, last day",
            format!("/api/v1/appliances/{appliance}/metrics?period=day"),
        ),
        (
            "appliance chart, last 30 days",
            format!("/api/v1/appliances/{appliance}/metrics?period=month"),
        ),
    ];
    for (label, path) in &requests {
        let n = if label.contains("30 days") || label.contains("CSV") {
            samples.min(10)
        } else {
            samples
        };
        measure(&cloud, &admin, label, path, n).await;
    }
}
