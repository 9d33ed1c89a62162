//! The REST API rejects bad input clearly, and no tenant sees another's data.

mod common;

use common::spawn_cloud;
use stayopen_shared::api::{ApiError, CreateEnrollmentToken, EnrollRequest, HardwareIdentity};
use uuid::Uuid;

fn enroll_request(token: &str, serial: &str) -> EnrollRequest {
    EnrollRequest {
        token: token.into(),
        hardware: HardwareIdentity {
            serial: serial.into(),
            mac: "02:00:00:00:00:02".into(),
            model: "test".into(),
        },
        agent_version: "test".into(),
        csr_pem: stayopen_appliance::identity::new_key_and_request()
            .expect("csr")
            .1,
        wireguard_public_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer() {
    let cloud = spawn_cloud().await;
    let health = cloud
        .http
        .get(cloud.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = cloud
        .http
        .get(cloud.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready, serde_json::json!({"database": true, "broker": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_gets_a_400_with_a_reason_and_is_counted() {
    let cloud = spawn_cloud().await;
    let response = cloud
        .http
        .post(cloud.url("/api/v1/enroll"))
        .header("content-type", "application/json")
        .body("{\"token\": 12")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let error: ApiError = response.json().await.expect("ApiError body");
    assert_eq!(error.code(), "bad_request");
    assert_eq!(
        cloud
            .counter("stayopen_api_rejected_total{reason=\"bad_json_body\"}")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_bad_tokens_are_refused() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let refused = cloud
        .anonymous()
        .login(&demo.email, "nope")
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("bad_credentials"));

    let refused = cloud.api("not-a-jwt").fleet().await.expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("unauthenticated"));
    let missing = cloud
        .http
        .get(cloud.url("/api/v1/fleet"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refused_as_expired() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let keys =
        stayopen_cloud::domain::access::TokenKeys::new(b"test-secret-test-secret-test-secret!", 1);
    let user = stayopen_cloud::domain::access::AuthUser {
        principal: stayopen_cloud::domain::access::Principal::User(stayopen_shared::UserId(
            Uuid::new_v4(),
        )),
        tenant_id: demo.tenant_id,
        role: stayopen_shared::api::Role::MspAdmin,
        practices: Vec::new(),
        api_scope: None,
        totp_enrolment_only: false,
    };
    let (token, _) = keys
        .issue(&user, chrono::Utc::now() - chrono::Duration::hours(2))
        .expect("issue");
    let refused = cloud.api(&token).fleet().await.expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("token_expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_tokens_expire_and_run_out() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let anonymous = cloud.anonymous();
    let token = admin
        .create_enrollment_token(
            demo.practices[1].id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 1,
                site_id: None,
            },
        )
        .await
        .expect("token")
        .token;
    anonymous
        .enroll(&enroll_request(&token, "SO-A"))
        .await
        .expect("enrolled");
    let refused = anonymous
        .enroll(&enroll_request(&token, "SO-B"))
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.code().as_deref(),
        Some("enrollment_token_exhausted")
    );

    sqlx::query("UPDATE enrollment_tokens SET expires_at = now() - interval '1 second'")
        .execute(&cloud.owner_pool)
        .await
        .expect("expire");
    let refused = anonymous
        .enroll(&enroll_request(&demo.practices[0].enrollment_token, "SO-C"))
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("enrollment_token_expired"));
    let refused = anonymous
        .enroll(&enroll_request("soe_unknown", "SO-D"))
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("enrollment_token_unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_user_sees_none_of_the_fleet_and_cannot_reach_its_appliances() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let anonymous = cloud.anonymous();
    let appliance = anonymous
        .enroll(&enroll_request(
            &demo.practices[0].enrollment_token,
            "SO-ISO",
        ))
        .await
        .expect("enrolled")
        .appliance_id;

    let (_, other, other_practice) = cloud.other_msp("other.example").await;
    let other = cloud.api(&other);

    let fleet = other.fleet().await.expect("fleet");
    assert_eq!(fleet.tenant_name, "other.example");
    assert_eq!(fleet.practices.len(), 1);
    assert!(fleet.practices.iter().all(|p| p.appliances.is_empty()));

    let refused = other
        .appliance_telemetry(appliance, "")
        .await
        .expect_err("refused");
    assert_eq!(
        refused.status, 404,
        "another tenant's appliance does not exist for this user"
    );
    let refused = other
        .create_enrollment_token(
            demo.practices[0].id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 1,
                site_id: None,
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(
        refused.status, 404,
        "another tenant's practice does not exist for this user"
    );

    // Nor can the other tenant claim the same hardware with a token of its own.
    let token = other
        .create_enrollment_token(
            other_practice,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 5,
                site_id: None,
            },
        )
        .await
        .expect("token")
        .token;
    let refused = anonymous
        .enroll(&enroll_request(&token, "SO-ISO"))
        .await
        .expect_err("refused");
    // Answered as an unknown token: the refusal does not tell the other MSP the box exists.
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("enrollment_token_unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_lock_the_account_out_with_retry_after() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    for _ in 0..5 {
        let refused = cloud
            .anonymous()
            .login(&demo.email, "guess")
            .await
            .expect_err("refused");
        assert_eq!(refused.status, 401);
    }
    // Even the right password is refused now, with a hint when to retry.
    let response = cloud
        .http
        .post(cloud.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": demo.email, "password": demo.password}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After header");
    // Five attempts per 15 minutes from one address: the next one frees up in 3 minutes.
    assert!(
        retry_after > 2 * 60 && retry_after <= 3 * 60,
        "{retry_after}"
    );
    let error: ApiError = response.json().await.expect("body");
    assert_eq!(error.code(), "too_many_attempts");
    assert_eq!(
        cloud
            .counter("stayopen_api_rejected_total{reason=\"too_many_attempts\"}")
            .await,
        1
    );
}
