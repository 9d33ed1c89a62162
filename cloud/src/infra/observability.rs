//! Logs, traces and OpenTelemetry export: the one place the cloud's tracing subscriber is built.
//!
//! Logs always go to stderr (`RUST_LOG` filters them, as before). Traces are exported over
//! OTLP/HTTP (protobuf) only when the standard variables ask for it — off by default:
//!
//! - on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or
//!   `OTEL_TRACES_EXPORTER=otlp` (then the SDK's default endpoint, `http://localhost:4318`);
//! - off when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, whatever else is set;
//! - metrics are exported alongside (same endpoint, or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`)
//!   unless `OTEL_METRICS_EXPORTER=none`.
//!
//! The SDK itself reads the rest: `OTEL_SERVICE_NAME` (default here `stayopen-cloud`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`.
//! The W3C trace-context propagator is registered globally, so the HTTP middleware continues an
//! incoming `traceparent` header.
//!
//! Spans of the product's own work are `tracing` spans (exported through
//! `tracing-opentelemetry`); the HTTP layer's come from the actix-web middleware. A request's query
//! string is never exported (see [`Redacting`]): a stream ticket travels there.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use stayopen_shared::traceparent::TraceParent;
use stayopen_shared::{ApplianceId, MessageId};

use crate::infra::metrics::{INGEST_CORRECTED, Metrics};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Which `tracing` spans become OpenTelemetry spans, whatever `RUST_LOG` says.
const TRACES_FILTER: &str =
    "info,rumqttd=warn,sqlx=warn,hyper=off,hyper_util=off,reqwest=off,h2=off,opentelemetry=off";

/// The service name when `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name none.
pub const DEFAULT_SERVICE_NAME: &str = "stayopen-cloud";

/// Why telemetry could not be set up (a startup error, with the variable to fix).
#[derive(Debug, thiserror::Error)]
pub enum ObservabilityError {
    #[error("{variable}={value:?} is not understood ({expected})")]
    BadVariable {
        variable: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// What the `OTEL_*` variables ask for. Pure: built from a lookup function, so tests pass a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    pub traces: bool,
    pub metrics: bool,
}

impl ExportPlan {
    /// Reads the switches (not the SDK's own settings, which the SDK reads).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ObservabilityError> {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        let disabled = match var("OTEL_SDK_DISABLED").as_deref().map(str::trim) {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                return Err(ObservabilityError::BadVariable {
                    variable: "OTEL_SDK_DISABLED",
                    value: v.to_owned(),
                    expected: "true or false",
                });
            }
        };
        let exporter = |variable: &'static str| -> Result<Option<bool>, ObservabilityError> {
            match var(variable).as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some("otlp") => Ok(Some(true)),
                Some("none") => Ok(Some(false)),
                Some(v) => Err(ObservabilityError::BadVariable {
                    variable,
                    value: v.to_owned(),
                    expected: "otlp or none (this build exports OTLP over HTTP only)",
                }),
            }
        };
        let traces_exporter = exporter("OTEL_TRACES_EXPORTER")?;
        let metrics_exporter = exporter("OTEL_METRICS_EXPORTER")?;
        let endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        let traces = !disabled
            && traces_exporter.unwrap_or(endpoint || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
        let metrics = !disabled
            && metrics_exporter
                .unwrap_or(traces || endpoint || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"));
        if let Some(protocol) = var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && (traces || metrics)
            && !matches!(protocol.trim(), "" | "http/protobuf")
        {
            return Err(ObservabilityError::BadVariable {
                variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                value: protocol,
                expected: "http/protobuf (the only protocol this build speaks)",
            });
        }
        Ok(Self { traces, metrics })
    }
}

/// The exporters' providers, flushed and shut down by [`Telemetry::shutdown`] on a clean stop.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether traces are being exported.
    pub fn exporting_traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports what is still buffered and stops the exporters. Call it outside the async runtime
    /// (it blocks) but while the runtime still exists (the exporters run on it).
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("stayopen-cloud: flushing the last spans failed: {e}");
        }
        if let Some(meter) = self.meter
            && let Err(e) = meter.shutdown()
        {
            eprintln!("stayopen-cloud: flushing the last metrics failed: {e}");
        }
    }
}

/// Installs the global subscriber: logs to stderr, and the OTLP exporters when the environment
/// asks for them (see the module documentation). Must run inside the tokio runtime (the batch
/// exporters run on it). A bad `OTEL_*` value is an error here, never a panic.
pub fn init() -> Result<Telemetry, ObservabilityError> {
    let plan = ExportPlan::from_lookup(|name| std::env::var(name).ok())?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn,sqlx=warn"));
    // Logs go to stderr: stdout carries what a command prints for a script.
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let resource = plan
        .traces
        .then(resource)
        .or_else(|| plan.metrics.then(resource));
    let tracer = match (&resource, plan.traces) {
        (Some(resource), true) => Some(tracer_provider(resource.clone())?),
        _ => None,
    };
    let meter = match (&resource, plan.metrics) {
        (Some(resource), true) => Some(meter_provider(resource.clone())?),
        _ => None,
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracer.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        opentelemetry::global::set_tracer_provider(provider.clone());
        // Its own filter: RUST_LOG=warn quietens the log, not the traces. The exporter's own
        // HTTP client stays out (its spans would be exported in turn).
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("stayopen-cloud"))
            .with_filter(EnvFilter::new(TRACES_FILTER))
    });
    if let Some(meter) = &meter {
        opentelemetry::global::set_meter_provider(meter.clone());
    }
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|_| ObservabilityError::AlreadyInstalled)?;
    if tracer.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { tracer, meter })
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, the SDK's own attributes),
/// named `stayopen-cloud` unless those variables name the service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(DEFAULT_SERVICE_NAME)
            .build()
    }
}

fn tracer_provider(resource: Resource) -> Result<SdkTracerProvider, ObservabilityError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| ObservabilityError::Exporter(e.to_string()))?;
    // The batch processor on our tokio runtime (the async reqwest client needs one); its settings
    // come from OTEL_BSP_*.
    let batch =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Redacting(batch))
        .with_resource(resource)
        .build())
}

fn meter_provider(resource: Resource) -> Result<SdkMeterProvider, ObservabilityError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| ObservabilityError::Exporter(e.to_string()))?;
    let reader =
        opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// Attributes never exported: a request's query string (a dashboard's live-update ticket travels
/// in it) and full URLs that could contain one.
const REDACTED_ATTRIBUTES: [&str; 2] = ["url.query", "url.full"];

/// A span processor that drops [`REDACTED_ATTRIBUTES`] before handing a span on.
#[derive(Debug)]
struct Redacting<P>(P);

impl<P: SpanProcessor> SpanProcessor for Redacting<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        span.attributes
            .retain(|kv| !REDACTED_ATTRIBUTES.contains(&kv.key.as_str()));
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Makes the remote context named by a W3C `traceparent` the parent of `span` (an event's
/// envelope carries the appliance's). Returns whether it did: `false` for `None`, for a value
/// that is not valid `traceparent` syntax (the caller counts it), and when tracing is off.
pub fn span_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) -> bool {
    let Some(parsed) = traceparent.and_then(TraceParent::parse) else {
        return false;
    };
    let remote = SpanContext::new(
        opentelemetry::trace::TraceId::from(parsed.trace_id),
        opentelemetry::trace::SpanId::from(parsed.span_id),
        TraceFlags::new(parsed.flags),
        true,
        TraceState::default(),
    );
    span.set_parent(Context::new().with_remote_span_context(remote))
        .is_ok()
}

/// Ingest's check of an event's `traceparent`: an invalid one is ignored (set to `None`), counted
/// as `stayopen_ingest_corrected_total{reason="bad_traceparent"}` and logged; it never rejects the
/// message.
pub fn drop_bad_traceparent(traceparent: &mut Option<String>, metrics: &Metrics) {
    if traceparent
        .as_deref()
        .is_some_and(|tp| !valid_traceparent(tp))
    {
        *traceparent = None;
        metrics.increment(INGEST_CORRECTED, "reason", "bad_traceparent");
        tracing::warn!("a device event's traceparent is not valid W3C syntax; ignored");
    }
}

/// The span `ingest.event` of storing one event, a child of the appliance's span named by the
/// envelope's `traceparent` (a new trace when it has none).
pub fn ingest_event_span(
    appliance: ApplianceId,
    message: MessageId,
    traceparent: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "ingest.event",
        appliance_id = %appliance,
        message_id = %message,
        otel.kind = "consumer",
    );
    span_from_traceparent(&span, traceparent);
    span
}

/// Whether `traceparent` is valid W3C syntax (version 00, lowercase hex, non-zero ids).
pub fn valid_traceparent(traceparent: &str) -> bool {
    TraceParent::parse(traceparent).is_some()
}

/// The W3C `traceparent` of `span`, to store with work done later (a queued notification) or to
/// send on (a webhook's header). `None` when traces are not exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let sc = span_ref.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(
        TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            flags: sc.trace_flags().to_u8(),
        }
        .to_string(),
    )
}

/// The `traceparent` of the current span (see [`traceparent_of`]).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan(vars: &[(&str, &str)]) -> Result<ExportPlan, ObservabilityError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportPlan::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_is_exported_unless_the_variables_ask_for_it() {
        let off = ExportPlan {
            traces: false,
            metrics: false,
        };
        assert_eq!(plan(&[]).ok(), Some(off.clone()));
        assert_eq!(
            plan(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_TRACES_SAMPLER", "always_on")
            ])
            .ok(),
            Some(off.clone())
        );
        let on = ExportPlan {
            traces: true,
            metrics: true,
        };
        assert_eq!(
            plan(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).ok(),
            Some(on.clone())
        );
        assert_eq!(plan(&[("OTEL_TRACES_EXPORTER", "otlp")]).ok(), Some(on));
        assert_eq!(
            plan(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces"
            )])
            .ok(),
            Some(ExportPlan {
                traces: true,
                metrics: true,
            })
        );
        assert_eq!(
            plan(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_METRICS_EXPORTER", "none"),
            ])
            .ok(),
            Some(ExportPlan {
                traces: true,
                metrics: false,
            })
        );
        assert_eq!(
            plan(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ])
            .ok(),
            Some(off)
        );
    }

    #[test]
    fn a_bad_value_is_a_clear_error_naming_the_variable() {
        for (var, value) in [
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
        ] {
            let err = plan(&[(var, value)]).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(var)),
                "{var}={value}: {err:?}"
            );
        }
        let grpc = plan(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert!(grpc.is_err());
    }
}
