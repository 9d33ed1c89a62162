//! Policies and commands end to end with a real agent: layered policy with provenance, desired
//! versus reported configuration, commands delivered, acknowledged, redelivered after an outage of
//! the appliance, and expired.

mod common;

use std::time::Duration;

use common::{
    TestCloud, appliance_config, enrolment_token, eventually, online_appliance, spawn_cloud,
};
use stayopen_appliance::agent::{self, AgentOptions, Exit};
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{CommandView, CreateCommand};
use stayopen_shared::commands::{CommandSpec, CommandStatus};
use stayopen_shared::events::EventKind;
use stayopen_shared::policy::PolicyScope;
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct RunningAgent {
    stop: watch::Sender<bool>,
    run: JoinHandle<Result<Exit, agent::AgentError>>,
}

fn start_agent(cloud: &TestCloud, token: &str, state: &std::path::Path) -> RunningAgent {
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(&cloud.base_url, token, state, None),
            events_file: None,
            seed: 1,
        },
        stopped,
    ));
    RunningAgent { stop, run }
}

impl RunningAgent {
    async fn stop(self) -> Exit {
        self.stop.send(true).expect("stop");
        self.run.await.expect("join").expect("agent ran cleanly")
    }
}

async fn command(
    cloud: &TestCloud,
    admin: &str,
    appliance: ApplianceId,
    spec: CommandSpec,
    expires: Option<u32>,
) -> CommandView {
    let view = cloud
        .api(admin)
        .create_command(
            appliance,
            &CreateCommand {
                spec,
                expires_in_secs: expires,
            },
        )
        .await;
    view.expect("command")
}

async fn finished(cloud: &TestCloud, admin: &str, id: uuid::Uuid, within: Duration) -> CommandView {
    eventually(within, "the command to finish", || async {
        let view = cloud.api(admin).command(id).await.ok();
        view.filter(|v| v.status.is_final())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_policy_reaches_the_appliance_which_reports_running_it() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let practice = demo.practices[0].id;
    let token = enrolment_token(&cloud, &admin, practice).await;
    let state = tempfile::tempdir().expect("state");
    let agent = start_agent(&cloud, &token, state.path());
    let appliance = online_appliance(&cloud, &admin).await;

    let api = cloud.api(&admin);
    let layers = [
        (
            "the MSP's layer",
            api.set_policy(
                &serde_json::json!({"telemetry_interval_secs": 2, "failback_clean_period_secs": 60}),
            )
            .await,
        ),
        (
            "the practice's layer",
            api.set_practice_policy(
                practice,
                &serde_json::json!({"failback_clean_period_secs": 45}),
            )
            .await,
        ),
        (
            "the appliance's layer",
            api.set_appliance_policy(appliance, &serde_json::json!({"detection_quorum": 2}))
                .await,
        ),
    ];
    for (layer_name, layer) in layers {
        let layer = layer.unwrap_or_else(|refused| panic!("{layer_name}: {refused:?}"));
        assert_eq!(layer.revision, 1);
    }
    let refused = api
        .set_policy(&serde_json::json!({"detection_quorum": 99}))
        .await
        .expect_err("an unsafe value is refused");
    assert_eq!(refused.status, 400, "an unsafe value is refused");

    let config = eventually(
        Duration::from_secs(20),
        "the appliance to run the desired policy",
        || async {
            let config = api.appliance_configuration(appliance).await.ok();
            config.filter(|c| !c.drift && c.desired_version >= 2)
        },
    )
    .await;
    let effective = &config.effective;
    assert_eq!(effective.policy.telemetry_interval_secs, 2);
    assert_eq!(effective.policy.failback_clean_period_secs, 45);
    assert_eq!(effective.policy.detection_quorum, 2);
    assert_eq!(
        effective.sources["telemetry_interval_secs"],
        PolicyScope::Msp
    );
    assert_eq!(
        effective.sources["failback_clean_period_secs"],
        PolicyScope::Practice
    );
    assert_eq!(
        effective.sources["detection_quorum"],
        PolicyScope::Appliance
    );
    assert_eq!(effective.sources["recovery_ms"], PolicyScope::Default);
    assert_eq!(config.reported_version, Some(config.desired_version));

    let events = api.appliance_events(appliance, "limit=100").await;
    assert!(
        events
            .expect("events")
            .items
            .iter()
            .any(|e| e.event.kind == EventKind::PolicyApplied),
        "the appliance reports applying it"
    );
    assert!(
        state.path().join("policy.json").exists(),
        "the applied policy is kept for restarts"
    );

    // Changed while the appliance is away: it gets the new version when it comes back.
    assert_eq!(agent.stop().await, Exit::Stopped);
    api.set_appliance_policy(appliance, &serde_json::json!({"detection_quorum": 3}))
        .await
        .expect("the appliance's layer");
    let agent = start_agent(&cloud, &token, state.path());
    eventually(
        Duration::from_secs(20),
        "the new version after reconnecting",
        || async {
            let config = api.appliance_configuration(appliance).await.ok();
            config.filter(|c| !c.drift && c.effective.policy.detection_quorum == 3)
        },
    )
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_delivered_acknowledged_and_answered_even_after_the_appliance_was_offline() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let token = enrolment_token(&cloud, &admin, demo.practices[0].id).await;
    let state = tempfile::tempdir().expect("state");
    let agent = start_agent(&cloud, &token, state.path());
    let appliance = online_appliance(&cloud, &admin).await;

    let diagnostics = command(
        &cloud,
        &admin,
        appliance,
        CommandSpec::CollectDiagnostics,
        None,
    )
    .await;
    let done = finished(&cloud, &admin, diagnostics.id, Duration::from_secs(15)).await;
    assert_eq!(done.status, CommandStatus::Succeeded);
    assert!(done.acknowledged_at.is_some());
    let data = done.result.expect("diagnostics data");
    assert_eq!(data["status"]["active"], "fiber", "{data}");

    let drill = command(
        &cloud,
        &admin,
        appliance,
        CommandSpec::StartDrill { duration_secs: 30 },
        None,
    )
    .await;
    let done = finished(&cloud, &admin, drill.id, Duration::from_secs(15)).await;
    assert_eq!(done.status, CommandStatus::Succeeded, "{:?}", done.detail);
    let fail_back = command(&cloud, &admin, appliance, CommandSpec::FailBackNow, None).await;
    let done = finished(&cloud, &admin, fail_back.id, Duration::from_secs(15)).await;
    assert_eq!(
        done.status,
        CommandStatus::Succeeded,
        "the drill ends and fibre carries traffic again: {:?}",
        done.detail
    );

    // Offline: the command waits in the queue and is delivered when the appliance is back.
    agent.stop().await;
    eventually(Duration::from_secs(15), "the appliance offline", || async {
        cloud
            .api(&admin)
            .fleet()
            .await
            .ok()?
            .practices
            .iter()
            .flat_map(|p| &p.appliances)
            .all(|a| !a.online)
            .then_some(())
    })
    .await;
    let queued = command(
        &cloud,
        &admin,
        appliance,
        CommandSpec::CollectDiagnostics,
        None,
    )
    .await;
    let doomed = command(
        &cloud,
        &admin,
        appliance,
        CommandSpec::CollectDiagnostics,
        Some(10),
    )
    .await;
    // The command queue has run for the ten seconds the doomed command had: it expired, and the
    // other one, with no deadline, is still waiting for the appliance.
    let expired = finished(&cloud, &admin, doomed.id, Duration::from_secs(20)).await;
    assert_eq!(expired.status, CommandStatus::Expired);
    let still = cloud.api(&admin).command(queued.id).await;
    assert_eq!(still.expect("command").status, CommandStatus::Queued);

    let agent = start_agent(&cloud, &token, state.path());
    let done = finished(&cloud, &admin, queued.id, Duration::from_secs(20)).await;
    assert_eq!(done.status, CommandStatus::Succeeded);

    // A restart request ends the agent run with the code its supervisor restarts it on.
    let reboot = command(&cloud, &admin, appliance, CommandSpec::RebootAgent, None).await;
    let exit = tokio::time::timeout(Duration::from_secs(15), agent.run)
        .await
        .expect("the agent exits")
        .expect("join")
        .expect("clean exit");
    assert_eq!(exit, Exit::RestartRequested);
    let done = finished(&cloud, &admin, reboot.id, Duration::from_secs(10)).await;
    assert_eq!(done.status, CommandStatus::Succeeded);

    let log = cloud.api(&admin).audit_log("action=command.create").await;
    assert_eq!(
        log.expect("audit").items.len(),
        6,
        "every command is audited"
    );
}
