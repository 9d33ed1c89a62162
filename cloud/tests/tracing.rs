//! OpenTelemetry: one trace from an appliance's failover, through ingest and the alert, to the
//! webhook delivery — exported over OTLP/HTTP to an in-process receiver that decodes the protobuf
//! requests. The cloud runs as a real process configured only by the standard `OTEL_*` variables;
//! without them it exports nothing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::Utc;
use common::client::ApiClient;
use common::device::{self, DeviceConnection};
use common::eventually;
use common::process::CloudProcess;
use common::webhook::{Receiver, start_receiver};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use stayopen_cloud::domain::seed;
use stayopen_shared::alerts::{ChannelKind, CreateChannel};
use stayopen_shared::api::{EnrollRequest, EnrollResponse, HardwareIdentity};
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::{Channel, DeviceTopic, Envelope, MessageId};
use uuid::Uuid;

/// A span as the receiver decoded it; ids in lowercase hex.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The in-process OTLP/HTTP receiver: every request's path, and the spans of `/v1/traces`.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<String>>>,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// The `service.name` of each resource that sent spans.
    services: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("lock").clone()
    }

    fn services(&self) -> Vec<String> {
        self.services.lock().expect("lock").clone()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn collect(
    req: HttpRequest,
    body: web::Bytes,
    collector: web::Data<Collector>,
) -> HttpResponse {
    collector
        .requests
        .lock()
        .expect("lock")
        .push(req.path().to_owned());
    if req.path() == "/v1/traces" {
        let Ok(export) = ExportTraceServiceRequest::decode(body.as_ref()) else {
            return HttpResponse::BadRequest().finish();
        };
        let mut spans = collector.spans.lock().expect("lock");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref()))
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            collector.services.lock().expect("lock").push(service);
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => s.clone(),
                                Some(Value::IntValue(i)) => i.to_string(),
                                Some(Value::BoolValue(b)) => b.to_string(),
                                Some(other) => format!("{other:?}"),
                                None => String::new(),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    spans.push(ReceivedSpan {
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        attributes,
                    });
                }
            }
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

/// Starts the receiver on a free loopback port; returns its base URL (the OTLP endpoint).
fn start_collector(collector: &Collector) -> String {
    let data = web::Data::new(collector.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .default_service(web::to(collect))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    format!("http://{addr}")
}

/// The cloud with webhooks to loopback allowed and `otel` added to its environment.
async fn cloud_with(otel: &[(&str, &str)]) -> CloudProcess {
    let mut settings = vec![("STAYOPEN_ALERTS__ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")];
    settings.extend_from_slice(otel);
    CloudProcess::start(&settings).await
}

/// The demo tenant, its administrator, a webhook channel to `hook` and a route sending failover
/// alerts there; an enrolled device connected to the broker.
async fn practice_with_webhook(
    cloud: &CloudProcess,
    hook: &str,
) -> (ApiClient, EnrollResponse, DeviceConnection) {
    let demo = seed::seed_demo(&cloud.pool).await.expect("seed");
    let admin = cloud.api_as(&demo.email, &demo.password).await;
    let channel = admin
        .create_channel(&CreateChannel {
            name: "PSA".into(),
            kind: ChannelKind::Webhook,
            url: Some(hook.into()),
            recipients: vec![],
            user_ids: vec![],
        })
        .await
        .expect("channel");
    admin
        .create_routing_rule(
            &serde_json::from_value(serde_json::json!({
                "channel_id": channel.channel.id, "min_severity": "info", "kinds": ["failover"]
            }))
            .expect("rule"),
        )
        .await
        .expect("route");
    let (key_pem, csr_pem) =
        stayopen_appliance::identity::new_key_and_request().expect("key and request");
    let enrolled = admin
        .anonymous()
        .enroll(&EnrollRequest {
            token: demo.practices[0].enrollment_token.clone(),
            hardware: HardwareIdentity {
                serial: "SO-TRACE-0001".into(),
                mac: "02:53:4f:00:18:01".into(),
                model: "test".into(),
            },
            agent_version: "test".into(),
            csr_pem,
            wireguard_public_key: None,
        })
        .await
        .expect("enrol");
    let connection = device::connect(
        cloud.broker,
        &device::Credentials {
            ca_pem: &enrolled.ca_cert_pem,
            cert_pem: &enrolled.client_cert_pem,
            key_pem: &key_pem,
            client_id: &enrolled.mqtt.username,
            username: &enrolled.mqtt.username,
            password: &enrolled.mqtt.password,
        },
    )
    .await
    .expect("connect");
    (admin, enrolled, connection)
}

/// Publishes a failover event whose envelope carries `traceparent`; returns its message id.
async fn publish_failover(
    connection: &DeviceConnection,
    enrolled: &EnrollResponse,
    traceparent: &str,
) -> Uuid {
    let id = Uuid::new_v4();
    let payload = Envelope::new(
        MessageId(id),
        enrolled.appliance_id,
        Utc::now(),
        ApplianceEvent {
            kind: EventKind::Failover,
            uplink: None,
            from: Some("fiber".into()),
            to: Some("lte".into()),
            reason: "fiber down".into(),
            drill: None,
        },
    )
    .with_traceparent(Some(traceparent.to_owned()))
    .encode();
    connection
        .client
        .publish(
            DeviceTopic::new(enrolled.appliance_id, Channel::Events).to_string(),
            rumqttc::QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .expect("publish");
    id
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APPLIANCE_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_appliances_failover_through_ingest_and_the_alert_to_the_webhook() {
    let collector = Collector::default();
    let endpoint = start_collector(&collector);
    let hooks = Receiver::default();
    let hook = start_receiver(&hooks);
    let cloud = cloud_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_SERVICE_NAME", "stayopen-cloud-under-test"),
    ])
    .await;
    let (admin, enrolled, connection) = practice_with_webhook(&cloud, &hook).await;
    let traceparent = format!("00-{TRACE_ID}-{APPLIANCE_SPAN}-01");
    publish_failover(&connection, &enrolled, &traceparent).await;

    let delivered = hooks.opened(Duration::from_secs(30)).await;
    let in_trace = |name: &str| {
        let name = name.to_owned();
        let collector = collector.clone();
        move || {
            let name = name.clone();
            let collector = collector.clone();
            async move {
                collector
                    .spans()
                    .into_iter()
                    .find(|s| s.name == name && s.trace_id == TRACE_ID)
            }
        }
    };
    let ingest = eventually(
        Duration::from_secs(30),
        "ingest.event exported",
        in_trace("ingest.event"),
    )
    .await;
    let alert = eventually(
        Duration::from_secs(30),
        "alert.transition exported",
        in_trace("alert.transition"),
    )
    .await;
    let delivery = eventually(
        Duration::from_secs(30),
        "notification.delivery exported",
        in_trace("notification.delivery"),
    )
    .await;

    assert!(
        collector
            .services()
            .iter()
            .all(|s| s == "stayopen-cloud-under-test"),
        "OTEL_SERVICE_NAME names the service: {:?}",
        collector.services()
    );
    // The appliance's span is ingest's parent; the alert is inside the trace under ingest; the
    // delivery is the alert transition's child, and the receiver continues from the delivery.
    assert_eq!(ingest.parent_span_id, APPLIANCE_SPAN, "{ingest:?}");
    let trace: Vec<ReceivedSpan> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .collect();
    let mut ancestor = alert.parent_span_id.clone();
    let mut reached_ingest = false;
    while let Some(parent) = trace.iter().find(|s| s.span_id == ancestor) {
        if parent.span_id == ingest.span_id {
            reached_ingest = true;
            break;
        }
        ancestor = parent.parent_span_id.clone();
    }
    assert!(
        reached_ingest,
        "the alert descends from ingest.event: {alert:?} in {trace:#?}"
    );
    assert_eq!(alert.attribute("rule"), Some("Failover"), "{alert:?}");
    assert_eq!(alert.attribute("transition"), Some("Opened"), "{alert:?}");
    assert_eq!(delivery.parent_span_id, alert.span_id, "{delivery:?}");
    assert_eq!(
        delivery.attribute("outcome"),
        Some("delivered"),
        "{delivery:?}"
    );
    assert_eq!(
        delivered.traceparent,
        format!("00-{TRACE_ID}-{}-01", delivery.span_id),
        "the webhook request carries the delivery's trace context"
    );

    // An API call is a server span named by its route template, not the path with the id.
    let appliance = enrolled.appliance_id;
    let http = reqwest::Client::new();
    let answer = http
        .get(format!(
            "{}/api/v1/appliances/{appliance}/commands",
            cloud.base_url()
        ))
        .bearer_auth(admin.token().expect("token"))
        .send()
        .await
        .expect("request");
    assert!(answer.status().is_success(), "{}", answer.status());
    let request = eventually(
        Duration::from_secs(30),
        "the request's server span",
        || async {
            collector.spans().into_iter().find(|s| {
                s.kind == SpanKind::Server as i32
                    && s.name == "/api/v1/appliances/{appliance_id}/commands"
            })
        },
    )
    .await;
    assert_eq!(request.attribute("http.route"), Some(request.name.as_str()));
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    // A stream ticket travels in a query string: never exported.
    let refused = http
        .get(format!(
            "{}/api/v1/stream?ticket=not-for-traces",
            cloud.base_url()
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let stream = eventually(
        Duration::from_secs(30),
        "the stream request's span",
        || async {
            collector
                .spans()
                .into_iter()
                .find(|s| s.kind == SpanKind::Server as i32 && s.name == "/api/v1/stream")
        },
    )
    .await;
    assert_eq!(stream.attribute("http.response.status_code"), Some("401"));
    for span in collector.spans() {
        assert!(
            span.attribute("url.query").is_none()
                && !span
                    .attributes
                    .iter()
                    .any(|(_, v)| v.contains("not-for-traces")),
            "a query string was exported: {span:?}"
        );
    }
    // The same recording calls feed the Prometheus endpoint's latency histograms.
    let events = stayopen_shared::Channel::Events.as_str();
    assert_eq!(
        cloud
            .counter(&format!(
                "stayopen_ingest_duration_seconds_count{{channel=\"{events}\"}}"
            ))
            .await,
        1
    );
    assert_eq!(
        cloud
            .counter(
                "stayopen_notification_delivery_duration_seconds_count{channel_kind=\"webhook\",outcome=\"delivered\"}"
            )
            .await,
        1
    );
    assert_eq!(
        cloud
            .counter(
                "stayopen_http_request_duration_seconds_count{route=\"/api/v1/appliances/{appliance_id}/commands\",status=\"2xx\"}"
            )
            .await,
        1
    );
    // Metrics go to the same endpoint.
    eventually(Duration::from_secs(30), "metrics exported", || async {
        collector
            .requests()
            .iter()
            .any(|p| p == "/v1/metrics")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_variables_the_cloud_exports_nothing_and_sdk_disabled_overrides_an_endpoint() {
    let hooks = Receiver::default();
    let hook = start_receiver(&hooks);
    // No OTEL_* variables at all: no span gets a trace context, so none can be exported and the
    // webhook carries none.
    let cloud = cloud_with(&[]).await;
    let (_admin, enrolled, connection) = practice_with_webhook(&cloud, &hook).await;
    publish_failover(
        &connection,
        &enrolled,
        &format!("00-{TRACE_ID}-{APPLIANCE_SPAN}-01"),
    )
    .await;
    let delivered = hooks.opened(Duration::from_secs(30)).await;
    assert_eq!(
        delivered.traceparent, "",
        "no trace context when tracing is off"
    );
    assert!(!cloud.log().contains("exporting traces"), "{}", cloud.log());
    drop(connection);
    drop(cloud);

    // An endpoint pointing at a live collector, but OTEL_SDK_DISABLED=true: still nothing.
    let collector = Collector::default();
    let endpoint = start_collector(&collector);
    let hooks = Receiver::default();
    let hook = start_receiver(&hooks);
    let cloud = cloud_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .await;
    let (_admin, enrolled, connection) = practice_with_webhook(&cloud, &hook).await;
    publish_failover(
        &connection,
        &enrolled,
        &format!("00-{TRACE_ID}-{APPLIANCE_SPAN}-01"),
    )
    .await;
    let delivered = hooks.opened(Duration::from_secs(30)).await;
    assert_eq!(delivered.traceparent, "");
    // Bounded wait, polled: nothing reaches the collector for two seconds after the delivery
    // (twenty export intervals of the variables above, had export been on).
    for _ in 0..20 {
        assert!(
            collector.requests().is_empty(),
            "{:?}",
            collector.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_is_counted_and_the_event_is_still_stored_and_alerted() {
    let collector = Collector::default();
    let endpoint = start_collector(&collector);
    let hooks = Receiver::default();
    let hook = start_receiver(&hooks);
    let cloud = cloud_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let (_admin, enrolled, connection) = practice_with_webhook(&cloud, &hook).await;
    // Upper-case hex and an all-zero span id: not W3C syntax.
    let id = publish_failover(
        &connection,
        &enrolled,
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-0000000000000000-01",
    )
    .await;
    hooks.opened(Duration::from_secs(30)).await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM appliance_events WHERE message_id = $1")
            .bind(id)
            .fetch_one(&cloud.owner_pool)
            .await
            .expect("count");
    assert_eq!(stored, 1, "the event is stored");
    assert_eq!(
        cloud
            .counter("stayopen_ingest_corrected_total{reason=\"bad_traceparent\"}")
            .await,
        1
    );
    // The event's span does not continue the bogus context: it is in the batch's own trace.
    let (ingest, batch) = eventually(Duration::from_secs(30), "ingest spans exported", || async {
        let spans = collector.spans();
        let ingest = spans.iter().find(|s| s.name == "ingest.event")?.clone();
        let batch = spans
            .iter()
            .find(|s| s.name == "ingest.batch" && s.span_id == ingest.parent_span_id)?
            .clone();
        Some((ingest, batch))
    })
    .await;
    assert_eq!(ingest.trace_id, batch.trace_id);
    assert_eq!(
        collector.services()[0],
        "stayopen-cloud",
        "the default service name"
    );
    assert_ne!(
        ingest.trace_id, TRACE_ID,
        "the bogus trace id (lower-cased) is not adopted"
    );
    assert!(batch.parent_span_id.is_empty(), "{batch:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_spans_are_exported_when_the_cloud_stops_on_sigterm() {
    let collector = Collector::default();
    let endpoint = start_collector(&collector);
    // A batch delay far beyond the test: only the flush at shutdown can send the span.
    let mut cloud = cloud_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
    ])
    .await;
    let answer = reqwest::get(format!("{}/healthz", cloud.base_url()))
        .await
        .expect("request");
    assert!(answer.status().is_success());
    assert!(
        collector.spans().is_empty(),
        "nothing exported before the stop"
    );
    let status = cloud.terminate(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "a clean stop: {status:?}"
    );
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.kind == SpanKind::Server as i32 && s.name == "/healthz"),
        "the request's span was flushed at the stop: {spans:#?}"
    );
}

#[test]
fn a_bad_otel_value_stops_the_cloud_at_startup_with_the_variables_name() {
    for (variable, value) in [
        ("OTEL_TRACES_EXPORTER", "jaeger"),
        ("OTEL_SDK_DISABLED", "maybe"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_stayopen-cloud"))
            .arg("migrate")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env(variable, value)
            .output()
            .expect("run stayopen-cloud");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert!(
            stderr.contains(variable) && !stderr.contains("panicked"),
            "{variable}={value}: {stderr}"
        );
    }
}
