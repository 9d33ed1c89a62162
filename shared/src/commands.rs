//! Commands the cloud sends an appliance, and the appliance's answers.
//!
//! A command is queued in the cloud's database, delivered when the appliance is online (again after
//! it was offline), acknowledged when the appliance takes it, finished with a result, and expires if
//! it was never acknowledged in time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The shortest drill a command may ask for: shorter proves nothing (the switch alone takes
/// seconds).
pub const DRILL_MIN_SECS: u32 = 10;
/// The longest drill a command may ask for: a practice on its backup uplink for longer is an
/// outage the cloud caused, not a drill (metered data, slower links).
pub const DRILL_MAX_SECS: u32 = 3600;

/// What to do.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandSpec {
    /// Move traffic to the backup for `duration_secs` (10 to 3600), then back.
    StartDrill { duration_secs: u32 },
    /// Return to the preferred uplink now if it is healthy, without waiting for the failback hold.
    FailBackNow,
    /// Report the engine's state, uplinks, policy and recent events (never traffic contents).
    CollectDiagnostics,
    /// Restart the agent process (its supervisor starts it again).
    RebootAgent,
}

impl CommandSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            CommandSpec::StartDrill { .. } => "start_drill",
            CommandSpec::FailBackNow => "fail_back_now",
            CommandSpec::CollectDiagnostics => "collect_diagnostics",
            CommandSpec::RebootAgent => "reboot_agent",
        }
    }

    /// Whether the command is within its bounds; both the cloud (before queueing) and the
    /// appliance (before acting) check it, so neither trusts the other.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CommandSpec::StartDrill { duration_secs }
                if !(DRILL_MIN_SECS..=DRILL_MAX_SECS).contains(duration_secs) =>
            {
                Err(format!(
                    "duration_secs must be between {DRILL_MIN_SECS} and {DRILL_MAX_SECS} seconds, not {duration_secs}"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Cloud → device on the commands channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommand {
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub spec: CommandSpec,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum CommandStatus {
    /// Queued in the cloud; the appliance has not been sent it yet (or is offline).
    Queued,
    /// Published to the appliance; not acknowledged yet.
    Delivered,
    /// The appliance took it.
    Acknowledged,
    Succeeded,
    Failed,
    /// Not acknowledged before it expired.
    Expired,
}

impl CommandStatus {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::Expired
        )
    }
}

/// Device → cloud on the command-results channel. `status` is acknowledged, succeeded or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    pub command_id: Uuid,
    pub status: CommandStatus,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_tagged_by_kind_on_the_wire() {
        let json =
            serde_json::to_value(CommandSpec::StartDrill { duration_secs: 60 }).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"kind": "start_drill", "duration_secs": 60})
        );
        let parsed: CommandSpec =
            serde_json::from_value(serde_json::json!({"kind": "fail_back_now"})).expect("parse");
        assert_eq!(parsed, CommandSpec::FailBackNow);
        assert!(
            serde_json::from_value::<CommandSpec>(serde_json::json!({"kind": "format_disk"}))
                .is_err()
        );
    }

    #[test]
    fn a_drill_outside_ten_seconds_to_an_hour_is_refused() {
        assert!(
            CommandSpec::StartDrill { duration_secs: 5 }
                .validate()
                .is_err()
        );
        assert!(
            CommandSpec::StartDrill { duration_secs: 600 }
                .validate()
                .is_ok()
        );
        for (secs, ok) in [
            (9, false),
            (10, true),
            (3600, true),
            (3601, false),
            (u32::MAX, false),
        ] {
            assert_eq!(
                CommandSpec::StartDrill {
                    duration_secs: secs
                }
                .validate()
                .is_ok(),
                ok,
                "{secs}"
            );
        }
    }
}
