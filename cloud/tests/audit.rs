//! The audit log: every change is recorded with it in one transaction, and any edit or deletion of
//! a recorded row is detected.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::spawn_cloud;
use stayopen_cloud::domain::{admin, audit};
use stayopen_shared::api::{CreateEnrollmentToken, EnrollRequest, HardwareIdentity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_msp_is_audited_and_its_admin_can_sign_in() {
    let cloud = spawn_cloud().await;
    let tenant = admin::create_msp(
        &cloud.pool,
        "Harbor Health IT",
        "Admin@Harbor.example",
        "correct horse battery",
    )
    .await
    .expect("create");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE tenant_id = $1 ORDER BY seq")
            .bind(tenant.as_uuid())
            .fetch_all(&cloud.owner_pool)
            .await
            .expect("audit rows");
    assert_eq!(actions, vec!["msp.create", "user.create"]);
    cloud
        .login("admin@harbor.example", "correct horse battery")
        .await;

    let duplicate = admin::create_msp(
        &cloud.pool,
        "harbor health it",
        "other@harbor.example",
        "correct horse battery",
    )
    .await;
    assert!(
        duplicate.is_err(),
        "MSP names are unique regardless of case"
    );
    let short = admin::create_msp(&cloud.pool, "Tiny", "a@tiny.example", "short").await;
    assert!(matches!(short, Err(admin::AdminError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_enrolments_are_audited_and_the_chain_verifies() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let token = admin
        .create_enrollment_token(
            demo.practices[0].id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 2,
                site_id: None,
            },
        )
        .await
        .expect("token")
        .token;
    cloud
        .anonymous()
        .enroll(&EnrollRequest {
            token,
            hardware: HardwareIdentity {
                serial: "SO-AUDIT".into(),
                mac: "02:00:00:00:0a:01".into(),
                model: "t".into(),
            },
            agent_version: "t".into(),
            csr_pem: stayopen_appliance::identity::new_key_and_request()
                .expect("csr")
                .1,
            wireguard_public_key: None,
        })
        .await
        .expect("enrolled");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE tenant_id = $1 ORDER BY seq")
            .bind(demo.tenant_id.as_uuid())
            .fetch_all(&cloud.owner_pool)
            .await
            .expect("audit rows");
    assert!(
        actions.starts_with(&["msp.create".to_owned()]),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "enrollment_token.create")
            .count(),
        3,
        "two seeded, one via the API"
    );
    assert_eq!(actions.last().map(String::as_str), Some("appliance.enroll"));
    let reports = audit::verify(&cloud.pool, Some(demo.tenant_id.0))
        .await
        .expect("verify");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].broken_at_seq, None, "{:?}", reports[0]);
    assert_eq!(reports[0].rows, actions.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_deleted_audit_row_breaks_the_chain() {
    let cloud = spawn_cloud().await;
    let edited = admin::create_msp(
        &cloud.pool,
        "Edited MSP",
        "a@edited.example",
        "correct horse battery",
    )
    .await
    .expect("msp");
    let deleted = admin::create_msp(
        &cloud.pool,
        "Deleted MSP",
        "a@deleted.example",
        "correct horse battery",
    )
    .await
    .expect("msp");
    let intact = admin::create_msp(
        &cloud.pool,
        "Intact MSP",
        "a@intact.example",
        "correct horse battery",
    )
    .await
    .expect("msp");

    sqlx::query("UPDATE audit_log SET after = '{\"email\": \"mallory@edited.example\", \"role\": \"msp_admin\"}' WHERE tenant_id = $1 AND seq = 2")
        .bind(edited.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("tamper");
    sqlx::query("DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 1")
        .bind(deleted.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("delete");

    let reports = audit::verify(&cloud.pool, None).await.expect("verify");
    let report = |t: stayopen_shared::TenantId| {
        reports
            .iter()
            .find(|r| r.tenant_id == t.0)
            .cloned()
            .expect("report")
    };
    assert_eq!(report(edited).broken_at_seq, Some(2));
    assert_eq!(
        report(edited).problem.as_deref(),
        Some("content does not match its hash")
    );
    assert_eq!(report(deleted).broken_at_seq, Some(1));
    assert_eq!(report(intact).broken_at_seq, None);

    // The operator command says the same, with a failing exit code.
    let output = Command::new(env!("CARGO_BIN_EXE_stayopen-cloud"))
        .args(["admin", "verify-audit"])
        .env("DATABASE_URL", &cloud.database_url)
        .output()
        .expect("verify-audit");
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("{edited}: BROKEN at row 2")),
        "{text}"
    );
    assert!(text.contains(&format!("{intact}: ok (2 rows)")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_command_creates_an_msp_with_a_password_from_stdin() {
    let cloud = spawn_cloud().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stayopen-cloud"))
        .args([
            "admin",
            "create-msp",
            "--name",
            "Bayview MSP",
            "--admin-email",
            "ops@bayview.example",
            "--password-stdin",
        ])
        .env("DATABASE_URL", &cloud.database_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("create-msp");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long enough password\n")
        .expect("password");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success());
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        id.parse::<uuid::Uuid>().is_ok(),
        "prints the MSP id, got {id:?}"
    );
    cloud
        .login("ops@bayview.example", "a long enough password")
        .await;

    let help = Command::new(env!("CARGO_BIN_EXE_stayopen-cloud"))
        .args(["admin", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("create-msp") && help.contains("verify-audit"),
        "{help}"
    );
}
