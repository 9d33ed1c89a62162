//! Bodies of the cloud's REST API (`/api/v1`), used by the cloud to encode, by the appliance to enrol
//! and by the dashboard to decode.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ApplianceId, MessageId, PracticeId, SiteId, TenantId, UserId};
use crate::telemetry::{Telemetry, UplinkTelemetry};

/// Every error response has this body; `error` is a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the MSP's whole fleet.
    MspAdmin,
    /// Sees one practice and downloads its evidence.
    PracticeViewer,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Bearer token for the `Authorization` header.
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: CurrentUser,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub email: String,
    pub role: Role,
    /// Set for practice-scoped users.
    pub practice_id: Option<PracticeId>,
}

/// What identifies the hardware an appliance runs on. Re-enrolling the same hardware returns the same
/// appliance id, so a factory reset does not leave a ghost in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareIdentity {
    pub serial: String,
    /// MAC address of the first WAN interface.
    pub mac: String,
    pub model: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub hardware: HardwareIdentity,
    pub agent_version: String,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .field("hardware", &self.hardware)
            .field("agent_version", &self.agent_version)
            .finish()
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub appliance_id: ApplianceId,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub mqtt: MqttCredentials,
    /// `/tenants/{appliance_id}/`: every topic the appliance may use starts with it.
    pub topic_prefix: String,
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// Shown once; the cloud stores only its hash.
    pub token: String,
    pub practice_id: PracticeId,
    pub site_id: SiteId,
    pub expires_at: DateTime<Utc>,
    pub max_uses: u32,
}

/// The fleet as one MSP user may see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub tenant_name: String,
    pub generated_at: DateTime<Utc>,
    pub practices: Vec<PracticeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PracticeView {
    pub id: PracticeId,
    pub name: String,
    pub appliances: Vec<ApplianceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplianceView {
    pub id: ApplianceId,
    pub site_id: SiteId,
    pub site_name: String,
    pub serial: String,
    pub online: bool,
    pub active_uplink: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub uplinks: Vec<UplinkTelemetry>,
}

/// One stored telemetry message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRecord {
    pub message_id: MessageId,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub telemetry: Telemetry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub database: bool,
    pub broker: bool,
}
