//! Walks every path of the OpenAPI document as each kind of caller of MSP A against the ids of MSP
//! B, and as practice-scoped users against another practice of their own MSP: every attempt must
//! end in 403 or 404, and nothing of B may appear in anything A can list.

mod common;

use std::collections::BTreeMap;

use common::{TestCloud, spawn_cloud};
use stayopen_shared::alerts::{
    ChannelKind, CreateChannel, CreateMaintenanceWindow, CreateRoutingRule, RouteDuring, Severity,
};
use stayopen_shared::api::{
    ApiTokenScope, ClaimSerial, CreateApiToken, CreateCommand, CreateEnrollmentToken,
    CreatedApiToken, EnrollRequest, HardwareIdentity, Role,
};
use stayopen_shared::commands::CommandSpec;
use stayopen_shared::{ApplianceId, PracticeId};

/// A request body for every operation that takes one, valid in shape, so that the server's answer
/// is about who may do what to which id, not about the body. Keyed by "METHOD path".
fn example_bodies() -> BTreeMap<&'static str, serde_json::Value> {
    use serde_json::json;
    BTreeMap::from([
        (
            "POST /api/v1/auth/login",
            json!({"email": "a@b.example", "password": "x"}),
        ),
        ("POST /api/v1/auth/refresh", json!({"refresh_token": "x"})),
        ("POST /api/v1/auth/logout", json!({"refresh_token": "x"})),
        ("POST /api/v1/auth/totp/confirm", json!({"code": "123456"})),
        (
            "POST /api/v1/users",
            json!({"email": "new@a.example", "password": "long-enough-password", "role": "msp_technician"}),
        ),
        (
            "PATCH /api/v1/users/{user_id}",
            json!({"display_name": "Renamed"}),
        ),
        (
            "PUT /api/v1/settings/security",
            json!({"require_totp_for_admins": false}),
        ),
        (
            "POST /api/v1/api-tokens",
            json!({"name": "t", "scope": "read"}),
        ),
        (
            "POST /api/v1/enroll",
            json!({"token": "x", "hardware": {"serial": "s", "mac": "m", "model": "m"}, "agent_version": "1"}),
        ),
        ("POST /api/v1/practices", json!({"name": "New practice"})),
        (
            "POST /api/v1/practices/{practice_id}/sites",
            json!({"name": "Annex"}),
        ),
        (
            "POST /api/v1/practices/{practice_id}/enrollment-tokens",
            json!({"expires_in_hours": 1, "max_uses": 1}),
        ),
        ("PUT /api/v1/policy", json!({"telemetry_interval_secs": 30})),
        (
            "PUT /api/v1/practices/{practice_id}/policy",
            json!({"telemetry_interval_secs": 30}),
        ),
        (
            "PUT /api/v1/appliances/{appliance_id}/policy",
            json!({"telemetry_interval_secs": 30}),
        ),
        ("POST /api/v1/appliances/{appliance_id}/revoke", json!({})),
        (
            "POST /api/v1/alerts/{alert_id}/resolve",
            json!({"note": "x"}),
        ),
        (
            "POST /api/v1/alerts/{alert_id}/comments",
            json!({"body": "x"}),
        ),
        (
            "POST /api/v1/notification-channels",
            json!({"name": "n", "url": "https://example.com/hook"}),
        ),
        (
            "POST /api/v1/routing-rules",
            json!({"channel_id": "00000000-0000-0000-0000-000000000000", "min_severity": "info"}),
        ),
        (
            "POST /api/v1/policy/preview",
            json!({"scope": "msp", "overrides": {"telemetry_interval_secs": 30}}),
        ),
        (
            "PUT /api/v1/practices/{practice_id}/schedule",
            json!({"time_zone": "America/Chicago", "clinic_hours": null}),
        ),
        (
            "POST /api/v1/maintenance-windows",
            json!({"practice_id": "00000000-0000-0000-0000-000000000000",
                   "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T02:00:00Z",
                   "reason": "ISP work"}),
        ),
        (
            "POST /api/v1/enroll/renew",
            json!({"appliance_id": "00000000-0000-0000-0000-000000000000", "csr_pem": "x",
                   "signed_at": "2030-01-01T00:00:00Z", "signature": "x"}),
        ),
        (
            "POST /api/v1/enroll/claim",
            json!({"factory_key": "x", "hardware": {"serial": "s", "mac": "m", "model": "m"}, "agent_version": "1", "csr_pem": "x"}),
        ),
        (
            "POST /api/v1/practices/{practice_id}/claimed-serials",
            json!({"serial": "SO-WALK", "factory_key": "fk_0123456789abcdef0123456789abcdef"}),
        ),
        (
            "POST /api/v1/appliances/{appliance_id}/commands",
            json!({"spec": {"kind": "collect_diagnostics"}}),
        ),
        (
            "POST /api/v1/practices/{practice_id}/critical-apps",
            critical_app(),
        ),
        ("PUT /api/v1/critical-apps/{app_id}", critical_app()),
        (
            "POST /api/v1/practices/{practice_id}/drills",
            json!({"duration_secs": 60}),
        ),
        (
            "POST /api/v1/drills/{drill_id}/sign-off",
            json!({"comment": "x"}),
        ),
        (
            "PATCH /api/v1/incidents/{incident_id}",
            json!({"root_cause": "x"}),
        ),
        (
            "POST /api/v1/incidents/{incident_id}/comments",
            json!({"body": "x"}),
        ),
        (
            "POST /api/v1/appliances/bulk",
            json!({"appliance_ids": ["00000000-0000-0000-0000-000000000000"],
                   "action": {"kind": "add_tag", "tag": "walked"}}),
        ),
        (
            "POST /api/v1/alerts/bulk",
            json!({"alert_ids": ["00000000-0000-0000-0000-000000000000"], "action": "acknowledge"}),
        ),
        (
            "PATCH /api/v1/sites/{site_id}",
            json!({"contact_name": "Walked", "isps": [{"uplink": "fiber", "isp": "Walked"}]}),
        ),
        (
            "PUT /api/v1/practices/{practice_id}/tags",
            json!({"tags": ["walked"]}),
        ),
        (
            "POST /api/v1/evidence/packages",
            json!({"practice_id": "00000000-0000-0000-0000-000000000000", "period": "month",
                   "from": "2026-11-01", "to": "2026-11-30"}),
        ),
    ])
}

fn critical_app() -> serde_json::Value {
    serde_json::json!({"name": "Walked app", "tier": "tier2",
        "endpoints": [{"kind": "dns", "name": "walk.example.com"}]})
}

#[derive(Debug)]
struct Operation {
    method: String,
    path: String,
    has_body: bool,
    public: bool,
    /// Opened only by a relay's token (`tests/relay.rs` walks its refusals): no user's to walk.
    relay_only: bool,
}

async fn operations(cloud: &TestCloud) -> Vec<Operation> {
    let doc: serde_json::Value = cloud
        .http
        .get(cloud.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            operations.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                has_body: op.get("requestBody").is_some(),
                public: op.get("security").is_none(),
                relay_only: op
                    .get("security")
                    .is_some_and(|s| s.to_string().contains("relay_token")),
            });
        }
    }
    operations
}

/// The ids a walk substitutes into paths, by parameter name.
type Targets = BTreeMap<&'static str, String>;

fn fill(path: &str, targets: &Targets) -> String {
    let mut filled = path.to_owned();
    for (name, id) in targets {
        filled = filled.replace(&format!("{{{name}}}"), id);
    }
    assert!(!filled.contains('{'), "no target for a parameter of {path}");
    filled
}

async fn send(
    cloud: &TestCloud,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = cloud
        .http
        .request(method, cloud.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

struct Walk {
    attempts: usize,
    failures: Vec<String>,
}

/// Sends every operation with a path parameter, filled with `targets`, as `caller`.
async fn walk_targets(
    cloud: &TestCloud,
    caller: &str,
    token: &str,
    operations: &[Operation],
    targets: &Targets,
    walk: &mut Walk,
) {
    let bodies = example_bodies();
    for op in operations
        .iter()
        .filter(|op| op.path.contains('{') && !op.public && !op.relay_only)
    {
        let key = format!("{} {}", op.method, op.path);
        let body = op.has_body.then(|| bodies[key.as_str()].clone());
        let path = fill(&op.path, targets);
        let (status, text) = send(cloud, token, &op.method, &path, body.as_ref()).await;
        walk.attempts += 1;
        if status != 403 && status != 404 {
            walk.failures
                .push(format!("{caller}: {key} → {status} {text}"));
        }
    }
}

/// Lists every parameterless GET as `caller`; none may mention anything in `secrets`.
async fn walk_lists(
    cloud: &TestCloud,
    caller: &str,
    token: &str,
    operations: &[Operation],
    secrets: &[String],
    walk: &mut Walk,
) {
    // The live-update stream never ends; tests/overview.rs checks what it shows whom.
    for op in operations.iter().filter(|op| {
        op.method == "GET"
            && !op.path.contains('{')
            && !op.public
            && !op.relay_only
            && op.path != "/api/v1/stream"
    }) {
        let (status, text) = send(cloud, token, "GET", &op.path, None).await;
        walk.attempts += 1;
        if status != 200 && status != 403 {
            walk.failures
                .push(format!("{caller}: GET {} → {status} {text}", op.path));
        }
        for secret in secrets {
            if text.contains(secret.as_str()) {
                walk.failures
                    .push(format!("{caller}: GET {} shows {secret}", op.path));
            }
        }
    }
}

fn one_use_token() -> CreateEnrollmentToken {
    CreateEnrollmentToken {
        expires_in_hours: 1,
        max_uses: 1,
        site_id: None,
    }
}

async fn enrol(cloud: &TestCloud, token: &str, practice: PracticeId, serial: &str) -> ApplianceId {
    let enrolment = cloud
        .api(token)
        .create_enrollment_token(practice, &one_use_token())
        .await
        .expect("token");
    cloud
        .anonymous()
        .enroll(&EnrollRequest {
            token: enrolment.token,
            hardware: HardwareIdentity {
                serial: serial.into(),
                mac: format!("02:00:00:00:00:{:02x}", serial.len()),
                model: "t".into(),
            },
            agent_version: "t".into(),
            csr_pem: stayopen_appliance::identity::new_key_and_request()
                .expect("csr")
                .1,
            wireguard_public_key: None,
        })
        .await
        .expect("enrolled")
        .appliance_id
}

async fn enrollment_token_of(cloud: &TestCloud, admin: &str, practice: PracticeId) -> String {
    let created = cloud
        .api(admin)
        .create_enrollment_token(practice, &one_use_token())
        .await;
    created.expect("token").id.to_string()
}

async fn first_site(cloud: &TestCloud, token: &str, practice: PracticeId) -> String {
    let sites = cloud.api(token).sites(practice).await;
    sites.expect("sites").items[0].id.to_string()
}

async fn api_token(cloud: &TestCloud, admin: &str, scope: ApiTokenScope) -> CreatedApiToken {
    let token = cloud
        .api(admin)
        .create_api_token(&CreateApiToken {
            name: "automation".into(),
            scope,
            expires_in_days: None,
        })
        .await;
    token.expect("token")
}

async fn user_id(cloud: &TestCloud, admin: &str, role: Role) -> String {
    let users = cloud.api(admin).users("").await;
    users
        .expect("users")
        .items
        .into_iter()
        .find(|u| u.role == role)
        .expect("user with role")
        .id
        .to_string()
}

async fn command_of(cloud: &TestCloud, admin: &str, appliance: ApplianceId) -> String {
    let command = cloud
        .api(admin)
        .create_command(
            appliance,
            &CreateCommand {
                spec: CommandSpec::CollectDiagnostics,
                expires_in_secs: None,
            },
        )
        .await;
    command.expect("command").id.to_string()
}

async fn claimed_serial(
    cloud: &TestCloud,
    admin: &str,
    practice: PracticeId,
    serial: &str,
) -> String {
    cloud
        .api(admin)
        .claim_serial(
            practice,
            &ClaimSerial {
                serial: serial.into(),
                factory_key: "fk_0123456789abcdef0123456789abcdef".into(),
                site_id: None,
            },
        )
        .await
        .expect("serial claimed");
    serial.to_owned()
}

async fn alert_of(
    cloud: &TestCloud,
    tenant: stayopen_shared::TenantId,
    appliance: ApplianceId,
) -> String {
    let mut tx = stayopen_cloud::infra::db::tenant_tx(&cloud.pool, tenant)
        .await
        .expect("tx");
    let ids = stayopen_cloud::domain::alerts::apply(
        &mut tx,
        tenant,
        appliance,
        &[stayopen_cloud::domain::alerts::AlertChange::Raise {
            kind: stayopen_shared::alerts::AlertKind::UplinkDown,
            subject: "fiber".into(),
            summary: "Uplink fiber down".into(),
        }],
        chrono::Utc::now(),
    )
    .await
    .expect("alert");
    tx.commit().await.expect("commit");
    ids[0].0.to_string()
}

async fn channel_of(cloud: &TestCloud, admin: &str) -> String {
    let created = cloud
        .api(admin)
        .create_channel(&CreateChannel {
            name: "walk".into(),
            kind: ChannelKind::default(),
            url: Some("https://example.com/hook".into()),
            recipients: vec![],
            user_ids: vec![],
        })
        .await;
    created.expect("channel").channel.id.to_string()
}

async fn rule_of(cloud: &TestCloud, admin: &str) -> String {
    let channel = channel_of(cloud, admin).await;
    let rule = cloud
        .api(admin)
        .create_routing_rule(&CreateRoutingRule {
            channel_id: channel.parse().expect("channel id"),
            practice_id: None,
            kinds: None,
            min_severity: Severity::Critical,
            delay_secs: 0,
            repeat_secs: None,
            during: RouteDuring::default(),
        })
        .await;
    rule.expect("rule").id.to_string()
}

async fn window_of(cloud: &TestCloud, admin: &str, practice: PracticeId) -> String {
    let now = chrono::Utc::now();
    let window = cloud
        .api(admin)
        .create_maintenance_window(&CreateMaintenanceWindow {
            practice_id: practice,
            appliance_id: None,
            starts_at: now,
            ends_at: now + chrono::Duration::hours(2),
            reason: "walk".into(),
        })
        .await;
    window.expect("window").id.to_string()
}

/// A register entry of `practice`, made by its MSP's admin.
async fn critical_app_of(cloud: &TestCloud, admin: &str, practice: PracticeId) -> String {
    let (status, entry) = cloud
        .api(admin)
        .post::<_, serde_json::Value>(
            &format!("/api/v1/practices/{practice}/critical-apps"),
            &critical_app(),
        )
        .await;
    assert_eq!(status, 201, "{entry:?}");
    entry.expect("entry")["id"].as_str().expect("id").to_owned()
}

/// A finished drill and a closed incident of `appliance`, as ingest records them.
async fn drill_and_incident_of(cloud: &TestCloud, appliance: ApplianceId) -> (String, String) {
    let (drill, incident) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (sql, id) in [
        (
            "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at,
                                 finished_at, outcome)
             SELECT $1, tenant_id, practice_id, id, 'manual', now(), now(), 'passed'
             FROM appliances WHERE id = $2",
            drill,
        ),
        (
            "INSERT INTO incidents (id, tenant_id, practice_id, appliance_id, started_at, ended_at)
             SELECT $1, tenant_id, practice_id, id, now() - interval '1 hour', now()
             FROM appliances WHERE id = $2",
            incident,
        ),
    ] {
        sqlx::query(sql)
            .bind(id)
            .bind(appliance.as_uuid())
            .execute(&cloud.owner_pool)
            .await
            .expect("record");
    }
    (drill.to_string(), incident.to_string())
}

/// A built evidence package of `practice` (the last week), ready to download.
async fn package_of(cloud: &TestCloud, admin: &str, practice: PracticeId) -> String {
    let today = chrono::Utc::now().date_naive();
    let body = stayopen_shared::compliance::CreateEvidencePackage {
        practice_id: practice,
        period: stayopen_shared::compliance::PeriodKind::Custom,
        from: today - chrono::Duration::days(6),
        to: today,
    };
    let (status, package) = cloud
        .api(admin)
        .post::<_, stayopen_shared::compliance::EvidencePackage>("/api/v1/evidence/packages", &body)
        .await;
    assert_eq!(status, 202);
    let id = package.expect("package").id;
    common::eventually(
        std::time::Duration::from_secs(30),
        "the package built",
        || async {
            let (_, package) = cloud
                .api(admin)
                .get::<stayopen_shared::compliance::EvidencePackage>(&format!(
                    "/api/v1/evidence/packages/{id}"
                ))
                .await;
            package.filter(|p| p.state == stayopen_shared::compliance::PackageState::Ready)
        },
    )
    .await;
    id.to_string()
}

async fn audit_rows(cloud: &TestCloud, tenant: &uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_reaches_another_msps_or_another_practices_data_through_any_endpoint() {
    let cloud = spawn_cloud().await;
    let operations = operations(&cloud).await;
    let bodies = example_bodies();
    for op in operations.iter().filter(|op| op.has_body) {
        let key = format!("{} {}", op.method, op.path);
        assert!(
            bodies.contains_key(key.as_str()),
            "add an example body for {key}"
        );
    }

    // MSP A: the demo, with every kind of caller.
    let demo = cloud.seed_demo().await;
    let a_admin = cloud.login(&demo.email, &demo.password).await;
    let riverside = demo.practices[0].id;
    let hillcrest = demo.practices[1].id;
    let a_technician = cloud
        .user_with_role(
            &a_admin,
            "tech@lakeside-it.example",
            Role::MspTechnician,
            vec![],
        )
        .await;
    let a_officer = cloud
        .user_with_role(
            &a_admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![riverside],
        )
        .await;
    let a_auditor = cloud
        .user_with_role(
            &a_admin,
            "auditor@cpa.example",
            Role::Auditor,
            vec![riverside],
        )
        .await;
    let a_api = api_token(&cloud, &a_admin, ApiTokenScope::Operate).await;
    let hillcrest_appliance = enrol(&cloud, &a_admin, hillcrest, "SO-HILL").await;

    // MSP B, with one of everything.
    let (b_tenant, b_admin, b_practice) = cloud.other_msp("other.example").await;
    cloud
        .user_with_role(&b_admin, "tech@other.example", Role::MspTechnician, vec![])
        .await;
    let b_appliance = enrol(&cloud, &b_admin, b_practice, "SO-OTHER-MSP").await;
    let b_api = api_token(&cloud, &b_admin, ApiTokenScope::Read).await;
    let (b_drill, b_incident) = drill_and_incident_of(&cloud, b_appliance).await;
    let b_targets: Targets = BTreeMap::from([
        ("practice_id", b_practice.to_string()),
        ("site_id", first_site(&cloud, &b_admin, b_practice).await),
        ("appliance_id", b_appliance.to_string()),
        (
            "user_id",
            user_id(&cloud, &b_admin, Role::MspTechnician).await,
        ),
        ("token_id", b_api.details.id.to_string()),
        (
            "enrollment_token_id",
            enrollment_token_of(&cloud, &b_admin, b_practice).await,
        ),
        (
            "command_id",
            command_of(&cloud, &b_admin, b_appliance).await,
        ),
        (
            "serial",
            claimed_serial(&cloud, &b_admin, b_practice, "SO-B-CLAIM").await,
        ),
        ("alert_id", alert_of(&cloud, b_tenant, b_appliance).await),
        ("channel_id", channel_of(&cloud, &b_admin).await),
        ("rule_id", rule_of(&cloud, &b_admin).await),
        ("window_id", window_of(&cloud, &b_admin, b_practice).await),
        (
            "app_id",
            critical_app_of(&cloud, &b_admin, b_practice).await,
        ),
        ("drill_id", b_drill),
        ("incident_id", b_incident),
        ("package_id", package_of(&cloud, &b_admin, b_practice).await),
    ]);
    let b_audit_before = audit_rows(&cloud, b_tenant.as_uuid()).await;

    let mut walk = Walk {
        attempts: 0,
        failures: Vec::new(),
    };
    let mut secrets: Vec<String> = b_targets.values().cloned().collect();
    secrets.push(b_tenant.to_string());
    secrets.push("other.example".into());
    let a_callers = [
        ("msp_admin", a_admin.clone()),
        ("msp_technician", a_technician.clone()),
        ("compliance_officer", a_officer.clone()),
        ("auditor", a_auditor.clone()),
        ("api_token", a_api.token.clone()),
    ];
    for (caller, token) in &a_callers {
        walk_targets(&cloud, caller, token, &operations, &b_targets, &mut walk).await;
        walk_lists(&cloud, caller, token, &operations, &secrets, &mut walk).await;
    }
    // Bulk actions name their targets in the body: B's appliance and alert, put in A's bulk
    // requests, are skipped as not found (or the caller's role is refused first), never acted on.
    for (caller, token) in &a_callers {
        for (path, body) in [
            (
                "/api/v1/appliances/bulk",
                serde_json::json!({"appliance_ids": [b_targets["appliance_id"]],
                                   "action": {"kind": "add_tag", "tag": "walked"}}),
            ),
            (
                "/api/v1/appliances/bulk",
                serde_json::json!({"appliance_ids": [b_targets["appliance_id"]],
                                   "action": {"kind": "start_drill", "duration_secs": 60}}),
            ),
            (
                "/api/v1/alerts/bulk",
                serde_json::json!({"alert_ids": [b_targets["alert_id"]], "action": "resolve"}),
            ),
        ] {
            let (status, text) = send(&cloud, token, "POST", path, Some(&body)).await;
            walk.attempts += 1;
            let refused = status == 403
                || (status == 200
                    && serde_json::from_str::<stayopen_shared::api::BulkOutcome>(&text)
                        .is_ok_and(|o| o.done.is_empty() && o.skipped.len() == 1));
            if !refused {
                walk.failures.push(format!(
                    "{caller}: POST {path} with B's id → {status} {text}"
                ));
            }
        }
    }
    let cross_msp = walk.attempts;

    // The practice-scoped roles against the other practice of their own MSP, and against A's own
    // users and tokens, which are not theirs to manage.
    let (hillcrest_drill, hillcrest_incident) =
        drill_and_incident_of(&cloud, hillcrest_appliance).await;
    let hillcrest_targets: Targets = BTreeMap::from([
        ("practice_id", hillcrest.to_string()),
        ("site_id", first_site(&cloud, &a_admin, hillcrest).await),
        ("appliance_id", hillcrest_appliance.to_string()),
        (
            "user_id",
            user_id(&cloud, &a_admin, Role::MspTechnician).await,
        ),
        ("token_id", a_api.details.id.to_string()),
        (
            "enrollment_token_id",
            enrollment_token_of(&cloud, &a_admin, hillcrest).await,
        ),
        (
            "command_id",
            command_of(&cloud, &a_admin, hillcrest_appliance).await,
        ),
        (
            "serial",
            claimed_serial(&cloud, &a_admin, hillcrest, "SO-HILL-CLAIM").await,
        ),
        (
            "alert_id",
            alert_of(&cloud, demo.tenant_id, hillcrest_appliance).await,
        ),
        ("channel_id", channel_of(&cloud, &a_admin).await),
        ("rule_id", rule_of(&cloud, &a_admin).await),
        ("window_id", window_of(&cloud, &a_admin, hillcrest).await),
        ("app_id", critical_app_of(&cloud, &a_admin, hillcrest).await),
        ("drill_id", hillcrest_drill),
        ("incident_id", hillcrest_incident),
        ("package_id", package_of(&cloud, &a_admin, hillcrest).await),
    ]);
    let hillcrest_secrets = vec![hillcrest.to_string(), hillcrest_appliance.to_string()];
    for (caller, token) in [("compliance_officer", &a_officer), ("auditor", &a_auditor)] {
        walk_targets(
            &cloud,
            caller,
            token,
            &operations,
            &hillcrest_targets,
            &mut walk,
        )
        .await;
        walk_lists(
            &cloud,
            caller,
            token,
            &operations,
            &hillcrest_secrets,
            &mut walk,
        )
        .await;
    }

    // Control: the same paths with A's own ids answer the admin, so the walk above really reached
    // the handlers (and was refused by scope, not by a malformed path).
    for op in operations
        .iter()
        .filter(|op| op.method == "GET" && op.path.contains('{'))
    {
        let (status, text) = send(
            &cloud,
            &a_admin,
            "GET",
            &fill(&op.path, &hillcrest_targets),
            None,
        )
        .await;
        assert_eq!(status, 200, "GET {} with A's own ids: {text}", op.path);
    }

    println!(
        "isolation matrix: {} operations in the OpenAPI document; {cross_msp} cross-MSP attempts by 5 callers, \
         {} cross-practice attempts by 2 callers; {} failures",
        operations.len(),
        walk.attempts - cross_msp,
        walk.failures.len()
    );
    assert!(walk.failures.is_empty(), "{:#?}", walk.failures);
    assert_eq!(
        audit_rows(&cloud, b_tenant.as_uuid()).await,
        b_audit_before,
        "nothing of B changed"
    );
    cloud
        .api(&b_admin)
        .appliance(b_appliance)
        .await
        .expect("B still sees its own appliance");
}
