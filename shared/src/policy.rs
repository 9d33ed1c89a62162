//! The policy the cloud pushes to an appliance (retained on its policy topic).
//!
//! Every field has a default that is safe on its own, so an appliance that never heard from the cloud
//! behaves well, and `validate` rejects values that would make failover unsafe.

use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Monotonic version; an appliance ignores a policy older than the one it applied.
    pub version: u64,
    /// How often telemetry is published. 10 s keeps the dashboard live at ~1 kB per message.
    pub telemetry_interval_secs: u32,
    /// How long the preferred uplink must stay clean before traffic fails back to it. 30 s outlasts
    /// the typical DSL/cable retrain and DHCP renew after an outage.
    pub failback_clean_period_secs: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            version: 0,
            telemetry_interval_secs: 10,
            failback_clean_period_secs: 30,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("telemetry_interval_secs must be between 1 and 3600, got {0}")]
    TelemetryInterval(u32),
    #[error("failback_clean_period_secs must be between 5 and 86400, got {0}")]
    FailbackCleanPeriod(u32),
}

impl Policy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=3600).contains(&self.telemetry_interval_secs) {
            return Err(PolicyError::TelemetryInterval(self.telemetry_interval_secs));
        }
        if !(5..=86_400).contains(&self.failback_clean_period_secs) {
            return Err(PolicyError::FailbackCleanPeriod(
                self.failback_clean_period_secs,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid() {
        assert_eq!(Policy::default().validate(), Ok(()));
    }

    #[test]
    fn a_zero_telemetry_interval_is_rejected() {
        let policy = Policy {
            telemetry_interval_secs: 0,
            ..Policy::default()
        };
        assert_eq!(policy.validate(), Err(PolicyError::TelemetryInterval(0)));
    }

    #[test]
    fn missing_fields_take_their_defaults() {
        let policy: Result<Policy, _> = serde_json::from_str(r#"{"version": 3}"#);
        assert_eq!(
            policy.ok(),
            Some(Policy {
                version: 3,
                ..Policy::default()
            })
        );
    }
}
