//! Compliance records: the critical applications register (who may edit it, that it is audited and
//! what the appliances check), drills built from appliance events and their sign-off, incidents,
//! monthly availability, scheduled drills and retention. Events and telemetry arrive over the real
//! broker from enrolled test devices.

mod common;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::{Device, DeviceConnection, TestCloud, eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use serde_json::json;
use stayopen_cloud::domain::alerts::sweeps;
use stayopen_cloud::domain::compliance::{drill_schedule, retention};
use stayopen_shared::api::{ApiError, ApiTokenScope, CommandView, CreateApiToken, Page, Role};
use stayopen_shared::compliance::{
    AppCheckResult, AppReachability, AvailabilityMonth, CriticalAppEntry, DrillOutcome,
    DrillRecord, DrillReport, DrillTrigger, Incident,
};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId, PracticeId};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn ehr() -> serde_json::Value {
    json!({
        "name": "EHR",
        "tier": "tier1",
        "endpoints": [{"kind": "https", "url": "https://ehr.example.com/health"}],
        "owner": "Dr. Rivera",
        "note": "charts and orders"
    })
}

fn message_of(body: &Option<serde_json::Value>) -> String {
    body.clone()
        .and_then(|b| serde_json::from_value::<ApiError>(b).ok())
        .map(|e| e.error.message)
        .unwrap_or_default()
}

/// An enrolled and connected test device of the demo's practice `index`.
struct TestDevice {
    id: ApplianceId,
    connection: DeviceConnection,
}

impl TestDevice {
    async fn enrol(cloud: &TestCloud, token: &str, serial: &str, mac: &str) -> Self {
        let device: Device = cloud.enrol_device(token, serial, mac).await;
        let connection = cloud
            .connect_device(&device)
            .await
            .expect("device connects");
        Self {
            id: device.enrolled.appliance_id,
            connection,
        }
    }

    async fn publish(&self, channel: Channel, payload: Vec<u8>) {
        self.connection
            .client
            .publish(
                DeviceTopic::new(self.id, channel).to_string(),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("publish");
    }

    async fn event_with_id(&self, message: MessageId, at: DateTime<Utc>, event: ApplianceEvent) {
        let payload = Envelope::new(message, self.id, at, event).encode();
        self.publish(Channel::Events, payload).await;
    }

    async fn event(&self, at: DateTime<Utc>, event: ApplianceEvent) -> MessageId {
        let id = MessageId(Uuid::new_v4());
        self.event_with_id(id, at, event).await;
        id
    }

    async fn telemetry(&self, at: DateTime<Utc>, body: Telemetry) {
        let payload = Envelope::new(MessageId(Uuid::new_v4()), self.id, at, body).encode();
        self.publish(Channel::Telemetry, payload).await;
    }
}

fn event(kind: EventKind, from: Option<&str>, to: Option<&str>, reason: &str) -> ApplianceEvent {
    ApplianceEvent {
        kind,
        uplink: None,
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        reason: reason.into(),
        drill: None,
    }
}

/// Telemetry of a fibre primary (`fibre` health) and LTE backup with `active` carrying traffic,
/// covering `samples` reporting windows.
fn sample(active: Option<&str>, fibre: UplinkHealth, samples: u32) -> Telemetry {
    let mut body = telemetry(ApplianceId(Uuid::nil()))
        .fibre_and_lte("fiber")
        .body()
        .clone();
    body.active_uplink = active.map(str::to_owned);
    body.uplinks[0].health = fibre;
    body.samples = (samples > 1).then_some(samples);
    body
}

/// A cloud with the demo seeded, its admin signed in, and the EHR in the first practice's
/// critical applications register: where the incident tests start.
async fn cloud_with_the_ehr_registered() -> (
    TestCloud,
    stayopen_cloud::domain::seed::DemoSeed,
    String,
    PracticeId,
) {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let (status, _) = cloud
        .api(&admin)
        .post::<_, CriticalAppEntry>(
            &format!("/api/v1/practices/{practice}/critical-apps"),
            &ehr(),
        )
        .await;
    assert_eq!(status, 201);
    (cloud, demo, admin, practice)
}

async fn stored_events(cloud: &TestCloud, appliance: ApplianceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM appliance_events WHERE appliance_id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count")
}

async fn audit_actions(cloud: &TestCloud, practice: PracticeId, prefix: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT action FROM audit_log
         WHERE action LIKE $1 || '%' AND (after ->> 'practice_id' = $2 OR before ->> 'practice_id' = $2)
         ORDER BY seq",
    )
    .bind(prefix)
    .bind(practice.to_string())
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("audit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_register_is_edited_by_msp_staff_and_the_practices_officer_audited_and_is_what_appliances_check()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let other_practice = demo.practices[1].id;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-REG-1",
            "02:00:00:00:10:01",
        )
        .await;
    let appliance = device.enrolled.appliance_id;
    let list_path = format!("/api/v1/practices/{practice}/critical-apps");

    let (status, created) = cloud
        .api(&admin)
        .post::<_, CriticalAppEntry>(&list_path, &ehr())
        .await;
    assert_eq!(status, 201);
    let created = created.expect("entry");
    assert_eq!(created.practice_id, practice);
    assert_eq!(created.updated_by.as_deref(), Some(demo.email.as_str()));

    // The appliance's effective policy checks what the register lists, and says where from.
    let configuration = cloud
        .api(&admin)
        .appliance_configuration(appliance)
        .await
        .expect("configuration");
    assert_eq!(configuration.effective.policy.critical_apps.len(), 1);
    assert_eq!(configuration.effective.policy.critical_apps[0].name, "EHR");
    assert!(configuration.desired_version >= 2, "republished");

    // The same name in another case is the same application.
    let mut shouting = ehr();
    shouting["name"] = json!("ehr");
    let (status, body) = cloud
        .api(&admin)
        .post::<_, serde_json::Value>(&list_path, &shouting)
        .await;
    assert_eq!(status, 409, "{body:?}");

    // A bad body is a 400 naming the field.
    let mut bad = ehr();
    bad["name"] = json!("Lab");
    bad["endpoints"] = json!([{"kind": "tcp", "host": "lab.example.com", "port": 0}]);
    let (status, body) = cloud
        .api(&admin)
        .post::<_, serde_json::Value>(&list_path, &bad)
        .await;
    assert_eq!(status, 400);
    assert!(message_of(&body).starts_with("endpoints:"), "{body:?}");
    let (status, body) = cloud
        .api(&admin)
        .post::<_, serde_json::Value>(
            &list_path,
            &json!({"name": "", "tier": "tier1", "endpoints": []}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message_of(&body).starts_with("name"), "{body:?}");

    // Policy layers no longer carry critical applications: the register does.
    let refused = cloud
        .api(&admin)
        .set_practice_policy(practice, &json!({"critical_apps": []}))
        .await
        .expect_err("critical_apps in a layer is refused");
    assert_eq!(refused.status, 400);
    assert!(
        message_of(&refused.body).contains("register"),
        "{:?}",
        refused.body
    );

    // The practice's compliance officer edits; an officer of another practice sees nothing.
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    let stranger = cloud
        .user_with_role(
            &admin,
            "officer@hillcrest.example",
            Role::ComplianceOfficer,
            vec![other_practice],
        )
        .await;
    let mut lab = ehr();
    lab["name"] = json!("Lab interface");
    lab["tier"] = json!("tier2");
    lab["endpoints"] = json!([{"kind": "tcp", "host": "lab.example.com", "port": 2575}]);
    let (status, lab_entry) = cloud
        .api(&officer)
        .post::<_, CriticalAppEntry>(&list_path, &lab)
        .await;
    assert_eq!(status, 201);
    let lab_entry = lab_entry.expect("lab");
    lab["note"] = json!("HL7 results");
    let (status, updated) = cloud
        .api(&officer)
        .put::<_, CriticalAppEntry>(&format!("/api/v1/critical-apps/{}", lab_entry.id), &lab)
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated.expect("updated").note, "HL7 results");

    let entry_path = format!("/api/v1/critical-apps/{}", created.id);
    for (who, token) in [("another practice's officer", &stranger)] {
        let (status, _) = cloud.api(token).get::<serde_json::Value>(&list_path).await;
        assert_eq!(status, 404, "{who} reads");
        let (status, _) = cloud
            .api(token)
            .post::<_, serde_json::Value>(&list_path, &ehr())
            .await;
        assert_eq!(status, 404, "{who} adds");
        let (status, _) = cloud
            .api(token)
            .put::<_, serde_json::Value>(&entry_path, &ehr())
            .await;
        assert_eq!(status, 404, "{who} changes");
        let (status, _) = cloud.api(token).delete(&entry_path).await;
        assert_eq!(status, 404, "{who} removes");
    }
    let (_, other_admin, _) = cloud.other_msp("elsewhere.example").await;
    let (status, _) = cloud
        .api(&other_admin)
        .get::<serde_json::Value>(&list_path)
        .await;
    assert_eq!(status, 404, "another MSP reads");
    let (status, _) = cloud
        .api(&other_admin)
        .put::<_, serde_json::Value>(&entry_path, &ehr())
        .await;
    assert_eq!(status, 404, "another MSP changes");

    // An auditor and a read-only API token read but do not edit.
    let auditor = cloud
        .user_with_role(&admin, "auditor@cpa.example", Role::Auditor, vec![practice])
        .await;
    let (status, listed) = cloud
        .api(&auditor)
        .get::<Vec<CriticalAppEntry>>(&list_path)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.expect("list").len(), 2);
    let (status, _) = cloud
        .api(&auditor)
        .post::<_, serde_json::Value>(
            &list_path,
            &json!({"name": "Billing", "tier": "tier3",
            "endpoints": [{"kind": "dns", "name": "billing.example.com"}]}),
        )
        .await;
    assert_eq!(status, 403, "an auditor adds");
    let (status, _) = cloud.api(&auditor).delete(&entry_path).await;
    assert_eq!(status, 403, "an auditor removes");
    let read_token = cloud
        .api(&admin)
        .create_api_token(&CreateApiToken {
            name: "reporting".into(),
            scope: ApiTokenScope::Read,
            expires_in_days: None,
        })
        .await
        .expect("token")
        .token;
    let (status, _) = cloud
        .api(&read_token)
        .get::<serde_json::Value>(&list_path)
        .await;
    assert_eq!(status, 200);
    let (status, _) = cloud.api(&read_token).delete(&entry_path).await;
    assert_eq!(status, 403, "a read-only token removes");

    // An auditor whose access has expired is refused.
    sqlx::query(
        "UPDATE users SET access_expires_at = now() - interval '1 minute' WHERE email = $1",
    )
    .bind("auditor@cpa.example")
    .execute(&cloud.owner_pool)
    .await
    .expect("expire");
    let (status, _) = cloud
        .api(&auditor)
        .get::<serde_json::Value>(&list_path)
        .await;
    assert_eq!(status, 401, "an expired auditor reads");

    let (status, _) = cloud.api(&officer).delete(&entry_path).await;
    assert_eq!(status, 204);
    let configuration = cloud
        .api(&admin)
        .appliance_configuration(appliance)
        .await
        .expect("configuration");
    let names: Vec<&str> = configuration
        .effective
        .policy
        .critical_apps
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["Lab interface"]);
    assert_eq!(
        audit_actions(&cloud, practice, "critical_app.").await,
        [
            "critical_app.create",
            "critical_app.create",
            "critical_app.update",
            "critical_app.delete"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_started_by_hand_is_recorded_from_its_events_once_and_signed_off_once_by_the_practices_officer()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let device = TestDevice::enrol(
        &cloud,
        &demo.practices[0].enrollment_token,
        "SO-DRILL-1",
        "02:00:00:00:20:01",
    )
    .await;
    device
        .telemetry(Utc::now(), sample(Some("fiber"), UplinkHealth::Up, 1))
        .await;
    let queued: Vec<CommandView> = eventually(WAIT, "the drill queued", || async {
        let (status, queued) = cloud
            .api(&admin)
            .post::<_, Vec<CommandView>>(
                &format!("/api/v1/practices/{practice}/drills"),
                &json!({"duration_secs": 60}),
            )
            .await;
        (status == 201).then_some(queued).flatten()
    })
    .await;
    assert_eq!(queued.len(), 1);
    let command = queued[0].id;
    eventually(WAIT, "the command delivered", || async {
        sqlx::query_scalar::<_, bool>("SELECT delivered_at IS NOT NULL FROM commands WHERE id = $1")
            .bind(command)
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("command")
            .then_some(())
    })
    .await;

    let started = Utc::now();
    let mut begin = event(
        EventKind::DrillStarted,
        Some("fiber"),
        Some("lte"),
        "failover drill for 60 s",
    );
    begin.drill = None;
    device.event(started, begin).await;
    device
        .event(
            started + chrono::Duration::milliseconds(10),
            event(EventKind::Failover, Some("fiber"), Some("lte"), "drill"),
        )
        .await;
    let mut finish = event(
        EventKind::DrillFinished,
        Some("lte"),
        Some("fiber"),
        "drill over",
    );
    finish.drill = Some(DrillReport {
        command_id: Some(command),
        backup: Some("lte".into()),
        switchover_ms: Some(850),
        failback_ms: Some(420),
        apps: vec![
            AppCheckResult {
                app: "EHR".into(),
                reachable: true,
                latency_ms: Some(41.0),
                reason: None,
            },
            AppCheckResult {
                app: "Lab interface".into(),
                reachable: false,
                latency_ms: None,
                reason: Some("tcp lab.example.com:2575: timed out".into()),
            },
        ],
        passed: false,
    });
    let finished_at = started + chrono::Duration::seconds(60);
    let finish_id = device.event(finished_at, finish.clone()).await;
    // The same event delivered again changes nothing.
    device.event_with_id(finish_id, finished_at, finish).await;
    device
        .event(
            finished_at + chrono::Duration::seconds(1),
            event(EventKind::PolicyApplied, None, None, "policy 2"),
        )
        .await;
    eventually(WAIT, "every event stored", || async {
        (stored_events(&cloud, device.id).await == 4).then_some(())
    })
    .await;

    let listed: Page<DrillRecord> = cloud
        .api(&admin)
        .get(&format!("/api/v1/drills?practice_id={practice}"))
        .await
        .1
        .expect("drills");
    let [drill] = &listed.items[..] else {
        panic!("one drill: {:?}", listed.items);
    };
    assert_eq!(drill.trigger, DrillTrigger::Manual);
    assert_eq!(drill.outcome, DrillOutcome::Failed);
    assert_eq!(drill.switchover_ms, Some(850));
    assert_eq!(drill.backup_uplink.as_deref(), Some("lte"));
    assert_eq!(drill.apps.len(), 2);
    assert!(
        drill
            .reason
            .contains("Lab interface (tcp lab.example.com:2575: timed out)"),
        "{}",
        drill.reason
    );
    assert_eq!(
        drill.started_at.timestamp_millis(),
        started.timestamp_millis()
    );
    assert!(drill.sign_off.is_none());
    // A drill's failover is not an incident.
    let incidents: Page<Incident> = cloud
        .api(&admin)
        .get("/api/v1/incidents")
        .await
        .1
        .expect("incidents");
    assert!(incidents.items.is_empty(), "{:?}", incidents.items);

    let awaiting = "/api/v1/drills?awaiting_sign_off=true";
    let page: Page<DrillRecord> = cloud.api(&admin).get(awaiting).await.1.expect("awaiting");
    assert_eq!(page.items.len(), 1);

    let sign_path = format!("/api/v1/drills/{}/sign-off", drill.id);
    let comment = json!({"comment": "Reviewed; lab vendor ticket opened."});
    let technician = cloud
        .user_with_role(
            &admin,
            "tech@lakeside-it.example",
            Role::MspTechnician,
            vec![],
        )
        .await;
    let (status, _) = cloud
        .api(&technician)
        .post::<_, serde_json::Value>(&sign_path, &comment)
        .await;
    assert_eq!(status, 403, "a technician signs off");
    let stranger = cloud
        .user_with_role(
            &admin,
            "officer@hillcrest.example",
            Role::ComplianceOfficer,
            vec![demo.practices[1].id],
        )
        .await;
    let (status, _) = cloud
        .api(&stranger)
        .post::<_, serde_json::Value>(&sign_path, &comment)
        .await;
    assert_eq!(status, 404, "another practice's officer signs off");
    let (status, _) = cloud
        .api(&stranger)
        .get::<serde_json::Value>(&format!("/api/v1/drills/{}", drill.id))
        .await;
    assert_eq!(status, 404, "another practice's officer reads");
    let (status, _) = cloud
        .api(&stranger)
        .get::<serde_json::Value>(&format!("/api/v1/drills?practice_id={practice}"))
        .await;
    assert_eq!(status, 404, "another practice's officer lists");
    let theirs: Page<DrillRecord> = cloud
        .api(&stranger)
        .get("/api/v1/drills")
        .await
        .1
        .expect("list");
    assert!(theirs.items.is_empty());
    let (_, other_admin, _) = cloud.other_msp("elsewhere.example").await;
    let (status, _) = cloud
        .api(&other_admin)
        .post::<_, serde_json::Value>(&sign_path, &comment)
        .await;
    assert_eq!(status, 404, "another MSP signs off");
    let auditor = cloud
        .user_with_role(&admin, "auditor@cpa.example", Role::Auditor, vec![practice])
        .await;
    let (status, _) = cloud
        .api(&auditor)
        .post::<_, serde_json::Value>(&sign_path, &comment)
        .await;
    assert_eq!(status, 403, "an auditor signs off");

    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    let (status, signed) = cloud
        .api(&officer)
        .post::<_, DrillRecord>(&sign_path, &comment)
        .await;
    assert_eq!(status, 200);
    let sign_off = signed.expect("signed").sign_off.expect("a sign-off");
    assert_eq!(sign_off.email, "officer@riverside.example");
    assert_eq!(sign_off.comment, "Reviewed; lab vendor ticket opened.");
    let (status, _) = cloud
        .api(&officer)
        .post::<_, serde_json::Value>(&sign_path, &comment)
        .await;
    assert_eq!(status, 409, "a second sign-off");
    let (status, _) = cloud
        .api(&admin)
        .post::<_, serde_json::Value>(&sign_path, &comment)
        .await;
    assert_eq!(status, 409, "a second sign-off by an admin");
    let page: Page<DrillRecord> = cloud.api(&officer).get(awaiting).await.1.expect("awaiting");
    assert!(page.items.is_empty(), "signed off drills no longer wait");
    assert_eq!(
        audit_actions(&cloud, practice, "drill.").await,
        ["drill.sign_off"]
    );

    // A drill the appliance refused on its own (no command) is a local, failed drill.
    device
        .event(
            Utc::now(),
            event(
                EventKind::DrillFailed,
                Some("fiber"),
                None,
                "drill refused: no healthy backup uplink",
            ),
        )
        .await;
    let refused = eventually(WAIT, "the refused drill", || async {
        let page: Page<DrillRecord> = cloud
            .api(&officer)
            .get(&format!("/api/v1/drills?practice_id={practice}&limit=1"))
            .await
            .1?;
        page.items.into_iter().find(|d| d.id != drill.id)
    })
    .await;
    assert_eq!(refused.trigger, DrillTrigger::Local);
    assert_eq!(refused.outcome, DrillOutcome::Failed);
    assert_eq!(refused.finished_at, Some(refused.started_at));
    assert_eq!(refused.reason, "drill refused: no healthy backup uplink");
    // The cursor leads to the older one.
    let first: Page<DrillRecord> = cloud
        .api(&officer)
        .get(&format!("/api/v1/drills?practice_id={practice}&limit=1"))
        .await
        .1
        .expect("page");
    let cursor = first.next_cursor.expect("a next page");
    let second: Page<DrillRecord> = cloud
        .api(&officer)
        .get(&format!(
            "/api/v1/drills?practice_id={practice}&limit=1&cursor={cursor}"
        ))
        .await
        .1
        .expect("page");
    assert_eq!(second.items[0].id, drill.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_outage_becomes_an_incident_with_its_uplinks_time_on_backup_applications_and_alerts()
{
    let (cloud, demo, admin, practice) = cloud_with_the_ehr_registered().await;
    let device = TestDevice::enrol(
        &cloud,
        &demo.practices[0].enrollment_token,
        "SO-INC-1",
        "02:00:00:00:30:01",
    )
    .await;
    let t0 = Utc::now() - chrono::Duration::minutes(5);
    device
        .telemetry(
            t0 - chrono::Duration::seconds(10),
            sample(Some("fiber"), UplinkHealth::Up, 1),
        )
        .await;
    eventually(WAIT, "the first telemetry", || async {
        cloud
            .api(&admin)
            .appliance(device.id)
            .await
            .ok()
            .filter(|a| a.active_uplink.as_deref() == Some("fiber"))
    })
    .await;
    device
        .event(
            t0,
            event(
                EventKind::Failover,
                Some("fiber"),
                Some("lte"),
                "active uplink down",
            ),
        )
        .await;
    let mut on_backup = sample(Some("lte"), UplinkHealth::Down, 1);
    on_backup.apps = vec![
        AppReachability {
            app: "EHR".into(),
            uplink: "lte".into(),
            reachable: true,
            latency_ms: Some(55.0),
            age_secs: 3,
            reason: None,
        },
        AppReachability {
            app: "EHR".into(),
            uplink: "fiber".into(),
            reachable: false,
            latency_ms: None,
            age_secs: 3,
            reason: Some("fiber is down".into()),
        },
    ];
    device
        .telemetry(t0 + chrono::Duration::seconds(10), on_backup)
        .await;
    device
        .event(
            t0 + chrono::Duration::seconds(90),
            event(
                EventKind::Failback,
                Some("lte"),
                Some("fiber"),
                "preferred uplink clean for 30 s",
            ),
        )
        .await;
    let incident = eventually(WAIT, "the closed incident", || async {
        let page: Page<Incident> = cloud
            .api(&admin)
            .get(&format!("/api/v1/incidents?practice_id={practice}"))
            .await
            .1?;
        page.items.into_iter().find(|i| i.ended_at.is_some())
    })
    .await;
    assert_eq!(incident.failed_uplinks, ["fiber"]);
    assert_eq!(incident.backup_uplinks, ["lte"]);
    assert_eq!(incident.on_backup_secs, 90);
    assert!(incident.traffic_kept_flowing);
    assert_eq!(incident.apps.len(), 1);
    assert_eq!(incident.apps[0].stayed_reachable, Some(true));
    assert!(
        incident
            .alerts
            .iter()
            .any(|a| a.kind == stayopen_shared::alerts::AlertKind::Failover),
        "{:?}",
        incident.alerts
    );

    let path = format!("/api/v1/incidents/{}", incident.id);
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    let (status, seen) = cloud.api(&officer).get::<Incident>(&path).await;
    assert_eq!(status, 200);
    assert_eq!(seen.expect("incident").id, incident.id);
    let (status, _) = cloud
        .api(&officer)
        .patch::<_, serde_json::Value>(&path, &json!({"root_cause": "mine"}))
        .await;
    assert_eq!(status, 403, "an officer writes the root cause");
    let (status, updated) = cloud
        .api(&admin)
        .patch::<_, Incident>(&path, &json!({"root_cause": "ISP fibre cut on Main St."}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        updated.expect("updated").root_cause,
        "ISP fibre cut on Main St."
    );
    let technician = cloud
        .user_with_role(
            &admin,
            "tech@lakeside-it.example",
            Role::MspTechnician,
            vec![],
        )
        .await;
    let (status, commented) = cloud
        .api(&technician)
        .post::<_, Incident>(
            &format!("{path}/comments"),
            &json!({"body": "Called the ISP; ticket 4411."}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        commented.expect("incident").comments[0].body,
        "Called the ISP; ticket 4411."
    );
    let (status, _) = cloud
        .api(&technician)
        .post::<_, serde_json::Value>(&format!("{path}/comments"), &json!({"body": "  "}))
        .await;
    assert_eq!(status, 400, "an empty comment");
    assert_eq!(
        audit_actions(&cloud, practice, "incident.").await,
        ["incident.root_cause", "incident.comment"]
    );

    let stranger = cloud
        .user_with_role(
            &admin,
            "officer@hillcrest.example",
            Role::ComplianceOfficer,
            vec![demo.practices[1].id],
        )
        .await;
    let (status, _) = cloud.api(&stranger).get::<serde_json::Value>(&path).await;
    assert_eq!(status, 404, "another practice's officer reads");
    let (_, other_admin, _) = cloud.other_msp("elsewhere.example").await;
    let (status, _) = cloud
        .api(&other_admin)
        .get::<serde_json::Value>(&path)
        .await;
    assert_eq!(status, 404, "another MSP reads");
    let (status, _) = cloud
        .api(&other_admin)
        .patch::<_, serde_json::Value>(&path, &json!({"root_cause": "x"}))
        .await;
    assert_eq!(status, 404, "another MSP writes");
    let theirs: Page<Incident> = cloud
        .api(&other_admin)
        .get("/api/v1/incidents")
        .await
        .1
        .expect("list");
    assert!(theirs.items.is_empty());
}

/// Telemetry and events reach ingest by separate paths (events first; outbox replays after a
/// reconnection), so a sample taken on the backup may be stored before the failover event that
/// opens its incident, or after the failback that closed it. Either way it counts in the incident
/// whose time it falls in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_on_the_backup_counts_in_its_incident_whether_stored_before_the_failover_or_after_the_failback()
 {
    let (cloud, demo, admin, practice) = cloud_with_the_ehr_registered().await;
    let on_backup = |reachable: bool| {
        let mut sample = sample(Some("lte"), UplinkHealth::Down, 1);
        sample.apps = vec![AppReachability {
            app: "EHR".into(),
            uplink: "lte".into(),
            reachable,
            latency_ms: reachable.then_some(55.0),
            age_secs: 3,
            reason: (!reachable).then(|| "EHR: timed out".into()),
        }];
        sample
    };
    let closed_incident = |serial: &'static str| {
        let cloud = &cloud;
        let admin = &admin;
        async move {
            eventually(WAIT, "the closed incident", || async move {
                let page: Page<Incident> = cloud
                    .api(admin)
                    .get(&format!("/api/v1/incidents?practice_id={practice}"))
                    .await
                    .1?;
                page.items
                    .into_iter()
                    .find(|i| i.appliance_serial == serial && i.ended_at.is_some())
            })
            .await
        }
    };
    // Whole seconds, as PostgreSQL keeps microseconds.
    let t0 = chrono::SubsecRound::trunc_subsecs(Utc::now() - chrono::Duration::minutes(5), 0);
    let failover = event(
        EventKind::Failover,
        Some("fiber"),
        Some("lte"),
        "active uplink down",
    );
    let failback = event(
        EventKind::Failback,
        Some("lte"),
        Some("fiber"),
        "preferred uplink clean for 30 s",
    );

    // The sample first: stored before the failover event arrives.
    let early = TestDevice::enrol(
        &cloud,
        &demo.practices[0].enrollment_token,
        "SO-INC-EARLY",
        "02:00:00:00:30:11",
    )
    .await;
    early
        .telemetry(
            t0 - chrono::Duration::seconds(10),
            sample(Some("fiber"), UplinkHealth::Up, 1),
        )
        .await;
    early
        .telemetry(t0 + chrono::Duration::seconds(10), on_backup(true))
        .await;
    eventually(WAIT, "the sample on the backup stored", || async {
        cloud
            .api(&admin)
            .appliance(early.id)
            .await
            .ok()
            .filter(|a| a.active_uplink.as_deref() == Some("lte"))
    })
    .await;
    early.event(t0, failover.clone()).await;
    early
        .event(t0 + chrono::Duration::seconds(90), failback.clone())
        .await;
    let incident = closed_incident("SO-INC-EARLY").await;
    assert_eq!(incident.apps.len(), 1);
    assert_eq!(incident.apps[0].stayed_reachable, Some(true));
    assert_eq!(incident.backup_uplinks, ["lte"]);
    assert_eq!(incident.on_backup_secs, 90);

    // The sample last: stored after the failback closed the incident.
    let late = TestDevice::enrol(
        &cloud,
        &demo.practices[0].enrollment_token,
        "SO-INC-LATE",
        "02:00:00:00:30:12",
    )
    .await;
    late.telemetry(
        t0 - chrono::Duration::seconds(10),
        sample(Some("fiber"), UplinkHealth::Up, 1),
    )
    .await;
    late.event(t0, failover).await;
    late.event(t0 + chrono::Duration::seconds(90), failback)
        .await;
    let incident = closed_incident("SO-INC-LATE").await;
    assert_eq!(incident.apps[0].stayed_reachable, None, "no sample yet");
    late.telemetry(t0 + chrono::Duration::seconds(10), on_backup(false))
        .await;
    let incident = eventually(WAIT, "the late sample counted", || async {
        let path = format!("/api/v1/incidents/{}", incident.id);
        let (_, seen) = cloud.api(&admin).get::<Incident>(&path).await;
        seen.filter(|i| i.apps[0].stayed_reachable.is_some())
    })
    .await;
    assert_eq!(incident.apps[0].stayed_reachable, Some(false));
    assert_eq!(incident.apps[0].reason.as_deref(), Some("EHR: timed out"));
    assert_eq!(
        incident.ended_at,
        Some(t0 + chrono::Duration::seconds(90)),
        "a late sample does not move the end"
    );
    assert_eq!(incident.on_backup_secs, 90, "nor add time on backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_of_a_month_with_an_outage_and_a_silent_period_is_exact() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    cloud
        .api(&admin)
        .set_policy(&json!({"telemetry_interval_secs": 60}))
        .await
        .expect("policy");
    let device = TestDevice::enrol(
        &cloud,
        &demo.practices[0].enrollment_token,
        "SO-AV-1",
        "02:00:00:00:40:01",
    )
    .await;
    let day = Utc
        .with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .expect("day");
    let at = |minutes: i64| day + chrono::Duration::minutes(minutes);
    // 00:00–01:00 on the fibre (six merged samples of ten minutes each).
    for i in 0..6 {
        device
            .telemetry(at(i * 10 + 9), sample(Some("fiber"), UplinkHealth::Up, 10))
            .await;
    }
    // 01:00–01:30 on the backup while the fibre is down.
    for i in 0..3 {
        device
            .telemetry(
                at(60 + i * 10 + 9),
                sample(Some("lte"), UplinkHealth::Down, 10),
            )
            .await;
    }
    // 01:30–01:40 no uplink at all; then silence for the rest of the month.
    device
        .telemetry(at(99), sample(None, UplinkHealth::Down, 10))
        .await;
    let path = format!("/api/v1/practices/{practice}/availability?from=2026-11-01&to=2026-11-30");
    let months: Vec<AvailabilityMonth> = eventually(WAIT, "every sample rolled up", || async {
        let (_, months) = cloud.api(&admin).get::<Vec<AvailabilityMonth>>(&path).await;
        months.filter(|m| m.first().is_some_and(|m| m.observed_secs == 6000))
    })
    .await;
    let [month] = &months[..] else {
        panic!("one month: {months:?}");
    };
    assert_eq!(
        month.month,
        NaiveDate::from_ymd_opt(2026, 11, 1).expect("date")
    );
    assert_eq!(month.primary_pct, Some(60.0));
    assert_eq!(month.effective_pct, Some(90.0));
    assert_eq!(month.on_backup_secs, 1800);
    // The appliance is counted from its first report: 29 days of November.
    assert_eq!(month.period_secs, 29 * 86_400);
    assert_eq!(month.gap_secs, 29 * 86_400 - 6000);
    assert_eq!(month.days.len(), 30);
    assert_eq!(
        month.days[0].primary_pct, None,
        "before the appliance existed"
    );
    assert_eq!(month.days[0].gap_secs, 0);
    assert_eq!(month.days[1].gap_secs, 86_400 - 6000);
    assert_eq!(month.days[1].observed_secs, 6000);
    assert_eq!(month.days[1].effective_pct, Some(90.0));
    assert_eq!(month.days[2].gap_secs, 86_400, "a silent day is a gap");
    assert_eq!(month.days[2].primary_pct, None, "a silent day is never up");

    let (status, _) = cloud
        .api(&admin)
        .get::<serde_json::Value>(&format!(
            "/api/v1/practices/{practice}/availability?from=2026-12-01&to=2026-11-01"
        ))
        .await;
    assert_eq!(status, 400, "a range that ends before it starts");
    let stranger = cloud
        .user_with_role(
            &admin,
            "officer@hillcrest.example",
            Role::ComplianceOfficer,
            vec![demo.practices[1].id],
        )
        .await;
    let (status, _) = cloud.api(&stranger).get::<serde_json::Value>(&path).await;
    assert_eq!(status, 404, "another practice's officer");
    let (_, other_admin, _) = cloud.other_msp("elsewhere.example").await;
    let (status, _) = cloud
        .api(&other_admin)
        .get::<serde_json::Value>(&path)
        .await;
    assert_eq!(status, 404, "another MSP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_scheduler_queues_exactly_one_command_per_appliance_and_window() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-SCHED-1",
            "02:00:00:00:50:01",
        )
        .await;
    let appliance = device.enrolled.appliance_id;
    cloud
        .api(&admin)
        .put::<_, serde_json::Value>(
            &format!("/api/v1/practices/{practice}/schedule"),
            &json!({"time_zone": "America/Chicago", "clinic_hours": {
                "mon": [{"open": "08:00", "close": "18:00"}],
                "tue": [{"open": "08:00", "close": "18:00"}],
                "wed": [{"open": "08:00", "close": "18:00"}],
                "thu": [{"open": "08:00", "close": "18:00"}],
                "fri": [{"open": "08:00", "close": "18:00"}]}}),
        )
        .await;
    cloud
        .api(&admin)
        .set_practice_policy(
            practice,
            &json!({"drill_schedule": {"every_days": 7,
                "window": {"kind": "after_closing", "minutes": 30}, "duration_secs": 120}}),
        )
        .await
        .expect("schedule");
    // Friday 2026-11-27 18:30–19:30 in Chicago is 00:30–01:30 UTC on Saturday.
    let window = Utc
        .with_ymd_and_hms(2026, 11, 28, 0, 30, 0)
        .single()
        .expect("time");
    let pool = &cloud.pool;
    assert_eq!(
        drill_schedule::sweep(pool, window - chrono::Duration::minutes(1))
            .await
            .expect("sweep"),
        0,
        "before the window"
    );
    // Two cloud instances sweeping at once queue one drill between them.
    let (a, b) = tokio::join!(
        drill_schedule::sweep(pool, window + chrono::Duration::minutes(5)),
        drill_schedule::sweep(pool, window + chrono::Duration::minutes(5)),
    );
    assert_eq!(a.expect("sweep") + b.expect("sweep"), 1);
    assert_eq!(
        drill_schedule::sweep(pool, window + chrono::Duration::minutes(20))
            .await
            .expect("sweep"),
        0,
        "later in the same window"
    );
    let commands: Vec<(serde_json::Value, String)> = sqlx::query_as(
        "SELECT spec, created_by FROM commands WHERE appliance_id = $1 AND kind = 'start_drill'
           AND expires_at = $2",
    )
    .bind(appliance.as_uuid())
    .bind(window + chrono::Duration::hours(1))
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("commands");
    assert_eq!(
        commands,
        [(
            json!({"kind": "start_drill", "duration_secs": 120}),
            "system:drill-schedule".to_owned()
        )]
    );
    // A drill done since: the next window is not due until the cadence has passed.
    sqlx::query(
        "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at, finished_at, outcome)
         SELECT gen_random_uuid(), tenant_id, practice_id, id, 'scheduled', $2, $2, 'passed'
         FROM appliances WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .bind(window + chrono::Duration::minutes(6))
    .execute(&cloud.owner_pool)
    .await
    .expect("drill");
    assert_eq!(
        drill_schedule::sweep(
            pool,
            window + chrono::Duration::days(3) + chrono::Duration::minutes(5)
        )
        .await
        .expect("sweep"),
        0,
        "Monday's window, three days after the drill"
    );
    assert_eq!(
        drill_schedule::sweep(
            pool,
            window + chrono::Duration::days(7) + chrono::Duration::minutes(5)
        )
        .await
        .expect("sweep"),
        1,
        "next Friday's window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_drill_in_the_drills_table_keeps_the_drill_overdue_alert_away() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let drilled = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-OVER-1",
            "02:00:00:00:60:01",
        )
        .await
        .enrolled
        .appliance_id;
    let idle = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-OVER-2",
            "02:00:00:00:60:02",
        )
        .await
        .enrolled
        .appliance_id;
    let now = Utc::now() + chrono::Duration::days(200);
    sqlx::query(
        "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at, finished_at, outcome)
         SELECT gen_random_uuid(), tenant_id, practice_id, id, 'manual', $2, $2, 'passed'
         FROM appliances WHERE id = $1",
    )
    .bind(drilled.as_uuid())
    .bind(now - chrono::Duration::days(10))
    .execute(&cloud.owner_pool)
    .await
    .expect("drill");
    sweeps::drill_and_flapping_sweep(&cloud.pool, now)
        .await
        .expect("sweep");
    let overdue: Vec<Uuid> = sqlx::query_scalar(
        "SELECT appliance_id FROM alerts WHERE kind = 'drill_overdue' AND state <> 'resolved'",
    )
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("alerts");
    assert_eq!(overdue, [idle.0]);
}

/// A month of raw telemetry wholly past retention is dropped as a partition (no row-by-row delete
/// of billions of rows at fleet scale); the month the cut-off falls in loses only its older rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_months_of_raw_telemetry_and_deletes_rows_only_in_the_month_it_cuts()
{
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let appliance = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-RET-2",
            "02:00:00:00:70:02",
        )
        .await
        .enrolled
        .appliance_id;
    let now = Utc::now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let db = &cloud.owner_pool;
    // Two months that end before the cut-off (130 and 160 days back: each ends at least 99 days
    // back), with their own partitions as the daily partitioning makes them.
    let mut old_partitions = Vec::new();
    for back in [130, 160] {
        let month = days(back).date_naive();
        sqlx::query("SELECT stayopen_ensure_telemetry_partition($1)")
            .bind(month)
            .execute(db)
            .await
            .expect("partition");
        old_partitions.push(format!("telemetry_{}", month.format("%Y_%m")));
    }
    for at in [days(89), days(91), days(130), days(160)] {
        sqlx::query(
            "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, body)
             SELECT gen_random_uuid(), id, tenant_id, $2, '{}' FROM appliances WHERE id = $1",
        )
        .bind(appliance.as_uuid())
        .bind(at)
        .execute(db)
        .await
        .expect("telemetry");
    }
    let deleted: std::collections::BTreeMap<String, i64> = retention::enforce(&cloud.pool, now, 90)
        .await
        .expect("retention")
        .into_iter()
        .collect();
    assert_eq!(deleted.get("telemetry_partitions"), Some(&2), "{deleted:?}");
    assert_eq!(
        deleted.get("telemetry"),
        Some(&1),
        "only the 91-day-old row: {deleted:?}"
    );
    for partition in &old_partitions {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(partition)
            .fetch_one(db)
            .await
            .expect("regclass");
        assert_eq!(exists, None, "{partition} dropped");
    }
    let left: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT sent_at FROM telemetry WHERE appliance_id = $1")
            .bind(appliance.as_uuid())
            .fetch_all(db)
            .await
            .expect("left");
    assert_eq!(
        left.iter().map(DateTime::timestamp).collect::<Vec<_>>(),
        vec![days(89).timestamp()]
    );
    // The current month's partition is untouched.
    let current = format!("telemetry_{}", now.format("%Y_%m"));
    let kept: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&current)
        .fetch_one(db)
        .await
        .expect("regclass");
    assert_eq!(kept.as_deref(), Some(current.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_raw_telemetry_past_its_days_and_records_only_after_six_years() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let appliance = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-RET-1",
            "02:00:00:00:70:01",
        )
        .await
        .enrolled
        .appliance_id;
    let now = Utc::now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let records = retention::RECORDS_DAYS;
    let db = &cloud.owner_pool;
    let insert = |sql: &'static str, at: DateTime<Utc>| async move {
        sqlx::query(sql)
            .bind(appliance.as_uuid())
            .bind(at)
            .execute(db)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    for at in [days(89), days(91)] {
        insert(
            "INSERT INTO telemetry (message_id, appliance_id, tenant_id, sent_at, body)
             SELECT gen_random_uuid(), id, tenant_id, $2, '{}' FROM appliances WHERE id = $1",
            at,
        )
        .await;
    }
    for at in [days(records - 1), days(records + 1)] {
        insert(
            "INSERT INTO appliance_events (message_id, appliance_id, tenant_id, kind, sent_at, body)
             SELECT gen_random_uuid(), id, tenant_id, 'failover', $2, '{}' FROM appliances WHERE id = $1",
            at,
        )
        .await;
        insert(
            "INSERT INTO telemetry_hourly (tenant_id, appliance_id, uplink, hour, samples, rtt_sum, rtt_samples, loss_sum)
             SELECT tenant_id, id, 'fiber', date_trunc('hour', $2), 1, 0, 0, 0 FROM appliances WHERE id = $1",
            at,
        )
        .await;
        insert(
            "INSERT INTO availability_hourly (tenant_id, appliance_id, hour, observed_secs)
             SELECT tenant_id, id, date_trunc('hour', $2), 10 FROM appliances WHERE id = $1",
            at,
        )
        .await;
        insert(
            "INSERT INTO drills (id, tenant_id, practice_id, appliance_id, trigger, started_at, finished_at, outcome)
             SELECT gen_random_uuid(), tenant_id, practice_id, id, 'local', $2, $2, 'passed'
             FROM appliances WHERE id = $1",
            at,
        )
        .await;
        insert(
            "INSERT INTO incidents (id, tenant_id, practice_id, appliance_id, started_at, ended_at)
             SELECT gen_random_uuid(), tenant_id, practice_id, id, $2, $2 FROM appliances WHERE id = $1",
            at,
        )
        .await;
    }
    let audit_before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(db)
        .await
        .expect("audit");

    let deleted = retention::enforce(&cloud.pool, now, 90)
        .await
        .expect("retention");
    let deleted: std::collections::BTreeMap<String, i64> = deleted.into_iter().collect();
    for kind in [
        "telemetry",
        "appliance_events",
        "telemetry_hourly",
        "availability_hourly",
        "drills",
        "incidents",
    ] {
        assert_eq!(deleted.get(kind), Some(&1), "{kind}: {deleted:?}");
    }
    let oldest = |sql: &'static str| async move {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(sql)
            .fetch_one(db)
            .await
            .expect("oldest")
            .expect("a row is left")
    };
    let telemetry_left = oldest("SELECT min(sent_at) FROM telemetry").await;
    assert_eq!(telemetry_left.timestamp(), days(89).timestamp());
    let events_left = oldest("SELECT min(sent_at) FROM appliance_events").await;
    assert_eq!(events_left.timestamp(), days(records - 1).timestamp());
    let drills_left = oldest("SELECT min(started_at) FROM drills").await;
    assert_eq!(drills_left.timestamp(), days(records - 1).timestamp());
    let incidents_left = oldest("SELECT min(started_at) FROM incidents").await;
    assert_eq!(incidents_left.timestamp(), days(records - 1).timestamp());
    let audit_after: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(db)
        .await
        .expect("audit");
    assert_eq!(audit_after, audit_before, "the audit log is kept whole");
}
