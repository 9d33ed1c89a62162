//! Daily fleet work through the API (issue 19): one state model that lists, filters and totals
//! agree on; the fleet-wide appliance list searched, filtered, sorted and paged server-side; tags
//! and bulk actions with their role checks, audit and tenant isolation; CSV exports whose rows
//! are the list's rows.

mod common;

use std::collections::BTreeSet;

use common::{TestCloud, spawn_cloud};
use stayopen_cloud::domain::alerts::AlertChange;
use stayopen_shared::ApplianceId;
use stayopen_shared::alerts::{AlertBulkAction, AlertKind, AlertState, BulkAlertRequest};
use stayopen_shared::api::{
    ApplianceBulkAction, ApplianceSort, ApplianceState, ApplianceView, BulkApplianceRequest,
    BulkOutcome, FleetTotals, Page, PracticeStatus, PracticeSummary, Role,
};
use uuid::Uuid;

/// Every page of `query` (a few rows a page, to cross many cursors), in order.
async fn every_page(cloud: &TestCloud, token: &str, query: &str) -> Vec<ApplianceView> {
    let api = cloud.api(token);
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/appliances?limit=7&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = api.get::<Page<ApplianceView>>(&path).await;
        assert_eq!(status, 200, "{path}");
        let page = page.expect("a page");
        all.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            return all;
        }
    }
}

fn serials(appliances: &[ApplianceView]) -> Vec<String> {
    appliances.iter().map(|a| a.serial.clone()).collect()
}

/// Puts the seeded appliances of `tenant` into every state: every 37th offline and every 23rd on
/// its backup (as seeded), SO-000005 degraded (its LTE down), SO-000006 degraded (its active
/// fibre degraded), SO-000007 on its primary with a merely lossy LTE standby (still primary),
/// SO-000010 on a cellular backup.
async fn every_state(cloud: &TestCloud) {
    for sql in [
        "UPDATE appliances SET last_telemetry = '{\"active_uplink\": \"fiber\", \"uplinks\": [
             {\"name\": \"fiber\", \"health\": \"up\"}, {\"name\": \"lte\", \"health\": \"degraded\"}]}'
         WHERE serial = 'SO-000007'",
        "UPDATE appliances SET last_telemetry = '{\"active_uplink\": \"fiber\", \"uplinks\": [
             {\"name\": \"fiber\", \"health\": \"degraded\"}, {\"name\": \"lte\", \"health\": \"up\"}]}'
         WHERE serial = 'SO-000006'",
        "UPDATE appliances SET last_telemetry = '{\"active_uplink\": \"fiber\", \"uplinks\": [
             {\"name\": \"fiber\", \"health\": \"up\"}, {\"name\": \"lte\", \"health\": \"down\"}]}'
         WHERE serial = 'SO-000005'",
        "UPDATE appliances SET active_uplink = 'lte', on_backup = true,
                last_telemetry = '{\"active_uplink\": \"lte\", \"uplinks\": [
             {\"name\": \"fiber\", \"health\": \"down\"},
             {\"name\": \"lte\", \"health\": \"up\", \"cellular\": {\"operator\": \"Test\"}}]}'
         WHERE serial = 'SO-000010'",
    ] {
        sqlx::query(sql)
            .execute(&cloud.owner_pool)
            .await
            .expect("set the state");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_wide_list_searches_filters_and_sorts_every_column_server_side_and_agrees_with_the_totals()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    // 20 appliances in each of four new practices and the demo's two.
    common::fleet::seed(&cloud.owner_pool, demo.tenant_id.0, 4, 80).await;
    every_state(&cloud).await;
    const ALL: usize = 120;

    // Every column, both ways: the pages join up into the whole list, each appliance once, in
    // the order one page of everything has.
    let everything = every_page(&cloud, &admin, "").await;
    assert_eq!(everything.len(), ALL);
    for sort in [
        ApplianceSort::Serial,
        ApplianceSort::Practice,
        ApplianceSort::Site,
        ApplianceSort::Model,
        ApplianceSort::AgentVersion,
        ApplianceSort::State,
        ApplianceSort::ActiveUplink,
        ApplianceSort::LastSeen,
    ] {
        for order in ["asc", "desc"] {
            let query = format!("sort={}&order={order}", sort.as_str());
            let paged = every_page(&cloud, &admin, &query).await;
            let (_, whole) = cloud
                .api(&admin)
                .get::<Page<ApplianceView>>(&format!("/api/v1/appliances?limit=500&{query}"))
                .await;
            let whole = whole.expect("one page");
            assert_eq!(serials(&paged), serials(&whole.items), "{query}");
            let distinct: BTreeSet<_> = paged.iter().map(|a| a.id).collect();
            assert_eq!(distinct.len(), ALL, "{query}: each appliance once");
        }
    }
    let by_state = every_page(&cloud, &admin, "sort=state").await;
    let ranks: Vec<u8> = by_state
        .iter()
        .map(|a| match a.state {
            ApplianceState::Offline => 0,
            ApplianceState::OnBackup => 1,
            ApplianceState::Degraded => 2,
            ApplianceState::Primary => 3,
        })
        .collect();
    assert!(ranks.is_sorted(), "worst first: {ranks:?}");

    // Search: a serial prefix (not a serial's middle), a practice's name, a model.
    let prefix = every_page(&cloud, &admin, "q=so-00001").await;
    assert_eq!(
        serials(&prefix),
        (10..=19).map(|n| format!("SO-0000{n}")).collect::<Vec<_>>()
    );
    assert!(every_page(&cloud, &admin, "q=-00001").await.is_empty());
    let practice = every_page(&cloud, &admin, "q=practice%2000002").await;
    assert_eq!(practice.len(), 20);
    assert!(practice.iter().all(|a| a.practice_name == "Practice 00002"));
    assert_eq!(every_page(&cloud, &admin, "q=benc").await.len(), ALL);
    // LIKE's wildcards in the search are plain characters.
    assert!(every_page(&cloud, &admin, "q=SO_").await.is_empty());
    assert!(every_page(&cloud, &admin, "q=%25").await.is_empty());

    // States: each filter lists what the totals count.
    let totals: FleetTotals = cloud.api(&admin).fleet_totals().await.expect("totals");
    let count = |state: &str| {
        let cloud = &cloud;
        let admin = admin.clone();
        let state = state.to_owned();
        async move { every_page(cloud, &admin, &format!("state={state}")).await }
    };
    let degraded = count("degraded").await;
    assert_eq!(serials(&degraded), ["SO-000005", "SO-000006"]);
    assert!(
        count("primary")
            .await
            .iter()
            .any(|a| a.serial == "SO-000007"),
        "a lossy standby leaves the box on its primary"
    );
    assert_eq!(totals.degraded, 2);
    assert_eq!(count("offline").await.len() as u32, totals.offline);
    assert_eq!(totals.offline, 3, "SO-000037, SO-000074 and SO-000111");
    assert_eq!(count("on_backup").await.len() as u32, totals.on_backup);
    assert_eq!(totals.on_backup, 6, "every 23rd and SO-000010");
    assert_eq!(count("primary").await.len() as u32, totals.on_primary);
    assert_eq!(
        totals.on_primary + totals.on_backup + totals.degraded + totals.offline,
        totals.appliances
    );
    let cellular = every_page(&cloud, &admin, "uplink_kind=cellular").await;
    assert_eq!(serials(&cellular), ["SO-000010"]);
    assert_eq!(
        cellular[0].active_uplink_kind,
        Some(stayopen_shared::api::UplinkKind::Cellular)
    );

    // Practices roll up from the same states, and each status filter matches its total.
    let practices: Vec<PracticeSummary> = cloud
        .api(&admin)
        .practices("limit=500")
        .await
        .expect("practices")
        .items;
    for status in [
        PracticeStatus::Offline,
        PracticeStatus::OnBackup,
        PracticeStatus::Degraded,
        PracticeStatus::Primary,
        PracticeStatus::Empty,
    ] {
        let listed = practices.iter().filter(|p| p.status == status).count() as u32;
        let total = match status {
            PracticeStatus::Offline => totals.practices_offline,
            PracticeStatus::OnBackup => totals.practices_on_backup,
            PracticeStatus::Degraded => totals.practices_degraded,
            PracticeStatus::Primary => totals.practices_primary,
            PracticeStatus::Empty => totals.practices_empty,
        };
        assert_eq!(listed, total, "{status:?}");
    }
    // A practice with some of its twenty boxes offline is degraded (or on backup), not
    // "offline".
    let partly = practices
        .iter()
        .find(|p| p.offline > 0)
        .expect("a practice with a box offline");
    assert!(partly.offline < partly.appliances);
    assert_ne!(partly.status, PracticeStatus::Offline);

    // Bad filters are refused with a clear message, not ignored.
    for bad in [
        "state=sideways",
        "sort=colour",
        "uplink_kind=pigeon",
        "tag=two%20words",
    ] {
        let (status, _) = cloud
            .api(&admin)
            .get::<serde_json::Value>(&format!("/api/v1/appliances?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}");
    }
}

async fn bulk(
    cloud: &TestCloud,
    token: &str,
    ids: &[ApplianceId],
    action: ApplianceBulkAction,
) -> (u16, Option<BulkOutcome>) {
    cloud
        .api(token)
        .post(
            "/api/v1/appliances/bulk",
            &BulkApplianceRequest {
                appliance_ids: ids.to_vec(),
                action,
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_check_the_role_skip_what_the_caller_cannot_see_and_audit_each_appliance() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let ours = common::fleet::seed_and_list(&cloud.owner_pool, demo.tenant_id.0, 2, 6).await;
    let (other_tenant, other_admin, their_practice) = cloud.other_msp("rival.example").await;
    let their_token = common::enrolment_token(&cloud, &other_admin, their_practice).await;
    let theirs = [cloud
        .enrol_device(&their_token, "SO-RIVAL-1", "02:00:00:00:99:01")
        .await
        .enrolled
        .appliance_id];

    // Tag three of ours and one of theirs: theirs is skipped as if it did not exist.
    let targets = [ours[0], ours[1], ours[2], theirs[0], ours[0]];
    let (status, outcome) = bulk(
        &cloud,
        &admin,
        &targets,
        ApplianceBulkAction::AddTag {
            tag: " Dental ".into(),
        },
    )
    .await;
    assert_eq!(status, 200);
    let outcome = outcome.expect("outcome");
    assert_eq!(outcome.done, vec![ours[0].0, ours[1].0, ours[2].0]);
    assert_eq!(outcome.skipped.len(), 1);
    assert_eq!(outcome.skipped[0].id, theirs[0].0);
    assert_eq!(outcome.skipped[0].reason, "no such appliance");
    let their_tags: Vec<String> = sqlx::query_scalar("SELECT tags FROM appliances WHERE id = $1")
        .bind(theirs[0].as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("their tags");
    assert!(
        their_tags.is_empty(),
        "another tenant's appliance untouched"
    );
    // The tag finds them, as a filter and as a search; the other MSP finds nothing by it.
    let tagged = every_page(&cloud, &admin, "tag=dental").await;
    assert_eq!(tagged.len(), 3);
    assert!(tagged.iter().all(|a| a.tags == ["dental"]));
    assert_eq!(every_page(&cloud, &admin, "q=DENTAL").await.len(), 3);
    assert!(
        every_page(&cloud, &other_admin, "tag=dental")
            .await
            .is_empty()
    );
    // Each tagged appliance has its own audit record.
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'appliance.tag_add' AND tenant_id = $1",
    )
    .bind(demo.tenant_id.0)
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("audit");
    assert_eq!(audited, 3);
    // The log names people and boxes as people know them, and finds a box's changes by its serial.
    let serial: String = sqlx::query_scalar("SELECT serial FROM appliances WHERE id = $1")
        .bind(ours[0].as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("serial");
    let (status, entries) = cloud
        .api(&admin)
        .get::<Page<stayopen_shared::api::AuditEntry>>(&format!(
            "/api/v1/audit-log?action=appliance.tag_add&target_id={}",
            serial.to_lowercase()
        ))
        .await;
    assert_eq!(status, 200);
    let entries = entries.expect("entries").items;
    assert_eq!(entries.len(), 1, "found by its serial, in any case");
    assert_eq!(entries[0].target_id, ours[0].to_string());
    assert_eq!(entries[0].target_name, serial);
    assert_eq!(entries[0].actor_name, demo.email);
    assert!(
        entries[0].actor.starts_with("user:"),
        "the record keeps the id"
    );
    // Every entry of the log reads with names, whatever its target.
    let (status, all) = cloud
        .api(&admin)
        .get::<serde_json::Value>("/api/v1/audit-log?limit=500")
        .await;
    assert_eq!(status, 200, "{all:?}");
    // Another MSP's admin, asking for the same serial, finds nothing of ours.
    let (_, theirs_view) = cloud
        .api(&other_admin)
        .get::<Page<stayopen_shared::api::AuditEntry>>(&format!(
            "/api/v1/audit-log?target_id={serial}"
        ))
        .await;
    assert!(theirs_view.expect("entries").items.is_empty());

    // A practice's tags find its appliances too, and only MSP staff set them.
    let practice = demo.practices[1].id;
    let (status, summary) = cloud
        .api(&admin)
        .put::<_, stayopen_shared::api::PracticeSummary>(
            &format!("/api/v1/practices/{practice}/tags"),
            &serde_json::json!({"tags": ["Pediatrics", "pediatrics", "pilot"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(summary.expect("summary").tags, ["pediatrics", "pilot"]);
    let in_practice = every_page(&cloud, &admin, &format!("practice_id={practice}")).await;
    let by_tag = every_page(&cloud, &admin, "tag=pediatrics").await;
    assert_eq!(serials(&by_tag), serials(&in_practice));
    assert!(!by_tag.is_empty());
    for (who, expected) in [(&other_admin, 404), (&admin, 400)] {
        let body = if expected == 400 {
            serde_json::json!({"tags": ["two words"]})
        } else {
            serde_json::json!({"tags": ["mine"]})
        };
        let (status, _) = cloud
            .api(who)
            .put::<_, serde_json::Value>(&format!("/api/v1/practices/{practice}/tags"), &body)
            .await;
        assert_eq!(status, expected);
    }

    // Roles: a compliance officer may neither tag nor drill; an auditor neither. Nothing changes.
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![demo.practices[0].id],
        )
        .await;
    for action in [
        ApplianceBulkAction::AddTag { tag: "x".into() },
        ApplianceBulkAction::StartDrill { duration_secs: 60 },
    ] {
        let (status, _) = bulk(&cloud, &officer, &ours, action).await;
        assert_eq!(status, 403);
    }
    let (status, _) = cloud
        .api(&officer)
        .put::<_, serde_json::Value>(
            &format!("/api/v1/practices/{}/tags", demo.practices[0].id),
            &serde_json::json!({"tags": ["x"]}),
        )
        .await;
    assert_eq!(
        status, 403,
        "a compliance officer does not tag their practice"
    );
    // A technician may drill: one start_drill command queued per appliance, each audited.
    let technician = cloud
        .user_with_role(&admin, "tech@lakeside.example", Role::MspTechnician, vec![])
        .await;
    let (status, outcome) = bulk(
        &cloud,
        &technician,
        &ours[3..6],
        ApplianceBulkAction::StartDrill { duration_secs: 60 },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(outcome.expect("outcome").done.len(), 3);
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commands WHERE kind = 'start_drill' AND appliance_id = ANY($1)",
    )
    .bind(ours[3..6].iter().map(|a| a.0).collect::<Vec<_>>())
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("commands");
    assert_eq!(queued, 3);
    // Out-of-range drills, bad tags, bad policies and empty or oversized requests are refused
    // whole, before anything is done.
    for (action, ids) in [
        (
            ApplianceBulkAction::StartDrill { duration_secs: 5 },
            ours.clone(),
        ),
        (
            ApplianceBulkAction::AddTag {
                tag: "<b>x</b>".into(),
            },
            ours.clone(),
        ),
        (
            ApplianceBulkAction::ApplyPolicy {
                overrides: serde_json::from_str(r#"{"no_such_setting": 1}"#).expect("json"),
            },
            ours.clone(),
        ),
        (ApplianceBulkAction::AddTag { tag: "x".into() }, vec![]),
        (
            ApplianceBulkAction::AddTag { tag: "x".into() },
            vec![ours[0]; 501],
        ),
    ] {
        let (status, _) = bulk(&cloud, &admin, &ids, action).await;
        assert_eq!(status, 400);
    }
    // A policy applied to many: each appliance's own layer is replaced, audited.
    let (status, outcome) = bulk(
        &cloud,
        &admin,
        &ours[..2],
        ApplianceBulkAction::ApplyPolicy {
            overrides: serde_json::from_str(r#"{"failback_clean_period_secs": 120}"#)
                .expect("json"),
        },
    )
    .await;
    assert_eq!(status, 200, "{outcome:?}");
    assert_eq!(outcome.expect("outcome").done.len(), 2);
    let layer = cloud
        .api(&admin)
        .appliance_policy(ours[1])
        .await
        .expect("layer");
    assert_eq!(layer.overrides["failback_clean_period_secs"], 120);

    // Alerts: acknowledge many at once; one already acknowledged and one of another MSP are
    // skipped, the rest audited one by one.
    let mut alerts = Vec::new();
    for appliance in &ours[..3] {
        alerts.push(
            cloud
                .raise_alert(
                    demo.tenant_id,
                    *appliance,
                    AlertChange::Raise {
                        kind: AlertKind::Failover,
                        subject: String::new(),
                        summary: "Failover fiber to lte".into(),
                    },
                )
                .await,
        );
    }
    let their_alert = cloud
        .raise_alert(
            other_tenant,
            theirs[0],
            AlertChange::Raise {
                kind: AlertKind::Failover,
                subject: String::new(),
                summary: "Failover fiber to lte".into(),
            },
        )
        .await;
    let (status, _) = cloud
        .api(&admin)
        .post::<_, serde_json::Value>(&format!("/api/v1/alerts/{}/acknowledge", alerts[0]), &())
        .await;
    assert_eq!(status, 200);
    let request = BulkAlertRequest {
        alert_ids: vec![alerts[0], alerts[1], alerts[2], their_alert],
        action: AlertBulkAction::Acknowledge,
        note: None,
    };
    let (status, _) = cloud
        .api(&officer)
        .post::<_, BulkOutcome>("/api/v1/alerts/bulk", &request)
        .await;
    assert_eq!(status, 403, "a compliance officer does not operate");
    let (status, outcome) = cloud
        .api(&admin)
        .post::<_, BulkOutcome>("/api/v1/alerts/bulk", &request)
        .await;
    assert_eq!(status, 200);
    let outcome = outcome.expect("outcome");
    assert_eq!(outcome.done, vec![alerts[1], alerts[2]]);
    let skipped: Vec<(Uuid, &str)> = outcome
        .skipped
        .iter()
        .map(|s| (s.id, s.reason.as_str()))
        .collect();
    assert_eq!(
        skipped,
        vec![
            (alerts[0], "the alert is acknowledged, not open"),
            (their_alert, "no such alert")
        ]
    );
    let theirs_now: String = sqlx::query_scalar("SELECT state FROM alerts WHERE id = $1")
        .bind(their_alert)
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("their alert");
    assert_eq!(theirs_now, "open");
    // Resolving many with a note: each one carries it.
    let (status, outcome) = cloud
        .api(&admin)
        .post::<_, BulkOutcome>(
            "/api/v1/alerts/bulk",
            &BulkAlertRequest {
                alert_ids: alerts.clone(),
                action: AlertBulkAction::Resolve,
                note: Some("ISP confirmed the outage is over".into()),
            },
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(outcome.expect("outcome").done, alerts);
    for alert in &alerts {
        let (_, view) = cloud
            .api(&admin)
            .get::<stayopen_shared::alerts::AlertView>(&format!("/api/v1/alerts/{alert}"))
            .await;
        let view = view.expect("alert");
        assert_eq!(view.state, AlertState::Resolved);
        assert_eq!(
            view.resolution.as_deref(),
            Some("ISP confirmed the outage is over")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_stream_every_row_the_filtered_list_has_and_refuse_what_the_list_refuses() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    // More than one export page (500 rows), so the stream crosses cursors.
    common::fleet::seed(&cloud.owner_pool, demo.tenant_id.0, 3, 600).await;
    // 200 in each of three new practices and the demo's two.
    const ALL: usize = 1000;
    every_state(&cloud).await;
    let api = cloud.api(&admin);

    for query in ["", "sort=state&order=desc", "state=on_backup", "q=SO-0001"] {
        let (status, content_type, body) =
            api.text(&format!("/api/v1/appliances.csv?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(content_type, "text/csv; charset=utf-8");
        let rows = common::csv::rows(&body);
        assert_eq!(rows[0][0], "serial");
        let listed = every_page(&cloud, &admin, query).await;
        let exported: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(exported, serials(&listed), "{query}");
        for (row, appliance) in rows[1..].iter().zip(&listed) {
            assert_eq!(row[1], appliance.practice_name);
            assert_eq!(row[3], appliance.state.as_str());
            assert_eq!(row[10], appliance.id.to_string());
        }
    }
    let (_, _, all) = api.text("/api/v1/appliances.csv").await;
    assert_eq!(common::csv::rows(&all).len(), 1 + ALL);

    // Alerts, incidents, practices and the audit log export too, with their filters.
    let (status, _, alerts) = api.text("/api/v1/alerts.csv?unresolved=true").await;
    assert_eq!(status, 200);
    let alert_rows = common::csv::rows(&alerts);
    let (_, listed) = api
        .get::<Page<stayopen_shared::alerts::AlertView>>("/api/v1/alerts?unresolved=true&limit=500")
        .await;
    let listed = listed.expect("alerts");
    assert_eq!(alert_rows.len() - 1, listed.items.len());
    assert_eq!(
        alert_rows[1..]
            .iter()
            .map(|r| r[14].clone())
            .collect::<Vec<_>>(),
        listed
            .items
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>()
    );
    let (status, _, practices) = api.text("/api/v1/practices.csv").await;
    assert_eq!(status, 200);
    assert_eq!(
        common::csv::rows(&practices).len() - 1,
        3 + demo.practices.len()
    );
    let (status, _, incidents) = api.text("/api/v1/incidents.csv").await;
    assert_eq!(status, 200);
    assert_eq!(common::csv::rows(&incidents)[0][0], "started_at");
    let (status, _, audit) = api.text("/api/v1/audit-log.csv").await;
    assert_eq!(status, 200);
    assert!(
        common::csv::rows(&audit).len() > 1,
        "the demo's seeding is audited"
    );

    // Refusals: a bad filter, a role without the audit log, no token at all.
    let (status, _, _) = api.text("/api/v1/appliances.csv?state=sideways").await;
    assert_eq!(status, 400);
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![demo.practices[0].id],
        )
        .await;
    let (status, _, _) = cloud.api(&officer).text("/api/v1/audit-log.csv").await;
    assert_eq!(status, 403);
    // A compliance officer's export holds their practice's 200 appliances only.
    let (status, _, theirs) = cloud.api(&officer).text("/api/v1/appliances.csv").await;
    assert_eq!(status, 200);
    let theirs = common::csv::rows(&theirs);
    assert_eq!(theirs.len(), 1 + 200);
    assert!(theirs[1..].iter().all(|r| r[1] == demo.practices[0].name));
    let (status, _, _) = cloud.anonymous().text("/api/v1/alerts.csv").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_carries_its_address_contact_and_isp_lines_which_only_msp_staff_change_and_each_change_is_audited()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let site = cloud
        .api(&admin)
        .sites(practice)
        .await
        .expect("sites")
        .items[0]
        .id;
    let path = format!("/api/v1/sites/{site}");
    let update = stayopen_shared::api::UpdateSite {
        address: Some(" 12 River Road, Springfield ".into()),
        contact_name: Some("Dana Office-Manager".into()),
        contact_phone: Some("+1 555 0100".into()),
        contact_email: Some("dana@riverside.example".into()),
        isps: Some(vec![
            stayopen_shared::api::SiteIsp {
                uplink: "fiber".into(),
                isp: "MetroFiber".into(),
                circuit_id: "MF-778812".into(),
                support_phone: "+1 555 0199".into(),
            },
            stayopen_shared::api::SiteIsp {
                uplink: "lte".into(),
                isp: "CellCo".into(),
                circuit_id: String::new(),
                support_phone: "611".into(),
            },
        ]),
        ..Default::default()
    };
    let (status, saved) = cloud
        .api(&admin)
        .patch::<_, stayopen_shared::api::SiteView>(&path, &update)
        .await;
    assert_eq!(status, 200);
    let saved = saved.expect("site");
    assert_eq!(saved.address, "12 River Road, Springfield", "trimmed");
    assert_eq!(saved.isps.len(), 2);
    let listed = cloud
        .api(&admin)
        .sites(practice)
        .await
        .expect("sites")
        .items;
    let listed = listed.iter().find(|s| s.id == site).expect("the site");
    assert_eq!(listed.contact_email, "dana@riverside.example");
    assert_eq!(listed.isps[0].circuit_id, "MF-778812");

    // A compliance officer reads it but may not change it; another MSP cannot even find it.
    let officer = cloud
        .user_with_role(
            &admin,
            "officer@riverside.example",
            Role::ComplianceOfficer,
            vec![practice],
        )
        .await;
    let officer_sees = cloud.api(&officer).sites(practice).await.expect("sites");
    assert_eq!(officer_sees.items[0].contact_name, "Dana Office-Manager");
    let (status, _) = cloud
        .api(&officer)
        .patch::<_, serde_json::Value>(&path, &update)
        .await;
    assert_eq!(status, 403);
    let (_, rival, _) = cloud.other_msp("rival.example").await;
    let (status, _) = cloud
        .api(&rival)
        .patch::<_, serde_json::Value>(&path, &update)
        .await;
    assert_eq!(status, 404);

    // Bad input is refused whole, naming the field; nothing changes.
    for bad in [
        serde_json::json!({"contact_email": "not an address"}),
        serde_json::json!({"isps": [{"uplink": "a", "isp": "b"}, {"uplink": "a", "isp": "b"},
                                     {"uplink": "a", "isp": "b"}, {"uplink": "a", "isp": "b"},
                                     {"uplink": "a", "isp": "b"}]}),
        serde_json::json!({"isps": [{"uplink": "", "isp": "b"}]}),
        serde_json::json!({"address": "x".repeat(501)}),
        serde_json::json!({"name": "  "}),
        serde_json::json!({"colour": "blue"}),
    ] {
        let (status, _) = cloud
            .api(&admin)
            .patch::<_, serde_json::Value>(&path, &bad)
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let unchanged = cloud
        .api(&admin)
        .sites(practice)
        .await
        .expect("sites")
        .items;
    assert_eq!(
        unchanged
            .iter()
            .find(|s| s.id == site)
            .expect("site")
            .isps
            .len(),
        2
    );
    let (_, entries) = cloud
        .api(&admin)
        .get::<Page<stayopen_shared::api::AuditEntry>>("/api/v1/audit-log?action=site.update")
        .await;
    let entries = entries.expect("entries").items;
    assert_eq!(entries.len(), 1, "one audited change");
    assert_eq!(
        entries[0].after.as_ref().expect("after")["isps"][0]["isp"],
        "MetroFiber"
    );
    assert_eq!(entries[0].before.as_ref().expect("before")["address"], "");
}
