//! The policy the cloud pushes to an appliance, and how it is layered.
//!
//! Every field has a default that is safe on its own, so an appliance that never heard from the
//! cloud behaves well, and `validate` rejects values that would make failover unsafe. An MSP sets
//! overrides for all its appliances, a practice overrides those, an appliance overrides its
//! practice; [`resolve`] computes the effective policy and where each value came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alerts::{AlertKind, Severity};
use crate::compliance::{AppEndpoint, AppTier};

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
    /// The longest the failback hold grows to while the preferred uplink keeps flapping.
    pub failback_max_hold_secs: u32,
    /// An uplink is down when fewer than `detection_quorum` probe targets answered within this.
    pub detection_silence_ms: u32,
    pub detection_quorum: u32,
    /// A down uplink must answer without a break for this long before it counts as up.
    pub recovery_ms: u32,
    /// Monthly data a metered (cellular) uplink may spend on standby probes.
    pub metered_budget_mb: u32,
    /// The applications the practice cannot work without, checked through every uplink and
    /// reported by name. The cloud fills this from the practice's critical applications register;
    /// a policy layer cannot set it.
    pub critical_apps: Vec<CriticalApp>,
    /// How often each critical application is checked through the active uplink. A metered
    /// standby checks them within `metered_budget_mb` instead.
    pub app_check_interval_secs: u32,
    /// When the cloud starts the practice's failover drills; `None`: only by hand.
    pub drill_schedule: Option<DrillSchedule>,
    /// Raise an "on backup too long" alert when a failover has lasted this long (metered backups
    /// cost money, and a long outage needs a call to the ISP).
    pub on_backup_alert_secs: u32,
    /// Severity per alert kind, over the built-in defaults (an MSP that treats a failback as
    /// worth a warning, or a flapping line as critical).
    pub alert_severity: BTreeMap<AlertKind, Severity>,
    /// Outside the practice's clinic hours alerts are at most this severe: a 03:00 Sunday outage
    /// can wait for morning. Practices without clinic hours are always open.
    pub after_hours_max_severity: Severity,
    /// An uplink losing at least this share of probes (percent) …
    pub degraded_loss_pct: f64,
    /// … or answering slower than this (median round trip) …
    pub degraded_rtt_ms: u32,
    /// … without a break for this long raises "uplink degraded".
    pub degraded_for_secs: u32,
    /// This many failovers within `flapping_window_secs` raise "flapping"; a window without a
    /// failover clears it.
    pub flapping_failovers: u32,
    pub flapping_window_secs: u32,
    /// Data a metered uplink may use in a calendar month (UTC) before "metered over budget".
    pub metered_data_alert_mb: u32,
    /// Days without a completed drill before "drill overdue"; 0: never.
    pub drill_overdue_days: u32,
    /// Notifications a channel gets about one practice in an hour; past it, the rest arrive as one
    /// digest.
    pub notifications_per_hour: u32,
    /// What goes through the relay's WireGuard tunnel, so open sessions survive a failover.
    pub tunnel_mode: crate::tunnel::TunnelMode,
    /// Services whose flows count as critical besides the critical applications register's
    /// endpoints: host names, IPv4 addresses or CIDRs, each with an optional `:port`.
    pub telemedicine_services: Vec<String>,
    /// Send the packets of critical flows over every healthy uplink at once (the relay drops the
    /// duplicates), so a failing line loses none of a call's packets.
    pub redundant_critical: bool,
    /// Duplicates a metered uplink may carry in a calendar month; past it, critical flows use the
    /// active uplink only.
    pub redundant_metered_cap_mb: u32,
    /// The relay this appliance uses and its inner address. The cloud fills it per appliance; a
    /// policy layer cannot set it. `None`: no relay, no tunnel.
    pub tunnel_relay: Option<crate::tunnel::RelayAssignment>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalApp {
    pub name: String,
    #[serde(default)]
    pub tier: AppTier,
    /// Reachable when any of them answers.
    pub endpoints: Vec<AppEndpoint>,
}

/// A recurring drill: at most every `every_days` days, in `window` (chosen relative to the
/// practice's clinic hours, so a drill never moves traffic while patients are seen).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSchedule {
    pub every_days: u32,
    pub window: DrillWindow,
    pub duration_secs: u32,
}

/// When in the practice's day a scheduled drill may start. A window lasts an hour.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DrillWindow {
    /// `minutes` after the clinic closes on a day it is open.
    AfterClosing { minutes: u32 },
    /// `minutes` before the clinic opens on a day it is open.
    BeforeOpening { minutes: u32 },
    /// At a fixed local time ("HH:MM", the practice's time zone), any day.
    LocalTime { at: String },
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            version: 0,
            telemetry_interval_secs: 10,
            failback_clean_period_secs: 30,
            failback_max_hold_secs: 900,
            detection_silence_ms: 700,
            detection_quorum: 1,
            recovery_ms: 2000,
            metered_budget_mb: 30,
            critical_apps: Vec::new(),
            app_check_interval_secs: 60,
            drill_schedule: None,
            on_backup_alert_secs: 900,
            alert_severity: BTreeMap::new(),
            after_hours_max_severity: Severity::Warning,
            degraded_loss_pct: 5.0,
            degraded_rtt_ms: 250,
            degraded_for_secs: 120,
            flapping_failovers: 3,
            flapping_window_secs: 1800,
            metered_data_alert_mb: 5120,
            // A quarterly drill with two weeks' grace.
            drill_overdue_days: 105,
            notifications_per_hour: 20,
            tunnel_mode: crate::tunnel::TunnelMode::Critical,
            telemedicine_services: crate::tunnel::TELEMEDICINE_SERVICES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            redundant_critical: true,
            redundant_metered_cap_mb: 2048,
            tunnel_relay: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("telemetry_interval_secs must be between 1 and 3600, got {0}")]
    TelemetryInterval(u32),
    #[error("failback_clean_period_secs must be between 5 and 86400, got {0}")]
    FailbackCleanPeriod(u32),
    #[error("failback_max_hold_secs must be between failback_clean_period_secs and 86400, got {0}")]
    FailbackMaxHold(u32),
    #[error("detection_silence_ms must be between 300 and 10000, got {0}")]
    DetectionSilence(u32),
    #[error("detection_quorum must be between 1 and 8, got {0}")]
    DetectionQuorum(u32),
    #[error("recovery_ms must be between 500 and 600000, got {0}")]
    Recovery(u32),
    #[error("metered_budget_mb must be between 1 and 10000, got {0}")]
    MeteredBudget(u32),
    #[error("critical_apps: {0}")]
    CriticalApp(String),
    #[error("app_check_interval_secs must be between 10 and 86400, got {0}")]
    AppCheckInterval(u32),
    #[error("drill_schedule: {0}")]
    DrillSchedule(String),
    #[error("on_backup_alert_secs must be between 10 and 86400, got {0}")]
    OnBackupAlert(u32),
    #[error("{0}")]
    Alerting(String),
    #[error("{0}")]
    Tunnel(String),
    #[error("{0}")]
    Shape(String),
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
        if !(self.failback_clean_period_secs..=86_400).contains(&self.failback_max_hold_secs) {
            return Err(PolicyError::FailbackMaxHold(self.failback_max_hold_secs));
        }
        if !(300..=10_000).contains(&self.detection_silence_ms) {
            return Err(PolicyError::DetectionSilence(self.detection_silence_ms));
        }
        if !(1..=8).contains(&self.detection_quorum) {
            return Err(PolicyError::DetectionQuorum(self.detection_quorum));
        }
        if !(500..=600_000).contains(&self.recovery_ms) {
            return Err(PolicyError::Recovery(self.recovery_ms));
        }
        if !(1..=10_000).contains(&self.metered_budget_mb) {
            return Err(PolicyError::MeteredBudget(self.metered_budget_mb));
        }
        if self.critical_apps.len() > 20 {
            return Err(PolicyError::CriticalApp("at most 20 applications".into()));
        }
        for app in &self.critical_apps {
            if app.name.trim().is_empty() || app.name.len() > 100 {
                return Err(PolicyError::CriticalApp(
                    "each name must be 1 to 100 characters".into(),
                ));
            }
            if app.endpoints.is_empty() || app.endpoints.len() > 5 {
                return Err(PolicyError::CriticalApp(format!(
                    "{}: an application needs 1 to 5 endpoints",
                    app.name
                )));
            }
            if let Some(problem) = app.endpoints.iter().find_map(AppEndpoint::problem) {
                return Err(PolicyError::CriticalApp(problem));
            }
        }
        if !(10..=86_400).contains(&self.app_check_interval_secs) {
            return Err(PolicyError::AppCheckInterval(self.app_check_interval_secs));
        }
        if let Some(schedule) = &self.drill_schedule {
            schedule.validate()?;
        }
        if !(10..=86_400).contains(&self.on_backup_alert_secs) {
            return Err(PolicyError::OnBackupAlert(self.on_backup_alert_secs));
        }
        self.validate_alerting()?;
        self.validate_tunnel()
    }

    fn validate_tunnel(&self) -> Result<(), PolicyError> {
        if self.telemedicine_services.len() > 100 {
            return Err(PolicyError::Tunnel(
                "telemedicine_services: at most 100 entries".into(),
            ));
        }
        if let Some(problem) = self
            .telemedicine_services
            .iter()
            .find_map(|s| crate::tunnel::destination_problem(s))
        {
            return Err(PolicyError::Tunnel(format!(
                "telemedicine_services: {problem}"
            )));
        }
        if self.redundant_metered_cap_mb > 1_000_000 {
            return Err(PolicyError::Tunnel(format!(
                "redundant_metered_cap_mb must be between 0 and 1000000, got {}",
                self.redundant_metered_cap_mb
            )));
        }
        Ok(())
    }

    /// How severe an alert of `kind` is: the policy's tuning over the default, capped at
    /// `after_hours_max_severity` while the practice is closed.
    pub fn severity_of(&self, kind: AlertKind, practice_open: bool) -> Severity {
        let tuned = self
            .alert_severity
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_severity());
        if practice_open {
            tuned
        } else {
            tuned.min(self.after_hours_max_severity)
        }
    }

    fn validate_alerting(&self) -> Result<(), PolicyError> {
        let out_of_range = |field: &str, range: &str, value: &dyn std::fmt::Display| {
            Err(PolicyError::Alerting(format!(
                "{field} must be between {range}, got {value}"
            )))
        };
        if !(self.degraded_loss_pct > 0.0 && self.degraded_loss_pct <= 100.0) {
            return out_of_range(
                "degraded_loss_pct",
                "0 (exclusive) and 100",
                &self.degraded_loss_pct,
            );
        }
        if !(10..=10_000).contains(&self.degraded_rtt_ms) {
            return out_of_range("degraded_rtt_ms", "10 and 10000", &self.degraded_rtt_ms);
        }
        if !(10..=86_400).contains(&self.degraded_for_secs) {
            return out_of_range("degraded_for_secs", "10 and 86400", &self.degraded_for_secs);
        }
        if !(2..=100).contains(&self.flapping_failovers) {
            return out_of_range("flapping_failovers", "2 and 100", &self.flapping_failovers);
        }
        if !(60..=86_400).contains(&self.flapping_window_secs) {
            return out_of_range(
                "flapping_window_secs",
                "60 and 86400",
                &self.flapping_window_secs,
            );
        }
        if !(1..=10_000_000).contains(&self.metered_data_alert_mb) {
            return out_of_range(
                "metered_data_alert_mb",
                "1 and 10000000",
                &self.metered_data_alert_mb,
            );
        }
        if self.drill_overdue_days > 3660 {
            return out_of_range("drill_overdue_days", "0 and 3660", &self.drill_overdue_days);
        }
        if !(1..=10_000).contains(&self.notifications_per_hour) {
            return out_of_range(
                "notifications_per_hour",
                "1 and 10000",
                &self.notifications_per_hour,
            );
        }
        Ok(())
    }
}

impl DrillSchedule {
    fn validate(&self) -> Result<(), PolicyError> {
        if !(1..=366).contains(&self.every_days) {
            return Err(PolicyError::DrillSchedule(
                "every_days must be between 1 and 366".into(),
            ));
        }
        match &self.window {
            DrillWindow::AfterClosing { minutes } | DrillWindow::BeforeOpening { minutes }
                if *minutes > 720 =>
            {
                return Err(PolicyError::DrillSchedule(
                    "window minutes must be between 0 and 720".into(),
                ));
            }
            DrillWindow::LocalTime { at } if DrillWindow::minute_of_day(at).is_none() => {
                return Err(PolicyError::DrillSchedule(format!(
                    "window at must be HH:MM, got {at:?}"
                )));
            }
            _ => {}
        }
        if !(30..=3600).contains(&self.duration_secs) {
            return Err(PolicyError::DrillSchedule(
                "duration_secs must be between 30 and 3600".into(),
            ));
        }
        Ok(())
    }
}

impl DrillWindow {
    /// Minutes after midnight of an "HH:MM" time.
    pub fn minute_of_day(at: &str) -> Option<u32> {
        let (h, m) = at.split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && at.len() == 5).then_some(h * 60 + m)
    }
}

/// Where a policy layer is set.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::EnumString, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum PolicyScope {
    Default,
    Msp,
    Practice,
    Appliance,
}

impl PolicyScope {
    /// The snake_case name, as in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A partial policy: the fields one layer sets. Keys are [`Policy`] field names (never `version`).
pub type PolicyOverrides = serde_json::Map<String, serde_json::Value>;

/// The policy in force and which layer each value came from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectivePolicy {
    pub policy: Policy,
    pub sources: BTreeMap<String, PolicyScope>,
}

/// Checks that `overrides` names only policy fields, each with a valid value on its own.
pub fn check_overrides(overrides: &PolicyOverrides) -> Result<(), PolicyError> {
    resolve(&[(PolicyScope::Msp, overrides)]).map(|_| ())
}

/// Layers `layers` (lowest first) over the defaults.
pub fn resolve(layers: &[(PolicyScope, &PolicyOverrides)]) -> Result<EffectivePolicy, PolicyError> {
    let serde_json::Value::Object(mut merged) =
        serde_json::to_value(Policy::default()).map_err(|e| PolicyError::Shape(e.to_string()))?
    else {
        return Err(PolicyError::Shape("the policy is not an object".into()));
    };
    let mut sources: BTreeMap<String, PolicyScope> = merged
        .keys()
        .filter(|k| *k != "version")
        .map(|k| (k.clone(), PolicyScope::Default))
        .collect();
    for (scope, overrides) in layers {
        for (key, value) in overrides.iter() {
            if key == "version" || !sources.contains_key(key) {
                return Err(PolicyError::Shape(format!(
                    "{key:?} is not a policy setting"
                )));
            }
            merged.insert(key.clone(), value.clone());
            sources.insert(key.clone(), *scope);
        }
    }
    let policy: Policy = serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| PolicyError::Shape(e.to_string()))?;
    policy.validate()?;
    Ok(EffectivePolicy { policy, sources })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn overrides(value: serde_json::Value) -> PolicyOverrides {
        match value {
            serde_json::Value::Object(map) => map,
            _ => PolicyOverrides::new(),
        }
    }

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

    #[test]
    fn the_most_specific_layer_wins_and_each_value_names_its_source() {
        let msp =
            overrides(json!({"telemetry_interval_secs": 30, "failback_clean_period_secs": 60}));
        let practice = overrides(json!({"failback_clean_period_secs": 120}));
        let appliance = overrides(json!({"detection_quorum": 2}));
        let effective = resolve(&[
            (PolicyScope::Msp, &msp),
            (PolicyScope::Practice, &practice),
            (PolicyScope::Appliance, &appliance),
        ])
        .expect("valid");
        assert_eq!(effective.policy.telemetry_interval_secs, 30);
        assert_eq!(effective.policy.failback_clean_period_secs, 120);
        assert_eq!(effective.policy.detection_quorum, 2);
        assert_eq!(
            effective.sources["telemetry_interval_secs"],
            PolicyScope::Msp
        );
        assert_eq!(
            effective.sources["failback_clean_period_secs"],
            PolicyScope::Practice
        );
        assert_eq!(
            effective.sources["detection_quorum"],
            PolicyScope::Appliance
        );
        assert_eq!(effective.sources["recovery_ms"], PolicyScope::Default);
        assert!(!effective.sources.contains_key("version"));
    }

    #[test]
    fn unknown_keys_wrong_types_and_unsafe_values_are_refused_with_the_field_named() {
        for (bad, field) in [
            (json!({"telemetry_interval": 5}), "telemetry_interval"),
            (json!({"version": 9}), "version"),
            (json!({"detection_quorum": "two"}), "detection_quorum"),
            (json!({"detection_silence_ms": 50}), "detection_silence_ms"),
            (
                json!({"critical_apps": [{"name": "EHR", "endpoints": [{"kind": "https", "url": "ftp://x"}]}]}),
                "critical_apps",
            ),
            (
                json!({"drill_schedule": {"every_days": 7, "window": {"kind": "local_time", "at": "25:00"}, "duration_secs": 60}}),
                "drill_schedule",
            ),
        ] {
            let error = check_overrides(&overrides(bad)).expect_err(field);
            let text = error.to_string();
            assert!(
                text.contains(field) || text.contains("invalid type"),
                "{field}: {text}"
            );
        }
    }

    #[test]
    fn severity_is_tuned_per_kind_and_capped_after_hours() {
        let effective = resolve(&[(
            PolicyScope::Msp,
            &overrides(json!({"alert_severity": {"flapping": "critical", "failback": "warning"}})),
        )])
        .expect("valid");
        let policy = effective.policy;
        assert_eq!(
            policy.severity_of(AlertKind::Flapping, true),
            Severity::Critical
        );
        assert_eq!(
            policy.severity_of(AlertKind::Failback, true),
            Severity::Warning
        );
        assert_eq!(
            policy.severity_of(AlertKind::Failover, true),
            Severity::Critical
        );
        assert_eq!(
            policy.severity_of(AlertKind::Failover, false),
            Severity::Warning,
            "capped while closed"
        );
        assert_eq!(
            policy.severity_of(AlertKind::Failback, false),
            Severity::Warning
        );
        let unknown = check_overrides(&overrides(
            json!({"alert_severity": {"meteor": "critical"}}),
        ));
        assert!(unknown.is_err());
        let bad = check_overrides(&overrides(json!({"flapping_failovers": 1})));
        assert!(
            bad.expect_err("range")
                .to_string()
                .contains("flapping_failovers")
        );
    }

    #[test]
    fn a_drill_window_is_relative_to_clinic_hours_or_a_local_time_that_parses() {
        let schedule = |window| Policy {
            drill_schedule: Some(DrillSchedule {
                every_days: 30,
                window,
                duration_secs: 300,
            }),
            ..Policy::default()
        };
        assert!(
            schedule(DrillWindow::AfterClosing { minutes: 30 })
                .validate()
                .is_ok()
        );
        assert!(
            schedule(DrillWindow::LocalTime { at: "21:15".into() })
                .validate()
                .is_ok()
        );
        assert!(
            schedule(DrillWindow::LocalTime { at: "25:00".into() })
                .validate()
                .is_err()
        );
        assert!(
            schedule(DrillWindow::BeforeOpening { minutes: 1000 })
                .validate()
                .is_err()
        );
    }
}
