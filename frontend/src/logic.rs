//! Pure presentation logic: no DOM, no network, no clock. Everything here compiles on any target and
//! is unit-tested.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use stayopen_shared::alerts::{AlertKind, OpenSpan};
use stayopen_shared::api::{ApplianceView, EnrollmentTokenView, MetricPoint, Role, StreamEvent};
use stayopen_shared::delivery::OutboxReport;
use stayopen_shared::ids::{ApplianceId, PracticeId, UserId};
use stayopen_shared::policy::{PolicyOverrides, PolicyScope};
use stayopen_shared::telemetry::UplinkTelemetry;
use stayopen_shared::tunnel::{TunnelMode, TunnelReport, TunnelState};

pub mod cellular;
pub mod compliance;
pub use compliance::*;

// ---------------------------------------------------------------------------------------------
// Time and numbers
// ---------------------------------------------------------------------------------------------

/// Formats how long before `now` the instant `then` was, e.g. `"12 s ago"`, `"5 min ago"`.
///
/// An instant in the future (clock skew between the browser and the cloud) reads as `"just now"`.
pub fn relative_time(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    relative_seconds((now - then).num_seconds())
}

/// Formats an age in whole seconds the same way as [`relative_time`].
pub fn relative_seconds(seconds: i64) -> String {
    match seconds {
        s if s <= 0 => "just now".to_owned(),
        s => format!("{} ago", duration_text(s)),
    }
}

/// A duration in its largest sensible unit, e.g. `"45 s"`, `"12 min"`, `"3 h 20 min"`, `"2 d"`.
pub fn duration_text(seconds: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    match seconds.max(0) {
        s if s < MINUTE => format!("{s} s"),
        s if s < HOUR => format!("{} min", s / MINUTE),
        s if s < DAY => match (s % HOUR) / MINUTE {
            0 => format!("{} h", s / HOUR),
            m => format!("{} h {m} min", s / HOUR),
        },
        s => format!("{} d", s / DAY),
    }
}

/// A timestamp for tables, `"2026-03-04 14:05:09 UTC"`: unambiguous for an auditor, sortable.
// Written out by hand rather than with chrono's `format`, whose format-string interpreter would
// be compiled into the dashboard just for these two texts.
pub fn timestamp_text(at: DateTime<Utc>) -> String {
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        date_text(at.date_naive()),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A calendar date, `"2026-03-04"`.
pub fn date_text(date: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// The value of an `<input type="date">` (`"2026-03-04"`); `None` when empty or not a date.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let mut parts = text.trim().splitn(3, '-');
    let year = parts.next()?.parse().ok()?;
    let month = parts.next()?.parse().ok()?;
    let day = parts.next()?.parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// Median probe round-trip time for display, e.g. `"23 ms"`; `"–"` when no probe answered.
pub fn format_rtt(rtt_ms: Option<f64>) -> String {
    match rtt_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            if ms < 10.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
        _ => "–".to_owned(),
    }
}

/// Probe loss for display, e.g. `"0% loss"`, `"2.5% loss"`.
pub fn format_loss(loss_pct: f64) -> String {
    if !loss_pct.is_finite() {
        return "–".to_owned();
    }
    let pct = loss_pct.clamp(0.0, 100.0);
    if pct.fract() == 0.0 {
        format!("{pct:.0}% loss")
    } else {
        format!("{pct:.1}% loss")
    }
}

/// Probe results of one uplink for display, e.g. `"23 ms · 0% loss"`; only the loss when no probe
/// answered.
pub fn uplink_metrics(uplink: &UplinkTelemetry) -> String {
    match uplink.rtt_ms {
        Some(_) => format!(
            "{} · {}",
            format_rtt(uplink.rtt_ms),
            format_loss(uplink.loss_pct)
        ),
        None => format_loss(uplink.loss_pct),
    }
}

/// A byte count for people, e.g. `"1.4 GB"`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Count with a noun, `"1 appliance"`, `"3 appliances"`.
pub fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

// ---------------------------------------------------------------------------------------------
// Appliances
// ---------------------------------------------------------------------------------------------

/// What the appliance's outbox says about delivery, for people: whether everything reached the
/// cloud, how much waits, and — after a long outage — what the appliance had to give up.
pub fn outbox_text(report: Option<&OutboxReport>) -> String {
    let Some(report) = report else {
        return "not reported yet".to_owned();
    };
    // Taken just before the message carrying it was stored, so it does not count itself.
    let waiting = match report.pending {
        0 => "everything delivered".to_owned(),
        n => format!(
            "{} waiting ({})",
            plural(u32::try_from(n).unwrap_or(u32::MAX), "message", "messages"),
            bytes_text(report.pending_bytes)
        ),
    };
    let mut given_up = Vec::new();
    if report.events_dropped > 0 {
        given_up.push(plural(
            u32::try_from(report.events_dropped).unwrap_or(u32::MAX),
            "event",
            "events",
        ));
    }
    if report.telemetry_dropped > 0 {
        given_up.push(plural(
            u32::try_from(report.telemetry_dropped).unwrap_or(u32::MAX),
            "telemetry sample",
            "telemetry samples",
        ));
    }
    let mut text = waiting;
    if report.telemetry_rolled_up > 0 {
        text.push_str(&format!(
            "; {} merged into coarser ones while the outbox was full",
            plural(
                u32::try_from(report.telemetry_rolled_up).unwrap_or(u32::MAX),
                "telemetry sample",
                "telemetry samples"
            )
        ));
    }
    if !given_up.is_empty() {
        text.push_str(&format!(
            "; lost while the outbox was full: {}",
            given_up.join(" and ")
        ));
    }
    text
}

/// The uplink the appliance prefers: the lowest priority number (the first one listed on a tie).
pub fn primary_uplink(uplinks: &[UplinkTelemetry]) -> Option<&UplinkTelemetry> {
    // `min_by_key` returns the last of equal elements; fold keeps the first.
    uplinks
        .iter()
        .fold(None, |best: Option<&UplinkTelemetry>, u| match best {
            Some(b) if b.priority <= u.priority => Some(b),
            _ => Some(u),
        })
}

/// Whether the appliance's traffic runs over an uplink other than its primary one.
///
/// Only the reported data is considered: an offline appliance reports the uplink it last used. An
/// appliance with no active uplink (every uplink down) or no uplinks reported is not "on backup".
pub fn is_on_backup(appliance: &ApplianceView) -> bool {
    match (&appliance.active_uplink, primary_uplink(&appliance.uplinks)) {
        (Some(active), Some(primary)) => *active != primary.name,
        _ => false,
    }
}

/// Uplinks in the order the failover engine tries them: by priority, stable for equal priorities.
pub fn uplinks_by_priority(uplinks: &[UplinkTelemetry]) -> Vec<UplinkTelemetry> {
    let mut sorted = uplinks.to_vec();
    sorted.sort_by_key(|u| u.priority);
    sorted
}

// ---------------------------------------------------------------------------------------------
// Routes and roles
// ---------------------------------------------------------------------------------------------

/// Which policy layer the policies page edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyTarget {
    Msp,
    Practice(PracticeId),
    Appliance(ApplianceId),
}

impl PolicyTarget {
    pub fn scope(self) -> PolicyScope {
        match self {
            PolicyTarget::Msp => PolicyScope::Msp,
            PolicyTarget::Practice(_) => PolicyScope::Practice,
            PolicyTarget::Appliance(_) => PolicyScope::Appliance,
        }
    }

    /// The layer's API path.
    pub fn api_path(self) -> String {
        match self {
            PolicyTarget::Msp => "/api/v1/policy".to_owned(),
            PolicyTarget::Practice(id) => format!("/api/v1/practices/{id}/policy"),
            PolicyTarget::Appliance(id) => format!("/api/v1/appliances/{id}/policy"),
        }
    }
}

/// A page of the dashboard, addressed by the URL's fragment (`#/practices/{id}`), so deep links
/// and the back button work without the cloud knowing the dashboard's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Fleet,
    /// The fleet-wide appliance list.
    Appliances,
    Practice(PracticeId),
    Appliance(ApplianceId),
    Alerts,
    Policies(PolicyTarget),
    Enrolment(Option<PracticeId>),
    Users,
    ApiTokens,
    Notifications,
    Audit,
    Reports,
    NotFound,
}

/// An entry of the navigation bar; every route belongs to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Fleet,
    Appliances,
    Alerts,
    Policies,
    Enrolment,
    Notifications,
    Reports,
    Users,
    ApiTokens,
    Audit,
}

impl Section {
    /// In the order of the navigation bar: daily work first, administration last.
    pub const ALL: [Section; 10] = [
        Section::Fleet,
        Section::Appliances,
        Section::Alerts,
        Section::Policies,
        Section::Enrolment,
        Section::Notifications,
        Section::Reports,
        Section::Users,
        Section::ApiTokens,
        Section::Audit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Section::Fleet => "Fleet",
            Section::Appliances => "Appliances",
            Section::Alerts => "Alerts",
            Section::Policies => "Policies",
            Section::Enrolment => "Enrolment",
            Section::Notifications => "Notifications",
            Section::Reports => "Reports",
            Section::Users => "Users",
            Section::ApiTokens => "API tokens",
            Section::Audit => "Audit log",
        }
    }

    pub fn route(self) -> Route {
        match self {
            Section::Fleet => Route::Fleet,
            Section::Appliances => Route::Appliances,
            Section::Alerts => Route::Alerts,
            Section::Policies => Route::Policies(PolicyTarget::Msp),
            Section::Enrolment => Route::Enrolment(None),
            Section::Notifications => Route::Notifications,
            Section::Reports => Route::Reports,
            Section::Users => Route::Users,
            Section::ApiTokens => Route::ApiTokens,
            Section::Audit => Route::Audit,
        }
    }

    /// Whether `role` may use this part of the dashboard. Mirrors the cloud's permissions, which
    /// enforce them anyway: the dashboard must not offer what would only be refused.
    pub fn allowed(self, role: Role) -> bool {
        let caps = Capabilities::of(role);
        match self {
            Section::Fleet | Section::Appliances | Section::Alerts | Section::Reports => true,
            Section::Policies | Section::Enrolment | Section::Notifications => caps.configure,
            Section::Users | Section::ApiTokens => caps.manage_access,
            Section::Audit => caps.view_audit,
        }
    }
}

/// The navigation bar of `role`.
pub fn nav_sections(role: Role) -> Vec<Section> {
    Section::ALL
        .into_iter()
        .filter(|s| s.allowed(role))
        .collect()
}

/// What a role may change, as the cloud's permissions define it (`cloud/src/auth.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Commands, drills, maintenance windows, acknowledging and resolving alerts.
    pub operate: bool,
    /// Policies, enrolment, clinic hours, notification channels.
    pub configure: bool,
    /// Users and API tokens.
    pub manage_access: bool,
    pub view_audit: bool,
    /// Approving an appliance's re-enrolment and restoring a revoked one.
    pub trust_devices: bool,
    /// Signing off a drill as reviewed by management (a compliance officer or an MSP admin).
    pub sign_off_drills: bool,
    /// Editing a practice's critical applications register.
    pub edit_register: bool,
    /// Requesting an evidence package (an auditor only reads them).
    pub request_evidence: bool,
    /// Commenting on an incident.
    pub comment_incidents: bool,
}

impl Capabilities {
    pub fn of(role: Role) -> Self {
        let msp = role.is_msp_wide();
        let admin = role == Role::MspAdmin;
        Self {
            operate: msp,
            configure: msp,
            manage_access: admin,
            view_audit: admin,
            trust_devices: admin,
            sign_off_drills: admin || role == Role::ComplianceOfficer,
            edit_register: msp || role == Role::ComplianceOfficer,
            request_evidence: msp || role == Role::ComplianceOfficer,
            comment_incidents: msp,
        }
    }
}

impl Route {
    /// Parses a URL fragment (`"#/practices/…"`, with or without `#`). Unknown paths and malformed
    /// ids are [`Route::NotFound`]; an empty fragment is the fleet.
    pub fn parse(fragment: &str) -> Route {
        let path = fragment.trim_start_matches('#');
        let path = path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let id = |s: &str| uuid::Uuid::parse_str(s).ok();
        match parts.as_slice() {
            [] | ["fleet"] => Route::Fleet,
            ["appliances"] => Route::Appliances,
            ["practices", p] => id(p).map_or(Route::NotFound, |u| Route::Practice(PracticeId(u))),
            ["appliances", a] => {
                id(a).map_or(Route::NotFound, |u| Route::Appliance(ApplianceId(u)))
            }
            ["alerts"] => Route::Alerts,
            ["policies"] => Route::Policies(PolicyTarget::Msp),
            ["policies", "practices", p] => id(p).map_or(Route::NotFound, |u| {
                Route::Policies(PolicyTarget::Practice(PracticeId(u)))
            }),
            ["policies", "appliances", a] => id(a).map_or(Route::NotFound, |u| {
                Route::Policies(PolicyTarget::Appliance(ApplianceId(u)))
            }),
            ["enrolment"] => Route::Enrolment(None),
            ["enrolment", p] => {
                id(p).map_or(Route::NotFound, |u| Route::Enrolment(Some(PracticeId(u))))
            }
            ["users"] => Route::Users,
            ["api-tokens"] => Route::ApiTokens,
            ["notifications"] => Route::Notifications,
            ["audit"] => Route::Audit,
            ["reports"] => Route::Reports,
            _ => Route::NotFound,
        }
    }

    /// The `href` of a link to this route.
    pub fn href(self) -> String {
        match self {
            Route::Fleet => "#/fleet".to_owned(),
            Route::Appliances => "#/appliances".to_owned(),
            Route::Practice(id) => format!("#/practices/{id}"),
            Route::Appliance(id) => format!("#/appliances/{id}"),
            Route::Alerts => "#/alerts".to_owned(),
            Route::Policies(PolicyTarget::Msp) => "#/policies".to_owned(),
            Route::Policies(PolicyTarget::Practice(id)) => format!("#/policies/practices/{id}"),
            Route::Policies(PolicyTarget::Appliance(id)) => format!("#/policies/appliances/{id}"),
            Route::Enrolment(None) => "#/enrolment".to_owned(),
            Route::Enrolment(Some(id)) => format!("#/enrolment/{id}"),
            Route::Users => "#/users".to_owned(),
            Route::ApiTokens => "#/api-tokens".to_owned(),
            Route::Notifications => "#/notifications".to_owned(),
            Route::Audit => "#/audit".to_owned(),
            Route::Reports => "#/reports".to_owned(),
            Route::NotFound => "#/".to_owned(),
        }
    }

    /// The navigation entry highlighted on this route.
    pub fn section(self) -> Option<Section> {
        Some(match self {
            Route::Fleet | Route::Practice(_) => Section::Fleet,
            Route::Appliances | Route::Appliance(_) => Section::Appliances,
            Route::Alerts => Section::Alerts,
            Route::Policies(_) => Section::Policies,
            Route::Enrolment(_) => Section::Enrolment,
            Route::Users => Section::Users,
            Route::ApiTokens => Section::ApiTokens,
            Route::Notifications => Section::Notifications,
            Route::Audit => Section::Audit,
            Route::Reports => Section::Reports,
            Route::NotFound => return None,
        })
    }

    /// Whether `role` may open this route (a practice it may not see is the cloud's 404).
    pub fn allowed(self, role: Role) -> bool {
        self.section().is_none_or(|s| s.allowed(role))
    }

    pub fn title(self) -> &'static str {
        match self {
            Route::Practice(_) => "Practice",
            Route::Appliance(_) => "Appliance",
            Route::NotFound => "Not found",
            other => other.section().map_or("StayOpen", Section::label),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Live updates
// ---------------------------------------------------------------------------------------------

/// What a page shows, to decide whether a live event concerns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Everything the user may see (the fleet overview's totals).
    Everything,
    /// One practice: its appliances and alerts.
    Practice(PracticeId),
    /// One appliance, and alerts of its practice (an alert event names the alert, not the box).
    Appliance(ApplianceId, Option<PracticeId>),
    /// One appliance's own state (presence, uplinks, telemetry, configuration).
    ApplianceState(ApplianceId),
    /// Alerts anywhere.
    Alerts,
    /// Nothing live (settings pages).
    Nothing,
}

impl Interest {
    pub fn wants(self, event: &StreamEvent) -> bool {
        let is_alert = event.topic == "alert";
        match self {
            Interest::Everything => true,
            Interest::Practice(p) => event.practice_id == p,
            Interest::Appliance(a, practice) => {
                (event.topic == "appliance" && event.id == a.0)
                    || (is_alert && practice.is_none_or(|p| p == event.practice_id))
            }
            Interest::ApplianceState(a) => event.topic == "appliance" && event.id == a.0,
            Interest::Alerts => is_alert,
            Interest::Nothing => false,
        }
    }
}

/// `?a=1&b=x%20y` from the pairs whose value is present and not empty.
pub fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", percent_encode(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub use stayopen_shared::url::percent_encode;

// ---------------------------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------------------------

/// The drawing area of a chart and the ranges it maps: time on x, `0..=y_max` on y.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartFrame {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub y_max: f64,
    pub width: f64,
    pub height: f64,
}

impl ChartFrame {
    pub fn x(&self, at: DateTime<Utc>) -> f64 {
        let span = (self.to - self.from).num_milliseconds().max(1) as f64;
        let offset = (at - self.from).num_milliseconds() as f64;
        (offset / span * self.width).clamp(0.0, self.width)
    }

    pub fn y(&self, value: f64) -> f64 {
        let max = if self.y_max > 0.0 { self.y_max } else { 1.0 };
        self.height - (value / max).clamp(0.0, 1.0) * self.height
    }
}

/// An SVG path through the points whose value is present. A missing value, or a hole in time
/// longer than 1.5 buckets, lifts the pen: a gap in the data is drawn as a gap, never as a line
/// that pretends the link was measured. A point standing alone is drawn as a dot (`h0` with a
/// round line cap).
pub fn chart_path(
    points: &[MetricPoint],
    value: impl Fn(&MetricPoint) -> Option<f64>,
    bucket_secs: u32,
    frame: &ChartFrame,
) -> String {
    let max_step_ms = i64::from(bucket_secs.max(1)) * 1500;
    let mut path = String::new();
    let mut segment_len = 0usize;
    let mut previous_at: Option<DateTime<Utc>> = None;
    for point in points {
        let Some(v) = value(point).filter(|v| v.is_finite()) else {
            if segment_len == 1 {
                path.push_str("h0");
            }
            segment_len = 0;
            previous_at = None;
            continue;
        };
        let contiguous =
            previous_at.is_some_and(|p| (point.at - p).num_milliseconds() <= max_step_ms);
        if !contiguous && segment_len == 1 {
            path.push_str("h0");
        }
        let (x, y) = (frame.x(point.at), frame.y(v));
        if contiguous {
            path.push_str(&format!("L{x:.1},{y:.1}"));
            segment_len += 1;
        } else {
            path.push_str(&format!("M{x:.1},{y:.1}"));
            segment_len = 1;
        }
        previous_at = Some(point.at);
    }
    if segment_len == 1 {
        path.push_str("h0");
    }
    path
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `value`: a y-axis top people can read. At least
/// `floor`, so a quiet link does not fill the chart with noise.
pub fn nice_ceiling(value: f64, floor: f64) -> f64 {
    let v = if value.is_finite() {
        value.max(floor)
    } else {
        floor
    };
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        let candidate = step * magnitude;
        if candidate >= v * 0.999_999 {
            return candidate;
        }
    }
    10.0 * magnitude
}

/// The session-safe tunnel's state in words, for the appliance page.
pub fn tunnel_state_text(state: TunnelState) -> &'static str {
    match state {
        TunnelState::Up => "Up",
        TunnelState::Connecting => "Connecting",
        TunnelState::FallbackDirect => "Fell back to direct — sessions will not survive a failover",
        TunnelState::Off => "Off",
    }
}

/// The tunnel mode in words.
pub fn tunnel_mode_text(mode: TunnelMode) -> &'static str {
    match mode {
        TunnelMode::Off => "Off",
        TunnelMode::Critical => "Critical applications and telemedicine",
        TunnelMode::All => "All traffic",
    }
}

/// How long ago the last handshake with the relay completed.
pub fn handshake_text(secs: Option<u32>) -> String {
    match secs {
        None => "never".to_owned(),
        Some(s) if s < 120 => format!("{s} s ago"),
        Some(s) if s < 7_200 => format!("{} min ago", s / 60),
        Some(s) => format!("{} h ago", s / 3_600),
    }
}

/// Redundant mode's duplicates on one uplink this month, as the appliance page shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedundantUse {
    pub uplink: String,
    pub bytes: u64,
    pub metered: bool,
    /// Past the policy's cap: critical flows use the active uplink only.
    pub over_cap: bool,
    pub text: String,
}

/// A megabyte as the policy's caps count it.
const MB: u64 = 1_000_000;

/// Each uplink's redundant-mode data this month against the policy's cap, which only metered
/// uplinks have (`cap_mb` is the policy's `redundant_metered_cap_mb`, when known). In the order
/// of the uplinks' priority, then any uplink the telemetry no longer lists.
pub fn redundant_use(
    report: &TunnelReport,
    uplinks: &[UplinkTelemetry],
    cap_mb: Option<u32>,
) -> Vec<RedundantUse> {
    let order: Vec<String> = uplinks_by_priority(uplinks)
        .into_iter()
        .map(|u| u.name)
        .collect();
    let mut names: Vec<&String> = report.redundant_bytes.keys().collect();
    names.sort_by_key(|name| order.iter().position(|o| o == *name).unwrap_or(usize::MAX));
    names
        .into_iter()
        .map(|name| {
            let bytes = report.redundant_bytes[name];
            let metered = uplinks.iter().any(|u| &u.name == name && u.metered);
            let (over_cap, text) = match (metered, cap_mb) {
                (true, Some(cap)) => {
                    let cap_bytes = u64::from(cap) * MB;
                    let share = bytes
                        .saturating_mul(100)
                        .checked_div(cap_bytes)
                        .unwrap_or(100);
                    (
                        bytes >= cap_bytes,
                        format!("{} of {cap} MB cap ({share} %)", bytes_text(bytes)),
                    )
                }
                (true, None) => (false, format!("{} (metered)", bytes_text(bytes))),
                (false, _) => (
                    false,
                    format!("{} (not metered, no cap)", bytes_text(bytes)),
                ),
            };
            RedundantUse {
                uplink: name.clone(),
                bytes,
                metered,
                over_cap,
                text,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// How a policy setting is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A whole number, in `unit`.
    Integer(&'static str),
    /// A decimal number, in `unit`.
    Decimal(&'static str),
    /// `info`, `warning` or `critical`.
    Severity,
    /// One of a fixed set of words (a JSON string).
    Choice(&'static [&'static str]),
    /// Structured (lists, maps, the drill schedule): edited as JSON.
    Json,
}

/// A setting of [`stayopen_shared::policy::Policy`] as the policy editor shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyField {
    pub key: &'static str,
    pub label: &'static str,
    pub kind: FieldKind,
    pub group: &'static str,
}

const fn field(
    group: &'static str,
    key: &'static str,
    label: &'static str,
    kind: FieldKind,
) -> PolicyField {
    PolicyField {
        key,
        label,
        kind,
        group,
    }
}

/// Every policy setting a layer may set, grouped as an engineer thinks about them. A test checks
/// this list against the schema, so a new setting cannot be forgotten here. `critical_apps` is not
/// one: the cloud fills it from the practice's critical applications register (Reports page);
/// nor is `tunnel_relay`, which the cloud fills from the relay registry.
pub const POLICY_FIELDS: [PolicyField; 24] = [
    field(
        "Failover",
        "detection_silence_ms",
        "Silence before an uplink is down",
        FieldKind::Integer("ms"),
    ),
    field(
        "Failover",
        "detection_quorum",
        "Probe targets that must answer",
        FieldKind::Integer("targets"),
    ),
    field(
        "Failover",
        "recovery_ms",
        "Clean time before a down uplink is up",
        FieldKind::Integer("ms"),
    ),
    field(
        "Failover",
        "failback_clean_period_secs",
        "Clean time before failing back",
        FieldKind::Integer("s"),
    ),
    field(
        "Failover",
        "failback_max_hold_secs",
        "Longest failback hold while flapping",
        FieldKind::Integer("s"),
    ),
    field(
        "Failover",
        "metered_budget_mb",
        "Monthly probe budget on metered uplinks",
        FieldKind::Integer("MB"),
    ),
    field(
        "Failover",
        "app_check_interval_secs",
        "Critical application check interval on the active uplink",
        FieldKind::Integer("s"),
    ),
    field(
        "Drills",
        "drill_schedule",
        "Drill schedule",
        FieldKind::Json,
    ),
    field(
        "Drills",
        "drill_overdue_days",
        "Days without a drill before it is overdue",
        FieldKind::Integer("days"),
    ),
    field(
        "Alerts",
        "on_backup_alert_secs",
        "On backup before alerting",
        FieldKind::Integer("s"),
    ),
    field(
        "Alerts",
        "degraded_loss_pct",
        "Loss that counts as degraded",
        FieldKind::Decimal("%"),
    ),
    field(
        "Alerts",
        "degraded_rtt_ms",
        "Latency that counts as degraded",
        FieldKind::Integer("ms"),
    ),
    field(
        "Alerts",
        "degraded_for_secs",
        "Degraded this long before alerting",
        FieldKind::Integer("s"),
    ),
    field(
        "Alerts",
        "flapping_failovers",
        "Failovers that count as flapping",
        FieldKind::Integer("failovers"),
    ),
    field(
        "Alerts",
        "flapping_window_secs",
        "Flapping window",
        FieldKind::Integer("s"),
    ),
    field(
        "Alerts",
        "metered_data_alert_mb",
        "Monthly metered data before alerting",
        FieldKind::Integer("MB"),
    ),
    field(
        "Alerts",
        "alert_severity",
        "Severity per alert kind",
        FieldKind::Json,
    ),
    field(
        "Alerts",
        "after_hours_max_severity",
        "Highest severity after hours",
        FieldKind::Severity,
    ),
    field(
        "Alerts",
        "notifications_per_hour",
        "Notifications per practice and hour",
        FieldKind::Integer("per hour"),
    ),
    field(
        "Session-safe tunnel",
        "tunnel_mode",
        "What goes through the relay",
        FieldKind::Choice(&["off", "critical", "all"]),
    ),
    field(
        "Session-safe tunnel",
        "telemedicine_services",
        "Telemedicine services (host, address or CIDR)",
        FieldKind::Json,
    ),
    field(
        "Session-safe tunnel",
        "redundant_critical",
        "Duplicate critical flows over every uplink",
        FieldKind::Json,
    ),
    field(
        "Session-safe tunnel",
        "redundant_metered_cap_mb",
        "Monthly duplicates on a metered uplink",
        FieldKind::Integer("MB"),
    ),
    field(
        "Telemetry",
        "telemetry_interval_secs",
        "Telemetry interval",
        FieldKind::Integer("s"),
    ),
];

/// The text an input shows for a JSON value of a setting.
pub fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// A setting's value as people read it (not as they edit it): with its unit, milliseconds past a
/// second also in seconds and seconds past two minutes also in minutes or hours, and an empty
/// list, map or null as "none".
pub fn setting_text(kind: FieldKind, value: &serde_json::Value) -> String {
    use serde_json::Value;
    let empty = match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if empty {
        return "none".to_owned();
    }
    let number = value.as_f64();
    match (kind, number) {
        (FieldKind::Integer(unit) | FieldKind::Decimal(unit), Some(n)) => {
            let plain = format!("{} {unit}", value_text(value));
            let also = match unit {
                "ms" if n >= 1_000.0 => Some(format!("{} s", trim_number(n / 1_000.0))),
                "s" if n >= 7_200.0 => Some(format!("{} h", trim_number(n / 3_600.0))),
                "s" if n >= 120.0 => Some(format!("{} min", trim_number(n / 60.0))),
                _ => None,
            };
            match also {
                Some(also) => format!("{plain} ({also})"),
                None => plain,
            }
        }
        (FieldKind::Json, _) => serde_json::to_string(value).unwrap_or_default(),
        _ => value_text(value),
    }
}

/// The confirmation for giving `count` appliances the own policy settings of the appliance
/// `source`: every setting it carries, as people read it, so nobody copies settings unseen.
pub fn copy_settings_question(
    source: &str,
    count: u32,
    overrides: &stayopen_shared::policy::PolicyOverrides,
) -> String {
    let targets = plural(count, "appliance", "appliances");
    if overrides.is_empty() {
        return format!(
            "{source} has no settings of its own. Clear the own settings of {targets}, so their practice's and the MSP's settings apply again?"
        );
    }
    let settings: Vec<String> = overrides
        .iter()
        .map(
            |(key, value)| match POLICY_FIELDS.iter().find(|f| f.key == key) {
                Some(field) => format!("{}: {}", field.label, setting_text(field.kind, value)),
                None => format!("{key}: {}", value_text(value)),
            },
        )
        .collect();
    format!(
        "Give {targets} the settings of {source}? They replace each one's own settings; what {source} inherits is not copied.\n\n{}",
        settings.join("\n")
    )
}

/// `1.5`, `10`, `2.25`: at most two decimals, none when whole.
fn trim_number(n: f64) -> String {
    let text = format!("{n:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Parses what was typed for a setting into the JSON the API takes. The message says what is
/// wrong in the editor's words; the cloud checks ranges and answers with its own message.
pub fn parse_field(kind: FieldKind, text: &str) -> Result<serde_json::Value, String> {
    let text = text.trim();
    match kind {
        FieldKind::Integer(_) => text
            .parse::<u64>()
            .map(serde_json::Value::from)
            .map_err(|_| "enter a whole number".to_owned()),
        FieldKind::Decimal(_) => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(serde_json::Value::from(v)),
            _ => Err("enter a number".to_owned()),
        },
        FieldKind::Severity => match text {
            "info" | "warning" | "critical" => Ok(serde_json::Value::from(text)),
            _ => Err("choose info, warning or critical".to_owned()),
        },
        FieldKind::Choice(options) => {
            if options.contains(&text) {
                Ok(serde_json::Value::from(text))
            } else {
                Err(format!("choose {}", options.join(", ")))
            }
        }
        FieldKind::Json => serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}")),
    }
}

/// A setting the editor could not turn into a value, or the cloud refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub key: String,
    pub message: String,
}

/// The overrides of a layer from the editor's rows: `(key, Some(text))` overrides a setting,
/// `(key, None)` inherits it. Stops at the first setting that does not parse.
pub fn build_overrides(rows: &[(&str, Option<String>)]) -> Result<PolicyOverrides, FieldError> {
    let mut overrides = PolicyOverrides::new();
    for (key, text) in rows {
        let Some(text) = text else { continue };
        let kind = POLICY_FIELDS
            .iter()
            .find(|f| f.key == *key)
            .map_or(FieldKind::Json, |f| f.kind);
        let value = parse_field(kind, text).map_err(|message| FieldError {
            key: (*key).to_owned(),
            message,
        })?;
        overrides.insert((*key).to_owned(), value);
    }
    Ok(overrides)
}

/// The setting a cloud validation message is about (`"flapping_failovers must be between …"`,
/// `"drill_schedule: …"`), so the editor can mark it. The longest match wins, since one key can
/// contain another (`failback_clean_period_secs` inside `failback_max_hold_secs`' message).
pub fn field_named_in(message: &str) -> Option<&'static str> {
    POLICY_FIELDS
        .iter()
        .map(|f| f.key)
        .filter(|key| {
            message.match_indices(key).any(|(at, _)| {
                let before = message[..at].chars().next_back();
                let after = message[at + key.len()..].chars().next();
                let boundary =
                    |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                boundary(before) && boundary(after)
            })
        })
        .max_by_key(|key| {
            // The key named first is the subject; later ones are context ("… between X and …").
            let first = message.find(key).unwrap_or(usize::MAX);
            (usize::MAX - first, key.len())
        })
}

pub fn scope_label(scope: PolicyScope) -> &'static str {
    match scope {
        PolicyScope::Default => "default",
        PolicyScope::Msp => "MSP",
        PolicyScope::Practice => "practice",
        PolicyScope::Appliance => "appliance",
    }
}

// ---------------------------------------------------------------------------------------------
// Clinic hours
// ---------------------------------------------------------------------------------------------

/// One day's spans as typed: `"08:00-12:00, 13:00-17:30"`; empty means closed.
pub fn parse_spans(text: &str) -> Result<Vec<OpenSpan>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|span| {
            let (open, close) = span
                .split_once('-')
                .or_else(|| span.split_once('–'))
                .ok_or_else(|| format!("{span:?}: write spans as HH:MM-HH:MM"))?;
            Ok(OpenSpan {
                open: open.trim().to_owned(),
                close: close.trim().to_owned(),
            })
        })
        .collect()
}

pub fn format_spans(spans: &[OpenSpan]) -> String {
    spans
        .iter()
        .map(|s| format!("{}-{}", s.open, s.close))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Enrolment
// ---------------------------------------------------------------------------------------------

/// The `[cloud]` section an appliance needs to enrol with `token` (docs/appliance-config.md):
/// added to the file `stayopen-appliance run --config` reads, used only at the first start. A
/// cloud served over plain `http://` (a lab) needs the appliance's explicit opt-in, which the
/// section then carries.
pub fn appliance_cloud_section(api_url: &str, token: &str) -> String {
    let plain = if api_url.starts_with("http://") {
        "allow_plain_http = true\n"
    } else {
        ""
    };
    format!("[cloud]\napi_url = \"{api_url}\"\n{plain}enrollment_token = \"{token}\"\n")
}

/// The shell commands an installer runs on the appliance: append the `[cloud]` section to its
/// configuration and start the agent, which enrols on its first start.
pub fn appliance_enrol_command(config_path: &str, api_url: &str, token: &str) -> String {
    format!(
        "cat >> {config_path} <<'EOF'\n{}EOF\nstayopen-appliance run --config {config_path}",
        appliance_cloud_section(api_url, token)
    )
}

/// An SVG path drawing the dark modules of a QR code, one unit per module, offset by the quiet
/// zone of `border` modules. Runs of dark modules in a row become one rectangle, which keeps the
/// path short.
pub fn qr_svg_path(size: i32, border: i32, dark: impl Fn(i32, i32) -> bool) -> String {
    let mut path = String::new();
    for y in 0..size {
        let mut x = 0;
        while x < size {
            if dark(x, y) {
                let start = x;
                while x < size && dark(x, y) {
                    x += 1;
                }
                path.push_str(&format!(
                    "M{},{}h{}v1h-{}z",
                    start + border,
                    y + border,
                    x - start,
                    x - start
                ));
            } else {
                x += 1;
            }
        }
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Alerts and reports
// ---------------------------------------------------------------------------------------------

/// Who did something, as people read it: the cloud records users as `user:{id}`; the signed-in
/// user is shown by e-mail, others stay as recorded (the API lists users only for admins).
pub fn actor_label(actor: &str, me: Option<(UserId, &str)>) -> String {
    match me {
        Some((id, email)) if actor == format!("user:{id}") => email.to_owned(),
        _ => actor.to_owned(),
    }
}

pub fn alert_kind_label(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::ApplianceOffline => "Appliance offline",
        AlertKind::Failover => "Failover",
        AlertKind::Failback => "Failback",
        AlertKind::OnBackupLong => "On backup too long",
        AlertKind::UplinkDown => "Uplink down",
        AlertKind::DrillFailed => "Drill failed",
        AlertKind::PolicyApplyFailed => "Policy not applied",
        AlertKind::CertificateExpiring => "Certificate expiring",
        AlertKind::UplinkDegraded => "Uplink degraded",
        AlertKind::Flapping => "Flapping",
        AlertKind::MeteredOverBudget => "Metered over budget",
        AlertKind::DrillOverdue => "Drill overdue",
        AlertKind::RelayUnreachable => "Relay unreachable",
    }
}

/// Availability for display: `"99.982%"`, never rounding up to 100 while there was downtime.
pub fn availability_text(pct: Option<f64>) -> String {
    match pct {
        None => "–".to_owned(),
        Some(p) if p >= 100.0 => "100%".to_owned(),
        Some(p) => {
            let floored = (p * 1000.0).floor() / 1000.0;
            format!("{floored:.3}%")
        }
    }
}

/// What an enrolment token is good for now: `revoked`, `expired`, `used up` or `valid` (the first
/// that applies).
pub fn token_state(token: &EnrollmentTokenView, now: DateTime<Utc>) -> &'static str {
    if token.revoked_at.is_some() {
        "revoked"
    } else if token.expires_at <= now {
        "expired"
    } else if token.uses >= token.max_uses {
        "used up"
    } else {
        "valid"
    }
}

// The tests run as wasm under Node (`wasm-bindgen-test-runner`), the target this code ships for.
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use stayopen_shared::api::ApplianceState;
    use stayopen_shared::ids::SiteId;
    use stayopen_shared::policy::Policy;
    use stayopen_shared::telemetry::UplinkHealth;
    use uuid::Uuid;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0)
            .single()
            .unwrap_or_default()
    }

    #[wasm_bindgen_test]
    fn the_outbox_line_says_what_waits_and_what_a_long_outage_cost() {
        assert_eq!(outbox_text(None), "not reported yet");
        let report = |pending, rolled, telemetry, events| OutboxReport {
            pending,
            pending_bytes: 2048,
            telemetry_rolled_up: rolled,
            telemetry_dropped: telemetry,
            events_dropped: events,
        };
        assert_eq!(
            outbox_text(Some(&report(0, 0, 0, 0))),
            "everything delivered"
        );
        assert_eq!(
            outbox_text(Some(&report(3, 0, 0, 0))),
            "3 messages waiting (2.0 kB)"
        );
        assert_eq!(
            outbox_text(Some(&report(0, 12, 3, 1))),
            "everything delivered; 12 telemetry samples merged into coarser ones while the outbox \
             was full; lost while the outbox was full: 1 event and 3 telemetry samples"
        );
    }

    #[wasm_bindgen_test]
    fn the_tunnel_panel_words_its_state_and_counts_duplicates_against_the_metered_cap() {
        use stayopen_shared::tunnel::{TunnelMode, TunnelReport, TunnelState};
        assert_eq!(tunnel_state_text(TunnelState::Up), "Up");
        assert_eq!(
            tunnel_state_text(TunnelState::FallbackDirect),
            "Fell back to direct — sessions will not survive a failover"
        );
        assert_eq!(tunnel_mode_text(TunnelMode::All), "All traffic");
        assert_eq!(handshake_text(None), "never");
        assert_eq!(handshake_text(Some(7)), "7 s ago");
        assert_eq!(handshake_text(Some(600)), "10 min ago");
        assert_eq!(handshake_text(Some(36_000)), "10 h ago");
        let report = TunnelReport {
            mode: TunnelMode::Critical,
            state: TunnelState::Up,
            relay: Some("relay-1".into()),
            last_handshake_secs: Some(3),
            redundant: true,
            redundant_bytes: [
                ("lte".to_owned(), 1_500_000_000),
                ("fiber".to_owned(), 2_000_000),
                ("gone".to_owned(), 5),
            ]
            .into(),
            tunnel_bytes: 0,
        };
        // fiber is primary and unmetered; lte is a metered backup.
        let uplinks = [uplink("lte", 1), uplink("fiber", 0)];
        let rows = redundant_use(&report, &uplinks, Some(2048));
        let texts: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|r| (r.uplink.as_str(), r.text.as_str(), r.over_cap))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("fiber", "2.0 MB (not metered, no cap)", false),
                ("lte", "1.5 GB of 2048 MB cap (73 %)", false),
                ("gone", "5 B (not metered, no cap)", false),
            ]
        );
        let over = redundant_use(&report, &uplinks, Some(1000));
        assert!(over[1].over_cap, "{over:?}");
        assert_eq!(
            redundant_use(&report, &uplinks, None)[1].text,
            "1.5 GB (metered)"
        );
    }

    #[wasm_bindgen_test]
    fn a_choice_setting_accepts_only_its_words() {
        let kind = FieldKind::Choice(&["off", "critical", "all"]);
        assert_eq!(parse_field(kind, " all "), Ok(serde_json::json!("all")));
        assert_eq!(
            parse_field(kind, "everything"),
            Err("choose off, critical, all".to_owned())
        );
    }

    #[wasm_bindgen_test]
    fn timestamps_and_dates_are_written_iso_style_with_leading_zeros() {
        let at = Utc
            .with_ymd_and_hms(2026, 3, 4, 7, 5, 9)
            .single()
            .expect("a time");
        assert_eq!(timestamp_text(at), "2026-03-04 07:05:09 UTC");
        assert_eq!(date_text(at.date_naive()), "2026-03-04");
    }

    #[wasm_bindgen_test]
    fn a_date_input_parses_to_its_day_and_anything_else_to_nothing() {
        assert_eq!(
            parse_date("2026-02-28"),
            NaiveDate::from_ymd_opt(2026, 2, 28)
        );
        assert_eq!(
            parse_date(" 2026-12-01 "),
            NaiveDate::from_ymd_opt(2026, 12, 1)
        );
        for bad in ["", "2026-02-30", "2026-13-01", "tomorrow", "2026-02"] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    fn uplink(name: &str, priority: u8) -> UplinkTelemetry {
        UplinkTelemetry {
            name: name.to_owned(),
            priority,
            metered: priority > 0,
            health: UplinkHealth::Up,
            rtt_ms: Some(20.0),
            loss_pct: 0.0,
            rx_bytes: 0,
            tx_bytes: 0,
            cellular: None,
        }
    }

    fn appliance(online: bool, active: Option<&str>) -> ApplianceView {
        ApplianceView {
            id: ApplianceId(Uuid::from_u128(1)),
            practice_id: PracticeId(Uuid::from_u128(10)),
            practice_name: "Riverside".into(),
            site_id: SiteId(Uuid::from_u128(2)),
            site_name: "Main St".to_owned(),
            serial: "SO-1".to_owned(),
            model: "test".to_owned(),
            agent_version: "0.1.0".to_owned(),
            online,
            state: ApplianceState::Offline,
            active_uplink: active.map(str::to_owned),
            active_uplink_kind: None,
            last_seen: Some(at(0)),
            // Listed out of priority order on purpose.
            uplinks: vec![uplink("lte", 1), uplink("fiber", 0)],
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
            tags: Vec::new(),
        }
    }

    fn point(seconds: i64, value: Option<f64>) -> MetricPoint {
        MetricPoint {
            at: at(seconds),
            rtt_ms: value,
            loss_pct: value,
        }
    }

    #[wasm_bindgen_test]
    fn a_token_reads_revoked_before_expired_before_used_up() {
        let token = EnrollmentTokenView {
            id: Uuid::nil(),
            practice_id: PracticeId(Uuid::nil()),
            site_id: SiteId(Uuid::nil()),
            created_by: None,
            created_by_email: None,
            created_at: at(0),
            expires_at: at(100),
            uses: 1,
            max_uses: 2,
            revoked_at: None,
        };
        assert_eq!(token_state(&token, at(50)), "valid");
        assert_eq!(
            token_state(
                &EnrollmentTokenView {
                    uses: 2,
                    ..token.clone()
                },
                at(50)
            ),
            "used up"
        );
        assert_eq!(token_state(&token, at(100)), "expired");
        let revoked = EnrollmentTokenView {
            revoked_at: Some(at(10)),
            uses: 2,
            ..token
        };
        assert_eq!(token_state(&revoked, at(200)), "revoked");
    }

    #[wasm_bindgen_test]
    fn relative_time_picks_a_readable_unit() {
        assert_eq!(relative_time(at(12), at(0)), "12 s ago");
        assert_eq!(relative_time(at(0), at(0)), "just now");
        assert_eq!(relative_time(at(0), at(5)), "just now");
        assert_eq!(relative_time(at(60), at(0)), "1 min ago");
        assert_eq!(relative_time(at(7_200), at(0)), "2 h ago");
        assert_eq!(relative_time(at(3 * 86_400 + 5), at(0)), "3 d ago");
        assert_eq!(duration_text(3 * 3600 + 20 * 60), "3 h 20 min");
    }

    #[wasm_bindgen_test]
    fn primary_is_the_lowest_priority_number_and_the_first_on_a_tie() {
        let uplinks = vec![uplink("lte", 1), uplink("fiber", 0), uplink("cable", 0)];
        assert_eq!(
            primary_uplink(&uplinks).map(|u| u.name.as_str()),
            Some("fiber")
        );
        assert!(primary_uplink(&[]).is_none());
    }

    #[wasm_bindgen_test]
    fn backup_means_the_active_uplink_is_not_the_primary() {
        assert!(!is_on_backup(&appliance(true, Some("fiber"))));
        assert!(is_on_backup(&appliance(true, Some("lte"))));
        assert!(!is_on_backup(&appliance(true, None)));
        let mut bare = appliance(true, Some("lte"));
        bare.uplinks.clear();
        assert!(!is_on_backup(&bare));
    }

    #[wasm_bindgen_test]
    fn settings_read_with_their_unit_in_the_unit_people_think_in_and_empty_as_none() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json");
        assert_eq!(
            setting_text(FieldKind::Integer("ms"), &json("1500")),
            "1500 ms (1.5 s)"
        );
        assert_eq!(
            setting_text(FieldKind::Integer("ms"), &json("300")),
            "300 ms"
        );
        assert_eq!(
            setting_text(FieldKind::Integer("s"), &json("600")),
            "600 s (10 min)"
        );
        assert_eq!(
            setting_text(FieldKind::Integer("s"), &json("86400")),
            "86400 s (24 h)"
        );
        assert_eq!(setting_text(FieldKind::Integer("s"), &json("30")), "30 s");
        assert_eq!(setting_text(FieldKind::Json, &json("[]")), "none");
        assert_eq!(setting_text(FieldKind::Json, &json("{}")), "none");
        assert_eq!(setting_text(FieldKind::Json, &json("null")), "none");
        assert_eq!(
            setting_text(FieldKind::Json, &json("[\"ehr\"]")),
            "[\"ehr\"]"
        );
    }

    #[wasm_bindgen_test]
    fn copying_settings_asks_with_each_setting_as_people_read_it() {
        let overrides: stayopen_shared::policy::PolicyOverrides = serde_json::from_str(
            r#"{"detection_silence_ms": 1500, "failback_clean_period_secs": 600}"#,
        )
        .expect("overrides");
        let question = copy_settings_question("SO-000003", 2, &overrides);
        assert!(
            question.starts_with("Give 2 appliances the settings of SO-000003?"),
            "{question}"
        );
        assert!(
            question.contains("Silence before an uplink is down: 1500 ms (1.5 s)"),
            "{question}"
        );
        assert!(
            question.contains("Clean time before failing back: 600 s (10 min)"),
            "{question}"
        );
        assert!(!question.contains("detection_silence_ms"), "{question}");

        let none = copy_settings_question("SO-000003", 1, &Default::default());
        assert!(
            none.starts_with(
                "SO-000003 has no settings of its own. Clear the own settings of 1 appliance"
            ),
            "{none}"
        );
    }

    #[wasm_bindgen_test]
    fn uplinks_sort_by_priority() {
        let sorted = uplinks_by_priority(&appliance(true, None).uplinks);
        let names: Vec<_> = sorted.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["fiber", "lte"]);
    }

    #[wasm_bindgen_test]
    fn rtt_loss_and_bytes_format_compactly() {
        assert_eq!(format_rtt(Some(23.4)), "23 ms");
        assert_eq!(format_rtt(Some(4.26)), "4.3 ms");
        assert_eq!(format_rtt(None), "–");
        assert_eq!(format_loss(2.5), "2.5% loss");
        assert_eq!(format_loss(150.0), "100% loss");
        assert_eq!(uplink_metrics(&uplink("fiber", 0)), "20 ms · 0% loss");
        assert_eq!(bytes_text(999), "999 B");
        assert_eq!(bytes_text(1_400_000_000), "1.4 GB");
        assert_eq!(plural(1, "site", "sites"), "1 site");
        assert_eq!(plural(0, "site", "sites"), "0 sites");
    }

    #[wasm_bindgen_test]
    fn routes_survive_a_round_trip_through_their_links() {
        let p = PracticeId(Uuid::from_u128(7));
        let a = ApplianceId(Uuid::from_u128(8));
        for route in [
            Route::Fleet,
            Route::Practice(p),
            Route::Appliance(a),
            Route::Alerts,
            Route::Policies(PolicyTarget::Msp),
            Route::Policies(PolicyTarget::Practice(p)),
            Route::Policies(PolicyTarget::Appliance(a)),
            Route::Enrolment(None),
            Route::Enrolment(Some(p)),
            Route::Appliances,
            Route::Users,
            Route::ApiTokens,
            Route::Notifications,
            Route::Audit,
            Route::Reports,
        ] {
            assert_eq!(Route::parse(&route.href()), route, "{route:?}");
        }
        assert_eq!(Route::parse(""), Route::Fleet);
        assert_eq!(Route::parse("#/"), Route::Fleet);
        assert_eq!(Route::parse("#/practices/not-a-uuid"), Route::NotFound);
        assert_eq!(Route::parse("#/nowhere"), Route::NotFound);
    }

    #[wasm_bindgen_test]
    fn each_role_is_offered_only_what_it_may_do() {
        let labels = |role| {
            nav_sections(role)
                .into_iter()
                .map(Section::label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(Role::MspAdmin).len(), Section::ALL.len());
        let technician = labels(Role::MspTechnician);
        assert!(technician.contains(&"Policies"));
        assert!(!technician.contains(&"Users"));
        assert!(!technician.contains(&"API tokens"));
        assert!(!technician.contains(&"Audit log"));
        for role in [Role::ComplianceOfficer, Role::Auditor] {
            assert_eq!(labels(role), ["Fleet", "Appliances", "Alerts", "Reports"]);
            assert!(!Route::Users.allowed(role));
            assert!(!Route::Policies(PolicyTarget::Msp).allowed(role));
            assert!(Route::Practice(PracticeId(Uuid::nil())).allowed(role));
            assert!(!Capabilities::of(role).operate);
        }
    }

    #[wasm_bindgen_test]
    fn an_auditor_only_reads_the_evidence_and_an_officer_signs_drills_off() {
        let caps = Capabilities::of;
        let auditor = caps(Role::Auditor);
        assert!(!auditor.sign_off_drills && !auditor.edit_register);
        assert!(!auditor.request_evidence && !auditor.comment_incidents);
        let officer = caps(Role::ComplianceOfficer);
        assert!(officer.sign_off_drills && officer.edit_register && officer.request_evidence);
        assert!(
            !officer.comment_incidents,
            "root causes and comments are the MSP's"
        );
        let technician = caps(Role::MspTechnician);
        assert!(!technician.sign_off_drills && technician.edit_register);
        assert!(technician.comment_incidents && technician.operate);
        assert!(caps(Role::MspAdmin).sign_off_drills);
    }

    #[wasm_bindgen_test]
    fn live_events_reach_only_the_pages_that_show_their_subject() {
        let p = PracticeId(Uuid::from_u128(10));
        let a = ApplianceId(Uuid::from_u128(1));
        let event = |topic: &str, id: u128, practice: u128| StreamEvent {
            topic: topic.to_owned(),
            id: Uuid::from_u128(id),
            practice_id: PracticeId(Uuid::from_u128(practice)),
        };
        assert!(Interest::Everything.wants(&event("appliance", 5, 99)));
        assert!(Interest::Practice(p).wants(&event("appliance", 5, 10)));
        assert!(!Interest::Practice(p).wants(&event("alert", 5, 11)));
        assert!(Interest::Appliance(a, Some(p)).wants(&event("appliance", 1, 10)));
        assert!(!Interest::Appliance(a, Some(p)).wants(&event("appliance", 2, 10)));
        assert!(Interest::Appliance(a, Some(p)).wants(&event("alert", 77, 10)));
        assert!(!Interest::Appliance(a, Some(p)).wants(&event("alert", 77, 11)));
        assert!(Interest::ApplianceState(a).wants(&event("appliance", 1, 10)));
        assert!(!Interest::ApplianceState(a).wants(&event("alert", 1, 10)));
        assert!(Interest::Alerts.wants(&event("alert", 1, 1)));
        assert!(!Interest::Alerts.wants(&event("appliance", 1, 1)));
        assert!(!Interest::Nothing.wants(&event("alert", 1, 1)));
    }

    #[wasm_bindgen_test]
    fn query_strings_skip_empty_values_and_encode_the_rest() {
        assert_eq!(
            query_string(&[("q", None), ("cursor", Some(String::new()))]),
            ""
        );
        assert_eq!(
            query_string(&[
                ("limit", Some("50".into())),
                ("q", Some("Smile & Co".into()))
            ]),
            "?limit=50&q=Smile%20%26%20Co"
        );
        assert_eq!(percent_encode("a+b/ü"), "a%2Bb%2F%C3%BC");
    }

    fn frame() -> ChartFrame {
        ChartFrame {
            from: at(0),
            to: at(600),
            y_max: 100.0,
            width: 600.0,
            height: 100.0,
        }
    }

    #[wasm_bindgen_test]
    fn a_chart_lifts_the_pen_over_missing_values_and_holes_in_time() {
        let points = vec![
            point(0, Some(0.0)),
            point(60, Some(50.0)),
            point(120, None),
            point(180, Some(100.0)),
            point(240, Some(100.0)),
            // Three buckets missing: a hole, not a line.
            point(480, Some(25.0)),
        ];
        let path = chart_path(&points, |p| p.rtt_ms, 60, &frame());
        assert_eq!(
            path,
            "M0.0,100.0L60.0,50.0M180.0,0.0L240.0,0.0M480.0,75.0h0"
        );
        assert_eq!(chart_path(&[], |p| p.rtt_ms, 60, &frame()), "");
        let lonely = vec![point(0, Some(10.0)), point(60, None)];
        assert_eq!(
            chart_path(&lonely, |p| p.rtt_ms, 60, &frame()),
            "M0.0,90.0h0"
        );
    }

    #[wasm_bindgen_test]
    fn chart_values_outside_the_frame_are_clamped_to_its_edges() {
        let f = frame();
        assert_eq!(f.y(250.0), 0.0);
        assert_eq!(f.y(-3.0), 100.0);
        assert_eq!(f.x(at(-60)), 0.0);
        assert_eq!(f.x(at(900)), 600.0);
    }

    #[wasm_bindgen_test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(23.0, 10.0), 50.0);
        assert_eq!(nice_ceiling(3.0, 10.0), 10.0);
        assert_eq!(nice_ceiling(101.0, 1.0), 200.0);
        assert_eq!(nice_ceiling(100.0, 1.0), 100.0);
        assert_eq!(nice_ceiling(f64::NAN, 5.0), 5.0);
        assert_eq!(nice_ceiling(0.0, 0.0), 1.0);
    }

    #[wasm_bindgen_test]
    fn the_policy_editor_knows_every_setting_of_the_schema() {
        let serde_json::Value::Object(defaults) =
            serde_json::to_value(Policy::default()).unwrap_or_default()
        else {
            panic!("the policy is an object");
        };
        let mut schema: Vec<&str> = defaults
            .keys()
            .map(String::as_str)
            .filter(|k| !matches!(*k, "version" | "critical_apps" | "tunnel_relay"))
            .collect();
        let mut editor: Vec<&str> = POLICY_FIELDS.iter().map(|f| f.key).collect();
        schema.sort_unstable();
        editor.sort_unstable();
        assert_eq!(editor, schema);
    }

    #[wasm_bindgen_test]
    fn typed_settings_become_json_or_a_message_naming_the_setting() {
        let overrides = build_overrides(&[
            ("failback_clean_period_secs", Some(" 60 ".into())),
            ("degraded_loss_pct", Some("2.5".into())),
            ("after_hours_max_severity", Some("critical".into())),
            ("drill_schedule", Some("null".into())),
            ("recovery_ms", None),
        ])
        .expect("valid");
        assert_eq!(
            serde_json::Value::Object(overrides),
            serde_json::json!({
                "failback_clean_period_secs": 60,
                "degraded_loss_pct": 2.5,
                "after_hours_max_severity": "critical",
                "drill_schedule": null,
            })
        );
        let error = build_overrides(&[("recovery_ms", Some("soon".into()))]).expect_err("bad");
        assert_eq!(error.key, "recovery_ms");
        assert!(build_overrides(&[("alert_severity", Some("[".into()))]).is_err());
    }

    #[wasm_bindgen_test]
    fn a_cloud_message_is_pinned_to_the_setting_it_names_first() {
        assert_eq!(
            field_named_in("flapping_failovers must be between 2 and 100, got 1"),
            Some("flapping_failovers")
        );
        assert_eq!(
            field_named_in(
                "failback_max_hold_secs must be between failback_clean_period_secs and 86400, got 3"
            ),
            Some("failback_max_hold_secs")
        );
        assert_eq!(
            field_named_in("drill_schedule: every_days must be between 1 and 366"),
            Some("drill_schedule")
        );
        assert_eq!(field_named_in("\"meteor\" is not a policy setting"), None);
    }

    #[wasm_bindgen_test]
    fn clinic_hours_are_typed_as_comma_separated_spans() {
        let spans = parse_spans("08:00-12:00, 13:00 - 17:30").expect("spans");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].close, "17:30");
        assert_eq!(format_spans(&spans), "08:00-12:00, 13:00-17:30");
        assert_eq!(parse_spans("  ").expect("closed"), vec![]);
        assert!(parse_spans("9 to 5").is_err());
    }

    #[wasm_bindgen_test]
    fn the_enrolment_command_writes_the_cloud_section_and_starts_the_agent() {
        let command = appliance_enrol_command(
            "/etc/stayopen/appliance.toml",
            "https://cloud.example.net",
            "soe_abc",
        );
        assert!(command.starts_with("cat >> /etc/stayopen/appliance.toml <<'EOF'\n[cloud]\n"));
        assert!(command.contains("api_url = \"https://cloud.example.net\"\n"));
        assert!(command.contains("enrollment_token = \"soe_abc\"\nEOF\n"));
        assert!(command.ends_with("stayopen-appliance run --config /etc/stayopen/appliance.toml"));
        assert!(
            !command.contains("allow_plain_http"),
            "https needs no opt-in"
        );
        // A lab cloud on plain http: the section carries the appliance's explicit opt-in.
        let lab = appliance_cloud_section("http://192.0.2.10:8080", "soe_abc");
        assert!(lab.contains("api_url = \"http://192.0.2.10:8080\"\nallow_plain_http = true\n"));
    }

    #[wasm_bindgen_test]
    fn a_qr_path_draws_each_run_of_dark_modules_as_one_rectangle() {
        // Row 0: ##.#   Row 1: ....
        let dark = |x: i32, y: i32| y == 0 && x != 2;
        assert_eq!(qr_svg_path(4, 4, dark), "M4,4h2v1h-2zM7,4h1v1h-1z");
        let qr = qrcodegen::QrCode::encode_text("soe_abc", qrcodegen::QrCodeEcc::Medium)
            .expect("encodes");
        let path = qr_svg_path(qr.size(), 4, |x, y| qr.get_module(x, y));
        assert!(path.starts_with("M4,4h7v1h-7z"), "finder pattern first");
    }

    #[wasm_bindgen_test]
    fn the_signed_in_user_is_named_by_email_and_others_as_recorded() {
        let me = UserId(Uuid::from_u128(5));
        let mine = format!("user:{me}");
        assert_eq!(actor_label(&mine, Some((me, "a@b.example"))), "a@b.example");
        assert_eq!(
            actor_label("api-token:x", Some((me, "a@b.example"))),
            "api-token:x"
        );
        assert_eq!(actor_label(&mine, None), mine);
    }

    #[wasm_bindgen_test]
    fn availability_never_rounds_up_to_a_hundred_percent_while_there_was_downtime() {
        assert_eq!(availability_text(Some(99.99999)), "99.999%");
        assert_eq!(availability_text(Some(100.0)), "100%");
    }
}
