//! Periodic telemetry and presence, device → cloud.
//!
//! Telemetry describes links, never traffic content: the appliance does not inspect, store or report
//! anything about the practice's packets beyond byte counters per uplink.

use serde::{Deserialize, Serialize};

/// Health of one uplink as the appliance's failover engine sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
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
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
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
    /// The modem behind a cellular uplink (issue 17); absent for other uplinks and from
    /// appliances that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cellular: Option<crate::cellular::CellularReport>,
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
    /// How many reporting windows this sample covers: absent for one; more when the appliance's
    /// outbox filled during a long outage and merged old samples (see [`Telemetry::roll_up`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// The state of the appliance's outbox when this sample was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<crate::delivery::OutboxReport>,
    /// The latest check of each critical application through each uplink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<crate::compliance::AppReachability>,
    /// The session-safe tunnel to the relay; absent from appliances that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::tunnel::TunnelReport>,
}

impl Telemetry {
    /// The preferred uplink: the lowest priority number, the first listed on a tie.
    pub fn primary(&self) -> Option<&UplinkTelemetry> {
        self.uplinks.iter().min_by_key(|u| u.priority)
    }

    /// Whether the practice's traffic runs over its preferred uplink (known only from a sample
    /// that lists its uplinks).
    pub fn on_primary(&self) -> bool {
        match (&self.active_uplink, self.primary()) {
            (Some(active), Some(primary)) => *active == primary.name,
            _ => false,
        }
    }

    /// Whether the practice's traffic runs over an uplink other than the preferred one.
    pub fn on_backup(&self) -> bool {
        match (&self.active_uplink, self.primary()) {
            (Some(active), Some(primary)) => *active != primary.name,
            _ => false,
        }
    }

    /// The number of reporting windows this sample covers.
    pub fn sample_count(&self) -> u32 {
        self.samples.unwrap_or(1).max(1)
    }

    /// One coarser sample covering `earlier` and `later` (consecutive samples of one appliance),
    /// for an outbox that must free space: the state (active uplink, health, policy, outbox) is the
    /// later one's; loss and round-trip time are averaged weighted by the windows each covers;
    /// byte counters, which are cumulative interface counters, are the later one's.
    pub fn roll_up(earlier: &Telemetry, later: &Telemetry) -> Telemetry {
        let (we, wl) = (
            f64::from(earlier.sample_count()),
            f64::from(later.sample_count()),
        );
        let uplinks = later
            .uplinks
            .iter()
            .map(|l| {
                let Some(e) = earlier.uplinks.iter().find(|e| e.name == l.name) else {
                    return l.clone();
                };
                UplinkTelemetry {
                    loss_pct: (e.loss_pct * we + l.loss_pct * wl) / (we + wl),
                    rtt_ms: match (e.rtt_ms, l.rtt_ms) {
                        (Some(a), Some(b)) => Some((a * we + b * wl) / (we + wl)),
                        (a, b) => b.or(a),
                    },
                    ..l.clone()
                }
            })
            .collect();
        Telemetry {
            active_uplink: later.active_uplink.clone(),
            uplinks,
            policy_version: later.policy_version.or(earlier.policy_version),
            samples: Some(earlier.sample_count().saturating_add(later.sample_count())),
            outbox: later.outbox,
            apps: later.apps.clone(),
            tunnel: later.tunnel.clone(),
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
            cellular: None,
        }
    }

    #[test]
    fn traffic_on_anything_but_the_lowest_priority_uplink_is_on_backup() {
        let mut telemetry = Telemetry {
            active_uplink: Some("fiber".into()),
            // Listed backup first: the priority decides, not the order.
            uplinks: vec![uplink("lte", 1), uplink("fiber", 0)],
            policy_version: None,
            samples: None,
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
        };
        assert!(!telemetry.on_backup());
        telemetry.active_uplink = Some("lte".into());
        assert!(telemetry.on_backup());
        telemetry.active_uplink = None;
        assert!(!telemetry.on_backup(), "all down is offline, not on backup");
    }

    #[test]
    fn a_rolled_up_sample_weights_each_side_by_the_windows_it_covers() {
        let sample = |loss: f64, rtt: Option<f64>, samples: Option<u32>, active: &str| {
            let mut fiber = uplink("fiber", 0);
            fiber.loss_pct = loss;
            fiber.rtt_ms = rtt;
            Telemetry {
                active_uplink: Some(active.into()),
                uplinks: vec![fiber, uplink("lte", 1)],
                policy_version: Some(3),
                samples,
                outbox: None,
                apps: Vec::new(),
                tunnel: None,
            }
        };
        let earlier = sample(30.0, Some(40.0), Some(3), "lte");
        let later = sample(10.0, None, None, "fiber");
        let merged = Telemetry::roll_up(&earlier, &later);
        assert_eq!(merged.sample_count(), 4);
        assert_eq!(merged.active_uplink.as_deref(), Some("fiber"));
        assert!((merged.uplinks[0].loss_pct - 25.0).abs() < 1e-9);
        assert_eq!(
            merged.uplinks[0].rtt_ms,
            Some(40.0),
            "a missing rtt takes the other side's"
        );
        assert_eq!(merged.uplinks[1], uplink("lte", 1));
    }
}
