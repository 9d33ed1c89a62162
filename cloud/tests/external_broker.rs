//! The external-broker mode against Debian's Mosquitto, configured with the ACL file shipped in
//! `infra/mosquitto/`: appliances enrol, publish, receive their policy and commands through it, and
//! the ACL confines each device to its own prefix as the embedded broker does.

mod common;

use std::time::Duration;

use common::{appliance_config, eventually, holds_for, spawn_cloud_with, telemetry};
use rumqttc::QoS;
use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_cloud::infra::config::ExternalBrokerConfig;
use stayopen_shared::api::{CreateCommand, CreateEnrollmentToken};
use stayopen_shared::commands::{CommandSpec, CommandStatus};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, MessageId};
use tokio::sync::watch;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_runs_on_mosquitto_with_the_shipped_acl() {
    let port = common::mosquitto::free_port();
    let cloud = spawn_cloud_with(|config| {
        config.broker.external = Some(ExternalBrokerConfig::at("127.0.0.1", port));
    })
    .await;
    let mosquitto = common::mosquitto::start(cloud.tls_dir.path(), port);
    eventually(
        Duration::from_secs(20),
        "the cloud connected to Mosquitto",
        || async {
            let ready = cloud.http.get(cloud.url("/readyz")).send().await.ok()?;
            (ready.status() == 200).then_some(())
        },
    )
    .await;

    let demo = cloud.seed_demo().await;
    let admin = cloud.login(&demo.email, &demo.password).await;
    let api = cloud.api(&admin);
    api.set_policy(&serde_json::json!({"telemetry_interval_secs": 1}))
        .await
        .expect("policy set");

    // A real agent end to end through Mosquitto.
    let state = tempfile::tempdir().expect("state");
    let (stop, stopped) = watch::channel(false);
    let run = tokio::spawn(agent::run(
        AgentOptions {
            config: appliance_config(
                &cloud.base_url,
                &demo.practices[0].enrollment_token,
                state.path(),
                None,
            ),
            events_file: None,
            seed: 5,
        },
        stopped,
    ));
    let appliance = eventually(
        Duration::from_secs(30),
        "the appliance online via Mosquitto",
        || async {
            api.fleet()
                .await
                .ok()?
                .practices
                .into_iter()
                .flat_map(|p| p.appliances)
                .find(|a| a.online)
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the policy applied via Mosquitto",
        || async {
            api.appliance_configuration(appliance.id)
                .await
                .ok()
                .filter(|c| !c.drift && c.effective.policy.telemetry_interval_secs == 1)
        },
    )
    .await;
    let id = api
        .create_command(
            appliance.id,
            &CreateCommand {
                spec: CommandSpec::CollectDiagnostics,
                expires_in_secs: None,
            },
        )
        .await
        .expect("command")
        .id;
    let done = eventually(
        Duration::from_secs(20),
        "the command answered via Mosquitto",
        || async { api.command(id).await.ok().filter(|v| v.status.is_final()) },
    )
    .await;
    assert_eq!(done.status, CommandStatus::Succeeded);
    stop.send(true).expect("stop");
    run.await.expect("join").expect("agent ran cleanly");

    // The ACL: a device can neither write as another nor read another's messages.
    let token = api
        .create_enrollment_token(
            demo.practices[1].id,
            &CreateEnrollmentToken {
                expires_in_hours: 1,
                max_uses: 5,
                site_id: None,
            },
        )
        .await
        .expect("token")
        .token;
    let a = cloud
        .enrol_device(&token, "SO-MQ-A", "02:00:00:00:0d:01")
        .await;
    let b = cloud
        .enrol_device(&token, "SO-MQ-B", "02:00:00:00:0d:02")
        .await;
    let (a_id, b_id) = (a.enrolled.appliance_id, b.enrolled.appliance_id);
    let mut a_conn = cloud
        .connect_device(&a)
        .await
        .expect("A connects to Mosquitto");
    a_conn
        .client
        .subscribe("#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let b_conn = cloud
        .connect_device(&b)
        .await
        .expect("B connects to Mosquitto");
    a_conn
        .client
        .publish(
            DeviceTopic::new(b_id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            telemetry(b_id).encode(),
        )
        .await
        .expect("queued");
    b_conn
        .client
        .publish(
            DeviceTopic::new(b_id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            telemetry(b_id).encode(),
        )
        .await
        .expect("B publishes");
    let a_message = MessageId(Uuid::new_v4());
    a_conn
        .client
        .publish(
            DeviceTopic::new(a_id, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            telemetry(a_id).message(a_message).encode(),
        )
        .await
        .expect("A publishes its own");
    let count = |id: ApplianceId| {
        let pool = cloud.owner_pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
                .bind(id.as_uuid())
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    eventually(
        Duration::from_secs(15),
        "both devices' own telemetry stored",
        || async { (count(a_id).await == 1 && count(b_id).await >= 1).then_some(()) },
    )
    .await;
    holds_for(
        Duration::from_secs(1),
        "A's message as B dropped by the ACL",
        || async { count(b_id).await == 1 },
    )
    .await;
    // The cloud acknowledges A's stored message through Mosquitto, on A's own acks topic.
    let acks_topic = DeviceTopic::new(a_id, Channel::Acks).to_string();
    let mut acknowledged = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !acknowledged && tokio::time::Instant::now() < deadline {
        let Ok(Some((topic, payload))) =
            tokio::time::timeout(Duration::from_millis(500), a_conn.received.recv()).await
        else {
            continue;
        };
        assert!(
            topic.starts_with(&DeviceTopic::prefix(a_id)),
            "A received {topic}"
        );
        if topic == acks_topic {
            let ack = stayopen_shared::Envelope::<stayopen_shared::delivery::Ack>::decode(&payload)
                .expect("an ack");
            acknowledged = ack.body.stored.contains(&a_message);
        }
    }
    assert!(acknowledged, "A's telemetry acknowledged through Mosquitto");
    while let Ok((topic, _)) = a_conn.received.try_recv() {
        assert!(
            topic.starts_with(&DeviceTopic::prefix(a_id)),
            "A received {topic}"
        );
    }

    // Revocation: the live session is closed, and once the broker reloads the CRL the certificate
    // is refused.
    api.revoke_appliance(a_id).await.expect("revoked");
    eventually(Duration::from_secs(10), "A's session closed", || async {
        a_conn.is_closed().then_some(())
    })
    .await;
    mosquitto.reload();
    eventually(
        Duration::from_secs(10),
        "A's certificate refused",
        || async { cloud.connect_device(&a).await.is_err().then_some(()) },
    )
    .await;
    assert!(cloud.connect_device(&b).await.is_ok(), "B is unaffected");
}
