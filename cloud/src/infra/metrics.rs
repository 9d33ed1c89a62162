//! Counters of what the cloud accepted and rejected, exposed in Prometheus text format at `/metrics`.
//!
//! Every rejection — a malformed MQTT payload, an unknown appliance, a bad API body — increments a
//! counter labelled with a stable reason and is logged, so nothing is dropped silently.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// Latency histograms by name and rendered label set (borrowed when the labels are fixed, as
    /// ingest's are: recorded once per message, they are looked up without allocating).
    histograms: Mutex<BTreeMap<(&'static str, Cow<'static, str>), Histogram>>,
    /// The same measurements as OpenTelemetry instruments (no-ops unless metrics are exported).
    instruments: std::sync::OnceLock<Instruments>,
}

/// Latency histograms (seconds), shown on `/metrics` and exported over OTLP when enabled.
/// Ingest: from a message's receipt to its commit (label `channel`).
pub const INGEST_DURATION: &str = "stayopen_ingest_duration_seconds";
/// The API: a request's duration (labels `route`, the route template, and `status`, `2xx`…).
pub const HTTP_DURATION: &str = "stayopen_http_request_duration_seconds";
/// Notifications: one delivery attempt (labels `channel_kind`, `outcome`).
pub const DELIVERY_DURATION: &str = "stayopen_notification_delivery_duration_seconds";

/// The histograms' upper bounds, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One histogram: cumulative counts are computed when rendered.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

struct Instruments {
    ingest: opentelemetry::metrics::Histogram<f64>,
    http: opentelemetry::metrics::Histogram<f64>,
    delivery: opentelemetry::metrics::Histogram<f64>,
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instruments")
    }
}

impl Instruments {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("stayopen-cloud");
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(BUCKETS.to_vec())
                .build()
        };
        Self {
            ingest: histogram(INGEST_DURATION, "Device message receipt to commit"),
            http: histogram(HTTP_DURATION, "API request duration"),
            delivery: histogram(DELIVERY_DURATION, "Notification delivery attempt duration"),
        }
    }
}

/// `2xx`, `4xx`, … for an HTTP status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counter names.
pub const INGEST_ACCEPTED: &str = "stayopen_ingest_accepted_total";
pub const INGEST_DUPLICATE: &str = "stayopen_ingest_duplicate_total";
pub const INGEST_REJECTED: &str = "stayopen_ingest_rejected_total";
pub const INGEST_STORE_RETRIES: &str = "stayopen_ingest_store_retries_total";
/// Outbox messages acknowledged to their appliance (stored or refused for good).
pub const INGEST_ACKNOWLEDGED: &str = "stayopen_ingest_acknowledged_total";
/// Heartbeat sweeps that declared nobody offline because the cloud could not hear (label: why).
pub const OFFLINE_JUDGEMENT_SUSPENDED: &str = "stayopen_offline_judgement_suspended_total";
pub const API_REJECTED: &str = "stayopen_api_rejected_total";
pub const BROKER_AUTH_REJECTED: &str = "stayopen_broker_auth_rejected_total";
pub const CLOUD_PUBLISH_DROPPED: &str = "stayopen_cloud_publish_dropped_total";
/// Webhook targets refused before any connection (label `reason`: the special-purpose range).
pub const WEBHOOK_REFUSED: &str = "stayopen_webhook_refused_total";
/// Webhook deliveries that failed (label `class`: refused range, timed out, answered 5xx, …).
pub const WEBHOOK_FAILED: &str = "stayopen_webhook_failed_total";

// Issue 15, the broker and ingest against a silent client and a hostile device.
/// Connections, topics and subscriptions the broker's gate refused (label `reason`:
/// `connection_limit`, `device_connection_limit`, `handshake_timeout`, `handshake_failed`,
/// `topic_not_allowed`, `filter_not_allowed`).
pub const BROKER_REFUSED: &str = "stayopen_broker_refused_total";
/// Publishes over a device's rate: the broker stopped reading from that device until its bucket
/// refilled (label `reason="rate_limited"`).
pub const BROKER_RATE_LIMITED: &str = "stayopen_broker_rate_limited_total";
/// Distinct topics and filters network clients brought to the broker's router (label `kind`:
/// `publish`, `subscribe`); each is a log the router keeps, so this stays within 7 per device.
pub const BROKER_TOPICS_ADMITTED: &str = "stayopen_broker_topics_admitted_total";
/// Device messages ingest gave up before storing them because that device's own backlog was full
/// (label `reason="device_backlog"`); the appliance resends them, as they were never acknowledged.
pub const INGEST_SHED: &str = "stayopen_ingest_shed_total";
/// Telemetry and event values ingest corrected rather than refused (label `reason`:
/// `sent_at_clamped`).
pub const INGEST_CORRECTED: &str = "stayopen_ingest_corrected_total";

// Issue 16, the relay registry.
/// Requests for a relay's peer list that were not a relay's (label `reason`: `missing_token`,
/// `not_a_relay_token`, `unknown_token`, `revoked_relay`).
pub const RELAY_AUTH_REJECTED: &str = "stayopen_relay_auth_rejected_total";

impl Metrics {
    /// Adds one to `name{label="value"}`.
    pub fn increment(&self, name: &'static str, label: &'static str, value: &'static str) {
        self.add(name, label, value, 1);
    }

    /// Adds `amount` to `name{label="value"}`.
    pub fn add(&self, name: &'static str, label: &'static str, value: &'static str, amount: u64) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, label, value)).or_default() += amount;
        }
    }

    pub fn get(&self, name: &str, label: &str, value: &str) -> u64 {
        self.counters
            .lock()
            .map(|c| {
                c.iter()
                    .find(|((n, l, v), _)| *n == name && *l == label && *v == value)
                    .map_or(0, |(_, count)| *count)
            })
            .unwrap_or(0)
    }

    /// Records one ingested message's time from receipt to commit.
    pub fn record_ingest(&self, channel: &'static str, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let labels: Cow<'static, str> = match channel {
            "telemetry" => Cow::Borrowed("channel=\"telemetry\""),
            "events" => Cow::Borrowed("channel=\"events\""),
            other => Cow::Owned(format!("channel=\"{other}\"")),
        };
        self.observe(INGEST_DURATION, labels, seconds);
        self.instruments()
            .ingest
            .record(seconds, &[opentelemetry::KeyValue::new("channel", channel)]);
    }

    /// Records one API request's duration by route template and status class.
    pub fn record_http(&self, route: &str, status: u16, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let class = status_class(status);
        let route = escape_label(route);
        self.observe(
            HTTP_DURATION,
            format!("route=\"{route}\",status=\"{class}\""),
            seconds,
        );
        self.instruments().http.record(
            seconds,
            &[
                opentelemetry::KeyValue::new("http.route", route),
                opentelemetry::KeyValue::new("status", class),
            ],
        );
    }

    /// Records one notification delivery attempt by channel kind and outcome.
    pub fn record_delivery(
        &self,
        channel_kind: &str,
        outcome: &'static str,
        elapsed: std::time::Duration,
    ) {
        let seconds = elapsed.as_secs_f64();
        let kind = escape_label(channel_kind);
        self.observe(
            DELIVERY_DURATION,
            format!("channel_kind=\"{kind}\",outcome=\"{outcome}\""),
            seconds,
        );
        self.instruments().delivery.record(
            seconds,
            &[
                opentelemetry::KeyValue::new("channel_kind", kind),
                opentelemetry::KeyValue::new("outcome", outcome),
            ],
        );
    }

    fn instruments(&self) -> &Instruments {
        self.instruments.get_or_init(Instruments::new)
    }

    fn observe(&self, name: &'static str, labels: impl Into<Cow<'static, str>>, seconds: f64) {
        let key = (name, labels.into());
        if let Ok(mut histograms) = self.histograms.lock() {
            match histograms.get_mut(&key) {
                Some(histogram) => histogram.observe(seconds),
                None => histograms.entry(key).or_default().observe(seconds),
            }
        }
    }

    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        if let Ok(histograms) = self.histograms.lock() {
            let mut last_name = "";
            for ((name, labels), histogram) in histograms.iter() {
                if *name != last_name {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    last_name = name;
                }
                let mut cumulative = 0;
                for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                    cumulative += count;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.count);
            }
        }
        let Ok(counters) = self.counters.lock() else {
            return out;
        };
        let mut last_name = "";
        for ((name, label, value), count) in counters.iter() {
            if *name != last_name {
                let _ = writeln!(out, "# TYPE {name} counter");
                last_name = name;
            }
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
        }
        out
    }
}

/// A label value as Prometheus text needs it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let metrics = Metrics::default();
        metrics.record_ingest("events", std::time::Duration::from_millis(3));
        metrics.record_ingest("events", std::time::Duration::from_millis(30));
        metrics.record_ingest("events", std::time::Duration::from_secs(20));
        metrics.record_http(
            "/api/v1/appliances/{appliance_id}",
            404,
            std::time::Duration::from_millis(2),
        );
        let text = metrics.render_prometheus();
        let name = INGEST_DURATION;
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
        assert!(
            text.contains(&format!(
                "{name}_bucket{{channel=\"events\",le=\"0.001\"}} 0"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{name}_bucket{{channel=\"events\",le=\"0.005\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{name}_bucket{{channel=\"events\",le=\"0.05\"}} 2"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_bucket{{channel=\"events\",le=\"10\"}} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{name}_bucket{{channel=\"events\",le=\"+Inf\"}} 3"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_sum{{channel=\"events\"}} 20.033")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{name}_count{{channel=\"events\"}} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{HTTP_DURATION}_count{{route=\"/api/v1/appliances/{{appliance_id}}\",status=\"4xx\"}} 1"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_label_value_cannot_break_out_of_its_quotes() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn counters_render_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.increment(INGEST_REJECTED, "reason", "malformed");
        metrics.increment(INGEST_REJECTED, "reason", "malformed");
        metrics.increment(INGEST_ACCEPTED, "channel", "telemetry");
        let text = metrics.render_prometheus();
        assert!(text.contains("# TYPE stayopen_ingest_rejected_total counter"));
        assert!(text.contains("stayopen_ingest_rejected_total{reason=\"malformed\"} 2"));
        assert!(text.contains("stayopen_ingest_accepted_total{channel=\"telemetry\"} 1"));
        assert_eq!(metrics.get(INGEST_REJECTED, "reason", "malformed"), 2);
    }
}
