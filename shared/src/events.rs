//! Decisions the appliance reports, device → cloud. Each is also a line in the appliance's local
//! events file, so the same vocabulary serves the audit trail on both sides.

use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    AgentStarted,
    UplinkDown,
    UplinkUp,
    Failover,
    Failback,
    DrillStarted,
    DrillFinished,
    /// A drill was refused (no healthy backup) or aborted (the backup failed during it).
    DrillFailed,
    PolicyApplied,
    /// A policy from the cloud could not be applied; the appliance keeps running the previous one.
    PolicyRejected,
    /// The relay stopped answering: the flows meant for the tunnel leave directly (their sessions
    /// are no longer failover-safe) until it answers again.
    TunnelFallback,
    /// The relay answers again and the tunnel carries its flows.
    TunnelRestored,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceEvent {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub reason: String,
    /// What a drill measured: on `drill_finished` and on a `drill_failed` that got as far as
    /// checking the applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<crate::compliance::DrillReport>,
}
