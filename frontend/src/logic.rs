//! Pure presentation logic: no DOM, no network, no clock. Everything here compiles on any target and
//! is unit-tested.

use chrono::{DateTime, Utc};
use stayopen_shared::api::{ApplianceView, Fleet};
use stayopen_shared::telemetry::UplinkTelemetry;

/// Formats how long before `now` the instant `then` was, e.g. `"12 s ago"`, `"5 min ago"`.
///
/// `now` is the cloud's `generated_at`, so the result does not depend on the browser's clock. An
/// instant in the future (clock skew between cloud nodes) reads as `"just now"`.
pub fn relative_time(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    relative_seconds((now - then).num_seconds())
}

/// Formats an age in whole seconds the same way as [`relative_time`].
pub fn relative_seconds(seconds: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    match seconds {
        s if s <= 0 => "just now".to_owned(),
        s if s < MINUTE => format!("{s} s ago"),
        s if s < HOUR => format!("{} min ago", s / MINUTE),
        s if s < DAY => format!("{} h ago", s / HOUR),
        s => format!("{} d ago", s / DAY),
    }
}

/// The uplink the appliance prefers: the lowest priority number (the first one listed on a tie).
pub fn primary_uplink(uplinks: &[UplinkTelemetry]) -> Option<&UplinkTelemetry> {
    // `min_by_key` returns the last of equal elements; fold keeps the first.
    uplinks
        .iter()
        .fold(None, |best: Option<&UplinkTelemetry>, u| match best {
            Some(b) if b.priority <= u.priority => Some(b),
            _ => Some(u),
        })
}

/// Whether the appliance's traffic runs over an uplink other than its primary one.
///
/// Only the reported data is considered: an offline appliance reports the uplink it last used. An
/// appliance with no active uplink (every uplink down) or no uplinks reported is not "on backup".
pub fn is_on_backup(appliance: &ApplianceView) -> bool {
    match (&appliance.active_uplink, primary_uplink(&appliance.uplinks)) {
        (Some(active), Some(primary)) => *active != primary.name,
        _ => false,
    }
}

/// Uplinks in the order the failover engine tries them: by priority, stable for equal priorities.
pub fn uplinks_by_priority(uplinks: &[UplinkTelemetry]) -> Vec<UplinkTelemetry> {
    let mut sorted = uplinks.to_vec();
    sorted.sort_by_key(|u| u.priority);
    sorted
}

/// Counters shown above the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetSummary {
    pub practices: usize,
    pub appliances: usize,
    pub online: usize,
    /// Online appliances whose active uplink is not their primary one.
    pub on_backup: usize,
    pub offline: usize,
}

impl FleetSummary {
    pub fn of(fleet: &Fleet) -> Self {
        let mut summary = Self {
            practices: fleet.practices.len(),
            ..Self::default()
        };
        for appliance in fleet.practices.iter().flat_map(|p| &p.appliances) {
            summary.appliances += 1;
            if appliance.online {
                summary.online += 1;
                if is_on_backup(appliance) {
                    summary.on_backup += 1;
                }
            } else {
                summary.offline += 1;
            }
        }
        summary
    }
}

/// Median probe round-trip time for display, e.g. `"23 ms"`; `"–"` when no probe answered.
pub fn format_rtt(rtt_ms: Option<f64>) -> String {
    match rtt_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            if ms < 10.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
        _ => "–".to_owned(),
    }
}

/// Probe loss for display, e.g. `"0%"`, `"2.5%"`.
pub fn format_loss(loss_pct: f64) -> String {
    if !loss_pct.is_finite() {
        return "–".to_owned();
    }
    let pct = loss_pct.clamp(0.0, 100.0);
    if pct.fract() == 0.0 {
        format!("{pct:.0}% loss")
    } else {
        format!("{pct:.1}% loss")
    }
}

/// Probe results of one uplink for display, e.g. `"23 ms · 0% loss"`; only the loss when no probe
/// answered.
pub fn uplink_metrics(uplink: &UplinkTelemetry) -> String {
    match uplink.rtt_ms {
        Some(_) => format!(
            "{} · {}",
            format_rtt(uplink.rtt_ms),
            format_loss(uplink.loss_pct)
        ),
        None => format_loss(uplink.loss_pct),
    }
}

// The tests run as wasm under Node (`wasm-bindgen-test-runner`), the target this code ships for.
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use stayopen_shared::api::PracticeView;
    use stayopen_shared::ids::{ApplianceId, PracticeId, SiteId};
    use stayopen_shared::telemetry::UplinkHealth;
    use uuid::Uuid;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0)
            .single()
            .unwrap_or_default()
    }

    fn uplink(name: &str, priority: u8) -> UplinkTelemetry {
        UplinkTelemetry {
            name: name.to_owned(),
            priority,
            metered: priority > 0,
            health: UplinkHealth::Up,
            rtt_ms: Some(20.0),
            loss_pct: 0.0,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    fn appliance(online: bool, active: Option<&str>) -> ApplianceView {
        ApplianceView {
            id: ApplianceId(Uuid::from_u128(1)),
            practice_id: PracticeId(Uuid::from_u128(10)),
            site_id: SiteId(Uuid::from_u128(2)),
            site_name: "Main St".to_owned(),
            serial: "SO-1".to_owned(),
            online,
            active_uplink: active.map(str::to_owned),
            last_seen: Some(at(0)),
            // Listed out of priority order on purpose.
            uplinks: vec![uplink("lte", 1), uplink("fiber", 0)],
        }
    }

    #[wasm_bindgen_test]
    fn relative_time_picks_a_readable_unit() {
        assert_eq!(relative_time(at(12), at(0)), "12 s ago");
        assert_eq!(relative_time(at(0), at(0)), "just now");
        assert_eq!(relative_time(at(0), at(5)), "just now");
        assert_eq!(relative_time(at(59), at(0)), "59 s ago");
        assert_eq!(relative_time(at(60), at(0)), "1 min ago");
        assert_eq!(relative_time(at(3_599), at(0)), "59 min ago");
        assert_eq!(relative_time(at(7_200), at(0)), "2 h ago");
        assert_eq!(relative_time(at(3 * 86_400 + 5), at(0)), "3 d ago");
    }

    #[wasm_bindgen_test]
    fn primary_is_the_lowest_priority_number_and_the_first_on_a_tie() {
        let uplinks = vec![uplink("lte", 1), uplink("fiber", 0), uplink("cable", 0)];
        assert_eq!(
            primary_uplink(&uplinks).map(|u| u.name.as_str()),
            Some("fiber")
        );
        assert!(primary_uplink(&[]).is_none());
    }

    #[wasm_bindgen_test]
    fn backup_means_the_active_uplink_is_not_the_primary() {
        assert!(!is_on_backup(&appliance(true, Some("fiber"))));
        assert!(is_on_backup(&appliance(true, Some("lte"))));
        assert!(!is_on_backup(&appliance(true, None)));
        let mut bare = appliance(true, Some("lte"));
        bare.uplinks.clear();
        assert!(!is_on_backup(&bare));
    }

    #[wasm_bindgen_test]
    fn uplinks_sort_by_priority() {
        let sorted = uplinks_by_priority(&appliance(true, None).uplinks);
        let names: Vec<_> = sorted.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["fiber", "lte"]);
    }

    #[wasm_bindgen_test]
    fn summary_counts_online_offline_and_backup() {
        let fleet = Fleet {
            tenant_name: "Acme IT".to_owned(),
            generated_at: at(30),
            next_cursor: None,
            practices: vec![
                PracticeView {
                    id: PracticeId(Uuid::from_u128(10)),
                    name: "Smile Dental".to_owned(),
                    appliances: vec![
                        appliance(true, Some("fiber")),
                        appliance(true, Some("lte")),
                        // Offline appliances are not counted as on backup, whatever they last reported.
                        appliance(false, Some("lte")),
                    ],
                },
                PracticeView {
                    id: PracticeId(Uuid::from_u128(11)),
                    name: "Empty Practice".to_owned(),
                    appliances: vec![],
                },
            ],
        };
        assert_eq!(
            FleetSummary::of(&fleet),
            FleetSummary {
                practices: 2,
                appliances: 3,
                online: 2,
                on_backup: 1,
                offline: 1,
            }
        );
    }

    #[wasm_bindgen_test]
    fn rtt_and_loss_format_compactly() {
        assert_eq!(format_rtt(Some(23.4)), "23 ms");
        assert_eq!(format_rtt(Some(4.26)), "4.3 ms");
        assert_eq!(format_rtt(None), "–");
        assert_eq!(format_rtt(Some(f64::NAN)), "–");
        assert_eq!(format_loss(0.0), "0% loss");
        assert_eq!(format_loss(2.5), "2.5% loss");
        assert_eq!(format_loss(150.0), "100% loss");
        assert_eq!(uplink_metrics(&uplink("fiber", 0)), "20 ms · 0% loss");
        let silent = UplinkTelemetry {
            rtt_ms: None,
            loss_pct: 100.0,
            ..uplink("fiber", 0)
        };
        assert_eq!(uplink_metrics(&silent), "100% loss");
    }
}
