//! The compliance records an evidence package reads, for a year: a practice with 10 appliances
//! reporting every 10 s (a year of hourly availability roll-ups, 52 drills and 24 incidents per
//! appliance, a register of five applications). Prints the time to seed the roll-up with
//! `availability::insert_hours` and the time of each read function (median of several runs).
//!
//! `STAYOPEN_TEST_DATABASE_URL=… cargo bench -p stayopen-cloud --bench compliance_reads`
//! (`COMPLIANCE_APPLIANCES`, `COMPLIANCE_SAMPLES` change the size and the runs per figure).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use common::spawn_cloud;
use stayopen_cloud::domain::compliance::availability::{self, HourRow};
use stayopen_cloud::domain::compliance::{drills, incidents, register};
use stayopen_cloud::infra::db;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let appliances = env_number("COMPLIANCE_APPLIANCES", 10);
    let samples = env_number("COMPLIANCE_SAMPLES", 5);
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    stayopen_cloud::domain::seed::seed_demo_compliance(&cloud.pool, demo.tenant_id, Utc::now())
        .await
        .expect("register");
    let practice = demo.practices[0].id;
    let mut ids = Vec::new();
    for n in 0..appliances {
        let device = cloud
            .enrol_device(
                &demo.practices[0].enrollment_token,
                &format!("SO-BENCH-{n:03}"),
                &format!("02:00:00:01:00:{n:02x}"),
            )
            .await;
        ids.push(device.enrolled.appliance_id);
    }
    let year_start = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("start");
    let hours: Vec<HourRow> = (0..365 * 24)
        .map(|h| {
            // Up on the fibre, except two hours a month on the backup and an hour unreported.
            let hour = year_start + chrono::Duration::hours(h);
            let (observed, primary, backup) = match h % 720 {
                100 | 101 => (3600, 0, 3600),
                300 => (0, 0, 0),
                _ => (3600, 3600, 0),
            };
            HourRow {
                hour,
                observed_secs: observed,
                primary_secs: primary,
                effective_secs: observed,
                backup_secs: backup,
            }
        })
        .collect();
    let started = Instant::now();
    for id in &ids {
        let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
            .await
            .expect("tx");
        availability::insert_hours(&mut tx, demo.tenant_id, *id, &hours)
            .await
            .expect("hours");
        tx.commit().await.expect("commit");
    }
    let seeded = started.elapsed();
    for sql in [
        "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at,
                             finished_at, outcome, reason, backup_uplink, switchover_ms, apps)
         SELECT gen_random_uuid(), a.tenant_id, a.practice_id, a.id, 'scheduled',
                $1 + make_interval(days => 7 * w), $1 + make_interval(days => 7 * w, secs => 300),
                'passed', 'drill over', 'lte', 900,
                '[{\"app\": \"EHR\", \"reachable\": true, \"latency_ms\": 40}]'
         FROM appliances a CROSS JOIN generate_series(0, 51) w WHERE a.practice_id = $2",
        "INSERT INTO incidents (id, tenant_id, practice_id, appliance_id, started_at, ended_at,
                                failed_uplinks, backup_uplinks, on_backup_secs, apps)
         SELECT gen_random_uuid(), a.tenant_id, a.practice_id, a.id,
                $1 + make_interval(days => 15 * k), $1 + make_interval(days => 15 * k, secs => 7200),
                '{fiber}', '{lte}', 7200, '{\"EHR\": {\"checks\": 120, \"unreachable\": 0}}'
         FROM appliances a CROSS JOIN generate_series(0, 23) k WHERE a.practice_id = $2",
    ] {
        sqlx::query(sql)
            .bind(year_start)
            .bind(practice.as_uuid())
            .execute(&cloud.owner_pool)
            .await
            .expect("seed records");
    }
    sqlx::query("ANALYZE")
        .execute(&cloud.owner_pool)
        .await
        .expect("analyze");

    let from = NaiveDate::from_ymd_opt(2025, 1, 1).expect("from");
    let to = NaiveDate::from_ymd_opt(2025, 12, 31).expect("to");
    let (from_ts, to_ts) = (year_start, year_start + chrono::Duration::days(365));
    let (mut register_runs, mut drill_runs, mut incident_runs, mut availability_runs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut drill_count, mut incident_count, mut months) = (0, 0, 0);
    for _ in 0..samples {
        let mut tx = db::tenant_tx(&cloud.pool, demo.tenant_id)
            .await
            .expect("tx");
        let t = Instant::now();
        register::for_practice(&mut tx, practice)
            .await
            .expect("register");
        register_runs.push(t.elapsed());
        let t = Instant::now();
        drill_count = drills::in_period(&mut tx, practice, from_ts, to_ts)
            .await
            .expect("drills")
            .len();
        drill_runs.push(t.elapsed());
        let t = Instant::now();
        incident_count = incidents::in_period(&mut tx, practice, from_ts, to_ts)
            .await
            .expect("incidents")
            .len();
        incident_runs.push(t.elapsed());
        let t = Instant::now();
        months = availability::months(&mut tx, practice, from, to)
            .await
            .expect("availability")
            .len();
        availability_runs.push(t.elapsed());
        tx.commit().await.expect("commit");
    }
    println!(
        "compliance reads for one practice, {appliances} appliances, one year ({} hourly rows), median of {samples}:",
        appliances * hours.len()
    );
    println!("  seeding the hourly roll-up (insert_hours):  {seeded:?}");
    println!(
        "  register::for_practice:                     {:?}",
        median(register_runs)
    );
    println!(
        "  drills::in_period ({drill_count} drills):            {:?}",
        median(drill_runs)
    );
    println!(
        "  incidents::in_period ({incident_count} incidents):      {:?}",
        median(incident_runs)
    );
    println!(
        "  availability::months ({months} months):          {:?}",
        median(availability_runs)
    );
}
