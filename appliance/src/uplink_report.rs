//! Turns probe outcomes into the per-uplink figures telemetry reports: median RTT and loss over the
//! reporting window.

use std::time::Duration;

use stayopen_shared::telemetry::{UplinkHealth, UplinkTelemetry};

use crate::dataplane::Counters;
use crate::engine::UplinkSpec;

#[derive(Debug, Default, Clone)]
pub struct Window {
    sent: usize,
    answered: usize,
    rtts: Vec<Duration>,
}

impl Window {
    pub fn record(&mut self, rtt: Option<Duration>) {
        self.sent += 1;
        if let Some(rtt) = rtt {
            self.answered += 1;
            self.rtts.push(rtt);
        }
    }

    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        100.0 * (self.sent - self.answered) as f64 / self.sent as f64
    }

    pub fn median_rtt_ms(&self) -> Option<f64> {
        if self.rtts.is_empty() {
            return None;
        }
        let mut sorted = self.rtts.clone();
        sorted.sort();
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2
        } else {
            sorted[mid]
        };
        Some((median.as_secs_f64() * 1000.0 * 100.0).round() / 100.0)
    }

    /// The window's figures for one uplink; the window starts over.
    pub fn take_report(
        &mut self,
        spec: &UplinkSpec,
        health: UplinkHealth,
        counters: Counters,
    ) -> UplinkTelemetry {
        let report = self.peek_report(spec, health, counters);
        *self = Window::default();
        report
    }

    /// The window's figures so far, without starting over.
    pub fn peek_report(
        &self,
        spec: &UplinkSpec,
        health: UplinkHealth,
        counters: Counters,
    ) -> UplinkTelemetry {
        UplinkTelemetry {
            name: spec.name.clone(),
            priority: spec.priority,
            metered: spec.metered,
            health,
            rtt_ms: self.median_rtt_ms(),
            loss_pct: (self.loss_pct() * 100.0).round() / 100.0,
            rx_bytes: counters.rx_bytes,
            tx_bytes: counters.tx_bytes,
            cellular: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_median_rtt_cover_the_whole_window() {
        let mut window = Window::default();
        for rtt in [Some(10), Some(30), Some(20), None, None, Some(40)] {
            window.record(rtt.map(Duration::from_millis));
        }
        assert_eq!(window.median_rtt_ms(), Some(25.0));
        assert!((window.loss_pct() - 33.33).abs() < 0.01);
    }

    #[test]
    fn a_report_starts_a_new_window() {
        let mut window = Window::default();
        window.record(None);
        let spec = UplinkSpec {
            name: "lte".into(),
            priority: 1,
            metered: true,
        };
        let report = window.take_report(&spec, UplinkHealth::Down, Counters::default());
        assert_eq!(report.loss_pct, 100.0);
        assert_eq!(report.rtt_ms, None);
        assert_eq!(window.loss_pct(), 0.0);
    }
}
