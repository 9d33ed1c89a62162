//! A simulated cellular modem for the simulated dataplane: its signal wanders slowly around the
//! configured figures (a bus going past, weather), dips now and then, and is lost while its link
//! has a carrier outage — plausible, varying figures for the demo fleet's LTE backups.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stayopen_shared::cellular::{
    AccessTechnology, CellularReport, ModemStatus, RSRP_RANGE_DBM, RSRQ_RANGE_DB, Registration,
    SINR_RANGE_DB,
};

use crate::config::{OutageKind, SimulatedLink};
use crate::dataplane::simulated::in_outage;

/// `modem` of a simulated link (`[dataplane.links.NAME.modem]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedModem {
    pub operator_name: String,
    /// MCC and MNC.
    pub operator_code: String,
    pub technology: AccessTechnology,
    /// Mean RSRP, dBm.
    pub rsrp_dbm: f64,
    /// Mean RSRQ, dB.
    pub rsrq_db: f64,
    /// Mean SINR, dB.
    pub sinr_db: f64,
    /// How far the figures wander from their means, dB.
    pub swing_db: f64,
    /// The period of the slow wander, seconds.
    pub period_secs: u64,
    pub roaming: bool,
}

impl Default for SimulatedModem {
    fn default() -> Self {
        SimulatedModem {
            operator_name: "Example Mobile".into(),
            operator_code: "310260".into(),
            technology: AccessTechnology::Lte,
            rsrp_dbm: -92.0,
            rsrq_db: -11.0,
            sinr_db: 11.0,
            swing_db: 6.0,
            period_secs: 180,
            roaming: false,
        }
    }
}

/// A repeatable value in [-1, 1] for second `n`: the fast flutter on top of the slow wander.
fn flutter(n: u64) -> f64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 2001) as f64 / 1000.0 - 1.0
}

fn within(value: f64, (low, high): (f64, f64)) -> f64 {
    ((value * 10.0).round() / 10.0).clamp(low, high)
}

impl SimulatedModem {
    /// The modem's report `since` the agent started, on `link` (its outage script): no signal
    /// and searching during a carrier outage; otherwise figures that wander by `swing_db`
    /// around the means over `period_secs`, with a second-by-second flutter.
    pub fn sample(&self, link: &SimulatedLink, since: Duration) -> CellularReport {
        let modem = Some("Simulated LTE modem".to_owned());
        if in_outage(link, since, Some(OutageKind::Carrier)) {
            return CellularReport {
                modem,
                registration: Some(Registration::Searching),
                signal_pct: Some(0),
                ..CellularReport::status_only(ModemStatus::Searching)
            };
        }
        let t = since.as_secs_f64();
        let phase = std::f64::consts::TAU * t / self.period_secs.max(1) as f64;
        let slow = phase.sin();
        let second = since.as_secs();
        let noise = flutter(second);
        let rsrp = within(
            self.rsrp_dbm + self.swing_db * slow + 1.5 * noise,
            RSRP_RANGE_DBM,
        );
        let rsrq = within(
            self.rsrq_db + self.swing_db / 3.0 * slow + 0.8 * flutter(second + 7),
            RSRQ_RANGE_DB,
        );
        let sinr = within(
            self.sinr_db + self.swing_db * 0.8 * slow + 1.2 * flutter(second + 13),
            SINR_RANGE_DB,
        );
        // ModemManager's rough percentage follows RSRP between -120 and -70 dBm.
        let pct = (((rsrp + 120.0) / 50.0) * 100.0).clamp(0.0, 100.0) as u8;
        let mut technologies = vec![self.technology];
        if self.technology == AccessTechnology::Nr5g {
            technologies.push(AccessTechnology::Lte);
        }
        CellularReport {
            modem,
            operator_name: Some(self.operator_name.clone()),
            operator_code: Some(self.operator_code.clone()),
            access_technologies: technologies,
            registration: Some(if self.roaming {
                Registration::Roaming
            } else {
                Registration::Home
            }),
            rsrp_dbm: Some(rsrp),
            rsrq_db: Some(rsrq),
            sinr_db: Some(sinr),
            signal_pct: Some(pct),
            ..CellularReport::status_only(ModemStatus::Connected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Outage;

    #[test]
    fn the_signal_varies_within_its_swing_and_is_lost_during_a_carrier_outage() {
        let modem = SimulatedModem::default();
        let link = SimulatedLink {
            outages: vec![Outage {
                start_secs: 100,
                duration_secs: 10,
                kind: OutageKind::Carrier,
            }],
            ..SimulatedLink::default()
        };
        let samples: Vec<f64> = (0..90)
            .map(|s| {
                modem
                    .sample(&link, Duration::from_secs(s))
                    .rsrp_dbm
                    .expect("an RSRP")
            })
            .collect();
        let (low, high) = samples
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        assert!(high - low > 4.0, "the signal varies: {low}..{high}");
        assert!(low >= -92.0 - 6.0 - 1.5 && high <= -92.0 + 6.0 + 1.5);
        let report = modem.sample(&link, Duration::from_secs(30));
        assert_eq!(report.implausible(), None);
        assert_eq!(report.status, ModemStatus::Connected);
        let lost = modem.sample(&link, Duration::from_secs(105));
        assert_eq!(lost.status, ModemStatus::Searching);
        assert_eq!(lost.rsrp_dbm, None);
    }
}
