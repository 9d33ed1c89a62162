//! A simulated fleet: many real agents in one process, each over its own simulated dataplane, each
//! enrolling through the real endpoint and publishing over real MQTT. The demo runs one; load tests
//! can run thousands. The critical applications come from the cloud's policy (the demo's seed
//! registers "EHR", "e-Prescribing", "Lab interface", "Telemedicine" and "Patient portal" for every
//! practice); the simulated links decide which of them answer through which uplink.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use stayopen_appliance::agent::{self, AgentOptions};
use stayopen_appliance::cellular::simulated::SimulatedModem;
use stayopen_appliance::config::{
    ApplianceConfig, ApplianceSection, CloudSection, DataplaneSection, LanSection, Outage,
    OutageKind, ProbeSection, SimulatedLink, UplinkConfig,
};
use stayopen_shared::cellular::AccessTechnology;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub api_url: String,
    /// Enrolment tokens; appliance `i` uses token `i % len`, spreading the fleet over practices.
    pub enrollment_tokens: Vec<String>,
    /// Index of the first appliance: lets several simulator processes share one cloud without
    /// colliding hardware identities.
    pub first_index: usize,
    pub count: usize,
    pub state_root: PathBuf,
    pub telemetry_interval_secs: u32,
}

/// The demo register's lab interface (HL7 over TCP port 2575), as the cloud's seed names it.
pub const LAB_INTERFACE: &str = "Lab interface";

/// Every fourth simulated appliance's lab allow-lists the practice's fixed fibre address, so its
/// LTE backup cannot reach the lab interface: those appliances' drills fail with "Lab interface
/// unreachable through lte: tcp …: connection refused", the finding a real drill exists to make.
pub fn lab_unreachable_through_lte(index: usize) -> bool {
    index % 4 == 3
}

/// The configuration of simulated appliance `index`: a fibre primary and a metered LTE backup.
/// Every third appliance's fibre fails on a repeating schedule, so the demo always shows some of
/// the fleet failing over and back; their periods differ so the failures do not line up.
pub fn appliance_config(options: &FleetOptions, index: usize) -> ApplianceConfig {
    let token = options
        .enrollment_tokens
        .get(index % options.enrollment_tokens.len().max(1))
        .cloned()
        .unwrap_or_default();
    let i = index as u64;
    let mut fiber = SimulatedLink {
        rtt_ms: 8.0 + (i % 7) as f64 * 2.5,
        jitter_ms: 2.0,
        loss_pct: 0.2,
        traffic_bytes_per_sec: 150_000 + (i % 5) * 60_000,
        ..SimulatedLink::default()
    };
    if index.is_multiple_of(3) {
        fiber.outages = vec![Outage {
            start_secs: 45 + (i * 13) % 120,
            duration_secs: 20 + i % 25,
            kind: if index.is_multiple_of(6) {
                OutageKind::Carrier
            } else {
                OutageKind::Blackhole
            },
        }];
        fiber.repeat_every_secs = Some(240 + (i % 6) * 40);
    }
    let lte = SimulatedLink {
        rtt_ms: 45.0 + (i % 4) as f64 * 6.0,
        jitter_ms: 12.0,
        loss_pct: 1.0,
        traffic_bytes_per_sec: 120_000,
        unreachable_apps: lab_unreachable_through_lte(index)
            .then(|| LAB_INTERFACE.to_owned())
            .into_iter()
            .collect(),
        // The LTE backup's modem, as the appliance page shows it for placing the antenna: each
        // box's reception differs, from a window seat to a basement.
        modem: Some(SimulatedModem {
            operator_name: ["Example Mobile", "Sample Wireless", "Demo Cellular"][index % 3]
                .to_owned(),
            operator_code: ["310260", "310410", "311480"][index % 3].to_owned(),
            technology: if index.is_multiple_of(4) {
                AccessTechnology::Nr5g
            } else {
                AccessTechnology::Lte
            },
            rsrp_dbm: -82.0 - (i % 6) as f64 * 5.0,
            rsrq_db: -8.0 - (i % 5) as f64 * 2.5,
            sinr_db: 22.0 - (i % 6) as f64 * 4.0,
            period_secs: 120 + (i % 4) * 30,
            ..SimulatedModem::default()
        }),
        ..SimulatedLink::default()
    };
    ApplianceConfig {
        appliance: ApplianceSection {
            state_dir: options.state_root.join(format!("appliance-{index:03}")),
            serial: Some(format!("SO-SIM-{index:04}")),
            mac: Some(format!(
                "02:53:4f:00:{:02x}:{:02x}",
                (index >> 8) & 0xff,
                index & 0xff
            )),
            model: Some("StayOpen SO-1 (simulated)".to_owned()),
        },
        cloud: Some(CloudSection {
            api_url: options.api_url.clone(),
            enrollment_token: Some(token),
            factory_key_file: None,
            telemetry_interval_secs: options.telemetry_interval_secs,
            outbox_max_mb: 64,
            // A lab tool: the demo cloud it loads serves plain HTTP on loopback.
            allow_plain_http: true,
        }),
        lan: LanSection::without_services("lan0"),
        uplinks: vec![
            UplinkConfig {
                name: "fiber".to_owned(),
                interface: "wan0".to_owned(),
                gateway: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                priority: 0,
                addressing: Default::default(),
                metered: false,
                dns: Vec::new(),
                modem: None,
            },
            UplinkConfig {
                name: "lte".to_owned(),
                interface: "wwan0".to_owned(),
                gateway: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))),
                priority: 1,
                addressing: Default::default(),
                metered: true,
                dns: Vec::new(),
                modem: None,
            },
        ],
        probes: ProbeSection::default(),
        dataplane: DataplaneSection::Simulated {
            links: BTreeMap::from([("fiber".to_owned(), fiber), ("lte".to_owned(), lte)]),
        },
        tunnel: Default::default(),
        cellular: Default::default(),
    }
}

/// Runs the fleet until `shutdown` turns true. Agents start 50 ms apart so enrolment does not
/// arrive as one burst.
pub async fn run(options: FleetOptions, shutdown: watch::Receiver<bool>) {
    let mut agents = tokio::task::JoinSet::new();
    for index in options.first_index..options.first_index + options.count {
        let config = appliance_config(&options, index);
        let shutdown = shutdown.clone();
        agents.spawn(async move {
            // Like the appliance's supervisor: an agent that asks to be restarted is started again.
            loop {
                let result = agent::run(
                    AgentOptions {
                        config: config.clone(),
                        events_file: None,
                        seed: index as u64,
                    },
                    shutdown.clone(),
                )
                .await;
                match result {
                    Ok(agent::Exit::RestartRequested) => {
                        tracing::info!(index, "simulated appliance restarting");
                    }
                    Ok(agent::Exit::Stopped) => return Ok(()),
                    Err(e) => {
                        tracing::error!(index, error = %e, "simulated appliance stopped");
                        return Err(e);
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while agents.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simulated_appliance_has_a_valid_distinct_configuration() {
        let options = FleetOptions {
            api_url: "http://127.0.0.1:8080".into(),
            enrollment_tokens: vec!["soe_a".into(), "soe_b".into()],
            first_index: 0,
            count: 20,
            state_root: PathBuf::from("/tmp/fleet"),
            telemetry_interval_secs: 10,
        };
        let configs: Vec<_> = (0..20).map(|i| appliance_config(&options, i)).collect();
        for config in &configs {
            config.validate().expect("valid");
        }
        let refusing: Vec<usize> = configs
            .iter()
            .enumerate()
            .filter(|(_, c)| match &c.dataplane {
                DataplaneSection::Simulated { links } => links
                    .get("lte")
                    .is_some_and(|l| l.unreachable_apps == [LAB_INTERFACE]),
                DataplaneSection::Linux { .. } => false,
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            refusing,
            [3, 7, 11, 15, 19],
            "every fourth LTE backup cannot reach the lab"
        );
        let serials: std::collections::BTreeSet<_> =
            configs.iter().map(|c| c.appliance.serial.clone()).collect();
        assert_eq!(serials.len(), 20);
        assert_eq!(
            configs[1]
                .cloud
                .as_ref()
                .and_then(|c| c.enrollment_token.as_deref()),
            Some("soe_b")
        );
    }
}
