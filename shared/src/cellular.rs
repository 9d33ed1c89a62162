//! A cellular uplink's modem as the appliance reads it from ModemManager: operator, access
//! technology, registration, signal (RSRP, RSRQ, SINR) and the data used on the SIM — what an MSP
//! needs to place an antenna — and the quality labels the dashboard shows next to each figure.
//!
//! The appliance fills a [`CellularReport`] per cellular uplink ([`crate::telemetry::UplinkTelemetry`]
//! `cellular`); the cloud checks it with [`CellularReport::implausible`] before storing it.

use serde::{Deserialize, Serialize};
use strum::VariantArray as _;

/// How the appliance sees the modem behind a cellular uplink.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ModemStatus {
    /// A data connection is up.
    Connected,
    /// Registered with a network, no data connection.
    Registered,
    /// Looking for a network.
    Searching,
    /// Enabled but not registered (or still connecting).
    Enabled,
    /// Switched off, or being switched on or off.
    Disabled,
    /// The SIM asks for a PIN or PUK.
    Locked,
    /// ModemManager gave up on the modem (no SIM, a hardware fault).
    Failed,
    /// ModemManager is still probing the modem.
    Initializing,
    /// The modem was reported before and has disappeared (unplugged, reset, crashed).
    Gone,
    /// No modem on the bus matches the uplink.
    NotFound,
    /// ModemManager does not answer on D-Bus.
    NoModemManager,
    /// ModemManager said a state this agent does not know.
    Unknown,
}

impl ModemStatus {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Words for the dashboard.
    pub fn text(self) -> &'static str {
        match self {
            ModemStatus::Connected => "connected",
            ModemStatus::Registered => "registered, not connected",
            ModemStatus::Searching => "searching for a network",
            ModemStatus::Enabled => "enabled, not registered",
            ModemStatus::Disabled => "disabled",
            ModemStatus::Locked => "SIM locked (PIN or PUK)",
            ModemStatus::Failed => "failed (no SIM or a modem fault)",
            ModemStatus::Initializing => "starting",
            ModemStatus::Gone => "modem disappeared",
            ModemStatus::NotFound => "no modem found",
            ModemStatus::NoModemManager => "ModemManager not running",
            ModemStatus::Unknown => "unknown",
        }
    }
}

/// The 3GPP registration of the modem.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Registration {
    /// On the SIM's own network.
    Home,
    /// On a partner network: data may cost more or be barred.
    Roaming,
    Searching,
    /// The network refused the SIM.
    Denied,
    /// Not registered and not searching.
    Idle,
    /// Only emergency calls.
    EmergencyOnly,
    Unknown,
}

impl Registration {
    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A radio access technology, from ModemManager's `AccessTechnologies` bitmask.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum AccessTechnology {
    /// 5G New Radio (alone, or with LTE as its anchor in non-standalone mode).
    #[serde(rename = "5gnr")]
    #[strum(serialize = "5gnr")]
    Nr5g,
    Lte,
    /// LTE Cat-M1 (LTE-M).
    LteCatM,
    /// NB-IoT.
    LteNbIot,
    /// HSPA, HSPA+, HSDPA, HSUPA.
    Hspa,
    Umts,
    Edge,
    Gprs,
    Gsm,
    /// CDMA2000 EV-DO.
    Evdo,
    /// CDMA2000 1xRTT.
    Cdma1x,
}

impl AccessTechnology {
    /// The name a technician reads.
    pub fn text(self) -> &'static str {
        match self {
            AccessTechnology::Nr5g => "5G NR",
            AccessTechnology::Lte => "LTE",
            AccessTechnology::LteCatM => "LTE-M",
            AccessTechnology::LteNbIot => "NB-IoT",
            AccessTechnology::Hspa => "HSPA",
            AccessTechnology::Umts => "UMTS",
            AccessTechnology::Edge => "EDGE",
            AccessTechnology::Gprs => "GPRS",
            AccessTechnology::Gsm => "GSM",
            AccessTechnology::Evdo => "EV-DO",
            AccessTechnology::Cdma1x => "CDMA 1x",
        }
    }
}

/// What a signal figure means for the link, as carriers and router vendors publish it for
/// placing antennas (see [`rsrp_quality`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum SignalQuality {
    Poor,
    Fair,
    Good,
    Excellent,
}

impl SignalQuality {
    /// The snake_case name, as in JSON and CSS classes.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

// The labels follow the table published by Teltonika ("Mobile Signal Strength Recommendations",
// wiki.teltonika-networks.com) and Digi ("Evaluating your signal", TransPort WR21 user guide),
// the same bands US carriers' installer guides use for LTE and 5G NR:
//
// | quality   | RSRP (dBm)  | RSRQ (dB)  | SINR (dB) |
// |-----------|-------------|------------|-----------|
// | excellent | >= -80      | >= -10     | >= 20     |
// | good      | -80 to -90  | -10 to -15 | 13 to 20  |
// | fair      | -90 to -100 | -15 to -20 | 0 to 13   |
// | poor      | < -100      | < -20      | < 0       |
//
// A boundary value belongs to the better band, as in the published tables (">= -80").

/// RSRP at or above which reception is excellent, dBm.
pub const RSRP_EXCELLENT_DBM: f64 = -80.0;
/// RSRP at or above which reception is good, dBm.
pub const RSRP_GOOD_DBM: f64 = -90.0;
/// RSRP at or above which reception is fair (mid-cell), dBm; below it is the cell edge.
pub const RSRP_FAIR_DBM: f64 = -100.0;
/// RSRQ at or above which quality is excellent, dB.
pub const RSRQ_EXCELLENT_DB: f64 = -10.0;
/// RSRQ at or above which quality is good, dB.
pub const RSRQ_GOOD_DB: f64 = -15.0;
/// RSRQ at or above which quality is fair, dB.
pub const RSRQ_FAIR_DB: f64 = -20.0;
/// SINR at or above which the channel is excellent, dB.
pub const SINR_EXCELLENT_DB: f64 = 20.0;
/// SINR at or above which the channel is good, dB.
pub const SINR_GOOD_DB: f64 = 13.0;
/// SINR at or above which the channel is fair, dB; below 0 dB noise outweighs the signal.
pub const SINR_FAIR_DB: f64 = 0.0;

fn band(value: f64, excellent: f64, good: f64, fair: f64) -> SignalQuality {
    if value >= excellent {
        SignalQuality::Excellent
    } else if value >= good {
        SignalQuality::Good
    } else if value >= fair {
        SignalQuality::Fair
    } else {
        SignalQuality::Poor
    }
}

/// The quality of a Reference Signal Received Power (the cell's strength at the antenna).
pub fn rsrp_quality(rsrp_dbm: f64) -> SignalQuality {
    band(rsrp_dbm, RSRP_EXCELLENT_DBM, RSRP_GOOD_DBM, RSRP_FAIR_DBM)
}

/// The quality of a Reference Signal Received Quality (the cell against its load and neighbours).
pub fn rsrq_quality(rsrq_db: f64) -> SignalQuality {
    band(rsrq_db, RSRQ_EXCELLENT_DB, RSRQ_GOOD_DB, RSRQ_FAIR_DB)
}

/// The quality of a Signal to Interference plus Noise Ratio (what the throughput follows).
pub fn sinr_quality(sinr_db: f64) -> SignalQuality {
    band(sinr_db, SINR_EXCELLENT_DB, SINR_GOOD_DB, SINR_FAIR_DB)
}

/// The RSRP a modem can report, dBm: 3GPP TS 36.133 and TS 38.133 map reported RSRP onto
/// -156 to -31 dBm (LTE extended and NR ranges).
pub const RSRP_RANGE_DBM: (f64, f64) = (-156.0, -31.0);
/// The RSRQ a modem can report, dB: TS 36.133 extended (-34 to 2.5) and TS 38.133 NR
/// (-43 to 20).
pub const RSRQ_RANGE_DB: (f64, f64) = (-43.0, 20.0);
/// The SINR a modem can report, dB: TS 38.133's SS-SINR range (-23 to 40), which covers LTE's.
pub const SINR_RANGE_DB: (f64, f64) = (-23.0, 40.0);

/// Longest operator name, code or modem label kept; longer values are cut.
pub const MAX_LABEL_CHARS: usize = 64;
/// At most this many problems are listed in one report.
pub const MAX_PROBLEMS: usize = 8;

/// One cellular uplink's modem, read from ModemManager (or simulated). Every figure is optional:
/// a modem reports what its firmware supports, and a value that made no sense was dropped and
/// named in `problems`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellularReport {
    pub status: ModemStatus,
    /// Manufacturer and model, e.g. "Quectel EM12-G".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modem: Option<String>,
    /// The network's name as the modem shows it (`Modem3gpp.OperatorName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_name: Option<String>,
    /// The network's MCC and MNC (`Modem3gpp.OperatorCode`), e.g. "310260".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_code: Option<String>,
    /// The technologies in use, most capable first (5G NR with LTE in non-standalone mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_technologies: Vec<AccessTechnology>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    /// Reference Signal Received Power, dBm (5G NR's when on 5G, else LTE's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrp_dbm: Option<f64>,
    /// Reference Signal Received Quality, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrq_db: Option<f64>,
    /// Signal to Interference plus Noise Ratio, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_db: Option<f64>,
    /// ModemManager's rough signal quality, 0–100 %: all there is on modems without extended
    /// signal information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_pct: Option<u8>,
    /// Bytes received over the SIM's data connections since ModemManager created them
    /// (`Bearer.Stats` `total-rx-bytes`, summed over the modem's bearers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_rx_bytes: Option<u64>,
    /// Bytes sent, likewise (`total-tx-bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_tx_bytes: Option<u64>,
    /// Values the modem reported that made no sense (a wrong type, an impossible figure), so a
    /// technician knows why a figure is missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl CellularReport {
    /// A report with nothing but `status`: no modem, no ModemManager, a modem gone.
    pub fn status_only(status: ModemStatus) -> Self {
        CellularReport {
            status,
            modem: None,
            operator_name: None,
            operator_code: None,
            access_technologies: Vec::new(),
            registration: None,
            rsrp_dbm: None,
            rsrq_db: None,
            sinr_db: None,
            signal_pct: None,
            sim_rx_bytes: None,
            sim_tx_bytes: None,
            problems: Vec::new(),
        }
    }

    /// The quality of the reported RSRP.
    pub fn rsrp_quality(&self) -> Option<SignalQuality> {
        self.rsrp_dbm.map(rsrp_quality)
    }

    /// The quality of the reported RSRQ.
    pub fn rsrq_quality(&self) -> Option<SignalQuality> {
        self.rsrq_db.map(rsrq_quality)
    }

    /// The quality of the reported SINR.
    pub fn sinr_quality(&self) -> Option<SignalQuality> {
        self.sinr_db.map(sinr_quality)
    }

    /// The most capable technology in use.
    pub fn technology(&self) -> Option<AccessTechnology> {
        self.access_technologies.iter().min().copied()
    }

    /// Bytes through the SIM both ways, when the modem counts them.
    pub fn sim_bytes(&self) -> Option<u64> {
        match (self.sim_rx_bytes, self.sim_tx_bytes) {
            (None, None) => None,
            (rx, tx) => Some(rx.unwrap_or(0).saturating_add(tx.unwrap_or(0))),
        }
    }

    /// Why the report cannot be a modem's (a figure out of the range 3GPP allows, a counter the
    /// database cannot sum, a list or label beyond its bound), or `None` when it is plausible.
    pub fn implausible(&self) -> Option<String> {
        let ranges = [
            ("rsrp_dbm", self.rsrp_dbm, RSRP_RANGE_DBM),
            ("rsrq_db", self.rsrq_db, RSRQ_RANGE_DB),
            ("sinr_db", self.sinr_db, SINR_RANGE_DB),
        ];
        for (what, value, (low, high)) in ranges {
            if let Some(v) = value
                && !(v.is_finite() && (low..=high).contains(&v))
            {
                return Some(format!("{what} {v} is not within {low} to {high}"));
            }
        }
        if self.signal_pct.is_some_and(|p| p > 100) {
            return Some("signal_pct beyond 100".into());
        }
        for counter in [self.sim_rx_bytes, self.sim_tx_bytes].into_iter().flatten() {
            if i64::try_from(counter).is_err() {
                return Some("a SIM byte counter beyond 2^63".into());
            }
        }
        let labels = [&self.modem, &self.operator_name, &self.operator_code];
        if labels
            .into_iter()
            .flatten()
            .any(|l| l.chars().count() > MAX_LABEL_CHARS || l.chars().any(char::is_control))
        {
            return Some(format!(
                "a modem or operator label beyond {MAX_LABEL_CHARS} printable characters"
            ));
        }
        if self.problems.len() > MAX_PROBLEMS
            || self.access_technologies.len() > AccessTechnology::VARIANTS.len()
        {
            return Some("too many problems or technologies listed".into());
        }
        None
    }
}

/// What the dashboard says in words about each cellular uplink: its modem's status, operator,
/// technology and the quality label of each signal figure. A change of these is worth telling a
/// technician watching the page at once; a figure that wanders within its band is not.
pub type PlacementLabels = Vec<(
    String,
    ModemStatus,
    Option<String>,
    Option<AccessTechnology>,
    [Option<SignalQuality>; 3],
)>;

/// The [`PlacementLabels`] of `uplinks` (those with a modem report), in their order.
pub fn placement_labels(uplinks: &[crate::telemetry::UplinkTelemetry]) -> PlacementLabels {
    uplinks
        .iter()
        .filter_map(|u| {
            let c = u.cellular.as_ref()?;
            Some((
                u.name.clone(),
                c.status,
                c.operator_code.clone().or_else(|| c.operator_name.clone()),
                c.technology(),
                [c.rsrp_quality(), c.rsrq_quality(), c.sinr_quality()],
            ))
        })
        .collect()
}

/// `text` cut to [`MAX_LABEL_CHARS`] characters with control characters removed: how the
/// appliance keeps a modem's strings within what the cloud accepts.
pub fn clean_label(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_boundaries_fall_in_the_better_band() {
        assert_eq!(rsrp_quality(-80.0), SignalQuality::Excellent);
        assert_eq!(rsrp_quality(-80.1), SignalQuality::Good);
        assert_eq!(rsrp_quality(-90.0), SignalQuality::Good);
        assert_eq!(rsrp_quality(-99.9), SignalQuality::Fair);
        assert_eq!(rsrp_quality(-100.0), SignalQuality::Fair);
        assert_eq!(rsrp_quality(-100.5), SignalQuality::Poor);
        assert_eq!(rsrq_quality(-9.0), SignalQuality::Excellent);
        assert_eq!(rsrq_quality(-12.0), SignalQuality::Good);
        assert_eq!(rsrq_quality(-18.0), SignalQuality::Fair);
        assert_eq!(rsrq_quality(-21.0), SignalQuality::Poor);
        assert_eq!(sinr_quality(25.0), SignalQuality::Excellent);
        assert_eq!(sinr_quality(13.0), SignalQuality::Good);
        assert_eq!(sinr_quality(0.0), SignalQuality::Fair);
        assert_eq!(sinr_quality(-3.0), SignalQuality::Poor);
    }

    #[test]
    fn a_report_round_trips_and_an_empty_one_is_just_its_status() {
        let mut report = CellularReport::status_only(ModemStatus::Connected);
        assert_eq!(
            serde_json::to_string(&report).expect("json"),
            r#"{"status":"connected"}"#
        );
        report.access_technologies = vec![AccessTechnology::Nr5g, AccessTechnology::Lte];
        report.rsrp_dbm = Some(-95.0);
        let json = serde_json::to_string(&report).expect("json");
        assert!(
            json.contains(r#""access_technologies":["5gnr","lte"]"#),
            "{json}"
        );
        let back: CellularReport = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, report);
        assert_eq!(back.technology(), Some(AccessTechnology::Nr5g));
        assert_eq!(back.rsrp_quality(), Some(SignalQuality::Fair));
    }

    #[test]
    fn figures_outside_what_3gpp_allows_are_implausible() {
        let good = CellularReport {
            rsrp_dbm: Some(-156.0),
            rsrq_db: Some(20.0),
            sinr_db: Some(-23.0),
            signal_pct: Some(100),
            sim_rx_bytes: Some(i64::MAX as u64),
            ..CellularReport::status_only(ModemStatus::Connected)
        };
        assert_eq!(good.implausible(), None);
        for bad in [
            CellularReport {
                rsrp_dbm: Some(0.0),
                ..good.clone()
            },
            CellularReport {
                rsrp_dbm: Some(f64::NAN),
                ..good.clone()
            },
            CellularReport {
                rsrq_db: Some(-1e300),
                ..good.clone()
            },
            CellularReport {
                sinr_db: Some(f64::INFINITY),
                ..good.clone()
            },
            CellularReport {
                signal_pct: Some(101),
                ..good.clone()
            },
            CellularReport {
                sim_tx_bytes: Some(u64::MAX),
                ..good.clone()
            },
            CellularReport {
                operator_name: Some("x".repeat(65)),
                ..good.clone()
            },
            CellularReport {
                modem: Some("a\u{1b}[31m".into()),
                ..good.clone()
            },
            CellularReport {
                problems: vec![String::new(); 9],
                ..good.clone()
            },
        ] {
            assert!(bad.implausible().is_some(), "{bad:?}");
        }
    }

    #[test]
    fn placement_labels_change_when_a_figure_crosses_a_band_not_when_it_wanders_within_one() {
        let uplink = |rsrp: f64| crate::telemetry::UplinkTelemetry {
            name: "lte".into(),
            priority: 1,
            metered: true,
            health: crate::telemetry::UplinkHealth::Up,
            rtt_ms: None,
            loss_pct: 0.0,
            rx_bytes: 0,
            tx_bytes: 0,
            cellular: Some(CellularReport {
                rsrp_dbm: Some(rsrp),
                ..CellularReport::status_only(ModemStatus::Connected)
            }),
        };
        let labels = |rsrp| placement_labels(&[uplink(rsrp)]);
        assert_eq!(labels(-91.0), labels(-98.5));
        assert_ne!(labels(-98.5), labels(-101.0));
        let mut fibre = uplink(-80.0);
        fibre.cellular = None;
        assert_eq!(placement_labels(&[fibre]), Vec::new());
    }

    #[test]
    fn a_label_is_cut_and_loses_control_characters() {
        assert_eq!(clean_label(" T-Mobile\u{7}\n "), "T-Mobile");
        assert_eq!(
            clean_label(&"é".repeat(100)).chars().count(),
            MAX_LABEL_CHARS
        );
    }
}
