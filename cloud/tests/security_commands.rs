//! A drill keeps a practice on its backup uplink, so its length is bounded (10 s to an hour) on
//! both sides: the API refuses an unbounded drill with a 400, and an appliance refuses one even if
//! the cloud's database was made to send it (a compromised or buggy cloud).

mod common;

use std::time::Duration;

use common::{
    TestCloud, appliance_config, enrolment_token, eventually, online_appliance, spawn_cloud,
};
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_appliance::control::{self, Request, Response};
use stayopen_shared::api::{ApiError, CommandView, CreateCommand};
use stayopen_shared::commands::{CommandSpec, CommandStatus};
use stayopen_shared::{ApplianceId, PracticeId};
use tokio::sync::watch;
use uuid::Uuid;

struct Enrolled {
    admin: String,
    practice: PracticeId,
    appliance: ApplianceId,
    state: tempfile::TempDir,
    stop: watch::Sender<bool>,
    run: tokio::task::JoinHandle<Result<agent::Exit, agent::AgentError>>,
}

/// A real agent enrolled in the demo's first practice and online.
async fn enrolled(cloud: &TestCloud) -> Enrolled {
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let token = enrolment_token(cloud, &admin, practice).await;
    let state = tempfile::tempdir().expect("state");
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(&cloud.base_url, &token, state.path(), None),
            events_file: None,
            seed: 1,
        },
        stopped,
    ));
    let appliance = online_appliance(cloud, &admin).await;
    Enrolled {
        admin,
        practice,
        appliance,
        state,
        stop,
        run,
    }
}

impl Enrolled {
    async fn stop(self) {
        self.stop.send(true).expect("stop");
        self.run.await.expect("join").expect("agent ran cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_shorter_than_ten_seconds_or_longer_than_an_hour_is_refused_by_the_api_with_a_400()
{
    let cloud = spawn_cloud().await;
    let box_ = enrolled(&cloud).await;
    let appliance = box_.appliance;
    let api = cloud.api(&box_.admin);
    for duration_secs in [0, 9, 3601, 86_400, u32::MAX] {
        let refused = api
            .create_command(
                appliance,
                &CreateCommand {
                    spec: CommandSpec::StartDrill { duration_secs },
                    expires_in_secs: None,
                },
            )
            .await
            .expect_err("an unbounded drill is refused");
        assert_eq!(refused.status, 400, "{duration_secs}: {refused:?}");
        let message = refused.error().expect("an error body").error.message;
        assert!(
            message.contains("between 10 and 3600"),
            "{duration_secs}: {message}"
        );
        // The practice-wide drill refuses it too, before looking for online appliances.
        let (status, body): (u16, Option<ApiError>) = api
            .post(
                &format!("/api/v1/practices/{}/drills", box_.practice),
                &serde_json::json!({ "duration_secs": duration_secs }),
            )
            .await;
        assert_eq!(status, 400, "{duration_secs}: {body:?}");
        assert!(
            body.is_some_and(|b| b.message().contains("between 10 and 3600")),
            "{duration_secs}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count");
    assert_eq!(stored, 0, "nothing refused was queued");
    let metrics = cloud.metrics().await;
    for reason in ["invalid_command", "invalid_drill"] {
        assert_eq!(
            common::counter_in(
                &metrics,
                &format!("stayopen_api_rejected_total{{reason=\"{reason}\"}}")
            ),
            5,
            "every refusal is counted:\n{metrics}"
        );
    }
    box_.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_refuses_a_day_long_drill_that_a_compromised_cloud_sends_and_says_why() {
    let cloud = spawn_cloud().await;
    let box_ = enrolled(&cloud).await;
    let (admin, appliance) = (box_.admin.clone(), box_.appliance);

    // The API would refuse it: the row is written as a compromised cloud would, past the API.
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, appliance_id, kind, spec, created_by, expires_at)
         SELECT $1, tenant_id, id, 'start_drill', $2, 'attacker', now() + interval '5 minutes'
         FROM appliances WHERE id = $3",
    )
    .bind(id)
    .bind(serde_json::json!({"kind": "start_drill", "duration_secs": 86_400}))
    .bind(appliance.as_uuid())
    .execute(&cloud.owner_pool)
    .await
    .expect("the hostile command");
    let done: CommandView = eventually(
        Duration::from_secs(20),
        "the appliance's answer",
        || async {
            let view = cloud.api(&admin).command(id).await.ok();
            view.filter(|v| v.status.is_final())
        },
    )
    .await;
    assert_eq!(done.status, CommandStatus::Failed, "{done:?}");
    let detail = done.detail.unwrap_or_default();
    assert!(
        detail.contains("between 10 and 3600"),
        "the refusal names the bound: {detail}"
    );
    let status = control::request(box_.state.path(), &Request::Status)
        .await
        .expect("status");
    let Response::Status(status) = status else {
        panic!("not a status: {status:?}");
    };
    assert!(!status.drill_running, "no drill started");
    assert_eq!(
        status.active.as_deref(),
        Some("fiber"),
        "traffic stayed put"
    );

    box_.stop().await;
}
