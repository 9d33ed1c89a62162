//! Users, roles and sessions: refresh-token rotation and reuse detection, TOTP, the four roles,
//! API tokens, and every change in the audit log.

mod common;

use common::client::ApiResult;
use common::{TestCloud, spawn_cloud};
use stayopen_shared::api::{
    ApiTokenScope, CreateApiToken, CreateEnrollmentToken, CreateUser, LoginRequest, LoginResponse,
    Role, SecuritySettings, TotpCode, TotpSetup, UpdateUser,
};

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
) -> ApiResult<LoginResponse> {
    cloud
        .anonymous()
        .login_with(&LoginRequest {
            email: email.into(),
            password: password.into(),
            totp_code: code,
            msp: None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msp_that_requires_totp_gets_admins_to_enrol_and_then_asks_every_sign_in_for_a_code() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    admin
        .set_security_settings(&SecuritySettings {
            require_totp_for_admins: true,
        })
        .await
        .expect("settings saved");

    // Without TOTP the admin may only see who they are and enrol.
    let restricted = cloud.api_as(&demo.email, &demo.password).await;
    let refused = restricted.fleet().await.expect_err("TOTP first");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.code().as_deref(), Some("totp_enrolment_required"));
    let me = restricted.me().await;
    assert!(!me.expect("me").totp_enabled);

    let setup = restricted.totp_setup().await.expect("setup");
    assert!(setup.otpauth_uri.starts_with("otpauth://totp/StayOpen:"));
    let now = chrono::Utc::now().timestamp();
    let refused = restricted
        .totp_confirm(&TotpCode {
            code: "000000".into(),
        })
        .await
        .expect_err("a wrong code does not enable TOTP");
    assert_eq!(refused.status, 401, "a wrong code does not enable TOTP");
    restricted
        .totp_confirm(&TotpCode {
            code: totp_code(&setup, now),
        })
        .await
        .expect("TOTP enabled");

    // Now a code is required; the confirmation's code cannot be replayed; the next one works.
    let refused = login_with_code(&cloud, &demo.email, &demo.password, None)
        .await
        .expect_err("a code is required");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("totp_required"));
    let refused = login_with_code(
        &cloud,
        &demo.email,
        &demo.password,
        Some(totp_code(&setup, now)),
    )
    .await
    .expect_err("a used code is refused");
    assert_eq!(refused.status, 401, "a used code is refused");
    assert_eq!(refused.code().as_deref(), Some("totp_invalid"));
    let next = now + stayopen_cloud::domain::access::totp::STEP_SECS;
    let session = login_with_code(
        &cloud,
        &demo.email,
        &demo.password,
        Some(totp_code(&setup, next)),
    )
    .await
    .unwrap_or_else(|refused| panic!("{refused:?}"));
    cloud
        .api(&session.access_token)
        .fleet()
        .await
        .expect("a full session after the second factor");
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
    let (technician, officer, auditor) = (
        cloud.api(&technician),
        cloud.api(&officer),
        cloud.api(&auditor),
    );

    // Technician: operates and configures, but manages no users.
    technician
        .create_enrollment_token(riverside, &token_body)
        .await
        .expect("a technician creates enrolment tokens");
    let refused = technician.users("").await.expect_err("no user management");
    assert_eq!(refused.status, 403);

    // Compliance officer: sees their practice only, changes nothing.
    let fleet = officer.fleet().await;
    let names: Vec<String> = fleet
        .expect("fleet")
        .practices
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["Riverside Family Medicine"]);
    let refused = officer
        .practice(hillcrest)
        .await
        .expect_err("another practice does not exist for them");
    assert_eq!(
        refused.status, 404,
        "another practice does not exist for them"
    );
    let refused = officer
        .create_enrollment_token(riverside, &token_body)
        .await
        .expect_err("an officer changes nothing");
    assert_eq!(refused.status, 403);
    let refused = officer.audit_log("").await.expect_err("not the audit log");
    assert_eq!(refused.status, 403);

    // Auditor: one practice, until their access ends.
    let fleet = auditor.fleet().await;
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
    let refused = login_with_code(&cloud, "auditor@cpa.example", "correct-horse-battery", None)
        .await
        .expect_err("access expired");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("access_expired"));

    // Bad role assignments are refused with a reason.
    let user = |password: &str, role, practice_ids| CreateUser {
        email: "x@y.example".into(),
        display_name: String::new(),
        password: password.into(),
        role,
        practice_ids,
        access_expires_at: None,
    };
    for (body, why) in [
        (
            user("long-enough-password", Role::ComplianceOfficer, vec![]),
            "an officer without a practice",
        ),
        (
            user("long-enough-password", Role::Auditor, vec![riverside]),
            "an auditor without an expiry",
        ),
        (user("short", Role::MspAdmin, vec![]), "a short password"),
    ] {
        let refused = cloud.api(&admin).create_user(&body).await.expect_err(why);
        assert_eq!(refused.status, 400, "{why}");
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
    let admin = cloud.api(&admin);
    let users = admin.users("").await;
    let users = users.expect("users").items;
    let tech = users
        .iter()
        .find(|u| u.role == Role::MspTechnician)
        .expect("tech");
    let me = users.iter().find(|u| u.role == Role::MspAdmin).expect("me");

    let updated = admin
        .update_user(
            tech.id.0,
            &UpdateUser {
                disabled: Some(true),
                ..UpdateUser::default()
            },
        )
        .await;
    assert!(updated.expect("user").disabled);
    let refused = cloud
        .anonymous()
        .refresh(&tech_session.refresh_token)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401, "a disabled user's session is over");
    let refused = login_with_code(
        &cloud,
        "tech@lakeside-it.example",
        "correct-horse-battery",
        None,
    )
    .await
    .expect_err("a disabled user cannot sign in");
    assert_eq!(refused.status, 401);

    let refused = admin
        .update_user(
            me.id.0,
            &UpdateUser {
                role: Some(Role::MspTechnician),
                ..UpdateUser::default()
            },
        )
        .await
        .expect_err("an admin cannot demote themselves");
    assert_eq!(refused.status, 400, "an admin cannot demote themselves");
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
            cloud
                .api(&token)
                .fleet()
                .await
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
            cloud
                .api(admin)
                .update_user(officer_id.0, &update)
                .await
                .expect("access changed");
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
    let refused = cloud
        .api(&officer)
        .practice(first.id)
        .await
        .expect_err("no longer theirs");
    assert_eq!(refused.status, 404);

    // Disabled: the token is refused on its next use, long before it would expire.
    change(UpdateUser {
        disabled: Some(true),
        ..UpdateUser::default()
    })
    .await;
    let refused = cloud
        .api(&officer)
        .me()
        .await
        .expect_err("a disabled user's token is refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("unauthenticated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_act_within_their_scope_until_revoked_and_everything_is_audited() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let create = |name: &str, scope| CreateApiToken {
        name: name.into(),
        scope,
        expires_in_days: Some(30),
    };
    let read = admin
        .create_api_token(&create("monitoring", ApiTokenScope::Read))
        .await;
    let read = read.expect("token");
    assert!(read.token.starts_with("sot_"));
    let operate = admin
        .create_api_token(&create("psa", ApiTokenScope::Operate))
        .await;
    let operate = operate.expect("token");
    let practice = demo.practices[0].id;
    let token_body = CreateEnrollmentToken {
        expires_in_hours: 1,
        max_uses: 1,
        site_id: None,
    };

    let (as_read, as_operate) = (cloud.api(&read.token), cloud.api(&operate.token));
    let fleet = as_read.fleet().await;
    assert_eq!(fleet.expect("fleet").practices.len(), 2);
    let refused = as_read
        .create_enrollment_token(practice, &token_body)
        .await
        .expect_err("a read token changes nothing");
    assert_eq!(refused.status, 403, "a read token changes nothing");
    as_operate
        .create_enrollment_token(practice, &token_body)
        .await
        .expect("an operate token does");
    let refused = as_operate
        .users("")
        .await
        .expect_err("no API token manages access");
    assert_eq!(refused.status, 403, "no API token manages access");

    admin
        .delete_api_token(read.details.id)
        .await
        .expect("token revoked");
    let refused = as_read
        .fleet()
        .await
        .expect_err("a revoked token stops working at once");
    assert_eq!(refused.status, 401, "a revoked token stops working at once");
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

    let log = admin.audit_log("limit=500").await;
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
