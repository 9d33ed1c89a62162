//! The cellular reader against a fake ModemManager: a private `dbus-daemon` started by the test,
//! on which a zbus server exports `org.freedesktop.ModemManager1` — its object manager, a modem
//! with its 3GPP and signal interfaces, and a bearer. The agent's real reader and poller read it
//! through the configuration's `[cellular]` section; the test changes the properties (a signal
//! drop, a new operator, values of the wrong type or absurd size), removes the modem and stops
//! ModemManager, and the reports follow.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stayopen_appliance::cellular::{self, CellularFeed};
use stayopen_appliance::config::ApplianceConfig;
use stayopen_shared::cellular::{
    AccessTechnology, CellularReport, ModemStatus, Registration, SignalQuality,
};
use stayopen_shared::telemetry::{UplinkHealth, UplinkTelemetry};
use zbus::zvariant::{Dict, ObjectPath, OwnedValue, Value};
use zbus::{Connection, fdo, interface};

const MODEM_PATH: &str = "/org/freedesktop/ModemManager1/Modem/0";
const BEARER_PATH: &str = "/org/freedesktop/ModemManager1/Bearer/0";

/// A private message bus, stopped when dropped.
struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().expect("bus dir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus-daemon) must be installed");
        wait_for_socket(&socket);
        Bus {
            child,
            address: format!("unix:path={}", socket.display()),
            _dir: dir,
        }
    }
}

fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "dbus-daemon did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Shared = Arc<Mutex<HashMap<String, OwnedValue>>>;

fn get(props: &Shared, name: &str) -> fdo::Result<OwnedValue> {
    let props = props.lock().expect("props");
    props
        .get(name)
        .ok_or_else(|| fdo::Error::UnknownProperty(name.to_owned()))?
        .try_clone()
        .map_err(|e| fdo::Error::Failed(e.to_string()))
}

fn owned(value: Value<'_>) -> OwnedValue {
    OwnedValue::try_from(value).expect("an owned value")
}

fn a_sv(entries: &[(&str, Value<'static>)]) -> OwnedValue {
    let map: BTreeMap<&str, Value<'static>> = entries.iter().cloned().collect();
    owned(Value::Dict(Dict::from(map)))
}

struct FakeModem(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Modem")]
impl FakeModem {
    #[zbus(property)]
    fn state(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "State")
    }
    #[zbus(property)]
    fn manufacturer(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Manufacturer")
    }
    #[zbus(property)]
    fn model(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Model")
    }
    #[zbus(property)]
    fn equipment_identifier(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "EquipmentIdentifier")
    }
    #[zbus(property)]
    fn access_technologies(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "AccessTechnologies")
    }
    #[zbus(property)]
    fn signal_quality(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "SignalQuality")
    }
    #[zbus(property)]
    fn bearers(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Bearers")
    }
    #[zbus(property)]
    fn ports(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Ports")
    }
}

struct FakeModem3gpp(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Modem.Modem3gpp")]
impl FakeModem3gpp {
    #[zbus(property)]
    fn operator_name(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "OperatorName")
    }
    #[zbus(property)]
    fn operator_code(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "OperatorCode")
    }
    #[zbus(property)]
    fn registration_state(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "RegistrationState")
    }
}

struct FakeSignal(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Modem.Signal")]
impl FakeSignal {
    /// ModemManager starts refreshing the extended figures every `rate` seconds.
    fn setup(&mut self, rate: u32) {
        self.0
            .lock()
            .expect("props")
            .insert("Rate".into(), OwnedValue::from(rate));
    }
    #[zbus(property)]
    fn rate(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Rate")
    }
    #[zbus(property)]
    fn lte(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Lte")
    }
    #[zbus(property, name = "Nr5g")]
    fn nr5g(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Nr5g")
    }
}

struct FakeBearer(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Bearer")]
impl FakeBearer {
    #[zbus(property)]
    fn interface(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Interface")
    }
    #[zbus(property)]
    fn stats(&self) -> fdo::Result<OwnedValue> {
        get(&self.0, "Stats")
    }
}

/// The fake ModemManager: its connection (own the name; drop it to stop) and the properties
/// the test changes.
struct FakeModemManager {
    connection: Connection,
    modem: Shared,
    gpp: Shared,
    signal: Shared,
    bearer: Shared,
}

fn lte_signal(rsrp: f64, rsrq: f64, snr: f64) -> OwnedValue {
    a_sv(&[
        ("rssi", Value::F64(rsrp + 25.0)),
        ("rsrp", Value::F64(rsrp)),
        ("rsrq", Value::F64(rsrq)),
        ("snr", Value::F64(snr)),
    ])
}

impl FakeModemManager {
    /// A Quectel on wwan0, connected to "Example Mobile" over LTE, whose extended signal
    /// interface is off until asked.
    async fn start(bus: &Bus) -> FakeModemManager {
        let shared = |entries: Vec<(&str, OwnedValue)>| -> Shared {
            Arc::new(Mutex::new(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            ))
        };
        let modem = shared(vec![
            ("State", OwnedValue::from(11i32)),
            ("Manufacturer", owned(Value::from("Quectel"))),
            ("Model", owned(Value::from("EM12-G"))),
            ("EquipmentIdentifier", owned(Value::from("356938035643809"))),
            ("AccessTechnologies", OwnedValue::from(1u32 << 14)),
            ("SignalQuality", owned(Value::from((62u32, true)))),
            (
                "Bearers",
                owned(Value::from(vec![
                    ObjectPath::try_from(BEARER_PATH).expect("path"),
                ])),
            ),
            (
                "Ports",
                owned(Value::from(vec![
                    ("cdc-wdm0".to_owned(), 6u32),
                    ("wwan0".to_owned(), 2u32),
                ])),
            ),
        ]);
        let gpp = shared(vec![
            ("OperatorName", owned(Value::from("Example Mobile"))),
            ("OperatorCode", owned(Value::from("310260"))),
            ("RegistrationState", OwnedValue::from(1u32)),
        ]);
        let signal = shared(vec![
            ("Rate", OwnedValue::from(0u32)),
            ("Lte", lte_signal(-95.0, -12.0, 8.0)),
            ("Nr5g", a_sv(&[])),
        ]);
        let bearer = shared(vec![
            ("Interface", owned(Value::from("wwan0"))),
            (
                "Stats",
                a_sv(&[
                    ("rx-bytes", Value::U64(1_000)),
                    ("tx-bytes", Value::U64(200)),
                    ("total-rx-bytes", Value::U64(734_003_200)),
                    ("total-tx-bytes", Value::U64(52_428_800)),
                ]),
            ),
        ]);
        let connection = zbus::connection::Builder::address(bus.address.as_str())
            .expect("address")
            .serve_at(MODEM_PATH, FakeModem(modem.clone()))
            .expect("modem")
            .serve_at(MODEM_PATH, FakeModem3gpp(gpp.clone()))
            .expect("3gpp")
            .serve_at(MODEM_PATH, FakeSignal(signal.clone()))
            .expect("signal")
            .serve_at(BEARER_PATH, FakeBearer(bearer.clone()))
            .expect("bearer")
            .serve_at("/org/freedesktop/ModemManager1", fdo::ObjectManager)
            .expect("object manager")
            .name("org.freedesktop.ModemManager1")
            .expect("name")
            .build()
            .await
            .expect("the fake ModemManager on the private bus");
        FakeModemManager {
            connection,
            modem,
            gpp,
            signal,
            bearer,
        }
    }

    fn set(props: &Shared, name: &str, value: OwnedValue) {
        props.lock().expect("props").insert(name.to_owned(), value);
    }

    /// Unplugs the modem: its object leaves the bus (ModemManager's `InterfacesRemoved`).
    async fn remove_modem(&self) {
        let server = self.connection.object_server();
        server
            .remove::<FakeSignal, _>(MODEM_PATH)
            .await
            .expect("remove signal");
        server
            .remove::<FakeModem3gpp, _>(MODEM_PATH)
            .await
            .expect("remove 3gpp");
        server
            .remove::<FakeModem, _>(MODEM_PATH)
            .await
            .expect("remove modem");
    }
}

fn config(bus: &Bus, state_dir: &Path) -> ApplianceConfig {
    ApplianceConfig::parse(&format!(
        r#"
[appliance]
state_dir = "{}"

[lan]
interface = "lan0"

[[uplinks]]
name = "fiber"
interface = "eth1"
gateway = "192.0.2.1"
priority = 0

[[uplinks]]
name = "lte"
interface = "wwan0"
gateway = "198.51.100.1"
priority = 1
metered = true

[probes]
targets = ["192.0.2.53"]

[dataplane]
kind = "linux"

[cellular]
enabled = true
bus_address = "{}"
poll_interval_secs = 1
"#,
        state_dir.display(),
        bus.address
    ))
    .expect("a configuration the agent accepts")
}

fn uplink(name: &str) -> UplinkTelemetry {
    UplinkTelemetry {
        name: name.into(),
        priority: 0,
        metered: false,
        health: UplinkHealth::Up,
        rtt_ms: None,
        loss_pct: 0.0,
        rx_bytes: 0,
        tx_bytes: 0,
        cellular: None,
    }
}

/// The telemetry of both uplinks as the driver would build it now.
fn telemetry(feed: &CellularFeed) -> Vec<UplinkTelemetry> {
    let mut uplinks = vec![uplink("fiber"), uplink("lte")];
    feed.attach(Instant::now(), &mut uplinks);
    uplinks
}

/// Waits (polling every 50 ms, at most 10 s) until the LTE uplink's report satisfies `ok`.
async fn lte_report_until(
    feed: &CellularFeed,
    what: &str,
    ok: impl Fn(&CellularReport) -> bool,
) -> CellularReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let uplinks = telemetry(feed);
        assert_eq!(uplinks[0].cellular, None, "the fibre uplink has no modem");
        if let Some(report) = uplinks[1].cellular.clone().filter(|r| ok(r)) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last report {:?}",
            uplinks[1].cellular
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("state dir");
    let path = dir.path().to_owned();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_follow_the_modem_through_a_signal_drop_an_operator_change_hostile_values_and_its_removal()
 {
    let bus = Bus::start();
    let mm = FakeModemManager::start(&bus).await;
    let (_dir, state) = state_dir();
    let feed = cellular::start(&config(&bus, &state), Instant::now());

    // Matched by its data interface, wwan0; the extended signal interface is switched on at
    // the poll rate.
    let first = lte_report_until(&feed, "the first report", |r| r.rsrp_dbm.is_some()).await;
    assert_eq!(first.status, ModemStatus::Connected);
    assert_eq!(first.modem.as_deref(), Some("Quectel EM12-G"));
    assert_eq!(first.operator_name.as_deref(), Some("Example Mobile"));
    assert_eq!(first.operator_code.as_deref(), Some("310260"));
    assert_eq!(first.access_technologies, vec![AccessTechnology::Lte]);
    assert_eq!(first.registration, Some(Registration::Home));
    assert_eq!(
        (first.rsrp_dbm, first.rsrq_db, first.sinr_db),
        (Some(-95.0), Some(-12.0), Some(8.0))
    );
    assert_eq!(
        (
            first.rsrp_quality(),
            first.rsrq_quality(),
            first.sinr_quality()
        ),
        (
            Some(SignalQuality::Fair),
            Some(SignalQuality::Good),
            Some(SignalQuality::Fair)
        )
    );
    assert_eq!(first.signal_pct, Some(62));
    assert_eq!(
        (first.sim_rx_bytes, first.sim_tx_bytes),
        (Some(734_003_200), Some(52_428_800))
    );
    assert_eq!(first.problems, Vec::<String>::new());
    assert_eq!(
        mm.signal.lock().expect("props").get("Rate").cloned_u32(),
        Some(1),
        "Signal.Setup was called with the poll interval"
    );

    // The antenna is knocked down: the signal drops.
    FakeModemManager::set(&mm.signal, "Lte", lte_signal(-113.0, -19.5, -2.0));
    let dropped = lte_report_until(&feed, "the signal drop", |r| r.rsrp_dbm == Some(-113.0)).await;
    assert_eq!(dropped.rsrp_quality(), Some(SignalQuality::Poor));
    assert_eq!(dropped.rsrq_quality(), Some(SignalQuality::Fair));
    assert_eq!(dropped.sinr_quality(), Some(SignalQuality::Poor));

    // Roaming onto another network, on 5G.
    FakeModemManager::set(&mm.gpp, "OperatorName", owned(Value::from("Partner Net")));
    FakeModemManager::set(&mm.gpp, "OperatorCode", owned(Value::from("23410")));
    FakeModemManager::set(&mm.gpp, "RegistrationState", OwnedValue::from(5u32));
    FakeModemManager::set(
        &mm.modem,
        "AccessTechnologies",
        OwnedValue::from((1u32 << 15) | (1 << 14)),
    );
    FakeModemManager::set(
        &mm.signal,
        "Nr5g",
        a_sv(&[
            ("rsrp", Value::F64(-84.0)),
            ("rsrq", Value::F64(-10.5)),
            ("snr", Value::F64(21.0)),
        ]),
    );
    let roaming = lte_report_until(&feed, "the operator change", |r| {
        r.operator_name.as_deref() == Some("Partner Net")
    })
    .await;
    assert_eq!(roaming.registration, Some(Registration::Roaming));
    assert_eq!(
        roaming.access_technologies,
        vec![AccessTechnology::Nr5g, AccessTechnology::Lte]
    );
    assert_eq!(roaming.rsrp_dbm, Some(-84.0), "5G NR's figures, not LTE's");

    // A broken modem firmware: wrong types and absurd figures are dropped and named, the poller
    // carries on, and what is left is a report the cloud accepts.
    FakeModemManager::set(&mm.modem, "AccessTechnologies", owned(Value::from("lte")));
    FakeModemManager::set(&mm.modem, "State", owned(Value::from(-7.5f64)));
    FakeModemManager::set(
        &mm.signal,
        "Nr5g",
        a_sv(&[
            ("rsrp", Value::F64(f64::NAN)),
            ("rsrq", Value::F64(1e308)),
            ("snr", Value::from("great")),
        ]),
    );
    FakeModemManager::set(
        &mm.bearer,
        "Stats",
        a_sv(&[("total-rx-bytes", Value::U64(u64::MAX))]),
    );
    FakeModemManager::set(
        &mm.gpp,
        "OperatorName",
        owned(Value::from("\u{1b}[31mRED\u{7}".repeat(40))),
    );
    let hostile = lte_report_until(&feed, "the hostile values", |r| {
        r.access_technologies.is_empty() && !r.problems.is_empty()
    })
    .await;
    assert_eq!(hostile.status, ModemStatus::Unknown);
    assert_eq!(
        (hostile.rsrp_dbm, hostile.rsrq_db),
        (Some(-113.0), Some(-19.5)),
        "5G NR's figures are unusable: LTE's are reported"
    );
    assert_eq!(hostile.sim_rx_bytes, None);
    assert!(
        hostile
            .operator_name
            .as_deref()
            .is_some_and(|n| !n.chars().any(char::is_control) && n.chars().count() <= 64),
        "{:?}",
        hostile.operator_name
    );
    assert_eq!(hostile.implausible(), None, "{hostile:?}");
    let problems = feed.problems();
    assert!(
        problems.get("bad_property_type").copied().unwrap_or(0) >= 3,
        "{problems:?}"
    );
    assert!(
        problems.get("value_out_of_range").copied().unwrap_or(0) >= 2,
        "{problems:?}"
    );

    // The modem is unplugged: the uplink says so instead of keeping the last figures.
    mm.remove_modem().await;
    lte_report_until(&feed, "the modem gone", |r| r.status == ModemStatus::Gone).await;
    assert!(feed.problems().get("modem_gone").copied().unwrap_or(0) >= 1);

    // ModemManager stops.
    drop(mm);
    lte_report_until(&feed, "ModemManager gone", |r| {
        r.status == ModemStatus::NoModemManager
    })
    .await;
    assert!(feed.problems().get("no_modemmanager").copied().unwrap_or(0) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_whose_bus_has_no_modemmanager_reports_it_on_the_uplink_named_by_its_modem_key() {
    let bus = Bus::start();
    let (_dir, state) = state_dir();
    let mut config = config(&bus, &state);
    config.uplinks[1].modem = Some("356938035643809".into());
    let feed = cellular::start(&config, Instant::now());
    let report = lte_report_until(&feed, "no ModemManager", |r| {
        r.status == ModemStatus::NoModemManager
    })
    .await;
    assert_eq!(report.rsrp_dbm, None);

    // ModemManager starts: the modem is found by its IMEI, whatever its interface.
    let mm = FakeModemManager::start(&bus).await;
    FakeModemManager::set(&mm.bearer, "Interface", owned(Value::from("wwan7")));
    let found = lte_report_until(&feed, "the modem by its IMEI", |r| {
        r.status == ModemStatus::Connected
    })
    .await;
    assert_eq!(found.operator_name.as_deref(), Some("Example Mobile"));
}

/// `OwnedValue` as a `u32`, when it is one.
trait CloneU32 {
    fn cloned_u32(&self) -> Option<u32>;
}

impl CloneU32 for Option<&OwnedValue> {
    fn cloned_u32(&self) -> Option<u32> {
        self.and_then(|v| u32::try_from(v).ok())
    }
}
