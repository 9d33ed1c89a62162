//! The StayOpen appliance agent.
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`engine`]: the sans-IO decision logic — which uplink carries traffic.
//! - [`dataplane`]: the I/O edge that probes uplinks and moves traffic: Linux (routes, nftables,
//!   conntrack) and simulated (demos and tests).
//! - [`dhcp`]: the uplinks' DHCP client (sans-IO RFC 2131 states and a thin Linux driver).
//! - [`identity`]: enrolment and the credentials kept in the state directory.
//! - [`uplink_report`]: turns probe results into the telemetry the cloud shows.
//! - [`probe_cost`]: what each kind of probe costs on a metered uplink, and how the budget is shared.
//! - [`cellular`]: cellular modems read from ModemManager over D-Bus (or simulated), for telemetry.
//! - [`app_checks`]: the sans-IO scheduler of critical-application checks, and drill measurements.
//! - [`outbox`]: what waits on disk for the cloud's acknowledgement.
//! - [`cloud_link`]: MQTT to the cloud, sending from the outbox.
//! - [`remote`]: what the cloud asks of the appliance (policy, commands), without I/O.
//! - [`tunnel`]: the session-safe tunnel to a relay — its sans-IO decisions and its Linux data
//!   path.
//! - [`lan`]: the LAN side the router sees — a DHCP server and a DNS forwarder that follows the
//!   active uplink.
//! - [`events_log`]: the local record of every decision, one JSON object per line.
//! - [`control`]: the local control socket behind `status` and `drill`.
//! - [`sd_notify`]: readiness and watchdog pings for the systemd unit.
//! - [`agent`]: the driver that owns the clock and ties the rest together.
//! - [`setup`]: the `setup` command — finds the modem's and the router's ports and writes the
//!   configuration.
//!
//! This library and the `stayopen-appliance` binary are what ships on the appliance, nothing more:
//! the simulated fleet and the network-namespace testbed that drive the agent for demos, load and
//! tests live in `stayopen-testkit` (`testkit/`) and use only the public API below.

pub mod agent;
pub mod app_checks;
pub mod cellular;
pub mod cloud_link;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod dhcp;
pub mod engine;
pub mod events_log;
pub mod identity;
pub mod lan;
pub mod outbox;
pub mod probe_cost;
pub mod remote;
pub mod sd_notify;
pub mod setup;
pub mod tunnel;
pub mod uplink_report;

/// Reported to the cloud at enrolment and in presence messages.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
