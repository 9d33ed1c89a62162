//! Issue 12, "an identity that cannot be claimed": an appliance is its key. Knowing its serial and
//! MAC and holding an enrolment token of the same MSP does not make someone the appliance; renewing
//! needs a fresh signature by the current key; a revoked appliance stays revoked; enrolment tokens
//! can be listed and revoked. Each attack here must fail, and the real device keep working.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Device, TestCloud, spawn_cloud};
use stayopen_appliance::identity::{self, Identity};
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{
    CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenView, HardwareIdentity,
    Page, RenewRequest, Role,
};

const SERIAL: &str = "SO-VICTIM-1";
const MAC: &str = "02:00:00:00:12:01";

fn enroll_body(token: &str, csr_pem: String) -> EnrollRequest {
    EnrollRequest {
        token: token.into(),
        hardware: HardwareIdentity {
            serial: SERIAL.into(),
            mac: MAC.into(),
            model: "test".into(),
        },
        agent_version: "attacker".into(),
        csr_pem,
        wireguard_public_key: None,
    }
}

/// Enrols SERIAL/MAC with `token` and a fresh key: (status, error code, the device if enrolled).
async fn try_enrol(cloud: &TestCloud, token: &str) -> (u16, Option<String>, Option<Device>) {
    let (key_pem, csr_pem) = identity::new_key_and_request().expect("key and request");
    match cloud.anonymous().enroll(&enroll_body(token, csr_pem)).await {
        Ok(enrolled) => (200, None, Some(Device { enrolled, key_pem })),
        Err(refused) => (refused.status, refused.code(), None),
    }
}

/// What the database holds about the appliance's identity.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct Stored {
    practice_id: uuid::Uuid,
    cert_serial: Option<String>,
    mqtt_password_hash: Vec<u8>,
}

async fn stored(cloud: &TestCloud, appliance: ApplianceId) -> Stored {
    sqlx::query_as(
        "SELECT practice_id, cert_serial, mqtt_password_hash FROM appliances WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("appliance row")
}

/// A renewal request for `appliance`: a signing request for `next_key` (a new key when `None`),
/// proven by `proving_key` at `signed_at`. Returns the body and the next key.
fn renewal(
    appliance: ApplianceId,
    proving_key: &str,
    next_key: Option<&str>,
    signed_at: DateTime<Utc>,
) -> (RenewRequest, String) {
    let (next_key, csr_pem) = match next_key {
        Some(key) => {
            let pair = rcgen::KeyPair::from_pem(key).expect("key");
            let csr = rcgen::CertificateParams::default()
                .serialize_request(&pair)
                .and_then(|r| r.pem())
                .expect("csr");
            (key.to_owned(), csr)
        }
        None => identity::new_key_and_request().expect("key and request"),
    };
    let signature =
        identity::sign_renewal(proving_key, appliance, signed_at, &csr_pem).expect("signed");
    (
        RenewRequest {
            appliance_id: appliance,
            csr_pem,
            signed_at,
            signature,
            wireguard_public_key: None,
        },
        next_key,
    )
}

/// POSTs a renewal: (status, error code, the renewed device if accepted).
async fn renew(
    cloud: &TestCloud,
    body: &RenewRequest,
    next_key: &str,
) -> (u16, Option<String>, Option<Device>) {
    match cloud.anonymous().renew(body).await {
        Ok(enrolled) => (
            200,
            None,
            Some(Device {
                enrolled,
                key_pem: next_key.to_owned(),
            }),
        ),
        Err(refused) => (refused.status, refused.code(), None),
    }
}

fn whole_seconds_ago(secs: i64) -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - secs, 0).expect("time")
}

/// Waits for the wall clock to enter the next whole second: renewal proofs count in whole
/// seconds and each must be later than the last.
async fn next_whole_second() {
    let now = Utc::now().timestamp();
    while Utc::now().timestamp() <= now {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The serials on the revocation list the cloud writes for an external broker.
fn crl_serials(cloud: &TestCloud) -> Vec<String> {
    let pem = std::fs::read(cloud.tls_dir.path().join("crl.pem")).expect("crl.pem");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).expect("CRL");
    crl.iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect()
}

/// Approves a re-enrolment of `appliance` as the holder of `token`: the answer's status.
async fn approve(cloud: &TestCloud, token: &str, appliance: ApplianceId) -> u16 {
    match cloud.api(token).approve_reenrollment(appliance).await {
        Ok(_) => 200,
        Err(refused) => refused.status,
    }
}

async fn audit_actions(cloud: &TestCloud, admin: &str, action: &str) -> usize {
    cloud
        .api(admin)
        .audit_log(&format!("action={action}"))
        .await
        .expect("audit")
        .items
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_practices_token_with_a_known_serial_and_mac_takes_nothing() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let victim = cloud
        .enrol_device(&demo.practices[0].enrollment_token, SERIAL, MAC)
        .await;
    let id = victim.enrolled.appliance_id;
    let before = stored(&cloud, id).await;

    let (status, code, _) = try_enrol(&cloud, &demo.practices[1].enrollment_token).await;
    assert_eq!(status, 409);
    assert_eq!(code.as_deref(), Some("appliance_in_other_practice"));
    // Not even an admin's approval lets a token move it.
    assert_eq!(approve(&cloud, &admin, id).await, 200);
    let (status, code, _) = try_enrol(&cloud, &demo.practices[1].enrollment_token).await;
    assert_eq!(status, 409);
    assert_eq!(code.as_deref(), Some("appliance_in_other_practice"));

    assert_eq!(
        stored(&cloud, id).await,
        before,
        "same practice, certificate and password"
    );
    assert_eq!(before.practice_id, demo.practices[0].id.0);
    assert!(
        cloud.connect_device(&victim).await.is_ok(),
        "the real device still connects"
    );
    assert_eq!(
        cloud
            .counter("stayopen_api_rejected_total{reason=\"appliance_in_other_practice\"}")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_practice_token_needs_an_admins_approval_which_admits_one_enrolment() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = &demo.practices[0].enrollment_token;
    let victim = cloud.enrol_device(token, SERIAL, MAC).await;
    let id = victim.enrolled.appliance_id;
    let before = stored(&cloud, id).await;

    let (status, code, _) = try_enrol(&cloud, token).await;
    assert_eq!(status, 409);
    assert_eq!(code.as_deref(), Some("reenrollment_needs_proof"));
    assert_eq!(stored(&cloud, id).await, before);
    assert!(cloud.connect_device(&victim).await.is_ok());

    // Only an MSP admin approves; a technician, or the admin's API token, may not.
    let technician = cloud
        .user_with_role(&admin, "tech@lakeside.example", Role::MspTechnician, vec![])
        .await;
    assert_eq!(approve(&cloud, &technician, id).await, 403);
    let (status, _, _) = try_enrol(&cloud, token).await;
    assert_eq!(status, 409, "a refused approval approves nothing");
    assert_eq!(approve(&cloud, &admin, id).await, 200);
    let view = cloud.api(&admin).appliance_identity(id).await;
    let until = view
        .expect("identity")
        .reenrollment_approved_until
        .expect("approved");
    assert!(until > Utc::now() + chrono::Duration::hours(23));

    let (status, _, replacement) = try_enrol(&cloud, token).await;
    assert_eq!(status, 200, "the approved enrolment");
    let replacement = replacement.expect("enrolled");
    assert_eq!(replacement.enrolled.appliance_id, id, "the same appliance");
    assert!(
        cloud.connect_device(&victim).await.is_err(),
        "the replaced box's credentials are refused"
    );
    assert!(cloud.connect_device(&replacement).await.is_ok());

    let (status, code, _) = try_enrol(&cloud, token).await;
    assert_eq!(status, 409, "the approval is used up");
    assert_eq!(code.as_deref(), Some("reenrollment_needs_proof"));
    assert!(cloud.connect_device(&replacement).await.is_ok());
    assert_eq!(
        audit_actions(&cloud, &admin, "appliance.approve_reenrollment").await,
        1
    );
    assert_eq!(audit_actions(&cloud, &admin, "appliance.reenroll").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_needs_a_fresh_signature_by_the_current_key_and_retires_the_old_credentials() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let device = cloud
        .enrol_device(&demo.practices[0].enrollment_token, SERIAL, MAC)
        .await;
    let id = device.enrolled.appliance_id;
    let before = stored(&cloud, id).await;

    // Signed by another key.
    let (stranger, _) = identity::new_key_and_request().expect("key");
    let (forged, next) = renewal(id, &stranger, None, whole_seconds_ago(0));
    let (status, code, _) = renew(&cloud, &forged, &next).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("renewal_signature_invalid"))
    );
    // Signed by the right key, but too long ago, or too far ahead.
    for signed_at in [whole_seconds_ago(6 * 60), whole_seconds_ago(-3 * 60)] {
        let (stale, next) = renewal(id, &device.key_pem, None, signed_at);
        let (status, code, _) = renew(&cloud, &stale, &next).await;
        assert_eq!((status, code.as_deref()), (401, Some("renewal_stale")));
    }
    // A garbled signature, and an appliance that does not exist.
    let (mut garbled, next) = renewal(id, &device.key_pem, None, whole_seconds_ago(0));
    garbled.signature = "not base64!".into();
    assert_eq!(renew(&cloud, &garbled, &next).await.0, 401);
    let (unknown, next) = renewal(
        ApplianceId(uuid::Uuid::new_v4()),
        &device.key_pem,
        None,
        whole_seconds_ago(0),
    );
    let (status, code, _) = renew(&cloud, &unknown, &next).await;
    assert_eq!((status, code.as_deref()), (401, Some("unknown_appliance")));
    assert_eq!(stored(&cloud, id).await, before, "nothing changed");
    assert!(cloud.connect_device(&device).await.is_ok());

    // The real thing.
    let (valid, next) = renewal(id, &device.key_pem, None, whole_seconds_ago(2));
    let (status, _, renewed) = renew(&cloud, &valid, &next).await;
    assert_eq!(status, 200);
    let renewed = renewed.expect("renewed");
    assert_eq!(renewed.enrolled.appliance_id, id);
    assert_ne!(
        renewed.enrolled.client_cert_pem,
        device.enrolled.client_cert_pem
    );
    assert_ne!(
        renewed.enrolled.mqtt.password,
        device.enrolled.mqtt.password
    );
    assert!(
        cloud.connect_device(&device).await.is_err(),
        "the old certificate's credentials are refused"
    );
    let mqtt = &device.enrolled.mqtt;
    assert!(
        cloud
            .mqtt_connect(
                &renewed.enrolled.client_cert_pem,
                &renewed.key_pem,
                &mqtt.username,
                &mqtt.username,
                &mqtt.password,
            )
            .await
            .is_err(),
        "the old password does not open the broker even with the new certificate"
    );
    assert!(
        cloud.connect_device(&renewed).await.is_ok(),
        "the new ones work"
    );
    // The superseded certificate with the current secret: its key cannot sign the proof the
    // current certificate's key signs, so the broker refuses it.
    let refused_before = cloud
        .counter("stayopen_broker_auth_rejected_total{reason=\"bad_key_proof\"}")
        .await;
    assert!(
        cloud
            .mqtt_connect(
                &device.enrolled.client_cert_pem,
                &device.key_pem,
                &mqtt.username,
                &mqtt.username,
                &renewed.enrolled.mqtt.password,
            )
            .await
            .is_err(),
        "a superseded certificate is refused even with the current password"
    );
    assert!(
        cloud
            .mqtt_connect(
                &device.enrolled.client_cert_pem,
                &device.key_pem,
                &mqtt.username,
                &mqtt.username,
                &renewed.enrolled.mqtt.password,
            )
            .await
            .is_err()
    );
    assert!(
        cloud
            .counter("stayopen_broker_auth_rejected_total{reason=\"bad_key_proof\"}")
            .await
            >= refused_before + 2,
        "refused for its key, and counted"
    );
    assert!(
        cloud
            .mqtt_connect(
                &renewed.enrolled.client_cert_pem,
                &renewed.key_pem,
                &mqtt.username,
                &mqtt.username,
                &renewed.enrolled.mqtt.password,
            )
            .await
            .is_ok(),
        "the current certificate and key with the current password work"
    );
    let old_serial = before.cert_serial.expect("old serial");
    assert!(
        crl_serials(&cloud).contains(&old_serial),
        "the superseded certificate is on the revocation list"
    );

    // Replaying the accepted request: refused (its key is no longer the current one).
    let (status, code, _) = renew(&cloud, &valid, &next).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("renewal_signature_invalid"))
    );
    // A proof by the current key for the same key (what an appliance whose answer was lost sends)
    // is accepted once; replayed, or dated earlier, it is refused.
    let (retry, same_key) = renewal(
        id,
        &renewed.key_pem,
        Some(&renewed.key_pem),
        whole_seconds_ago(1),
    );
    let (status, _, retried) = renew(&cloud, &retry, &same_key).await;
    assert_eq!(status, 200);
    let retried = retried.expect("renewed again");
    let (status, code, _) = renew(&cloud, &retry, &same_key).await;
    assert_eq!((status, code.as_deref()), (401, Some("renewal_replayed")));
    let (earlier, same_key) = renewal(
        id,
        &retried.key_pem,
        Some(&retried.key_pem),
        whole_seconds_ago(3),
    );
    let (status, code, _) = renew(&cloud, &earlier, &same_key).await;
    assert_eq!((status, code.as_deref()), (401, Some("renewal_replayed")));
    assert!(cloud.connect_device(&retried).await.is_ok());
    assert!(cloud.connect_device(&renewed).await.is_err());

    let view = cloud
        .api(&admin)
        .appliance_identity(id)
        .await
        .expect("identity");
    assert_eq!(view.certificates.len(), 3);
    assert_eq!(
        view.certificates
            .iter()
            .filter(|c| c.superseded_at.is_none())
            .count(),
        1,
        "one current certificate"
    );
    assert_eq!(audit_actions(&cloud, &admin, "appliance.renew").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_renews_its_identity_and_completes_a_renewal_whose_answer_was_lost() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let device = cloud
        .enrol_device(&demo.practices[0].enrollment_token, SERIAL, MAC)
        .await;
    let state = tempfile::tempdir().expect("state dir");
    let enrolled = device.enrolled.clone();
    let first = Identity {
        appliance_id: enrolled.appliance_id,
        practice_id: enrolled.practice_id,
        site_id: enrolled.site_id,
        mqtt: enrolled.mqtt,
        client_cert_pem: enrolled.client_cert_pem,
        ca_cert_pem: enrolled.ca_cert_pem,
        private_key_pem: device.key_pem.clone(),
        // No tunnel here: the key counts as registered, so the agent does not renew at start.
        wireguard_registered: Some(String::new()),
    };
    identity::store(state.path(), &first).expect("store");
    assert!(
        !identity::renewal_due(&first, Utc::now()),
        "a fresh certificate"
    );
    assert!(identity::renewal_due(
        &first,
        Utc::now() + chrono::Duration::days(300)
    ));

    let second = identity::renew(state.path(), &cloud.http, &cloud.base_url, &first)
        .await
        .expect("renewed");
    assert_ne!(second.private_key_pem, first.private_key_pem, "a new key");
    assert_eq!(
        identity::load(state.path()).expect("load"),
        Some(second.clone()),
        "stored"
    );
    let as_device = |identity: &Identity| Device {
        enrolled: EnrollResponse {
            appliance_id: identity.appliance_id,
            practice_id: identity.practice_id,
            site_id: identity.site_id,
            mqtt: identity.mqtt.clone(),
            topic_prefix: String::new(),
            client_cert_pem: identity.client_cert_pem.clone(),
            ca_cert_pem: identity.ca_cert_pem.clone(),
        },
        key_pem: identity.private_key_pem.clone(),
    };
    assert!(cloud.connect_device(&as_device(&second)).await.is_ok());

    // The next renewal reaches the cloud but its answer is lost: the pending key is on disk, the
    // cloud has certified it, the stored identity is still the second one. (Proofs count in whole
    // seconds and must be later than the last one: a second passes between the renewals.)
    let (pending, _) = identity::new_key_and_request().expect("key");
    std::fs::write(state.path().join("renewal-key.pem"), &pending).expect("pending key");
    next_whole_second().await;
    let (lost, _) = renewal(
        second.appliance_id,
        &second.private_key_pem,
        Some(&pending),
        whole_seconds_ago(0),
    );
    assert_eq!(renew(&cloud, &lost, &pending).await.0, 200);
    assert!(cloud.connect_device(&as_device(&second)).await.is_err());
    next_whole_second().await;

    let third = identity::renew(state.path(), &cloud.http, &cloud.base_url, &second)
        .await
        .expect("the retry proves with the pending key");
    assert_eq!(third.private_key_pem, pending);
    assert!(cloud.connect_device(&as_device(&third)).await.is_ok());
    assert!(
        !state.path().join("renewal-key.pem").exists(),
        "the pending key is gone once stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_appliance_stays_revoked_until_an_admin_restores_it() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = &demo.practices[0].enrollment_token;
    let device = cloud.enrol_device(token, SERIAL, MAC).await;
    let id = device.enrolled.appliance_id;
    let old_serial = stored(&cloud, id).await.cert_serial.expect("serial");
    assert_eq!(approve(&cloud, &admin, id).await, 200);
    cloud
        .api(&admin)
        .revoke_appliance(id)
        .await
        .expect("revoked");
    assert!(crl_serials(&cloud).contains(&old_serial));

    // Token (the approval given before died with the revocation), approval, renewal: all refused.
    let (status, code, _) = try_enrol(&cloud, token).await;
    assert_eq!((status, code.as_deref()), (403, Some("appliance_revoked")));
    assert_eq!(approve(&cloud, &admin, id).await, 403);
    let (status, code, _) = try_enrol(&cloud, token).await;
    assert_eq!((status, code.as_deref()), (403, Some("appliance_revoked")));
    let (valid, next) = renewal(id, &device.key_pem, None, whole_seconds_ago(0));
    let (status, code, _) = renew(&cloud, &valid, &next).await;
    assert_eq!((status, code.as_deref()), (403, Some("appliance_revoked")));
    assert!(cloud.connect_device(&device).await.is_err());

    // Restoring is for MSP admins.
    let technician = cloud
        .user_with_role(&admin, "tech@lakeside.example", Role::MspTechnician, vec![])
        .await;
    let refused = cloud
        .api(&technician)
        .restore_appliance(id)
        .await
        .expect_err("a technician may not restore");
    assert_eq!(refused.status, 403);
    let view = cloud
        .api(&admin)
        .restore_appliance(id)
        .await
        .expect("restored");
    assert!(view.revoked_at.is_none());
    assert!(view.reenrollment_approved_until.is_some());
    let refused = cloud
        .api(&admin)
        .restore_appliance(id)
        .await
        .expect_err("restoring what is not revoked");
    assert_eq!(refused.status, 409, "restoring what is not revoked");

    // Restored, but the old credentials and key stay dead.
    assert!(
        crl_serials(&cloud).contains(&old_serial),
        "still on the list"
    );
    assert!(cloud.connect_device(&device).await.is_err());
    let (status, code, _) = renew(&cloud, &valid, &next).await;
    assert_eq!(
        (status, code.as_deref()),
        (401, Some("renewal_key_unknown"))
    );
    let (status, code, _) = try_enrol(&cloud, &demo.practices[1].enrollment_token).await;
    assert_eq!(
        (status, code.as_deref()),
        (409, Some("appliance_in_other_practice"))
    );

    // The box enrols again with a token of its own practice.
    let (status, _, back) = try_enrol(&cloud, token).await;
    assert_eq!(status, 200);
    let back = back.expect("enrolled");
    assert_eq!(back.enrolled.appliance_id, id);
    assert!(cloud.connect_device(&back).await.is_ok());
    assert_eq!(audit_actions(&cloud, &admin, "appliance.restore").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_enrolment_token_is_refused_and_tokens_are_listed_without_their_secret() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let tokens_path = format!("/api/v1/practices/{practice}/enrollment-tokens");
    let created = cloud
        .api(&admin)
        .create_enrollment_token(
            practice,
            &CreateEnrollmentToken {
                expires_in_hours: 24,
                max_uses: 5,
                site_id: None,
            },
        )
        .await
        .expect("token");
    cloud
        .enrol_device(&created.token, "SO-TOKEN-1", "02:00:00:00:13:01")
        .await;

    let list = |who: String| {
        let cloud = &cloud;
        let path = tokens_path.clone();
        async move {
            let response = cloud
                .http
                .get(cloud.url(&path))
                .bearer_auth(who)
                .send()
                .await
                .expect("GET");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    let (status, raw) = list(admin.clone()).await;
    assert_eq!(status, 200);
    assert!(!raw.contains(&created.token), "never the secret");
    let page: Page<EnrollmentTokenView> = serde_json::from_str(&raw).expect("page");
    let listed = page
        .items
        .iter()
        .find(|t| t.id == created.id)
        .expect("the new token is listed");
    assert_eq!((listed.uses, listed.max_uses), (1, 5));
    assert_eq!(
        listed.created_by_email.as_deref(),
        Some(demo.email.as_str())
    );
    assert!(listed.revoked_at.is_none());

    // Another MSP can neither see nor revoke it; a technician of this one can revoke it.
    let (_, other, _) = cloud.other_msp("other.example").await;
    assert_eq!(list(other.clone()).await.0, 404);
    let refused = cloud
        .api(&other)
        .revoke_enrollment_token(created.id)
        .await
        .expect_err("another MSP's token");
    assert_eq!(refused.status, 404);
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@lakeside.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    assert_eq!(list(officer.clone()).await.0, 403);
    let refused = cloud
        .api(&officer)
        .revoke_enrollment_token(created.id)
        .await
        .expect_err("an officer may not revoke");
    assert_eq!(refused.status, 403);
    let technician = cloud
        .user_with_role(&admin, "tech@lakeside.example", Role::MspTechnician, vec![])
        .await;
    let revoked = cloud
        .api(&technician)
        .revoke_enrollment_token(created.id)
        .await;
    assert!(revoked.expect("token").revoked_at.is_some());

    let (key, csr) = identity::new_key_and_request().expect("csr");
    drop(key);
    let refused = cloud
        .anonymous()
        .enroll(&EnrollRequest {
            token: created.token.clone(),
            hardware: HardwareIdentity {
                serial: "SO-TOKEN-2".into(),
                mac: "02:00:00:00:13:02".into(),
                model: "test".into(),
            },
            agent_version: "test".into(),
            csr_pem: csr,
            wireguard_public_key: None,
        })
        .await
        .expect_err("a revoked token");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code().as_deref(), Some("enrollment_token_revoked"));
    let (_, raw) = list(admin.clone()).await;
    let page: Page<EnrollmentTokenView> = serde_json::from_str(&raw).expect("page");
    let listed = page
        .items
        .iter()
        .find(|t| t.id == created.id)
        .expect("still listed");
    assert!(listed.revoked_at.is_some());
    assert_eq!(listed.uses, 1, "the refused enrolment used nothing");
    assert_eq!(
        audit_actions(&cloud, &admin, "enrollment_token.revoke").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_enrolments_racing_on_one_approval_admit_exactly_one() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = demo.practices[0].enrollment_token.clone();
    let device = cloud.enrol_device(&token, SERIAL, MAC).await;
    let id = device.enrolled.appliance_id;
    assert_eq!(approve(&cloud, &admin, id).await, 200);

    let bodies: Vec<EnrollRequest> = (0..20)
        .map(|_| enroll_body(&token, identity::new_key_and_request().expect("csr").1))
        .collect();
    let anonymous = cloud.anonymous();
    let attempts = bodies.iter().map(|body| {
        let anonymous = &anonymous;
        async move {
            match anonymous.enroll(body).await {
                Ok(_) => (200, None),
                Err(refused) => (refused.status, refused.code()),
            }
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let admitted = outcomes.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(admitted, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|(status, _)| *status != 200)
            .all(|(status, code)| *status == 409
                && code.as_deref() == Some("reenrollment_needs_proof")),
        "{outcomes:?}"
    );
    let certificates: i64 =
        sqlx::query_scalar("SELECT count(*) FROM device_certificates WHERE appliance_id = $1")
            .bind(id.as_uuid())
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("count");
    assert_eq!(certificates, 2, "the first enrolment and the one admitted");
}
