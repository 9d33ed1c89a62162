//! Links that exist only in memory and follow a script.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use stayopen_shared::compliance::AppEndpoint;

use super::{Counters, Dataplane, DataplaneError, DataplaneEvent};
use crate::app_checks::APP_CHECK_TIMEOUT;
use crate::config::{OutageKind, SimulatedLink};
use crate::probe_cost::Exchange;
use crate::tunnel::linux::{TunnelCounters, TunnelSetup};
use crate::tunnel::{TunnelPlan, TunnelSettings};
use stayopen_shared::tunnel::{RelayAssignment, TunnelMode};

/// WireGuard's overhead on each outer packet (IPv4, UDP, WireGuard header and tag), over a
/// typical 1200-byte packet of a call: what a duplicate costs beyond its inner bytes.
const DUPLICATE_OVERHEAD: f64 = 1.05;

/// A simulated tunnel: the link model says whether the relay answers through the active uplink;
/// the decisions are the real [`crate::tunnel::TunnelCore`]'s, made by the agent.
#[derive(Debug)]
struct SimTunnel {
    relay: RelayAssignment,
    handshake_at: Option<Instant>,
    received_at: Option<Instant>,
    /// Whether the relay answered at the last look: a new handshake completes when it answers
    /// again.
    answering: bool,
    plan: TunnelPlan,
    mode: TunnelMode,
    tunnel_bytes: u64,
    duplicate_bytes: Vec<u64>,
    last_accounted: Instant,
}

/// Bytes one probe and its answer put on the wire (ICMP echo without payload, both ways).
const PROBE_BYTES: u64 = 28;
/// A lost probe is reported after this long, like a real probe timing out.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the carrier script is checked.
const CARRIER_POLL: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct SimLink {
    spec: SimulatedLink,
    counters: Counters,
    last_accounted: Instant,
}

#[derive(Debug)]
pub struct SimulatedDataplane {
    started: Instant,
    links: Vec<SimLink>,
    active: Option<usize>,
    rng: StdRng,
    events: mpsc::UnboundedSender<DataplaneEvent>,
    tunnel: Option<SimTunnel>,
}

/// Whether the script has the link in an outage of `kind` at `since_start`.
pub(crate) fn in_outage(
    spec: &SimulatedLink,
    since_start: Duration,
    kind: Option<OutageKind>,
) -> bool {
    let mut t = since_start.as_secs_f64();
    if let Some(period) = spec.repeat_every_secs.filter(|p| *p > 0) {
        t %= period as f64;
    }
    spec.outages.iter().any(|o| {
        kind.is_none_or(|k| k == o.kind)
            && t >= o.start_secs as f64
            && t < (o.start_secs + o.duration_secs) as f64
    })
}

impl SimulatedDataplane {
    /// `links` holds each uplink's behaviour, in uplink order; `seed` makes loss and jitter
    /// repeatable. Carrier changes of the script are reported on `events` by a background task.
    pub fn new(
        started: Instant,
        links: Vec<SimulatedLink>,
        seed: u64,
        events: mpsc::UnboundedSender<DataplaneEvent>,
    ) -> Self {
        let scripts: Vec<SimulatedLink> = links.clone();
        let carrier_events = events.clone();
        tokio::spawn(async move {
            let mut up = vec![true; scripts.len()];
            loop {
                let since = Instant::now().saturating_duration_since(started);
                for (uplink, spec) in scripts.iter().enumerate() {
                    let now_up = !in_outage(spec, since, Some(OutageKind::Carrier));
                    if now_up != up[uplink] {
                        up[uplink] = now_up;
                        if carrier_events
                            .send(DataplaneEvent::Carrier { uplink, up: now_up })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                tokio::time::sleep(CARRIER_POLL).await;
            }
        });
        Self {
            started,
            links: links
                .into_iter()
                .map(|spec| SimLink {
                    spec,
                    counters: Counters::default(),
                    last_accounted: started,
                })
                .collect(),
            active: None,
            rng: StdRng::seed_from_u64(seed),
            events,
            tunnel: None,
        }
    }

    /// Whether the relay answers now: through an active uplink that is not in an outage and whose
    /// link does not say the relay is unreachable.
    fn relay_answers(&self, now: Instant) -> bool {
        self.active.is_some_and(|a| {
            !self.down(now, a) && self.links.get(a).is_some_and(|l| !l.spec.relay_unreachable)
        })
    }

    /// Moves the simulated tunnel to `now`: handshakes, answers, and the bytes it carried and
    /// duplicated since the last look.
    fn account_tunnel(&mut self, now: Instant) {
        let answers = self.relay_answers(now);
        let active_link = self
            .active
            .and_then(|a| self.links.get(a))
            .map(|l| l.spec.clone());
        let Some(tunnel) = &mut self.tunnel else {
            return;
        };
        let elapsed = now
            .saturating_duration_since(tunnel.last_accounted)
            .as_secs_f64();
        tunnel.last_accounted = now;
        if answers {
            if !tunnel.answering || tunnel.handshake_at.is_none() {
                tunnel.handshake_at = Some(now);
            }
            tunnel.received_at = Some(now);
        }
        tunnel.answering = answers;
        let Some(link) = active_link.filter(|_| answers && tunnel.plan.steer) else {
            return;
        };
        let carried = match tunnel.mode {
            TunnelMode::All => link.traffic_bytes_per_sec,
            TunnelMode::Critical => link.critical_bytes_per_sec,
            TunnelMode::Off => 0,
        };
        tunnel.tunnel_bytes += (carried as f64 * elapsed) as u64;
        let duplicate = (link.critical_bytes_per_sec as f64 * elapsed * DUPLICATE_OVERHEAD) as u64;
        for &uplink in &tunnel.plan.duplicate_on {
            if let Some(bytes) = tunnel.duplicate_bytes.get_mut(uplink) {
                *bytes += duplicate;
            }
            if let Some(l) = self.links.get_mut(uplink) {
                l.counters.tx_bytes += duplicate;
            }
        }
    }

    fn down(&self, now: Instant, uplink: usize) -> bool {
        self.links
            .get(uplink)
            .is_some_and(|l| in_outage(&l.spec, now.saturating_duration_since(self.started), None))
    }

    fn account_traffic(&mut self, now: Instant) {
        let started = self.started;
        for (i, link) in self.links.iter_mut().enumerate() {
            let elapsed = now.saturating_duration_since(link.last_accounted);
            link.last_accounted = now;
            let carrying = self.active == Some(i)
                && !in_outage(&link.spec, now.saturating_duration_since(started), None);
            if carrying {
                let bytes = (link.spec.traffic_bytes_per_sec as f64 * elapsed.as_secs_f64()) as u64;
                // A practice downloads far more than it uploads (EHR pages, imaging, video).
                link.counters.rx_bytes += bytes;
                link.counters.tx_bytes += bytes / 4;
            }
        }
    }

    /// The outcome the script gives a probe sent now: `Some(rtt)` when answered.
    pub fn probe_outcome(&mut self, now: Instant, uplink: usize) -> Option<Duration> {
        let down = self.down(now, uplink);
        let link = self.links.get_mut(uplink)?;
        link.counters.tx_bytes += PROBE_BYTES;
        if down || self.rng.gen_range(0.0..100.0) < link.spec.loss_pct {
            return None;
        }
        let jitter = if link.spec.jitter_ms > 0.0 {
            self.rng
                .gen_range(-link.spec.jitter_ms..link.spec.jitter_ms)
        } else {
            0.0
        };
        link.counters.rx_bytes += PROBE_BYTES;
        Some(Duration::from_secs_f64(
            (link.spec.rtt_ms + jitter).max(0.1) / 1000.0,
        ))
    }
}

/// Round trips an application check takes: a TCP handshake or a DNS query one, an HTTPS GET three
/// (TCP, TLS 1.3, the request).
fn round_trips(endpoint: &AppEndpoint) -> f64 {
    match endpoint {
        AppEndpoint::Https { .. } => 3.0,
        AppEndpoint::Tcp { .. } | AppEndpoint::Dns { .. } => 1.0,
    }
}

/// Why an endpoint that refuses this link's traffic did not answer, as the real checks say it.
fn refusal(endpoint: &AppEndpoint) -> String {
    match endpoint {
        AppEndpoint::Dns { .. } => "the resolver answered REFUSED".into(),
        AppEndpoint::Https { .. } | AppEndpoint::Tcp { .. } => "connection refused".into(),
    }
}

impl SimulatedDataplane {
    /// The outcome the script gives an application check sent now, and when it arrives: its
    /// latency from the link's round trip, a refusal for an application the link cannot reach, no
    /// answer during an outage. The check's bytes are counted on the link.
    pub fn app_check_outcome(
        &mut self,
        now: Instant,
        uplink: usize,
        app: &str,
        endpoint: &AppEndpoint,
    ) -> (Duration, Result<Duration, String>) {
        let down = self.down(now, uplink);
        let Some(link) = self.links.get_mut(uplink) else {
            return (Duration::ZERO, Err("no such uplink".into()));
        };
        let bytes = Exchange::of_endpoint(endpoint).bytes();
        link.counters.tx_bytes += bytes / 3;
        let what = endpoint.describe();
        if down {
            return (
                APP_CHECK_TIMEOUT,
                Err(format!(
                    "{what}: no answer within {} s",
                    APP_CHECK_TIMEOUT.as_secs()
                )),
            );
        }
        let jitter = if link.spec.jitter_ms > 0.0 {
            self.rng
                .gen_range(-link.spec.jitter_ms..link.spec.jitter_ms)
        } else {
            0.0
        };
        let rtt = Duration::from_secs_f64((link.spec.rtt_ms + jitter).max(0.1) / 1000.0);
        if link
            .spec
            .unreachable_apps
            .iter()
            .any(|u| u == app || *u == what)
        {
            // A firewall's reset comes back after one round trip.
            return (rtt, Err(format!("{what}: {}", refusal(endpoint))));
        }
        link.counters.rx_bytes += bytes - bytes / 3;
        let latency = rtt.mul_f64(round_trips(endpoint));
        (latency, Ok(latency))
    }
}

impl Dataplane for SimulatedDataplane {
    fn start_app_check(
        &mut self,
        now: Instant,
        uplink: usize,
        check: u64,
        app: &str,
        endpoint: &AppEndpoint,
    ) {
        let (after, outcome) = self.app_check_outcome(now, uplink, app, endpoint);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(DataplaneEvent::AppCheck { check, outcome });
        });
    }

    fn start_probe(&mut self, now: Instant, uplink: usize, target: usize) {
        let rtt = self.probe_outcome(now, uplink);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(rtt.unwrap_or(PROBE_TIMEOUT)).await;
            let _ = events.send(DataplaneEvent::Probe {
                uplink,
                target,
                rtt,
            });
        });
    }

    fn activate(
        &mut self,
        now: Instant,
        uplink: Option<usize>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        self.account_traffic(now);
        let result = match uplink {
            Some(i) if i >= self.links.len() => Err(DataplaneError::UnknownUplink(i)),
            _ => {
                self.active = uplink;
                Ok(())
            }
        };
        std::future::ready(result)
    }

    fn flush_flows(
        &mut self,
        uplink: usize,
    ) -> impl Future<Output = Result<u64, DataplaneError>> + Send + 'static {
        std::future::ready(if uplink < self.links.len() {
            Ok(0)
        } else {
            Err(DataplaneError::UnknownUplink(uplink))
        })
    }

    fn configure_tunnel(
        &mut self,
        setup: Option<TunnelSetup>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        match setup {
            None => self.tunnel = None,
            Some(setup) if self.tunnel.as_ref().is_some_and(|t| t.relay == setup.relay) => {}
            Some(setup) => {
                self.tunnel = Some(SimTunnel {
                    relay: setup.relay,
                    handshake_at: None,
                    received_at: None,
                    answering: false,
                    plan: TunnelPlan::off(),
                    mode: TunnelMode::Off,
                    tunnel_bytes: 0,
                    duplicate_bytes: vec![0; self.links.len()],
                    last_accounted: Instant::now(),
                })
            }
        }
        std::future::ready(Ok(()))
    }

    fn apply_tunnel(&mut self, now: Instant, plan: &TunnelPlan, settings: &TunnelSettings) {
        self.account_tunnel(now);
        if let Some(tunnel) = &mut self.tunnel {
            tunnel.plan = plan.clone();
            tunnel.mode = settings.mode;
        }
    }

    fn tunnel_counters(&mut self, now: Instant) -> TunnelCounters {
        self.account_tunnel(now);
        self.tunnel
            .as_ref()
            .map(|t| TunnelCounters {
                observed: crate::tunnel::Observed {
                    handshake_at: t.handshake_at,
                    received_at: t.received_at,
                },
                tunnel_bytes: t.tunnel_bytes,
                duplicate_bytes: t.duplicate_bytes.clone(),
                refused_packets: 0,
            })
            .unwrap_or_default()
    }

    fn counters(&mut self, now: Instant, uplink: usize) -> Counters {
        self.account_traffic(now);
        self.links
            .get(uplink)
            .map(|l| l.counters)
            .unwrap_or_default()
    }
}

/// The lease a simulated `dhcp` uplink holds from the start: uplink `i` gets
/// 100.64.(i+1).100/24 via 100.64.(i+1).1, resolver 192.0.2.53, for a day.
pub fn simulated_lease(uplink: usize) -> crate::dhcp::Lease {
    let net = u8::try_from(uplink + 1).unwrap_or(u8::MAX);
    crate::dhcp::Lease {
        address: std::net::Ipv4Addr::new(100, 64, net, 100),
        prefix_len: 24,
        gateway: Some(std::net::Ipv4Addr::new(100, 64, net, 1)),
        resolvers: vec![std::net::Ipv4Addr::new(192, 0, 2, 53)],
        server: std::net::Ipv4Addr::new(100, 64, net, 1),
        lease_time: Duration::from_secs(86_400),
        renew_after: Duration::from_secs(43_200),
        rebind_after: Duration::from_secs(75_600),
    }
}

/// Reports a [`simulated_lease`] for every `dhcp` uplink on `events`, as the Linux dataplane
/// does once its DHCP client is bound: the simulated dataplane accepts `dhcp` uplinks.
pub fn announce_leases(
    uplinks: &[crate::config::UplinkConfig],
    events: &mpsc::UnboundedSender<DataplaneEvent>,
) {
    for (uplink, u) in uplinks.iter().enumerate() {
        if u.addressing == crate::config::Addressing::Dhcp {
            let _ = events.send(DataplaneEvent::LeaseChanged {
                uplink,
                lease: Some(simulated_lease(uplink)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Outage;

    fn fiber() -> SimulatedLink {
        SimulatedLink {
            outages: vec![
                Outage {
                    start_secs: 10,
                    duration_secs: 5,
                    kind: OutageKind::Blackhole,
                },
                Outage {
                    start_secs: 30,
                    duration_secs: 5,
                    kind: OutageKind::Carrier,
                },
            ],
            repeat_every_secs: Some(60),
            ..SimulatedLink::default()
        }
    }

    fn dataplane(t0: Instant) -> (SimulatedDataplane, mpsc::UnboundedReceiver<DataplaneEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            SimulatedDataplane::new(t0, vec![fiber(), SimulatedLink::default()], 7, tx),
            rx,
        )
    }

    #[tokio::test]
    async fn a_scripted_outage_silences_every_probe_and_repeats() {
        let t0 = Instant::now();
        let (mut dp, _rx) = dataplane(t0);
        let s = Duration::from_secs;
        assert!(dp.probe_outcome(t0 + s(5), 0).is_some());
        assert!(dp.probe_outcome(t0 + s(12), 0).is_none());
        assert!(dp.probe_outcome(t0 + s(16), 0).is_some());
        assert!(dp.probe_outcome(t0 + s(71), 0).is_none());
        assert!(
            dp.probe_outcome(t0 + s(32), 0).is_none(),
            "no answers without carrier"
        );
        assert!(dp.probe_outcome(t0 + s(12), 1).is_some());
    }

    #[tokio::test]
    async fn only_the_active_uplink_carries_practice_traffic() {
        let t0 = Instant::now();
        let (mut dp, _rx) = dataplane(t0);
        dp.activate(t0, Some(0)).await.expect("activate");
        assert_eq!(
            dp.counters(t0 + Duration::from_secs(2), 0).rx_bytes,
            400_000
        );
        assert_eq!(dp.counters(t0 + Duration::from_secs(2), 1).rx_bytes, 0);
    }

    #[tokio::test]
    async fn a_scripted_carrier_loss_is_reported_as_an_event() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let carrier_now = SimulatedLink {
            outages: vec![Outage {
                start_secs: 0,
                duration_secs: 60,
                kind: OutageKind::Carrier,
            }],
            ..SimulatedLink::default()
        };
        let _dp = SimulatedDataplane::new(Instant::now(), vec![carrier_now], 1, tx);
        let event = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("event in time");
        assert_eq!(
            event,
            Some(DataplaneEvent::Carrier {
                uplink: 0,
                up: false
            })
        );
    }

    #[tokio::test]
    async fn an_app_the_link_cannot_reach_is_refused_with_a_readable_reason_and_others_answer_at_its_latency()
     {
        let (tx, _rx) = mpsc::unbounded_channel();
        let lte = SimulatedLink {
            rtt_ms: 40.0,
            jitter_ms: 0.0,
            unreachable_apps: vec!["Lab interface".into()],
            ..SimulatedLink::default()
        };
        let t0 = Instant::now();
        let mut dp = SimulatedDataplane::new(t0, vec![lte], 1, tx);
        let lab = AppEndpoint::Tcp {
            host: "lab.example".into(),
            port: 2575,
        };
        let (_, outcome) = dp.app_check_outcome(t0, 0, "Lab interface", &lab);
        assert_eq!(
            outcome,
            Err("tcp lab.example:2575: connection refused".into())
        );
        let ehr = AppEndpoint::Https {
            url: "https://ehr.example/health".into(),
        };
        let (_, outcome) = dp.app_check_outcome(t0, 0, "EHR", &ehr);
        assert_eq!(outcome, Ok(Duration::from_millis(120)), "three round trips");
    }

    #[tokio::test]
    async fn an_outage_makes_every_app_unreachable() {
        let t0 = Instant::now();
        let (mut dp, _rx) = dataplane(t0);
        let ehr = AppEndpoint::Https {
            url: "https://ehr.example/health".into(),
        };
        let (after, outcome) = dp.app_check_outcome(t0 + Duration::from_secs(12), 0, "EHR", &ehr);
        assert_eq!(after, APP_CHECK_TIMEOUT);
        assert!(
            outcome.as_ref().is_err_and(|r| r.contains("no answer")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn activating_an_unknown_uplink_is_an_error() {
        let (mut dp, _rx) = dataplane(Instant::now());
        assert!(dp.activate(Instant::now(), Some(5)).await.is_err());
    }

    #[test]
    fn dhcp_uplinks_get_a_simulated_lease_at_start_and_static_ones_none() {
        use crate::config::{Addressing, UplinkConfig};
        let uplink = |name: &str, addressing| UplinkConfig {
            name: name.into(),
            interface: format!("{name}0"),
            gateway: (addressing == Addressing::Static).then(|| "192.0.2.1".parse().expect("ip")),
            priority: 0,
            addressing,
            metered: false,
            dns: Vec::new(),
            modem: None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        announce_leases(
            &[
                uplink("fiber", Addressing::Static),
                uplink("cable", Addressing::Dhcp),
            ],
            &tx,
        );
        let Ok(DataplaneEvent::LeaseChanged {
            uplink,
            lease: Some(lease),
        }) = rx.try_recv()
        else {
            panic!("a lease for the dhcp uplink");
        };
        assert_eq!(uplink, 1);
        assert_eq!(lease.address, std::net::Ipv4Addr::new(100, 64, 2, 100));
        assert_eq!(lease.gateway, Some(std::net::Ipv4Addr::new(100, 64, 2, 1)));
        assert!(rx.try_recv().is_err(), "nothing for the static uplink");
    }
}
