//! The decision of `setup`, without I/O: from the links found (and what answered DHCP on them)
//! and the flags, which port is the LAN, which uplinks in what order, how each gets its address —
//! or a one-line refusal. Then the configuration it makes and the summary it prints.
//!
//! Design: a modem hands out addresses, the router does not (its WAN port is a DHCP client), so a
//! wired port with carrier where a DHCP server answered is a modem's; a wired port with carrier
//! and no answer is the router's; a cellular interface is the metered backup, after every wired
//! modem. Two wired modems are ordered by link speed (the faster first), then by name; the
//! summary shows the order and `--uplink` flags choose another. When the flags name the uplinks
//! they are the whole list, in the order given; when they name the LAN, it is never guessed.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use secrecy::{ExposeSecret, SecretString};

use super::links::{DhcpResult, Link, LinkKind};
use crate::config::{
    self, ApplianceConfig, ApplianceSection, CloudSection, DataplaneSection, LanSection,
    ProbeSection, ProbeTarget, TunnelSection, UplinkConfig,
};

/// One `--uplink IF[=NAME][,metered][,dhcp|,gateway=IP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    pub interface: String,
    pub name: Option<String>,
    pub metered: bool,
    pub addressing: SpecAddressing,
    /// The ISP's resolvers (`dns=IP`, repeatable): what the LAN's DNS forwarder asks through a
    /// static uplink (a DHCP uplink learns them).
    pub dns: Vec<std::net::Ipv4Addr>,
}

/// How an uplink named by a flag gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecAddressing {
    /// Whatever the probe finds: DHCP if a server answers, otherwise a refusal.
    Probe,
    /// DHCP whether or not a server answers now (the modem may be off during the install).
    Dhcp,
    /// A static next hop; the interface's own address is the system's (as before issue 17).
    Static(IpAddr),
}

impl std::str::FromStr for UplinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (interface, name) = match head.split_once('=') {
            Some((interface, name)) => (interface, Some(name.to_owned())),
            None => (head, None),
        };
        if interface.is_empty() {
            return Err(format!(
                "{s:?}: expected IF[=NAME][,metered][,dhcp|,gateway=IP]"
            ));
        }
        let mut spec = UplinkSpec {
            interface: interface.to_owned(),
            name,
            metered: false,
            addressing: SpecAddressing::Probe,
            dns: Vec::new(),
        };
        for part in parts {
            match part.split_once('=') {
                None if part == "metered" => spec.metered = true,
                None if part == "dhcp" && spec.addressing == SpecAddressing::Probe => {
                    spec.addressing = SpecAddressing::Dhcp;
                }
                Some(("gateway", ip)) if spec.addressing == SpecAddressing::Probe => {
                    let ip = ip
                        .parse()
                        .map_err(|_| format!("{s:?}: gateway {ip:?} is not an IP address"))?;
                    spec.addressing = SpecAddressing::Static(ip);
                }
                Some(("dns", ip)) => spec.dns.push(
                    ip.parse()
                        .map_err(|_| format!("{s:?}: dns {ip:?} is not an IPv4 address"))?,
                ),
                _ => {
                    return Err(format!(
                        "{s:?}: unknown or repeated option {part:?} (expected metered, dhcp, gateway=IP or dns=IP)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// How the appliance proves its right to enrol at the agent's first start.
#[derive(Debug, Clone)]
pub enum Enrolment {
    /// An enrolment token from the dashboard; `source` says where it came from (never the token).
    Token {
        token: SecretString,
        source: &'static str,
    },
    /// Zero-touch: this box's factory key file; the MSP registered its serial for a practice.
    FactoryKey(PathBuf),
}

#[derive(Debug, Clone)]
pub struct CloudRequest {
    pub api_url: String,
    pub enrolment: Enrolment,
    pub allow_plain_http: bool,
}

/// Everything the flags asked for, parsed.
#[derive(Debug, Clone)]
pub struct Request {
    pub lan: Option<String>,
    pub lan_address: LanAddress,
    pub uplinks: Vec<UplinkSpec>,
    pub cloud: Option<CloudRequest>,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub probe_targets: Vec<IpAddr>,
}

/// The appliance's own address on the LAN side, where its DHCP server and DNS forwarder serve the
/// router (`lan.address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanAddress {
    /// The first of [`LAN_CANDIDATES`] that overlaps no network a modem offered.
    Auto,
    Given(Ipv4Net),
    /// No LAN services: the router's WAN port is set by hand (`--no-lan-services`).
    None,
}

/// The LAN subnets `setup` chooses from, in order. Not 192.168.100.0/24: DOCSIS cable modems
/// answer at 192.168.100.1 for their status page. Not 192.168.0.0/24, 192.168.1.0/24 or
/// 10.0.0.0/24: the routers' own LANs usually are, and a router refuses a WAN subnet equal to
/// its LAN.
pub const LAN_CANDIDATES: [&str; 3] = ["10.253.0.1/24", "172.31.253.1/24", "192.168.253.1/24"];

/// One link and what its DHCP probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub link: Link,
    pub dhcp: DhcpResult,
}

/// How a planned uplink gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// By DHCP (`addressing = "dhcp"`): the answer seen during setup, if any, for the summary.
    Dhcp {
        seen: Option<super::links::DhcpAnswer>,
    },
    Static {
        gateway: IpAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUplink {
    pub name: String,
    pub interface: String,
    pub metered: bool,
    /// Resolvers named by `dns=IP` (a DHCP uplink learns its own).
    pub dns: Vec<std::net::Ipv4Addr>,
    pub cellular: bool,
    pub addressing: Addressing,
}

/// What `setup` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub lan: String,
    /// The appliance's LAN address (LAN services on), or none.
    pub lan_address: Option<Ipv4Net>,
    /// Whether the LAN was chosen without carrier (the only port left): the router may be off.
    pub lan_without_carrier: bool,
    /// In order of preference (priority 0 first).
    pub uplinks: Vec<PlannedUplink>,
    /// Links left out, each with why.
    pub unused: Vec<(String, String)>,
    pub request: Request,
}

/// Why no plan can be made: each is one line the installer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no interface named {name} here (found: {found})")]
    UnknownInterface { name: String, found: String },
    #[error("{name} is a {kind} and cannot be the LAN or an uplink")]
    Unusable { name: String, kind: String },
    #[error("{name} is named twice (as the LAN and as an uplink, or as two uplinks)")]
    NamedTwice { name: String },
    #[error(
        "no modem port found: no wired port with carrier got a DHCP answer (checked: {checked}); \
         connect the modem, or name the uplink with --uplink IF,gateway=IP"
    )]
    NoModemPort { checked: String },
    #[error(
        "uplink {interface}: no DHCP server answered there; give its gateway \
         (--uplink {interface},gateway=IP) or --uplink {interface},dhcp to use DHCP anyway"
    )]
    NoAddressing { interface: String },
    #[error(
        "two candidates for the LAN (the router's port): {candidates} (carrier, no DHCP server); \
         name it with --lan IF"
    )]
    TwoLanCandidates { candidates: String },
    #[error(
        "no port with carrier for the LAN (the router's port); ports without carrier: {candidates}; \
         plug in the router or name the port with --lan IF"
    )]
    LanWithoutCarrier { candidates: String },
    #[error(
        "no interface left for the LAN (the router's port): every port is an uplink or unusable; \
         name it with --lan IF"
    )]
    NoLanPort,
    #[error("--cloud needs an enrolment: --token, --token-file or --factory-key")]
    CloudWithoutEnrolment,
    #[error("{flag} needs --cloud URL")]
    EnrolmentWithoutCloud { flag: &'static str },
    #[error(
        "the LAN address {lan} overlaps {network}, which {interface} uses; give another with \
         --lan-address CIDR"
    )]
    LanAddressOverlaps {
        lan: Ipv4Net,
        interface: String,
        network: Ipv4Net,
    },
    #[error(
        "every usual LAN subnet overlaps an uplink's network; give one with --lan-address CIDR"
    )]
    NoFreeLanSubnet,
    #[error("the configuration would be invalid: {0}")]
    Invalid(String),
}

impl Refusal {
    /// Exit code: 2 for a configuration the agent would refuse (like `run`), 3 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::Invalid(_) => 2,
            _ => 3,
        }
    }
}

/// Which links must be asked for a DHCP server: the ones with carrier whose role the flags do not
/// already settle.
pub fn needs_probe(request: &Request, link: &Link) -> bool {
    let named = |i: &str| {
        request.lan.as_deref() == Some(i)
            || request
                .uplinks
                .iter()
                .any(|u| u.interface == i && u.addressing != SpecAddressing::Probe)
    };
    let explicit_uplink = request.uplinks.iter().any(|u| u.interface == link.name);
    let candidate = if explicit_uplink {
        true
    } else {
        link.kind.usable()
    };
    candidate && link.carrier == Some(true) && !named(&link.name)
}

/// Makes the plan, or says why it cannot.
pub fn plan(request: Request, observed: &[Observed]) -> Result<Plan, Refusal> {
    let find = |name: &str| -> Result<&Observed, Refusal> {
        let o = observed
            .iter()
            .find(|o| o.link.name == name)
            .ok_or_else(|| Refusal::UnknownInterface {
                name: name.to_owned(),
                found: observed
                    .iter()
                    .filter(|o| o.link.kind != LinkKind::Loopback)
                    .map(|o| o.link.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if matches!(o.link.kind, LinkKind::Loopback | LinkKind::Tunnel) {
            return Err(Refusal::Unusable {
                name: name.to_owned(),
                kind: o.link.kind.describe(),
            });
        }
        Ok(o)
    };
    check_enrolment(&request)?;

    // Uplinks: the flags' list, or every wired modem port (fastest first) then cellular.
    let mut uplinks = Vec::new();
    if request.uplinks.is_empty() {
        let mut modems: Vec<&Observed> = observed
            .iter()
            .filter(|o| {
                o.link.kind.wired()
                    && o.link.carrier == Some(true)
                    && Some(o.link.name.as_str()) != request.lan.as_deref()
                    && matches!(o.dhcp, DhcpResult::Answer(_))
            })
            .collect();
        modems.sort_by(|a, b| {
            b.link
                .speed_mbps
                .unwrap_or(0)
                .cmp(&a.link.speed_mbps.unwrap_or(0))
                .then_with(|| a.link.name.cmp(&b.link.name))
        });
        if modems.is_empty() {
            return Err(Refusal::NoModemPort {
                checked: observed
                    .iter()
                    .filter(|o| {
                        o.link.kind.wired() && Some(o.link.name.as_str()) != request.lan.as_deref()
                    })
                    .map(|o| {
                        let why = match (&o.link.carrier, &o.dhcp) {
                            (Some(true), DhcpResult::Failed(e)) => format!("probe failed: {e}"),
                            (Some(true), _) => "no DHCP answer".to_owned(),
                            _ => "no carrier".to_owned(),
                        };
                        format!("{} {why}", o.link.name)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for (i, o) in modems.iter().enumerate() {
            uplinks.push(PlannedUplink {
                name: format!("wan{}", i + 1),
                interface: o.link.name.clone(),
                metered: false,
                dns: Vec::new(),
                cellular: false,
                addressing: Addressing::Dhcp {
                    seen: answer(&o.dhcp),
                },
            });
        }
        let cellular = observed
            .iter()
            .filter(|o| o.link.kind == LinkKind::Cellular)
            .filter(|o| Some(o.link.name.as_str()) != request.lan.as_deref());
        for (i, o) in cellular.enumerate() {
            if let DhcpResult::Answer(_) = &o.dhcp {
                uplinks.push(PlannedUplink {
                    name: if i == 0 {
                        "cellular".into()
                    } else {
                        format!("cellular{}", i + 1)
                    },
                    interface: o.link.name.clone(),
                    metered: true,
                    dns: Vec::new(),
                    cellular: true,
                    addressing: Addressing::Dhcp {
                        seen: answer(&o.dhcp),
                    },
                });
            }
        }
    } else {
        for (i, spec) in request.uplinks.iter().enumerate() {
            let o = find(&spec.interface)?;
            if request.uplinks[..i]
                .iter()
                .any(|u| u.interface == spec.interface)
                || request.lan.as_deref() == Some(spec.interface.as_str())
            {
                return Err(Refusal::NamedTwice {
                    name: spec.interface.clone(),
                });
            }
            let addressing = match (spec.addressing, &o.dhcp) {
                (SpecAddressing::Static(gateway), _) => Addressing::Static { gateway },
                (SpecAddressing::Dhcp, dhcp) => Addressing::Dhcp { seen: answer(dhcp) },
                (SpecAddressing::Probe, DhcpResult::Answer(a)) => Addressing::Dhcp {
                    seen: Some(a.clone()),
                },
                (SpecAddressing::Probe, _) => {
                    return Err(Refusal::NoAddressing {
                        interface: spec.interface.clone(),
                    });
                }
            };
            let cellular = o.link.kind == LinkKind::Cellular;
            uplinks.push(PlannedUplink {
                name: spec.name.clone().unwrap_or_else(|| format!("wan{}", i + 1)),
                interface: spec.interface.clone(),
                metered: spec.metered || cellular,
                dns: spec.dns.clone(),
                cellular,
                addressing,
            });
        }
    }

    // The LAN: named, or the one wired port with carrier and no DHCP server, or the one left.
    let is_uplink = |name: &str| uplinks.iter().any(|u| u.interface == name);
    let (lan, lan_without_carrier) = match &request.lan {
        Some(lan) => {
            let o = find(lan)?;
            (lan.clone(), o.link.carrier != Some(true))
        }
        None => {
            let left: Vec<&Observed> = observed
                .iter()
                .filter(|o| o.link.kind.wired() && !is_uplink(&o.link.name))
                .filter(|o| !matches!(o.dhcp, DhcpResult::Answer(_)))
                .collect();
            let (carrier, dark): (Vec<&Observed>, Vec<&Observed>) =
                left.iter().partition(|o| o.link.carrier == Some(true));
            let names = |v: &[&Observed]| {
                v.iter()
                    .map(|o| o.link.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            match (carrier.as_slice(), dark.as_slice()) {
                ([one], _) => (one.link.name.clone(), false),
                ([], [one]) => (one.link.name.clone(), true),
                ([], []) => return Err(Refusal::NoLanPort),
                ([], dark) => {
                    return Err(Refusal::LanWithoutCarrier {
                        candidates: names(dark),
                    });
                }
                (many, _) => {
                    return Err(Refusal::TwoLanCandidates {
                        candidates: names(many),
                    });
                }
            }
        }
    };

    let unused = observed
        .iter()
        .filter(|o| o.link.name != lan && !is_uplink(&o.link.name))
        .filter(|o| o.link.kind != LinkKind::Loopback)
        .map(|o| {
            let why = if !o.link.kind.usable() {
                o.link.kind.describe()
            } else if o.link.carrier != Some(true) {
                "no carrier".to_owned()
            } else {
                match &o.dhcp {
                    DhcpResult::Answer(a) => format!("a DHCP server answered ({})", a.server),
                    DhcpResult::Failed(e) => format!("DHCP probe failed: {e}"),
                    DhcpResult::NoAnswer => "no DHCP answer".to_owned(),
                    DhcpResult::NotProbed => "not chosen".to_owned(),
                }
            };
            (o.link.name.clone(), why)
        })
        .collect();

    let lan_address = lan_address(request.lan_address, &uplinks)?;
    let plan = Plan {
        lan,
        lan_address,
        lan_without_carrier,
        uplinks,
        unused,
        request,
    };
    plan.config()
        .validate()
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    Ok(plan)
}

/// The networks the uplinks use: each offered address's subnet, each static gateway.
fn uplink_networks(uplinks: &[PlannedUplink]) -> Vec<(String, Ipv4Net)> {
    uplinks
        .iter()
        .filter_map(|u| {
            let net = match &u.addressing {
                Addressing::Dhcp { seen: Some(a) } => Ipv4Net::new(a.offered, a.prefix).ok()?,
                Addressing::Static {
                    gateway: IpAddr::V4(g),
                } => Ipv4Net::new(*g, 32).ok()?,
                _ => return None,
            };
            Some((u.interface.clone(), net.trunc()))
        })
        .collect()
}

fn lan_address(asked: LanAddress, uplinks: &[PlannedUplink]) -> Result<Option<Ipv4Net>, Refusal> {
    let used = uplink_networks(uplinks);
    let overlap = |lan: &Ipv4Net| {
        used.iter()
            .find(|(_, net)| net.contains(&lan.trunc()) || lan.trunc().contains(net))
            .cloned()
    };
    match asked {
        LanAddress::None => Ok(None),
        LanAddress::Given(lan) => match overlap(&lan) {
            Some((interface, network)) => Err(Refusal::LanAddressOverlaps {
                lan,
                interface,
                network,
            }),
            None => Ok(Some(lan)),
        },
        LanAddress::Auto => LAN_CANDIDATES
            .iter()
            .filter_map(|c| c.parse::<Ipv4Net>().ok())
            .find(|c| overlap(c).is_none())
            .map(Some)
            .ok_or(Refusal::NoFreeLanSubnet),
    }
}

fn check_enrolment(request: &Request) -> Result<(), Refusal> {
    match &request.cloud {
        Some(cloud) => match &cloud.enrolment {
            Enrolment::Token { token, .. } if token.expose_secret().trim().is_empty() => {
                Err(Refusal::CloudWithoutEnrolment)
            }
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

fn answer(dhcp: &DhcpResult) -> Option<super::links::DhcpAnswer> {
    match dhcp {
        DhcpResult::Answer(a) => Some(a.clone()),
        _ => None,
    }
}

impl Plan {
    /// The configuration the agent will run with.
    pub fn config(&self) -> ApplianceConfig {
        let r = &self.request;
        ApplianceConfig {
            appliance: ApplianceSection {
                state_dir: r.state_dir.clone(),
                serial: None,
                mac: None,
                model: None,
            },
            cloud: r.cloud.as_ref().map(|c| CloudSection {
                api_url: c.api_url.clone(),
                enrollment_token: match &c.enrolment {
                    Enrolment::Token { token, .. } => Some(token.expose_secret().trim().to_owned()),
                    Enrolment::FactoryKey(_) => None,
                },
                factory_key_file: match &c.enrolment {
                    Enrolment::FactoryKey(path) => Some(path.clone()),
                    Enrolment::Token { .. } => None,
                },
                telemetry_interval_secs: 10,
                outbox_max_mb: 64,
                allow_plain_http: c.allow_plain_http,
            }),
            lan: LanSection {
                address: self.lan_address,
                ..LanSection::without_services(&self.lan)
            },
            uplinks: self
                .uplinks
                .iter()
                .enumerate()
                .map(|(i, u)| uplink_config(i, u))
                .collect(),
            probes: ProbeSection {
                targets: r
                    .probe_targets
                    .iter()
                    .copied()
                    .map(ProbeTarget::Icmp)
                    .collect(),
                ..ProbeSection::default()
            },
            dataplane: DataplaneSection::Linux { table_base: 100 },
            tunnel: TunnelSection::default(),
            // A cellular uplink's operator, technology, signal and SIM data come from
            // ModemManager: MSPs place antennas by them.
            cellular: crate::cellular::CellularSection {
                enabled: self.uplinks.iter().any(|u| u.cellular),
                ..Default::default()
            },
        }
    }

    /// What `setup` prints before it does anything. Never contains the token.
    pub fn summary(&self, observed: &[Observed], backup: bool) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "Interfaces found:");
        for o in observed {
            let l = &o.link;
            let mut facts = vec![l.kind.describe()];
            if let Some(driver) = &l.driver {
                facts.push(format!("driver {driver}"));
            }
            if let Some(mac) = &l.mac {
                facts.push(mac.clone());
            }
            facts.push(match l.carrier {
                Some(true) => "carrier".into(),
                Some(false) => "no carrier".into(),
                None => "carrier unknown".into(),
            });
            if let Some(speed) = l.speed_mbps {
                facts.push(format!("{speed} Mb/s"));
            }
            match &o.dhcp {
                DhcpResult::Answer(a) => facts.push(format!(
                    "DHCP server {} offers {}{}",
                    a.server,
                    a.offered,
                    a.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
                )),
                DhcpResult::NoAnswer => facts.push("no DHCP answer".into()),
                DhcpResult::Failed(e) => facts.push(format!("DHCP probe failed: {e}")),
                DhcpResult::NotProbed => {}
            }
            let _ = writeln!(out, "  {:<15} {}", l.name, facts.join(", "));
        }
        let _ = writeln!(out, "Setup will:");
        let _ = writeln!(
            out,
            "  LAN (the router's side): {}{}",
            self.lan,
            if self.lan_without_carrier {
                " (no carrier now: is the router on and plugged in?)"
            } else {
                ""
            }
        );
        match self.lan_address {
            Some(address) => {
                let _ = writeln!(
                    out,
                    "  LAN services on {}: the appliance is {address}; its DHCP server gives the router's WAN port an address, {} as gateway and DNS server (a forwarder through the active uplink)",
                    self.lan,
                    address.addr()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  LAN services: none (--no-lan-services): the router's WAN port is set by hand"
                );
            }
        }
        let _ = writeln!(out, "  uplinks, in order of preference:");
        for (i, u) in self.uplinks.iter().enumerate() {
            let addressing = match &u.addressing {
                Addressing::Dhcp { seen: Some(a) } => format!(
                    "DHCP (offered {}{}{})",
                    a.offered,
                    a.gateway
                        .map(|g| format!(", gateway {g}"))
                        .unwrap_or_default(),
                    if a.resolvers.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", DNS {}",
                            a.resolvers
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join(" ")
                        )
                    }
                ),
                Addressing::Dhcp { seen: None } => "DHCP (no server answered yet)".into(),
                Addressing::Static { gateway } => format!("static, gateway {gateway}"),
            };
            let _ = writeln!(
                out,
                "    {}. {} on {}: {}, {}, {}",
                i + 1,
                u.name,
                u.interface,
                if u.cellular { "cellular" } else { "wired" },
                if u.metered { "metered" } else { "not metered" },
                addressing
            );
        }
        for (name, why) in &self.unused {
            let _ = writeln!(out, "  leave {name} unused ({why})");
        }
        let r = &self.request;
        let _ = writeln!(
            out,
            "  probe through every uplink: {}",
            r.probe_targets
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match &r.cloud {
            None => {
                let _ = writeln!(out, "  cloud: none (the appliance runs standalone)");
            }
            Some(c) => {
                let how = match &c.enrolment {
                    Enrolment::Token { source, .. } => format!("an enrolment token ({source})"),
                    Enrolment::FactoryKey(path) => {
                        format!("claim with the factory key {}", path.display())
                    }
                };
                let _ = writeln!(
                    out,
                    "  cloud: {}{}; enrols by {how} at the agent's first start",
                    c.api_url,
                    if c.allow_plain_http {
                        " (plain http allowed: a lab)"
                    } else {
                        ""
                    }
                );
            }
        }
        let _ = writeln!(out, "  state directory: {}", r.state_dir.display());
        let _ = writeln!(
            out,
            "  write {} (mode 0600{})",
            r.config_path.display(),
            if backup {
                format!(
                    "; the existing file is kept as {}",
                    super::write::backup_path(&r.config_path).display()
                )
            } else {
                String::new()
            }
        );
        out
    }
}

/// One planned uplink as the configuration's `[[uplinks]]` entry: a modem's port with
/// `addressing = "dhcp"` (the agent's DHCP client takes the lease), a static one with its gateway.
fn uplink_config(priority: usize, u: &PlannedUplink) -> UplinkConfig {
    let (addressing, gateway) = match &u.addressing {
        Addressing::Static { gateway } => (config::Addressing::Static, Some(*gateway)),
        Addressing::Dhcp { .. } => (config::Addressing::Dhcp, None),
    };
    UplinkConfig {
        name: u.name.clone(),
        interface: u.interface.clone(),
        gateway,
        priority: u8::try_from(priority).unwrap_or(u8::MAX),
        addressing,
        metered: u.metered,
        dns: u.dns.iter().copied().map(IpAddr::V4).collect(),
        modem: None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::links::DhcpAnswer;
    use super::*;

    fn link(name: &str, kind: LinkKind, carrier: bool, speed: u32) -> Link {
        Link {
            name: name.into(),
            mac: Some("02:00:00:00:00:01".into()),
            kind,
            driver: None,
            carrier: Some(carrier),
            speed_mbps: Some(speed),
            up: true,
        }
    }

    fn modem(name: &str, speed: u32, net: u8) -> Observed {
        Observed {
            link: link(name, LinkKind::Ethernet, true, speed),
            dhcp: DhcpResult::Answer(DhcpAnswer {
                server: Ipv4Addr::new(100, 64, net, 1),
                offered: Ipv4Addr::new(100, 64, net, 100),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(100, 64, net, 1)),
                resolvers: vec![Ipv4Addr::new(192, 0, 2, 53)],
            }),
        }
    }

    fn quiet(name: &str, carrier: bool) -> Observed {
        Observed {
            link: link(name, LinkKind::Veth, carrier, 10_000),
            dhcp: if carrier {
                DhcpResult::NoAnswer
            } else {
                DhcpResult::NotProbed
            },
        }
    }

    fn loopback() -> Observed {
        Observed {
            link: link("lo", LinkKind::Loopback, true, 0),
            dhcp: DhcpResult::NotProbed,
        }
    }

    fn request() -> Request {
        Request {
            lan: None,
            lan_address: LanAddress::Auto,
            uplinks: Vec::new(),
            cloud: None,
            state_dir: "/var/lib/stayopen".into(),
            config_path: "/etc/stayopen/appliance.toml".into(),
            probe_targets: vec![IpAddr::from([203, 0, 113, 10])],
        }
    }

    fn with_token(mut r: Request, url: &str) -> Request {
        r.cloud = Some(CloudRequest {
            api_url: url.into(),
            enrolment: Enrolment::Token {
                token: SecretString::from("soe_secret_token_value".to_owned()),
                source: "given with --token",
            },
            allow_plain_http: false,
        });
        r
    }

    fn spec(s: &str) -> UplinkSpec {
        s.parse().expect("spec")
    }

    #[test]
    fn the_modem_port_is_the_uplink_and_the_quiet_port_with_carrier_is_the_lan() {
        let observed = [
            loopback(),
            modem("eth0", 1000, 1),
            quiet("eth1", true),
            quiet("eth2", false),
        ];
        let plan = plan(request(), &observed).expect("plan");
        assert_eq!(plan.lan, "eth1");
        assert!(!plan.lan_without_carrier);
        assert_eq!(plan.uplinks.len(), 1);
        let u = &plan.uplinks[0];
        assert_eq!(
            (u.name.as_str(), u.interface.as_str(), u.metered),
            ("wan1", "eth0", false)
        );
        assert!(
            matches!(&u.addressing, Addressing::Dhcp { seen: Some(a) } if a.offered == Ipv4Addr::new(100, 64, 1, 100))
        );
        assert_eq!(
            plan.unused,
            vec![("eth2".to_owned(), "no carrier".to_owned())]
        );
    }

    #[test]
    fn two_wired_modems_go_fastest_first_and_the_cellular_modem_is_the_metered_last() {
        let wwan = Observed {
            link: link("wwan0", LinkKind::Cellular, true, 0),
            dhcp: modem("x", 0, 9).dhcp,
        };
        let observed = [
            wwan,
            modem("eth0", 100, 1),
            modem("eth1", 1000, 2),
            quiet("eth2", true),
        ];
        let plan = plan(request(), &observed).expect("plan");
        let order: Vec<_> = plan
            .uplinks
            .iter()
            .map(|u| (u.name.as_str(), u.interface.as_str(), u.metered))
            .collect();
        assert_eq!(
            order,
            [
                ("wan1", "eth1", false),
                ("wan2", "eth0", false),
                ("cellular", "wwan0", true)
            ]
        );
        let config = plan.config();
        assert_eq!(
            config
                .uplinks
                .iter()
                .map(|u| u.priority)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(plan.lan, "eth2");
        assert!(
            config.cellular.enabled,
            "a cellular uplink's signal is read from ModemManager"
        );
    }

    #[test]
    fn equally_fast_modems_are_ordered_by_name() {
        let observed = [
            modem("eth2", 1000, 2),
            modem("eth0", 1000, 1),
            quiet("eth1", true),
        ];
        let plan = plan(request(), &observed).expect("plan");
        assert_eq!(plan.uplinks[0].interface, "eth0");
        assert_eq!(plan.uplinks[1].interface, "eth2");
        assert!(
            !plan.config().cellular.enabled,
            "no modem, no ModemManager to ask"
        );
    }

    #[test]
    fn without_a_dhcp_answer_anywhere_setup_refuses_naming_what_it_checked() {
        let observed = [quiet("eth0", true), quiet("eth1", false)];
        let err = plan(request(), &observed).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "no modem port found: no wired port with carrier got a DHCP answer (checked: eth0 no \
             DHCP answer, eth1 no carrier); connect the modem, or name the uplink with --uplink \
             IF,gateway=IP"
        );
        assert_eq!(err.exit_code(), 3);
    }

    #[test]
    fn two_quiet_ports_with_carrier_are_two_candidates_for_the_lan_and_a_refusal() {
        let observed = [
            modem("eth0", 1000, 1),
            quiet("eth1", true),
            quiet("eth2", true),
        ];
        let err = plan(request(), &observed).expect_err("refused");
        assert_eq!(
            err,
            Refusal::TwoLanCandidates {
                candidates: "eth1 and eth2".into()
            }
        );
        // Naming it settles it; the other is left unused.
        let mut r = request();
        r.lan = Some("eth2".into());
        let plan = plan(r, &observed).expect("plan");
        assert_eq!(plan.lan, "eth2");
        assert_eq!(
            plan.unused,
            vec![("eth1".to_owned(), "no DHCP answer".to_owned())]
        );
    }

    #[test]
    fn the_one_port_left_is_the_lan_even_without_carrier_and_the_summary_says_so() {
        let observed = [modem("eth0", 1000, 1), quiet("eth1", false)];
        let plan = plan(request(), &observed).expect("plan");
        assert_eq!(plan.lan, "eth1");
        assert!(plan.lan_without_carrier);
        assert!(plan.summary(&observed, false).contains("no carrier now"));
        let two_dark = [
            modem("eth0", 1000, 1),
            quiet("eth1", false),
            quiet("eth2", false),
        ];
        assert!(matches!(
            super::plan(request(), &two_dark),
            Err(Refusal::LanWithoutCarrier { .. })
        ));
        assert_eq!(
            super::plan(request(), &[modem("eth0", 1000, 1)]).expect_err("no lan"),
            Refusal::NoLanPort
        );
    }

    #[test]
    fn uplinks_named_by_flags_are_the_whole_list_in_their_order() {
        let observed = [
            modem("eth0", 1000, 1),
            modem("eth1", 10, 2),
            quiet("eth2", true),
            quiet("eth3", true),
        ];
        let mut r = request();
        r.uplinks = vec![
            spec("eth1=cable"),
            spec("eth3=dsl,metered,gateway=198.51.100.1"),
        ];
        r.lan = Some("eth2".into());
        let plan = plan(r, &observed).expect("plan");
        let uplinks: Vec<_> = plan
            .uplinks
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.interface.as_str(),
                    u.metered,
                    u.addressing.clone(),
                )
            })
            .collect();
        assert_eq!(uplinks[0].0, "cable");
        assert!(matches!(uplinks[0].3, Addressing::Dhcp { seen: Some(_) }));
        assert_eq!(
            uplinks[1],
            (
                "dsl",
                "eth3",
                true,
                Addressing::Static {
                    gateway: IpAddr::from([198, 51, 100, 1])
                }
            )
        );
        assert_eq!(plan.unused[0].0, "eth0");
        let config = plan.config();
        assert_eq!(
            (config.uplinks[0].addressing, config.uplinks[0].gateway),
            (config::Addressing::Dhcp, None),
            "a modem's port learns its gateway with its lease"
        );
        assert_eq!(
            (config.uplinks[1].addressing, config.uplinks[1].gateway),
            (
                config::Addressing::Static,
                Some(IpAddr::from([198, 51, 100, 1]))
            )
        );
    }

    #[test]
    fn a_named_uplink_without_dhcp_answer_or_gateway_is_refused_and_dhcp_forces_it() {
        let observed = [quiet("eth0", true), quiet("eth1", true)];
        let mut r = request();
        r.uplinks = vec![spec("eth0")];
        r.lan = Some("eth1".into());
        let err = plan(r.clone(), &observed).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "uplink eth0: no DHCP server answered there; give its gateway (--uplink \
             eth0,gateway=IP) or --uplink eth0,dhcp to use DHCP anyway"
        );
        r.uplinks = vec![spec("eth0,dhcp")];
        let plan = plan(r, &observed).expect("forced dhcp");
        assert_eq!(plan.uplinks[0].addressing, Addressing::Dhcp { seen: None });
    }

    #[test]
    fn unknown_twice_named_and_unusable_interfaces_are_refused_in_one_line() {
        let observed = [loopback(), modem("eth0", 1000, 1), quiet("eth1", true)];
        let mut r = request();
        r.lan = Some("eth7".into());
        assert_eq!(
            plan(r.clone(), &observed).expect_err("unknown").to_string(),
            "no interface named eth7 here (found: eth0, eth1)"
        );
        r.lan = Some("lo".into());
        assert_eq!(
            plan(r.clone(), &observed)
                .expect_err("loopback")
                .to_string(),
            "lo is a loopback and cannot be the LAN or an uplink"
        );
        r.lan = Some("eth0".into());
        r.uplinks = vec![spec("eth0")];
        assert_eq!(
            plan(r.clone(), &observed).expect_err("twice"),
            Refusal::NamedTwice {
                name: "eth0".into()
            }
        );
        r.lan = Some("eth1".into());
        r.uplinks = vec![spec("eth0"), spec("eth0=again")];
        assert!(matches!(
            plan(r, &observed),
            Err(Refusal::NamedTwice { .. })
        ));
    }

    #[test]
    fn a_plain_http_cloud_without_the_lab_flag_is_the_agents_own_refusal_with_exit_code_2() {
        let observed = [modem("eth0", 1000, 1), quiet("eth1", true)];
        let err = plan(with_token(request(), "http://cloud.example.net"), &observed)
            .expect_err("refused");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("allow_plain_http"), "{err}");
        let mut lab = with_token(request(), "http://cloud.example.net");
        if let Some(c) = lab.cloud.as_mut() {
            c.allow_plain_http = true;
        }
        plan(lab, &observed).expect("a lab may use http");
    }

    #[test]
    fn duplicate_uplink_names_from_flags_are_refused_by_the_agents_validation() {
        let observed = [
            modem("eth0", 1000, 1),
            modem("eth1", 1000, 2),
            quiet("eth2", true),
        ];
        let mut r = request();
        r.uplinks = vec![spec("eth0=isp"), spec("eth1=isp")];
        let err = plan(r, &observed).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "the configuration would be invalid: uplinks[1].name: duplicate uplink name \"isp\""
        );
    }

    #[test]
    fn the_token_goes_into_the_configuration_but_never_into_the_summary() {
        let observed = [modem("eth0", 1000, 1), quiet("eth1", true)];
        let plan = plan(
            with_token(request(), "https://cloud.example.net"),
            &observed,
        )
        .expect("plan");
        let config = plan.config();
        let cloud = config.cloud.expect("cloud");
        assert_eq!(
            cloud.enrollment_token.as_deref(),
            Some("soe_secret_token_value")
        );
        assert_eq!(cloud.factory_key_file, None);
        let summary = plan.summary(&observed, true);
        assert!(!summary.contains("soe_secret"), "{summary}");
        for expected in [
            "LAN (the router's side): eth1",
            "1. wan1 on eth0: wired, not metered, DHCP (offered 100.64.1.100, gateway 100.64.1.1, DNS 192.0.2.53)",
            "cloud: https://cloud.example.net; enrols by an enrolment token (given with --token) at the agent's first start",
            "state directory: /var/lib/stayopen",
            "write /etc/stayopen/appliance.toml (mode 0600; the existing file is kept as /etc/stayopen/appliance.toml.bak)",
            "probe through every uplink: 203.0.113.10",
        ] {
            assert!(
                summary.contains(expected),
                "missing {expected:?} in\n{summary}"
            );
        }
    }

    #[test]
    fn a_factory_key_enrols_by_claim() {
        let observed = [modem("eth0", 1000, 1), quiet("eth1", true)];
        let mut r = request();
        r.cloud = Some(CloudRequest {
            api_url: "https://cloud.example.net".into(),
            enrolment: Enrolment::FactoryKey("/etc/stayopen/factory.key".into()),
            allow_plain_http: false,
        });
        let plan = plan(r, &observed).expect("plan");
        let cloud = plan.config().cloud.expect("cloud");
        assert_eq!(cloud.enrollment_token, None);
        assert_eq!(
            cloud.factory_key_file.as_deref(),
            Some(std::path::Path::new("/etc/stayopen/factory.key"))
        );
        assert!(
            plan.summary(&observed, false)
                .contains("enrols by claim with the factory key /etc/stayopen/factory.key")
        );
    }

    #[test]
    fn uplink_flags_parse_and_bad_ones_say_what_was_expected() {
        assert_eq!(
            spec("eth0=fibre,metered,gateway=192.0.2.1"),
            UplinkSpec {
                interface: "eth0".into(),
                name: Some("fibre".into()),
                metered: true,
                addressing: SpecAddressing::Static(IpAddr::from([192, 0, 2, 1])),
                dns: Vec::new(),
            }
        );
        assert_eq!(spec("wwan0,dhcp").addressing, SpecAddressing::Dhcp);
        assert_eq!(
            spec("eth3,gateway=198.51.100.1,dns=198.51.100.53,dns=198.51.100.54").dns,
            [
                std::net::Ipv4Addr::new(198, 51, 100, 53),
                std::net::Ipv4Addr::new(198, 51, 100, 54)
            ]
        );
        for bad in [
            "",
            "eth0,fast",
            "eth0,gateway=nope",
            "eth0,dhcp,gateway=192.0.2.1",
        ] {
            assert!(
                bad.parse::<UplinkSpec>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn only_ports_whose_role_is_open_and_that_have_carrier_are_probed() {
        let mut r = request();
        r.lan = Some("eth1".into());
        r.uplinks = vec![spec("eth2,gateway=192.0.2.1"), spec("eth3")];
        let probe = |l: Link| needs_probe(&r, &l);
        assert!(
            !probe(link("eth1", LinkKind::Veth, true, 0)),
            "the named LAN"
        );
        assert!(
            !probe(link("eth2", LinkKind::Veth, true, 0)),
            "a static uplink"
        );
        assert!(
            probe(link("eth3", LinkKind::Veth, true, 0)),
            "an uplink to probe"
        );
        assert!(!probe(link("eth4", LinkKind::Veth, false, 0)), "no carrier");
        assert!(!probe(link("lo", LinkKind::Loopback, true, 0)));
        assert!(!probe(link("br0", LinkKind::Bridge, true, 0)));
    }

    #[test]
    fn the_lan_subnet_is_one_no_modem_offers_and_the_lan_services_serve_the_router() {
        let observed = [modem("eth0", 1000, 1), quiet("eth1", true)];
        let plan = plan(request(), &observed).expect("plan");
        assert_eq!(
            plan.lan_address,
            Some("10.253.0.1/24".parse().expect("net"))
        );
        let config = plan.config();
        assert_eq!(config.lan.address, plan.lan_address);
        assert!(
            plan.summary(&observed, false).contains(
                "LAN services on eth1: the appliance is 10.253.0.1/24; its DHCP server gives the router's WAN port an address, 10.253.0.1 as gateway and DNS server"
            )
        );

        // A modem that hands out 10.253.0.0/16 pushes the choice to the next candidate.
        let mut clash = modem("eth0", 1000, 1);
        if let DhcpResult::Answer(a) = &mut clash.dhcp {
            a.offered = Ipv4Addr::new(10, 253, 7, 9);
            a.prefix = 16;
        }
        let observed = [clash, quiet("eth1", true)];
        let plan2 = super::plan(request(), &observed).expect("plan");
        assert_eq!(
            plan2.lan_address,
            Some("172.31.253.1/24".parse().expect("net"))
        );

        // Asked for explicitly, an overlapping subnet is refused, naming the port.
        let mut r = request();
        r.lan_address = LanAddress::Given("10.253.9.1/24".parse().expect("net"));
        assert_eq!(
            super::plan(r.clone(), &observed)
                .expect_err("overlap")
                .to_string(),
            "the LAN address 10.253.9.1/24 overlaps 10.253.0.0/16, which eth0 uses; give another \
             with --lan-address CIDR"
        );
        r.lan_address = LanAddress::None;
        let plan3 = super::plan(r, &observed).expect("plan");
        assert_eq!(plan3.config().lan.address, None);
        assert!(
            plan3
                .summary(&observed, false)
                .contains("LAN services: none")
        );
    }

    #[test]
    fn a_static_uplink_carries_the_resolvers_its_flag_names() {
        let observed = [quiet("eth0", true), quiet("eth1", true)];
        let mut r = request();
        r.lan = Some("eth1".into());
        r.uplinks = vec![spec("eth0=dsl,gateway=198.51.100.1,dns=198.51.100.53")];
        let config = plan(r, &observed).expect("plan").config();
        assert_eq!(config.uplinks[0].dns, [IpAddr::from([198, 51, 100, 53])]);
    }
}
