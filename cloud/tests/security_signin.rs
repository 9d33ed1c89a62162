//! Attacks on sign-in and on what one MSP can learn about another, against the real HTTP server
//! and PostgreSQL: concurrent password guessing, a forged `X-Forwarded-For`, a concurrent TOTP
//! replay, two cloud instances sharing the count, and the old cross-MSP oracles (an e-mail address
//! or a box's serial another MSP uses). Each test passes only when the attack fails.

mod common;

use common::{TestCloud, spawn_cloud_with};
use futures_util::future::join_all;
use stayopen_cloud::domain::access::throttle::{PER_ACCOUNT_AND_ADDRESS, PER_ADDRESS};
use stayopen_cloud::domain::access::totp;
use stayopen_cloud::infra::config::CloudConfig;
use stayopen_cloud::startup::Application;
use stayopen_shared::api::{
    ClaimEnrollRequest, ClaimSerial, CreateEnrollmentToken, CreateUser, EnrollRequest,
    HardwareIdentity, LoginResponse, Role, TotpCode,
};

/// The loopback peer every test request comes from, trusted as a proxy where a test says so.
const LOOPBACK: &str = "127.0.0.1/32";

fn trusting_loopback(config: &mut CloudConfig) {
    config.http.trusted_proxies = vec![LOOPBACK.parse().expect("cidr")];
}

/// One sign-in attempt at `base_url`; `forwarded_for` is sent as `X-Forwarded-For`. Returns the
/// status and the body.
async fn attempt(
    http: &reqwest::Client,
    base_url: &str,
    body: serde_json::Value,
    forwarded_for: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = http
        .post(format!("{base_url}/api/v1/auth/login"))
        .json(&body);
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.expect("sign-in answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn credentials(email: &str, password: &str) -> serde_json::Value {
    serde_json::json!({ "email": email, "password": password })
}

/// How many of `statuses` are `status`.
fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_guesses_from_one_address_reach_the_password_check_at_most_five_times_and_the_owner_still_signs_in_elsewhere()
 {
    let cloud = spawn_cloud_with(trusting_loopback).await;
    let demo = cloud.seed_demo().await;
    let guesses = (0..40).map(|i| {
        attempt(
            &cloud.http,
            &cloud.base_url,
            credentials(&demo.email, &format!("guess-{i}")),
            Some("203.0.113.66"),
        )
    });
    let statuses: Vec<u16> = join_all(guesses)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let limit = usize::try_from(PER_ACCOUNT_AND_ADDRESS.attempts).expect("limit");
    assert_eq!(count(&statuses, 401), limit, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 40 - limit, "{statuses:?}");
    let checked = cloud
        .counter("stayopen_api_rejected_total{reason=\"bad_credentials\"}")
        .await;
    assert_eq!(checked, 5, "only five guesses reached a password check");

    // The owner, from their own address, is not locked out by the attacker's.
    let (status, body) = attempt(
        &cloud.http,
        &cloud.base_url,
        credentials(&demo.email, &demo.password),
        Some("198.51.100.7"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The attacker's address is still held back, even with the right password.
    let (status, _) = attempt(
        &cloud.http,
        &cloud.base_url,
        credentials(&demo.email, &demo.password),
        Some("203.0.113.66"),
    )
    .await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_spraying_forty_unknown_accounts_at_once_gets_thirty_through() {
    let cloud = spawn_cloud_with(trusting_loopback).await;
    let demo = cloud.seed_demo().await;
    let guesses = (0..40).map(|i| {
        attempt(
            &cloud.http,
            &cloud.base_url,
            credentials(&format!("nobody-{i}@spray.example"), "Spring2026!spring"),
            Some("203.0.113.77"),
        )
    });
    let statuses: Vec<u16> = join_all(guesses)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let limit = usize::try_from(PER_ADDRESS.attempts).expect("limit");
    assert_eq!(count(&statuses, 401), limit, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 40 - limit, "{statuses:?}");
    // The breadth limit holds that one address back, nobody else.
    let (status, body) = attempt(
        &cloud.http,
        &cloud.base_url,
        credentials(&demo.email, &demo.password),
        Some("198.51.100.8"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_x_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_changes_nothing() {
    // No trusted proxies: every request is keyed on its TCP peer, 127.0.0.1.
    let cloud = spawn_cloud_with(|_| {}).await;
    let demo = cloud.seed_demo().await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let forged = format!("192.0.2.{}", i + 1);
        let (status, _) = attempt(
            &cloud.http,
            &cloud.base_url,
            credentials(&demo.email, "a wrong password"),
            Some(&forged),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 429, 429, 429, 429],
        "ten forged addresses count as the one real peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_trusted_proxy_the_forwarded_client_address_is_the_one_throttled() {
    let cloud = spawn_cloud_with(trusting_loopback).await;
    let demo = cloud.seed_demo().await;
    for expected in [401, 401, 401, 401, 401, 429] {
        // The client forged a first entry; the proxy appended the address it saw.
        let (status, _) = attempt(
            &cloud.http,
            &cloud.base_url,
            credentials(&demo.email, "a wrong password"),
            Some("192.0.2.99, 203.0.113.5"),
        )
        .await;
        assert_eq!(status, expected);
    }
    // Another client behind the same proxy is a different address.
    let (status, body) = attempt(
        &cloud.http,
        &cloud.base_url,
        credentials(&demo.email, &demo.password),
        Some("192.0.2.99, 203.0.113.6"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A second cloud instance on `cloud`'s database, with `adjust` applied; its base URL.
async fn second_instance(cloud: &TestCloud, adjust: impl FnOnce(&mut CloudConfig)) -> String {
    let mut config = CloudConfig::default();
    config.database.url = cloud.app_database_url.clone().into();
    config.database.owner_url = Some(cloud.database_url.clone().into());
    config.database.max_connections = 5;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.workers = 1;
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    config.broker.tls_dir = cloud.tls_dir.path().to_owned();
    config.auth.jwt_secret = Some("test-secret-test-secret-test-secret!".into());
    adjust(&mut config);
    let app = Application::build(config)
        .await
        .expect("the second instance starts");
    let base_url = format!("http://{}", app.http_addr());
    tokio::spawn(app.run_until_stopped());
    base_url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_cloud_instances_share_one_count_even_when_guesses_alternate_and_race() {
    let cloud = spawn_cloud_with(trusting_loopback).await;
    let demo = cloud.seed_demo().await;
    let other = second_instance(&cloud, trusting_loopback).await;
    let guesses = (0..20).map(|i| {
        let base = if i % 2 == 0 {
            cloud.base_url.clone()
        } else {
            other.clone()
        };
        let http = cloud.http.clone();
        let email = demo.email.clone();
        async move {
            attempt(
                &http,
                &base,
                credentials(&email, "a wrong password"),
                Some("203.0.113.9"),
            )
            .await
            .0
        }
    });
    let statuses = join_all(guesses).await;
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
}

fn code_at(secret_base32: &str, step: i64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret_base32.as_bytes())
        .expect("base32 secret");
    totp::code_for_step(&secret, step)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_totp_code_sent_by_eight_concurrent_sign_ins_signs_in_exactly_one() {
    let cloud = spawn_cloud_with(trusting_loopback).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let setup = admin.totp_setup().await.expect("setup");
    let step = totp::step_at(chrono::Utc::now().timestamp());
    admin
        .totp_confirm(&TotpCode {
            code: code_at(&setup.secret_base32, step),
        })
        .await
        .expect("TOTP enabled");
    // The next step's code (one step of drift is accepted), replayed by eight parallel sign-ins
    // from eight addresses, so the throttle does not stand in the way.
    let code = code_at(&setup.secret_base32, step + 1);
    let replays = (0..8).map(|i| {
        let body = serde_json::json!({
            "email": demo.email, "password": demo.password, "totp_code": code,
        });
        let http = cloud.http.clone();
        let base = cloud.base_url.clone();
        async move { attempt(&http, &base, body, Some(&format!("198.51.100.{}", 20 + i))).await }
    });
    let answers = join_all(replays).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(count(&statuses, 200), 1, "{answers:?}");
    assert_eq!(count(&statuses, 401), 7, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 401)
            .all(|(_, body)| body["error"]["code"] == "totp_invalid"),
        "{answers:?}"
    );
    // Nor does the code that enabled TOTP sign anybody in.
    let (status, _) = attempt(
        &cloud.http,
        &cloud.base_url,
        serde_json::json!({
            "email": demo.email, "password": demo.password,
            "totp_code": code_at(&setup.secret_base32, step),
        }),
        Some("198.51.100.40"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_msp_creating_a_user_with_this_msps_address_learns_nothing_and_takes_nothing() {
    let cloud = spawn_cloud_with(trusting_loopback).await;
    let demo = cloud.seed_demo().await;
    let (_, other_token, _) = cloud.other_msp("other.example").await;
    let other = cloud.api(&other_token);
    let user = |email: &str, password: &str| CreateUser {
        email: email.into(),
        display_name: String::new(),
        password: password.into(),
        role: Role::MspTechnician,
        practice_ids: Vec::new(),
        access_expires_at: None,
    };
    // The demo admin's address and a never-used one: the same answer.
    let taken = other
        .create_user(&user(&demo.email, "other-msps-own-password"))
        .await
        .expect("created, as for any new address");
    let fresh = other
        .create_user(&user("never-used@other.example", "other-msps-own-password"))
        .await
        .expect("created");
    assert_eq!(taken.role, fresh.role);

    // Each password opens its own MSP's account; the demo admin is untouched.
    let mine: LoginResponse = cloud.session(&demo.email, &demo.password).await;
    assert_eq!(mine.user.tenant_id, demo.tenant_id);
    let theirs = cloud.session(&demo.email, "other-msps-own-password").await;
    assert_ne!(theirs.user.tenant_id, demo.tenant_id);
    assert_eq!(theirs.user.id, taken.id);

    // One person with one password at two MSPs is asked which one.
    let same = other
        .create_user(&user("shared@both.example", "the-same-password-twice"))
        .await
        .expect("created");
    let demo_admin = cloud.api(&mine.access_token);
    demo_admin
        .create_user(&user("shared@both.example", "the-same-password-twice"))
        .await
        .expect("created in the demo MSP");
    let (status, body) = attempt(
        &cloud.http,
        &cloud.base_url,
        credentials("shared@both.example", "the-same-password-twice"),
        Some("198.51.100.50"),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = attempt(
        &cloud.http,
        &cloud.base_url,
        serde_json::json!({
            "email": "shared@both.example", "password": "the-same-password-twice",
            "msp": "other.example",
        }),
        Some("198.51.100.50"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], serde_json::json!(same.id));
}

async fn raw_enrol(cloud: &TestCloud, path: &str, body: &impl serde::Serialize) -> (u16, String) {
    let response = cloud
        .http
        .post(cloud.url(path))
        .json(body)
        .send()
        .await
        .expect("answered");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

fn hardware(serial: &str, mac: &str) -> HardwareIdentity {
    HardwareIdentity {
        serial: serial.into(),
        mac: mac.into(),
        model: "test".into(),
    }
}

fn csr() -> String {
    stayopen_appliance::identity::new_key_and_request()
        .expect("csr")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_msp_enrolling_or_registering_this_msps_box_gets_the_answer_any_refusal_gets() {
    let cloud = spawn_cloud_with(|_| {}).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let demo_token = admin
        .create_enrollment_token(
            demo.practices[0].id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 5,
                site_id: None,
            },
        )
        .await
        .expect("token")
        .token;
    let device = cloud
        .enrol_device(&demo_token, "SO-VICTIM-1", "02:00:00:00:0a:01")
        .await;
    let factory_key = "fk_victim_victim_victim_victim_victim_01";
    admin
        .claim_serial(
            demo.practices[0].id,
            &ClaimSerial {
                serial: "SO-VICTIM-2".into(),
                factory_key: factory_key.into(),
                site_id: None,
            },
        )
        .await
        .expect("claimed");

    let (_, other_token, other_practice) = cloud.other_msp("other.example").await;
    let other = cloud.api(&other_token);
    let their_token = common::enrolment_token(&cloud, &other_token, other_practice).await;

    // With its own valid token, the other MSP presents the demo MSP's enrolled box: answered as
    // an unknown token, word for word.
    let foreign = raw_enrol(
        &cloud,
        "/api/v1/enroll",
        &EnrollRequest {
            token: their_token.clone(),
            hardware: hardware("SO-VICTIM-1", "02:00:00:00:0a:01"),
            agent_version: "test".into(),
            csr_pem: csr(),
            wireguard_public_key: None,
        },
    )
    .await;
    let unknown = raw_enrol(
        &cloud,
        "/api/v1/enroll",
        &EnrollRequest {
            token: "not-a-token-anyone-issued".into(),
            hardware: hardware("SO-NEVER-SEEN", "02:00:00:00:0a:99"),
            agent_version: "test".into(),
            csr_pem: csr(),
            wireguard_public_key: None,
        },
    )
    .await;
    assert_eq!(foreign.0, 401);
    assert_eq!(foreign, unknown, "indistinguishable from an unknown token");
    assert_eq!(
        cloud
            .counter("stayopen_api_rejected_total{reason=\"hardware_claimed\"}")
            .await,
        1,
        "counted as what it is"
    );

    // Registering the demo MSP's claimed serial: accepted as any new serial is.
    for serial in ["SO-VICTIM-2", "SO-VICTIM-1", "SO-NEVER-SEEN-2"] {
        other
            .claim_serial(
                other_practice,
                &ClaimSerial {
                    serial: serial.into(),
                    factory_key: "fk_other_other_other_other_other_other_01".into(),
                    site_id: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{serial} registered like any other: {e:?}"));
    }
    // Zero-touch with the other MSP's key for the demo MSP's enrolled box, and for a serial nobody
    // registered: the same refusal.
    let claim = |serial: &str, mac: &str, key: &str| ClaimEnrollRequest {
        factory_key: key.into(),
        hardware: hardware(serial, mac),
        agent_version: "test".into(),
        csr_pem: csr(),
        wireguard_public_key: None,
    };
    let foreign = raw_enrol(
        &cloud,
        "/api/v1/enroll/claim",
        &claim(
            "SO-VICTIM-1",
            "02:00:00:00:0a:01",
            "fk_other_other_other_other_other_other_01",
        ),
    )
    .await;
    let unregistered = raw_enrol(
        &cloud,
        "/api/v1/enroll/claim",
        &claim(
            "SO-NOBODY",
            "02:00:00:00:0a:98",
            "fk_other_other_other_other_other_other_01",
        ),
    )
    .await;
    assert_eq!(foreign.0, 401);
    assert_eq!(
        foreign, unregistered,
        "indistinguishable from an unregistered serial"
    );

    // The demo MSP's box and claim are untouched, and its box still enrols with its own key.
    let fleet = admin.fleet().await.expect("fleet");
    let boxes: Vec<_> = fleet
        .practices
        .iter()
        .flat_map(|p| p.appliances.iter())
        .filter(|a| a.serial == "SO-VICTIM-1")
        .collect();
    assert_eq!(boxes.len(), 1);
    assert_eq!(boxes[0].id, device.enrolled.appliance_id);
    let enrolled = cloud
        .anonymous()
        .enroll_claimed(&claim("SO-VICTIM-2", "02:00:00:00:0a:02", factory_key))
        .await
        .expect("the demo MSP's box enrols with its factory key");
    assert_eq!(enrolled.practice_id, demo.practices[0].id);
}
