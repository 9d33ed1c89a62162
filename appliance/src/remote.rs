//! What the cloud asks of the appliance: the policy to run and commands to carry out. Pure parts
//! only (the driver in [`crate::agent`] does the I/O): how a policy maps onto the engine, where the
//! applied policy is kept across restarts, and which commands were already handled.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stayopen_shared::commands::CommandResult;
use stayopen_shared::policy::Policy;
use uuid::Uuid;

use crate::engine::{self, EngineConfig, Tunables};
use crate::probe_cost;

/// The engine settings a policy asks for, on an engine probing `config.targets` targets.
pub fn tunables(policy: &Policy, config: &EngineConfig) -> Tunables {
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    let secs = |v: u32| Duration::from_secs(u64::from(v));
    Tunables {
        silence_window: ms(policy.detection_silence_ms),
        quorum: (policy.detection_quorum as usize).clamp(1, config.targets),
        recovery_period: ms(policy.recovery_ms),
        failback_clean_period: secs(policy.failback_clean_period_secs),
        max_failback_hold: secs(policy.failback_max_hold_secs),
        // The health probes' share of the budget, at the mean cost of the configured targets.
        metered_standby_interval: engine::metered_standby_interval(
            probe_cost::health_budget_bytes(u64::from(policy.metered_budget_mb) * 1_000_000),
            probe_cost::mean_cost(&config.target_bytes),
            engine::METERED_MAX_STALENESS,
        ),
    }
}

/// `state_dir/policy.json`: the last policy applied, so a restarted appliance runs it before it
/// hears from the cloud again (or when it cannot).
pub fn policy_path(state_dir: &Path) -> PathBuf {
    state_dir.join("policy.json")
}

pub fn load_policy(state_dir: &Path) -> Option<Policy> {
    let text = std::fs::read_to_string(policy_path(state_dir)).ok()?;
    match serde_json::from_str::<Policy>(&text) {
        Ok(policy) if policy.validate().is_ok() => Some(policy),
        Ok(_) | Err(_) => {
            tracing::warn!("ignoring an unreadable or invalid stored policy");
            None
        }
    }
}

pub fn save_policy(state_dir: &Path, policy: &Policy) -> std::io::Result<()> {
    let path = policy_path(state_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(policy)?)?;
    std::fs::rename(tmp, path)
}

/// The last commands handled and their final results. A command delivered again (its
/// acknowledgement was lost) is answered from here instead of being run twice.
#[derive(Debug, Default)]
pub struct CommandBook {
    done: VecDeque<(Uuid, CommandResult)>,
}

const REMEMBERED: usize = 256;

impl CommandBook {
    pub fn result_of(&self, id: Uuid) -> Option<&CommandResult> {
        self.done.iter().find(|(i, _)| *i == id).map(|(_, r)| r)
    }

    pub fn record(&mut self, result: CommandResult) {
        if self.done.len() == REMEMBERED {
            self.done.pop_front();
        }
        self.done.push_back((result.command_id, result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::UplinkSpec;
    use stayopen_shared::commands::CommandStatus;

    #[test]
    fn a_policy_maps_onto_the_engine_with_the_quorum_bounded_by_the_targets() {
        let config = EngineConfig::new(
            vec![UplinkSpec {
                name: "wan".into(),
                priority: 0,
                metered: false,
            }],
            2,
        );
        let policy = Policy {
            detection_quorum: 5,
            failback_clean_period_secs: 90,
            ..Policy::default()
        };
        let t = tunables(&policy, &config);
        assert_eq!(t.quorum, 2);
        assert_eq!(t.failback_clean_period, Duration::from_secs(90));
        assert_eq!(
            t.metered_standby_interval, config.metered_standby_interval,
            "the default budget gives the default cadence"
        );
    }

    #[test]
    fn the_applied_policy_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(load_policy(dir.path()), None);
        let policy = Policy {
            version: 4,
            telemetry_interval_secs: 30,
            ..Policy::default()
        };
        save_policy(dir.path(), &policy).expect("save");
        assert_eq!(load_policy(dir.path()), Some(policy));
    }

    #[test]
    fn a_command_seen_before_is_answered_from_the_book() {
        let mut book = CommandBook::default();
        let id = Uuid::from_u128(7);
        book.record(CommandResult {
            command_id: id,
            status: CommandStatus::Succeeded,
            detail: "done".into(),
            data: None,
        });
        assert_eq!(
            book.result_of(id).map(|r| r.status),
            Some(CommandStatus::Succeeded)
        );
        for n in 0..REMEMBERED as u128 {
            book.record(CommandResult {
                command_id: Uuid::from_u128(100 + n),
                status: CommandStatus::Failed,
                detail: String::new(),
                data: None,
            });
        }
        assert_eq!(book.result_of(id), None, "the book is bounded");
    }
}
