//! Signed evidence packages: what a practice's compliance officer hands an auditor to show the
//! HIPAA contingency plan (45 CFR 164.308(a)(7)) works.
//!
//! Design: the package is a pure function of an [`EvidenceInput`] and the signing key
//! ([`package::build`]): the same input gives the same bytes, and everything it shows was read in
//! one transaction by [`jobs::gather`] before the build starts. [`verify::verify`] is its mirror,
//! offline and without the database. The jobs table (`evidence_packages`) is the queue: a request
//! inserts a queued row, a worker claims it with `FOR UPDATE SKIP LOCKED` (any number of cloud
//! instances), gathers, builds and stores the zip, updating progress as it goes.
//!
//! - [`package`]: the zip, its manifest and the detached signature; [`pdf`]: `summary.pdf`;
//!   [`csv`]: the tables behind it.
//! - [`verify`]: what `stayopen-cloud evidence verify` checks.
//! - [`jobs`]: requests, the worker, listing, downloads (audited: chain of custody).
//! - [`monthly`]: last month's package for every practice on the first of the month, and the
//!   e-mail to its compliance officers; [`retention`]: packages older than six years go.

pub mod csv;
pub mod jobs;
pub mod monthly;
pub mod package;
pub mod pdf;
pub mod retention;
pub mod verify;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use stayopen_shared::compliance::{
    AvailabilityMonth, CriticalAppEntry, DrillRecord, Incident, PeriodKind,
};
use stayopen_shared::{PracticeId, TenantId};

/// Everything one package shows, read before the build.
#[derive(Debug, Clone)]
pub struct EvidenceInput {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub practice_id: PracticeId,
    pub practice_name: String,
    pub period: PeriodKind,
    /// First and last day covered (inclusive, UTC).
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub generated_at: DateTime<Utc>,
    pub register: Vec<CriticalAppEntry>,
    pub drills: Vec<DrillRecord>,
    pub incidents: Vec<Incident>,
    pub availability: Vec<AvailabilityMonth>,
    /// The practice's audit entries in the period, in chain order.
    pub audit: Vec<AuditRecord>,
    /// The tenant's chain head when the entries were read: every entry above is covered by it.
    pub chain_head: ChainHead,
}

/// One audit-log entry as the package carries it (`audit_log.jsonl`): enough to recompute its
/// hash with `domain::audit::chain_hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// Hex SHA-256 of the previous entry of the tenant's chain.
    pub prev_hash: String,
    /// Hex SHA-256 of this entry.
    pub hash: String,
}

impl AuditRecord {
    /// Whether `hash` is what the entry's content and `prev_hash` hash to.
    pub fn hash_matches(&self) -> bool {
        let Ok(prev) = hex::decode(&self.prev_hash) else {
            return false;
        };
        let expected = crate::domain::audit::chain_hash(
            &prev,
            self.seq,
            self.at,
            &self.actor,
            (&self.action, &self.target_type, &self.target_id),
            self.before.as_ref(),
            self.after.as_ref(),
        );
        hex::encode(expected) == self.hash
    }
}

/// The newest entry of the tenant's audit chain (`audit_chain_head.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    /// 0 and 32 zero bytes when the chain is empty.
    pub seq: i64,
    pub hash: String,
    pub read_at: DateTime<Utc>,
}

/// The period as people read it: "2026-11", "2026-Q4", "2026", "2026-11-03 to 2026-12-02".
pub fn period_label(kind: PeriodKind, from: NaiveDate, to: NaiveDate) -> String {
    use chrono::Datelike;
    match kind {
        PeriodKind::Month => from.format("%Y-%m").to_string(),
        PeriodKind::Quarter => format!("{}-Q{}", from.year(), from.month0() / 3 + 1),
        PeriodKind::Year => from.year().to_string(),
        PeriodKind::Custom => format!("{from} to {to}"),
    }
}

/// A file-name-safe form of a practice's name and the period, for downloads.
pub fn file_stem(practice_name: &str, kind: PeriodKind, from: NaiveDate, to: NaiveDate) -> String {
    let mut practice: String = practice_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while practice.contains("--") {
        practice = practice.replace("--", "-");
    }
    let practice = practice.trim_matches('-');
    let practice = if practice.is_empty() {
        "practice"
    } else {
        practice
    };
    let period = match kind {
        PeriodKind::Custom => format!("{from}_{to}"),
        _ => period_label(kind, from, to),
    };
    format!("evidence-{practice}-{period}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn periods_are_labelled_as_people_say_them() {
        assert_eq!(
            period_label(PeriodKind::Month, day("2026-11-01"), day("2026-11-30")),
            "2026-11"
        );
        assert_eq!(
            period_label(PeriodKind::Quarter, day("2026-10-01"), day("2026-12-31")),
            "2026-Q4"
        );
        assert_eq!(
            period_label(PeriodKind::Year, day("2026-01-01"), day("2026-12-31")),
            "2026"
        );
        assert_eq!(
            file_stem(
                "Dr. Smith & Partners",
                PeriodKind::Custom,
                day("2026-11-03"),
                day("2026-12-02")
            ),
            "evidence-Dr-Smith-Partners-2026-11-03_2026-12-02"
        );
    }
}

/// A constructed input with every kind of content, for the pure tests of the package and verify.
#[cfg(test)]
pub(crate) mod sample {
    use chrono::{Duration, TimeZone};
    use stayopen_shared::compliance::*;
    use stayopen_shared::{ApplianceId, PracticeId, TenantId};
    use uuid::Uuid;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    /// A chain of `n` entries about the practice, starting at `first_seq`.
    pub fn audit_chain(
        tenant: TenantId,
        practice: PracticeId,
        first_seq: i64,
        n: i64,
    ) -> Vec<AuditRecord> {
        let mut prev = vec![0x11u8; 32];
        (0..n)
            .map(|i| {
                let seq = first_seq + i;
                let at = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap() + Duration::hours(i);
                let after = serde_json::json!({"practice_id": practice.0, "comment": format!("signed {i}"), "n": i});
                let hash = crate::domain::audit::chain_hash(
                    &prev,
                    seq,
                    at,
                    &format!("user:{}", Uuid::from_u128(7)),
                    ("drill.sign_off", "drill", &Uuid::from_u128(i as u128).to_string()),
                    None,
                    Some(&after),
                );
                let record = AuditRecord {
                    seq,
                    at,
                    actor: format!("user:{}", Uuid::from_u128(7)),
                    action: "drill.sign_off".into(),
                    target_type: "drill".into(),
                    target_id: Uuid::from_u128(i as u128).to_string(),
                    before: None,
                    after: Some(after),
                    prev_hash: hex::encode(&prev),
                    hash: hex::encode(&hash),
                };
                let _ = tenant;
                prev = hash;
                record
            })
            .collect()
    }

    pub fn input() -> EvidenceInput {
        let tenant = TenantId(Uuid::from_u128(1));
        let practice = PracticeId(Uuid::from_u128(2));
        let appliance = ApplianceId(Uuid::from_u128(3));
        let from: NaiveDate = "2026-11-01".parse().expect("date");
        let to: NaiveDate = "2026-11-30".parse().expect("date");
        let days = (0..30)
            .map(|i| {
                let date = from + Duration::days(i);
                let gap = (10..13).contains(&i);
                AvailabilityDay {
                    date,
                    primary_pct: (!gap).then_some(if i == 20 { 96.5 } else { 99.95 }),
                    effective_pct: (!gap).then_some(if i == 20 { 99.99 } else { 100.0 }),
                    gap_secs: if gap { 86_400 } else { 0 },
                    observed_secs: if gap { 0 } else { 86_400 },
                }
            })
            .collect();
        let drill = |n: u128, outcome: DrillOutcome, signed: bool| DrillRecord {
            id: Uuid::from_u128(100 + n),
            appliance_id: appliance,
            appliance_serial: "SO-0001".into(),
            practice_id: practice,
            practice_name: "Maple Street Family Practice".into(),
            trigger: DrillTrigger::Scheduled,
            started_at: at("2026-11-05T22:00:00Z") + Duration::days(n as i64 * 7),
            finished_at: Some(at("2026-11-05T22:05:00Z") + Duration::days(n as i64 * 7)),
            outcome,
            reason: if outcome == DrillOutcome::Failed {
                "e-prescribing was not reachable through the backup: tcp erx.example:443: connection refused".into()
            } else {
                "every critical application answered through lte".into()
            },
            backup_uplink: Some("lte".into()),
            switchover_ms: Some(1840),
            failback_ms: Some(950),
            apps: vec![
                AppCheckResult {
                    app: "EHR".into(),
                    reachable: true,
                    latency_ms: Some(48.0),
                    reason: None,
                },
                AppCheckResult {
                    app: "e-Prescribing".into(),
                    reachable: outcome == DrillOutcome::Passed,
                    latency_ms: None,
                    reason: (outcome == DrillOutcome::Failed)
                        .then(|| "tcp erx.example:443: connection refused".into()),
                },
            ],
            sign_off: signed.then(|| DrillSignOff {
                name: "Dana Officer".into(),
                email: "dana@maple.example".into(),
                signed_at: at("2026-11-07T10:00:00Z") + Duration::days(n as i64 * 7),
                comment: "Reviewed with the practice manager; \"all good\", élan.".into(),
            }),
        };
        EvidenceInput {
            tenant_id: tenant,
            tenant_name: "Acme IT Services".into(),
            practice_id: practice,
            practice_name: "Maple Street Family Practice".into(),
            period: PeriodKind::Month,
            from,
            to,
            generated_at: at("2026-12-01T02:00:07Z"),
            register: vec![CriticalAppEntry {
                id: Uuid::from_u128(50),
                practice_id: practice,
                name: "EHR".into(),
                tier: AppTier::Tier1,
                endpoints: vec![
                    AppEndpoint::Https {
                        url: "https://ehr.example.com/health".into(),
                    },
                    AppEndpoint::Dns {
                        name: "ehr.example.com".into(),
                    },
                ],
                owner: "Practice manager".into(),
                note: "=cmd|' /C calc'!A0 stays text in spreadsheets".into(),
                updated_at: at("2026-10-01T08:00:00Z"),
                updated_by: Some("dana@maple.example".into()),
            }],
            drills: vec![
                drill(0, DrillOutcome::Passed, true),
                drill(1, DrillOutcome::Failed, false),
                drill(2, DrillOutcome::Passed, false),
            ],
            incidents: vec![Incident {
                id: Uuid::from_u128(200),
                appliance_id: appliance,
                appliance_serial: "SO-0001".into(),
                practice_id: practice,
                practice_name: "Maple Street Family Practice".into(),
                started_at: at("2026-11-21T14:03:00Z"),
                ended_at: Some(at("2026-11-21T14:51:00Z")),
                failed_uplinks: vec!["fibre".into()],
                backup_uplinks: vec!["lte".into()],
                on_backup_secs: 2880,
                traffic_kept_flowing: true,
                apps: vec![IncidentApp {
                    app: "EHR".into(),
                    stayed_reachable: Some(true),
                    reason: None,
                }],
                alerts: vec![IncidentAlert {
                    id: Uuid::from_u128(300),
                    kind: stayopen_shared::alerts::AlertKind::Failover,
                    severity: stayopen_shared::alerts::Severity::Critical,
                    title: "Failover to lte".into(),
                    raised_at: at("2026-11-21T14:03:05Z"),
                }],
                root_cause: "Carrier fibre cut by road works".into(),
                comments: vec![IncidentComment {
                    author: "tech@acme.example".into(),
                    at: at("2026-11-21T15:00:00Z"),
                    body: "Carrier ticket 4411 closed".into(),
                }],
            }],
            availability: vec![AvailabilityMonth {
                practice_id: practice,
                month: from,
                primary_pct: Some(99.8),
                effective_pct: Some(99.99),
                period_secs: 2_592_000,
                observed_secs: 2_332_800,
                gap_secs: 259_200,
                on_backup_secs: 2880,
                days,
            }],
            audit: audit_chain(tenant, practice, 41, 5),
            chain_head: ChainHead {
                tenant_id: tenant,
                tenant_name: "Acme IT Services".into(),
                seq: 60,
                hash: "ab".repeat(32),
                read_at: at("2026-12-01T02:00:05Z"),
            },
        }
    }
}
