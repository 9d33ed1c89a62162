//! The one-year evidence package (issue 14): a practice with 10 appliances reporting every 10 s for
//! a year, as the package reads it — the hourly availability roll-up (10 × 8,760 rows, what a year
//! of 10-second telemetry becomes), a weekly drill per appliance with its per-application results
//! and most signed off, two incidents a month with comments, a six-application register and
//! 2,000 audit entries of the practice among 4,000 of its MSP — then times the whole build as the
//! worker runs it: gather (one tenant transaction), summary.pdf, the CSV tables, zip and
//! signature. Raw telemetry and events are not read by the build (the roll-up, drills and
//! incidents are made from them at ingest), so they are not seeded.
//!
//! `STAYOPEN_TEST_DATABASE_URL=… cargo bench -p stayopen-cloud --bench evidence_package`
//! (`EVIDENCE_RUNS` sets how many builds are timed; the figure is the median).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::{Duration, Utc};
use common::spawn_cloud_with;
use stayopen_cloud::domain::audit::{self, Actor, Change};
use stayopen_cloud::domain::evidence::{jobs, package, verify};
use stayopen_cloud::infra::db;
use stayopen_cloud::infra::evidence_key::EvidenceKey;
use stayopen_shared::compliance::PeriodKind;
use stayopen_shared::{PracticeId, TenantId};
use uuid::Uuid;

const APPLIANCES: i64 = 10;

async fn seed(cloud: &common::TestCloud, tenant: Uuid, practice: Uuid) {
    let started = Instant::now();
    let statements = [
        "INSERT INTO practices (id, tenant_id, name) VALUES ($2, $1, 'Bench Family Practice')",
        "INSERT INTO sites (id, tenant_id, practice_id, name)
         VALUES (gen_random_uuid(), $1, $2, 'Main office')",
        "INSERT INTO appliances (id, tenant_id, practice_id, site_id, serial, mac, model,
                                 agent_version, mqtt_password_hash, online, last_seen, enrolled_at)
         SELECT gen_random_uuid(), $1, $2, s.id, 'SO-' || lpad(k::text, 4, '0'),
                '02:fe:00:00:00:' || lpad(to_hex(k), 2, '0'), 'bench', '0.1.0', '\\x00', true, now(),
                now() - interval '400 days'
         FROM sites s CROSS JOIN generate_series(1, 10) k WHERE s.practice_id = $2",
        // A year of hours per appliance: mostly up, an outage hour every ~200 hours carried by
        // the backup, and a day of silence each quarter (a gap).
        "INSERT INTO availability_hourly (tenant_id, appliance_id, hour, observed_secs,
                                          primary_secs, effective_secs, backup_secs)
         SELECT $1, a.id, date_trunc('hour', now()) - make_interval(hours => h),
                CASE WHEN h % 2190 < 24 THEN 0 ELSE 3600 END,
                CASE WHEN h % 2190 < 24 THEN 0 WHEN h % 197 = 0 THEN 1800 ELSE 3600 END,
                CASE WHEN h % 2190 < 24 THEN 0 WHEN h % 983 = 0 THEN 3540 ELSE 3600 END,
                CASE WHEN h % 2190 >= 24 AND h % 197 = 0 THEN 1800 ELSE 0 END
         FROM appliances a CROSS JOIN generate_series(1, 8760) h WHERE a.practice_id = $2",
        "INSERT INTO critical_apps (id, tenant_id, practice_id, name, tier, endpoints, owner, note)
         SELECT gen_random_uuid(), $1, $2, name, tier,
                jsonb_build_array(jsonb_build_object('kind', 'https',
                    'url', 'https://' || lower(replace(name, ' ', '-')) || '.example.com/health')),
                'Practice manager', 'Checked through every uplink'
         FROM (VALUES ('EHR', 'tier1'), ('e-Prescribing', 'tier1'), ('Lab interface', 'tier1'),
                      ('Telemedicine', 'tier2'), ('Patient portal', 'tier2'), ('Billing', 'tier3'))
              AS apps(name, tier)",
        "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at,
                             finished_at, outcome, reason, backup_uplink, switchover_ms, failback_ms,
                             apps, signed_by_name, signed_by_email, signed_at, sign_off_comment)
         SELECT gen_random_uuid(), $1, $2, a.id, 'scheduled',
                now() - make_interval(days => w * 7, hours => 3),
                now() - make_interval(days => w * 7, hours => 3) + interval '5 minutes',
                CASE WHEN w % 9 = 0 THEN 'failed' ELSE 'passed' END,
                CASE WHEN w % 9 = 0 THEN 'e-Prescribing was not reachable through lte: tcp erx.example.com:443: connection refused'
                     ELSE 'every critical application answered through lte' END,
                'lte', 1500 + w * 7 % 900, 800 + w * 13 % 400,
                jsonb_build_array(
                    jsonb_build_object('app', 'EHR', 'reachable', true, 'latency_ms', 40 + w % 20),
                    jsonb_build_object('app', 'e-Prescribing', 'reachable', w % 9 <> 0,
                                       'reason', CASE WHEN w % 9 = 0 THEN 'connection refused' END),
                    jsonb_build_object('app', 'Lab interface', 'reachable', true, 'latency_ms', 61),
                    jsonb_build_object('app', 'Telemedicine', 'reachable', true, 'latency_ms', 75),
                    jsonb_build_object('app', 'Patient portal', 'reachable', true, 'latency_ms', 52),
                    jsonb_build_object('app', 'Billing', 'reachable', true, 'latency_ms', 90)),
                CASE WHEN w > 2 THEN 'Dana Officer' END, CASE WHEN w > 2 THEN 'dana@bench.example' END,
                CASE WHEN w > 2 THEN now() - make_interval(days => w * 7 - 2) END,
                CASE WHEN w > 2 THEN 'Reviewed at the monthly practice meeting' END
         FROM appliances a CROSS JOIN generate_series(1, 52) w WHERE a.practice_id = $2",
        "INSERT INTO incidents (id, tenant_id, practice_id, appliance_id, started_at, ended_at,
                                failed_uplinks, backup_uplinks, on_backup_secs, apps, root_cause)
         SELECT gen_random_uuid(), $1, $2, a.id, now() - make_interval(days => n * 15, hours => 5),
                now() - make_interval(days => n * 15, hours => 5) + make_interval(mins => 20 + n),
                ARRAY['fibre'], ARRAY['lte'], (20 + n) * 60,
                '{\"EHR\": {\"checks\": 12, \"unreachable\": 0}, \"Billing\": {\"checks\": 12, \"unreachable\": 2, \"reason\": \"timeout\"}}',
                'Carrier outage in the street cabinet'
         FROM (SELECT id FROM appliances WHERE practice_id = $2 ORDER BY serial LIMIT 1) a
         CROSS JOIN generate_series(1, 24) n",
        "INSERT INTO incident_comments (id, tenant_id, incident_id, author, at, body)
         SELECT gen_random_uuid(), $1, i.id, 'tech@bench.example', i.started_at + interval '1 hour',
                'Carrier ticket opened; the practice worked on the backup meanwhile'
         FROM incidents i WHERE i.practice_id = $2",
    ];
    for sql in statements {
        sqlx::query(sql)
            .bind(tenant)
            .bind(practice)
            .execute(&cloud.owner_pool)
            .await
            .unwrap_or_else(|e| panic!("seeding failed: {e}\n{sql}"));
    }
    // Audit entries go through the real chain: half the practice's, half another practice's.
    let tenant_id = TenantId(tenant);
    let other = Uuid::new_v4();
    let mut tx = db::tenant_tx(&cloud.pool, tenant_id).await.expect("tx");
    for n in 0..4000 {
        let practice_id = if n % 2 == 0 { practice } else { other };
        audit::record(
            &mut tx,
            tenant_id,
            &Actor::System("bench"),
            Change {
                action: if n % 3 == 0 {
                    "critical_app.update"
                } else {
                    "drill.sign_off"
                },
                target_type: "drill",
                target_id: Uuid::new_v4().to_string(),
                before: Some(serde_json::json!({"practice_id": practice_id, "comment": ""})),
                after: Some(serde_json::json!({
                    "practice_id": practice_id,
                    "comment": "Reviewed at the monthly practice meeting",
                    "n": n,
                })),
            },
        )
        .await
        .expect("audit entry");
    }
    tx.commit().await.expect("commit");
    sqlx::query("ANALYZE")
        .execute(&cloud.owner_pool)
        .await
        .expect("analyze");
    println!(
        "seeded 10 appliances, {} hourly roll-up rows, 520 drills, 24 incidents and 4,000 audit entries in {:.1} s",
        APPLIANCES * 8760,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The cloud's own builder stays idle: the bench times the build itself.
    let cloud = spawn_cloud_with(|config| config.evidence.poll_interval_ms = 60_000).await;
    let seeded = cloud.seed_demo().await;
    let tenant = seeded.tenant_id;
    let practice = PracticeId(Uuid::new_v4());
    seed(&cloud, tenant.0, practice.0).await;
    let key = EvidenceKey::generate();
    let today = Utc::now().date_naive();
    // 366 days up to today, the longest custom period, so today's audit entries are in it.
    let (from, to) = (today - Duration::days(365), today);
    let runs: usize = std::env::var("EVIDENCE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut timings = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        let mut tx = db::tenant_tx(&cloud.pool, tenant).await.expect("tx");
        let input = jobs::gather(
            &mut tx,
            tenant,
            practice,
            PeriodKind::Custom,
            (from, to),
            Utc::now(),
        )
        .await
        .expect("gather")
        .expect("the practice");
        tx.commit().await.expect("commit");
        let gathered = started.elapsed();
        let built = package::build(&input, &key).expect("build");
        let total = started.elapsed();
        timings.push((total, gathered, input.audit.len(), input.drills.len()));
        last = Some(built);
    }
    timings.sort();
    let (total, gathered, audit_entries, drills) = timings[timings.len() / 2];
    let built = last.expect("a build");
    verify::verify(&built.zip, &verify::TrustedKey::Given(key.public())).expect("it verifies");
    let pdf = built
        .manifest
        .files
        .iter()
        .find(|f| f.name == "summary.pdf")
        .map_or(0, |f| f.size);
    println!(
        "gather {:.2} s, PDF + CSV + zip + signature {:.2} s; {drills} drills, {audit_entries} audit entries, summary.pdf {:.1} MB (median of {runs})",
        gathered.as_secs_f64(),
        (total - gathered).as_secs_f64(),
        pdf as f64 / 1e6
    );
    println!(
        "one-year package: build {:.2} s, size {:.1} MB",
        total.as_secs_f64(),
        built.zip.len() as f64 / 1e6
    );
}
