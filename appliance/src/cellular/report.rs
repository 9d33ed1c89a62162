//! From ModemManager's raw properties to one [`CellularReport`] per cellular uplink, without I/O.
//!
//! Design: each poll hands the [`Tracker`] everything read ([`Poll`]); it matches modems to
//! uplinks (an explicit `modem` key first, then the data interface a bearer or a network port
//! names), turns each modem's properties into a report and remembers which uplinks had a modem,
//! so one that vanishes is reported as `gone` rather than silently dropped. Every property is
//! checked for its D-Bus type and for a value a modem can report (the ranges in
//! `stayopen_shared::cellular`); anything else is dropped from the report, named in its
//! `problems` and returned as a [`Problem`] for the driver to count and log. Nothing here panics
//! on any input.

use std::collections::{BTreeMap, BTreeSet};

use stayopen_shared::cellular::{
    AccessTechnology, CellularReport, MAX_PROBLEMS, ModemStatus, RSRP_RANGE_DBM, RSRQ_RANGE_DB,
    Registration, SINR_RANGE_DB, clean_label,
};

use super::raw::{Prop, Props, RawModem};

/// An uplink that may be cellular, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellularUplink {
    pub name: String,
    pub interface: String,
    /// The configured `modem` key, if any.
    pub modem: Option<String>,
}

/// One reading of ModemManager.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Every modem ModemManager exports.
    Modems(Vec<RawModem>),
    /// ModemManager (or the bus) did not answer; why.
    NoModemManager(String),
    /// The reading did not finish within the poll interval.
    Timeout,
}

/// Something wrong that the driver counts (by `reason`) and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `no_modemmanager`, `read_timeout`, `modem_gone`, `modem_not_found`, `bad_property_type`,
    /// `value_out_of_range`.
    pub reason: &'static str,
    pub uplink: Option<String>,
    pub detail: String,
}

/// What one poll produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The report of each cellular uplink, by uplink name.
    pub reports: BTreeMap<String, CellularReport>,
    /// Modems (object paths) whose extended signal interface must be switched on at the poll
    /// rate (`Signal.Setup`).
    pub setup_signal: Vec<String>,
    pub problems: Vec<Problem>,
}

/// Which uplinks had a modem, and which modems were asked for extended signal information.
#[derive(Debug, Clone)]
pub struct Tracker {
    uplinks: Vec<CellularUplink>,
    rate_secs: u32,
    /// Uplinks matched to a modem at some poll: they stay cellular, and say so when it is gone.
    cellular: BTreeSet<String>,
    /// Modems asked for `Signal.Setup` while present; asked again only after they vanish.
    signal_asked: BTreeSet<String>,
}

impl Tracker {
    /// A tracker for `uplinks`, asking modems for signal figures every `rate_secs`.
    pub fn new(uplinks: Vec<CellularUplink>, rate_secs: u32) -> Self {
        Tracker {
            uplinks,
            rate_secs,
            cellular: BTreeSet::new(),
            signal_asked: BTreeSet::new(),
        }
    }

    /// The reports for this reading.
    pub fn update(&mut self, poll: &Poll) -> Outcome {
        let mut outcome = Outcome::default();
        let (reason, detail) = match poll {
            Poll::Modems(modems) => return self.modems(modems),
            Poll::NoModemManager(why) => ("no_modemmanager", why.clone()),
            Poll::Timeout => (
                "read_timeout",
                "ModemManager did not answer within the poll interval".to_owned(),
            ),
        };
        outcome.problems.push(Problem {
            reason,
            uplink: None,
            detail,
        });
        for uplink in self.expected() {
            outcome.reports.insert(
                uplink,
                CellularReport::status_only(ModemStatus::NoModemManager),
            );
        }
        // A restarted ModemManager forgets the signal rate.
        self.signal_asked.clear();
        outcome
    }

    fn modems(&mut self, modems: &[RawModem]) -> Outcome {
        let mut outcome = Outcome::default();
        let present: BTreeSet<&str> = modems.iter().map(|m| m.path.as_str()).collect();
        self.signal_asked.retain(|p| present.contains(p.as_str()));
        let mut used = BTreeSet::new();
        for uplink in self.uplinks.clone() {
            let found = modems
                .iter()
                .position(|m| !used.contains(&m.path) && matches(&uplink, m));
            let Some(index) = found else {
                if self.cellular.contains(&uplink.name) {
                    outcome.problems.push(Problem {
                        reason: "modem_gone",
                        uplink: Some(uplink.name.clone()),
                        detail: "the uplink's modem is no longer on the bus".into(),
                    });
                    outcome.reports.insert(
                        uplink.name.clone(),
                        CellularReport::status_only(ModemStatus::Gone),
                    );
                } else if let Some(key) = &uplink.modem {
                    outcome.problems.push(Problem {
                        reason: "modem_not_found",
                        uplink: Some(uplink.name.clone()),
                        detail: format!("no modem matches {key:?}"),
                    });
                    outcome.reports.insert(
                        uplink.name.clone(),
                        CellularReport::status_only(ModemStatus::NotFound),
                    );
                }
                continue;
            };
            let modem = &modems[index];
            used.insert(modem.path.clone());
            self.cellular.insert(uplink.name.clone());
            let (report, problems) = modem_report(modem);
            outcome
                .problems
                .extend(problems.into_iter().map(|(reason, detail)| Problem {
                    reason,
                    uplink: Some(uplink.name.clone()),
                    detail,
                }));
            let rate = modem.signal.get("Rate");
            let has_signal = !modem.signal.is_empty();
            let rate_ok = matches!(rate, Some(Prop::Int(r)) if *r == i64::from(self.rate_secs));
            if has_signal && !rate_ok && self.signal_asked.insert(modem.path.clone()) {
                outcome.setup_signal.push(modem.path.clone());
            }
            outcome.reports.insert(uplink.name.clone(), report);
        }
        outcome
    }

    /// Uplinks that should carry a cellular report even without a modem to read.
    fn expected(&self) -> Vec<String> {
        self.uplinks
            .iter()
            .filter(|u| u.modem.is_some() || self.cellular.contains(&u.name))
            .map(|u| u.name.clone())
            .collect()
    }
}

/// Whether `modem` is the one behind `uplink`: the configured `modem` key names it (equipment
/// or device identifier, object path, or its index), or — without a key — a bearer's data
/// interface or a network port is the uplink's interface.
pub fn matches(uplink: &CellularUplink, modem: &RawModem) -> bool {
    match &uplink.modem {
        Some(key) => identifiers(modem).iter().any(|id| id == key),
        None => data_interfaces(modem).contains(&uplink.interface),
    }
}

fn identifiers(modem: &RawModem) -> Vec<String> {
    let mut ids = vec![modem.path.clone()];
    if let Some(index) = modem.path.rsplit('/').next() {
        ids.push(index.to_owned());
    }
    for key in ["EquipmentIdentifier", "DeviceIdentifier", "Device"] {
        if let Some(Prop::Str(s)) = modem.modem.get(key) {
            ids.push(s.clone());
        }
    }
    ids
}

/// `MM_MODEM_PORT_TYPE_NET`: a network interface of the modem.
const PORT_TYPE_NET: i64 = 2;

/// The network interfaces a modem carries data on: its bearers' `Interface` and its `Ports` of
/// type net.
pub fn data_interfaces(modem: &RawModem) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for bearer in &modem.bearers {
        if let Some(Prop::Str(name)) = bearer.get("Interface")
            && !name.is_empty()
        {
            names.insert(name.clone());
        }
    }
    if let Some(Prop::List(ports)) = modem.modem.get("Ports") {
        for port in ports {
            if let Prop::Struct(fields) = port
                && let [Prop::Str(name), Prop::Int(PORT_TYPE_NET)] = fields.as_slice()
            {
                names.insert(name.clone());
            }
        }
    }
    names
}

/// Collects what was wrong with the properties while a report is built.
struct Checker {
    problems: Vec<(&'static str, String)>,
}

impl Checker {
    fn wrong_type(&mut self, what: &str, expected: &str, got: &Prop) {
        self.problems.push((
            "bad_property_type",
            format!("{what}: expected {expected}, got {}", got.kind()),
        ));
    }

    fn out_of_range(&mut self, what: &str, detail: String) {
        self.problems
            .push(("value_out_of_range", format!("{what}: {detail}")));
    }

    fn int(&mut self, props: &Props, iface: &str, name: &str) -> Option<i64> {
        match props.get(name)? {
            Prop::Int(v) => Some(*v),
            other => {
                self.wrong_type(&format!("{iface}.{name}"), "an integer", other);
                None
            }
        }
    }

    fn string(&mut self, props: &Props, iface: &str, name: &str) -> Option<String> {
        match props.get(name)? {
            Prop::Str(s) => Some(clean_label(s)).filter(|s| !s.is_empty()),
            other => {
                self.wrong_type(&format!("{iface}.{name}"), "a string", other);
                None
            }
        }
    }

    /// A signal figure from a dict (`Signal.Lte`, `Signal.Nr5g`), within `range`.
    fn figure(
        &mut self,
        dict: &BTreeMap<String, Prop>,
        what: &str,
        key: &str,
        (low, high): (f64, f64),
    ) -> Option<f64> {
        let value = match dict.get(key)? {
            Prop::F64(v) => *v,
            other => {
                self.wrong_type(&format!("{what}.{key}"), "a double", other);
                return None;
            }
        };
        if value.is_finite() && (low..=high).contains(&value) {
            Some((value * 10.0).round() / 10.0)
        } else {
            self.out_of_range(
                &format!("{what}.{key}"),
                format!("{value} is not within {low} to {high}"),
            );
            None
        }
    }

    /// A byte counter from a bearer's `Stats`.
    fn counter(&mut self, stats: &BTreeMap<String, Prop>, key: &str) -> Option<u64> {
        match stats.get(key)? {
            Prop::U64(v) => Some(*v),
            Prop::Int(v) if *v >= 0 => Some(*v as u64),
            other => {
                self.wrong_type(&format!("Bearer.Stats.{key}"), "a uint64", other);
                None
            }
        }
    }
}

/// The modem's state (`MMModemState`).
fn status(state: i64) -> ModemStatus {
    match state {
        -1 => ModemStatus::Failed,
        1 => ModemStatus::Initializing,
        2 => ModemStatus::Locked,
        3..=5 => ModemStatus::Disabled,
        6 | 9 | 10 => ModemStatus::Enabled,
        7 => ModemStatus::Searching,
        8 => ModemStatus::Registered,
        11 => ModemStatus::Connected,
        _ => ModemStatus::Unknown,
    }
}

/// `MMModem3gppRegistrationState`.
fn registration(state: i64) -> Registration {
    match state {
        0 => Registration::Idle,
        1 | 6 | 9 => Registration::Home,
        2 => Registration::Searching,
        3 => Registration::Denied,
        5 | 7 | 10 => Registration::Roaming,
        8 => Registration::EmergencyOnly,
        _ => Registration::Unknown,
    }
}

/// `MMModemAccessTechnology` bits, most capable first.
const TECHNOLOGY_BITS: [(u32, AccessTechnology); 17] = [
    (1 << 15, AccessTechnology::Nr5g),
    (1 << 14, AccessTechnology::Lte),
    (1 << 16, AccessTechnology::LteCatM),
    (1 << 17, AccessTechnology::LteNbIot),
    (1 << 9, AccessTechnology::Hspa),
    (1 << 8, AccessTechnology::Hspa),
    (1 << 7, AccessTechnology::Hspa),
    (1 << 6, AccessTechnology::Hspa),
    (1 << 5, AccessTechnology::Umts),
    (1 << 4, AccessTechnology::Edge),
    (1 << 3, AccessTechnology::Gprs),
    (1 << 2, AccessTechnology::Gsm),
    (1 << 1, AccessTechnology::Gsm),
    (1 << 13, AccessTechnology::Evdo),
    (1 << 12, AccessTechnology::Evdo),
    (1 << 11, AccessTechnology::Evdo),
    (1 << 10, AccessTechnology::Cdma1x),
];

/// The technologies a `MMModemAccessTechnology` bitmask names, most capable first, once each.
pub fn technologies(mask: u32) -> Vec<AccessTechnology> {
    let mut out: Vec<AccessTechnology> = Vec::new();
    for (bit, tech) in TECHNOLOGY_BITS {
        if mask & bit != 0 && !out.contains(&tech) {
            out.push(tech);
        }
    }
    out.sort();
    out
}

/// One modem's report from its raw properties, and what was wrong with them.
pub fn modem_report(raw: &RawModem) -> (CellularReport, Vec<(&'static str, String)>) {
    let mut c = Checker {
        problems: Vec::new(),
    };
    const MODEM: &str = "Modem";
    const GPP: &str = "Modem3gpp";
    let mut report = CellularReport::status_only(
        c.int(&raw.modem, MODEM, "State")
            .map_or(ModemStatus::Unknown, status),
    );
    let label = [
        c.string(&raw.modem, MODEM, "Manufacturer"),
        c.string(&raw.modem, MODEM, "Model"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    report.modem = Some(clean_label(&label)).filter(|l| !l.is_empty());
    if let Some(mask) = c.int(&raw.modem, MODEM, "AccessTechnologies") {
        match u32::try_from(mask) {
            Ok(mask) => report.access_technologies = technologies(mask),
            Err(_) => c.out_of_range("Modem.AccessTechnologies", format!("{mask} is no bitmask")),
        }
    }
    match raw.modem.get("SignalQuality") {
        None => {}
        Some(Prop::Struct(fields)) if matches!(fields.first(), Some(Prop::Int(_))) => {
            if let Some(Prop::Int(pct)) = fields.first() {
                match u8::try_from(*pct) {
                    Ok(p) if p <= 100 => report.signal_pct = Some(p),
                    _ => c.out_of_range("Modem.SignalQuality", format!("{pct} % is not 0-100")),
                }
            }
        }
        Some(other) => c.wrong_type("Modem.SignalQuality", "a (ub) struct", other),
    }
    report.operator_name = c.string(&raw.modem3gpp, GPP, "OperatorName");
    report.operator_code = c.string(&raw.modem3gpp, GPP, "OperatorCode");
    if let Some(code) = &report.operator_code
        && !(5..=6).contains(&code.len())
    {
        c.out_of_range(
            "Modem3gpp.OperatorCode",
            format!("{code:?} is no MCC and MNC"),
        );
        report.operator_code = None;
    }
    report.registration = c
        .int(&raw.modem3gpp, GPP, "RegistrationState")
        .map(registration);
    // 5G NR's figures when the modem reports them (standalone, or NR in non-standalone mode),
    // else LTE's: the antenna serves the newest radio.
    for (iface, name) in [("Signal.Nr5g", "Nr5g"), ("Signal.Lte", "Lte")] {
        let dict = match raw.signal.get(name) {
            None => continue,
            Some(Prop::Dict(d)) => d,
            Some(other) => {
                c.wrong_type(iface, "a dict", other);
                continue;
            }
        };
        let rsrp = c.figure(dict, iface, "rsrp", RSRP_RANGE_DBM);
        let rsrq = c.figure(dict, iface, "rsrq", RSRQ_RANGE_DB);
        let sinr = c.figure(dict, iface, "snr", SINR_RANGE_DB);
        if report.rsrp_dbm.is_none() && report.rsrq_db.is_none() && report.sinr_db.is_none() {
            report.rsrp_dbm = rsrp;
            report.rsrq_db = rsrq;
            report.sinr_db = sinr;
        }
    }
    let (mut rx, mut tx) = (None::<u64>, None::<u64>);
    for bearer in &raw.bearers {
        let stats = match bearer.get("Stats") {
            None => continue,
            Some(Prop::Dict(d)) => d,
            Some(other) => {
                c.wrong_type("Bearer.Stats", "a dict", other);
                continue;
            }
        };
        // Totals span every connection of the bearer; older ModemManagers count only the
        // current one.
        let received = c
            .counter(stats, "total-rx-bytes")
            .or_else(|| c.counter(stats, "rx-bytes"));
        let sent = c
            .counter(stats, "total-tx-bytes")
            .or_else(|| c.counter(stats, "tx-bytes"));
        for (sum, add) in [(&mut rx, received), (&mut tx, sent)] {
            if let Some(add) = add {
                *sum = Some(sum.unwrap_or(0).saturating_add(add));
            }
        }
    }
    for (what, sum) in [("received", &mut rx), ("sent", &mut tx)] {
        if sum.is_some_and(|b| i64::try_from(b).is_err()) {
            c.out_of_range("Bearer.Stats", format!("bytes {what} beyond 2^63"));
            *sum = None;
        }
    }
    report.sim_rx_bytes = rx;
    report.sim_tx_bytes = tx;
    report.problems = c
        .problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|(_, detail)| clean_label(detail))
        .collect();
    (report, c.problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, Prop)]) -> Prop {
        Prop::Dict(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn props(entries: &[(&str, Prop)]) -> Props {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// A registered LTE modem on wwan0 as a Quectel under ModemManager 1.20 exports it.
    fn lte_modem() -> RawModem {
        RawModem {
            path: "/org/freedesktop/ModemManager1/Modem/0".into(),
            modem: props(&[
                ("State", Prop::Int(11)),
                ("Manufacturer", Prop::Str("Quectel".into())),
                ("Model", Prop::Str("EM12-G".into())),
                ("EquipmentIdentifier", Prop::Str("356938035643809".into())),
                ("AccessTechnologies", Prop::Int(1 << 14)),
                (
                    "SignalQuality",
                    Prop::Struct(vec![Prop::Int(64), Prop::Bool(true)]),
                ),
                (
                    "Ports",
                    Prop::List(vec![
                        Prop::Struct(vec![Prop::Str("cdc-wdm0".into()), Prop::Int(6)]),
                        Prop::Struct(vec![Prop::Str("wwan0".into()), Prop::Int(2)]),
                    ]),
                ),
            ]),
            modem3gpp: props(&[
                ("OperatorName", Prop::Str("Example Mobile".into())),
                ("OperatorCode", Prop::Str("310260".into())),
                ("RegistrationState", Prop::Int(1)),
            ]),
            signal: props(&[
                ("Rate", Prop::Int(5)),
                (
                    "Lte",
                    dict(&[
                        ("rssi", Prop::F64(-65.0)),
                        ("rsrp", Prop::F64(-93.0)),
                        ("rsrq", Prop::F64(-11.0)),
                        ("snr", Prop::F64(9.5)),
                    ]),
                ),
            ]),
            bearers: vec![props(&[
                ("Interface", Prop::Str("wwan0".into())),
                (
                    "Stats",
                    dict(&[
                        ("total-rx-bytes", Prop::U64(7_000_000)),
                        ("total-tx-bytes", Prop::U64(1_000_000)),
                        ("rx-bytes", Prop::U64(500)),
                    ]),
                ),
            ])],
        }
    }

    fn lte_uplink() -> CellularUplink {
        CellularUplink {
            name: "lte".into(),
            interface: "wwan0".into(),
            modem: None,
        }
    }

    #[test]
    fn a_registered_lte_modem_becomes_a_report_with_every_figure() {
        let (report, problems) = modem_report(&lte_modem());
        assert_eq!(problems, vec![]);
        assert_eq!(report.status, ModemStatus::Connected);
        assert_eq!(report.modem.as_deref(), Some("Quectel EM12-G"));
        assert_eq!(report.operator_name.as_deref(), Some("Example Mobile"));
        assert_eq!(report.operator_code.as_deref(), Some("310260"));
        assert_eq!(report.access_technologies, vec![AccessTechnology::Lte]);
        assert_eq!(report.registration, Some(Registration::Home));
        assert_eq!(
            (report.rsrp_dbm, report.rsrq_db, report.sinr_db),
            (Some(-93.0), Some(-11.0), Some(9.5))
        );
        assert_eq!(report.signal_pct, Some(64));
        assert_eq!(
            (report.sim_rx_bytes, report.sim_tx_bytes),
            (Some(7_000_000), Some(1_000_000)),
            "the bearer's totals, not its current connection's"
        );
    }

    #[test]
    fn five_g_figures_are_preferred_and_the_bitmask_lists_nr_before_its_lte_anchor() {
        let mut modem = lte_modem();
        modem.modem.insert(
            "AccessTechnologies".into(),
            Prop::Int(i64::from((1u32 << 15) | (1 << 14) | (1 << 9))),
        );
        modem.signal.insert(
            "Nr5g".into(),
            dict(&[("rsrp", Prop::F64(-85.0)), ("snr", Prop::F64(22.0))]),
        );
        let (report, _) = modem_report(&modem);
        assert_eq!(
            report.access_technologies,
            vec![
                AccessTechnology::Nr5g,
                AccessTechnology::Lte,
                AccessTechnology::Hspa
            ]
        );
        assert_eq!(report.rsrp_dbm, Some(-85.0));
        assert_eq!(report.sinr_db, Some(22.0));
        assert_eq!(
            report.rsrq_db, None,
            "NR reported no RSRQ; LTE's is not mixed in"
        );
    }

    #[test]
    fn hostile_values_are_dropped_named_and_never_panic() {
        let mut modem = lte_modem();
        modem
            .modem
            .insert("State".into(), Prop::Str("connected".into()));
        modem
            .modem
            .insert("AccessTechnologies".into(), Prop::Int(-5));
        modem.modem.insert(
            "SignalQuality".into(),
            Prop::Struct(vec![Prop::Int(250), Prop::Bool(true)]),
        );
        modem.modem3gpp.insert("OperatorName".into(), Prop::Int(42));
        modem.modem3gpp.insert(
            "OperatorCode".into(),
            Prop::Str("\u{1b}[2Jevil-operator-code".into()),
        );
        modem.signal.insert(
            "Lte".into(),
            dict(&[
                ("rsrp", Prop::F64(f64::NAN)),
                ("rsrq", Prop::F64(1e300)),
                ("snr", Prop::Str("high".into())),
            ]),
        );
        modem.bearers.push(props(&[(
            "Stats",
            dict(&[("total-rx-bytes", Prop::U64(u64::MAX))]),
        )]));
        modem.bearers.push(props(&[("Stats", Prop::Bool(false))]));
        let (report, problems) = modem_report(&modem);
        assert_eq!(report.status, ModemStatus::Unknown);
        assert_eq!(report.access_technologies, vec![]);
        assert_eq!(report.signal_pct, None);
        assert_eq!(report.operator_name, None);
        assert_eq!(report.operator_code, None);
        assert_eq!(
            (report.rsrp_dbm, report.rsrq_db, report.sinr_db),
            (None, None, None)
        );
        assert_eq!(report.sim_rx_bytes, None, "the sum overflowed 2^63");
        let reasons: Vec<_> = problems.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            reasons
                .iter()
                .filter(|r| **r == "bad_property_type")
                .count(),
            4,
            "{problems:?}"
        );
        assert!(
            reasons
                .iter()
                .filter(|r| **r == "value_out_of_range")
                .count()
                >= 5
        );
        assert_eq!(report.problems.len(), MAX_PROBLEMS);
        assert_eq!(
            report.implausible(),
            None,
            "what is left, the cloud accepts"
        );
    }

    #[test]
    fn an_explicit_modem_key_wins_over_the_data_interface() {
        let mut other = lte_modem();
        other.path = "/org/freedesktop/ModemManager1/Modem/3".into();
        other.modem.insert(
            "EquipmentIdentifier".into(),
            Prop::Str("490154203237518".into()),
        );
        let by_key = CellularUplink {
            modem: Some("490154203237518".into()),
            ..lte_uplink()
        };
        assert!(matches(&by_key, &other));
        assert!(!matches(&by_key, &lte_modem()));
        let by_index = CellularUplink {
            modem: Some("3".into()),
            ..lte_uplink()
        };
        assert!(matches(&by_index, &other));
        let fibre = CellularUplink {
            name: "fiber".into(),
            interface: "eth1".into(),
            modem: None,
        };
        assert!(!matches(&fibre, &lte_modem()));
    }

    #[test]
    fn a_vanished_modem_is_reported_gone_and_a_missing_modemmanager_is_said() {
        let fibre = CellularUplink {
            name: "fiber".into(),
            interface: "eth1".into(),
            modem: None,
        };
        let mut tracker = Tracker::new(vec![fibre, lte_uplink()], 5);
        let first = tracker.update(&Poll::Modems(vec![lte_modem()]));
        assert_eq!(first.reports.keys().collect::<Vec<_>>(), ["lte"]);
        assert_eq!(
            first.setup_signal,
            Vec::<String>::new(),
            "the rate is already 5 s"
        );

        let gone = tracker.update(&Poll::Modems(vec![]));
        assert_eq!(gone.reports["lte"].status, ModemStatus::Gone);
        assert_eq!(gone.problems[0].reason, "modem_gone");
        assert!(!gone.reports.contains_key("fiber"));

        let no_mm = tracker.update(&Poll::NoModemManager("ServiceUnknown".into()));
        assert_eq!(no_mm.reports["lte"].status, ModemStatus::NoModemManager);
        assert_eq!(no_mm.problems[0].reason, "no_modemmanager");

        let back = tracker.update(&Poll::Modems(vec![lte_modem()]));
        assert_eq!(back.reports["lte"].status, ModemStatus::Connected);
        assert!(back.problems.is_empty());
    }

    #[test]
    fn the_signal_interface_is_set_up_once_per_appearance_of_the_modem() {
        let mut modem = lte_modem();
        modem.signal.insert("Rate".into(), Prop::Int(0));
        let mut tracker = Tracker::new(vec![lte_uplink()], 5);
        let path = modem.path.clone();
        assert_eq!(
            tracker
                .update(&Poll::Modems(vec![modem.clone()]))
                .setup_signal,
            vec![path.clone()]
        );
        assert_eq!(
            tracker
                .update(&Poll::Modems(vec![modem.clone()]))
                .setup_signal,
            Vec::<String>::new(),
            "not asked again every poll"
        );
        tracker.update(&Poll::Modems(vec![]));
        assert_eq!(
            tracker.update(&Poll::Modems(vec![modem])).setup_signal,
            vec![path],
            "a modem that came back (reset) is asked again"
        );
    }

    #[test]
    fn a_configured_modem_that_is_absent_is_not_found() {
        let uplink = CellularUplink {
            modem: Some("999".into()),
            ..lte_uplink()
        };
        let mut tracker = Tracker::new(vec![uplink], 5);
        let outcome = tracker.update(&Poll::Modems(vec![lte_modem()]));
        assert_eq!(outcome.reports["lte"].status, ModemStatus::NotFound);
        assert_eq!(outcome.problems[0].reason, "modem_not_found");
    }
}
