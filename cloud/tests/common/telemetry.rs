//! Telemetry as a device publishes it, built for a test: by default a fresh message, sent now,
//! with the fibre active and no uplink details.

use chrono::{DateTime, Utc};
use stayopen_shared::telemetry::{Telemetry, UplinkHealth, UplinkTelemetry};
use stayopen_shared::{ApplianceId, Envelope, MessageId};
use uuid::Uuid;

#[derive(Clone)]
pub struct TelemetryBuilder {
    appliance: ApplianceId,
    message: MessageId,
    sent_at: DateTime<Utc>,
    body: Telemetry,
}

/// A telemetry message of `appliance`.
pub fn telemetry(appliance: ApplianceId) -> TelemetryBuilder {
    TelemetryBuilder {
        appliance,
        message: MessageId(Uuid::new_v4()),
        sent_at: Utc::now(),
        body: Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![],
            policy_version: None,
            samples: None,
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
        },
    }
}

impl TelemetryBuilder {
    pub fn message(mut self, message: MessageId) -> Self {
        self.message = message;
        self
    }

    pub fn sent_at(mut self, at: DateTime<Utc>) -> Self {
        self.sent_at = at;
        self
    }

    /// `active` carries the traffic over a fibre primary (up only while it is the active one)
    /// and an LTE backup.
    pub fn fibre_and_lte(mut self, active: &str) -> Self {
        self.body.active_uplink = Some(active.into());
        self.body.uplinks = vec![
            uplink("fiber", 0, (active == "fiber").then_some(12.0), 0.0),
            uplink("lte", 1, Some(48.0), 0.0),
        ];
        self
    }

    pub fn uplinks(mut self, uplinks: Vec<UplinkTelemetry>) -> Self {
        self.body.uplinks = uplinks;
        self
    }

    /// The session-safe tunnel as the agent reports it.
    pub fn tunnel(mut self, tunnel: stayopen_shared::tunnel::TunnelReport) -> Self {
        self.body.tunnel = Some(tunnel);
        self
    }

    /// The body as it stands.
    pub fn body(&self) -> &Telemetry {
        &self.body
    }

    /// The encoded envelope, as published on the telemetry topic.
    pub fn encode(self) -> Vec<u8> {
        Envelope::new(self.message, self.appliance, self.sent_at, self.body).encode()
    }
}

/// An uplink's report: up with `rtt_ms`, down without; a backup (priority above 0) is metered.
pub fn uplink(name: &str, priority: u8, rtt_ms: Option<f64>, loss_pct: f64) -> UplinkTelemetry {
    UplinkTelemetry {
        name: name.into(),
        priority,
        metered: priority > 0,
        health: if rtt_ms.is_some() {
            UplinkHealth::Up
        } else {
            UplinkHealth::Down
        },
        rtt_ms,
        loss_pct,
        rx_bytes: 0,
        tx_bytes: 0,
        cellular: None,
    }
}
