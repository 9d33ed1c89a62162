//! Compliance evidence under HIPAA 45 CFR 164.308(a)(7): the critical applications register
//! (criticality analysis, (E)), what an appliance found when it checked them through each uplink,
//! drills and their sign-off (testing, (D)), incidents, availability and the signed evidence
//! packages a compliance officer downloads.
//!
//! The appliance needs only [`AppEndpoint`], [`AppTier`] and the results it reports
//! ([`AppReachability`], [`DrillReport`]); the rest are bodies of the cloud's REST API.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::alerts::{AlertKind, Severity};
use crate::ids::{ApplianceId, PracticeId};

/// How badly the practice needs an application when the internet fails.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum AppTier {
    /// Patients cannot be seen without it (the EHR, e-prescribing).
    #[default]
    Tier1,
    /// Needed the same day (the lab interface, telemedicine).
    Tier2,
    /// Can wait until the line is back (the patient portal, billing).
    Tier3,
}

impl AppTier {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn label(self) -> &'static str {
        match self {
            AppTier::Tier1 => "Tier 1 — patient care stops without it",
            AppTier::Tier2 => "Tier 2 — needed the same day",
            AppTier::Tier3 => "Tier 3 — can wait",
        }
    }
}

/// One way to tell that an application is reachable.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppEndpoint {
    /// An HTTPS (or HTTP) GET; any status below 500 is an answer.
    Https { url: String },
    /// A TCP handshake.
    Tcp { host: String, port: u16 },
    /// A DNS lookup (type A) of `name` through the uplink's resolver.
    Dns { name: String },
}

impl AppEndpoint {
    /// Why the endpoint cannot be checked, or `None`.
    pub fn problem(&self) -> Option<String> {
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        };
        match self {
            AppEndpoint::Https { url } => {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                match rest {
                    Some(rest) if url.len() <= 2000 && !url.contains(char::is_whitespace) => {
                        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                        (!host_ok(host)).then(|| format!("{url:?} has no host"))
                    }
                    _ => Some(format!("{url:?} is not an http(s) URL")),
                }
            }
            AppEndpoint::Tcp { host, port } => {
                if !host_ok(host) {
                    Some(format!("{host:?} is not a host name or address"))
                } else if *port == 0 {
                    Some("port 0 cannot be checked".into())
                } else {
                    None
                }
            }
            AppEndpoint::Dns { name } => (!host_ok(name) || name.contains(':'))
                .then(|| format!("{name:?} is not a DNS name")),
        }
    }

    /// A short human description: the URL, `host:port` or `DNS name`.
    pub fn describe(&self) -> String {
        match self {
            AppEndpoint::Https { url } => url.clone(),
            AppEndpoint::Tcp { host, port } => format!("tcp {host}:{port}"),
            AppEndpoint::Dns { name } => format!("dns {name}"),
        }
    }
}

/// A critical application as the register holds it and the dashboard edits it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalAppInput {
    pub name: String,
    pub tier: AppTier,
    pub endpoints: Vec<AppEndpoint>,
    /// Who at the practice (or the vendor) answers for it.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub note: String,
}

impl CriticalAppInput {
    /// Why the entry cannot be stored, or `None`.
    pub fn problem(&self) -> Option<String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Some("name must be 1 to 100 characters".into());
        }
        if self.endpoints.is_empty() || self.endpoints.len() > 5 {
            return Some("an application needs 1 to 5 endpoints".into());
        }
        if let Some(problem) = self.endpoints.iter().find_map(AppEndpoint::problem) {
            return Some(problem);
        }
        if self.owner.chars().count() > 200 {
            return Some("owner must be at most 200 characters".into());
        }
        if self.note.chars().count() > 2000 {
            return Some("note must be at most 2000 characters".into());
        }
        None
    }
}

/// One entry of a practice's critical applications register.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriticalAppEntry {
    pub id: Uuid,
    pub practice_id: PracticeId,
    pub name: String,
    pub tier: AppTier,
    pub endpoints: Vec<AppEndpoint>,
    pub owner: String,
    pub note: String,
    pub updated_at: DateTime<Utc>,
    /// The user who last changed it.
    pub updated_by: Option<String>,
}

/// What the latest check of one application through one uplink found (appliance → cloud, in
/// telemetry).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppReachability {
    pub app: String,
    pub uplink: String,
    pub reachable: bool,
    /// The round trip of the answering endpoint; `None` when none answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Seconds since the check, at the time of the telemetry sample.
    pub age_secs: u32,
    /// Why it is unreachable ("tcp ehr.example:443: connection refused").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One application as a drill found it through the backup.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCheckResult {
    pub app: String,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a drill measured, attached to its `drill_finished` or `drill_failed` event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillReport {
    /// The command that started the drill; `None` for a drill started on the appliance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    pub backup: Option<String>,
    /// From the drill's start to traffic on the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_ms: Option<u32>,
    /// From the end of the drill to traffic back on the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_ms: Option<u32>,
    pub apps: Vec<AppCheckResult>,
    pub passed: bool,
}

/// How a drill went.
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
pub enum DrillOutcome {
    Running,
    Passed,
    Failed,
}

impl DrillOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Who started a drill.
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
pub enum DrillTrigger {
    /// The cloud's drill schedule (policy `drill_schedule`).
    Scheduled,
    /// A user, through a `start_drill` command.
    Manual,
    /// The appliance's local control socket.
    Local,
}

impl DrillTrigger {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A compliance officer's review of a drill.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillSignOff {
    pub name: String,
    pub email: String,
    pub signed_at: DateTime<Utc>,
    pub comment: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOffDrill {
    pub comment: String,
}

/// One drill of one appliance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub id: Uuid,
    pub appliance_id: ApplianceId,
    pub appliance_serial: String,
    pub practice_id: PracticeId,
    pub practice_name: String,
    pub trigger: DrillTrigger,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: DrillOutcome,
    /// Why it failed, or what it did, in words the officer can read.
    pub reason: String,
    pub backup_uplink: Option<String>,
    pub switchover_ms: Option<u32>,
    pub failback_ms: Option<u32>,
    pub apps: Vec<AppCheckResult>,
    pub sign_off: Option<DrillSignOff>,
}

/// Whether one critical application stayed reachable through an incident.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentApp {
    pub app: String,
    /// `None` when no check of it was reported during the incident.
    pub stayed_reachable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentAlert {
    pub id: Uuid,
    pub kind: AlertKind,
    pub severity: Severity,
    pub title: String,
    pub raised_at: DateTime<Utc>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentComment {
    pub author: String,
    pub at: DateTime<Utc>,
    pub body: String,
}

/// A real outage of a practice's primary line, built on the server from the appliance's events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: Uuid,
    pub appliance_id: ApplianceId,
    pub appliance_serial: String,
    pub practice_id: PracticeId,
    pub practice_name: String,
    pub started_at: DateTime<Utc>,
    /// `None` while it lasts.
    pub ended_at: Option<DateTime<Utc>>,
    /// The uplinks that failed, and the one(s) traffic moved to.
    pub failed_uplinks: Vec<String>,
    pub backup_uplinks: Vec<String>,
    pub on_backup_secs: u64,
    /// Whether traffic kept flowing (a backup carried it) for the whole incident.
    pub traffic_kept_flowing: bool,
    pub apps: Vec<IncidentApp>,
    pub alerts: Vec<IncidentAlert>,
    pub root_cause: String,
    pub comments: Vec<IncidentComment>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIncident {
    pub root_cause: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddIncidentComment {
    pub body: String,
}

/// Availability of one practice on one day (UTC).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityDay {
    pub date: NaiveDate,
    /// Share of observed time the primary line was up; `None` when nothing was observed.
    pub primary_pct: Option<f64>,
    /// Share of observed time the practice had internet (on any uplink).
    pub effective_pct: Option<f64>,
    /// Seconds of the day with no report from an appliance (a gap, never counted as up).
    pub gap_secs: u64,
    /// Appliance-seconds of the day reported on: with `gap_secs`, the part of the day the
    /// practice's appliances were in service (a chart draws the day's gap in proportion to it).
    #[serde(default)]
    pub observed_secs: u64,
}

/// Availability of one practice in one calendar month (UTC).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityMonth {
    pub practice_id: PracticeId,
    /// The first day of the month.
    pub month: NaiveDate,
    pub primary_pct: Option<f64>,
    pub effective_pct: Option<f64>,
    /// Appliance-seconds in the month (the month's length times the practice's appliances), and
    /// how many of them were reported on and how many were gaps.
    pub period_secs: u64,
    pub observed_secs: u64,
    pub gap_secs: u64,
    /// Seconds the practice spent on a backup uplink.
    pub on_backup_secs: u64,
    pub days: Vec<AvailabilityDay>,
}

/// What period an evidence package covers.
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
pub enum PeriodKind {
    Month,
    Quarter,
    Year,
    Custom,
}

impl PeriodKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A request for an evidence package. `from` is the first day covered, `to` the last (inclusive);
/// for a month, quarter or year they must be its first and last days.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEvidencePackage {
    pub practice_id: PracticeId,
    pub period: PeriodKind,
    pub from: NaiveDate,
    pub to: NaiveDate,
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
pub enum PackageState {
    Queued,
    Building,
    Ready,
    Failed,
}

impl PackageState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A signed evidence package, built in the background and kept.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidencePackage {
    pub id: Uuid,
    pub practice_id: PracticeId,
    pub practice_name: String,
    pub period: PeriodKind,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub state: PackageState,
    /// 0–100 while building.
    pub progress_pct: u8,
    /// What the builder is doing, or why it failed.
    pub status: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub size_bytes: Option<u64>,
    /// SHA-256 of the zip (hex), to compare with a downloaded copy.
    pub sha256: Option<String>,
    /// The fingerprint of the key that signed it.
    pub key_fingerprint: Option<String>,
    /// Where to download it (`/api/v1/evidence/packages/{id}/download`), once ready.
    pub download_path: Option<String>,
}

/// The cloud's evidence-signing public key.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidencePublicKey {
    /// Always "ed25519".
    pub algorithm: String,
    /// The SubjectPublicKeyInfo PEM, as `--public-key FILE` takes it.
    pub public_key_pem: String,
    /// "SHA256:" and the hex SHA-256 of the raw 32-byte key.
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(endpoints: Vec<AppEndpoint>) -> CriticalAppInput {
        CriticalAppInput {
            name: "EHR".into(),
            tier: AppTier::Tier1,
            endpoints,
            owner: String::new(),
            note: String::new(),
        }
    }

    #[test]
    fn an_entry_needs_a_name_and_endpoints_that_can_be_checked() {
        let https = AppEndpoint::Https {
            url: "https://ehr.example.com/health".into(),
        };
        assert_eq!(app(vec![https.clone()]).problem(), None);
        assert!(app(vec![]).problem().is_some());
        assert!(
            app(vec![AppEndpoint::Https {
                url: "ftp://x".into()
            }])
            .problem()
            .is_some()
        );
        assert!(
            app(vec![AppEndpoint::Tcp {
                host: "lab.example".into(),
                port: 0
            }])
            .problem()
            .is_some()
        );
        assert!(
            app(vec![AppEndpoint::Dns {
                name: "bad name".into()
            }])
            .problem()
            .is_some()
        );
        let mut unnamed = app(vec![https]);
        unnamed.name = "  ".into();
        assert!(unnamed.problem().is_some());
    }

    #[test]
    fn endpoints_are_tagged_by_kind_on_the_wire() {
        let tcp: AppEndpoint =
            serde_json::from_str(r#"{"kind":"tcp","host":"lab.example","port":2575}"#)
                .expect("a tcp endpoint");
        assert_eq!(
            tcp,
            AppEndpoint::Tcp {
                host: "lab.example".into(),
                port: 2575
            }
        );
        assert!(serde_json::from_str::<AppEndpoint>(r#"{"kind":"smtp","host":"x"}"#).is_err());
    }
}
