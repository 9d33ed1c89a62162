//! The tables behind `summary.pdf`, one CSV file each (RFC 4180: comma, CRLF, quotes doubled).
//!
//! Text that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) is
//! prefixed with `'`, the OWASP advice for CSV meant for Excel; numbers are never touched.

use stayopen_shared::compliance::{AppEndpoint, AvailabilityMonth};

use super::EvidenceInput;

/// A CSV table being written.
#[derive(Debug)]
pub struct Table {
    out: String,
    columns: usize,
}

/// One cell: text (guarded against formulas) or a number/date/flag written as it is.
#[derive(Debug, Clone)]
pub enum Cell {
    Text(String),
    Plain(String),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_owned())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}

/// A number, date or flag, or empty for `None`.
pub fn plain<T: ToString>(value: Option<T>) -> Cell {
    Cell::Plain(value.map(|v| v.to_string()).unwrap_or_default())
}

pub fn num<T: ToString>(value: T) -> Cell {
    Cell::Plain(value.to_string())
}

/// A percentage with four decimals, or empty when there is none (no data is not 0 %).
pub fn pct(value: Option<f64>) -> Cell {
    Cell::Plain(value.map(|v| format!("{v:.4}")).unwrap_or_default())
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        let mut table = Self {
            out: String::new(),
            columns: header.len(),
        };
        table.row(
            header
                .iter()
                .map(|h| Cell::Plain((*h).to_owned()))
                .collect(),
        );
        table
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.columns, "a row of the wrong width");
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let text = match cell {
                Cell::Plain(s) => s.clone(),
                Cell::Text(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
                Cell::Text(s) => s.clone(),
            };
            if text.contains([',', '"', '\n', '\r']) {
                self.out.push('"');
                self.out.push_str(&text.replace('"', "\"\""));
                self.out.push('"');
            } else {
                self.out.push_str(&text);
            }
        }
        self.out.push_str("\r\n");
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out.into_bytes()
    }
}

fn endpoints(list: &[AppEndpoint]) -> String {
    list.iter()
        .map(AppEndpoint::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every CSV file of the package, by name, in the order they go into the zip.
pub fn tables(input: &EvidenceInput) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "availability_months.csv",
            availability_months(&input.availability),
        ),
        (
            "availability_days.csv",
            availability_days(&input.availability),
        ),
        ("drills.csv", drills(input)),
        ("drill_apps.csv", drill_apps(input)),
        ("incidents.csv", incidents(input)),
        ("incident_apps.csv", incident_apps(input)),
        ("incident_alerts.csv", incident_alerts(input)),
        ("incident_comments.csv", incident_comments(input)),
        ("critical_apps.csv", critical_apps(input)),
        ("hipaa_mapping.csv", hipaa_mapping()),
    ]
}

fn availability_months(months: &[AvailabilityMonth]) -> Vec<u8> {
    let mut t = Table::new(&[
        "month",
        "primary_pct",
        "effective_pct",
        "period_secs",
        "observed_secs",
        "gap_secs",
        "on_backup_secs",
    ]);
    for m in months {
        t.row(vec![
            num(m.month.format("%Y-%m")),
            pct(m.primary_pct),
            pct(m.effective_pct),
            num(m.period_secs),
            num(m.observed_secs),
            num(m.gap_secs),
            num(m.on_backup_secs),
        ]);
    }
    t.into_bytes()
}

fn availability_days(months: &[AvailabilityMonth]) -> Vec<u8> {
    let mut t = Table::new(&["date", "primary_pct", "effective_pct", "gap_secs"]);
    for d in months.iter().flat_map(|m| &m.days) {
        t.row(vec![
            num(d.date),
            pct(d.primary_pct),
            pct(d.effective_pct),
            num(d.gap_secs),
        ]);
    }
    t.into_bytes()
}

fn drills(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&[
        "drill_id",
        "appliance_id",
        "appliance_serial",
        "trigger",
        "started_at",
        "finished_at",
        "outcome",
        "reason",
        "backup_uplink",
        "switchover_ms",
        "failback_ms",
        "apps_checked",
        "apps_reachable",
        "signed_off_by",
        "signed_off_email",
        "signed_off_at",
        "sign_off_comment",
    ]);
    for d in &input.drills {
        let sign_off = d.sign_off.as_ref();
        t.row(vec![
            num(d.id),
            num(d.appliance_id),
            d.appliance_serial.as_str().into(),
            num(d.trigger.as_str()),
            num(d.started_at.to_rfc3339()),
            plain(d.finished_at.map(|t| t.to_rfc3339())),
            num(d.outcome.as_str()),
            d.reason.as_str().into(),
            d.backup_uplink.clone().unwrap_or_default().into(),
            plain(d.switchover_ms),
            plain(d.failback_ms),
            num(d.apps.len()),
            num(d.apps.iter().filter(|a| a.reachable).count()),
            sign_off.map(|s| s.name.clone()).unwrap_or_default().into(),
            sign_off.map(|s| s.email.clone()).unwrap_or_default().into(),
            plain(sign_off.map(|s| s.signed_at.to_rfc3339())),
            sign_off
                .map(|s| s.comment.clone())
                .unwrap_or_default()
                .into(),
        ]);
    }
    t.into_bytes()
}

fn drill_apps(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&["drill_id", "app", "reachable", "latency_ms", "reason"]);
    for d in &input.drills {
        for a in &d.apps {
            t.row(vec![
                num(d.id),
                a.app.as_str().into(),
                num(a.reachable),
                plain(a.latency_ms.map(|l| format!("{l:.1}"))),
                a.reason.clone().unwrap_or_default().into(),
            ]);
        }
    }
    t.into_bytes()
}

fn incidents(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&[
        "incident_id",
        "appliance_id",
        "appliance_serial",
        "started_at",
        "ended_at",
        "failed_uplinks",
        "backup_uplinks",
        "on_backup_secs",
        "traffic_kept_flowing",
        "alerts",
        "root_cause",
        "comments",
    ]);
    for i in &input.incidents {
        t.row(vec![
            num(i.id),
            num(i.appliance_id),
            i.appliance_serial.as_str().into(),
            num(i.started_at.to_rfc3339()),
            plain(i.ended_at.map(|t| t.to_rfc3339())),
            i.failed_uplinks.join("; ").into(),
            i.backup_uplinks.join("; ").into(),
            num(i.on_backup_secs),
            num(i.traffic_kept_flowing),
            num(i.alerts.len()),
            i.root_cause.as_str().into(),
            num(i.comments.len()),
        ]);
    }
    t.into_bytes()
}

fn incident_apps(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&["incident_id", "app", "stayed_reachable", "reason"]);
    for i in &input.incidents {
        for a in &i.apps {
            t.row(vec![
                num(i.id),
                a.app.as_str().into(),
                plain(a.stayed_reachable),
                a.reason.clone().unwrap_or_default().into(),
            ]);
        }
    }
    t.into_bytes()
}

fn incident_alerts(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&[
        "incident_id",
        "alert_id",
        "kind",
        "severity",
        "title",
        "raised_at",
    ]);
    for i in &input.incidents {
        for a in &i.alerts {
            t.row(vec![
                num(i.id),
                num(a.id),
                num(a.kind.as_str()),
                num(a.severity.as_str()),
                a.title.as_str().into(),
                num(a.raised_at.to_rfc3339()),
            ]);
        }
    }
    t.into_bytes()
}

fn incident_comments(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&["incident_id", "author", "at", "body"]);
    for i in &input.incidents {
        for c in &i.comments {
            t.row(vec![
                num(i.id),
                c.author.as_str().into(),
                num(c.at.to_rfc3339()),
                c.body.as_str().into(),
            ]);
        }
    }
    t.into_bytes()
}

fn critical_apps(input: &EvidenceInput) -> Vec<u8> {
    let mut t = Table::new(&[
        "app_id",
        "name",
        "tier",
        "endpoints",
        "owner",
        "note",
        "updated_at",
        "updated_by",
    ]);
    for a in &input.register {
        t.row(vec![
            num(a.id),
            a.name.as_str().into(),
            num(a.tier.as_str()),
            endpoints(&a.endpoints).into(),
            a.owner.as_str().into(),
            a.note.as_str().into(),
            num(a.updated_at.to_rfc3339()),
            a.updated_by.clone().unwrap_or_default().into(),
        ]);
    }
    t.into_bytes()
}

fn hipaa_mapping() -> Vec<u8> {
    let mut t = Table::new(&["specification", "title", "coverage", "evidence", "note"]);
    for m in super::package::HIPAA_MAPPING {
        t.row(vec![
            m.specification.into(),
            m.title.into(),
            m.coverage.into(),
            m.evidence.into(),
            m.note.into(),
        ]);
    }
    t.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_when_needed_and_formulas_are_defused() {
        let mut t = Table::new(&["a", "b", "c", "d"]);
        t.row(vec![
            "plain".into(),
            "with, comma and \"quotes\"".into(),
            "=HYPERLINK(\"x\")".into(),
            num(-5),
        ]);
        let text = String::from_utf8(t.into_bytes()).expect("utf-8");
        assert_eq!(
            text,
            "a,b,c,d\r\nplain,\"with, comma and \"\"quotes\"\"\",\"'=HYPERLINK(\"\"x\"\")\",-5\r\n"
        );
    }

    #[test]
    fn a_month_without_data_has_empty_figures_not_zero() {
        let month = AvailabilityMonth {
            practice_id: stayopen_shared::PracticeId(uuid::Uuid::nil()),
            month: "2026-11-01".parse().expect("date"),
            primary_pct: None,
            effective_pct: None,
            period_secs: 2_592_000,
            observed_secs: 0,
            gap_secs: 2_592_000,
            on_backup_secs: 0,
            days: vec![],
        };
        let text = String::from_utf8(availability_months(&[month])).expect("utf-8");
        assert!(
            text.ends_with("2026-11,,,2592000,0,2592000,0\r\n"),
            "{text}"
        );
    }
}
