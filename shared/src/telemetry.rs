//! Periodic telemetry and presence, device → cloud.
//!
//! Telemetry describes links, never traffic content: the appliance does not inspect, store or report
//! anything about the practice's packets beyond byte counters per uplink.

use serde::{Deserialize, Serialize};

/// Health of one uplink as the appliance's failover engine sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkHealth {
    /// Probes pass.
    Up,
    /// Probes fail on some targets or with high loss, but not enough to fail over.
    Degraded,
    /// The engine considers the uplink failed (probe quorum lost or carrier down).
    Down,
    /// Not probed yet.
    Unknown,
}

impl UplinkHealth {
    pub const fn as_str(self) -> &'static str {
        match self {
            UplinkHealth::Up => "up",
            UplinkHealth::Degraded => "degraded",
            UplinkHealth::Down => "down",
            UplinkHealth::Unknown => "unknown",
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkTelemetry {
    pub name: String,
    pub priority: u8,
    pub metered: bool,
    pub health: UplinkHealth,
    /// Median round-trip time of the probes in the reporting window; `None` when none answered.
    pub rtt_ms: Option<f64>,
    /// Share of probes lost in the reporting window, 0–100.
    pub loss_pct: f64,
    /// Cumulative interface counters.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// The uplink carrying the practice's traffic; `None` when every uplink is down.
    pub active_uplink: Option<String>,
    pub uplinks: Vec<UplinkTelemetry>,
    /// The version of the cloud's policy the appliance runs (its reported configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

impl Telemetry {
    /// The preferred uplink: the lowest priority number, the first listed on a tie.
    pub fn primary(&self) -> Option<&UplinkTelemetry> {
        self.uplinks.iter().min_by_key(|u| u.priority)
    }

    /// Whether the practice's traffic runs over an uplink other than the preferred one.
    pub fn on_backup(&self) -> bool {
        match (&self.active_uplink, self.primary()) {
            (Some(active), Some(primary)) => *active != primary.name,
            _ => false,
        }
    }
}

/// Published retained on the status channel: `online` when the agent connects; the broker publishes
/// the agent's last will, `offline`, when the connection drops without a clean disconnect.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    pub online: bool,
    pub agent_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink(name: &str, priority: u8) -> UplinkTelemetry {
        UplinkTelemetry {
            name: name.into(),
            priority,
            metered: false,
            health: UplinkHealth::Up,
            rtt_ms: Some(10.0),
            loss_pct: 0.0,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    #[test]
    fn traffic_on_anything_but_the_lowest_priority_uplink_is_on_backup() {
        let mut telemetry = Telemetry {
            active_uplink: Some("fiber".into()),
            // Listed backup first: the priority decides, not the order.
            uplinks: vec![uplink("lte", 1), uplink("fiber", 0)],
            policy_version: None,
        };
        assert!(!telemetry.on_backup());
        telemetry.active_uplink = Some("lte".into());
        assert!(telemetry.on_backup());
        telemetry.active_uplink = None;
        assert!(!telemetry.on_backup(), "all down is offline, not on backup");
    }
}
