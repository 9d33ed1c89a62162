//! Bodies of the cloud's REST API (`/api/v1`), used by the cloud to encode, by the appliance to enrol
//! and by the dashboard to decode.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::ApplianceEvent;
use crate::ids::{ApplianceId, MessageId, PracticeId, SiteId, TenantId, UserId};
use crate::telemetry::{Telemetry, UplinkTelemetry};

/// Every error response: `{"error": {"code": "...", "message": "..."}}`. `code` is stable and
/// machine-readable; `message` is for people.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn code(&self) -> &str {
        &self.error.code
    }

    pub fn message(&self) -> &str {
        &self.error.message
    }
}

/// What a dashboard user may do. MSP roles see the whole MSP; the other two are confined to the
/// practices they are assigned.
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
pub enum Role {
    /// Everything in the MSP, including users, API tokens and security settings.
    MspAdmin,
    /// Operates appliances, enrolment and policies; no user or token management.
    MspTechnician,
    /// Read-only for one or more practices, plus reports and drill sign-off.
    ComplianceOfficer,
    /// Read-only evidence for one practice, until their access expires.
    Auditor,
}

impl Role {
    /// Every variant, in declaration order.
    pub const ALL: &'static [Role] = <Role as strum::VariantArray>::VARIANTS;

    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Whether the role sees every practice of its MSP (otherwise only its assigned practices).
    pub fn is_msp_wide(self) -> bool {
        matches!(self, Role::MspAdmin | Role::MspTechnician)
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::MspAdmin => "MSP admin",
            Role::MspTechnician => "MSP technician",
            Role::ComplianceOfficer => "Compliance officer",
            Role::Auditor => "Auditor",
        }
    }
}

/// One page of a list. `next_cursor`, when present, is passed back as `?cursor=` for the next page.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The current code from the user's authenticator app, when they have TOTP enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_code: Option<String>,
    /// The MSP's name: needed only when the e-mail address and password open accounts at more
    /// than one MSP (the answer is then 409 `conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msp: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .field("totp_code", &self.totp_code.as_ref().map(|_| "<redacted>"))
            .field("msp", &self.msp)
            .finish()
    }
}

/// A signed-in session: a short-lived access token for `Authorization: Bearer`, and a single-use
/// refresh token for `POST /api/v1/auth/refresh`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: CurrentUser,
}

/// `POST /api/v1/stream/tickets`: opens `GET /api/v1/stream?ticket=…` once, within seconds. A
/// ticket, unlike the access token, is worthless once used, so a URL that lands in a log is too.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTicket {
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for StreamTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTicket")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("expires_at", &self.expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshRequest { .. }")
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// The practices a compliance officer or auditor may see; empty for MSP-wide roles.
    pub practice_ids: Vec<PracticeId>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub totp_enabled: bool,
}

/// A user as the user-management API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub practice_ids: Vec<PracticeId>,
    /// The same practices with their names, ordered by name, so a list of users can show them.
    #[serde(default)]
    pub practices: Vec<PracticeLabel>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub totp_enabled: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A practice by id and name, where a view lists practices it does not describe.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PracticeLabel {
    pub id: PracticeId,
    pub name: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub display_name: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub practice_ids: Vec<PracticeId>,
    /// Required for auditors, refused for every other role.
    #[serde(default)]
    pub access_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("email", &self.email)
            .field("role", &self.role)
            .field("practice_ids", &self.practice_ids)
            .finish_non_exhaustive()
    }
}

/// Changes to a user; absent fields stay as they are.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub practice_ids: Option<Vec<PracticeId>>,
    #[serde(default)]
    pub access_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// The secret of a TOTP enrolment, shown once: the user adds it to their authenticator app and
/// confirms with a code.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpSetup {
    pub secret_base32: String,
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetup { .. }")
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub code: String,
}

/// The MSP's security settings.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Once set, an MSP admin without TOTP can only enrol TOTP until they do.
    pub require_totp_for_admins: bool,
}

/// What an API token may do: `read` everything MSP-wide, or also `operate` appliances (commands,
/// drills, policies, enrolment). No API token manages users or tokens.
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
pub enum ApiTokenScope {
    Read,
    Operate,
}

impl ApiTokenScope {
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
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub name: String,
    pub scope: ApiTokenScope,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenView {
    pub id: uuid::Uuid,
    pub name: String,
    pub scope: ApiTokenScope,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// A newly created API token; `token` is shown only here.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiToken {
    pub token: String,
    pub details: ApiTokenView,
}

impl std::fmt::Debug for CreatedApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiToken")
            .field("details", &self.details)
            .finish_non_exhaustive()
    }
}

/// What identifies the hardware an appliance runs on. Re-enrolling the same hardware returns the same
/// appliance id, so a factory reset does not leave a ghost in the fleet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareIdentity {
    pub serial: String,
    /// MAC address of the first WAN interface.
    pub mac: String,
    pub model: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub hardware: HardwareIdentity,
    pub agent_version: String,
    /// A PKCS#10 request for the appliance's own key pair; the key never leaves the appliance.
    pub csr_pem: String,
    /// The appliance's WireGuard public key (base64 of 32 bytes, as `wg` prints it), for the
    /// session-safe tunnel: the cloud registers it, gives the appliance an inner address and a
    /// relay (in its policy's `tunnel_relay`). Unique across every appliance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .field("hardware", &self.hardware)
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttCredentials {
    pub host: String,
    pub port: u16,
    /// Also the MQTT client id: the appliance id.
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for MqttCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub appliance_id: ApplianceId,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub mqtt: MqttCredentials,
    /// `/tenants/{appliance_id}/`: every topic the appliance may use starts with it.
    pub topic_prefix: String,
    /// The appliance's client certificate for the MQTT connection (Subject O = its topic segment).
    pub client_cert_pem: String,
    /// The device CA, the only authority the appliance trusts for the broker.
    pub ca_cert_pem: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime of the token; 1 hour to 30 days.
    pub expires_in_hours: u32,
    /// How many appliances may enrol with it; 1 to 1000.
    pub max_uses: u32,
    /// The site the appliances are placed in; the practice's first site when absent.
    #[serde(default)]
    pub site_id: Option<SiteId>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// The token's id, for listing and revoking it.
    #[serde(default)]
    pub id: uuid::Uuid,
    /// Shown once; the cloud stores only its hash.
    pub token: String,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
}

/// The fleet as one MSP user may see it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub tenant_name: String,
    pub generated_at: DateTime<Utc>,
    pub practices: Vec<PracticeView>,
    /// Set when more practices follow: pass it as `?cursor=`.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PracticeView {
    pub id: PracticeId,
    pub name: String,
    pub appliances: Vec<ApplianceView>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplianceView {
    pub id: ApplianceId,
    pub practice_id: PracticeId,
    pub practice_name: String,
    pub site_id: SiteId,
    pub site_name: String,
    pub serial: String,
    /// The hardware model and the agent version it enrolled with.
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub agent_version: String,
    pub online: bool,
    /// The one state every list, count and page shows (see [`ApplianceState`]).
    #[serde(default)]
    pub state: ApplianceState,
    pub active_uplink: Option<String>,
    /// Whether the uplink carrying traffic is cellular or wired; `None` when none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_uplink_kind: Option<UplinkKind>,
    pub last_seen: Option<DateTime<Utc>>,
    pub uplinks: Vec<UplinkTelemetry>,
    /// Labels to find and act on appliances together, lower case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The appliance's outbox as its latest telemetry reported it: what waits to be delivered and
    /// what it had to give up during a long outage. Absent before the first report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<crate::delivery::OutboxReport>,
    /// Each critical application through each uplink, as the latest telemetry reported it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<crate::compliance::AppReachability>,
    /// The session-safe tunnel as the latest telemetry reported it. Absent before the first
    /// report, and from agents without a tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::tunnel::TunnelReport>,
}

/// One stored telemetry message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRecord {
    pub message_id: MessageId,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub telemetry: Telemetry,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub database: bool,
    pub broker: bool,
}

/// An appliance's state, worst first. The cloud decides it in one place
/// (`stayopen_appliance_state` in the database), so the header, lists, filters and totals agree.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ApplianceState {
    /// Not heard from within the heartbeat, or said goodbye.
    #[default]
    Offline,
    /// Online, with the practice's traffic on a backup uplink.
    OnBackup,
    /// Online on its primary, but an uplink is down (no backup left), none carries traffic, or
    /// the one carrying it is degraded: one more failure and the practice is cut off, or it
    /// suffers now. A merely lossy standby does not count.
    Degraded,
    /// Online on its primary, every uplink up.
    Primary,
}

impl ApplianceState {
    /// The snake_case name, as in JSON, in query strings and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// What a person reads: "Online on primary", "Online on backup", "Degraded", "Offline".
    pub fn label(self) -> &'static str {
        match self {
            ApplianceState::Offline => "Offline",
            ApplianceState::OnBackup => "Online on backup",
            ApplianceState::Degraded => "Degraded",
            ApplianceState::Primary => "Online on primary",
        }
    }
}

/// How a practice's appliances are doing, rolled up from their [`ApplianceState`]s, worst first:
/// every one offline; some on a backup uplink; some degraded or offline; every one on its primary.
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
pub enum PracticeStatus {
    /// Every appliance offline: the practice is dark (or its appliances are unplugged).
    Offline,
    /// Some appliance carries traffic on a backup uplink.
    OnBackup,
    /// Some appliance is degraded or offline, none on backup.
    Degraded,
    /// Every appliance online on its primary with every uplink up.
    Primary,
    /// No appliances enrolled yet.
    Empty,
}

impl PracticeStatus {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// What a person reads, saying whether it is about all or some of the practice's appliances.
    pub fn label(self) -> &'static str {
        match self {
            PracticeStatus::Offline => "All offline",
            PracticeStatus::OnBackup => "Some on backup",
            PracticeStatus::Degraded => "Degraded",
            PracticeStatus::Primary => "All on primary",
            PracticeStatus::Empty => "No appliances",
        }
    }
}

/// A practice with its roll-up, for lists.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PracticeSummary {
    pub id: PracticeId,
    pub name: String,
    pub sites: u32,
    pub appliances: u32,
    pub online: u32,
    /// Online appliances whose traffic runs over a backup uplink.
    pub on_backup: u32,
    /// Online appliances on their primary with an uplink degraded or down.
    #[serde(default)]
    pub degraded: u32,
    pub offline: u32,
    /// Unresolved alerts (open or acknowledged).
    pub open_alerts: u32,
    pub status: PracticeStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Counts over everything the caller may see, for the top of the fleet overview.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetTotals {
    pub practices: u32,
    /// Appliances, and how many are in each [`ApplianceState`]: `online` is `on_primary` +
    /// `on_backup` + `degraded`, and with `offline` they add up to `appliances`.
    pub appliances: u32,
    pub online: u32,
    #[serde(default)]
    pub on_primary: u32,
    pub on_backup: u32,
    #[serde(default)]
    pub degraded: u32,
    pub offline: u32,
    /// Practices by [`PracticeStatus`]; with `practices_empty` they add up to `practices`.
    pub practices_offline: u32,
    pub practices_on_backup: u32,
    #[serde(default)]
    pub practices_degraded: u32,
    #[serde(default)]
    pub practices_primary: u32,
    #[serde(default)]
    pub practices_empty: u32,
    /// Unresolved alerts (open or acknowledged), and those of them that are critical: each one
    /// clears when what it is about is no longer observed (the appliance is back on its primary,
    /// or online again), so these count what is broken now.
    pub open_alerts: u32,
    pub critical_alerts: u32,
}

/// The window a chart covers: the last hour (1-minute points), day (15-minute points) or 30 days
/// (6-hour points).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsPeriod {
    #[default]
    Hour,
    Day,
    Month,
}

impl MetricsPeriod {
    /// (window, bucket) in seconds.
    pub fn window_and_bucket_secs(self) -> (u32, u32) {
        match self {
            MetricsPeriod::Hour => (3600, 60),
            MetricsPeriod::Day => (86_400, 900),
            MetricsPeriod::Month => (30 * 86_400, 6 * 3600),
        }
    }
}

/// One bucket of an uplink's probe results: means over the bucket; `None` when no probe answered.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub at: DateTime<Utc>,
    pub rtt_ms: Option<f64>,
    pub loss_pct: Option<f64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkSeries {
    pub uplink: String,
    pub points: Vec<MetricPoint>,
}

/// Latency and loss per uplink over a period, bucketed by the server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplianceMetrics {
    pub period: MetricsPeriod,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_secs: u32,
    pub series: Vec<UplinkSeries>,
}

/// What changed, pushed on `GET /api/v1/stream` (Server-Sent Events): the dashboard reloads what
/// it shows of that thing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// `appliance` (presence, active uplink, telemetry) or `alert` (raised, folded, acknowledged,
    /// resolved).
    pub topic: String,
    pub id: uuid::Uuid,
    pub practice_id: PracticeId,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    pub id: SiteId,
    pub practice_id: PracticeId,
    pub name: String,
    /// What a technician needs to call the practice about this site; empty when not given.
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub contact_name: String,
    #[serde(default)]
    pub contact_phone: String,
    #[serde(default)]
    pub contact_email: String,
    /// Each line's provider, circuit id and support number.
    #[serde(default)]
    pub isps: Vec<SiteIsp>,
}

/// One internet line of a site, as the ISP knows it: what to quote when calling them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteIsp {
    /// The appliance's uplink it is (`fiber`, `lte` …).
    pub uplink: String,
    /// The provider's name.
    pub isp: String,
    #[serde(default)]
    pub circuit_id: String,
    #[serde(default)]
    pub support_phone: String,
}

/// Changes to a site: each field given replaces the stored one (an empty text clears it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
    /// At most 4 lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isps: Option<Vec<SiteIsp>>,
}

impl UpdateSite {
    /// Checks lengths and shapes; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let text = |field: &str, value: &Option<String>, max: usize| match value {
            Some(v) if v.trim().chars().count() > max => {
                Err(format!("{field} must be at most {max} characters"))
            }
            _ => Ok(()),
        };
        if let Some(name) = &self.name
            && (name.trim().is_empty() || name.trim().chars().count() > 200)
        {
            return Err("name must be 1 to 200 characters".into());
        }
        text("address", &self.address, 500)?;
        text("contact_name", &self.contact_name, 200)?;
        text("contact_phone", &self.contact_phone, 50)?;
        text("contact_email", &self.contact_email, 254)?;
        if let Some(email) = self.contact_email.as_deref().map(str::trim)
            && !email.is_empty()
            && !email.contains('@')
        {
            return Err("contact_email must be an e-mail address".into());
        }
        if let Some(isps) = &self.isps {
            if isps.len() > 4 {
                return Err("isps may list at most 4 lines".into());
            }
            for (i, line) in isps.iter().enumerate() {
                let field = |name: &str, value: &str, max: usize, required: bool| {
                    let n = value.trim().chars().count();
                    if (required && n == 0) || n > max {
                        Err(format!(
                            "isps[{i}].{name} must be {} to {max} characters",
                            u8::from(required)
                        ))
                    } else {
                        Ok(())
                    }
                };
                field("uplink", &line.uplink, 40, true)?;
                field("isp", &line.isp, 100, true)?;
                field("circuit_id", &line.circuit_id, 100, false)?;
                field("support_phone", &line.support_phone, 50, false)?;
            }
        }
        Ok(())
    }
}

/// A practice's tags, replaced as a whole (at most 20; each as [`normalise_tag`] stores it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTags {
    pub tags: Vec<String>,
}

impl SetTags {
    /// The tags as stored: normalised, each once, in the order given; at most 20.
    pub fn normalised(&self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for tag in &self.tags {
            let tag = normalise_tag(tag)?;
            if !out.contains(&tag) {
                out.push(tag);
            }
        }
        if out.len() > 20 {
            return Err("at most 20 tags".into());
        }
        Ok(out)
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePractice {
    pub name: String,
    /// The first site; "Main office" when absent.
    #[serde(default)]
    pub site_name: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    pub name: String,
}

/// One stored appliance event (failover, failback, drill …).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub message_id: MessageId,
    pub appliance_id: ApplianceId,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub event: ApplianceEvent,
}

/// One row of the tamper-evident audit log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// As recorded: `user:<id>`, `api_token:<id>`, `appliance:<id>` or `system:<what>`.
    pub actor: String,
    /// Who that is, as people know them: an address, a token's name, a serial; the recorded label
    /// when it no longer exists.
    #[serde(default)]
    pub actor_name: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// What the target is called (a serial, an address, a practice's name); empty when it has no
    /// name or no longer exists.
    #[serde(default)]
    pub target_name: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One layer of policy: the settings it overrides (a partial [`crate::policy::Policy`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyLayer {
    pub scope: crate::policy::PolicyScope,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub overrides: crate::policy::PolicyOverrides,
    /// 0 while the layer has never been set.
    pub revision: i64,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// "What would take effect if I saved this?": a layer's proposed overrides with the layers around
/// it. For a practice layer the effective policy is that practice's; for an appliance layer, that
/// appliance's; for the MSP layer, a practice without overrides.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPreviewRequest {
    pub scope: crate::policy::PolicyScope,
    /// The practice, for `scope = practice`.
    #[serde(default)]
    pub practice_id: Option<PracticeId>,
    /// The appliance, for `scope = appliance`.
    #[serde(default)]
    pub appliance_id: Option<ApplianceId>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub overrides: crate::policy::PolicyOverrides,
}

/// An appliance's configuration: the effective policy with the source of each value, the version
/// the cloud wants it to run, and the version it reports running.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplianceConfiguration {
    pub effective: crate::policy::EffectivePolicy,
    pub desired_version: u64,
    pub desired_at: Option<DateTime<Utc>>,
    pub reported_version: Option<u64>,
    pub reported_at: Option<DateTime<Utc>>,
    /// True while the appliance does not (yet) run the desired version.
    pub drift: bool,
}

/// Queue a command for an appliance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCommand {
    pub spec: crate::commands::CommandSpec,
    /// How long the command may wait for the appliance; 10 s to 7 days, default 1 hour.
    #[serde(default)]
    pub expires_in_secs: Option<u32>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandView {
    pub id: uuid::Uuid,
    pub appliance_id: ApplianceId,
    pub spec: crate::commands::CommandSpec,
    pub status: crate::commands::CommandStatus,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub deliveries: u32,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
    pub result: Option<serde_json::Value>,
}

/// Register an appliance's serial number for zero-touch enrolment into a practice.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSerial {
    pub serial: String,
    /// The box's factory key from the vendor's manifest (at least 32 characters).
    pub factory_key: String,
    /// The practice's first site when absent.
    #[serde(default)]
    pub site_id: Option<SiteId>,
}

impl std::fmt::Debug for ClaimSerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimSerial")
            .field("serial", &self.serial)
            .field("site_id", &self.site_id)
            .finish_non_exhaustive()
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedSerialView {
    pub serial: String,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub created_at: DateTime<Utc>,
    /// Set once the appliance has enrolled.
    pub appliance_id: Option<ApplianceId>,
    pub enrolled_at: Option<DateTime<Utc>>,
}

/// Zero-touch enrolment: the appliance proves a registered serial with its factory key instead of
/// presenting an enrolment token.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimEnrollRequest {
    pub factory_key: String,
    pub hardware: HardwareIdentity,
    pub agent_version: String,
    pub csr_pem: String,
    /// As in [`EnrollRequest::wireguard_public_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
}

impl std::fmt::Debug for ClaimEnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimEnrollRequest")
            .field("hardware", &self.hardware)
            .field("agent_version", &self.agent_version)
            .finish_non_exhaustive()
    }
}

/// Certificate renewal with proof of the current key: the appliance signs [`renewal_message`] with
/// the private key of the certificate it holds now and sends a signing request for a new key. No
/// token is involved, so nothing an attacker can read off a box's label or the LAN renews it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub appliance_id: ApplianceId,
    /// A PKCS#10 request for the appliance's next key pair (ECDSA P-256).
    pub csr_pem: String,
    /// When the proof was signed. The cloud accepts it from 5 minutes before to 1 minute after its
    /// own clock, only if it is later than the last proof it accepted, and only to whole seconds.
    pub signed_at: DateTime<Utc>,
    /// Base64 of the ECDSA P-256 SHA-256 signature (ASN.1 DER) of [`renewal_message`] by the key
    /// of the appliance's current certificate.
    pub signature: String,
    /// The appliance's WireGuard public key (base64 of 32 bytes), registered or replaced with the
    /// renewal; absent leaves the registered key as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
}

impl std::fmt::Debug for RenewRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewRequest")
            .field("appliance_id", &self.appliance_id)
            .field("signed_at", &self.signed_at)
            .finish_non_exhaustive()
    }
}

/// What an appliance signs with the key of its current certificate to open an MQTT session. The
/// embedded broker's auth hook never sees the TLS client certificate (rumqttd does not pass it), so
/// the password carries this proof: a superseded certificate's key cannot make it, whatever
/// password comes with it. TLS hides it on the wire; it names the appliance so it is worth nothing
/// for another.
pub fn mqtt_key_proof_message(appliance_id: ApplianceId) -> Vec<u8> {
    format!("stayopen-mqtt-key\n{appliance_id}").into_bytes()
}

/// Separates the enrolment secret from the key proof in an appliance's MQTT password:
/// `{secret}.{base64 signature of mqtt_key_proof_message}`. Secrets are hex, so never contain it.
pub const MQTT_KEY_PROOF_SEPARATOR: char = '.';

/// The bytes an appliance signs to renew its certificate: `"stayopen-renew\n{appliance_id}\n{signed_at
/// RFC 3339, whole seconds, Z}\n{hex SHA-256 of csr_pem}"`. The context string keeps the signature
/// from meaning anything elsewhere; the digest binds it to this one signing request; the time lets
/// the cloud refuse old and replayed proofs. One definition for the appliance and the cloud.
pub fn renewal_message(
    appliance_id: ApplianceId,
    signed_at: DateTime<Utc>,
    csr_pem: &str,
) -> Vec<u8> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(csr_pem.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "stayopen-renew\n{appliance_id}\n{}\n{hex}",
        signed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .into_bytes()
}

/// An enrolment token as the dashboard lists it: never the secret.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentTokenView {
    pub id: uuid::Uuid,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    /// The user who created it, when it was a user (and still exists).
    pub created_by: Option<UserId>,
    pub created_by_email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub uses: u32,
    pub max_uses: u32,
    /// Set once revoked: enrolment with it is refused from then on.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One certificate the device CA issued to an appliance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificateView {
    /// The certificate's serial number, hex.
    pub serial: String,
    pub issued_at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Set when a later certificate replaced it; it is then on the revocation list.
    pub superseded_at: Option<DateTime<Utc>>,
    /// Set when the appliance was revoked while this certificate was valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An appliance's identity: whether it is revoked, whether an MSP admin has approved enrolling it
/// again, and its certificates, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentityView {
    pub appliance_id: ApplianceId,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Until then, one enrolment with a token of its practice (or its registered serial) may replace
    /// the appliance's key without proof of the current one.
    pub reenrollment_approved_until: Option<DateTime<Utc>>,
    /// The serial of the certificate the appliance holds now.
    pub current_certificate: Option<String>,
    pub certificates: Vec<DeviceCertificateView>,
}

#[cfg(test)]
mod renewal_tests {
    use super::*;

    #[test]
    fn the_renewal_message_names_the_appliance_the_second_and_the_request() {
        let appliance = ApplianceId(uuid::Uuid::from_u128(0xabc));
        let at = DateTime::parse_from_rfc3339("2026-12-03T10:20:30.987654Z")
            .expect("time")
            .with_timezone(&Utc);
        let message = renewal_message(appliance, at, "csr");
        assert_eq!(
            String::from_utf8(message).expect("utf-8"),
            "stayopen-renew\n00000000-0000-0000-0000-000000000abc\n2026-12-03T10:20:30Z\n\
             c27338c453067b437471afbce792704d816112c6031bb996b62c698ea599ef80"
        );
    }
}

/// The most items one bulk action may name: a page of the largest list.
pub const MAX_BULK_ITEMS: usize = 500;

/// What a bulk action did: each item it was done to, and each it skipped with why (not found,
/// not in a state the action applies to, …). Items are independent: one refusal does not undo the
/// others, and each done item is audited on its own.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkOutcome {
    pub done: Vec<uuid::Uuid>,
    pub skipped: Vec<BulkSkipped>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkSkipped {
    pub id: uuid::Uuid,
    pub reason: String,
}

/// Something to do to many appliances at once.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApplianceBulkAction {
    /// Puts a tag on each appliance (kept once if it already has it).
    AddTag { tag: String },
    /// Takes a tag off each appliance.
    RemoveTag { tag: String },
    /// Queues a failover drill of `duration_secs` (10 to 3600) on each appliance.
    StartDrill { duration_secs: u32 },
    /// Replaces each appliance's own policy layer with these settings (an empty object clears
    /// it, so the practice's and MSP's layers apply again).
    ApplyPolicy {
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        overrides: crate::policy::PolicyOverrides,
    },
}

impl ApplianceBulkAction {
    /// The name the audit log and the dashboard's confirmation use.
    pub fn name(&self) -> &'static str {
        match self {
            ApplianceBulkAction::AddTag { .. } => "add_tag",
            ApplianceBulkAction::RemoveTag { .. } => "remove_tag",
            ApplianceBulkAction::StartDrill { .. } => "start_drill",
            ApplianceBulkAction::ApplyPolicy { .. } => "apply_policy",
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkApplianceRequest {
    /// 1 to [`MAX_BULK_ITEMS`] appliances.
    pub appliance_ids: Vec<ApplianceId>,
    pub action: ApplianceBulkAction,
}

/// A tag as it is stored: trimmed, lower case, 1 to 40 letters, digits, `-`, `_`, `.` or `:`.
pub fn normalise_tag(tag: &str) -> Result<String, String> {
    let tag = tag.trim().to_lowercase();
    if tag.is_empty() || tag.chars().count() > 40 {
        return Err("a tag must be 1 to 40 characters".into());
    }
    if let Some(bad) = tag
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "a tag may hold letters, digits, '-', '_', '.' and ':', not {bad:?}"
        ));
    }
    Ok(tag)
}

/// How the fleet-wide appliance list is sorted; every column of the dashboard's table.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ApplianceSort {
    #[default]
    Serial,
    Practice,
    Site,
    Model,
    AgentVersion,
    /// Worst first when ascending: offline, on backup, degraded, primary.
    State,
    /// Uplink carrying traffic, by name.
    ActiveUplink,
    LastSeen,
}

impl ApplianceSort {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What kind of uplink carries an appliance's traffic: a cellular modem, or a wired line (fibre,
/// cable, DSL). Appliances with no uplink carrying traffic have none.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum UplinkKind {
    Wired,
    Cellular,
}

impl UplinkKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod bulk_tests {
    use super::*;

    #[test]
    fn tags_are_stored_trimmed_and_lower_case_and_refuse_spaces_and_markup() {
        assert_eq!(normalise_tag("  Dental ").as_deref(), Ok("dental"));
        assert_eq!(normalise_tag("site:north-2").as_deref(), Ok("site:north-2"));
        assert!(normalise_tag("").is_err());
        assert!(normalise_tag("two words").is_err());
        assert!(normalise_tag("<script>").is_err());
        assert!(normalise_tag(&"x".repeat(41)).is_err());
    }

    #[test]
    fn a_bulk_action_names_its_kind_and_refuses_unknown_fields() {
        let parsed: BulkApplianceRequest = serde_json::from_str(
            r#"{"appliance_ids":[],"action":{"kind":"start_drill","duration_secs":60}}"#,
        )
        .expect("parses");
        assert_eq!(parsed.action.name(), "start_drill");
        assert!(
            serde_json::from_str::<BulkApplianceRequest>(
                r#"{"appliance_ids":[],"action":{"kind":"add_tag","tag":"x","extra":1}}"#
            )
            .is_err()
        );
    }
}
