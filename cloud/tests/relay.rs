//! The relay registry of the session-safe tunnel (issue 16), against a real cloud, PostgreSQL and
//! broker: appliances register WireGuard keys at enrolment and renewal and get distinct inner
//! addresses and a relay; relays read their peer list with their own token only; a key cannot be
//! taken across MSPs; policies carry the assignment and are republished when it changes.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine;
use chrono::{DurationRound, Utc};
use common::{TestCloud, enrolment_token, eventually, spawn_cloud};
use rumqttc::QoS;
use stayopen_appliance::identity;
use stayopen_cloud::domain::relays;
use stayopen_shared::api::{
    ApiTokenScope, CreateApiToken, CreateEnrollmentToken, EnrollRequest, EnrollResponse,
    HardwareIdentity, RenewRequest,
};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::policy::Policy;
use stayopen_shared::tunnel::RelayPeerList;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId, PracticeId};
use uuid::Uuid;

/// A fresh WireGuard public key (any 32 bytes are a Curve25519 public key).
fn wg_key() -> String {
    let bytes = [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const RELAY_KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

fn random_mac() -> String {
    let b = Uuid::new_v4().into_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn enroll_request(token: &str, serial: &str, key: Option<&str>) -> (EnrollRequest, String) {
    let (key_pem, csr_pem) = identity::new_key_and_request().expect("key and request");
    (
        EnrollRequest {
            token: token.into(),
            hardware: HardwareIdentity {
                serial: serial.into(),
                mac: random_mac(),
                model: "test".into(),
            },
            agent_version: "test".into(),
            csr_pem,
            wireguard_public_key: key.map(str::to_owned),
        },
        key_pem,
    )
}

/// An enrolled appliance: its answer and its device key.
struct Enrolled {
    response: EnrollResponse,
    key_pem: String,
}

async fn enrol(cloud: &TestCloud, token: &str, serial: &str, key: Option<&str>) -> Enrolled {
    let (request, key_pem) = enroll_request(token, serial, key);
    let response = cloud
        .anonymous()
        .enroll(&request)
        .await
        .unwrap_or_else(|refused| panic!("enrol {serial}: {refused:?}"));
    Enrolled { response, key_pem }
}

/// A renewal of `appliance` proven by `device_key`, signed `offset_secs` after now (whole
/// seconds), registering `wireguard`. Returns the request and the next device key.
fn renewal(
    appliance: ApplianceId,
    device_key: &str,
    offset_secs: i64,
    wireguard: Option<&str>,
) -> (RenewRequest, String) {
    let (next_key, csr_pem) = identity::new_key_and_request().expect("key and request");
    let signed_at = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .expect("whole seconds")
        + chrono::Duration::seconds(offset_secs);
    let signature =
        identity::sign_renewal(device_key, appliance, signed_at, &csr_pem).expect("signed");
    (
        RenewRequest {
            appliance_id: appliance,
            csr_pem,
            signed_at,
            signature,
            wireguard_public_key: wireguard.map(str::to_owned),
        },
        next_key,
    )
}

async fn add_relay(cloud: &TestCloud, name: &str) -> String {
    relays::create(
        &cloud.pool,
        name,
        &format!("{name}.example.net:51820"),
        RELAY_KEY,
    )
    .await
    .expect("relay registered")
    .token
}

/// `GET /api/v1/relay/peers` with `token`, optionally sending `If-None-Match`: status, ETag, list.
async fn peers(
    cloud: &TestCloud,
    token: Option<&str>,
    if_none_match: Option<&str>,
) -> (u16, Option<String>, Option<RelayPeerList>) {
    let mut request = cloud.http.get(cloud.url("/api/v1/relay/peers"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(tag) = if_none_match {
        request = request.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let response = request.send().await.expect("peer list request");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let list = response.json().await.ok();
    (status, etag, list)
}

async fn peer_list(cloud: &TestCloud, token: &str) -> RelayPeerList {
    let (status, _, list) = peers(cloud, Some(token), None).await;
    assert_eq!(status, 200, "the relay reads its peer list");
    list.expect("a peer list")
}

fn in_tunnel_range(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    a == 100 && (96..112).contains(&b)
}

async fn audit_actions(cloud: &TestCloud, action: &str, target: ApplianceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1 AND target_id = $2")
        .bind(action)
        .bind(target.to_string())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("audit rows")
}

async fn token_with_uses(
    cloud: &TestCloud,
    admin: &str,
    practice: PracticeId,
    uses: u32,
) -> String {
    cloud
        .api(admin)
        .create_enrollment_token(
            practice,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: uses,
                site_id: None,
            },
        )
        .await
        .expect("token")
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_registers_its_key_at_enrolment_and_gets_an_address_and_the_least_loaded_relay()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let first = add_relay(&cloud, "relay-1").await;
    let second = add_relay(&cloud, "relay-2").await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let keys: Vec<String> = (0..4).map(|_| wg_key()).collect();
    let mut ids = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        ids.push(
            enrol(&cloud, &token, &format!("SO-WG-{i}"), Some(key))
                .await
                .response
                .appliance_id,
        );
    }
    let (one, two) = (
        peer_list(&cloud, &first).await,
        peer_list(&cloud, &second).await,
    );
    assert_eq!(
        (one.peers.len(), two.peers.len()),
        (2, 2),
        "each new appliance goes to the least-loaded relay"
    );
    assert_eq!(
        (one.relay.as_str(), two.relay.as_str()),
        ("relay-1", "relay-2")
    );
    let listed: BTreeSet<(ApplianceId, String)> = one
        .peers
        .iter()
        .chain(&two.peers)
        .map(|p| (p.appliance_id, p.public_key.clone()))
        .collect();
    let registered: BTreeSet<(ApplianceId, String)> =
        ids.iter().copied().zip(keys.iter().cloned()).collect();
    assert_eq!(listed, registered, "every key, with its own appliance");
    let addresses: BTreeSet<Ipv4Addr> = one
        .peers
        .iter()
        .chain(&two.peers)
        .map(|p| p.inner_address)
        .collect();
    assert_eq!(addresses.len(), 4, "distinct inner addresses");
    assert!(
        addresses.iter().all(|a| in_tunnel_range(*a)),
        "{addresses:?}"
    );

    // The policy carries the assignment; the change is audited.
    let configuration = cloud
        .api(&admin)
        .appliance_configuration(ids[0])
        .await
        .expect("configuration");
    let assignment = configuration
        .effective
        .policy
        .tunnel_relay
        .expect("a relay assignment");
    let peer = one
        .peers
        .iter()
        .chain(&two.peers)
        .find(|p| p.appliance_id == ids[0])
        .expect("listed");
    assert_eq!(assignment.inner_address, peer.inner_address);
    assert_eq!(assignment.public_key, RELAY_KEY);
    assert_eq!(
        assignment.endpoint,
        format!("{}.example.net:51820", assignment.relay)
    );
    assert_eq!(
        audit_actions(&cloud, "appliance.tunnel_key", ids[0]).await,
        1
    );

    // Without a key, no address and no relay.
    let keyless = enrol(&cloud, &token, "SO-WG-NONE", None).await;
    let configuration = cloud
        .api(&admin)
        .appliance_configuration(keyless.response.appliance_id)
        .await
        .expect("configuration");
    assert_eq!(configuration.effective.policy.tunnel_relay, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_signed_by_the_device_registers_or_replaces_its_key_and_keeps_its_address() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let relay = add_relay(&cloud, "relay-1").await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let device = enrol(&cloud, &token, "SO-RENEW-WG", None).await;
    let id = device.response.appliance_id;
    assert!(peer_list(&cloud, &relay).await.peers.is_empty());

    let first_key = wg_key();
    let (request, next_device_key) = renewal(id, &device.key_pem, 0, Some(&first_key));
    cloud.anonymous().renew(&request).await.expect("renewed");
    let listed = peer_list(&cloud, &relay).await;
    assert_eq!(listed.peers.len(), 1);
    assert_eq!(listed.peers[0].public_key, first_key);
    let address = listed.peers[0].inner_address;

    let second_key = wg_key();
    let (request, _) = renewal(id, &next_device_key, 1, Some(&second_key));
    cloud.anonymous().renew(&request).await.expect("renewed");
    let listed = peer_list(&cloud, &relay).await;
    assert_eq!(listed.peers.len(), 1, "replaced, not added");
    assert_eq!(listed.peers[0].public_key, second_key);
    assert_eq!(listed.peers[0].inner_address, address, "the address stays");
    assert_eq!(audit_actions(&cloud, "appliance.tunnel_key", id).await, 2);

    // A renewal not signed by the device's current key registers nothing.
    let (forged, _) = renewal(id, &device.key_pem, 2, Some(&wg_key()));
    let refused = cloud.anonymous().renew(&forged).await.expect_err("refused");
    assert_eq!(refused.status, 401);
    assert_eq!(
        peer_list(&cloud, &relay).await.peers[0].public_key,
        second_key
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_the_base64_of_32_bytes_is_refused_with_400_naming_the_field() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let device = enrol(&cloud, &token, "SO-BADKEY-OK", None).await;
    for bad in [
        "",
        "short",
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8yg==",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &"A".repeat(10_000),
    ] {
        let (request, _) = enroll_request(&token, "SO-BADKEY", Some(bad));
        let refused = cloud
            .anonymous()
            .enroll(&request)
            .await
            .expect_err("refused");
        assert_eq!(refused.status, 400, "{bad:?}");
        let message = refused.error().expect("an error body").error.message;
        assert!(message.contains("wireguard_public_key"), "{message}");

        let (request, _) = renewal(device.response.appliance_id, &device.key_pem, 0, Some(bad));
        let refused = cloud
            .anonymous()
            .renew(&request)
            .await
            .expect_err("refused");
        assert_eq!(refused.status, 400, "{bad:?}");
    }
    // Nothing was enrolled with a bad key, and no token use was spent on it.
    let appliances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM appliances WHERE serial = 'SO-BADKEY'")
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("count");
    assert_eq!(appliances, 0);
    let uses: i64 = sqlx::query_scalar("SELECT sum(uses) FROM enrollment_tokens")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("uses");
    assert_eq!(uses, 1, "only the good enrolment used the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_msp_cannot_take_a_registered_key_even_racing_for_it_and_learns_nothing() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let relay = add_relay(&cloud, "relay-1").await;
    let ours = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let (_, their_admin, their_practice) = cloud.other_msp("attacker.example").await;
    let theirs = enrolment_token(&cloud, &their_admin, their_practice).await;

    // The victim's key, registered first.
    let victim_key = wg_key();
    let victim = enrol(&cloud, &ours, "SO-VICTIM", Some(&victim_key)).await;
    let before = peer_list(&cloud, &relay).await;

    // Another MSP enrols with it: refused, and the answer is the one a key of the same MSP gets.
    let (request, _) = enroll_request(&theirs, "SO-THIEF", Some(&victim_key));
    let foreign = cloud
        .anonymous()
        .enroll(&request)
        .await
        .expect_err("refused");
    let (request, _) = enroll_request(&ours, "SO-TWIN", Some(&victim_key));
    let own = cloud
        .anonymous()
        .enroll(&request)
        .await
        .expect_err("refused");
    assert_eq!(foreign.status, 409);
    assert_eq!(
        foreign.body, own.body,
        "the answer tells nothing of whose key it is"
    );
    // The refused enrolment left nothing behind.
    assert!(
        cloud
            .api(&their_admin)
            .fleet()
            .await
            .expect("fleet")
            .practices
            .iter()
            .all(|p| p.appliances.is_empty())
    );

    // Nor can their enrolled appliance take it with a (validly signed) renewal.
    let thief = enrol(&cloud, &theirs, "SO-THIEF-2", None).await;
    let (request, _) = renewal(
        thief.response.appliance_id,
        &thief.key_pem,
        0,
        Some(&victim_key),
    );
    let refused = cloud
        .anonymous()
        .renew(&request)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 409);
    assert_eq!(
        peer_list(&cloud, &relay).await,
        before,
        "the victim's entry is untouched"
    );
    assert_eq!(
        relays_of_key(&cloud, &victim_key).await,
        vec![victim.response.appliance_id]
    );

    // Both MSPs race for one fresh key, eight enrolments at once: exactly one gets it.
    let contested = wg_key();
    let attempts = (0..8).map(|i| {
        let token = if i % 2 == 0 {
            ours.clone()
        } else {
            theirs.clone()
        };
        let (request, _) = enroll_request(&token, &format!("SO-RACE-{i}"), Some(&contested));
        let client = cloud.anonymous();
        async move {
            client
                .enroll(&request)
                .await
                .map_err(|refused| refused.status)
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| **r == Err(409)).count();
    assert_eq!((won, conflicts), (1, 7), "{results:?}");
    assert_eq!(relays_of_key(&cloud, &contested).await.len(), 1);
    assert!(
        cloud
            .counter("stayopen_api_rejected_total{reason=\"wireguard_key_taken\"}")
            .await
            >= 9
    );
}

/// The appliances holding `key`, across every MSP (read as the owner).
async fn relays_of_key(cloud: &TestCloud, key: &str) -> Vec<ApplianceId> {
    sqlx::query_scalar("SELECT id FROM appliances WHERE wireguard_public_key = $1")
        .bind(key)
        .fetch_all(&cloud.owner_pool)
        .await
        .expect("holders")
        .into_iter()
        .map(ApplianceId)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_appliances_enrolling_at_once_get_twenty_distinct_inner_addresses() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let relay = add_relay(&cloud, "relay-1").await;
    let (_, their_admin, their_practice) = cloud.other_msp("second.example").await;
    let ours = token_with_uses(&cloud, &admin, demo.practices[0].id, 10).await;
    let theirs = token_with_uses(&cloud, &their_admin, their_practice, 10).await;
    let attempts = (0..20).map(|i| {
        let token = if i % 2 == 0 {
            ours.clone()
        } else {
            theirs.clone()
        };
        let (request, _) = enroll_request(&token, &format!("SO-MANY-{i:02}"), Some(&wg_key()));
        let client = cloud.anonymous();
        async move { client.enroll(&request).await }
    });
    let enrolled: Vec<ApplianceId> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("enrolled").appliance_id)
        .collect();
    let list = peer_list(&cloud, &relay).await;
    assert_eq!(list.peers.len(), 20, "both MSPs' appliances on one relay");
    let addresses: BTreeSet<Ipv4Addr> = list.peers.iter().map(|p| p.inner_address).collect();
    assert_eq!(addresses.len(), 20, "no address given twice: {addresses:?}");
    assert!(addresses.iter().all(|a| in_tunnel_range(*a)));
    let listed: BTreeSet<ApplianceId> = list.peers.iter().map(|p| p.appliance_id).collect();
    assert_eq!(listed, enrolled.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_list_answers_304_while_unchanged_and_a_revoked_appliance_leaves_it() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let relay = add_relay(&cloud, "relay-1").await;
    let ours = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let (_, their_admin, their_practice) = cloud.other_msp("other.example").await;
    let theirs = enrolment_token(&cloud, &their_admin, their_practice).await;
    let mine = enrol(&cloud, &ours, "SO-LIST-A", Some(&wg_key())).await;
    let their = enrol(&cloud, &theirs, "SO-LIST-B", Some(&wg_key())).await;

    let (status, etag, list) = peers(&cloud, Some(&relay), None).await;
    assert_eq!(status, 200);
    let list = list.expect("list");
    let etag = etag.expect("an ETag");
    assert_eq!(etag, format!("\"{}\"", list.revision));
    let ids: BTreeSet<ApplianceId> = list.peers.iter().map(|p| p.appliance_id).collect();
    assert_eq!(
        ids,
        [mine.response.appliance_id, their.response.appliance_id].into(),
        "appliances of both MSPs"
    );

    let (status, again, body) = peers(&cloud, Some(&relay), Some(&etag)).await;
    assert_eq!((status, again.as_deref()), (304, Some(etag.as_str())));
    assert!(body.is_none(), "no body with 304");

    cloud
        .api(&their_admin)
        .revoke_appliance(their.response.appliance_id)
        .await
        .expect("revoked");
    let (status, changed, list) = peers(&cloud, Some(&relay), Some(&etag)).await;
    assert_eq!(status, 200, "the list changed");
    let list = list.expect("list");
    assert_ne!(changed.as_deref(), Some(etag.as_str()));
    assert_eq!(
        list.peers
            .iter()
            .map(|p| p.appliance_id)
            .collect::<Vec<_>>(),
        vec![mine.response.appliance_id],
        "the revoked appliance is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_live_relays_token_opens_the_peer_list_and_a_relay_token_opens_nothing_else() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let session = cloud.session(&demo.email, &demo.password).await;
    let admin = session.access_token.clone();
    let relay = add_relay(&cloud, "relay-1").await;
    let doomed = add_relay(&cloud, "relay-2").await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    enrol(&cloud, &token, "SO-AUTH", Some(&wg_key())).await;
    relays::revoke(&cloud.pool, "relay-2")
        .await
        .expect("revoked");
    let api_token = cloud
        .api(&admin)
        .create_api_token(&CreateApiToken {
            name: "automation".into(),
            scope: ApiTokenScope::Operate,
            expires_in_days: None,
        })
        .await
        .expect("api token")
        .token;
    let forged = format!("sor_{}", "0".repeat(64));

    let refused = [
        (None, "missing_token"),
        (Some(forged.as_str()), "unknown_token"),
        // A refresh token has the same prefix; it is no relay's.
        (Some(session.refresh_token.as_str()), "unknown_token"),
        (Some("sor_short"), "unknown_token"),
        (Some(doomed.as_str()), "revoked_relay"),
        (Some(admin.as_str()), "not_a_relay_token"),
        (Some(api_token.as_str()), "not_a_relay_token"),
    ];
    for (token, _) in &refused {
        let (status, _, list) = peers(&cloud, *token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(list.is_none());
    }
    for (reason, count) in [
        ("missing_token", 1),
        ("unknown_token", 3),
        ("revoked_relay", 1),
        ("not_a_relay_token", 2),
    ] {
        assert_eq!(
            cloud
                .counter(&format!(
                    "stayopen_relay_auth_rejected_total{{reason=\"{reason}\"}}"
                ))
                .await,
            count,
            "{reason}"
        );
    }
    assert_eq!(
        peer_list(&cloud, &relay).await.peers.len(),
        1,
        "the live relay reads it"
    );

    // A relay's token is no caller of the tenant API.
    for path in ["/api/v1/fleet", "/api/v1/me", "/api/v1/policy"] {
        let (status, _) = cloud.api(&relay).get::<serde_json::Value>(path).await;
        assert_eq!(status, 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policy_layer_can_set_the_relay_assignment() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    add_relay(&cloud, "relay-1").await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let id = enrol(&cloud, &token, "SO-LAYER", Some(&wg_key()))
        .await
        .response
        .appliance_id;
    let before = cloud
        .api(&admin)
        .appliance_configuration(id)
        .await
        .expect("configuration");
    let forged = serde_json::json!({"tunnel_relay": {
        "relay": "evil", "endpoint": "203.0.113.66:51820",
        "public_key": RELAY_KEY, "inner_address": "100.96.0.2"}});
    let api = cloud.api(&admin);
    let practice = demo.practices[0].id;
    let attempts = [
        api.set_policy(&forged).await.map(|_| ()),
        api.set_practice_policy(practice, &forged).await.map(|_| ()),
        api.set_appliance_policy(id, &forged).await.map(|_| ()),
    ];
    for attempt in attempts {
        let refused = attempt.expect_err("refused");
        assert_eq!(refused.status, 400);
        let message = refused.error().expect("error body").error.message;
        assert!(message.starts_with("tunnel_relay"), "{message}");
    }
    let after = api
        .appliance_configuration(id)
        .await
        .expect("configuration");
    assert_eq!(
        after.effective.policy.tunnel_relay,
        before.effective.policy.tunnel_relay
    );
    assert_eq!(
        after.effective.sources.get("tunnel_relay"),
        Some(&stayopen_shared::policy::PolicyScope::Appliance)
    );
}

/// The policies published to `connection` until one satisfies `wanted`.
async fn published_policy(
    connection: &mut common::DeviceConnection,
    wanted: impl Fn(&Policy) -> bool,
) -> Policy {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let (topic, payload) = connection.received.recv().await.expect("connected");
            if !topic.ends_with("/policy") {
                continue;
            }
            let policy = Envelope::<Policy>::decode(&payload).expect("a policy").body;
            if wanted(&policy) {
                return policy;
            }
        }
    })
    .await
    .expect("the policy was published")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_and_revoking_relays_reassigns_appliances_and_republishes_their_policy() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let (request, key_pem) = enroll_request(&token, "SO-REPUBLISH", Some(&wg_key()));
    let enrolled = cloud.anonymous().enroll(&request).await.expect("enrolled");
    let id = enrolled.appliance_id;
    let device = common::Device { enrolled, key_pem };
    let mut connection = cloud.connect_device(&device).await.expect("connects");
    connection
        .client
        .subscribe(
            DeviceTopic::new(id, Channel::Policy).to_string(),
            QoS::AtLeastOnce,
        )
        .await
        .expect("subscribe");
    let api = cloud.api(&admin);
    assert_eq!(
        api.appliance_configuration(id)
            .await
            .expect("configuration")
            .effective
            .policy
            .tunnel_relay,
        None,
        "no relay exists yet"
    );

    // The operator adds a relay: the waiting appliance gets it, and its new policy is sent.
    relays::create(&cloud.pool, "relay-1", "192.0.2.10:51820", RELAY_KEY)
        .await
        .expect("relay-1");
    let policy = published_policy(&mut connection, |p| p.tunnel_relay.is_some()).await;
    let assignment = policy.tunnel_relay.expect("assigned");
    assert_eq!(
        (assignment.relay.as_str(), assignment.endpoint.as_str()),
        ("relay-1", "192.0.2.10:51820")
    );
    assert!(in_tunnel_range(assignment.inner_address));

    // A second relay takes nobody from the first; revoking the first moves the appliance over.
    relays::create(&cloud.pool, "relay-2", "192.0.2.20:51820", RELAY_KEY)
        .await
        .expect("relay-2");
    assert_eq!(
        relays::revoke(&cloud.pool, "relay-1")
            .await
            .expect("revoked"),
        1
    );
    let moved = published_policy(&mut connection, |p| {
        p.tunnel_relay
            .as_ref()
            .is_some_and(|r| r.relay == "relay-2")
    })
    .await;
    assert_eq!(
        moved.tunnel_relay.expect("assigned").inner_address,
        assignment.inner_address,
        "the inner address stays with the appliance"
    );
    // Revoking the last relay turns the tunnel off.
    relays::revoke(&cloud.pool, "relay-2")
        .await
        .expect("revoked");
    published_policy(&mut connection, |p| p.tunnel_relay.is_none()).await;
    assert_eq!(audit_actions(&cloud, "appliance.tunnel_relay", id).await, 3);
    let listed = relays::list(&cloud.pool).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|r| r.revoked_at.is_some() && r.appliances == 0)
    );
    assert!(matches!(
        relays::revoke(&cloud.pool, "relay-2").await,
        Err(relays::RelayError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        relays::create(&cloud.pool, "relay-2", "192.0.2.20:51820", RELAY_KEY).await,
        Err(relays::RelayError::DuplicateName(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_fallback_raises_relay_unreachable_and_the_restore_clears_it() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let device = cloud
        .enrol_device(&token, "SO-FALLBACK", "02:00:00:00:16:01")
        .await;
    let id = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connects");
    let publish = |kind: EventKind, reason: &str| {
        Envelope::new(
            MessageId(Uuid::new_v4()),
            id,
            Utc::now(),
            ApplianceEvent {
                kind,
                uplink: None,
                from: None,
                to: None,
                reason: reason.into(),
                drill: None,
            },
        )
        .encode()
    };
    let topic = DeviceTopic::new(id, Channel::Events).to_string();
    connection
        .client
        .publish(
            topic.clone(),
            QoS::AtLeastOnce,
            false,
            publish(EventKind::TunnelFallback, "no handshake for 15 s"),
        )
        .await
        .expect("publish");
    let api = cloud.api(&admin);
    let raised = eventually(Duration::from_secs(10), "the relay alert", || async {
        api.alerts("kind=relay_unreachable&state=open")
            .await
            .ok()?
            .items
            .into_iter()
            .find(|a| a.appliance_id == id)
    })
    .await;
    assert!(
        raised.summary.contains("no handshake"),
        "{}",
        raised.summary
    );
    connection
        .client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            publish(EventKind::TunnelRestored, "handshake completed"),
        )
        .await
        .expect("publish");
    eventually(
        Duration::from_secs(10),
        "the relay alert cleared",
        || async {
            api.alerts("kind=relay_unreachable&state=resolved")
                .await
                .ok()?
                .items
                .into_iter()
                .find(|a| a.id == raised.id)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_tunnel_report_is_stored_and_shown_with_the_appliance() {
    use stayopen_shared::tunnel::{TunnelMode, TunnelReport, TunnelState};
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let device = cloud
        .enrol_device(&token, "SO-REPORT", "02:00:00:00:16:02")
        .await;
    let id = device.enrolled.appliance_id;
    let connection = cloud.connect_device(&device).await.expect("connects");
    let report = TunnelReport {
        mode: TunnelMode::Critical,
        state: TunnelState::Up,
        relay: Some("relay-1".into()),
        last_handshake_secs: Some(7),
        redundant: true,
        redundant_bytes: [("lte".to_owned(), 3_000_000)].into(),
        tunnel_bytes: 9_000_000,
    };
    connection
        .client
        .publish(
            DeviceTopic::new(id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            common::telemetry(id)
                .fibre_and_lte("fiber")
                .tunnel(report.clone())
                .encode(),
        )
        .await
        .expect("publish");
    let shown = eventually(Duration::from_secs(10), "the tunnel report", || async {
        cloud.api(&admin).appliance(id).await.ok()?.tunnel
    })
    .await;
    assert_eq!(shown, report);
}
