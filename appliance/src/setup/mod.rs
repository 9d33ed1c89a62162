//! `stayopen-appliance setup`: the install in one command. It finds the interfaces and their
//! links, tells the modem's port (a DHCP server answers there) from the router's (carrier, no
//! DHCP server), prints what it will do, asks, and writes a configuration the agent accepts; the
//! agent enrols with the token or the factory key it names at its first start.
//!
//! - [`links`]: the I/O edge — interfaces from sysfs, links raised with `ip`, DHCP probes — behind
//!   the [`links::LinkProbe`] trait.
//! - [`plan`]: the decision, without I/O: roles, order, addressing, refusals, the configuration
//!   and the summary.
//! - [`write`]: the atomic, 0600 write that keeps the old file as `.bak`.
//!
//! Exit codes: 0 written (or, with `--dry-run`, the summary printed); 1 something failed while
//! looking or writing (sysfs unreadable, a link that cannot be raised, the file not written);
//! 2 bad flags or a configuration the agent would refuse; 3 the interfaces found allow no plan
//! (no modem port, two candidates for the LAN…); 4 not confirmed.

pub mod dhcp_probe;
pub mod links;
pub mod plan;
pub mod write;

use std::io::{BufRead, IsTerminal};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::SecretString;

use links::{DhcpResult, LinkProbe};
use plan::{CloudRequest, Enrolment, Observed, Plan, Request, UplinkSpec};

/// The flags of `stayopen-appliance setup`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// Write without asking.
    #[arg(long)]
    pub yes: bool,
    /// Print the summary and stop: nothing is written.
    #[arg(long)]
    pub dry_run: bool,
    /// The interface facing the practice's router (found by itself when absent).
    #[arg(long, value_name = "IF")]
    pub lan: Option<String>,
    /// The appliance's address on the LAN (the router's gateway and DNS server), e.g.
    /// 10.253.0.1/24; default: the first of 10.253.0.1/24, 172.31.253.1/24, 192.168.253.1/24 that
    /// overlaps no uplink's network.
    #[arg(long, value_name = "CIDR", conflicts_with = "no_lan_services")]
    pub lan_address: Option<ipnet::Ipv4Net>,
    /// No DHCP server and no DNS forwarder on the LAN: the router's WAN port is set by hand.
    #[arg(long)]
    pub no_lan_services: bool,
    /// An uplink, repeatable, in order of preference; when given, the uplinks are exactly these.
    /// Without `dhcp` or `gateway=IP` it must get a DHCP answer now.
    #[arg(
        long = "uplink",
        value_name = "IF[=NAME][,metered][,dhcp|,gateway=IP][,dns=IP]"
    )]
    pub uplinks: Vec<UplinkSpec>,
    /// Base URL of the cloud API; without it the appliance runs standalone.
    #[arg(long, value_name = "URL")]
    pub cloud: Option<String>,
    /// Enrolment token from the dashboard (visible to `ps`: prefer --token-file or the variable).
    #[arg(long, env = "STAYOPEN_ENROLLMENT_TOKEN", hide_env_values = true,
          conflicts_with_all = ["token_file", "factory_key"])]
    pub token: Option<String>,
    /// A file holding the enrolment token.
    #[arg(long, value_name = "PATH", conflicts_with = "factory_key")]
    pub token_file: Option<PathBuf>,
    /// Zero-touch enrolment by claim: the file holding this box's factory key.
    #[arg(long, value_name = "PATH")]
    pub factory_key: Option<PathBuf>,
    /// Let --cloud be plain http:// (a lab or test bed).
    #[arg(long)]
    pub allow_plain_http: bool,
    /// The configuration file to write.
    #[arg(long, default_value = "/etc/stayopen/appliance.toml")]
    pub config: PathBuf,
    /// The agent's state directory (identity, outbox, control socket).
    #[arg(long, default_value = "/var/lib/stayopen")]
    pub state_dir: PathBuf,
    /// A probe target (ICMP), repeatable, probed through every uplink.
    #[arg(long = "probe-target", value_name = "IP",
          default_values_t = [IpAddr::from([1, 1, 1, 1]), IpAddr::from([8, 8, 8, 8]), IpAddr::from([9, 9, 9, 9])])]
    pub probe_targets: Vec<IpAddr>,
    /// How long each port's DHCP probe waits for an offer.
    #[arg(long, default_value_t = 4, value_name = "SECS")]
    pub dhcp_timeout_secs: u64,
    /// How long a port that setup raised may take to show carrier.
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub carrier_wait_secs: u64,
}

/// Why `setup` stopped.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Refused(#[from] plan::Refusal),
    #[error("{0}")]
    Flags(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    NotConfirmed(String),
}

impl SetupError {
    /// The documented exit code (module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::Io(_) => 1,
            SetupError::Flags(_) => 2,
            SetupError::Refused(r) => r.exit_code(),
            SetupError::NotConfirmed(_) => 4,
        }
    }
}

/// What a finished `setup` did.
#[derive(Debug, Clone)]
pub struct Done {
    /// Whether the file was written (false after `--dry-run`).
    pub written: bool,
    pub took: Duration,
}

/// Turns the flags into a [`Request`] (reading the token file; checking the factory key file).
pub fn request(args: &SetupArgs) -> Result<Request, SetupError> {
    let enrolment = match (&args.token, &args.token_file, &args.factory_key) {
        (Some(token), _, _) => Some(Enrolment::Token {
            token: SecretString::from(token.trim().to_owned()),
            source: "given with --token",
        }),
        (None, Some(path), _) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| SetupError::Flags(format!("--token-file {}: {e}", path.display())))?;
            Some(Enrolment::Token {
                token: SecretString::from(token.trim().to_owned()),
                source: "read from --token-file",
            })
        }
        (None, None, Some(path)) => {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            match std::fs::read(&path) {
                Ok(key) if !key.iter().all(u8::is_ascii_whitespace) => {}
                Ok(_) => {
                    return Err(SetupError::Flags(format!(
                        "--factory-key {}: the file is empty",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(SetupError::Flags(format!(
                        "--factory-key {}: {e}",
                        path.display()
                    )));
                }
            }
            Some(Enrolment::FactoryKey(path))
        }
        (None, None, None) => None,
    };
    let cloud = match (&args.cloud, enrolment) {
        (Some(url), Some(enrolment)) => Some(CloudRequest {
            api_url: url.trim_end_matches('/').to_owned(),
            enrolment,
            allow_plain_http: args.allow_plain_http,
        }),
        (Some(_), None) => return Err(plan::Refusal::CloudWithoutEnrolment.into()),
        (None, Some(enrolment)) => {
            return Err(plan::Refusal::EnrolmentWithoutCloud {
                flag: match enrolment {
                    Enrolment::Token { .. } => "--token",
                    Enrolment::FactoryKey(_) => "--factory-key",
                },
            }
            .into());
        }
        (None, None) => None,
    };
    if args.probe_targets.is_empty() {
        return Err(SetupError::Flags("give at least one --probe-target".into()));
    }
    Ok(Request {
        lan: args.lan.clone(),
        lan_address: match (args.lan_address, args.no_lan_services) {
            (_, true) => plan::LanAddress::None,
            (Some(address), false) => plan::LanAddress::Given(address),
            (None, false) => plan::LanAddress::Auto,
        },
        uplinks: args.uplinks.clone(),
        cloud,
        state_dir: args.state_dir.clone(),
        config_path: args.config.clone(),
        probe_targets: args.probe_targets.clone(),
    })
}

/// Looks at every link: raises the usable ones that are down (to see carrier and probe them),
/// waits for their carrier, probes the ports whose role the flags leave open, and lowers again
/// what it raised — setup changes nothing on the machine but the configuration file.
pub async fn observe(
    probe: &impl LinkProbe,
    request: &Request,
    carrier_wait: Duration,
    dhcp_timeout: Duration,
) -> Result<Vec<Observed>, SetupError> {
    let links = probe.links().map_err(SetupError::Io)?;
    let named = |name: &str| {
        request.lan.as_deref() == Some(name) || request.uplinks.iter().any(|u| u.interface == name)
    };
    let mut raised = Vec::new();
    for link in &links {
        if !link.up && (link.kind.usable() || named(&link.name)) {
            if let Err(e) = probe.set_up(&link.name, true).await {
                lower(probe, &raised).await;
                return Err(SetupError::Io(e));
            }
            raised.push(link.name.clone());
        }
    }
    // Ports with carrier are probed at once while the others are given time to show carrier
    // (autonegotiation takes seconds); those are probed as they come: a port that never gets
    // carrier costs no more than the probes already running.
    let result = async {
        let links = probe.links().map_err(SetupError::Io)?;
        let first: Vec<String> = links
            .iter()
            .filter(|l| plan::needs_probe(request, l))
            .map(|l| l.name.clone())
            .collect();
        let later = async {
            let mut links = links.clone();
            let deadline = Instant::now() + carrier_wait;
            while Instant::now() < deadline
                && links
                    .iter()
                    .any(|l| raised.contains(&l.name) && l.carrier != Some(true))
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                links = probe.links().map_err(SetupError::Io)?;
            }
            let second: Vec<String> = links
                .iter()
                .filter(|l| plan::needs_probe(request, l) && !first.contains(&l.name))
                .map(|l| l.name.clone())
                .collect();
            let answers = if second.is_empty() {
                Vec::new()
            } else {
                probe.dhcp_probe(&second, dhcp_timeout).await
            };
            Ok::<_, SetupError>((links, second, answers))
        };
        let (first_answers, later) = tokio::join!(probe.dhcp_probe(&first, dhcp_timeout), later);
        let (links, second, second_answers) = later?;
        let probed: Vec<(String, DhcpResult)> = first
            .into_iter()
            .zip(first_answers)
            .chain(second.into_iter().zip(second_answers))
            .collect();
        Ok(links
            .into_iter()
            .map(|link| {
                let dhcp = probed
                    .iter()
                    .find(|(n, _)| *n == link.name)
                    .map(|(_, r)| r.clone())
                    .unwrap_or(DhcpResult::NotProbed);
                Observed { link, dhcp }
            })
            .collect())
    }
    .await;
    lower(probe, &raised).await;
    result
}

async fn lower(probe: &impl LinkProbe, raised: &[String]) {
    for name in raised {
        if let Err(e) = probe.set_up(name, false).await {
            tracing::warn!(interface = %name, error = %e, "cannot lower the link again");
        }
    }
}

/// The configuration file's text: a header, then the configuration as TOML, checked to read back
/// as the same configuration through the agent's own parser.
pub fn config_text(plan: &Plan) -> Result<String, SetupError> {
    let config = plan.config();
    let body = toml::to_string(&config)
        .map_err(|e| SetupError::Io(format!("cannot write the configuration as TOML: {e}")))?;
    let text = format!(
        "# Written by `stayopen-appliance setup` ({}). docs/appliance-config.md documents every key.\n\n{body}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    match crate::config::ApplianceConfig::parse(&text) {
        Ok(back) if back == config => Ok(text),
        Ok(_) => Err(SetupError::Io(
            "the written configuration would not read back the same".into(),
        )),
        Err(e) => Err(plan::Refusal::Invalid(e.to_string()).into()),
    }
}

/// Runs `setup`: look, plan, print, ask, write. `answer` is where a confirmation is read from
/// (stdin); `out` gets the summary and the outcome.
pub async fn run(
    args: &SetupArgs,
    probe: &impl LinkProbe,
    answer: &mut dyn BufRead,
    interactive: bool,
    out: &mut dyn std::io::Write,
) -> Result<Done, SetupError> {
    let started = Instant::now();
    let request = request(args)?;
    if !args.yes && !args.dry_run && !interactive {
        return Err(SetupError::NotConfirmed(
            "stdin is not a terminal: pass --yes to write without asking, or --dry-run".into(),
        ));
    }
    let observed = observe(
        probe,
        &request,
        Duration::from_secs(args.carrier_wait_secs),
        Duration::from_secs(args.dhcp_timeout_secs),
    )
    .await?;
    let plan = plan::plan(request, &observed)?;
    let text = config_text(&plan)?;
    let path = plan.request.config_path.clone();
    let io = |e: std::io::Error| SetupError::Io(format!("writing the summary: {e}"));
    write!(out, "{}", plan.summary(&observed, path.exists())).map_err(io)?;
    if plan.request.state_dir.join("identity.json").exists() && plan.request.cloud.is_some() {
        writeln!(
            out,
            "  note: {} already holds an enrolled identity, which the agent keeps: the enrolment above is not used",
            plan.request.state_dir.display()
        )
        .map_err(io)?;
    }
    if args.dry_run {
        writeln!(out, "Dry run: nothing written.").map_err(io)?;
        return Ok(Done {
            written: false,
            took: started.elapsed(),
        });
    }
    if !args.yes {
        write!(out, "Write this configuration? [y/N] ").map_err(io)?;
        out.flush().map_err(io)?;
        let mut line = String::new();
        answer
            .read_line(&mut line)
            .map_err(|e| SetupError::Io(format!("reading the answer: {e}")))?;
        if !matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Err(SetupError::NotConfirmed(
                "not confirmed: nothing written".into(),
            ));
        }
    }
    let written = write::write_config(&path, &text)
        .map_err(|e| SetupError::Io(format!("cannot write {}: {e}", path.display())))?;
    writeln!(
        out,
        "Wrote {}{}.",
        path.display(),
        written
            .backup
            .map(|b| format!(" (the previous file is {})", b.display()))
            .unwrap_or_default()
    )
    .map_err(io)?;
    writeln!(
        out,
        "Start the agent: systemctl restart stayopen-appliance (or: stayopen-appliance run --config {})",
        path.display()
    )
    .map_err(io)?;
    let took = started.elapsed();
    writeln!(out, "setup took {} ms", took.as_millis()).map_err(io)?;
    Ok(Done {
        written: true,
        took,
    })
}

/// `stayopen-appliance setup` on this machine: the Linux links, stdin and stdout; returns the
/// exit code and prints a refusal as one line.
pub async fn main(args: SetupArgs) -> u8 {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut answer = stdin.lock();
    let mut out = std::io::stdout();
    match run(
        &args,
        &links::LinuxLinks::default(),
        &mut answer,
        interactive,
        &mut out,
    )
    .await
    {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("stayopen-appliance setup: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::links::{DhcpAnswer, Link, LinkKind};
    use super::*;

    /// Links in memory: raising one gives it carrier when `cabled`; DHCP answers from a table.
    struct FakeLinks {
        links: RefCell<Vec<Link>>,
        cabled: Vec<&'static str>,
        offers: BTreeMap<&'static str, DhcpAnswer>,
        calls: RefCell<Vec<String>>,
    }

    impl FakeLinks {
        fn new(links: &[(&str, bool)], cabled: &[&'static str], modems: &[&'static str]) -> Self {
            FakeLinks {
                links: RefCell::new(
                    links
                        .iter()
                        .map(|(name, up)| Link {
                            name: (*name).into(),
                            mac: None,
                            kind: if *name == "lo" {
                                LinkKind::Loopback
                            } else {
                                LinkKind::Ethernet
                            },
                            driver: Some("e1000e".into()),
                            carrier: up.then_some(cabled.contains(name)),
                            speed_mbps: Some(1000),
                            up: *up,
                        })
                        .collect(),
                ),
                cabled: cabled.to_vec(),
                offers: modems
                    .iter()
                    .map(|m| {
                        (
                            *m,
                            DhcpAnswer {
                                server: Ipv4Addr::new(192, 168, 100, 1),
                                offered: Ipv4Addr::new(192, 168, 100, 10),
                                prefix: 24,
                                gateway: Some(Ipv4Addr::new(192, 168, 100, 1)),
                                resolvers: Vec::new(),
                            },
                        )
                    })
                    .collect(),
                calls: RefCell::new(Vec::new()),
            }
        }
    }

    impl LinkProbe for FakeLinks {
        fn links(&self) -> Result<Vec<Link>, String> {
            Ok(self.links.borrow().clone())
        }

        async fn set_up(&self, interface: &str, up: bool) -> Result<(), String> {
            self.calls
                .borrow_mut()
                .push(format!("{interface} {}", if up { "up" } else { "down" }));
            for link in self.links.borrow_mut().iter_mut() {
                if link.name == interface {
                    link.up = up;
                    link.carrier = up.then_some(self.cabled.contains(&interface));
                }
            }
            Ok(())
        }

        async fn dhcp_probe(&self, interfaces: &[String], _timeout: Duration) -> Vec<DhcpResult> {
            self.calls
                .borrow_mut()
                .push(format!("probe {}", interfaces.join(" ")));
            interfaces
                .iter()
                .map(|i| match self.offers.get(i.as_str()) {
                    Some(a) => DhcpResult::Answer(a.clone()),
                    None => DhcpResult::NoAnswer,
                })
                .collect()
        }
    }

    fn args(dir: &std::path::Path, extra: &[&str]) -> SetupArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            setup: SetupArgs,
        }
        let config = dir.join("appliance.toml");
        let state = dir.join("state");
        let mut argv = vec![
            "setup".to_owned(),
            "--config".into(),
            config.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--carrier-wait-secs".into(),
            "0".into(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Cli::try_parse_from(argv).expect("flags").setup
    }

    async fn run_fake(
        fake: &FakeLinks,
        args: &SetupArgs,
        answer: &str,
        interactive: bool,
    ) -> (Result<Done, SetupError>, String) {
        let mut out = Vec::new();
        let result = run(args, fake, &mut answer.as_bytes(), interactive, &mut out).await;
        (result, String::from_utf8_lossy(&out).into_owned())
    }

    fn three_ports() -> FakeLinks {
        // eth0 and eth1 are down: setup raises them to see carrier and probe, then lowers them.
        FakeLinks::new(
            &[
                ("lo", true),
                ("eth0", false),
                ("eth1", false),
                ("eth2", true),
            ],
            &["eth0", "eth1"],
            &["eth0"],
        )
    }

    #[tokio::test]
    async fn setup_raises_down_ports_to_look_probes_the_open_ones_and_leaves_them_as_it_found_them()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = three_ports();
        let (result, out) = run_fake(&fake, &args(dir.path(), &["--yes"]), "", false).await;
        let done = result.expect("setup");
        assert!(done.written);
        assert_eq!(
            fake.calls.borrow().as_slice(),
            [
                "eth0 up",
                "eth1 up",
                "probe eth0 eth1",
                "eth0 down",
                "eth1 down"
            ]
        );
        assert!(
            fake.links
                .borrow()
                .iter()
                .all(|l| l.up == (l.name != "eth0" && l.name != "eth1"))
        );
        let config = crate::config::ApplianceConfig::load(&dir.path().join("appliance.toml"))
            .expect("the agent's parser accepts what setup wrote");
        assert_eq!(config.lan.interface, "eth1");
        assert_eq!(config.uplinks[0].interface, "eth0");
        assert!(out.contains("leave eth2 unused (no carrier)"), "{out}");
        assert!(out.contains("setup took"), "{out}");
    }

    #[tokio::test]
    async fn without_a_terminal_or_yes_setup_refuses_before_touching_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = three_ports();
        let (result, out) = run_fake(&fake, &args(dir.path(), &[]), "y\n", false).await;
        let err = result.expect_err("refused");
        assert_eq!(err.exit_code(), 4);
        assert!(err.to_string().contains("--yes"), "{err}");
        assert!(fake.calls.borrow().is_empty(), "no link was raised");
        assert!(out.is_empty());
        assert!(!dir.path().join("appliance.toml").exists());
    }

    #[tokio::test]
    async fn the_summary_comes_before_the_question_and_no_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("appliance.toml");
        std::fs::write(&path, "# the old one\n").expect("write");
        let fake = three_ports();
        let (result, out) = run_fake(&fake, &args(dir.path(), &[]), "n\n", true).await;
        assert_eq!(result.expect_err("declined").exit_code(), 4);
        let question = out.find("Write this configuration? [y/N]").expect("asked");
        let summary = out.find("LAN (the router's side): eth1").expect("summary");
        assert!(summary < question);
        assert!(out.contains("the existing file is kept as"), "{out}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "# the old one\n"
        );

        let (result, out) = run_fake(&fake, &args(dir.path(), &[]), "yes\n", true).await;
        result.expect("confirmed");
        assert!(out.contains("the previous file is"), "{out}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("appliance.toml.bak")).expect("bak"),
            "# the old one\n"
        );
    }

    #[tokio::test]
    async fn a_dry_run_prints_the_summary_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = three_ports();
        let (result, out) = run_fake(&fake, &args(dir.path(), &["--dry-run"]), "", false).await;
        assert!(!result.expect("dry run").written);
        assert!(out.contains("Dry run: nothing written."), "{out}");
        assert!(!dir.path().join("appliance.toml").exists());
    }

    #[tokio::test]
    async fn a_cloud_without_enrolment_and_a_token_without_cloud_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = three_ports();
        let (result, _) = run_fake(
            &fake,
            &args(
                dir.path(),
                &["--yes", "--cloud", "https://cloud.example.net"],
            ),
            "",
            false,
        )
        .await;
        assert_eq!(
            result.expect_err("refused").to_string(),
            "--cloud needs an enrolment: --token, --token-file or --factory-key"
        );
        let (result, _) = run_fake(
            &fake,
            &args(dir.path(), &["--yes", "--token", "soe_x"]),
            "",
            false,
        )
        .await;
        assert_eq!(
            result.expect_err("refused").to_string(),
            "--token needs --cloud URL"
        );
        let (result, _) = run_fake(
            &fake,
            &args(
                dir.path(),
                &[
                    "--yes",
                    "--cloud",
                    "https://c.example.net",
                    "--factory-key",
                    "/nonexistent/key",
                ],
            ),
            "",
            false,
        )
        .await;
        let err = result.expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("--factory-key /nonexistent/key: "),
            "{err}"
        );
        assert!(fake.calls.borrow().is_empty());
    }

    #[tokio::test]
    async fn a_token_file_is_read_and_its_token_written_into_the_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "soe_from_file\n").expect("write");
        let fake = three_ports();
        let (result, out) = run_fake(
            &fake,
            &args(
                dir.path(),
                &[
                    "--yes",
                    "--cloud",
                    "https://cloud.example.net/",
                    "--token-file",
                    &token.display().to_string(),
                ],
            ),
            "",
            false,
        )
        .await;
        result.expect("setup");
        assert!(!out.contains("soe_from_file"));
        let config = crate::config::ApplianceConfig::load(&dir.path().join("appliance.toml"))
            .expect("parses");
        let cloud = config.cloud.expect("cloud");
        assert_eq!(cloud.api_url, "https://cloud.example.net");
        assert_eq!(cloud.enrollment_token.as_deref(), Some("soe_from_file"));
    }
}
