//! Evidence packages against a real cloud and PostgreSQL: requested, built in the background,
//! downloaded (and the download audited), verified offline by the binary; who may see them; the
//! monthly package and its e-mail; retention.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use common::client::ApiClient;
use common::smtp::SmtpSink;
use common::{TestCloud, eventually, spawn_cloud_with};
use stayopen_cloud::domain::evidence::verify::{TrustedKey, verify};
use stayopen_cloud::domain::evidence::{jobs, monthly, retention};
use stayopen_cloud::infra::clock::Clock;
use stayopen_cloud::infra::config::{SmtpConfig, SmtpSecurity};
use stayopen_cloud::infra::email::Mailer;
use stayopen_cloud::infra::evidence_key::EvidencePublic;
use stayopen_shared::PracticeId;
use stayopen_shared::api::{AuditEntry, Page, Role};
use stayopen_shared::compliance::{
    CreateEvidencePackage, EvidencePackage, EvidencePublicKey, PackageState, PeriodKind,
};
use uuid::Uuid;

async fn cloud() -> TestCloud {
    spawn_cloud_with(|config| config.evidence.poll_interval_ms = 50).await
}

/// The last 30 days up to today: a period that is valid whenever the test runs.
fn recent(practice: PracticeId) -> CreateEvidencePackage {
    let today = Utc::now().date_naive();
    CreateEvidencePackage {
        practice_id: practice,
        period: PeriodKind::Custom,
        from: today - Days::days(29),
        to: today,
    }
}

async fn request(api: &ApiClient, body: &CreateEvidencePackage) -> (u16, Option<EvidencePackage>) {
    api.post("/api/v1/evidence/packages", body).await
}

async fn ready(api: &ApiClient, id: Uuid) -> EvidencePackage {
    eventually(Duration::from_secs(30), "the package is built", || async {
        let (_, package) = api
            .get::<EvidencePackage>(&format!("/api/v1/evidence/packages/{id}"))
            .await;
        package.filter(|p| matches!(p.state, PackageState::Ready | PackageState::Failed))
    })
    .await
}

async fn download(cloud: &TestCloud, token: &str, id: Uuid) -> reqwest::Response {
    cloud
        .http
        .get(cloud.url(&format!("/api/v1/evidence/packages/{id}/download")))
        .bearer_auth(token)
        .send()
        .await
        .expect("download request")
}

struct Setup {
    admin: String,
    officer: String,
    practice: PracticeId,
    other_practice: PracticeId,
}

async fn setup(cloud: &TestCloud) -> Setup {
    let seed = cloud.seed_demo().await;
    let admin = cloud.login(&seed.email, &seed.password).await;
    let practice = seed.practices[0].id;
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@maple.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    Setup {
        admin,
        officer,
        practice,
        other_practice: seed.practices[1].id,
    }
}

#[tokio::test]
async fn an_officer_requests_a_package_that_is_built_signed_downloaded_audited_and_verifies() {
    let cloud = cloud().await;
    let s = setup(&cloud).await;
    let officer = cloud.api(&s.officer);
    let (status, queued) = request(&officer, &recent(s.practice)).await;
    assert_eq!(status, 202);
    let queued = queued.expect("the queued package");
    assert_eq!(queued.practice_id, s.practice);
    assert!(matches!(
        queued.state,
        PackageState::Queued | PackageState::Building
    ));
    assert_eq!(queued.requested_by, "officer@maple.example");

    let built = ready(&officer, queued.id).await;
    assert_eq!(built.state, PackageState::Ready, "{}", built.status);
    assert_eq!(built.progress_pct, 100);
    let key: EvidencePublicKey = officer
        .get("/api/v1/evidence/public-key")
        .await
        .1
        .expect("the public key");
    assert_eq!(
        built.key_fingerprint.as_deref(),
        Some(key.fingerprint.as_str())
    );

    let response = download(&cloud, &s.officer, built.id).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "application/zip"
    );
    let disposition = response.headers()[reqwest::header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("evidence-") && disposition.contains(".zip"),
        "{disposition}"
    );
    let zip = response.bytes().await.expect("zip").to_vec();
    assert_eq!(zip.len() as u64, built.size_bytes.expect("size"));

    let public = EvidencePublic::from_pem(&key.public_key_pem).expect("pem");
    let report = verify(&zip, &TrustedKey::Given(public)).expect("the package verifies");
    assert_eq!(report.manifest.practice.id, s.practice);
    // The request itself is one of the practice's audit entries in the period.
    assert!(report.audit_entries >= 1);

    // Chain of custody: the download is in the audit log, naming the practice.
    let log: Page<AuditEntry> = cloud
        .api(&s.admin)
        .audit_log("action=evidence_package.download")
        .await
        .expect("audit log");
    let entry = log.items.first().expect("the download is audited");
    assert_eq!(entry.target_id, built.id.to_string());
    assert_eq!(
        entry.after.as_ref().and_then(|a| a["practice_id"].as_str()),
        Some(s.practice.to_string().as_str())
    );

    // For docs/compliance.md: a sample package and its key, where asked.
    if let Ok(sample) = std::env::var("STAYOPEN_EVIDENCE_SAMPLE_DIR") {
        let sample = std::path::Path::new(&sample);
        std::fs::write(sample.join("sample-package.zip"), &zip).expect("write the sample");
        std::fs::write(sample.join("evidence-public-key.pem"), &key.public_key_pem).expect("key");
    }

    // The binary verifies it offline with the published key, and refuses it after one byte changes.
    let dir = tempfile::tempdir().expect("dir");
    let (zip_path, key_path) = (dir.path().join("p.zip"), dir.path().join("key.pem"));
    std::fs::write(&zip_path, &zip).expect("write zip");
    std::fs::write(&key_path, &key.public_key_pem).expect("write key");
    let run = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stayopen-cloud"))
            .args(["evidence", "verify"])
            .arg(path)
            .arg("--public-key")
            .arg(&key_path)
            .env_remove("STAYOPEN_CONFIG")
            .output()
            .expect("run stayopen-cloud")
    };
    let ok = run(&zip_path);
    let shown = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{shown}");
    assert!(
        shown.contains("VERIFIED") && shown.contains(&key.fingerprint),
        "{shown}"
    );
    let mut changed = zip.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x01;
    std::fs::write(&zip_path, &changed).expect("write changed zip");
    let refused = run(&zip_path);
    let shown = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{shown}");
    assert!(shown.contains("NOT VERIFIED: "), "{shown}");
}

#[tokio::test]
async fn another_tenant_or_practice_cannot_see_or_download_a_package() {
    let cloud = cloud().await;
    let s = setup(&cloud).await;
    let (_, queued) = request(&cloud.api(&s.officer), &recent(s.practice)).await;
    let id = queued.expect("queued").id;
    ready(&cloud.api(&s.officer), id).await;

    // An officer of the demo's other practice.
    let neighbour = cloud
        .user_with_role(
            &s.admin,
            "other@elm.example",
            Role::ComplianceOfficer,
            vec![s.other_practice],
        )
        .await;
    // A technician and the admin of another MSP.
    let (_, other_admin, other_practice) = cloud.other_msp("rival.example").await;
    let rival_tech = cloud
        .user_with_role(
            &other_admin,
            "tech@rival.example",
            Role::MspTechnician,
            vec![],
        )
        .await;
    for token in [&neighbour, &other_admin, &rival_tech] {
        let api = cloud.api(token);
        let (status, _) = api
            .get::<EvidencePackage>(&format!("/api/v1/evidence/packages/{id}"))
            .await;
        assert_eq!(status, 404);
        assert_eq!(download(&cloud, token, id).await.status().as_u16(), 404);
        let (_, listed) = api
            .get::<Page<EvidencePackage>>("/api/v1/evidence/packages")
            .await;
        assert!(listed.expect("list").items.iter().all(|p| p.id != id));
    }
    // Nor can they request one for the practice.
    let (status, _) = request(&cloud.api(&neighbour), &recent(s.practice)).await;
    assert_eq!(status, 404);
    let (status, _) = request(&cloud.api(&rival_tech), &recent(s.practice)).await;
    assert_eq!(status, 404);
    // And the other MSP's own practice is theirs, not the demo's.
    let (status, _) = request(&cloud.api(&s.officer), &recent(other_practice)).await;
    assert_eq!(status, 404);
    // Nothing leaked into the audit log of the other MSP.
    let rival_log = cloud
        .api(&other_admin)
        .audit_log("action=evidence_package.download")
        .await
        .expect("log");
    assert!(rival_log.items.is_empty());
}

#[tokio::test]
async fn an_auditor_downloads_until_their_access_expires_and_may_not_request() {
    let cloud = cloud().await;
    let s = setup(&cloud).await;
    let auditor = cloud
        .user_with_role(
            &s.admin,
            "auditor@cpa.example",
            Role::Auditor,
            vec![s.practice],
        )
        .await;
    let (status, _) = request(&cloud.api(&auditor), &recent(s.practice)).await;
    assert_eq!(status, 403);

    let (_, queued) = request(&cloud.api(&s.admin), &recent(s.practice)).await;
    let id = queued.expect("queued").id;
    ready(&cloud.api(&auditor), id).await;
    assert_eq!(download(&cloud, &auditor, id).await.status().as_u16(), 200);

    sqlx::query(
        "UPDATE users SET access_expires_at = now() - interval '1 minute' WHERE email = $1",
    )
    .bind("auditor@cpa.example")
    .execute(&cloud.owner_pool)
    .await
    .expect("expire the auditor");
    let refused = download(&cloud, &auditor, id).await.status().as_u16();
    assert!(
        refused == 401 || refused == 403,
        "an expired auditor got {refused}"
    );
}

#[tokio::test]
async fn periods_that_are_not_calendar_periods_or_reach_the_future_are_refused() {
    let cloud = cloud().await;
    let s = setup(&cloud).await;
    let api = cloud.api(&s.officer);
    let today = Utc::now().date_naive();
    let day = |s: &str| s.parse::<NaiveDate>().expect("date");
    for (period, from, to) in [
        (PeriodKind::Month, day("2026-10-02"), day("2026-10-31")),
        (PeriodKind::Quarter, day("2026-02-01"), day("2026-04-30")),
        (PeriodKind::Year, day("2025-01-01"), day("2025-06-30")),
        (PeriodKind::Custom, today - Days::days(400), today),
        (PeriodKind::Custom, today, today + Days::days(1)),
        (PeriodKind::Custom, today, today - Days::days(1)),
    ] {
        let body = CreateEvidencePackage {
            practice_id: s.practice,
            period,
            from,
            to,
        };
        let (status, _) = request(&api, &body).await;
        assert_eq!(status, 400, "{period:?} {from} {to}");
    }
    let (status, _) = api
        .post::<_, serde_json::Value>(
            "/api/v1/evidence/packages",
            &serde_json::json!({"practice_id": s.practice, "period": "fortnight", "from": "2026-01-01", "to": "2026-01-14"}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn two_workers_build_each_queued_package_exactly_once() {
    let cloud = spawn_cloud_with(|config| config.evidence.poll_interval_ms = 60_000).await;
    let s = setup(&cloud).await;
    let api = cloud.api(&s.officer);
    let mut ids = Vec::new();
    for back in [0, 40, 80] {
        let today = Utc::now().date_naive() - Days::days(back);
        let body = CreateEvidencePackage {
            practice_id: s.practice,
            period: PeriodKind::Custom,
            from: today - Days::days(10),
            to: today,
        };
        ids.push(request(&api, &body).await.1.expect("queued").id);
    }
    let state = Arc::new(cloud.pool.clone());
    let key = Arc::new(stayopen_cloud::infra::evidence_key::EvidenceKey::generate());
    let clock = Clock::system();
    // The cloud's own worker looked once at start and now sleeps a minute: these two do the work.
    let worker = || {
        let (pool, key, clock) = (state.clone(), key.clone(), clock.clone());
        tokio::spawn(async move {
            let mut built = Vec::new();
            while let Some(id) = jobs::build_next(&pool, &key, &clock).await.expect("build") {
                built.push(id);
            }
            built
        })
    };
    let (a, b) = (worker(), worker());
    let mut built = a.await.expect("worker 1");
    built.extend(b.await.expect("worker 2"));
    built.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(built, expected, "each package built once, none left");
    for id in ids {
        assert_eq!(ready(&api, id).await.state, PackageState::Ready);
    }
}

#[tokio::test]
async fn on_the_first_of_the_month_last_months_package_is_queued_once_and_officers_get_a_link() {
    let smtp = SmtpSink::start().await;
    let cloud = spawn_cloud_with(|config| {
        config.evidence.poll_interval_ms = 50;
        config.alerts.dashboard_url = Some("https://dash.example".into());
    })
    .await;
    let s = setup(&cloud).await;
    // The practices must have existed last month for last month's package.
    sqlx::query("UPDATE practices SET created_at = now() - interval '70 days'")
        .execute(&cloud.owner_pool)
        .await
        .expect("age the practices");
    let first = {
        let today = Utc::now().date_naive();
        let first = NaiveDate::from_ymd_opt(
            chrono::Datelike::year(&today),
            chrono::Datelike::month(&today),
            1,
        )
        .expect("first");
        first.and_hms_opt(0, 5, 0).expect("time").and_utc()
    };
    let queued = monthly::sweep(&cloud.pool, first).await.expect("sweep");
    assert_eq!(queued, 2, "one per demo practice");
    assert_eq!(monthly::sweep(&cloud.pool, first).await.expect("again"), 0);
    assert_eq!(
        monthly::sweep(&cloud.pool, first + Days::hours(5))
            .await
            .expect("later"),
        0
    );
    assert_eq!(
        monthly::sweep(&cloud.pool, first + Days::days(5))
            .await
            .expect("mid-month"),
        0
    );

    let api = cloud.api(&s.officer);
    let mine: Vec<EvidencePackage> = api
        .get::<Page<EvidencePackage>>(&format!(
            "/api/v1/evidence/packages?practice_id={}",
            s.practice
        ))
        .await
        .1
        .expect("list")
        .items;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].period, PeriodKind::Month);
    assert_eq!(mine[0].requested_by, "monthly schedule");
    let built = ready(&api, mine[0].id).await;
    assert_eq!(built.state, PackageState::Ready);

    let mailer = Mailer::from_config(&SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(smtp.port),
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "evidence@msp.example".into(),
    })
    .expect("mailer");
    // Both practices' packages are announced once each; only the first practice has an officer.
    eventually(
        Duration::from_secs(30),
        "both packages are built",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM evidence_packages WHERE state = 'ready'")
                    .fetch_one(&cloud.owner_pool)
                    .await
                    .expect("count");
            (n == 2).then_some(())
        },
    )
    .await;
    let announced = monthly::announce(&cloud.pool, &mailer, Some("https://dash.example"), first)
        .await
        .expect("announce");
    assert_eq!(announced, 2);
    assert_eq!(
        monthly::announce(&cloud.pool, &mailer, Some("https://dash.example"), first)
            .await
            .expect("again"),
        0
    );
    let mails = eventually(
        Duration::from_secs(10),
        "the announcement arrives",
        || async {
            let mails = smtp.mails();
            (!mails.is_empty()).then_some(mails)
        },
    )
    .await;
    assert_eq!(mails.len(), 1, "one mail, to the one officer");
    // The body is quoted-printable: undo its soft line breaks and escaped '='.
    let mail = &mails[0]
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(mail.contains("officer@maple.example"), "{mail}");
    assert!(mail.contains("Evidence package ready"), "{mail}");
    assert!(
        mail.contains(&format!(
            "https://dash.example/reports?package={}",
            built.id
        )),
        "{mail}"
    );
}

#[tokio::test]
async fn retention_deletes_only_packages_older_than_six_years() {
    let cloud = cloud().await;
    let s = setup(&cloud).await;
    let api = cloud.api(&s.officer);
    let old = request(&api, &recent(s.practice))
        .await
        .1
        .expect("queued")
        .id;
    let kept = request(&api, &recent(s.practice))
        .await
        .1
        .expect("queued")
        .id;
    ready(&api, old).await;
    ready(&api, kept).await;
    let now: DateTime<Utc> = Utc::now();
    sqlx::query("UPDATE evidence_packages SET requested_at = $2 WHERE id = $1")
        .bind(old)
        .bind(now - Days::days(6 * 365 + 2))
        .execute(&cloud.owner_pool)
        .await
        .expect("age one package");
    sqlx::query("UPDATE evidence_packages SET requested_at = $2 WHERE id = $1")
        .bind(kept)
        .bind(now - Days::days(6 * 365 - 2))
        .execute(&cloud.owner_pool)
        .await
        .expect("age the other less");
    assert_eq!(
        retention::delete_expired(&cloud.pool, now)
            .await
            .expect("retention"),
        1
    );
    let (gone, _) = api
        .get::<EvidencePackage>(&format!("/api/v1/evidence/packages/{old}"))
        .await;
    assert_eq!(gone, 404);
    let (still, _) = api
        .get::<EvidencePackage>(&format!("/api/v1/evidence/packages/{kept}"))
        .await;
    assert_eq!(still, 200);
    assert_eq!(
        retention::delete_expired(&cloud.pool, now)
            .await
            .expect("again"),
        0
    );
}
