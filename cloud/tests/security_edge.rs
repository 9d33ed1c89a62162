//! The HTTP edge under attack (issue 15): tokens in URLs and logs, stream tickets replayed
//! (concurrently), streams kept open after access ended or opened without limit, API tokens of a
//! disabled creator, forged audiences and issuers, two instances sharing one database, and the
//! security headers on every kind of response.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{TestCloud, spawn_cloud, spawn_cloud_with};
use sha2::Digest;
use stayopen_cloud::infra::config::CloudConfig;
use stayopen_cloud::startup::Application;
use stayopen_shared::api::{ApiTokenScope, CreateApiToken, CreateUser, Role, UpdateUser};
use uuid::Uuid;

/// The JWT secret every test cloud is configured with (`common::spawn_cloud_with`).
const TEST_SECRET: &str = "test-secret-test-secret-test-secret!";

async fn ticket(cloud: &TestCloud, token: &str) -> String {
    cloud
        .api(token)
        .stream_ticket()
        .await
        .expect("a stream ticket")
        .ticket
}

async fn stream_with_query(cloud: &TestCloud, query: impl AsRef<str>) -> reqwest::Response {
    let query = query.as_ref();
    cloud
        .http
        .get(format!("{}/api/v1/stream?{query}", cloud.base_url))
        .send()
        .await
        .expect("the stream answers")
}

async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("an error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Reads the stream until the cloud ends it; panics if it is still open after `within`.
async fn ends_within(mut stream: reqwest::Response, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.chunk()).await {
            Err(_) => panic!("the stream was still open after {within:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return,
        }
    }
}

/// Waits until the captured log holds `needle` `times` times (the request log writes a line when
/// the response is finished).
async fn wait_for_log(needle: &str, times: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = common::logs::captured();
        if log.matches(needle).count() >= times {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} was not logged {times} times:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn quick_reauthorisation(config: &mut CloudConfig) {
    config.edge.stream_reauthorise_secs = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_a_stream_ticket_nor_a_token_in_the_stream_url_reaches_the_log() {
    let cloud = spawn_cloud_with(quick_reauthorisation).await;
    let demo = cloud.seed_demo().await;
    let session = cloud.session(&demo.email, &demo.password).await;
    let token = session.access_token.clone();

    // The attack of the issue: the token in the query string. Refused, even with a ticket beside it.
    let with_token = stream_with_query(&cloud, &format!("access_token={token}")).await;
    assert_eq!(with_token.status(), 401);
    assert_eq!(error_code(with_token).await, "unauthenticated");
    let spare = ticket(&cloud, &token).await;
    let both = stream_with_query(&cloud, &format!("ticket={spare}&access_token={token}")).await;
    assert_eq!(both.status(), 401);

    // A ticket opens the stream once; the same URL again is refused.
    let used = ticket(&cloud, &token).await;
    let stream = stream_with_query(&cloud, &format!("ticket={used}")).await;
    assert_eq!(stream.status(), 200);
    let replay = stream_with_query(&cloud, &format!("ticket={used}")).await;
    assert_eq!(replay.status(), 401);
    assert_eq!(error_code(replay).await, "unauthenticated");
    // Signing out ends the stream, and with it the request, which is then logged.
    cloud
        .anonymous()
        .logout(&session.refresh_token)
        .await
        .expect("signed out");
    ends_within(stream, Duration::from_secs(10)).await;

    // A TOTP code sent with the wrong type: the parser's complaint quotes it, the log must not.
    let typed_wrong = cloud
        .http
        .post(cloud.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": demo.email, "password": "x", "totp_code": 918_273}))
        .send()
        .await
        .expect("answer");
    assert_eq!(typed_wrong.status(), 400);
    wait_for_log("reason=\"bad_json_body\"", 1).await;
    wait_for_log("GET /api/v1/stream 401", 3).await;
    let log = wait_for_log("GET /api/v1/stream 200", 1).await;
    assert!(!log.contains("918273"), "a TOTP code was logged:\n{log}");
    for secret in [&token, &used, &spare, &session.refresh_token] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret was logged:\n{log}"
        );
    }
    let jwt = log.find("eyJ");
    assert!(jwt.is_none(), "something JWT-shaped was logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_presented_twenty_times_at_once_opens_exactly_one_stream() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let token = cloud.login(&demo.email, &demo.password).await;
    let ticket = ticket(&cloud, &token).await;
    let attempts = (0..20).map(|_| stream_with_query(&cloud, format!("ticket={ticket}")));
    let answers = futures_util::future::join_all(attempts).await;
    let opened = answers.iter().filter(|r| r.status() == 200).count();
    let refused = answers.iter().filter(|r| r.status() == 401).count();
    assert_eq!((opened, refused), (1, 19));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_made_up_ticket_opens_nothing() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let token = cloud.login(&demo.email, &demo.password).await;
    let stale = ticket(&cloud, &token).await;
    sqlx::query("UPDATE stream_tickets SET expires_at = now() - interval '1 second'")
        .execute(&cloud.owner_pool)
        .await
        .expect("age the ticket");
    let refused = stream_with_query(&cloud, &format!("ticket={stale}")).await;
    assert_eq!(refused.status(), 401);
    let made_up = format!("sos_{}", "0".repeat(64));
    for query in [format!("ticket={made_up}"), "ticket=".into(), String::new()] {
        let refused = stream_with_query(&cloud, &query).await;
        assert_eq!(refused.status(), 401, "{query}");
    }
    // The bearer header alone does not open the stream either: only a ticket does.
    let with_header = cloud
        .http
        .get(format!("{}/api/v1/stream", cloud.base_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(with_header.status(), 401);
    let metrics = reqwest::get(cloud.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("stayopen_api_rejected_total{reason=\"stream_ticket_expired\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_ends_when_its_user_is_disabled() {
    let cloud = spawn_cloud_with(quick_reauthorisation).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let technician = cloud
        .user_with_role(&admin, "tech@stream.example", Role::MspTechnician, vec![])
        .await;
    let user = cloud.user_by_email(&admin, "tech@stream.example").await;
    let stream = stream_with_query(
        &cloud,
        &format!("ticket={}", ticket(&cloud, &technician).await),
    )
    .await;
    assert_eq!(stream.status(), 200);
    cloud
        .api(&admin)
        .update_user(
            user.id.0,
            &UpdateUser {
                disabled: Some(true),
                ..UpdateUser::default()
            },
        )
        .await
        .expect("disabled");
    ends_within(stream, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_gets_five_streams_and_the_next_ones_are_refused_with_429() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let token = cloud.login(&demo.email, &demo.password).await;
    let mut tickets = Vec::new();
    for _ in 0..8 {
        tickets.push(ticket(&cloud, &token).await);
    }
    let attempts = tickets
        .iter()
        .map(|t| stream_with_query(&cloud, format!("ticket={t}")));
    let answers = futures_util::future::join_all(attempts).await;
    let opened = answers.iter().filter(|r| r.status() == 200).count();
    let limited = answers.iter().filter(|r| r.status() == 429).count();
    assert_eq!((opened, limited), (5, 3));
    // Another user is not affected.
    let other = cloud
        .user_with_role(&token, "tech@limit.example", Role::MspTechnician, vec![])
        .await;
    let theirs =
        stream_with_query(&cloud, &format!("ticket={}", ticket(&cloud, &other).await)).await;
    assert_eq!(theirs.status(), 200);
}

async fn second_admin(cloud: &TestCloud, admin: &str, email: &str) -> (Uuid, String) {
    cloud
        .api(admin)
        .create_user(&CreateUser {
            email: email.into(),
            display_name: String::new(),
            password: "correct-horse-battery".into(),
            role: Role::MspAdmin,
            practice_ids: vec![],
            access_expires_at: None,
        })
        .await
        .expect("an admin");
    let id = cloud.user_by_email(admin, email).await.id.0;
    (id, cloud.login(email, "correct-horse-battery").await)
}

async fn api_token_of(cloud: &TestCloud, creator: &str) -> String {
    cloud
        .api(creator)
        .create_api_token(&CreateApiToken {
            name: "automation".into(),
            scope: ApiTokenScope::Read,
            expires_in_days: None,
        })
        .await
        .expect("an API token")
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_stops_working_when_its_creator_is_disabled_deleted_or_demoted() {
    let cloud = spawn_cloud_with(quick_reauthorisation).await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;

    let (disabled_id, disabled_admin) = second_admin(&cloud, &admin, "a@tokens.example").await;
    let token = api_token_of(&cloud, &disabled_admin).await;
    cloud
        .api(&token)
        .fleet()
        .await
        .expect("works while the creator may");
    let stream =
        stream_with_query(&cloud, &format!("ticket={}", ticket(&cloud, &token).await)).await;
    assert_eq!(stream.status(), 200);
    cloud
        .api(&admin)
        .update_user(
            disabled_id,
            &UpdateUser {
                disabled: Some(true),
                ..UpdateUser::default()
            },
        )
        .await
        .expect("disabled");
    let refused = cloud.api(&token).fleet().await.expect_err("refused");
    assert_eq!(refused.status, 401);
    ends_within(stream, Duration::from_secs(10)).await;

    let (deleted_id, deleted_admin) = second_admin(&cloud, &admin, "b@tokens.example").await;
    let token = api_token_of(&cloud, &deleted_admin).await;
    cloud
        .api(&admin)
        .delete_user(deleted_id)
        .await
        .expect("deleted");
    let refused = cloud.api(&token).fleet().await.expect_err("refused");
    assert_eq!(refused.status, 401);

    let (demoted_id, demoted_admin) = second_admin(&cloud, &admin, "c@tokens.example").await;
    let token = api_token_of(&cloud, &demoted_admin).await;
    cloud
        .api(&admin)
        .update_user(
            demoted_id,
            &UpdateUser {
                role: Some(Role::MspTechnician),
                ..UpdateUser::default()
            },
        )
        .await
        .expect("demoted");
    let refused = cloud.api(&token).fleet().await.expect_err("refused");
    assert_eq!(refused.status, 401);
}

/// An access token signed with the cloud's own key, with the claims given.
fn forged(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(hex::encode(
        &sha2::Sha256::digest(TEST_SECRET.as_bytes())[..6],
    ));
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_the_right_key_for_another_audience_or_issuer_is_refused() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let me = cloud
        .api_as(&demo.email, &demo.password)
        .await
        .me()
        .await
        .expect("me");
    let now = Utc::now().timestamp();
    let claims = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = serde_json::json!({
            "sub": me.id, "tid": me.tenant_id, "role": "msp_admin", "iat": now, "exp": now + 600,
        });
        if let Some(iss) = iss {
            claims["iss"] = iss.into();
        }
        if let Some(aud) = aud {
            claims["aud"] = aud.into();
        }
        claims
    };
    // The forging is right: with the cloud's issuer and audience the token works.
    let genuine = forged(&claims(Some("stayopen-cloud"), Some("stayopen-api")));
    cloud.api(&genuine).me().await.expect("accepted");
    for (iss, aud) in [
        (Some("stayopen-cloud"), Some("another-service")),
        (Some("someone-else"), Some("stayopen-api")),
        (None, Some("stayopen-api")),
        (Some("stayopen-cloud"), None),
        (None, None),
    ] {
        let refused = cloud
            .api(&forged(&claims(iss, aud)))
            .me()
            .await
            .expect_err("refused");
        assert_eq!(refused.status, 401, "iss {iss:?} aud {aud:?}");
    }
}

/// A cloud on `database` without a configured JWT secret.
async fn instance(database: &common::TestDatabase, tls: &tempfile::TempDir) -> String {
    let mut config = CloudConfig::default();
    config.broker.tls_dir = tls.path().to_owned();
    config.database.url = database.app_url.clone().into();
    config.database.owner_url = Some(database.owner_url.clone().into());
    config.database.max_connections = 5;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.http.workers = 1;
    config.broker.listen = "127.0.0.1:0".parse().expect("addr");
    config.auth.jwt_secret = None;
    let app = Application::build(config).await.expect("the cloud starts");
    let url = format!("http://{}", app.http_addr());
    tokio::spawn(app.run_until_stopped());
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_together_on_one_database_accept_each_others_sessions() {
    common::logs::capture();
    let database = common::fresh_database().await;
    let (tls_a, tls_b) = (
        tempfile::tempdir().expect("tls"),
        tempfile::tempdir().expect("tls"),
    );
    let (a, b) = tokio::join!(instance(&database, &tls_a), instance(&database, &tls_b));
    let pool = sqlx::PgPool::connect(&database.app_url)
        .await
        .expect("pool");
    let demo = stayopen_cloud::domain::seed::seed_demo(&pool)
        .await
        .expect("seed");
    let http = reqwest::Client::new();
    let on =
        |base: &str, token: Option<&str>| common::client::ApiClient::new(http.clone(), base, token);
    let session = on(&a, None)
        .login(&demo.email, &demo.password)
        .await
        .expect("signed in on A");
    on(&b, Some(&session.access_token))
        .me()
        .await
        .expect("B accepts A's access token");
    let renewed = on(&b, None)
        .refresh(&session.refresh_token)
        .await
        .expect("B renews A's sign-in");
    on(&a, Some(&renewed.access_token))
        .fleet()
        .await
        .expect("A accepts B's access token");
    // A stream ticket from one instance opens the stream on the other.
    let ticket = on(&a, Some(&renewed.access_token))
        .stream_ticket()
        .await
        .expect("ticket")
        .ticket;
    let stream = http
        .get(format!("{b}/api/v1/stream?ticket={ticket}"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM access_token_keys")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(keys, 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let static_dir = tempfile::tempdir().expect("static dir");
    std::fs::write(
        static_dir.path().join("index.html"),
        "<!doctype html><title>t</title>",
    )
    .expect("index");
    std::fs::write(static_dir.path().join("style.css"), "body{}").expect("css");
    let dir = static_dir.path().to_owned();
    let cloud = spawn_cloud_with(move |config| config.http.static_dir = Some(dir)).await;
    let demo = cloud.seed_demo().await;
    let token = cloud.login(&demo.email, &demo.password).await;
    let requests = [
        (
            "API",
            cloud
                .http
                .get(cloud.url("/api/v1/fleet"))
                .bearer_auth(&token),
            200,
            true,
        ),
        (
            "API error",
            cloud.http.get(cloud.url("/api/v1/fleet")),
            401,
            true,
        ),
        (
            "unknown API path",
            cloud.http.get(cloud.url("/api/v1/nothing-here")),
            404,
            true,
        ),
        (
            "bad JSON",
            cloud
                .http
                .post(cloud.url("/api/v1/auth/login"))
                .header("content-type", "application/json")
                .body("{"),
            400,
            true,
        ),
        ("dashboard", cloud.http.get(cloud.url("/")), 200, false),
        (
            "static file",
            cloud.http.get(cloud.url("/style.css")),
            200,
            false,
        ),
        (
            "client-side route",
            cloud.http.get(cloud.url("/fleet")),
            200,
            false,
        ),
        ("health", cloud.http.get(cloud.url("/healthz")), 200, false),
    ];
    for (what, request, status, api) in requests {
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), status, "{what}");
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "connect-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(
                csp.contains(directive),
                "{what}: {directive} missing from {csp:?}"
            );
        }
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{what}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
        if api {
            assert_eq!(header("cache-control"), "no-store", "{what}");
        }
        // Plain HTTP and no HSTS configured: none sent.
        assert_eq!(header("strict-transport-security"), "", "{what}");
    }
    let hsts = spawn_cloud_with(|config| config.edge.hsts_max_age_secs = Some(63_072_000)).await;
    let response = hsts
        .http
        .get(hsts.url("/healthz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
}

/// The dashboard's files go out compressed, as the browser accepts, and come back byte for byte;
/// browsers keep a build's files for good and ask again for the rest; the API's answers stay
/// uncompressed whatever the caller asks for: a compressed answer that
/// carries a secret next to text the caller chooses leaks the secret through its length (BREACH).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_files_go_out_compressed_and_kept_by_build_and_the_apis_answers_never_compressed()
 {
    use std::io::Read as _;

    let static_dir = tempfile::tempdir().expect("static dir");
    std::fs::write(
        static_dir.path().join("index.html"),
        "<!doctype html><title>t</title>",
    )
    .expect("index");
    // A wasm-like file: repetitive, as code is.
    let wasm: Vec<u8> = b"\0asm\x01\0\0\0"
        .iter()
        .copied()
        .chain((0..40_000_u32).flat_map(|i| [(i % 7) as u8, (i % 13) as u8, 0x20]))
        .collect();
    std::fs::create_dir(static_dir.path().join("app-0123abcd")).expect("a build's folder");
    std::fs::write(static_dir.path().join("app-0123abcd/app_bg.wasm"), &wasm).expect("wasm");
    let dir = static_dir.path().to_owned();
    let cloud = spawn_cloud_with(move |config| config.http.static_dir = Some(dir)).await;
    let demo = cloud.seed_demo().await;
    let token = cloud.login(&demo.email, &demo.password).await;

    let response = cloud
        .http
        .get(cloud.url("/app-0123abcd/app_bg.wasm"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("the wasm");
    assert_eq!(response.status(), 200);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(&response, "content-encoding"), "gzip");
    assert_eq!(header(&response, "content-type"), "application/wasm");
    assert!(header(&response, "content-security-policy").contains("default-src 'self'"));
    let sent = response.bytes().await.expect("body");
    assert!(
        sent.len() * 4 < wasm.len(),
        "{} bytes sent for {}",
        sent.len(),
        wasm.len()
    );
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&sent[..])
        .read_to_end(&mut unpacked)
        .expect("valid gzip");
    assert!(unpacked == wasm, "the wasm changed on the way");
    // A browser that asks for nothing gets the file as it is.
    let plain = cloud
        .http
        .get(cloud.url("/app-0123abcd/app_bg.wasm"))
        .send()
        .await
        .expect("the wasm");
    assert_eq!(header(&plain, "content-encoding"), "");

    // A build's files never change under their names: kept for good. The page that names the
    // build, and a build's file that is not there (an older build's), are asked for again.
    assert_eq!(
        header(&plain, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(plain.bytes().await.expect("body") == wasm);
    for (path, status) in [
        ("/", 200),
        ("/index.html", 200),
        ("/fleet", 200),
        ("/app-0123abcd/chunk_7.wasm", 404),
        ("/app-older/stayopen_frontend_bg.wasm", 404),
    ] {
        let response = cloud
            .http
            .get(cloud.url(path))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
    }

    // The API: a signed-in answer, an error and a sign-in (which returns a token) stay as they are.
    for (what, request) in [
        (
            "fleet",
            cloud
                .http
                .get(cloud.url("/api/v1/fleet"))
                .bearer_auth(&token),
        ),
        ("unauthorised", cloud.http.get(cloud.url("/api/v1/fleet"))),
        (
            "sign-in",
            cloud
                .http
                .post(cloud.url("/api/v1/auth/login"))
                .json(&serde_json::json!({"email": demo.email, "password": demo.password})),
        ),
    ] {
        let response = request
            .header("accept-encoding", "gzip, deflate, br, zstd")
            .send()
            .await
            .expect("answer");
        assert_eq!(header(&response, "content-encoding"), "", "{what}");
        let body: serde_json::Value = response.json().await.expect("plain JSON");
        assert!(body.is_object(), "{what}: {body}");
    }
}
