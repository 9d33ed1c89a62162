//! Presentation logic of the compliance pages: availability bars that draw a gap as a gap, drills
//! awaiting sign-off, evidence periods, the register editor's endpoints and the reachability grid
//! of the appliance page. Pure, like the rest of [`crate::logic`].

use chrono::{Datelike, NaiveDate};
use stayopen_shared::compliance::{
    AppEndpoint, AppReachability, AppTier, AvailabilityMonth, CriticalAppInput, DrillOutcome,
    DrillRecord, DrillTrigger, EvidencePackage, PackageState, PeriodKind,
};

use super::{date_text, duration_text};

// ---------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------

/// How a period splits, as fractions of it that add up to 1: up, down, and no data. Time nobody
/// reported on is its own share, never folded into "up".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    pub up: f64,
    pub down: f64,
    pub gap: f64,
}

/// Splits a period of `period_secs` with `gap_secs` unreported into shares, given the availability
/// over the observed part. Nothing observed (`pct` is `None`) is all gap.
pub fn availability_shares(pct: Option<f64>, period_secs: u64, gap_secs: u64) -> Shares {
    let Some(pct) = pct.filter(|p| p.is_finite()) else {
        return Shares {
            up: 0.0,
            down: 0.0,
            gap: 1.0,
        };
    };
    let period = period_secs.max(1) as f64;
    let gap = (gap_secs as f64 / period).clamp(0.0, 1.0);
    let observed = 1.0 - gap;
    let up = observed * (pct / 100.0).clamp(0.0, 1.0);
    Shares {
        up,
        down: observed - up,
        gap,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `"November 2026"`.
pub fn month_label(month: NaiveDate) -> String {
    format!("{} {}", MONTHS[month.month0() as usize], month.year())
}

/// `"Nov"`: for chart axes.
pub fn month_short(month: NaiveDate) -> &'static str {
    &MONTHS[month.month0() as usize][..3]
}

/// What a gap in the data is called where it is drawn: `"no data for 3 h"`, nothing without one.
pub fn gap_label(gap_secs: u64) -> Option<String> {
    (gap_secs > 0).then(|| format!("no data for {}", duration_text(gap_secs as i64)))
}

/// One bar of an availability chart as three stacked rectangles `(y, height)` in a drawing area
/// `height` tall, from the bottom: up, down, no data.
pub fn stacked_bar(shares: Shares, height: f64) -> [(f64, f64); 3] {
    let up = shares.up * height;
    let down = shares.down * height;
    let gap = shares.gap * height;
    [
        (height - up, up),
        (height - up - down, down),
        (height - up - down - gap, gap),
    ]
}

/// The months from `from` to `to` (inclusive) as `?from=&to=` dates for the availability API:
/// the first day of the month `months - 1` months before `today`'s, and `today`.
pub fn availability_range(today: NaiveDate, months: u32) -> (NaiveDate, NaiveDate) {
    let index = today.year() * 12 + today.month0() as i32 - months.saturating_sub(1) as i32;
    let from = NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
        .unwrap_or(today);
    (from, today)
}

/// The months from the first one anything was reported in (a practice whose appliances arrived in
/// March shows no empty months before it); the last `keep` months always stay.
pub fn from_first_report(months: &[AvailabilityMonth], keep: usize) -> &[AvailabilityMonth] {
    let first = months
        .iter()
        .position(|m| m.observed_secs > 0)
        .unwrap_or(months.len());
    &months[first.min(months.len().saturating_sub(keep))..]
}

// ---------------------------------------------------------------------------------------------
// Drills and incidents
// ---------------------------------------------------------------------------------------------

/// A finished drill no compliance officer has signed off yet.
pub fn awaits_sign_off(drill: &DrillRecord) -> bool {
    drill.outcome != DrillOutcome::Running && drill.sign_off.is_none()
}

pub fn drill_outcome_label(outcome: DrillOutcome) -> &'static str {
    match outcome {
        DrillOutcome::Running => "running",
        DrillOutcome::Passed => "passed",
        DrillOutcome::Failed => "failed",
    }
}

pub fn drill_trigger_label(trigger: DrillTrigger) -> &'static str {
    match trigger {
        DrillTrigger::Scheduled => "scheduled",
        DrillTrigger::Manual => "started by hand",
        DrillTrigger::Local => "started on the appliance",
    }
}

/// A measured time in milliseconds: `"850 ms"`, `"4.2 s"`, `"–"` when not measured.
pub fn millis_text(ms: Option<u32>) -> String {
    match ms {
        None => "–".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", f64::from(ms) / 1000.0),
        Some(ms) => duration_text(i64::from(ms / 1000)),
    }
}

/// An application's result as one line: `"reachable (42 ms)"` or `"unreachable: refused"`.
pub fn app_result_text(reachable: bool, latency_ms: Option<f64>, reason: Option<&str>) -> String {
    match (reachable, latency_ms, reason) {
        (true, Some(ms), _) => format!("reachable ({ms:.0} ms)"),
        (true, None, _) => "reachable".to_owned(),
        (false, _, Some(reason)) if !reason.is_empty() => format!("unreachable: {reason}"),
        (false, _, _) => "unreachable".to_owned(),
    }
}

/// Whether an incident's application stayed reachable, in words.
pub fn stayed_reachable_text(stayed: Option<bool>) -> &'static str {
    match stayed {
        Some(true) => "stayed reachable",
        Some(false) => "became unreachable",
        None => "not checked",
    }
}

// ---------------------------------------------------------------------------------------------
// Evidence packages
// ---------------------------------------------------------------------------------------------

fn month_index(date: NaiveDate) -> i32 {
    date.year() * 12 + date.month0() as i32
}

fn month_start(index: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
}

/// `[first, last]` day of the months `first..first + count` (by month index).
fn months_bounds(first: i32, count: i32) -> Option<(NaiveDate, NaiveDate)> {
    let from = month_start(first)?;
    let to = month_start(first + count)?.pred_opt()?;
    Some((from, to))
}

/// The month before `today`'s, as `<input type="month">` writes it: `"2026-10"`.
pub fn previous_month(today: NaiveDate) -> String {
    let index = month_index(today) - 1;
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

/// The last `count` complete quarters before `today`, newest first: `"2026-Q3"`.
pub fn recent_quarters(today: NaiveDate, count: usize) -> Vec<String> {
    let current = today.year() * 4 + today.month0() as i32 / 3;
    (1..=count as i32)
        .map(|back| {
            let q = current - back;
            format!("{}-Q{}", q.div_euclid(4), q.rem_euclid(4) + 1)
        })
        .collect()
}

/// The last `count` complete years before `today`, newest first.
pub fn recent_years(today: NaiveDate, count: usize) -> Vec<String> {
    (1..=count as i32)
        .map(|back| (today.year() - back).to_string())
        .collect()
}

/// The first and last day a package covers, from the request form: a month `"2026-10"`, a quarter
/// `"2026-Q3"`, a year `"2026"`, or two dates for a custom period.
pub fn period_bounds(
    kind: PeriodKind,
    value: &str,
    custom_to: &str,
) -> Result<(NaiveDate, NaiveDate), String> {
    let value = value.trim();
    let year = |text: &str| {
        text.parse::<i32>()
            .ok()
            .filter(|y| (2000..=9999).contains(y))
    };
    let bounds = match kind {
        PeriodKind::Month => value.split_once('-').and_then(|(y, m)| {
            let month = m.parse::<i32>().ok().filter(|m| (1..=12).contains(m))?;
            months_bounds(year(y)? * 12 + month - 1, 1)
        }),
        PeriodKind::Quarter => value.split_once("-Q").and_then(|(y, q)| {
            let quarter = q.parse::<i32>().ok().filter(|q| (1..=4).contains(q))?;
            months_bounds(year(y)? * 12 + (quarter - 1) * 3, 3)
        }),
        PeriodKind::Year => year(value).and_then(|y| months_bounds(y * 12, 12)),
        PeriodKind::Custom => {
            let from = super::parse_date(value).ok_or("choose the first day")?;
            let to = super::parse_date(custom_to).ok_or("choose the last day")?;
            if to < from {
                return Err("the last day is before the first".to_owned());
            }
            Some((from, to))
        }
    };
    bounds.ok_or_else(|| format!("{value:?} is not a {}", kind.as_str()))
}

/// The period a package covers, as people say it: `"October 2026"`, `"2026 Q3"`, `"2026"`, or
/// `"2026-01-05 to 2026-02-01"`.
pub fn package_period_text(kind: PeriodKind, from: NaiveDate, to: NaiveDate) -> String {
    match kind {
        PeriodKind::Month => month_label(from),
        PeriodKind::Quarter => format!("{} Q{}", from.year(), from.month0() / 3 + 1),
        PeriodKind::Year => from.year().to_string(),
        PeriodKind::Custom => format!("{} to {}", date_text(from), date_text(to)),
    }
}

/// Whether the package is still being built (the list polls while one is).
pub fn package_pending(package: &EvidencePackage) -> bool {
    matches!(package.state, PackageState::Queued | PackageState::Building)
}

/// The name a downloaded package is saved under.
pub fn package_file_name(package: &EvidencePackage) -> String {
    let slug: String = package
        .practice_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    format!(
        "stayopen-evidence-{slug}-{}-{}.zip",
        date_text(package.from),
        date_text(package.to)
    )
}

/// The public key's file name in the verify hint and its download link.
pub const PUBLIC_KEY_FILE: &str = "stayopen-evidence.pem";

/// The command that checks a downloaded package offline.
pub fn verify_command(file_name: &str) -> String {
    format!("stayopen-cloud evidence verify {file_name} --public-key {PUBLIC_KEY_FILE}")
}

// ---------------------------------------------------------------------------------------------
// The critical applications register
// ---------------------------------------------------------------------------------------------

/// The kinds of endpoint the editor offers, with the hint its text field shows.
pub const ENDPOINT_KINDS: [(&str, &str, &str); 3] = [
    ("https", "HTTPS URL", "https://ehr.example.com/health"),
    ("tcp", "TCP host:port", "lab.example.com:2575"),
    ("dns", "DNS name", "erx.example.com"),
];

/// One endpoint row of the editor: its kind and its text.
pub fn endpoint_row(endpoint: &AppEndpoint) -> (String, String) {
    match endpoint {
        AppEndpoint::Https { url } => ("https".into(), url.clone()),
        AppEndpoint::Tcp { host, port } => {
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            ("tcp".into(), format!("{host}:{port}"))
        }
        AppEndpoint::Dns { name } => ("dns".into(), name.clone()),
    }
}

/// Parses one endpoint row; the error names what is wrong with it.
pub fn parse_endpoint(kind: &str, text: &str) -> Result<AppEndpoint, String> {
    let text = text.trim();
    let endpoint = match kind {
        "https" => AppEndpoint::Https { url: text.into() },
        "tcp" => {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?} needs a port, as in host:443"))?;
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            AppEndpoint::Tcp {
                host: host.into(),
                port,
            }
        }
        "dns" => AppEndpoint::Dns { name: text.into() },
        other => return Err(format!("unknown endpoint kind {other:?}")),
    };
    match endpoint.problem() {
        Some(problem) => Err(problem),
        None => Ok(endpoint),
    }
}

/// The register entry the editor's fields describe. Endpoint rows left empty are ignored.
pub fn register_input(
    name: &str,
    tier: &str,
    endpoints: &[(String, String)],
    owner: &str,
    note: &str,
) -> Result<CriticalAppInput, String> {
    let tier: AppTier = tier
        .parse()
        .map_err(|_| format!("{tier:?} is not a tier"))?;
    let endpoints = endpoints
        .iter()
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(kind, text)| parse_endpoint(kind, text))
        .collect::<Result<Vec<_>, _>>()?;
    let input = CriticalAppInput {
        name: name.trim().to_owned(),
        tier,
        endpoints,
        owner: owner.trim().to_owned(),
        note: note.trim().to_owned(),
    };
    match input.problem() {
        Some(problem) => Err(problem),
        None => Ok(input),
    }
}

// ---------------------------------------------------------------------------------------------
// Reachability on the appliance page
// ---------------------------------------------------------------------------------------------

/// Each application's latest check per uplink: columns are uplinks (in the order given, then any
/// other reported), rows applications in the order first reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ReachabilityGrid {
    pub uplinks: Vec<String>,
    pub rows: Vec<(String, Vec<Option<AppReachability>>)>,
}

pub fn reachability_grid(apps: &[AppReachability], uplink_order: &[String]) -> ReachabilityGrid {
    let mut uplinks: Vec<String> = uplink_order
        .iter()
        .filter(|u| apps.iter().any(|a| &a.uplink == *u))
        .cloned()
        .collect();
    let mut names: Vec<String> = Vec::new();
    for app in apps {
        if !uplinks.contains(&app.uplink) {
            uplinks.push(app.uplink.clone());
        }
        if !names.contains(&app.app) {
            names.push(app.app.clone());
        }
    }
    let rows = names
        .into_iter()
        .map(|name| {
            let cells = uplinks
                .iter()
                .map(|u| {
                    apps.iter()
                        .find(|a| a.app == name && &a.uplink == u)
                        .cloned()
                })
                .collect();
            (name, cells)
        })
        .collect();
    ReachabilityGrid { uplinks, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use stayopen_shared::compliance::{AppCheckResult, DrillSignOff};
    use stayopen_shared::ids::{ApplianceId, PracticeId};
    use uuid::Uuid;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[wasm_bindgen_test]
    fn a_period_without_reports_is_drawn_as_a_gap_never_as_up() {
        let none = availability_shares(None, 86_400, 0);
        assert_eq!((none.up, none.down, none.gap), (0.0, 0.0, 1.0));
        // A quarter of the day unreported, the rest 90 % up.
        let s = availability_shares(Some(90.0), 86_400, 21_600);
        assert!((s.gap - 0.25).abs() < 1e-9);
        assert!((s.up - 0.675).abs() < 1e-9);
        assert!((s.down - 0.075).abs() < 1e-9);
        // The stacked rectangles fill the bar from the bottom, gap on top.
        let [up, down, gap] = stacked_bar(s, 100.0);
        assert!((up.0 - 32.5).abs() < 1e-9 && (up.1 - 67.5).abs() < 1e-9);
        assert!((down.0 - 25.0).abs() < 1e-9 && (down.1 - 7.5).abs() < 1e-9);
        assert!(gap.0.abs() < 1e-9 && (gap.1 - 25.0).abs() < 1e-9);
        assert_eq!(gap_label(0), None);
        assert_eq!(gap_label(7200).as_deref(), Some("no data for 2 h"));
    }

    #[wasm_bindgen_test]
    fn months_are_named_ranged_and_shown_from_the_first_report() {
        assert_eq!(month_label(date(2026, 11, 1)), "November 2026");
        assert_eq!(month_short(date(2026, 1, 1)), "Jan");
        assert_eq!(
            availability_range(date(2026, 3, 15), 6),
            (date(2025, 10, 1), date(2026, 3, 15))
        );
        let month = AvailabilityMonth {
            practice_id: PracticeId(Uuid::nil()),
            month: date(2026, 4, 1),
            primary_pct: None,
            effective_pct: None,
            period_secs: 0,
            observed_secs: 0,
            gap_secs: 0,
            on_backup_secs: 0,
            days: vec![],
        };
        let months: Vec<AvailabilityMonth> = (1..=6)
            .map(|m| AvailabilityMonth {
                month: date(2026, m, 1),
                observed_secs: if m >= 4 { 3600 } else { 0 },
                ..month.clone()
            })
            .collect();
        let shown: Vec<u32> = from_first_report(&months, 2)
            .iter()
            .map(|m| m.month.month())
            .collect();
        assert_eq!(shown, [4, 5, 6]);
        assert_eq!(from_first_report(&months[..3], 2).len(), 2);
    }

    #[wasm_bindgen_test]
    fn evidence_periods_are_whole_months_quarters_and_years() {
        assert_eq!(
            period_bounds(PeriodKind::Month, "2026-02", ""),
            Ok((date(2026, 2, 1), date(2026, 2, 28)))
        );
        assert_eq!(
            period_bounds(PeriodKind::Quarter, "2026-Q4", ""),
            Ok((date(2026, 10, 1), date(2026, 12, 31)))
        );
        assert_eq!(
            period_bounds(PeriodKind::Year, "2025", ""),
            Ok((date(2025, 1, 1), date(2025, 12, 31)))
        );
        assert_eq!(
            period_bounds(PeriodKind::Custom, "2026-01-05", "2026-02-01"),
            Ok((date(2026, 1, 5), date(2026, 2, 1)))
        );
        assert!(period_bounds(PeriodKind::Custom, "2026-02-05", "2026-02-01").is_err());
        assert!(period_bounds(PeriodKind::Month, "2026-13", "").is_err());
        assert!(period_bounds(PeriodKind::Quarter, "2026-Q5", "").is_err());
        assert!(period_bounds(PeriodKind::Year, "nonsense", "").is_err());
        assert_eq!(previous_month(date(2026, 1, 15)), "2025-12");
        assert_eq!(
            recent_quarters(date(2026, 2, 1), 3),
            ["2025-Q4", "2025-Q3", "2025-Q2"]
        );
        assert_eq!(recent_years(date(2026, 2, 1), 2), ["2025", "2024"]);
        assert_eq!(
            package_period_text(PeriodKind::Quarter, date(2026, 7, 1), date(2026, 9, 30)),
            "2026 Q3"
        );
        assert_eq!(
            package_period_text(PeriodKind::Month, date(2026, 10, 1), date(2026, 10, 31)),
            "October 2026"
        );
    }

    fn package(state: PackageState) -> EvidencePackage {
        EvidencePackage {
            id: Uuid::nil(),
            practice_id: PracticeId(Uuid::nil()),
            practice_name: "Smile Dental & Co.".into(),
            period: PeriodKind::Month,
            from: date(2026, 10, 1),
            to: date(2026, 10, 31),
            state,
            progress_pct: 40,
            status: String::new(),
            requested_by: "officer@smile.example".into(),
            requested_at: Utc
                .timestamp_opt(1_790_000_000, 0)
                .single()
                .unwrap_or_default(),
            finished_at: None,
            size_bytes: None,
            sha256: None,
            key_fingerprint: None,
            download_path: None,
        }
    }

    #[wasm_bindgen_test]
    fn a_package_is_followed_while_it_builds_and_saved_under_a_readable_name() {
        assert!(package_pending(&package(PackageState::Queued)));
        assert!(package_pending(&package(PackageState::Building)));
        assert!(!package_pending(&package(PackageState::Ready)));
        assert!(!package_pending(&package(PackageState::Failed)));
        let name = package_file_name(&package(PackageState::Ready));
        assert_eq!(
            name,
            "stayopen-evidence-smile-dental-co-2026-10-01-2026-10-31.zip"
        );
        assert_eq!(
            verify_command(&name),
            format!("stayopen-cloud evidence verify {name} --public-key stayopen-evidence.pem")
        );
    }

    fn drill(outcome: DrillOutcome, signed: bool) -> DrillRecord {
        DrillRecord {
            id: Uuid::nil(),
            appliance_id: ApplianceId(Uuid::nil()),
            appliance_serial: "SO-1".into(),
            practice_id: PracticeId(Uuid::nil()),
            practice_name: "Smile".into(),
            trigger: DrillTrigger::Scheduled,
            started_at: Utc
                .timestamp_opt(1_790_000_000, 0)
                .single()
                .unwrap_or_default(),
            finished_at: None,
            outcome,
            reason: String::new(),
            backup_uplink: Some("lte".into()),
            switchover_ms: Some(850),
            failback_ms: None,
            apps: vec![AppCheckResult {
                app: "EHR".into(),
                reachable: true,
                latency_ms: Some(41.6),
                reason: None,
            }],
            sign_off: signed.then(|| DrillSignOff {
                name: "Olivia Officer".into(),
                email: "officer@smile.example".into(),
                signed_at: Utc
                    .timestamp_opt(1_790_000_100, 0)
                    .single()
                    .unwrap_or_default(),
                comment: "Reviewed".into(),
            }),
        }
    }

    #[wasm_bindgen_test]
    fn finished_drills_without_a_sign_off_are_counted_as_awaiting_it() {
        let drills = [
            drill(DrillOutcome::Passed, false),
            drill(DrillOutcome::Failed, false),
            drill(DrillOutcome::Passed, true),
            drill(DrillOutcome::Running, false),
        ];
        assert_eq!(drills.iter().filter(|d| awaits_sign_off(d)).count(), 2);
        assert_eq!(millis_text(Some(850)), "850 ms");
        assert_eq!(millis_text(Some(4_250)), "4.2 s");
        assert_eq!(millis_text(Some(125_000)), "2 min");
        assert_eq!(millis_text(None), "–");
        assert_eq!(app_result_text(true, Some(41.6), None), "reachable (42 ms)");
        assert_eq!(
            app_result_text(false, None, Some("tcp lab:2575: refused")),
            "unreachable: tcp lab:2575: refused"
        );
        assert_eq!(stayed_reachable_text(None), "not checked");
    }

    #[wasm_bindgen_test]
    fn the_register_editor_turns_rows_into_an_entry_or_says_what_is_wrong() {
        let rows = vec![
            (
                "https".to_owned(),
                " https://ehr.example.com/health ".to_owned(),
            ),
            ("tcp".to_owned(), "lab.example.com:2575".to_owned()),
            ("dns".to_owned(), String::new()),
            ("tcp".to_owned(), "[2001:db8::1]:443".to_owned()),
        ];
        let input = register_input(" EHR ", "tier1", &rows, "Dr. Lee", "").expect("valid");
        assert_eq!(input.name, "EHR");
        assert_eq!(input.tier, AppTier::Tier1);
        assert_eq!(
            input.endpoints,
            vec![
                AppEndpoint::Https {
                    url: "https://ehr.example.com/health".into()
                },
                AppEndpoint::Tcp {
                    host: "lab.example.com".into(),
                    port: 2575
                },
                AppEndpoint::Tcp {
                    host: "2001:db8::1".into(),
                    port: 443
                },
            ]
        );
        // Each endpoint reads back as the row it came from.
        for endpoint in &input.endpoints {
            let (kind, text) = endpoint_row(endpoint);
            assert_eq!(parse_endpoint(&kind, &text).as_ref(), Ok(endpoint));
        }
        assert!(parse_endpoint("tcp", "lab.example.com").is_err());
        assert!(parse_endpoint("tcp", "lab.example.com:http").is_err());
        assert!(parse_endpoint("https", "ftp://x").is_err());
        assert!(register_input("EHR", "tier1", &[], "", "").is_err());
        assert!(register_input("", "tier1", &rows, "", "").is_err());
        assert!(register_input("EHR", "tier9", &rows, "", "").is_err());
    }

    #[wasm_bindgen_test]
    fn the_reachability_grid_has_a_column_per_uplink_in_priority_order() {
        let check = |app: &str, uplink: &str, reachable: bool| AppReachability {
            app: app.into(),
            uplink: uplink.into(),
            reachable,
            latency_ms: reachable.then_some(20.0),
            age_secs: 3,
            reason: (!reachable).then(|| "timeout".into()),
        };
        let apps = [
            check("EHR", "lte", true),
            check("EHR", "wan", true),
            check("Lab", "wan", false),
            check("Portal", "spare", true),
        ];
        let grid = reachability_grid(&apps, &["wan".into(), "lte".into(), "unused".into()]);
        assert_eq!(grid.uplinks, ["wan", "lte", "spare"]);
        let names: Vec<&str> = grid.rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["EHR", "Lab", "Portal"]);
        assert_eq!(grid.rows[1].1[0].as_ref().map(|r| r.reachable), Some(false));
        assert_eq!(grid.rows[1].1[1], None);
        assert_eq!(grid.rows[2].1[2].as_ref().map(|r| r.reachable), Some(true));
    }
}
