//! Alerts: what the MSP must hear about, with their lifecycle (open → acknowledged → resolved).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ApplianceId, PracticeId};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
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
    /// An uplink has lost packets or answered slowly past the policy's thresholds for a period,
    /// without failing: the practice feels it (choppy calls) before anything fails over.
    UplinkDegraded,
    /// Several failovers within the policy's window: the primary line keeps dropping.
    Flapping,
    /// A metered (cellular) uplink has used more data this month than the policy allows.
    MeteredOverBudget,
    /// No completed failover drill for longer than the policy's `drill_overdue_days`: the practice
    /// cannot show its contingency plan is tested.
    DrillOverdue,
    /// The appliance cannot reach its relay: sessions meant for the tunnel leave directly and will
    /// not survive a failover until the relay answers again.
    RelayUnreachable,
}

impl AlertKind {
    /// Every variant, in declaration order.
    pub const ALL: &'static [AlertKind] = <AlertKind as strum::VariantArray>::VARIANTS;

    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// The default severity; the policy's `alert_severity` tunes it per kind.
    pub fn default_severity(self) -> Severity {
        match self {
            AlertKind::ApplianceOffline | AlertKind::Failover => Severity::Critical,
            AlertKind::UplinkDown
            | AlertKind::DrillFailed
            | AlertKind::PolicyApplyFailed
            | AlertKind::OnBackupLong
            | AlertKind::CertificateExpiring
            | AlertKind::UplinkDegraded
            | AlertKind::Flapping
            | AlertKind::MeteredOverBudget
            | AlertKind::DrillOverdue
            | AlertKind::RelayUnreachable => Severity::Warning,
            AlertKind::Failback => Severity::Info,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

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
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
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
    pub practice_name: String,
    pub appliance_id: ApplianceId,
    /// The appliance's serial and its site, as people know the box.
    pub appliance_serial: String,
    pub site_name: String,
    /// What the alert is about within the appliance (an uplink's name), or empty.
    pub subject: String,
    pub summary: String,
    /// Raised inside a maintenance window: kept on record, nobody notified.
    pub muted: bool,
    /// Raised while the practice was closed (its severity capped by the policy).
    pub after_hours: bool,
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

/// How a channel delivers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum ChannelKind {
    /// Signed JSON to an HTTP endpoint: a generic ticket (open / close / notice with a stable
    /// external id), so a PSA integration is a mapping, not new code.
    #[default]
    Webhook,
    /// Mail with a text and an HTML part, to addresses (people or lists) and users.
    Email,
}

impl ChannelKind {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// Where alert notifications go: a webhook (`url`) or e-mail (`recipients` and/or `user_ids`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    pub name: String,
    #[serde(default)]
    pub kind: ChannelKind,
    /// Webhooks: the `https://…` (or `http://…`) endpoint that receives signed JSON.
    #[serde(default)]
    pub url: Option<String>,
    /// E-mail: addresses of people or lists.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// E-mail: users of the MSP, mailed at their current address while they are enabled.
    #[serde(default)]
    pub user_ids: Vec<uuid::Uuid>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView {
    pub id: uuid::Uuid,
    pub name: String,
    pub kind: ChannelKind,
    pub url: Option<String>,
    pub recipients: Vec<String>,
    pub user_ids: Vec<uuid::Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A new channel; a webhook's `signing_secret` is shown only here. The receiver checks
/// `X-StayOpen-Signature: sha256=hex(HMAC-SHA256(secret, "{X-StayOpen-Timestamp}.{body}"))`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedChannel {
    pub channel: ChannelView,
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for CreatedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedChannel")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// When a routing rule applies, by the practice's clinic hours.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum RouteDuring {
    #[default]
    Always,
    /// While the practice is open. An alert raised after hours waits for the opening and goes out
    /// then only if nobody has acknowledged it: a 03:00 Sunday outage can wait for morning.
    ClinicHours,
    /// While the practice is closed: the on-call route.
    AfterHours,
}

impl RouteDuring {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// Which alerts go to a channel: optionally one practice, optionally some kinds, at or above a
/// severity, at some hours.
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
    #[serde(default)]
    pub during: RouteDuring,
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
    pub during: RouteDuring,
    pub created_at: DateTime<Utc>,
}

/// One delivery to a channel: of an alert change, or a digest of several.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: uuid::Uuid,
    /// `None` for a digest.
    pub alert_id: Option<uuid::Uuid>,
    pub practice_id: PracticeId,
    pub channel_id: uuid::Uuid,
    /// `open`, `close`, `notice`, `reminder` or `digest`.
    pub event: String,
    /// `pending`, `delivered`, `dead` (retries exhausted), `cancelled` (an escalation or reminder
    /// whose alert was acknowledged or resolved first), `held` (over the practice's rate limit,
    /// waiting for the digest) or `digested` (sent as part of a digest).
    pub status: String,
    /// A digest: the alerts it carries.
    pub digest_of: Vec<uuid::Uuid>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The JSON body of a webhook: a generic ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookTicket {
    /// `open`, `close`, `notice`, `reminder` or `update`.
    pub event: String,
    /// For an `update`: what changed since the last delivery, oldest first: `acknowledged`,
    /// `comment` (the alert's `comments` has it), `repeat` (its `count` went up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Stable per alert: a PSA keeps one ticket per external id.
    pub external_id: String,
    /// Unique per delivery (retries repeat it), for idempotent receivers.
    pub delivery_id: uuid::Uuid,
    pub attempt: u32,
    pub sent_at: DateTime<Utc>,
    pub alert: AlertView,
}

/// The JSON body of a digest webhook (`X-StayOpen-Event: digest`): a practice went over its rate
/// limit, and these alerts (in their current state) were held back to arrive together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDigest {
    pub event: String,
    pub delivery_id: uuid::Uuid,
    pub attempt: u32,
    pub sent_at: DateTime<Utc>,
    pub practice_id: PracticeId,
    pub practice_name: String,
    pub alerts: Vec<AlertView>,
}

/// One span a practice is open on a day, local time, `"HH:MM"`; `close` after `open` (a clinic
/// open past midnight uses two spans).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSpan {
    pub open: String,
    pub close: String,
}

/// A practice's weekly clinic hours, local time. A day without spans is closed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClinicHours {
    pub mon: Vec<OpenSpan>,
    pub tue: Vec<OpenSpan>,
    pub wed: Vec<OpenSpan>,
    pub thu: Vec<OpenSpan>,
    pub fri: Vec<OpenSpan>,
    pub sat: Vec<OpenSpan>,
    pub sun: Vec<OpenSpan>,
}

/// Minutes after local midnight of `"HH:MM"` (`"24:00"` allowed as a closing time).
fn minute_of(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl ClinicHours {
    /// Days Monday (0) to Sunday (6).
    pub fn day(&self, weekday: u8) -> &[OpenSpan] {
        match weekday {
            0 => &self.mon,
            1 => &self.tue,
            2 => &self.wed,
            3 => &self.thu,
            4 => &self.fri,
            5 => &self.sat,
            _ => &self.sun,
        }
    }

    /// Open and close minutes of each span of a day.
    fn spans(&self, weekday: u8) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.day(weekday)
            .iter()
            .filter_map(|s| Some((minute_of(&s.open)?, minute_of(&s.close)?)))
    }

    pub fn validate(&self) -> Result<(), String> {
        for (weekday, name) in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .into_iter()
            .enumerate()
        {
            let spans = self.day(weekday as u8);
            if spans.len() > 6 {
                return Err(format!("{name}: at most 6 spans a day"));
            }
            for span in spans {
                let (Some(open), Some(close)) = (minute_of(&span.open), minute_of(&span.close))
                else {
                    return Err(format!(
                        "{name}: times must be HH:MM, got {:?}–{:?}",
                        span.open, span.close
                    ));
                };
                if open >= close {
                    return Err(format!(
                        "{name}: {} must be before {}",
                        span.open, span.close
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the practice is open on `weekday` (0 = Monday) at `minute` after local midnight.
    pub fn is_open(&self, weekday: u8, minute: u32) -> bool {
        self.spans(weekday % 7)
            .any(|(open, close)| open <= minute && minute < close)
    }

    /// The next opening strictly after (`weekday`, `minute`), as (days ahead, minute of that
    /// day); `None` when the practice never opens.
    pub fn next_opening(&self, weekday: u8, minute: u32) -> Option<(u32, u32)> {
        (0..=7u32).find_map(|ahead| {
            let day = ((u32::from(weekday) + ahead) % 7) as u8;
            self.spans(day)
                .map(|(open, _)| open)
                .filter(|open| ahead > 0 || *open > minute)
                .min()
                .map(|open| (ahead, open))
        })
    }
}

/// A practice's time zone and clinic hours, which decide which routes apply and how urgent an
/// alert is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PracticeSchedule {
    /// An IANA time zone, e.g. `America/Chicago`.
    pub time_zone: String,
    /// `None`: no hours set; every hour counts as open.
    #[serde(default)]
    pub clinic_hours: Option<ClinicHours>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PracticeScheduleView {
    pub time_zone: String,
    pub clinic_hours: Option<ClinicHours>,
    /// Whether the practice is open now.
    pub open_now: bool,
    /// The next opening, when it is closed now.
    pub next_opening: Option<DateTime<Utc>>,
}

/// Planned work: alerts raised inside the window are recorded but notify nobody.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMaintenanceWindow {
    pub practice_id: PracticeId,
    /// One appliance of the practice; `None`: all of them.
    #[serde(default)]
    pub appliance_id: Option<ApplianceId>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindowView {
    pub id: uuid::Uuid,
    pub practice_id: PracticeId,
    pub appliance_id: Option<ApplianceId>,
    /// The serial of `appliance_id`, so a list can name it without another request.
    #[serde(default)]
    pub appliance_serial: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_severities_and_states_round_trip_through_their_names() {
        for &kind in AlertKind::ALL {
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

    fn weekdays_nine_to_five() -> ClinicHours {
        let span = || {
            vec![OpenSpan {
                open: "09:00".into(),
                close: "17:00".into(),
            }]
        };
        ClinicHours {
            mon: span(),
            tue: span(),
            wed: span(),
            thu: span(),
            fri: span(),
            ..ClinicHours::default()
        }
    }

    #[test]
    fn clinic_hours_are_open_inside_their_spans_only() {
        let hours = weekdays_nine_to_five();
        assert_eq!(hours.validate(), Ok(()));
        assert!(hours.is_open(0, 10 * 60), "Monday 10:00");
        assert!(hours.is_open(4, 9 * 60), "Friday 09:00 (opening minute)");
        assert!(!hours.is_open(4, 17 * 60), "Friday 17:00 (closing minute)");
        assert!(!hours.is_open(6, 3 * 60), "Sunday 03:00");
    }

    #[test]
    fn the_next_opening_after_a_sunday_night_is_monday_morning() {
        let hours = weekdays_nine_to_five();
        assert_eq!(hours.next_opening(6, 3 * 60), Some((1, 9 * 60)));
        assert_eq!(hours.next_opening(0, 8 * 60), Some((0, 9 * 60)));
        assert_eq!(
            hours.next_opening(0, 9 * 60),
            Some((1, 9 * 60)),
            "strictly after"
        );
        assert_eq!(
            hours.next_opening(4, 18 * 60),
            Some((3, 9 * 60)),
            "Friday evening"
        );
        assert_eq!(ClinicHours::default().next_opening(0, 0), None);
    }

    #[test]
    fn malformed_or_inverted_spans_are_refused_with_the_day_named() {
        let mut hours = weekdays_nine_to_five();
        hours.tue = vec![OpenSpan {
            open: "18:00".into(),
            close: "08:00".into(),
        }];
        assert!(hours.validate().expect_err("inverted").starts_with("tue"));
        hours.tue = vec![OpenSpan {
            open: "9:00".into(),
            close: "17:00".into(),
        }];
        assert!(hours.validate().expect_err("format").contains("HH:MM"));
    }
}

/// What to do to many alerts at once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertBulkAction {
    /// Someone is on them: escalation stops. Alerts not open are skipped.
    Acknowledge,
    /// Resolve them by hand, with the note. Alerts already resolved are skipped.
    Resolve,
}

/// Acknowledge or resolve up to [`crate::api::MAX_BULK_ITEMS`] alerts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkAlertRequest {
    pub alert_ids: Vec<uuid::Uuid>,
    pub action: AlertBulkAction,
    /// The resolution note (resolve only); blank counts as none.
    #[serde(default)]
    pub note: Option<String>,
}
