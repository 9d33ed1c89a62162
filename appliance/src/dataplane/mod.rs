//! The I/O edge that probes uplinks and moves the practice's traffic.
//!
//! The agent drives a [`Dataplane`] with the engine's actions; what the dataplane observes (probe
//! outcomes, carrier changes, critical-application checks) comes back as [`DataplaneEvent`]s on a channel, which the agent feeds
//! to the engine. Two implementations:
//! - [`simulated::SimulatedDataplane`]: links in memory that follow a script (outages, loss,
//!   latency, carrier loss) — the demo fleet and the cloud's end-to-end tests run the real agent on it;
//! - [`linux::LinuxDataplane`]: real interfaces, routes, nftables NAT and conntrack.

mod lease;
pub mod linux;
pub mod probe;
pub mod simulated;

use std::future::Future;
use std::time::{Duration, Instant};

use stayopen_shared::compliance::AppEndpoint;

use crate::tunnel::linux::{TunnelCounters, TunnelSetup};
use crate::tunnel::{TunnelPlan, TunnelSettings};

/// Something the dataplane observed.
#[derive(Debug, Clone, PartialEq)]
pub enum DataplaneEvent {
    /// The outcome of one probe: `rtt` is `None` when it was lost.
    Probe {
        uplink: usize,
        target: usize,
        rtt: Option<Duration>,
    },
    Carrier {
        uplink: usize,
        up: bool,
    },
    /// The outcome of one critical-application check ([`Dataplane::start_app_check`]): the
    /// endpoint's round trip, or why it did not answer ("connection refused").
    AppCheck {
        check: u64,
        outcome: Result<Duration, String>,
    },
    /// The DHCP lease of a `dhcp` uplink was gained or changed (`Some`, already applied to the
    /// interface and the uplink's routes), or lost (`None`, address and routes removed). Its
    /// resolvers are the uplink's DNS servers.
    LeaseChanged {
        uplink: usize,
        lease: Option<crate::dhcp::Lease>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("unknown uplink index {0}")]
    UnknownUplink(usize),
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

pub trait Dataplane: Send {
    /// Sends one probe through `uplink` to `target`; the outcome arrives later as a
    /// [`DataplaneEvent::Probe`].
    fn start_probe(&mut self, now: Instant, uplink: usize, target: usize);
    /// Makes `uplink` carry new LAN flows (`None`: no uplink).
    fn activate(
        &mut self,
        now: Instant,
        uplink: Option<usize>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Deletes the connection-tracking state of flows NATed out of `uplink`, so their clients
    /// reconnect through the active uplink instead of hanging. The future borrows nothing: the
    /// agent runs it beside its decision loop, since `conntrack` can take seconds on a loaded
    /// box and probes must keep being read meanwhile.
    fn flush_flows(
        &mut self,
        uplink: usize,
    ) -> impl Future<Output = Result<u64, DataplaneError>> + Send + 'static;
    fn counters(&mut self, now: Instant, uplink: usize) -> Counters;
    /// Checks one endpoint of the critical application `app` through `uplink`, whichever uplink
    /// is active; the outcome arrives later as a [`DataplaneEvent::AppCheck`] naming `check`, within
    /// [`crate::app_checks::APP_CHECK_TIMEOUT`] and a little.
    fn start_app_check(
        &mut self,
        now: Instant,
        uplink: usize,
        check: u64,
        app: &str,
        endpoint: &AppEndpoint,
    );
    /// Starts the tunnel's data path for `setup`'s relay, replacing one for another relay, or
    /// stops it (`None`). Starting the same relay again changes nothing.
    fn configure_tunnel(
        &mut self,
        setup: Option<TunnelSetup>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Carries out the tunnel's latest plan: the outer uplink, duplicates, steering.
    fn apply_tunnel(&mut self, now: Instant, plan: &TunnelPlan, settings: &TunnelSettings);
    /// What the tunnel's data path observed and counted (all zero without a tunnel).
    fn tunnel_counters(&mut self, now: Instant) -> TunnelCounters;
}
