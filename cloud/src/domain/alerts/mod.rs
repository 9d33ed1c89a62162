//! Alerts: what appliance events and presence mean for an MSP ([`rules`]: pure), how those changes
//! land in the database ([`store`]: in the same transaction as the message that caused them), the
//! sweeps that notice what nobody reports ([`sweeps`]), and what people see and do with alerts
//! ([`views`], [`triage`]).
//!
//! Design: a condition raises an alert keyed by (appliance, kind, subject). While that alert is
//! unresolved the same condition folds into it (`count`, `last_seen`) rather than opening another,
//! so a flapping line is one alert, not a storm. A condition that clears resolves its alert by
//! itself; people acknowledge and resolve by hand through the API.

pub mod rules;
pub mod store;
pub mod sweeps;
pub mod triage;
pub mod views;

pub use rules::{
    AlertChange, ON_BACKUP_KINDS, TelemetryRuleState, UplinkCondition, UplinkConditions,
    rules_for_event, rules_for_failover_count, rules_for_observed_primary, rules_for_presence,
    rules_for_telemetry, telemetry_rules,
};
pub use store::{AlertContext, apply, apply_as_of, context, failover_rules};
pub use views::AlertError;
