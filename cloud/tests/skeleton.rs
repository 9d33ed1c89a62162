//! The walking skeleton end to end: an appliance enrols over HTTP, publishes over MQTT through the
//! embedded broker, ingest stores it in PostgreSQL, and the REST API returns it.

mod common;

use std::time::Duration;

use common::{appliance_config, eventually, spawn_cloud};
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_appliance::config::{Outage, OutageKind};
use stayopen_shared::api::CreateEnrollmentToken;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_appliance_publishes_telemetry_that_the_api_returns_and_it_never_enrols_twice()
{
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    // The cloud's policy decides the telemetry cadence once the appliance hears it.
    admin
        .set_policy(&serde_json::json!({"telemetry_interval_secs": 1}))
        .await
        .expect("policy set");
    let practice = &demo.practices[0];

    let token = admin
        .create_enrollment_token(
            practice.id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 1,
                site_id: None,
            },
        )
        .await
        .expect("token created")
        .token;

    let state = tempfile::tempdir().expect("state dir");
    let (stop, stopped) = watch::channel(false);
    // The fibre drops 2 s after start for 3 s, so the telemetry shows a failover to LTE and back is
    // pending (the clean period is 30 s).
    let config = appliance_config(
        &cloud.base_url,
        &token,
        state.path(),
        Some(Outage {
            start_secs: 2,
            duration_secs: 3,
            kind: OutageKind::Blackhole,
        }),
    );
    let events_file = state.path().join("events.jsonl");
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: config.clone(),
            events_file: Some(events_file.clone()),
            seed: 1,
        },
        stopped,
    ));

    let appliance_id = eventually(
        Duration::from_secs(20),
        "the appliance to appear online in the fleet",
        || async {
            let fleet = admin.fleet().await.ok()?;
            let practice_view = fleet.practices.iter().find(|p| p.id == practice.id)?;
            let appliance = practice_view
                .appliances
                .iter()
                .find(|a| a.serial == "SO-TEST-0001")?;
            (appliance.online && appliance.active_uplink.is_some() && !appliance.uplinks.is_empty())
                .then_some(appliance.id)
        },
    )
    .await;

    let records = eventually(
        Duration::from_secs(20),
        "telemetry on the backup uplink",
        || async {
            let records = admin
                .appliance_telemetry(appliance_id, "limit=50")
                .await
                .ok()?
                .items;
            records
                .iter()
                .any(|r| r.telemetry.active_uplink.as_deref() == Some("lte"))
                .then_some(records)
        },
    )
    .await;
    let newest = &records[0].telemetry;
    assert_eq!(newest.uplinks.len(), 2);
    assert!(
        newest
            .uplinks
            .iter()
            .any(|u| u.name == "fiber" && u.priority == 0)
    );
    assert!(
        records.windows(2).all(|w| w[0].sent_at >= w[1].sent_at),
        "newest first"
    );

    // The decisions were written locally too, one JSON object per line.
    let events = std::fs::read_to_string(&events_file).expect("events file");
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"kind\":\"failover\"") && l.contains("\"to\":\"lte\"")),
        "{events}"
    );

    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent ran cleanly");
    assert!(
        state.path().join("identity.json").exists(),
        "enrolment result is kept"
    );

    // Restart with a token that would be refused: the stored identity is used instead of enrolling.
    let before = records.len();
    let (stop, stopped) = watch::channel(false);
    let restarted = appliance_config(&cloud.base_url, "soe_not-a-valid-token", state.path(), None);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: restarted,
            events_file: None,
            seed: 2,
        },
        stopped,
    ));
    eventually(
        Duration::from_secs(20),
        "telemetry after the restart",
        || async {
            let records = admin
                .appliance_telemetry(appliance_id, "limit=500")
                .await
                .ok()?;
            (records.items.len() > before + 1).then_some(())
        },
    )
    .await;
    stop.send(true).expect("stop");
    run.await
        .expect("join")
        .expect("restarted agent ran cleanly");

    let appliances: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count");
    assert_eq!(appliances, 1, "one physical box, one appliance");
    let uses: i32 = sqlx::query_scalar("SELECT uses FROM enrollment_tokens WHERE max_uses = 1")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("uses");
    assert_eq!(uses, 1);
}

/// The dataplane comes first and the cloud is joined beside it: a box whose enrolment is refused
/// (or whose cloud is away) still routes the practice's traffic, and its status says why the cloud
/// is missing. Refused, it tries again later instead of exiting. Once it enrols, what happened
/// before the link (here its start) reaches the cloud with the time it happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_routes_while_its_enrolment_is_refused_and_sends_what_came_before_the_link_once_enrolled()
 {
    use stayopen_appliance::control::{self, Request, Response};

    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let state = tempfile::tempdir().expect("state dir");

    // A token the cloud refuses: the agent routes, fails over, and says why it has no cloud.
    let refused = appliance_config(
        &cloud.base_url,
        "soe_not-a-valid-token",
        state.path(),
        Some(Outage {
            start_secs: 1,
            duration_secs: 60,
            kind: OutageKind::Blackhole,
        }),
    );
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: refused,
            events_file: None,
            seed: 3,
        },
        stopped,
    ));
    let status = eventually(
        Duration::from_secs(20),
        "the refused agent on its backup, saying why it has no cloud",
        || async {
            match control::request(state.path(), &Request::Status)
                .await
                .ok()?
            {
                Response::Status(status) => (status.active.as_deref() == Some("lte")
                    && status
                        .cloud
                        .as_deref()
                        .is_some_and(|c| c.starts_with("refused")))
                .then_some(status),
                _ => None,
            }
        },
    )
    .await;
    let why = status.cloud.expect("cloud state");
    assert!(why.contains("trying again every 5 min"), "{why}");
    assert!(
        !run.is_finished(),
        "a refused enrolment must not stop the agent"
    );
    stop.send(true).expect("stop");
    run.await
        .expect("join")
        .expect("the refused agent stops cleanly");
    let appliances: i64 = sqlx::query_scalar("SELECT count(*) FROM appliances")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count");
    assert_eq!(appliances, 0, "a refused token enrols nothing");

    // The MSP hands out a valid token: the agent's start, emitted before the link, arrives.
    let practice = &demo.practices[0];
    let token = admin
        .create_enrollment_token(
            practice.id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 1,
                site_id: None,
            },
        )
        .await
        .expect("token created")
        .token;
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(&cloud.base_url, &token, state.path(), None),
            events_file: None,
            seed: 4,
        },
        stopped,
    ));
    let (started_at, enrolled_at) = eventually(
        Duration::from_secs(20),
        "the agent's start event in the cloud",
        || async {
            sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>(
                "SELECT e.sent_at, a.enrolled_at FROM appliance_events e \
                 JOIN appliances a ON a.id = e.appliance_id WHERE e.kind = 'agent_started'",
            )
            .fetch_optional(&cloud.owner_pool)
            .await
            .ok()
            .flatten()
        },
    )
    .await;
    assert!(
        started_at < enrolled_at,
        "the start ({started_at}) was emitted before the enrolment ({enrolled_at}) and sent with its own time"
    );
    match control::request(state.path(), &Request::Status)
        .await
        .expect("status")
    {
        Response::Status(status) => assert_eq!(status.cloud.as_deref(), Some("linked")),
        other => panic!("{other:?}"),
    }
    stop.send(true).expect("stop");
    run.await
        .expect("join")
        .expect("the enrolled agent stops cleanly");
}
