//! The relay's peer list at size: one relay serving `RELAY_PEERS` appliances (default 1,000, in
//! one MSP) polls `GET /api/v1/relay/peers`; prints the response times of a full answer and of the
//! `304 Not Modified` a relay gets while nothing changed, end to end over HTTP against the real
//! cloud and PostgreSQL.
//!
//! `STAYOPEN_TEST_DATABASE_URL=… cargo bench -p stayopen-cloud --bench relay_peers`
//! (`RELAY_SAMPLES` changes the requests per figure).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestCloud, spawn_cloud};
use stayopen_shared::tunnel::RelayPeerList;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `peers` appliances with WireGuard keys and inner addresses on `relay`, inserted with set-based
/// SQL (as the owner).
async fn seed(cloud: &TestCloud, tenant: uuid::Uuid, relay: uuid::Uuid, peers: usize) {
    sqlx::query(
        "INSERT INTO appliances (id, tenant_id, practice_id, site_id, serial, mac, model, agent_version,
                                 mqtt_password_hash, wireguard_public_key, tunnel_address, relay_id)
         SELECT gen_random_uuid(), $1, s.practice_id, s.id, 'SO-RELAY-' || n,
                '02:fd:' || lpad(to_hex(n), 8, '0'), 'bench', '0.1.0', '\\x00',
                encode(decode(md5(n::text) || md5((n + 1)::text), 'hex'), 'base64'),
                stayopen_next_tunnel_address(), $3
         FROM (SELECT id, practice_id FROM sites WHERE tenant_id = $1 ORDER BY id LIMIT 1) s
         CROSS JOIN generate_series(1, $2) n",
    )
    .bind(tenant)
    .bind(i32::try_from(peers).unwrap_or(i32::MAX))
    .bind(relay)
    .execute(&cloud.owner_pool)
    .await
    .expect("seed the peers");
    sqlx::query("ANALYZE")
        .execute(&cloud.owner_pool)
        .await
        .expect("analyze");
}

/// p50, p95 and max of `samples` peer-list requests, sending `if_none_match` when given.
async fn measure(
    cloud: &TestCloud,
    token: &str,
    label: &str,
    if_none_match: Option<&str>,
    samples: usize,
) {
    let mut times = Vec::with_capacity(samples);
    let mut bytes = 0;
    for _ in 0..samples {
        let started = Instant::now();
        let mut request = cloud
            .http
            .get(cloud.url("/api/v1/relay/peers"))
            .bearer_auth(token);
        if let Some(tag) = if_none_match {
            request = request.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        times.push(started.elapsed());
        assert_eq!(status, if if_none_match.is_some() { 304 } else { 200 });
        bytes = body.len();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {label} | {samples} | {bytes} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let peers = env_number("RELAY_PEERS", 1_000);
    let samples = env_number("RELAY_SAMPLES", 200);
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let created = stayopen_cloud::domain::relays::create(
        &cloud.pool,
        "relay-bench",
        "192.0.2.10:51820",
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
    )
    .await
    .expect("relay");
    seed(&cloud, demo.tenant_id.0, created.relay.id, peers).await;
    let response = cloud
        .http
        .get(cloud.url("/api/v1/relay/peers"))
        .bearer_auth(&created.token)
        .send()
        .await
        .expect("request");
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("an ETag");
    let list: RelayPeerList = response.json().await.expect("a peer list");
    assert_eq!(list.peers.len(), peers);
    println!("\n{peers} peers on one relay\n");
    println!("| request | samples | body bytes | p50 | p95 | max |\n|---|---|---|---|---|---|");
    measure(&cloud, &created.token, "full list (200)", None, samples).await;
    measure(
        &cloud,
        &created.token,
        "unchanged (304, If-None-Match)",
        Some(&etag),
        samples,
    )
    .await;
}
