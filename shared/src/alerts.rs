//! Alerts: what the MSP must hear about, with their lifecycle (open → acknowledged → resolved).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ApplianceId, PracticeId};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The appliance stopped talking to the cloud (last will, or silence past the heartbeat).
    ApplianceOffline,
    /// Traffic moved to a backup uplink.
    Failover,
    /// Traffic returned to the preferred uplink (informational; resolves the failover).
    Failback,
    /// Still on a backup uplink longer than the policy's `on_backup_alert_secs`.
    OnBackupLong,
    /// An uplink went down (the active one fails over; a standby one leaves no backup).
    UplinkDown,
    /// A drill was refused or aborted.
    DrillFailed,
    /// The appliance could not apply the cloud's policy.
    PolicyApplyFailed,
    /// The appliance's device certificate expires within 30 days (enrolling again renews it).
    CertificateExpiring,
}

impl AlertKind {
    pub const ALL: [AlertKind; 8] = [
        AlertKind::ApplianceOffline,
        AlertKind::Failover,
        AlertKind::Failback,
        AlertKind::OnBackupLong,
        AlertKind::UplinkDown,
        AlertKind::DrillFailed,
        AlertKind::PolicyApplyFailed,
        AlertKind::CertificateExpiring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ApplianceOffline => "appliance_offline",
            AlertKind::Failover => "failover",
            AlertKind::Failback => "failback",
            AlertKind::OnBackupLong => "on_backup_long",
            AlertKind::UplinkDown => "uplink_down",
            AlertKind::DrillFailed => "drill_failed",
            AlertKind::PolicyApplyFailed => "policy_apply_failed",
            AlertKind::CertificateExpiring => "certificate_expiring",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The default severity an MSP can tune.
    pub fn default_severity(self) -> Severity {
        match self {
            AlertKind::ApplianceOffline | AlertKind::Failover => Severity::Critical,
            AlertKind::UplinkDown
            | AlertKind::DrillFailed
            | AlertKind::PolicyApplyFailed
            | AlertKind::OnBackupLong
            | AlertKind::CertificateExpiring => Severity::Warning,
            AlertKind::Failback => Severity::Info,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AlertState::Open,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertComment {
    pub author: String,
    pub body: String,
    pub at: DateTime<Utc>,
}

/// An alert as the API shows it. The same condition on the same appliance folds into one open
/// alert: `count` and `last_seen` grow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub id: uuid::Uuid,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    pub practice_id: PracticeId,
    pub appliance_id: ApplianceId,
    /// What the alert is about within the appliance (an uplink's name), or empty.
    pub subject: String,
    pub summary: String,
    pub count: u32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    pub comments: Vec<AlertComment>,
}

/// Resolve an alert by hand (a condition that clears resolves its alert by itself).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveAlert {
    #[serde(default)]
    pub note: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAlertComment {
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_severities_and_states_round_trip_through_their_names() {
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).expect("json");
            assert_eq!(json, serde_json::Value::String(kind.as_str().into()));
        }
        assert_eq!(Severity::parse("critical"), Some(Severity::Critical));
        assert_eq!(
            AlertState::parse("acknowledged"),
            Some(AlertState::Acknowledged)
        );
        assert_eq!(AlertKind::parse("nope"), None);
    }

    #[test]
    fn an_outage_is_critical_and_a_failback_informational() {
        assert_eq!(AlertKind::Failover.default_severity(), Severity::Critical);
        assert_eq!(
            AlertKind::ApplianceOffline.default_severity(),
            Severity::Critical
        );
        assert_eq!(AlertKind::Failback.default_severity(), Severity::Info);
        assert!(Severity::Critical > Severity::Warning);
    }
}

/// Where alert notifications go. Webhooks carry a generic ticket shape (open / close / notice with
/// a stable external id), so a PSA integration is a mapping, not new code.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    pub name: String,
    /// `https://…` (or `http://…`) endpoint that receives signed JSON.
    pub url: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView {
    pub id: uuid::Uuid,
    pub name: String,
    pub kind: String,
    pub url: String,
    pub created_at: DateTime<Utc>,
}

/// A new channel; `signing_secret` is shown only here. The receiver checks
/// `X-StayOpen-Signature: sha256=hex(HMAC-SHA256(secret, "{X-StayOpen-Timestamp}.{body}"))`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedChannel {
    pub channel: ChannelView,
    pub signing_secret: String,
}

impl std::fmt::Debug for CreatedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedChannel")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Which alerts go to a channel: optionally one practice, optionally some kinds, at or above a
/// severity.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoutingRule {
    pub channel_id: uuid::Uuid,
    #[serde(default)]
    pub practice_id: Option<PracticeId>,
    #[serde(default)]
    pub kinds: Option<Vec<AlertKind>>,
    pub min_severity: Severity,
    /// Escalation: notify only if the alert is still open (unacknowledged) this long after it
    /// opened. 0: at once.
    #[serde(default)]
    pub delay_secs: u32,
    /// Remind the channel this often until the alert is acknowledged or resolved.
    #[serde(default)]
    pub repeat_secs: Option<u32>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRuleView {
    pub id: uuid::Uuid,
    pub channel_id: uuid::Uuid,
    pub practice_id: Option<PracticeId>,
    pub kinds: Option<Vec<AlertKind>>,
    pub min_severity: Severity,
    pub delay_secs: u32,
    pub repeat_secs: Option<u32>,
    pub created_at: DateTime<Utc>,
}

/// One delivery of an alert change to a channel.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: uuid::Uuid,
    pub alert_id: uuid::Uuid,
    pub channel_id: uuid::Uuid,
    /// `open`, `close`, `notice` or `reminder`.
    pub event: String,
    /// `pending`, `delivered`, `dead` (retries exhausted) or `cancelled` (an escalation or
    /// reminder whose alert was acknowledged or resolved first).
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The JSON body of a webhook: a generic ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookTicket {
    /// `open`, `close` or `notice`.
    pub event: String,
    /// Stable per alert: a PSA keeps one ticket per external id.
    pub external_id: String,
    /// Unique per delivery (retries repeat it), for idempotent receivers.
    pub delivery_id: uuid::Uuid,
    pub attempt: u32,
    pub sent_at: DateTime<Utc>,
    pub alert: AlertView,
}
