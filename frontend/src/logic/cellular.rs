//! Presentation logic of the appliance page's cellular panel: the figures an MSP places an
//! antenna by, in words and units, with their quality labels. Pure, like the rest of
//! [`crate::logic`].

use stayopen_shared::cellular::{CellularReport, SignalQuality};
use stayopen_shared::telemetry::UplinkTelemetry;

use super::bytes_text;

/// One signal figure as shown: "-95 dBm", its quality ("fair"), or a dash when not reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub text: String,
    pub quality: Option<SignalQuality>,
}

fn figure(value: Option<f64>, unit: &str, quality: Option<SignalQuality>) -> Figure {
    Figure {
        text: value.map_or_else(
            || "—".to_owned(),
            |v| format!("{v:.1} {unit}").replace(".0 ", " "),
        ),
        quality,
    }
}

/// A cellular uplink's row: its name and the figures of its modem.
#[derive(Debug, Clone, PartialEq)]
pub struct CellularRow {
    pub uplink: String,
    /// The modem's status key (`connected`, `gone`, …) and its words.
    pub status: &'static str,
    pub status_text: &'static str,
    /// "Example Mobile (310260)", roaming said.
    pub operator: String,
    /// "5G NR + LTE".
    pub technology: String,
    pub rsrp: Figure,
    pub rsrq: Figure,
    pub sinr: Figure,
    /// "734.0 MB received, 52.4 MB sent".
    pub sim_data: String,
    pub modem: Option<String>,
    pub problems: Vec<String>,
}

/// The operator as a technician reads it.
pub fn operator_text(report: &CellularReport) -> String {
    let roaming = report.registration == Some(stayopen_shared::cellular::Registration::Roaming);
    let name = match (&report.operator_name, &report.operator_code) {
        (Some(name), Some(code)) => format!("{name} ({code})"),
        (Some(name), None) => name.clone(),
        (None, Some(code)) => code.clone(),
        (None, None) => return "—".to_owned(),
    };
    if roaming {
        format!("{name}, roaming")
    } else {
        name
    }
}

/// The technologies in use, most capable first.
pub fn technology_text(report: &CellularReport) -> String {
    if report.access_technologies.is_empty() {
        return "—".to_owned();
    }
    report
        .access_technologies
        .iter()
        .map(|t| t.text())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The data used on the SIM.
pub fn sim_data_text(report: &CellularReport) -> String {
    match (report.sim_rx_bytes, report.sim_tx_bytes) {
        (None, None) => "not counted by the modem".to_owned(),
        (rx, tx) => format!(
            "{} received, {} sent",
            bytes_text(rx.unwrap_or(0)),
            bytes_text(tx.unwrap_or(0))
        ),
    }
}

/// The rows of the cellular panel: every uplink with a modem report, in the order given.
pub fn cellular_rows(uplinks: &[UplinkTelemetry]) -> Vec<CellularRow> {
    uplinks
        .iter()
        .filter_map(|u| {
            let r = u.cellular.as_ref()?;
            Some(CellularRow {
                uplink: u.name.clone(),
                status: r.status.as_str(),
                status_text: r.status.text(),
                operator: operator_text(r),
                technology: technology_text(r),
                rsrp: figure(r.rsrp_dbm, "dBm", r.rsrp_quality()),
                rsrq: figure(r.rsrq_db, "dB", r.rsrq_quality()),
                sinr: figure(r.sinr_db, "dB", r.sinr_quality()),
                sim_data: sim_data_text(r),
                modem: r.modem.clone(),
                problems: r.problems.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayopen_shared::cellular::{AccessTechnology, ModemStatus, Registration};
    use wasm_bindgen_test::wasm_bindgen_test;

    fn report() -> CellularReport {
        CellularReport {
            operator_name: Some("Example Mobile".into()),
            operator_code: Some("310260".into()),
            access_technologies: vec![AccessTechnology::Nr5g, AccessTechnology::Lte],
            registration: Some(Registration::Home),
            rsrp_dbm: Some(-95.0),
            rsrq_db: Some(-12.5),
            sinr_db: Some(21.0),
            sim_rx_bytes: Some(734_003_200),
            sim_tx_bytes: Some(52_428_800),
            ..CellularReport::status_only(ModemStatus::Connected)
        }
    }

    #[wasm_bindgen_test]
    fn a_cellular_row_says_each_figure_with_its_unit_and_quality() {
        let lte = UplinkTelemetry {
            name: "lte".into(),
            priority: 1,
            metered: true,
            health: stayopen_shared::telemetry::UplinkHealth::Up,
            rtt_ms: None,
            loss_pct: 0.0,
            rx_bytes: 0,
            tx_bytes: 0,
            cellular: Some(report()),
        };
        let fibre = UplinkTelemetry {
            name: "fiber".into(),
            cellular: None,
            ..lte.clone()
        };
        let rows = cellular_rows(&[fibre, lte]);
        assert_eq!(rows.len(), 1, "only uplinks with a modem");
        let row = &rows[0];
        assert_eq!(row.operator, "Example Mobile (310260)");
        assert_eq!(row.technology, "5G NR + LTE");
        assert_eq!(row.rsrp.text, "-95 dBm");
        assert_eq!(row.rsrp.quality, Some(SignalQuality::Fair));
        assert_eq!(row.rsrq.text, "-12.5 dB");
        assert_eq!(row.rsrq.quality, Some(SignalQuality::Good));
        assert_eq!(row.sinr.quality, Some(SignalQuality::Excellent));
        assert_eq!(row.sim_data, "734.0 MB received, 52.4 MB sent");
    }

    #[wasm_bindgen_test]
    fn missing_figures_are_a_dash_and_roaming_is_said() {
        let mut r = report();
        r.registration = Some(Registration::Roaming);
        r.rsrp_dbm = None;
        r.sim_rx_bytes = None;
        r.sim_tx_bytes = None;
        assert_eq!(operator_text(&r), "Example Mobile (310260), roaming");
        assert_eq!(figure(r.rsrp_dbm, "dBm", r.rsrp_quality()).text, "—");
        assert_eq!(sim_data_text(&r), "not counted by the modem");
    }
}
