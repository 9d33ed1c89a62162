//! Ingest validates every device message: bad input is counted, logged and kept, and never stops
//! the good messages behind it. The broker admits only devices with a certificate of the device CA
//! and the credentials issued at enrolment.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use stayopen_cloud::domain::ingest;
use stayopen_cloud::infra::device_link::DeviceLink;
use stayopen_cloud::infra::hearing::Hearing;
use stayopen_cloud::infra::metrics::Metrics;
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_kept_while_valid_ones_behind_them_are_stored_once() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-INGEST-1",
            "02:00:00:00:00:01",
        )
        .await;
    let me = device.enrolled.appliance_id;
    let connection = cloud
        .connect_device(&device)
        .await
        .expect("device connects");
    let my_topic = DeviceTopic::new(me, Channel::Telemetry).to_string();
    let stranger = ApplianceId(Uuid::new_v4());

    let mut wrong_schema: serde_json::Value =
        serde_json::from_slice(&telemetry(me).encode()).expect("json");
    wrong_schema["schema_version"] = 99.into();
    let bad: Vec<Vec<u8>> = vec![
        b"{definitely not json".to_vec(),
        serde_json::to_vec(&wrong_schema).expect("json"),
        // On its own topic, but the envelope speaks for another appliance.
        telemetry(stranger).encode(),
    ];
    for payload in bad {
        connection
            .client
            .publish(my_topic.clone(), QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    // The same valid message twice: stored once.
    let valid = MessageId(Uuid::new_v4());
    for _ in 0..2 {
        connection
            .client
            .publish(
                my_topic.clone(),
                QoS::AtLeastOnce,
                false,
                telemetry(me).message(valid).encode(),
            )
            .await
            .expect("publish");
    }

    eventually(
        Duration::from_secs(15),
        "every message to be processed",
        || async {
            (cloud
                .counter("stayopen_ingest_duplicate_total{reason=\"message_id\"}")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;
    for reason in ["malformed", "unsupported_schema", "appliance_mismatch"] {
        assert_eq!(
            cloud
                .counter(&format!(
                    "stayopen_ingest_rejected_total{{reason=\"{reason}\"}}"
                ))
                .await,
            1,
            "rejections for {reason}"
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
        .bind(me.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count");
    assert_eq!(stored, 1);
    let kept: Vec<String> = sqlx::query_scalar("SELECT reason FROM ingest_rejections ORDER BY id")
        .fetch_all(&cloud.owner_pool)
        .await
        .expect("rejections");
    assert_eq!(
        kept,
        vec!["malformed", "unsupported_schema", "appliance_mismatch"]
    );
    assert!(
        !connection.is_closed(),
        "bad payloads on its own topics do not cost a device its connection"
    );
    let ready = cloud
        .http
        .get(cloud.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "ingest survived bad input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_refuses_devices_without_valid_credentials() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-AUTH-1",
            "02:00:00:00:00:02",
        )
        .await;
    let mqtt = &device.enrolled.mqtt;
    let cert = &device.enrolled.client_cert_pem;
    assert!(
        cloud
            .mqtt_connect(
                cert,
                &device.key_pem,
                &mqtt.username,
                &mqtt.username,
                "wrong-password"
            )
            .await
            .is_err()
    );
    let stranger = Uuid::new_v4().to_string();
    assert!(
        cloud
            .mqtt_connect(cert, &device.key_pem, &stranger, &stranger, &mqtt.password)
            .await
            .is_err()
    );
    assert!(cloud.connect_device(&device).await.is_ok());
    assert_eq!(
        cloud
            .counter("stayopen_broker_auth_rejected_total{reason=\"bad_password\"}")
            .await,
        1
    );
    assert_eq!(
        cloud
            .counter("stayopen_broker_auth_rejected_total{reason=\"unknown_appliance\"}")
            .await,
        1
    );
}

/// What a batch of raw messages owes, as (appliance, message, stored?) for comparison.
fn owed_ids(owed: &[ingest::Owed]) -> Vec<(ApplianceId, MessageId, bool)> {
    owed.iter()
        .map(|o| match *o {
            ingest::Owed::Stored(a, m) => (a, m, true),
            ingest::Owed::Refused(a, m) => (a, m, false),
        })
        .collect()
}

/// The ingest under test, outside the broker: its acknowledgements go nowhere.
fn detached_ingest() -> (DeviceLink, Arc<Metrics>, Hearing) {
    let metrics = Arc::new(Metrics::default());
    let (link, mut published) = DeviceLink::detached(metrics.clone());
    tokio::spawn(async move { while published.recv().await.is_some() {} });
    (link, metrics, Hearing::new(Utc::now(), Duration::ZERO))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stores_each_message_once_refuses_strangers_and_revoked_ones_and_keeps_an_appliances_order()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let fleet = common::fleet::seed_and_list(&cloud.owner_pool, demo.tenant_id.0, 1, 3).await;
    let (a, b, revoked) = (fleet[0], fleet[1], fleet[2]);
    sqlx::query("UPDATE appliances SET revoked_at = now() WHERE id = $1")
        .bind(revoked.as_uuid())
        .execute(&cloud.owner_pool)
        .await
        .expect("revoke");
    // As if they had never reported.
    sqlx::query("UPDATE appliances SET last_telemetry = NULL, last_telemetry_at = NULL")
        .execute(&cloud.owner_pool)
        .await
        .expect("fresh appliances");
    let stranger = ApplianceId(Uuid::new_v4());
    let raw = |appliance: ApplianceId, channel: Channel, payload: Vec<u8>| {
        (
            DeviceTopic::new(appliance, channel)
                .to_string()
                .into_bytes(),
            payload,
        )
    };
    let now = Utc::now();
    let first = telemetry(a).sent_at(now - chrono::Duration::seconds(30));
    let first_id = MessageId(Uuid::new_v4());
    let failover = Envelope::new(
        MessageId(Uuid::new_v4()),
        a,
        now - chrono::Duration::seconds(20),
        stayopen_testkit::loadgen::switch_event(true),
    );
    let after = MessageId(Uuid::new_v4());
    let b_id = MessageId(Uuid::new_v4());
    let batch = vec![
        raw(
            a,
            Channel::Telemetry,
            first.clone().message(first_id).encode(),
        ),
        // The same message again in the same batch (a resend racing its acknowledgement).
        raw(a, Channel::Telemetry, first.message(first_id).encode()),
        raw(stranger, Channel::Telemetry, telemetry(stranger).encode()),
        raw(revoked, Channel::Telemetry, telemetry(revoked).encode()),
        raw(b, Channel::Telemetry, telemetry(b).message(b_id).encode()),
        raw(a, Channel::Events, failover.encode()),
        raw(
            a,
            Channel::Telemetry,
            telemetry(a)
                .message(after)
                .sent_at(now - chrono::Duration::seconds(10))
                .encode(),
        ),
    ];
    let (link, metrics, hearing) = detached_ingest();
    let owed = ingest::ingest_batch(&cloud.pool, &link, &metrics, &hearing, batch).await;
    assert_eq!(
        owed_ids(&owed),
        vec![
            (a, first_id, true),
            (a, first_id, true),
            (b, b_id, true),
            (a, failover.message_id, true),
            (a, after, true),
        ],
        "stored messages (and the resend) are acknowledged; a stranger's and a revoked \
         appliance's are not"
    );
    let stored: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT appliance_id, count(*) FROM telemetry GROUP BY appliance_id ORDER BY 2 DESC",
    )
    .fetch_all(&cloud.owner_pool)
    .await
    .expect("telemetry");
    assert_eq!(stored, vec![(a.0, 2), (b.0, 1)]);
    let refused: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM ingest_rejections ORDER BY id")
            .fetch_all(&cloud.owner_pool)
            .await
            .expect("rejections");
    assert_eq!(refused, vec!["unknown_appliance", "revoked_appliance"]);
    // The event was stored between the telemetry around it, and raised its alert.
    let (last_at, failover_alerts): (chrono::DateTime<Utc>, i64) = sqlx::query_as(
        "SELECT a.last_telemetry_at,
                (SELECT count(*) FROM alerts WHERE appliance_id = a.id AND kind = 'failover')
         FROM appliances a WHERE a.id = $1",
    )
    .bind(a.as_uuid())
    .fetch_one(&cloud.owner_pool)
    .await
    .expect("appliance");
    assert_eq!(failover_alerts, 1);
    assert_eq!(
        last_at.timestamp_millis(),
        (now - chrono::Duration::seconds(10)).timestamp_millis(),
        "the appliance shows its newest sample"
    );
    assert_eq!(
        metrics.get(
            "stayopen_ingest_rejected_total",
            "reason",
            "unknown_appliance"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingests_storing_the_same_messages_at_once_store_each_once_without_deadlock() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let fleet = common::fleet::seed_and_list(&cloud.owner_pool, demo.tenant_id.0, 5, 50).await;
    // Two cloud instances handed the same messages (a redelivery after a takeover), one in the
    // order sent and one reversed: their batches lock the same appliances from both ends.
    let messages: Vec<(Vec<u8>, Vec<u8>)> = (0..1000)
        .map(|i| {
            let appliance = fleet[i % fleet.len()];
            (
                DeviceTopic::new(appliance, Channel::Telemetry)
                    .to_string()
                    .into_bytes(),
                telemetry(appliance).encode(),
            )
        })
        .collect();
    let mut reversed = messages.clone();
    reversed.reverse();
    let (link, metrics, _) = detached_ingest();
    let ingest = |batch: Vec<(Vec<u8>, Vec<u8>)>| {
        let (pool, link, metrics) = (cloud.pool.clone(), link.clone(), metrics.clone());
        let hearing = Hearing::new(Utc::now(), Duration::ZERO);
        async move {
            let mut owed = Vec::new();
            for chunk in batch.chunks(ingest::MAX_BATCH) {
                owed.extend(
                    ingest::ingest_batch(&pool, &link, &metrics, &hearing, chunk.to_vec()).await,
                );
            }
            owed
        }
    };
    let (one, other) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(ingest(messages), ingest(reversed))
    })
    .await
    .expect("neither waits for the other for good");
    assert_eq!(
        (one.len(), other.len()),
        (1000, 1000),
        "all acknowledged by both"
    );
    assert!(
        one.iter()
            .chain(&other)
            .all(|o| matches!(o, ingest::Owed::Stored(..)))
    );
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM telemetry")
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("count");
    assert_eq!((rows, distinct), (1000, 1000));
    assert_eq!(
        metrics.get("stayopen_ingest_accepted_total", "channel", "telemetry"),
        1000,
        "each stored as new by exactly one of them"
    );
}

/// Deletes `appliance` through the application role as `tenant`; the rows deleted.
async fn delete_as(
    cloud: &common::TestCloud,
    tenant: stayopen_shared::TenantId,
    appliance: ApplianceId,
) -> u64 {
    let mut tx = stayopen_cloud::infra::db::tenant_tx(&cloud.pool, tenant)
        .await
        .expect("tenant transaction");
    let deleted = sqlx::query("DELETE FROM appliances WHERE id = $1")
        .bind(appliance.as_uuid())
        .execute(&mut *tx)
        .await
        .expect("delete")
        .rows_affected();
    tx.commit().await.expect("commit");
    deleted
}

/// Telemetry rows per appliance, counted across tenants.
async fn telemetry_rows(cloud: &common::TestCloud, appliance: ApplianceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count telemetry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_appliance_deletes_its_telemetry_and_another_tenant_cannot_delete_it() {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let fleet = common::fleet::seed_and_list(&cloud.owner_pool, demo.tenant_id.0, 1, 2).await;
    let (gone, kept) = (fleet[0], fleet[1]);
    let batch: Vec<(Vec<u8>, Vec<u8>)> = [gone, gone, kept]
        .into_iter()
        .map(|appliance| {
            (
                DeviceTopic::new(appliance, Channel::Telemetry)
                    .to_string()
                    .into_bytes(),
                telemetry(appliance).encode(),
            )
        })
        .collect();
    let (link, metrics, hearing) = detached_ingest();
    ingest::ingest_batch(&cloud.pool, &link, &metrics, &hearing, batch).await;
    assert_eq!(
        (
            telemetry_rows(&cloud, gone).await,
            telemetry_rows(&cloud, kept).await
        ),
        (2, 1)
    );

    // Another tenant, through the application role, names the appliance: row-level security
    // hides it, nothing is deleted, and its telemetry stays.
    let (other_tenant, _, _) = cloud.other_msp("other.example").await;
    assert_eq!(delete_as(&cloud, other_tenant, gone).await, 0);
    assert_eq!(telemetry_rows(&cloud, gone).await, 2);

    // Its own tenant deletes it: its telemetry goes with it, the other appliance's stays.
    assert_eq!(delete_as(&cloud, demo.tenant_id, gone).await, 1);
    assert_eq!(
        (
            telemetry_rows(&cloud, gone).await,
            telemetry_rows(&cloud, kept).await
        ),
        (0, 1)
    );

    // Ingest remembers which tenant the deleted appliance was in; a message from it is still
    // refused, as an unknown appliance, and stores nothing.
    let late = vec![(
        DeviceTopic::new(gone, Channel::Telemetry)
            .to_string()
            .into_bytes(),
        telemetry(gone).encode(),
    )];
    let owed = ingest::ingest_batch(&cloud.pool, &link, &metrics, &hearing, late).await;
    assert!(
        owed.is_empty(),
        "nothing stored, nothing to acknowledge: {owed:?}"
    );
    assert_eq!(telemetry_rows(&cloud, gone).await, 0);
    assert_eq!(
        metrics.get(
            "stayopen_ingest_rejected_total",
            "reason",
            "unknown_appliance"
        ),
        1
    );
}
