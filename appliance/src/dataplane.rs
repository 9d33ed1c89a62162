//! The I/O edge that probes uplinks and moves the practice's traffic.
//!
//! The agent talks to a [`Dataplane`]; this build carries the [`SimulatedDataplane`], whose links
//! exist only in memory and follow a script (outages, loss, latency). It is what the demo fleet and
//! the end-to-end tests run on: the agent's real code over links that fail on cue.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::SimulatedLink;

/// The outcome of probing every target once through one uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRound {
    pub sent: usize,
    pub answered: usize,
    /// Round-trip times of the answers.
    pub rtts: Vec<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("unknown uplink {0:?}")]
    UnknownUplink(String),
}

pub trait Dataplane: Send {
    /// Probes each of `targets` targets once through `uplink`.
    fn probe_round(
        &mut self,
        now: Instant,
        uplink: &str,
        targets: usize,
    ) -> impl Future<Output = ProbeRound> + Send;
    /// Makes `uplink` carry the LAN's traffic (`None`: no uplink).
    fn activate(
        &mut self,
        now: Instant,
        uplink: Option<&str>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    fn counters(&mut self, now: Instant, uplink: &str) -> Counters;
}

/// Bytes one probe and its answer put on the wire (ICMP echo with a 56-byte payload plus headers).
const PROBE_BYTES: u64 = 98;

#[derive(Debug)]
struct SimLinkState {
    spec: SimulatedLink,
    counters: Counters,
    last_accounted: Instant,
}

#[derive(Debug)]
pub struct SimulatedDataplane {
    started: Instant,
    links: BTreeMap<String, SimLinkState>,
    active: Option<String>,
    rng: StdRng,
}

impl SimulatedDataplane {
    /// `links` maps every uplink name to its behaviour; `seed` makes loss and jitter repeatable.
    pub fn new(started: Instant, links: BTreeMap<String, SimulatedLink>, seed: u64) -> Self {
        let links = links
            .into_iter()
            .map(|(name, spec)| {
                (
                    name,
                    SimLinkState {
                        spec,
                        counters: Counters::default(),
                        last_accounted: started,
                    },
                )
            })
            .collect();
        Self {
            started,
            links,
            active: None,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Whether the script has `uplink` in an outage at `now`.
    pub fn in_outage(&self, now: Instant, uplink: &str) -> bool {
        self.links
            .get(uplink)
            .is_some_and(|link| link_in_outage(&link.spec, now.duration_since(self.started)))
    }

    fn account_traffic(&mut self, now: Instant) {
        let active = self.active.clone();
        let started = self.started;
        for (name, link) in &mut self.links {
            let elapsed = now.saturating_duration_since(link.last_accounted);
            link.last_accounted = now;
            let carrying = active.as_deref() == Some(name.as_str())
                && !link_in_outage(&link.spec, now.duration_since(started));
            if carrying {
                let bytes = (link.spec.traffic_bytes_per_sec as f64 * elapsed.as_secs_f64()) as u64;
                // A practice downloads far more than it uploads (EHR pages, imaging, video).
                link.counters.rx_bytes += bytes;
                link.counters.tx_bytes += bytes / 4;
            }
        }
    }
}

fn link_in_outage(spec: &SimulatedLink, since_start: Duration) -> bool {
    let mut t = since_start.as_secs();
    if let Some(period) = spec.repeat_every_secs.filter(|p| *p > 0) {
        t %= period;
    }
    spec.outages
        .iter()
        .any(|o| t >= o.start_secs && t < o.start_secs.saturating_add(o.duration_secs))
}

impl Dataplane for SimulatedDataplane {
    fn probe_round(
        &mut self,
        now: Instant,
        uplink: &str,
        targets: usize,
    ) -> impl Future<Output = ProbeRound> + Send {
        self.account_traffic(now);
        let down = self.in_outage(now, uplink);
        let mut round = ProbeRound {
            sent: targets,
            answered: 0,
            rtts: Vec::new(),
        };
        if let Some(link) = self.links.get_mut(uplink) {
            link.counters.tx_bytes += PROBE_BYTES * targets as u64;
            if !down {
                for _ in 0..targets {
                    if self.rng.gen_range(0.0..100.0) < link.spec.loss_pct {
                        continue;
                    }
                    let jitter = if link.spec.jitter_ms > 0.0 {
                        self.rng
                            .gen_range(-link.spec.jitter_ms..link.spec.jitter_ms)
                    } else {
                        0.0
                    };
                    let rtt_ms = (link.spec.rtt_ms + jitter).max(0.1);
                    round.answered += 1;
                    round.rtts.push(Duration::from_secs_f64(rtt_ms / 1000.0));
                    link.counters.rx_bytes += PROBE_BYTES;
                }
            }
        }
        std::future::ready(round)
    }

    fn activate(
        &mut self,
        now: Instant,
        uplink: Option<&str>,
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send {
        self.account_traffic(now);
        let result = match uplink {
            Some(name) if !self.links.contains_key(name) => {
                Err(DataplaneError::UnknownUplink(name.to_owned()))
            }
            _ => {
                self.active = uplink.map(str::to_owned);
                Ok(())
            }
        };
        std::future::ready(result)
    }

    fn counters(&mut self, now: Instant, uplink: &str) -> Counters {
        self.account_traffic(now);
        self.links
            .get(uplink)
            .map(|l| l.counters)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Outage;

    fn dataplane(t0: Instant) -> SimulatedDataplane {
        let fiber = SimulatedLink {
            outages: vec![Outage {
                start_secs: 10,
                duration_secs: 5,
            }],
            repeat_every_secs: Some(60),
            ..SimulatedLink::default()
        };
        SimulatedDataplane::new(
            t0,
            BTreeMap::from([
                ("fiber".to_owned(), fiber),
                ("lte".to_owned(), SimulatedLink::default()),
            ]),
            7,
        )
    }

    #[tokio::test]
    async fn a_scripted_outage_silences_every_probe_and_repeats() {
        let t0 = Instant::now();
        let mut dp = dataplane(t0);
        assert_eq!(
            dp.probe_round(t0 + Duration::from_secs(5), "fiber", 3)
                .await
                .answered,
            3
        );
        assert_eq!(
            dp.probe_round(t0 + Duration::from_secs(12), "fiber", 3)
                .await
                .answered,
            0
        );
        assert_eq!(
            dp.probe_round(t0 + Duration::from_secs(16), "fiber", 3)
                .await
                .answered,
            3
        );
        assert_eq!(
            dp.probe_round(t0 + Duration::from_secs(71), "fiber", 3)
                .await
                .answered,
            0
        );
        assert_eq!(
            dp.probe_round(t0 + Duration::from_secs(12), "lte", 3)
                .await
                .answered,
            3
        );
    }

    #[tokio::test]
    async fn only_the_active_uplink_carries_practice_traffic() {
        let t0 = Instant::now();
        let mut dp = dataplane(t0);
        dp.activate(t0, Some("fiber")).await.expect("activate");
        let fiber = dp.counters(t0 + Duration::from_secs(2), "fiber");
        let lte = dp.counters(t0 + Duration::from_secs(2), "lte");
        assert_eq!(fiber.rx_bytes, 400_000);
        assert_eq!(lte.rx_bytes, 0);
    }

    #[tokio::test]
    async fn activating_an_unknown_uplink_is_an_error() {
        let t0 = Instant::now();
        let mut dp = dataplane(t0);
        assert!(dp.activate(t0, Some("cable")).await.is_err());
    }
}
