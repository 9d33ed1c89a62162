//! Users, roles and sessions: refresh-token rotation and reuse detection, TOTP, the four roles,
//! API tokens, and every change in the audit log.

mod common;

use common::{TestCloud, spawn_cloud};
use stayopen_shared::api::{
    ApiError, ApiTokenScope, AuditEntry, CreateApiToken, CreateEnrollmentToken, CreatedApiToken,
    CurrentUser, Fleet, LoginResponse, Page, Role, SecuritySettings, TotpSetup, UpdateUser,
    UserView,
};

fn code_of(body: &Option<serde_json::Value>) -> Option<String> {
    body.as_ref()
        .and_then(|b| serde_json::from_value::<ApiError>(b.clone()).ok())
        .map(|e| e.error.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_works_once_and_reusing_it_revokes_the_whole_sign_in() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let first = cloud.session(&demo.email, &demo.password).await;

    let anonymous = cloud.anonymous();
    let second = anonymous
        .refresh(&first.refresh_token)
        .await
        .expect("a new session");
    assert_ne!(second.refresh_token, first.refresh_token);
    cloud
        .api(&second.access_token)
        .fleet()
        .await
        .expect("the new access token works");

    // The first token again: someone kept a copy. Both it and its successor stop working.
    let refused = anonymous
        .refresh(&first.refresh_token)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("refresh_token_reused"));
    let refused = anonymous
        .refresh(&second.refresh_token)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("refresh_token_invalid"));

    // Another sign-in is its own family, untouched; signing out ends it.
    let other = cloud.session(&demo.email, &demo.password).await;
    anonymous
        .logout(&other.refresh_token)
        .await
        .expect("signed out");
    let refused = anonymous
        .refresh(&other.refresh_token)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
}

fn totp_code(setup: &TotpSetup, at: i64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(setup.secret_base32.as_bytes())
        .expect("base32 secret");
    stayopen_cloud::domain::access::totp::code_for_step(
        &secret,
        stayopen_cloud::domain::access::totp::step_at(at),
    )
}

async fn login_with_code(
    cloud: &TestCloud,
    email: &str,
    password: &str,
    code: Option<String>,
) -> (u16, Option<serde_json::Value>) {
    cloud
        .post::<_, serde_json::Value>(
            None,
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": password, "totp_code": code}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msp_that_requires_totp_gets_admins_to_enrol_and_then_asks_every_sign_in_for_a_code() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let (status, _) = cloud
        .put::<_, SecuritySettings>(
            &admin,
            "/api/v1/settings/security",
            &SecuritySettings {
                require_totp_for_admins: true,
            },
        )
        .await;
    assert_eq!(status, 200);

    // Without TOTP the admin may only see who they are and enrol.
    let restricted = cloud.login(&demo.email, &demo.password).await;
    let (status, error) = cloud.get::<ApiError>(&restricted, "/api/v1/fleet").await;
    assert_eq!(status, 403);
    assert_eq!(
        error.map(|e| e.error.code).as_deref(),
        Some("totp_enrolment_required")
    );
    let (status, me) = cloud.get::<CurrentUser>(&restricted, "/api/v1/me").await;
    assert_eq!(status, 200);
    assert!(!me.expect("me").totp_enabled);

    let (status, setup) = cloud
        .post::<_, TotpSetup>(Some(&restricted), "/api/v1/auth/totp/setup", &())
        .await;
    assert_eq!(status, 200);
    let setup = setup.expect("setup");
    assert!(setup.otpauth_uri.starts_with("otpauth://totp/StayOpen:"));
    let now = chrono::Utc::now().timestamp();
    let (status, _) = cloud
        .post::<_, serde_json::Value>(
            Some(&restricted),
            "/api/v1/auth/totp/confirm",
            &serde_json::json!({"code": "000000"}),
        )
        .await;
    assert_eq!(status, 401, "a wrong code does not enable TOTP");
    let (status, _) = cloud
        .post::<_, serde_json::Value>(
            Some(&restricted),
            "/api/v1/auth/totp/confirm",
            &serde_json::json!({"code": totp_code(&setup, now)}),
        )
        .await;
    assert_eq!(status, 204);

    // Now a code is required; the confirmation's code cannot be replayed; the next one works.
    let (status, body) = login_with_code(&cloud, &demo.email, &demo.password, None).await;
    assert_eq!(status, 401);
    assert_eq!(code_of(&body).as_deref(), Some("totp_required"));
    let (status, body) = login_with_code(
        &cloud,
        &demo.email,
        &demo.password,
        Some(totp_code(&setup, now)),
    )
    .await;
    assert_eq!(status, 401, "a used code is refused");
    assert_eq!(code_of(&body).as_deref(), Some("totp_invalid"));
    let next = now + stayopen_cloud::domain::access::totp::STEP_SECS;
    let (status, body) = login_with_code(
        &cloud,
        &demo.email,
        &demo.password,
        Some(totp_code(&setup, next)),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let session: LoginResponse = serde_json::from_value(body.expect("body")).expect("session");
    let (status, _) = cloud
        .get::<Fleet>(&session.access_token, "/api/v1/fleet")
        .await;
    assert_eq!(status, 200, "a full session after the second factor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_what_it_is_for_and_nothing_more() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let riverside = demo.practices[0].id;
    let hillcrest = demo.practices[1].id;
    let technician = cloud
        .user_with_role(
            &admin,
            "tech@lakeside-it.example",
            Role::MspTechnician,
            vec![],
        )
        .await;
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![riverside],
        )
        .await;
    let auditor = cloud
        .user_with_role(
            &admin,
            "auditor@cpa.example",
            Role::Auditor,
            vec![hillcrest],
        )
        .await;
    let token_body = CreateEnrollmentToken {
        expires_in_hours: 1,
        max_uses: 1,
        site_id: None,
    };
    let token_path = format!("/api/v1/practices/{riverside}/enrollment-tokens");

    // Technician: operates and configures, but manages no users.
    let (status, _) = cloud
        .post::<_, serde_json::Value>(Some(&technician), &token_path, &token_body)
        .await;
    assert_eq!(status, 201);
    let (status, _) = cloud
        .get::<serde_json::Value>(&technician, "/api/v1/users")
        .await;
    assert_eq!(status, 403);

    // Compliance officer: sees their practice only, changes nothing.
    let (_, fleet) = cloud.get::<Fleet>(&officer, "/api/v1/fleet").await;
    let names: Vec<String> = fleet
        .expect("fleet")
        .practices
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["Riverside Family Medicine"]);
    let (status, _) = cloud
        .get::<serde_json::Value>(&officer, &format!("/api/v1/practices/{hillcrest}"))
        .await;
    assert_eq!(status, 404, "another practice does not exist for them");
    let (status, _) = cloud
        .post::<_, serde_json::Value>(Some(&officer), &token_path, &token_body)
        .await;
    assert_eq!(status, 403);
    let (status, _) = cloud
        .get::<serde_json::Value>(&officer, "/api/v1/audit-log")
        .await;
    assert_eq!(status, 403);

    // Auditor: one practice, until their access ends.
    let (_, fleet) = cloud.get::<Fleet>(&auditor, "/api/v1/fleet").await;
    let names: Vec<String> = fleet
        .expect("fleet")
        .practices
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["Hillcrest Pediatrics"]);
    sqlx::query(
        "UPDATE users SET access_expires_at = now() - interval '1 minute' WHERE role = 'auditor'",
    )
    .execute(&cloud.owner_pool)
    .await
    .expect("expire");
    let (status, body) =
        login_with_code(&cloud, "auditor@cpa.example", "correct-horse-battery", None).await;
    assert_eq!(status, 401);
    assert_eq!(code_of(&body).as_deref(), Some("access_expired"));

    // Bad role assignments are refused with a reason.
    for (body, why) in [
        (
            serde_json::json!({"email": "x@y.example", "password": "long-enough-password", "role": "compliance_officer"}),
            "an officer without a practice",
        ),
        (
            serde_json::json!({"email": "x@y.example", "password": "long-enough-password", "role": "auditor", "practice_ids": [riverside]}),
            "an auditor without an expiry",
        ),
        (
            serde_json::json!({"email": "x@y.example", "password": "short", "role": "msp_admin"}),
            "a short password",
        ),
    ] {
        let (status, _) = cloud
            .post::<_, serde_json::Value>(Some(&admin), "/api/v1/users", &body)
            .await;
        assert_eq!(status, 400, "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_sessions_and_an_admin_cannot_lock_themselves_out() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin_session = cloud.session(&demo.email, &demo.password).await;
    let admin = admin_session.access_token.clone();
    cloud
        .user_with_role(
            &admin,
            "tech@lakeside-it.example",
            Role::MspTechnician,
            vec![],
        )
        .await;
    let tech_session = cloud
        .session("tech@lakeside-it.example", "correct-horse-battery")
        .await;
    let (_, users) = cloud.get::<Page<UserView>>(&admin, "/api/v1/users").await;
    let users = users.expect("users").items;
    let tech = users
        .iter()
        .find(|u| u.role == Role::MspTechnician)
        .expect("tech");
    let me = users.iter().find(|u| u.role == Role::MspAdmin).expect("me");

    let (status, updated) = cloud
        .patch::<_, UserView>(
            &admin,
            &format!("/api/v1/users/{}", tech.id),
            &UpdateUser {
                disabled: Some(true),
                ..UpdateUser::default()
            },
        )
        .await;
    assert_eq!(status, 200);
    assert!(updated.expect("user").disabled);
    let refused = cloud
        .anonymous()
        .refresh(&tech_session.refresh_token)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401, "a disabled user's session is over");
    let (status, _) = login_with_code(
        &cloud,
        "tech@lakeside-it.example",
        "correct-horse-battery",
        None,
    )
    .await;
    assert_eq!(status, 401);

    let (status, _) = cloud
        .patch::<_, UserView>(
            &admin,
            &format!("/api/v1/users/{}", me.id),
            &UpdateUser {
                role: Some(Role::MspTechnician),
                ..UpdateUser::default()
            },
        )
        .await;
    assert_eq!(status, 400, "an admin cannot demote themselves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_users_access_applies_at_once_to_the_token_they_already_hold() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let (first, second) = (&demo.practices[0], &demo.practices[1]);
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@practice.example",
            Role::ComplianceOfficer,
            vec![first.id],
        )
        .await;
    let practices_seen = |token: String| {
        let cloud = &cloud;
        async move {
            let (status, fleet) = cloud.get::<Fleet>(&token, "/api/v1/fleet").await;
            assert_eq!(status, 200);
            fleet
                .expect("fleet")
                .practices
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        practices_seen(officer.clone()).await,
        vec![first.name.clone()]
    );
    let officer_id = cloud
        .user_by_email(&admin, "officer@practice.example")
        .await
        .id;
    let change = |update: UpdateUser| {
        let (cloud, admin) = (&cloud, &admin);
        async move {
            let (status, _) = cloud
                .patch::<_, UserView>(admin, &format!("/api/v1/users/{officer_id}"), &update)
                .await;
            assert_eq!(status, 200);
        }
    };

    // Moved to the other practice: the same access token no longer opens the first one.
    change(UpdateUser {
        practice_ids: Some(vec![second.id]),
        ..UpdateUser::default()
    })
    .await;
    assert_eq!(
        practices_seen(officer.clone()).await,
        vec![second.name.clone()]
    );
    let (status, _) = cloud
        .get::<serde_json::Value>(&officer, &format!("/api/v1/practices/{}", first.id))
        .await;
    assert_eq!(status, 404);

    // Disabled: the token is refused on its next use, long before it would expire.
    change(UpdateUser {
        disabled: Some(true),
        ..UpdateUser::default()
    })
    .await;
    let (status, body) = cloud.get::<serde_json::Value>(&officer, "/api/v1/me").await;
    assert_eq!(status, 401);
    assert_eq!(code_of(&body).as_deref(), Some("unauthenticated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_act_within_their_scope_until_revoked_and_everything_is_audited() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let create = |name: &str, scope| CreateApiToken {
        name: name.into(),
        scope,
        expires_in_days: Some(30),
    };
    let (status, read) = cloud
        .post::<_, CreatedApiToken>(
            Some(&admin),
            "/api/v1/api-tokens",
            &create("monitoring", ApiTokenScope::Read),
        )
        .await;
    assert_eq!(status, 201);
    let read = read.expect("token");
    assert!(read.token.starts_with("sot_"));
    let (_, operate) = cloud
        .post::<_, CreatedApiToken>(
            Some(&admin),
            "/api/v1/api-tokens",
            &create("psa", ApiTokenScope::Operate),
        )
        .await;
    let operate = operate.expect("token");
    let token_path = format!(
        "/api/v1/practices/{}/enrollment-tokens",
        demo.practices[0].id
    );
    let token_body = CreateEnrollmentToken {
        expires_in_hours: 1,
        max_uses: 1,
        site_id: None,
    };

    let (status, fleet) = cloud.get::<Fleet>(&read.token, "/api/v1/fleet").await;
    assert_eq!(status, 200);
    assert_eq!(fleet.expect("fleet").practices.len(), 2);
    let (status, _) = cloud
        .post::<_, serde_json::Value>(Some(&read.token), &token_path, &token_body)
        .await;
    assert_eq!(status, 403, "a read token changes nothing");
    let (status, _) = cloud
        .post::<_, serde_json::Value>(Some(&operate.token), &token_path, &token_body)
        .await;
    assert_eq!(status, 201, "an operate token does");
    let (status, _) = cloud
        .get::<serde_json::Value>(&operate.token, "/api/v1/users")
        .await;
    assert_eq!(status, 403, "no API token manages access");

    let (status, _) = cloud
        .delete(&admin, &format!("/api/v1/api-tokens/{}", read.details.id))
        .await;
    assert_eq!(status, 204);
    let (status, _) = cloud
        .get::<serde_json::Value>(&read.token, "/api/v1/fleet")
        .await;
    assert_eq!(status, 401, "a revoked token stops working at once");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&cloud.owner_pool)
        .await
        .expect("hashes");
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && *h != read.token.as_bytes()),
        "only digests are stored"
    );

    let (_, log) = cloud
        .get::<Page<AuditEntry>>(&admin, "/api/v1/audit-log?limit=500")
        .await;
    let log = log.expect("audit log").items;
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "api_token.create",
        "api_token.revoke",
        "enrollment_token.create",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let by_token = log
        .iter()
        .find(|e| e.action == "enrollment_token.create" && e.actor.starts_with("api_token:"))
        .expect("the operate token's change names the token as its actor");
    assert_eq!(by_token.actor, format!("api_token:{}", operate.details.id));
    assert!(log.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
}
