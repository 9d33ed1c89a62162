//! The broker against a silent client and a hostile device (issue 15). Each test performs the
//! attack on a real cloud (embedded broker over TLS, PostgreSQL) and passes only when it fails:
//! clients that hold connections without finishing a TLS handshake do not keep a device out, and
//! a device that publishes to thousands of topics, subscribes outside its channels or floods is
//! cut off and counted, while another device's messages all arrive.

mod common;

use std::time::{Duration, Instant};

use common::{Device, DeviceConnection, TestCloud, eventually, spawn_cloud, telemetry};
use rumqttc::QoS;
use stayopen_cloud::infra::broker::HANDSHAKE_DEADLINE;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::{ApplianceId, Channel, DeviceTopic, Envelope, MessageId};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uuid::Uuid;

/// The start of a TLS ClientHello: a handshake record announcing 512 bytes, the ClientHello
/// header and its version; the rest (random, ciphers, extensions) never comes in full.
const PARTIAL_CLIENT_HELLO: [u8; 11] = [
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// True while the server has not closed `stream` (nothing to read yet, no end of stream).
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn stored_telemetry(cloud: &TestCloud, appliance: ApplianceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM telemetry WHERE appliance_id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count")
}

async fn stored_events(cloud: &TestCloud, appliance: ApplianceId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM appliance_events WHERE appliance_id = $1")
        .bind(appliance.as_uuid())
        .fetch_one(&cloud.owner_pool)
        .await
        .expect("count")
}

async fn closed_soon(connection: &DeviceConnection) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if connection.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connects_and_publishes_at_once_while_silent_and_slow_loris_clients_hold_connections_and_those_are_dropped_at_the_deadline()
 {
    let cloud = spawn_cloud().await;
    let demo = cloud.seed_demo().await;
    let device = cloud
        .enrol_device(
            &demo.practices[0].enrollment_token,
            "SO-DOS-1",
            "02:00:00:00:d0:01",
        )
        .await;
    let me = device.enrolled.appliance_id;

    // Eight clients that connect and send nothing, queued at the listener ahead of the device.
    let opened = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..8 {
        attackers.push(TcpStream::connect(cloud.broker).await.expect("tcp"));
    }
    // Two slow-loris clients: half a ClientHello, then one more byte every 100 ms, never the end.
    let mut lorises = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(cloud.broker).await.expect("tcp");
        stream
            .write_all(&PARTIAL_CLIENT_HELLO)
            .await
            .expect("partial hello");
        lorises.push(stream);
    }
    let (loris_stop, mut loris_stopped) = tokio::sync::watch::channel(false);
    let trickle = tokio::spawn(async move {
        let mut open = lorises;
        let mut sent = 0usize;
        loop {
            tokio::select! {
                _ = loris_stopped.changed() => return (open, sent),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            for stream in &mut open {
                if stream.write_all(&[0x42]).await.is_ok() {
                    sent += 1;
                }
            }
        }
    });

    // The device connects in the normal time, although every client ahead of it is silent.
    let started = Instant::now();
    let connection = cloud
        .connect_device(&device)
        .await
        .expect("the device connects while silent clients hold connections");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the device's connection took {took:?}: the silent clients held it up"
    );
    assert!(
        attackers.iter().all(still_open),
        "the silent clients were still holding their connections when the device got in"
    );
    connection
        .client
        .publish(
            DeviceTopic::new(me, Channel::Telemetry).to_string(),
            QoS::AtLeastOnce,
            false,
            telemetry(me).encode(),
        )
        .await
        .expect("publish");
    eventually(
        Duration::from_secs(10),
        "the device's telemetry stored",
        || async { (stored_telemetry(&cloud, me).await == 1).then_some(()) },
    )
    .await;

    // The silent clients and the slow-loris ones are dropped once the deadline has passed.
    let limit = HANDSHAKE_DEADLINE + Duration::from_secs(5);
    eventually(limit, "the silent clients dropped", || async {
        attackers.iter().all(|s| !still_open(s)).then_some(())
    })
    .await;
    let dropped_after = opened.elapsed();
    assert!(
        dropped_after + Duration::from_millis(500) >= HANDSHAKE_DEADLINE,
        "dropped after {dropped_after:?}, before the deadline"
    );
    let _ = loris_stop.send(true);
    let (lorises, trickled) = trickle.await.expect("trickle");
    assert!(trickled > 0, "the slow-loris clients kept sending");
    eventually(
        Duration::from_secs(5),
        "the slow-loris clients dropped",
        || async { lorises.iter().all(|s| !still_open(s)).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the dropped clients counted",
        || async {
            (cloud
                .counter("stayopen_broker_refused_total{reason=\"handshake_timeout\"}")
                .await
                == 10)
                .then_some(())
        },
    )
    .await;
    assert!(
        !connection.is_closed(),
        "the device keeps its connection throughout"
    );
}

fn event(appliance: ApplianceId, i: usize) -> Vec<u8> {
    Envelope::new(
        MessageId(Uuid::new_v4()),
        appliance,
        chrono::Utc::now(),
        ApplianceEvent {
            kind: EventKind::UplinkUp,
            uplink: Some("fiber".into()),
            from: None,
            to: None,
            reason: format!("well-behaved {i}"),
            drill: None,
        },
    )
    .encode()
}

async fn two_devices(cloud: &TestCloud) -> (Device, Device) {
    let demo = cloud.seed_demo().await;
    let token = &demo.practices[0].enrollment_token;
    let hostile = cloud
        .enrol_device(token, "SO-HOSTILE-1", "02:00:00:00:e0:01")
        .await;
    let good = cloud
        .enrol_device(token, "SO-GOOD-1", "02:00:00:00:e0:02")
        .await;
    (hostile, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishing_to_ten_thousand_topics_and_flooding_is_cut_off_and_counted_while_another_devices_telemetry_and_events_all_arrive()
 {
    const FLOOD: usize = 3_000;
    const GOOD_TELEMETRY: usize = 30;
    const GOOD_EVENTS: usize = 10;
    let cloud = spawn_cloud().await;
    let (hostile, good) = two_devices(&cloud).await;
    let (h_id, g_id) = (hostile.enrolled.appliance_id, good.enrolled.appliance_id);
    let good_connection = cloud.connect_device(&good).await.expect("good connects");

    // 10,000 distinct topics under its own prefix, as fast as the client sends them.
    let topics = cloud.connect_device(&hostile).await.expect("hostile");
    let mut queued = 0;
    for i in 0..10_000 {
        let topic = format!("{}x{i}", DeviceTopic::prefix(h_id));
        if topics
            .client
            .publish(topic, QoS::AtMostOnce, false, b"x".to_vec())
            .await
            .is_err()
        {
            break;
        }
        queued += 1;
    }
    assert!(queued > 0);
    assert!(
        closed_soon(&topics).await,
        "the broker closes a device publishing outside its topics"
    );

    // Subscriptions outside its own cloud → device channels, each a log the router would keep.
    let filters = cloud.connect_device(&hostile).await.expect("hostile");
    for i in 0..100 {
        if filters
            .client
            .subscribe(
                format!("{}s{i}", DeviceTopic::prefix(h_id)),
                QoS::AtMostOnce,
            )
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(
        closed_soon(&filters).await,
        "the broker closes a device subscribing outside its channels"
    );

    // A flood on its own telemetry channel, while the well-behaved device goes about its day.
    let flood_connection = cloud.connect_device(&hostile).await.expect("hostile");
    let flooder = flood_connection.client.clone();
    let flood = tokio::spawn(async move {
        let topic = DeviceTopic::new(h_id, Channel::Telemetry).to_string();
        for _ in 0..FLOOD {
            if flooder
                .publish(
                    topic.clone(),
                    QoS::AtMostOnce,
                    false,
                    telemetry(h_id).encode(),
                )
                .await
                .is_err()
            {
                return;
            }
        }
    });
    eventually(Duration::from_secs(20), "the flood under way", || async {
        (stored_telemetry(&cloud, h_id).await > 100).then_some(())
    })
    .await;
    let good_telemetry = DeviceTopic::new(g_id, Channel::Telemetry).to_string();
    let good_events = DeviceTopic::new(g_id, Channel::Events).to_string();
    for i in 0..GOOD_TELEMETRY {
        good_connection
            .client
            .publish(
                good_telemetry.clone(),
                QoS::AtLeastOnce,
                false,
                telemetry(g_id).fibre_and_lte("fiber").encode(),
            )
            .await
            .expect("good telemetry");
        if i < GOOD_EVENTS {
            good_connection
                .client
                .publish(good_events.clone(), QoS::AtLeastOnce, false, event(g_id, i))
                .await
                .expect("good event");
        }
    }
    eventually(
        Duration::from_secs(60),
        "every message of the well-behaved device stored",
        || async {
            (stored_telemetry(&cloud, g_id).await == GOOD_TELEMETRY as i64
                && stored_events(&cloud, g_id).await == GOOD_EVENTS as i64)
                .then_some(())
        },
    )
    .await;
    let hostile_stored_by_then = stored_telemetry(&cloud, h_id).await;

    // Exactly what it sent, nothing lost and nothing doubled, with the flood still going.
    assert_eq!(stored_telemetry(&cloud, g_id).await, GOOD_TELEMETRY as i64);
    assert_eq!(stored_events(&cloud, g_id).await, GOOD_EVENTS as i64);
    assert!(
        !good_connection.is_closed(),
        "the well-behaved device keeps its connection"
    );
    assert!(
        hostile_stored_by_then < FLOOD as i64,
        "the good device's messages did not wait for the whole flood ({hostile_stored_by_then} stored)"
    );
    flood.abort();

    let metrics = cloud.metrics().await;
    let count = |line: &str| common::counter_in(&metrics, line);
    assert!(count("stayopen_broker_refused_total{reason=\"topic_not_allowed\"}") >= 1);
    assert!(count("stayopen_broker_refused_total{reason=\"filter_not_allowed\"}") >= 1);
    assert!(
        count("stayopen_broker_rate_limited_total{reason=\"rate_limited\"}") > 0,
        "the flood was over the device's rate: {metrics}"
    );
    // The router holds a log per topic and filter: at most the product's channels of two devices.
    let published_topics = count("stayopen_broker_topics_admitted_total{kind=\"publish\"}");
    let subscribed_filters = count("stayopen_broker_topics_admitted_total{kind=\"subscribe\"}");
    assert!(
        published_topics <= 2 * 4,
        "{published_topics} topics reached the router"
    );
    assert!(
        subscribed_filters <= 2 * 3,
        "{subscribed_filters} filters reached the router"
    );
    println!(
        "hostile device: {queued} topic publishes queued, stored {hostile_stored_by_then} of its flood \
         while the good device's {GOOD_TELEMETRY} telemetry and {GOOD_EVENTS} events arrived; \
         rate-limited {}, shed {}",
        count("stayopen_broker_rate_limited_total{reason=\"rate_limited\"}"),
        count("stayopen_ingest_shed_total{reason=\"device_backlog\"}")
    );
}
