//! The session-safe tunnel's decisions, without I/O (issue 16).
//!
//! The appliance carries a practice's critical flows (or all of them) through a WireGuard tunnel
//! to a StayOpen relay, which NATs them to its own stable address, so the far end of a call sees
//! one address before and after a failover: only the tunnel's outer packets move from one uplink
//! to another (WireGuard's endpoint roaming, no new handshake). [`TunnelCore`] decides, from the
//! policy, the engine's active uplink, each uplink's health and what the data path observed:
//! - the tunnel's state ([`TunnelState`]) and whether LAN flows are steered into it;
//! - which uplink carries the outer packets (the engine's active one), and on which other uplinks
//!   the packets of critical flows are duplicated (redundant mode);
//! - the `tunnel_fallback` / `tunnel_restored` events: a silent relay sends traffic back to direct
//!   NAT, a completed handshake brings it back into the tunnel.
//!
//! The data path that carries this out is [`linux`] (a TUN device, one UDP socket per uplink,
//! boringtun) or the simulated dataplane's link model.

pub mod linux;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stayopen_shared::compliance::AppEndpoint;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::policy::{CriticalApp, Policy};
use stayopen_shared::tunnel::{RelayAssignment, TELEMEDICINE_SERVICES, TunnelMode, TunnelState};

use crate::config::TunnelSection;

/// Added to twice the keepalive before a relay counts as silent: room for one round trip and
/// a lost keepalive.
pub const SILENCE_MARGIN: Duration = Duration::from_secs(1);
/// A first handshake not completed within this falls back to direct NAT (and raises the alert);
/// flows leave directly meanwhile anyway.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// While the relay does not answer, a new handshake is started this often (boringtun alone would
/// wait 15 s after a relay restart).
pub const HANDSHAKE_RETRY: Duration = Duration::from_secs(2);

/// `host:port` of a relay endpoint: `(host, port)`, or `None` when it is not of that form.
pub fn parse_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

/// An IPv4 network and, optionally, one port: a critical destination once names are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CriticalNet {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub port: Option<u16>,
}

impl CriticalNet {
    /// Whether `address` (and `port`, when this destination names one) falls in it.
    pub fn contains(&self, address: Ipv4Addr, port: Option<u16>) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(address) & mask == u32::from(self.address) & mask
            && self.port.is_none_or(|p| Some(p) == port)
    }

    /// The network in nftables' notation (`203.0.113.0/24`).
    pub fn network(&self) -> String {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.address) & mask),
            self.prefix
        )
    }
}

/// One critical destination as the policy writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// A host name, resolved by the data path.
    Name {
        host: String,
        port: Option<u16>,
    },
    Net(CriticalNet),
}

impl Destination {
    /// Parses a `telemedicine_services` entry (see
    /// [`stayopen_shared::tunnel::destination_problem`]); `None` if it is not valid.
    pub fn parse(entry: &str) -> Option<Destination> {
        if stayopen_shared::tunnel::destination_problem(entry).is_some() {
            return None;
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (entry, None),
        };
        if let Some((address, prefix)) = host.split_once('/') {
            return Some(Destination::Net(CriticalNet {
                address: address.parse().ok()?,
                prefix: prefix.parse().ok()?,
                port,
            }));
        }
        Some(match host.parse::<Ipv4Addr>() {
            Ok(address) => Destination::Net(CriticalNet {
                address,
                prefix: 32,
                port,
            }),
            Err(_) => Destination::Name {
                host: host.to_ascii_lowercase(),
                port,
            },
        })
    }
}

/// The destinations of the critical applications' endpoints: an HTTPS endpoint's host on its
/// port (443 or 80 unless the URL names one), a TCP endpoint's host and port. A DNS endpoint is a
/// name looked up, not a place traffic goes: it adds nothing.
pub fn app_destinations(apps: &[CriticalApp]) -> Vec<Destination> {
    let mut out = Vec::new();
    for endpoint in apps.iter().flat_map(|a| &a.endpoints) {
        let (host, port) = match endpoint {
            AppEndpoint::Https { url } => {
                let (rest, default_port) = match url.strip_prefix("https://") {
                    Some(rest) => (rest, 443),
                    None => match url.strip_prefix("http://") {
                        Some(rest) => (rest, 80),
                        None => continue,
                    },
                };
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
                match authority.rsplit_once(':') {
                    Some((host, port)) => match port.parse::<u16>() {
                        Ok(port) => (host.to_owned(), port),
                        Err(_) => continue,
                    },
                    None => (authority.to_owned(), default_port),
                }
            }
            AppEndpoint::Tcp { host, port } => (host.clone(), *port),
            AppEndpoint::Dns { .. } => continue,
        };
        if let Some(d) = Destination::parse(&format!("{host}:{port}")) {
            out.push(d);
        }
    }
    out
}

/// What the tunnel is asked to do: the policy's tunnel values (or the config's, standalone).
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelSettings {
    pub mode: TunnelMode,
    pub relay: Option<RelayAssignment>,
    /// The critical destinations: the critical applications' endpoints and the telemedicine
    /// services, sorted and without duplicates.
    pub critical: Vec<Destination>,
    pub redundant: bool,
    /// Duplicates a metered uplink may carry in a calendar month.
    pub metered_cap_bytes: u64,
}

impl TunnelSettings {
    /// From the cloud's policy; the config's static relay stands in when the cloud assigned none.
    pub fn from_policy(policy: &Policy, section: &TunnelSection) -> Self {
        let mut critical = app_destinations(&policy.critical_apps);
        critical.extend(
            policy
                .telemedicine_services
                .iter()
                .filter_map(|s| Destination::parse(s)),
        );
        critical.sort();
        critical.dedup();
        Self {
            mode: policy.tunnel_mode,
            relay: policy
                .tunnel_relay
                .clone()
                .or_else(|| section.relay.clone()),
            critical,
            redundant: policy.redundant_critical,
            metered_cap_bytes: u64::from(policy.redundant_metered_cap_mb) * 1_000_000,
        }
    }

    /// Standalone, before any cloud policy: the `[tunnel]` section's values, the rest as the
    /// default policy has it.
    pub fn from_config(section: &TunnelSection) -> Self {
        let defaults = Policy::default();
        let mut critical: Vec<Destination> = match &section.critical_destinations {
            Some(list) => list.iter().filter_map(|s| Destination::parse(s)).collect(),
            None => TELEMEDICINE_SERVICES
                .iter()
                .filter_map(|s| Destination::parse(s))
                .collect(),
        };
        critical.sort();
        critical.dedup();
        Self {
            mode: section.mode.unwrap_or(defaults.tunnel_mode),
            relay: section.relay.clone(),
            critical,
            redundant: section
                .redundant_critical
                .unwrap_or(defaults.redundant_critical),
            metered_cap_bytes: u64::from(defaults.redundant_metered_cap_mb) * 1_000_000,
        }
    }

    /// Whether there is a tunnel to run at all.
    pub fn enabled(&self) -> bool {
        self.mode != TunnelMode::Off && self.relay.is_some()
    }
}

/// One uplink as the tunnel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkView {
    /// The engine counts it healthy (up or degraded).
    pub healthy: bool,
    pub metered: bool,
    /// Duplicates it carried this calendar month.
    pub duplicate_bytes: u64,
}

/// What the data path saw of the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// When the latest handshake with the relay completed.
    pub handshake_at: Option<Instant>,
    /// When the latest authenticated packet from the relay arrived.
    pub received_at: Option<Instant>,
}

/// What the data path is to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPlan {
    pub state: TunnelState,
    /// LAN flows (all, or the critical ones) are routed into the tunnel.
    pub steer: bool,
    /// The uplink whose socket carries the outer packets.
    pub outer: Option<usize>,
    /// The other uplinks that carry a copy of each packet of a critical flow.
    pub duplicate_on: Vec<usize>,
    /// Start a new handshake now (the relay is silent, or never answered).
    pub handshake_now: bool,
}

impl TunnelPlan {
    pub fn off() -> Self {
        Self {
            state: TunnelState::Off,
            steer: false,
            outer: None,
            duplicate_on: Vec::new(),
            handshake_now: false,
        }
    }
}

/// How quickly the tunnel judges the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelTimings {
    /// The relay is silent once nothing came from it for this long.
    pub silence: Duration,
    /// Nothing from the relay for this long while the tunnel is up: a new handshake starts at
    /// once, before the fallback — a relay that restarted (and lost its sessions) is back in the
    /// tunnel within a round trip instead of after boringtun's 15 s.
    pub rehandshake: Duration,
    pub handshake_timeout: Duration,
    pub handshake_retry: Duration,
}

impl TunnelTimings {
    /// For a keepalive (and liveness ping) every `keepalive`: silent after two missed answers
    /// and [`SILENCE_MARGIN`].
    pub fn for_keepalive(keepalive: Duration) -> Self {
        Self {
            silence: 2 * keepalive + SILENCE_MARGIN,
            rehandshake: keepalive + SILENCE_MARGIN,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            handshake_retry: HANDSHAKE_RETRY,
        }
    }
}

/// The tunnel's state machine.
#[derive(Debug, Clone)]
pub struct TunnelCore {
    timings: TunnelTimings,
    settings: TunnelSettings,
    state: TunnelState,
    /// When the current state began.
    since: Instant,
    last_handshake_started: Option<Instant>,
}

impl TunnelCore {
    pub fn new(now: Instant, timings: TunnelTimings, settings: TunnelSettings) -> Self {
        let state = if settings.enabled() {
            TunnelState::Connecting
        } else {
            TunnelState::Off
        };
        Self {
            timings,
            settings,
            state,
            since: now,
            last_handshake_started: None,
        }
    }

    pub fn settings(&self) -> &TunnelSettings {
        &self.settings
    }

    pub fn state(&self) -> TunnelState {
        self.state
    }

    pub fn timings(&self) -> TunnelTimings {
        self.timings
    }

    /// New settings (a policy arrived). A different relay starts over with a new handshake.
    pub fn set_settings(&mut self, now: Instant, settings: TunnelSettings) {
        let relay_changed = settings.relay != self.settings.relay;
        self.settings = settings;
        if !self.settings.enabled() {
            self.enter(now, TunnelState::Off);
        } else if relay_changed || self.state == TunnelState::Off {
            self.enter(now, TunnelState::Connecting);
            self.last_handshake_started = None;
        }
    }

    fn enter(&mut self, now: Instant, state: TunnelState) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }

    fn relay_name(&self) -> &str {
        self.settings
            .relay
            .as_ref()
            .map_or("", |r| r.relay.as_str())
    }

    fn event(&self, kind: EventKind, reason: String) -> ApplianceEvent {
        ApplianceEvent {
            kind,
            uplink: None,
            from: None,
            to: None,
            reason,
            drill: None,
        }
    }

    /// One decision at `now`: the engine's `active` uplink, every uplink's view, what the data
    /// path observed. Returns the plan and the events to emit.
    pub fn update(
        &mut self,
        now: Instant,
        active: Option<usize>,
        uplinks: &[UplinkView],
        observed: Observed,
    ) -> (TunnelPlan, Vec<ApplianceEvent>) {
        if !self.settings.enabled() {
            self.enter(now, TunnelState::Off);
            return (TunnelPlan::off(), Vec::new());
        }
        let mut events = Vec::new();
        let fresh = observed
            .received_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.timings.silence);
        let handshake_since = |since: Instant| observed.handshake_at.is_some_and(|h| h >= since);
        match self.state {
            TunnelState::Off => self.enter(now, TunnelState::Connecting),
            TunnelState::Connecting => {
                if handshake_since(self.since) && fresh {
                    self.enter(now, TunnelState::Up);
                } else if active.is_some()
                    && now.saturating_duration_since(self.since) >= self.timings.handshake_timeout
                {
                    let reason = format!(
                        "no handshake with relay {} within {} s: traffic leaves directly",
                        self.relay_name(),
                        self.timings.handshake_timeout.as_secs()
                    );
                    self.enter(now, TunnelState::FallbackDirect);
                    events.push(self.event(EventKind::TunnelFallback, reason));
                }
            }
            TunnelState::Up => {
                // Without any uplink there is nothing to fall back to: the engine reports that.
                if !fresh && active.is_some() {
                    let silent = observed
                        .received_at
                        .map(|at| now.saturating_duration_since(at).as_secs_f64())
                        .unwrap_or_default();
                    let reason = format!(
                        "relay {} silent for {silent:.1} s: traffic leaves directly",
                        self.relay_name()
                    );
                    self.enter(now, TunnelState::FallbackDirect);
                    events.push(self.event(EventKind::TunnelFallback, reason));
                }
            }
            TunnelState::FallbackDirect => {
                if handshake_since(self.since) && fresh {
                    let reason = format!(
                        "relay {} answers again: traffic goes through the tunnel",
                        self.relay_name()
                    );
                    self.enter(now, TunnelState::Up);
                    events.push(self.event(EventKind::TunnelRestored, reason));
                }
            }
        }
        let quiet = observed
            .received_at
            .is_none_or(|at| now.saturating_duration_since(at) > self.timings.rehandshake);
        let handshake_now = (self.state != TunnelState::Up || quiet)
            && active.is_some()
            && self
                .last_handshake_started
                .is_none_or(|at| now.saturating_duration_since(at) >= self.timings.handshake_retry);
        if handshake_now {
            self.last_handshake_started = Some(now);
        }
        let up = self.state == TunnelState::Up;
        let duplicate_on = if up && self.settings.redundant {
            uplinks
                .iter()
                .enumerate()
                .filter(|(i, u)| {
                    Some(*i) != active
                        && u.healthy
                        && !(u.metered && u.duplicate_bytes >= self.settings.metered_cap_bytes)
                })
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        };
        let plan = TunnelPlan {
            state: self.state,
            steer: up,
            outer: active,
            duplicate_on,
            handshake_now,
        };
        (plan, events)
    }
}

/// The month's duplicate bytes per uplink, kept in the state directory so a restart does not
/// reset the metered cap's count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedundantLedger {
    /// `YYYY-MM`, UTC.
    pub month: String,
    pub bytes: BTreeMap<String, u64>,
}

/// The ledger's file in the state directory.
pub const LEDGER_FILE: &str = "redundant-usage.json";

impl RedundantLedger {
    pub fn month_of(at: chrono::DateTime<chrono::Utc>) -> String {
        at.format("%Y-%m").to_string()
    }

    /// Adds `bytes` sent as duplicates on `uplink` in `month`; a new month starts from zero.
    pub fn add(&mut self, month: &str, uplink: &str, bytes: u64) {
        self.roll(month);
        *self.bytes.entry(uplink.to_owned()).or_default() += bytes;
    }

    /// Starts a new month's count when `month` is not the ledger's.
    pub fn roll(&mut self, month: &str) {
        if self.month != month {
            self.month = month.to_owned();
            self.bytes.clear();
        }
    }

    pub fn of(&self, uplink: &str) -> u64 {
        self.bytes.get(uplink).copied().unwrap_or(0)
    }

    /// The ledger in `state_dir`; an unreadable file starts the count afresh.
    pub fn load(state_dir: &std::path::Path) -> Self {
        std::fs::read(state_dir.join(LEDGER_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, state_dir: &std::path::Path) -> std::io::Result<()> {
        let tmp = state_dir.join(format!("{LEDGER_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(tmp, state_dir.join(LEDGER_FILE))
    }
}

#[cfg(test)]
mod tests;
