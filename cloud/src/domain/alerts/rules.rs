//! What appliance events, presence and telemetry mean for an MSP's alerts: pure functions from
//! what was reported to [`AlertChange`]s, no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stayopen_shared::alerts::AlertKind;
use stayopen_shared::events::{ApplianceEvent, EventKind};
use stayopen_shared::policy::Policy;
use stayopen_shared::telemetry::{Telemetry, UplinkHealth};

/// A change to an appliance's alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertChange {
    /// Open an alert, or fold into the unresolved one for the same condition.
    Raise {
        kind: AlertKind,
        subject: String,
        summary: String,
    },
    /// Record an alert that is over as soon as it happens (informational).
    Notice {
        kind: AlertKind,
        subject: String,
        summary: String,
    },
    /// The condition cleared: resolve its unresolved alert (any subject when `None`).
    Clear {
        kind: AlertKind,
        subject: Option<String>,
        reason: String,
    },
}

fn uplink_of(event: &ApplianceEvent) -> String {
    event.uplink.clone().unwrap_or_default()
}

/// What an appliance event means for its alerts. `primary` is the appliance's preferred uplink,
/// as its telemetry last named it: a switch *to* it is a return to normal whatever the event is
/// called (an aborted drill reports its way back as "failover lte → fiber"), so it clears the
/// failover alerts as a failback does instead of raising one.
pub fn rules_for_event(event: &ApplianceEvent, primary: Option<&str>) -> Vec<AlertChange> {
    let arrow = || {
        format!(
            "{} → {}",
            event.from.as_deref().unwrap_or("none"),
            event.to.as_deref().unwrap_or("none")
        )
    };
    let to_primary = primary.is_some() && event.to.as_deref() == primary;
    match event.kind {
        EventKind::Failover if to_primary => back_on_primary(
            format!("back on the primary uplink ({})", arrow()),
            format!("Back on the primary uplink {}: {}", arrow(), event.reason),
        ),
        EventKind::Failover => vec![AlertChange::Raise {
            kind: AlertKind::Failover,
            subject: String::new(),
            summary: format!("Failover {}: {}", arrow(), event.reason),
        }],
        EventKind::Failback => back_on_primary(
            format!("failed back ({})", arrow()),
            format!("Failback {}: {}", arrow(), event.reason),
        ),
        EventKind::UplinkDown => vec![AlertChange::Raise {
            kind: AlertKind::UplinkDown,
            subject: uplink_of(event),
            summary: format!("Uplink {} down: {}", uplink_of(event), event.reason),
        }],
        EventKind::UplinkUp => vec![AlertChange::Clear {
            kind: AlertKind::UplinkDown,
            subject: Some(uplink_of(event)),
            reason: format!("uplink {} up again", uplink_of(event)),
        }],
        EventKind::DrillFailed => vec![AlertChange::Raise {
            kind: AlertKind::DrillFailed,
            subject: String::new(),
            summary: format!("Drill failed: {}", event.reason),
        }],
        EventKind::DrillFinished => vec![
            AlertChange::Clear {
                kind: AlertKind::DrillFailed,
                subject: None,
                reason: "a later drill completed".into(),
            },
            AlertChange::Clear {
                kind: AlertKind::DrillOverdue,
                subject: None,
                reason: "a drill completed".into(),
            },
        ],
        EventKind::PolicyRejected => vec![AlertChange::Raise {
            kind: AlertKind::PolicyApplyFailed,
            subject: String::new(),
            summary: event.reason.clone(),
        }],
        EventKind::PolicyApplied => vec![AlertChange::Clear {
            kind: AlertKind::PolicyApplyFailed,
            subject: None,
            reason: event.reason.clone(),
        }],
        EventKind::TunnelFallback => vec![AlertChange::Raise {
            kind: AlertKind::RelayUnreachable,
            subject: String::new(),
            summary: format!("Relay unreachable: {}", event.reason),
        }],
        EventKind::TunnelRestored => vec![AlertChange::Clear {
            kind: AlertKind::RelayUnreachable,
            subject: None,
            reason: event.reason.clone(),
        }],
        EventKind::AgentStarted | EventKind::DrillStarted => Vec::new(),
    }
}

/// Traffic is back on the primary uplink: the failover alerts clear (`reason`, their resolution)
/// and a notice records the return (`summary`).
fn back_on_primary(reason: String, summary: String) -> Vec<AlertChange> {
    vec![
        AlertChange::Clear {
            kind: AlertKind::Failover,
            subject: None,
            reason: reason.clone(),
        },
        AlertChange::Clear {
            kind: AlertKind::OnBackupLong,
            subject: None,
            reason,
        },
        AlertChange::Notice {
            kind: AlertKind::Failback,
            subject: String::new(),
            summary,
        },
    ]
}

/// The alerts that say "traffic is on the backup": what an observation of the primary carrying
/// traffic clears ([`rules_for_observed_primary`]).
pub const ON_BACKUP_KINDS: [AlertKind; 2] = [AlertKind::Failover, AlertKind::OnBackupLong];

/// What a telemetry sample taken `at` that shows traffic on the primary uplink means for the
/// appliance's unresolved on-backup alerts (`open`: each one's kind and when it was last seen).
/// Each alert last seen before the sample clears, whatever path led back (a failback event that
/// never came, a drill aborted half-way, a reboot): "critical" then means broken now. An alert
/// seen after the sample stays: the sample is older news than the failover that raised it.
pub fn rules_for_observed_primary(
    telemetry: &Telemetry,
    at: DateTime<Utc>,
    open: &[(AlertKind, DateTime<Utc>)],
) -> Vec<AlertChange> {
    let (Some(active), true) = (telemetry.active_uplink.as_deref(), telemetry.on_primary()) else {
        return Vec::new();
    };
    let mut kinds: Vec<AlertKind> = open
        .iter()
        .filter(|(kind, last_seen)| ON_BACKUP_KINDS.contains(kind) && *last_seen < at)
        .map(|(kind, _)| *kind)
        .collect();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| AlertChange::Clear {
            kind,
            subject: None,
            reason: format!(
                "telemetry at {} UTC shows traffic on the primary uplink {active}",
                at.format("%Y-%m-%d %H:%M:%S")
            ),
        })
        .collect()
}

/// What a presence change (or a message from a silent appliance) means for its alerts.
pub fn rules_for_presence(online: bool, why: &str) -> Vec<AlertChange> {
    if online {
        vec![AlertChange::Clear {
            kind: AlertKind::ApplianceOffline,
            subject: None,
            reason: why.to_owned(),
        }]
    } else {
        vec![AlertChange::Raise {
            kind: AlertKind::ApplianceOffline,
            subject: String::new(),
            summary: format!("Appliance offline: {why}"),
        }]
    }
}

/// Per-uplink state the telemetry rules keep between messages (`appliances.uplink_conditions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UplinkConditions {
    /// `sent_at` of the last telemetry applied: replayed or late messages change nothing.
    pub last_at: Option<DateTime<Utc>>,
    pub uplinks: BTreeMap<String, UplinkCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UplinkCondition {
    /// Since when the uplink has been past a degradation threshold without a break.
    pub degraded_since: Option<DateTime<Utc>>,
    pub degraded_raised: bool,
    /// Metered uplinks: the calendar month (UTC, `YYYY-MM`) counted, the bytes used in it so far
    /// and the interface counter last seen (a lower one means the counter restarted).
    pub month: String,
    pub month_bytes: u64,
    pub last_counter: u64,
    pub over_budget_raised: bool,
}

/// What the telemetry rules know of one appliance: its policy and its uplink conditions, and
/// whether the rules changed the conditions (so they must be written back).
#[derive(Debug, Clone, Default)]
pub struct TelemetryRuleState {
    pub policy: Policy,
    pub conditions: UplinkConditions,
    pub changed: bool,
}

/// [`rules_for_telemetry`] over a batch of newly stored samples of several appliances, each
/// appliance's conditions carried through its samples in the order given. Returns each sample's
/// changes, in the order of `samples`; an appliance absent from `state` gets none.
pub fn telemetry_rules<A: Eq + std::hash::Hash>(
    state: &mut std::collections::HashMap<A, TelemetryRuleState>,
    samples: &[(A, &Telemetry, DateTime<Utc>)],
) -> Vec<Vec<AlertChange>> {
    samples
        .iter()
        .map(|(appliance, telemetry, at)| {
            let Some(appliance) = state.get_mut(appliance) else {
                return Vec::new();
            };
            let before = appliance.conditions.clone();
            let changes =
                rules_for_telemetry(&mut appliance.conditions, telemetry, &appliance.policy, *at);
            appliance.changed |= appliance.conditions != before;
            changes
        })
        .collect()
}

const MIB: u64 = 1024 * 1024;

/// What a telemetry message means for the "uplink degraded" and "metered over budget" alerts,
/// updating `conditions`. An uplink is degraded while it loses at least `degraded_loss_pct` of its
/// probes or answers slower than `degraded_rtt_ms`; the alert waits until that has lasted
/// `degraded_for_secs`, so one bad sample on a lossy line raises nothing. A down uplink has its
/// own alert, so it clears "degraded".
pub fn rules_for_telemetry(
    conditions: &mut UplinkConditions,
    telemetry: &Telemetry,
    policy: &Policy,
    at: DateTime<Utc>,
) -> Vec<AlertChange> {
    if conditions.last_at.is_some_and(|last| at <= last) {
        return Vec::new();
    }
    conditions.last_at = Some(at);
    let mut changes = Vec::new();
    let month = at.format("%Y-%m").to_string();
    for uplink in &telemetry.uplinks {
        let state = conditions.uplinks.entry(uplink.name.clone()).or_default();
        let slow = uplink
            .rtt_ms
            .is_some_and(|rtt| rtt > f64::from(policy.degraded_rtt_ms));
        let lossy = uplink.loss_pct >= policy.degraded_loss_pct;
        let probing = matches!(uplink.health, UplinkHealth::Up | UplinkHealth::Degraded);
        if probing && (slow || lossy) {
            let since = *state.degraded_since.get_or_insert(at);
            let lasted = (at - since).num_seconds();
            if !state.degraded_raised && lasted >= i64::from(policy.degraded_for_secs) {
                state.degraded_raised = true;
                let mut symptoms = Vec::new();
                if lossy {
                    symptoms.push(format!("{:.0} % loss", uplink.loss_pct));
                }
                if let (true, Some(rtt)) = (slow, uplink.rtt_ms) {
                    symptoms.push(format!("{rtt:.0} ms round trip"));
                }
                changes.push(AlertChange::Raise {
                    kind: AlertKind::UplinkDegraded,
                    subject: uplink.name.clone(),
                    summary: format!(
                        "Uplink {} degraded for {} min: {}",
                        uplink.name,
                        lasted / 60,
                        symptoms.join(", ")
                    ),
                });
            }
        } else {
            if state.degraded_raised {
                changes.push(AlertChange::Clear {
                    kind: AlertKind::UplinkDegraded,
                    subject: Some(uplink.name.clone()),
                    reason: format!("uplink {} is clean again", uplink.name),
                });
            }
            state.degraded_since = None;
            state.degraded_raised = false;
        }
        if uplink.metered {
            let counter = uplink.rx_bytes.saturating_add(uplink.tx_bytes);
            if state.month != month {
                if state.over_budget_raised {
                    changes.push(AlertChange::Clear {
                        kind: AlertKind::MeteredOverBudget,
                        subject: Some(uplink.name.clone()),
                        reason: format!("a new month ({month}) began"),
                    });
                }
                state.month = month.clone();
                state.month_bytes = 0;
                state.last_counter = counter;
                state.over_budget_raised = false;
            }
            let used = if counter >= state.last_counter {
                counter - state.last_counter
            } else {
                counter
            };
            state.month_bytes = state.month_bytes.saturating_add(used);
            state.last_counter = counter;
            let budget = u64::from(policy.metered_data_alert_mb) * MIB;
            if !state.over_budget_raised && state.month_bytes > budget {
                state.over_budget_raised = true;
                changes.push(AlertChange::Raise {
                    kind: AlertKind::MeteredOverBudget,
                    subject: uplink.name.clone(),
                    summary: format!(
                        "Metered uplink {} has used {} MB this month (budget {} MB)",
                        uplink.name,
                        state.month_bytes / MIB,
                        policy.metered_data_alert_mb
                    ),
                });
            }
        }
    }
    changes
}

/// "Flapping" when `failovers` (in the policy's window, this one included) reach the policy's
/// count; each further failover folds into the open alert.
pub fn rules_for_failover_count(failovers: i64, policy: &Policy) -> Vec<AlertChange> {
    if failovers < i64::from(policy.flapping_failovers) {
        return Vec::new();
    }
    vec![AlertChange::Raise {
        kind: AlertKind::Flapping,
        subject: String::new(),
        summary: format!(
            "{failovers} failovers within {} min: the primary line keeps dropping",
            policy.flapping_window_secs / 60
        ),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, uplink: Option<&str>) -> ApplianceEvent {
        ApplianceEvent {
            kind,
            uplink: uplink.map(str::to_owned),
            from: Some("fiber".into()),
            to: Some("lte".into()),
            reason: "active uplink down".into(),
            drill: None,
        }
    }

    #[test]
    fn a_failover_raises_and_its_failback_clears_it_and_leaves_a_notice() {
        let raised = rules_for_event(&event(EventKind::Failover, None), Some("fiber"));
        assert!(
            matches!(&raised[..], [AlertChange::Raise { kind: AlertKind::Failover, summary, .. }] if summary.contains("fiber → lte"))
        );
        let back = rules_for_event(&event(EventKind::Failback, None), Some("fiber"));
        assert!(matches!(
            back[0],
            AlertChange::Clear {
                kind: AlertKind::Failover,
                ..
            }
        ));
        assert!(matches!(
            back[1],
            AlertChange::Clear {
                kind: AlertKind::OnBackupLong,
                ..
            }
        ));
        assert!(matches!(
            back[2],
            AlertChange::Notice {
                kind: AlertKind::Failback,
                ..
            }
        ));
    }

    #[test]
    fn a_failover_to_the_primary_clears_like_a_failback_and_raises_nothing() {
        let mut back = event(EventKind::Failover, None);
        (back.from, back.to) = (Some("lte".into()), Some("fiber".into()));
        back.reason = "drill aborted".into();
        let changes = rules_for_event(&back, Some("fiber"));
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, AlertChange::Raise { .. })),
            "{changes:?}"
        );
        assert!(matches!(
            &changes[..],
            [
                AlertChange::Clear { kind: AlertKind::Failover, reason, .. },
                AlertChange::Clear { kind: AlertKind::OnBackupLong, .. },
                AlertChange::Notice { kind: AlertKind::Failback, summary, .. },
            ] if reason.contains("lte → fiber") && summary.contains("drill aborted")
        ));
        // Without knowing the primary (no telemetry yet), a failover is taken at its word.
        assert!(matches!(
            &rules_for_event(&back, None)[..],
            [AlertChange::Raise {
                kind: AlertKind::Failover,
                ..
            }]
        ));
    }

    #[test]
    fn a_sample_on_the_primary_clears_the_on_backup_alerts_seen_before_it_only() {
        let at = Utc::now();
        let before = at - chrono::Duration::seconds(30);
        let after = at + chrono::Duration::seconds(1);
        let on_primary = telemetry(10.0, 0.0, 0);
        let open = [
            (AlertKind::Failover, before),
            (AlertKind::OnBackupLong, before),
            (AlertKind::UplinkDown, before),
        ];
        let cleared = rules_for_observed_primary(&on_primary, at, &open);
        assert_eq!(cleared.len(), 2, "{cleared:?}");
        assert!(cleared.iter().all(|c| matches!(
            c,
            AlertChange::Clear { kind: AlertKind::Failover | AlertKind::OnBackupLong, reason, .. }
                if reason.contains("primary uplink fiber")
        )));
        // A failover seen after the sample (the sample is older news) stays open.
        assert!(
            rules_for_observed_primary(&on_primary, at, &[(AlertKind::Failover, after)]).is_empty()
        );
        // A sample on the backup, or with no active uplink, clears nothing.
        let mut on_backup = on_primary.clone();
        on_backup.active_uplink = Some("lte".into());
        assert!(rules_for_observed_primary(&on_backup, at, &open).is_empty());
        let mut none_active = on_primary;
        none_active.active_uplink = None;
        assert!(rules_for_observed_primary(&none_active, at, &open).is_empty());
    }

    #[test]
    fn an_uplink_alert_is_per_uplink_and_cleared_by_that_uplink_only() {
        let down = rules_for_event(&event(EventKind::UplinkDown, Some("fiber")), Some("fiber"));
        assert!(
            matches!(&down[..], [AlertChange::Raise { kind: AlertKind::UplinkDown, subject, .. }] if subject == "fiber")
        );
        let up = rules_for_event(&event(EventKind::UplinkUp, Some("fiber")), Some("fiber"));
        assert!(
            matches!(&up[..], [AlertChange::Clear { kind: AlertKind::UplinkDown, subject: Some(s), .. }] if s == "fiber")
        );
    }

    fn telemetry(rtt_ms: f64, loss_pct: f64, lte_counter: u64) -> Telemetry {
        use stayopen_shared::telemetry::UplinkTelemetry;
        Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![
                UplinkTelemetry {
                    name: "fiber".into(),
                    priority: 0,
                    metered: false,
                    health: UplinkHealth::Up,
                    rtt_ms: Some(rtt_ms),
                    loss_pct,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    cellular: None,
                },
                UplinkTelemetry {
                    name: "lte".into(),
                    priority: 1,
                    metered: true,
                    health: UplinkHealth::Up,
                    rtt_ms: Some(60.0),
                    loss_pct: 0.0,
                    rx_bytes: lte_counter,
                    tx_bytes: 0,
                    cellular: None,
                },
            ],
            policy_version: None,
            samples: None,
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn kinds(changes: &[AlertChange]) -> Vec<(&'static str, AlertKind)> {
        changes
            .iter()
            .map(|c| match c {
                AlertChange::Raise { kind, .. } => ("raise", *kind),
                AlertChange::Notice { kind, .. } => ("notice", *kind),
                AlertChange::Clear { kind, .. } => ("clear", *kind),
            })
            .collect()
    }

    #[test]
    fn a_lossy_uplink_raises_degraded_only_after_the_policys_period_and_clears_when_clean() {
        let policy = Policy::default();
        let mut conditions = UplinkConditions::default();
        let start = at("2026-11-22T10:00:00Z");
        let lossy = telemetry(20.0, 12.0, 0);
        for secs in [0, 60, 110] {
            let changes = rules_for_telemetry(
                &mut conditions,
                &lossy,
                &policy,
                start + chrono::Duration::seconds(secs),
            );
            assert!(changes.is_empty(), "not yet at {secs} s: {changes:?}");
        }
        let raised = rules_for_telemetry(
            &mut conditions,
            &lossy,
            &policy,
            start + chrono::Duration::seconds(120),
        );
        assert!(
            matches!(&raised[..], [AlertChange::Raise { kind: AlertKind::UplinkDegraded, subject, summary }]
                if subject == "fiber" && summary.contains("12 % loss"))
        );
        let again = start + chrono::Duration::seconds(130);
        assert!(
            rules_for_telemetry(&mut conditions, &lossy, &policy, again).is_empty(),
            "once"
        );
        let clean = rules_for_telemetry(
            &mut conditions,
            &telemetry(20.0, 0.0, 0),
            &policy,
            start + chrono::Duration::seconds(140),
        );
        assert_eq!(kinds(&clean), vec![("clear", AlertKind::UplinkDegraded)]);
    }

    #[test]
    fn one_bad_sample_on_a_lossy_line_raises_nothing() {
        let policy = Policy::default();
        let mut conditions = UplinkConditions::default();
        let start = at("2026-11-22T10:00:00Z");
        for (secs, loss) in [(0, 30.0), (10, 0.0), (130, 30.0), (140, 0.0), (260, 30.0)] {
            let changes = rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, loss, 0),
                &policy,
                start + chrono::Duration::seconds(secs),
            );
            assert!(changes.is_empty(), "{secs} s: {changes:?}");
        }
    }

    #[test]
    fn metered_data_is_counted_per_month_across_counter_restarts() {
        let policy = Policy {
            metered_data_alert_mb: 110,
            ..Policy::default()
        };
        let mut conditions = UplinkConditions::default();
        let mb = |n: u64| n * MIB;
        let day = |d: &str| at(&format!("2026-11-{d}T10:00:00Z"));
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(500)),
                &policy,
                day("01")
            )
            .is_empty(),
            "the first sample is the baseline"
        );
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(560)),
                &policy,
                day("02")
            )
            .is_empty()
        );
        // The appliance rebooted: the counter starts again from zero; 60 + 45 MB used so far.
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(45)),
                &policy,
                day("03")
            )
            .is_empty()
        );
        let over = rules_for_telemetry(
            &mut conditions,
            &telemetry(20.0, 0.0, mb(52)),
            &policy,
            day("04"),
        );
        assert_eq!(kinds(&over), vec![("raise", AlertKind::MeteredOverBudget)]);
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(90)),
                &policy,
                day("05")
            )
            .is_empty(),
            "once a month"
        );
        let december = rules_for_telemetry(
            &mut conditions,
            &telemetry(20.0, 0.0, mb(91)),
            &policy,
            at("2026-12-01T00:05:00Z"),
        );
        assert_eq!(
            kinds(&december),
            vec![("clear", AlertKind::MeteredOverBudget)]
        );
        // A late message from November changes nothing.
        assert!(
            rules_for_telemetry(
                &mut conditions,
                &telemetry(20.0, 0.0, mb(900)),
                &policy,
                day("30")
            )
            .is_empty()
        );
    }

    #[test]
    fn flapping_needs_the_policys_number_of_failovers_in_its_window() {
        let policy = Policy::default();
        assert!(rules_for_failover_count(2, &policy).is_empty());
        assert_eq!(
            kinds(&rules_for_failover_count(3, &policy)),
            vec![("raise", AlertKind::Flapping)]
        );
    }

    #[test]
    fn presence_raises_and_clears_the_offline_alert() {
        assert!(matches!(
            rules_for_presence(false, "last will")[..],
            [AlertChange::Raise {
                kind: AlertKind::ApplianceOffline,
                ..
            }]
        ));
        assert!(matches!(
            rules_for_presence(true, "back")[..],
            [AlertChange::Clear {
                kind: AlertKind::ApplianceOffline,
                ..
            }]
        ));
        assert!(rules_for_event(&event(EventKind::AgentStarted, None), None).is_empty());
    }
}
