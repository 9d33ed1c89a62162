//! Cellular modems: what ModemManager knows about the modem behind a cellular uplink — operator,
//! access technology, registration, signal (RSRP, RSRQ, SINR) and the data used on the SIM — put
//! into each uplink's telemetry, because MSPs place antennas by these figures (issue 17).
//!
//! - [`report`]: sans-IO — raw D-Bus properties in, a [`CellularReport`] per uplink out, with
//!   every hostile value (a wrong type, an impossible figure) dropped and named; and the
//!   [`report::Tracker`] that remembers which uplinks had a modem, so a vanished one is said.
//! - [`dbus`]: the thin reader of `org.freedesktop.ModemManager1` over D-Bus (zbus).
//! - [`simulated`]: a modem whose signal wanders, for the simulated dataplane and the demo.
//!
//! The poller runs beside the agent's decision loop, never inside it: a D-Bus call that hangs
//! delays the next cellular report, not a failover. The driver reads the latest reports through a
//! [`CellularFeed`] when it builds telemetry.

pub mod dbus;
pub mod raw;
pub mod report;
pub mod simulated;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stayopen_shared::cellular::CellularReport;
use stayopen_shared::telemetry::UplinkTelemetry;
use tokio::sync::watch;

use crate::config::{ApplianceConfig, DataplaneSection};
use report::{CellularUplink, Poll, Tracker};

/// `[cellular]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellularSection {
    /// Read modems from ModemManager. Off by default: a box without a modem has no
    /// ModemManager to ask.
    pub enabled: bool,
    /// The D-Bus address to find ModemManager on (`unix:path=/run/dbus/system_bus_socket`);
    /// absent: the system bus. Tests point it at a private bus.
    pub bus_address: Option<String>,
    /// Seconds between two readings; also the rate asked of the modem's extended signal
    /// interface (`Signal.Setup`).
    pub poll_interval_secs: u32,
}

impl Default for CellularSection {
    fn default() -> Self {
        CellularSection {
            enabled: false,
            bus_address: None,
            poll_interval_secs: 5,
        }
    }
}

/// The configuration's cellular keys are usable: the key and the message when not.
pub fn validate(config: &ApplianceConfig) -> Result<(), (String, String)> {
    let c = &config.cellular;
    if !(1..=3600).contains(&c.poll_interval_secs) {
        return Err((
            "cellular.poll_interval_secs".into(),
            "must be between 1 and 3600".into(),
        ));
    }
    if c.bus_address
        .as_deref()
        .is_some_and(|a| a.trim().is_empty())
    {
        return Err((
            "cellular.bus_address".into(),
            "must be a D-Bus address such as unix:path=/run/dbus/system_bus_socket".into(),
        ));
    }
    for (i, uplink) in config.uplinks.iter().enumerate() {
        if uplink
            .modem
            .as_deref()
            .is_some_and(|m| m.is_empty() || m.len() > 128)
        {
            return Err((
                format!("uplinks[{i}].modem"),
                "must be 1 to 128 characters".into(),
            ));
        }
    }
    Ok(())
}

/// Problems the poller met, by reason: `no_modemmanager`, `modem_gone`, `modem_not_found`,
/// `bad_property_type`, `value_out_of_range`, `read_timeout`, `signal_setup_failed`.
pub type ProblemCounts = Arc<Mutex<BTreeMap<&'static str, u64>>>;

/// Where the driver finds each cellular uplink's latest report.
#[derive(Debug, Clone)]
pub enum CellularFeed {
    /// No cellular uplink.
    None,
    /// The ModemManager poller's latest reports, by uplink name, and what it counted.
    ModemManager {
        reports: watch::Receiver<BTreeMap<String, CellularReport>>,
        problems: ProblemCounts,
    },
    /// Simulated modems, by uplink name, sampled when telemetry is built.
    Simulated {
        started: Instant,
        links: Vec<(String, crate::config::SimulatedLink)>,
    },
}

impl CellularFeed {
    /// Puts each cellular uplink's latest report into its telemetry. A simulated modem's SIM
    /// counts the link's own traffic.
    pub fn attach(&self, now: Instant, uplinks: &mut [UplinkTelemetry]) {
        match self {
            CellularFeed::None => {}
            CellularFeed::ModemManager { reports, .. } => {
                let reports = reports.borrow();
                for uplink in uplinks {
                    uplink.cellular = reports.get(&uplink.name).cloned();
                }
            }
            CellularFeed::Simulated { started, links } => {
                let since = now.saturating_duration_since(*started);
                for uplink in uplinks {
                    let Some((_, link)) = links.iter().find(|(name, _)| *name == uplink.name)
                    else {
                        continue;
                    };
                    if let Some(modem) = &link.modem {
                        let mut report = modem.sample(link, since);
                        report.sim_rx_bytes = Some(uplink.rx_bytes);
                        report.sim_tx_bytes = Some(uplink.tx_bytes);
                        uplink.cellular = Some(report);
                    }
                }
            }
        }
    }

    /// The problems counted so far, by reason (empty for simulated modems).
    pub fn problems(&self) -> BTreeMap<&'static str, u64> {
        match self {
            CellularFeed::ModemManager { problems, .. } => {
                problems.lock().map(|p| p.clone()).unwrap_or_default()
            }
            _ => BTreeMap::new(),
        }
    }
}

/// Starts what reports the configuration's cellular uplinks: simulated modems on a simulated
/// dataplane, the ModemManager poller when `[cellular] enabled`, nothing otherwise. Call within
/// the tokio runtime; the poller stops when the feed's last clone is dropped.
pub fn start(config: &ApplianceConfig, started: Instant) -> CellularFeed {
    if let DataplaneSection::Simulated { links } = &config.dataplane {
        let links: Vec<_> = links
            .iter()
            .filter(|(_, l)| l.modem.is_some())
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        if !links.is_empty() {
            return CellularFeed::Simulated { started, links };
        }
    }
    if !config.cellular.enabled {
        return CellularFeed::None;
    }
    let uplinks = config
        .uplinks
        .iter()
        .map(|u| CellularUplink {
            name: u.name.clone(),
            interface: u.interface.clone(),
            modem: u.modem.clone(),
        })
        .collect();
    let (tx, rx) = watch::channel(BTreeMap::new());
    let problems = ProblemCounts::default();
    tokio::spawn(poll(config.cellular.clone(), uplinks, tx, problems.clone()));
    CellularFeed::ModemManager {
        reports: rx,
        problems,
    }
}

/// Reads ModemManager every `poll_interval_secs` until the feed is dropped: each reading goes
/// through the sans-IO [`Tracker`]; its reports replace the previous ones, its problems are
/// counted and logged (a problem that repeats every poll is logged when it first appears).
pub async fn poll(
    section: CellularSection,
    uplinks: Vec<CellularUplink>,
    reports: watch::Sender<BTreeMap<String, CellularReport>>,
    problems: ProblemCounts,
) {
    let interval = Duration::from_secs(u64::from(section.poll_interval_secs.max(1)));
    let mut tracker = Tracker::new(uplinks, section.poll_interval_secs);
    let mut reader: Option<dbus::Reader> = None;
    let mut logged: std::collections::BTreeSet<String> = Default::default();
    loop {
        let reading = tokio::time::timeout(interval, async {
            if reader.is_none() {
                reader = Some(dbus::Reader::connect(section.bus_address.as_deref()).await?);
            }
            match &reader {
                Some(r) => r.read().await,
                None => Err(dbus::ReadError::NotConnected),
            }
        })
        .await;
        let poll = match reading {
            Ok(Ok(modems)) => Poll::Modems(modems),
            Ok(Err(e)) => {
                if e.connection_lost() {
                    reader = None;
                }
                Poll::NoModemManager(e.to_string())
            }
            Err(_) => {
                // A bus that does not answer within the interval is as good as none: connect
                // again next time.
                reader = None;
                Poll::Timeout
            }
        };
        let outcome = tracker.update(&poll);
        if let (Some(r), false) = (&reader, outcome.setup_signal.is_empty()) {
            for path in &outcome.setup_signal {
                if let Err(e) = r.setup_signal(path, section.poll_interval_secs).await {
                    count(&problems, "signal_setup_failed");
                    tracing::warn!(modem = %path, error = %e,
                        "cannot enable the modem's extended signal information; reporting its signal quality only");
                }
            }
        }
        let mut now_logged = std::collections::BTreeSet::new();
        for problem in &outcome.problems {
            count(&problems, problem.reason);
            let key = format!("{}|{}", problem.reason, problem.detail);
            if !logged.contains(&key) {
                tracing::warn!(reason = problem.reason, uplink = problem.uplink.as_deref().unwrap_or(""),
                    detail = %problem.detail, "cellular modem problem");
            }
            now_logged.insert(key);
        }
        logged = now_logged;
        if reports.send(outcome.reports).is_err() {
            return;
        }
        tokio::select! {
            _ = reports.closed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

fn count(problems: &ProblemCounts, reason: &'static str) {
    if let Ok(mut p) = problems.lock() {
        *p.entry(reason).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[appliance]
state_dir = "/tmp/stayopen-cellular-test"

[lan]
interface = "lan0"

[[uplinks]]
name = "fiber"
interface = "wan0"
gateway = "192.0.2.1"
priority = 0

[[uplinks]]
name = "lte"
interface = "wwan0"
gateway = "198.51.100.1"
priority = 1
metered = true
"#;

    fn parse(uplink_extra: &str, rest: &str) -> Result<ApplianceConfig, crate::config::ParseError> {
        ApplianceConfig::parse(&format!(
            "{BASE}{uplink_extra}\n[dataplane]\nkind = \"simulated\"\n{rest}"
        ))
    }

    #[test]
    fn cellular_is_off_by_default_and_its_keys_are_checked() {
        let config = parse("", "").expect("parses");
        assert_eq!(config.cellular, CellularSection::default());
        assert!(!config.cellular.enabled);
        assert_eq!(config.uplinks[1].modem, None);

        let config = parse(
            "modem = \"356938035643809\"",
            "[cellular]\nenabled = true\nbus_address = \"unix:path=/run/test-bus\"\npoll_interval_secs = 2\n",
        )
        .expect("parses");
        assert!(config.cellular.enabled);
        assert_eq!(config.cellular.poll_interval_secs, 2);
        assert_eq!(config.uplinks[1].modem.as_deref(), Some("356938035643809"));

        for (uplink_extra, rest, key) in [
            (
                "",
                "[cellular]\npoll_interval_secs = 0\n",
                "cellular.poll_interval_secs",
            ),
            (
                "",
                "[cellular]\nbus_address = \" \"\n",
                "cellular.bus_address",
            ),
            ("modem = \"\"", "", "uplinks[1].modem"),
        ] {
            match parse(uplink_extra, rest) {
                Err(crate::config::ParseError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_simulated_link_with_a_modem_reports_it_with_the_links_traffic_as_the_sims_data() {
        let config = parse(
            "",
            "[dataplane.links.lte]\nmodem = { operator_name = \"Example Mobile\", rsrp_dbm = -95.0 }\n",
        )
        .expect("parses");
        let started = Instant::now();
        let feed = start(&config, started);
        let uplink = |name: &str| UplinkTelemetry {
            name: name.into(),
            priority: 0,
            metered: false,
            health: stayopen_shared::telemetry::UplinkHealth::Up,
            rtt_ms: None,
            loss_pct: 0.0,
            rx_bytes: 5_000,
            tx_bytes: 1_000,
            cellular: None,
        };
        let mut uplinks = vec![uplink("fiber"), uplink("lte")];
        feed.attach(started + Duration::from_secs(30), &mut uplinks);
        assert_eq!(uplinks[0].cellular, None);
        let report = uplinks[1].cellular.clone().expect("the LTE modem's report");
        assert_eq!(report.operator_name.as_deref(), Some("Example Mobile"));
        assert_eq!(
            (report.sim_rx_bytes, report.sim_tx_bytes),
            (Some(5_000), Some(1_000))
        );
        let rsrp = report.rsrp_dbm.expect("an RSRP");
        assert!((-95.0 - 7.5..=-95.0 + 7.5).contains(&rsrp), "{rsrp}");
    }
}
