//! Counters of what the cloud accepted and rejected, exposed in Prometheus text format at `/metrics`.
//!
//! Every rejection — a malformed MQTT payload, an unknown appliance, a bad API body — increments a
//! counter labelled with a stable reason and is logged, so nothing is dropped silently.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
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

    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
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

#[cfg(test)]
mod tests {
    use super::*;

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
