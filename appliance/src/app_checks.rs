//! Which critical application to check next, through which uplink, and what the latest check of
//! each application through each uplink found; and what a drill measured.
//!
//! Design: a pure scheduler, like the engine. The driver calls [`AppChecks::poll`] with `now` and the
//! active uplink, starts the [`CheckRequest`]s it returns on the dataplane, feeds each outcome back
//! with [`AppChecks::record`] and sleeps until [`AppChecks::next_deadline`]. Nothing here reads a
//! clock or touches a socket.
//!
//! **Rounds.** Checking an application through an uplink is a round: its endpoints are tried in
//! order, one at a time, until one answers (reachable, with that endpoint's latency) or all have
//! failed (unreachable, with every endpoint's reason). One round per application and uplink is in
//! flight at most.
//!
//! **Cadence.** Through the active uplink, and through a standby that is not metered, a round starts
//! every `app_check_interval_secs`. Through a metered standby, rounds are paced by their cost: each
//! check of an endpoint may start only once the budget has earned its bytes
//! ([`probe_cost::Exchange::of_endpoint`]) at the application checks' share of
//! `metered_budget_mb` ([`probe_cost::app_check_budget_bytes`]), and never sooner than the
//! interval. Earning starts when the scheduler is created and does not accumulate beyond one check
//! while the uplink is active or idle, so no month spends more than the share.
//!
//! **Drills.** [`AppChecks::check_now`] starts a fresh round of every application through an uplink
//! (a drill's backup as soon as traffic is on it); [`AppChecks::results_since`] gives the drill the
//! results of rounds that started after that moment. [`DrillMeter`] measures the switchover and the
//! failback and turns it all into a [`DrillReport`].

use std::time::{Duration, Instant};

use stayopen_shared::compliance::{AppCheckResult, AppEndpoint, AppReachability, DrillReport};
use stayopen_shared::policy::CriticalApp;
use uuid::Uuid;

use crate::probe_cost::{self, Exchange};

/// How long one endpoint may take to answer an application check. Longer than a health probe's
/// timeout: an HTTPS check over LTE takes three round trips and a certificate chain.
pub const APP_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkInfo {
    pub name: String,
    pub metered: bool,
}

/// One endpoint check to start: report its outcome with [`AppChecks::record`] under `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRequest {
    pub id: u64,
    pub app: usize,
    pub endpoint: usize,
    pub uplink: usize,
}

/// What the latest round of one application through one uplink found.
#[derive(Debug, Clone, PartialEq)]
pub struct AppResult {
    pub started: Instant,
    pub finished: Instant,
    pub reachable: bool,
    /// The answering endpoint's round trip.
    pub latency: Option<Duration>,
    /// Why it is unreachable: each endpoint's failure, `; `-separated.
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
struct Round {
    started: Instant,
    endpoint: usize,
    in_flight: Option<u64>,
    failures: Vec<String>,
}

#[derive(Debug, Clone)]
struct Slot {
    next_due: Instant,
    /// A fresh round was asked for ([`AppChecks::check_now`]) and has not started yet.
    forced: bool,
    round: Option<Round>,
    latest: Option<AppResult>,
}

impl Slot {
    fn new(now: Instant) -> Self {
        Self {
            next_due: now,
            forced: false,
            round: None,
            latest: None,
        }
    }
}

#[derive(Debug)]
pub struct AppChecks {
    uplinks: Vec<UplinkInfo>,
    apps: Vec<CriticalApp>,
    interval: Duration,
    /// The application checks' share of the metered monthly budget, in bytes.
    budget_bytes: u64,
    /// `[app][uplink]`.
    slots: Vec<Vec<Slot>>,
    /// Per uplink: the moment by which the bytes spent so far on a metered standby are earned.
    spent_until: Vec<Instant>,
    next_id: u64,
}

impl AppChecks {
    /// No applications until [`AppChecks::set_policy`] gives some.
    pub fn new(now: Instant, uplinks: Vec<UplinkInfo>) -> Self {
        let n = uplinks.len();
        Self {
            uplinks,
            apps: Vec::new(),
            interval: Duration::from_secs(60),
            budget_bytes: probe_cost::app_check_budget_bytes(
                crate::engine::METERED_MONTHLY_BUDGET_BYTES,
            ),
            slots: Vec::new(),
            spent_until: vec![now; n],
            next_id: 0,
        }
    }

    /// The policy's applications, cadence and metered budget (the whole budget, in bytes: this
    /// takes its share). Results of applications that stay are kept; rounds in flight are dropped.
    pub fn set_policy(
        &mut self,
        now: Instant,
        apps: Vec<CriticalApp>,
        interval: Duration,
        metered_budget_bytes: u64,
    ) {
        self.interval = interval.max(Duration::from_secs(1));
        self.budget_bytes = probe_cost::app_check_budget_bytes(metered_budget_bytes);
        if apps == self.apps {
            return;
        }
        let slots = apps
            .iter()
            .map(|app| {
                let kept = self
                    .apps
                    .iter()
                    .position(|a| a.name == app.name && a.endpoints == app.endpoints);
                (0..self.uplinks.len())
                    .map(|u| Slot {
                        latest: kept.and_then(|i| self.slots[i][u].latest.clone()),
                        ..Slot::new(now)
                    })
                    .collect()
            })
            .collect();
        self.apps = apps;
        self.slots = slots;
    }

    pub fn apps(&self) -> &[CriticalApp] {
        &self.apps
    }

    pub fn endpoint(&self, request: &CheckRequest) -> Option<&AppEndpoint> {
        self.apps
            .get(request.app)
            .and_then(|a| a.endpoints.get(request.endpoint))
    }

    /// A metered uplink is paced by its budget unless it carries the practice's traffic (with no
    /// uplink active too: that is no reason to spend faster).
    fn on_budget(&self, uplink: usize, active: Option<usize>) -> bool {
        self.uplinks[uplink].metered && active != Some(uplink)
    }

    /// The moment the budget of `uplink` can pay for `cost` bytes.
    fn affordable_at(&self, uplink: usize, cost: u64) -> Instant {
        self.spent_until[uplink] + probe_cost::pace(cost, self.budget_bytes)
    }

    fn cost(&self, app: usize, endpoint: usize) -> u64 {
        self.apps[app]
            .endpoints
            .get(endpoint)
            .map_or(0, |e| Exchange::of_endpoint(e).bytes())
    }

    /// The endpoint a slot checks next and from when (budget aside); `None` while its check is in
    /// flight.
    fn next_check(&self, now: Instant, app: usize, uplink: usize) -> Option<(usize, Instant)> {
        let slot = &self.slots[app][uplink];
        match &slot.round {
            Some(round) if round.in_flight.is_none() => Some((round.endpoint, now)),
            Some(_) => None,
            None if slot.forced => Some((0, now)),
            None => Some((0, slot.next_due)),
        }
    }

    /// On a budget, the one check the uplink's budget goes to next: the most overdue (a round
    /// under way or asked for first), so cheap checks never starve dear ones.
    fn budget_candidate(&self, now: Instant, uplink: usize) -> Option<(usize, usize, Instant)> {
        (0..self.apps.len())
            .filter_map(|app| {
                self.next_check(now, app, uplink)
                    .map(|(endpoint, at)| (app, endpoint, at))
            })
            .min_by_key(|&(app, _, at)| (at, self.slots[app][uplink].next_due, app))
    }

    fn start(&mut self, now: Instant, app: usize, endpoint: usize, uplink: usize) -> CheckRequest {
        self.next_id += 1;
        let id = self.next_id;
        let slot = &mut self.slots[app][uplink];
        match &mut slot.round {
            Some(round) => round.in_flight = Some(id),
            None => {
                slot.forced = false;
                slot.round = Some(Round {
                    started: now,
                    endpoint: 0,
                    in_flight: Some(id),
                    failures: Vec::new(),
                });
            }
        }
        CheckRequest {
            id,
            app,
            endpoint,
            uplink,
        }
    }

    /// The checks to start now, with `active` carrying the practice's traffic.
    pub fn poll(&mut self, now: Instant, active: Option<usize>) -> Vec<CheckRequest> {
        let mut started = Vec::new();
        for uplink in 0..self.uplinks.len() {
            if self.on_budget(uplink, active) {
                while let Some((app, endpoint, at)) = self.budget_candidate(now, uplink) {
                    let pace = probe_cost::pace(self.cost(app, endpoint), self.budget_bytes);
                    // Budget unspent while active or idle does not pile up beyond one check.
                    let base = self.spent_until[uplink].max(now.checked_sub(pace).unwrap_or(now));
                    if at > now || now < base + pace {
                        break;
                    }
                    self.spent_until[uplink] = base + pace;
                    started.push(self.start(now, app, endpoint, uplink));
                }
                continue;
            }
            for app in 0..self.apps.len() {
                if let Some((endpoint, at)) = self.next_check(now, app, uplink)
                    && at <= now
                {
                    started.push(self.start(now, app, endpoint, uplink));
                }
            }
        }
        started
    }

    /// When [`AppChecks::poll`] next has something to start (`None`: nothing until an outcome or a
    /// policy arrives).
    pub fn next_deadline(&self, now: Instant, active: Option<usize>) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        let mut consider = |at: Instant| deadline = Some(deadline.map_or(at, |d| d.min(at)));
        for uplink in 0..self.uplinks.len() {
            if self.on_budget(uplink, active) {
                if let Some((app, endpoint, at)) = self.budget_candidate(now, uplink) {
                    consider(at.max(self.affordable_at(uplink, self.cost(app, endpoint))));
                }
                continue;
            }
            for app in 0..self.apps.len() {
                if let Some((_, at)) = self.next_check(now, app, uplink) {
                    consider(at);
                }
            }
        }
        deadline
    }

    /// Takes the outcome of check `id`: its round trip, or why it failed. Outcomes of checks the
    /// scheduler no longer knows (a policy replaced the applications) are ignored.
    pub fn record(&mut self, now: Instant, id: u64, outcome: Result<Duration, String>) {
        let found = (0..self.slots.len())
            .flat_map(|a| (0..self.uplinks.len()).map(move |u| (a, u)))
            .find(|&(a, u)| {
                self.slots[a][u]
                    .round
                    .as_ref()
                    .is_some_and(|r| r.in_flight == Some(id))
            });
        let Some((app, uplink)) = found else {
            return;
        };
        let endpoints = self.apps[app].endpoints.len();
        let interval = self.interval;
        let slot = &mut self.slots[app][uplink];
        let Some(round) = slot.round.as_mut() else {
            return;
        };
        round.in_flight = None;
        let result = match outcome {
            Ok(rtt) => AppResult {
                started: round.started,
                finished: now,
                reachable: true,
                latency: Some(rtt),
                reason: None,
            },
            Err(reason) => {
                round.failures.push(reason);
                if round.endpoint + 1 < endpoints {
                    round.endpoint += 1;
                    return;
                }
                AppResult {
                    started: round.started,
                    finished: now,
                    reachable: false,
                    latency: None,
                    reason: Some(round.failures.join("; ")),
                }
            }
        };
        slot.next_due = result.started + interval;
        slot.round = None;
        slot.latest = Some(result);
    }

    /// Starts a fresh round of every application through `uplink` at the next poll (after the round
    /// in flight, if any).
    pub fn check_now(&mut self, uplink: usize) {
        for slots in &mut self.slots {
            if let Some(slot) = slots.get_mut(uplink) {
                slot.forced = true;
            }
        }
    }

    /// The latest round of `app` through `uplink`.
    pub fn latest(&self, app: usize, uplink: usize) -> Option<&AppResult> {
        self.slots.get(app)?.get(uplink)?.latest.as_ref()
    }

    /// Per application (by name): the result of its latest round through `uplink` that started at
    /// or after `since`.
    pub fn results_since(&self, uplink: usize, since: Instant) -> Vec<(String, Option<AppResult>)> {
        self.apps
            .iter()
            .enumerate()
            .map(|(app, a)| {
                let result = self
                    .latest(app, uplink)
                    .filter(|r| r.started >= since)
                    .cloned();
                (a.name.clone(), result)
            })
            .collect()
    }

    /// Whether every application has a round through `uplink` that started at or after `since`.
    pub fn all_checked_since(&self, uplink: usize, since: Instant) -> bool {
        self.results_since(uplink, since)
            .iter()
            .all(|(_, r)| r.is_some())
    }

    /// The latest result of every application through every uplink, as telemetry reports it.
    pub fn reachability(&self, now: Instant) -> Vec<AppReachability> {
        let mut out = Vec::new();
        for (app, a) in self.apps.iter().enumerate() {
            for (uplink, u) in self.uplinks.iter().enumerate() {
                if let Some(r) = self.latest(app, uplink) {
                    out.push(AppReachability {
                        app: a.name.clone(),
                        uplink: u.name.clone(),
                        reachable: r.reachable,
                        latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
                        age_secs: u32::try_from(
                            now.saturating_duration_since(r.finished).as_secs(),
                        )
                        .unwrap_or(u32::MAX),
                        reason: r.reason.clone(),
                    });
                }
            }
        }
        out
    }
}

/// What one drill measured, from its start to traffic back on the primary.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillMeter {
    pub command_id: Option<Uuid>,
    pub started: Instant,
    /// The backup (index and name) and when traffic on it was applied by the dataplane.
    pub backup: Option<(usize, String)>,
    pub on_backup_at: Option<Instant>,
    /// The turn of the driver that moved traffic: checks through the backup started at or after
    /// it ran on the backup and are the drill's (it precedes `on_backup_at` by the dataplane's
    /// switch, which a check started in the same turn must not fall behind).
    pub checks_from: Option<Instant>,
    pub ended_at: Option<Instant>,
    pub back_at: Option<Instant>,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl DrillMeter {
    pub fn start(now: Instant, command_id: Option<Uuid>) -> Self {
        Self {
            command_id,
            started: now,
            backup: None,
            on_backup_at: None,
            checks_from: None,
            ended_at: None,
            back_at: None,
        }
    }

    /// The dataplane has applied the drill's traffic on `uplink` at `applied`, in the driver's
    /// turn that began at `turn`.
    pub fn traffic_on_backup(
        &mut self,
        turn: Instant,
        applied: Instant,
        uplink: usize,
        name: &str,
    ) {
        if self.on_backup_at.is_none() {
            self.backup = Some((uplink, name.to_owned()));
            self.on_backup_at = Some(applied);
            self.checks_from = Some(turn.min(applied));
        }
    }

    pub fn ended(&mut self, now: Instant) {
        self.ended_at.get_or_insert(now);
    }

    /// The dataplane has applied the traffic back on the primary.
    pub fn traffic_back(&mut self, now: Instant) {
        if self.ended_at.is_some() {
            self.back_at.get_or_insert(now);
        }
    }

    /// The report for the drill's event, and why it failed when an application was unreachable
    /// through the backup (`apps`: per application, its round through the backup since traffic
    /// moved — `None` when none finished in time). A drill that never moved traffic checks nothing.
    pub fn report(&self, apps: &[(String, Option<AppResult>)]) -> (DrillReport, Option<String>) {
        let backup = self.backup.as_ref().map(|(_, name)| name.clone());
        let through = backup.as_deref().unwrap_or("the backup");
        let checked: Vec<AppCheckResult> = if self.on_backup_at.is_some() {
            apps.iter()
                .map(|(app, result)| match result {
                    Some(r) => AppCheckResult {
                        app: app.clone(),
                        reachable: r.reachable,
                        latency_ms: r.latency.map(|l| l.as_secs_f64() * 1000.0),
                        reason: r.reason.clone(),
                    },
                    None => AppCheckResult {
                        app: app.clone(),
                        reachable: false,
                        latency_ms: None,
                        reason: Some(format!(
                            "no check through {through} finished before the drill ended"
                        )),
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut failures: Vec<String> = Vec::new();
        if self.on_backup_at.is_none() {
            failures.push("traffic never moved to the backup".into());
        }
        failures.extend(checked.iter().filter(|a| !a.reachable).map(|a| {
            format!(
                "{} unreachable through {through}: {}",
                a.app,
                a.reason.as_deref().unwrap_or("no answer")
            )
        }));
        let passed = failures.is_empty();
        let report = DrillReport {
            command_id: self.command_id,
            backup,
            switchover_ms: self
                .on_backup_at
                .map(|at| millis(at.saturating_duration_since(self.started))),
            failback_ms: match (self.ended_at, self.back_at) {
                (Some(end), Some(back)) => Some(millis(back.saturating_duration_since(end))),
                _ => None,
            },
            apps: checked,
            passed,
        };
        (report, (!failures.is_empty()).then(|| failures.join("; ")))
    }
}

#[cfg(test)]
mod tests;
