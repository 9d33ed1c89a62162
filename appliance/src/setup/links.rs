//! What `setup` learns about the machine's network interfaces, behind a small trait at the I/O
//! edge ([`LinkProbe`]): the Linux implementation reads `/sys/class/net`, raises links with `ip`
//! and sends one DHCP DISCOVER per port; the tests' fake answers from memory.
//!
//! Kinds are read from sysfs, not guessed from names (except `wwan*`): `type` (the ARPHRD number:
//! 1 is Ethernet, 772 loopback), `uevent`'s `DEVTYPE` (bridge, bond, vlan, wlan, wwan, wireguard),
//! `tun_flags` (a TUN/TAP device), `master` (a port of a bridge or bond), and `device/driver` (the
//! physical NIC's driver), and for virtual links the kind netlink gives (`ip -d -j link`'s
//! `info_kind`: sysfs cannot tell a veth from a dummy). A veth counts as Ethernet, so the same
//! code runs in the namespace tests and containers; a dummy, a vlan or a bond does not (name it
//! with a flag to use it).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One network interface as `setup` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: Option<String>,
    pub kind: LinkKind,
    /// The driver of the physical device (`igb`, `r8169`, `qmi_wwan`…); none for virtual links.
    pub driver: Option<String>,
    /// `None` when the kernel does not say (the link is administratively down).
    pub carrier: Option<bool>,
    pub speed_mbps: Option<u32>,
    /// Administratively up.
    pub up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A wired port with a physical device.
    Ethernet,
    /// A veth pair end: treated as Ethernet (network-namespace test beds, containers).
    Veth,
    /// A cellular modem's interface (`wwan*`, or `DEVTYPE=wwan`): a metered backup.
    Cellular,
    Loopback,
    Bridge,
    /// Enslaved to a bridge or bond (its master carries the traffic).
    Port {
        master: String,
    },
    /// TUN/TAP, WireGuard, GRE, SIT…: the appliance's own `so-tun0` among them.
    Tunnel,
    Wireless,
    /// Anything else (bond, vlan, dummy, macvlan…), with what sysfs said.
    Other(String),
}

impl LinkKind {
    /// Whether `setup` may choose this link by itself as the LAN or an uplink.
    pub fn usable(&self) -> bool {
        matches!(
            self,
            LinkKind::Ethernet | LinkKind::Veth | LinkKind::Cellular
        )
    }

    /// Wired Ethernet (a modem's or the router's port), as opposed to cellular.
    pub fn wired(&self) -> bool {
        matches!(self, LinkKind::Ethernet | LinkKind::Veth)
    }

    pub fn describe(&self) -> String {
        match self {
            LinkKind::Ethernet => "ethernet".into(),
            LinkKind::Veth => "ethernet (veth)".into(),
            LinkKind::Cellular => "cellular".into(),
            LinkKind::Loopback => "loopback".into(),
            LinkKind::Bridge => "bridge".into(),
            LinkKind::Port { master } => format!("port of {master}"),
            LinkKind::Tunnel => "tunnel".into(),
            LinkKind::Wireless => "wireless".into(),
            LinkKind::Other(what) => what.clone(),
        }
    }
}

/// What a DHCP server offered in answer to one DISCOVER (nothing was requested or bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpAnswer {
    /// The server identifier (option 54), or the packet's source.
    pub server: Ipv4Addr,
    pub offered: Ipv4Addr,
    /// The subnet mask option (1) as a prefix length.
    pub prefix: u8,
    /// The router option (3), first entry.
    pub gateway: Option<Ipv4Addr>,
    /// The DNS servers option (6).
    pub resolvers: Vec<Ipv4Addr>,
}

/// The outcome of probing one port for a DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpResult {
    /// Not probed: not needed (the flags settled the port) or impossible (no carrier).
    NotProbed,
    NoAnswer,
    Answer(DhcpAnswer),
    /// The probe could not run (no raw socket, the interface vanished…), with the reason.
    Failed(String),
}

/// The I/O edge of `setup`: list links, raise or lower one, and ask several ports at once
/// whether a DHCP server answers. Implemented for Linux by [`LinuxLinks`].
pub trait LinkProbe {
    /// Every interface of this network namespace.
    fn links(&self) -> Result<Vec<Link>, String>;
    /// Administratively raises (`true`) or lowers (`false`) a link.
    fn set_up(&self, interface: &str, up: bool) -> impl Future<Output = Result<(), String>>;
    /// One DISCOVER on each of `interfaces`, concurrently, each waiting at most `timeout`; the
    /// results in the order asked.
    fn dhcp_probe(
        &self,
        interfaces: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Vec<DhcpResult>>;
}

/// The machine's own links: sysfs under `sys_class_net` (normally `/sys/class/net`, which `ip
/// netns exec` remounts for the namespace), `ip link set` to raise a port, and
/// [`crate::dhcp::probe`] for the DISCOVER.
#[derive(Debug, Clone)]
pub struct LinuxLinks {
    pub sys_class_net: PathBuf,
}

impl Default for LinuxLinks {
    fn default() -> Self {
        Self {
            sys_class_net: PathBuf::from("/sys/class/net"),
        }
    }
}

impl LinkProbe for LinuxLinks {
    fn links(&self) -> Result<Vec<Link>, String> {
        let output = std::process::Command::new("ip")
            .args(["-j", "-d", "link", "show"])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "ip -j -d link show: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let kinds = link_kinds(&output.stdout)?;
        read_links(&self.sys_class_net, &kinds)
            .map_err(|e| format!("cannot list {}: {e}", self.sys_class_net.display()))
    }

    async fn set_up(&self, interface: &str, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        let output = tokio::process::Command::new("ip")
            .args(["link", "set", "dev", interface, state])
            .output()
            .await
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip link set dev {interface} {state}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    async fn dhcp_probe(&self, interfaces: &[String], timeout: Duration) -> Vec<DhcpResult> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, interface) in interfaces.iter().cloned().enumerate() {
            tasks.spawn(async move { (i, super::dhcp_probe::probe(&interface, timeout).await) });
        }
        let mut results =
            vec![DhcpResult::Failed("the probe did not finish".into()); interfaces.len()];
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, result)) = done {
                results[i] = match result {
                    Ok(Some(answer)) => DhcpResult::Answer(answer),
                    Ok(None) => DhcpResult::NoAnswer,
                    Err(e) => DhcpResult::Failed(e),
                };
            }
        }
        results
    }
}

/// Each link's netlink kind (`veth`, `bridge`, `tun`…) from `ip -j -d link show`; physical
/// links have none.
pub fn link_kinds(ip_json: &[u8]) -> Result<BTreeMap<String, String>, String> {
    #[derive(serde::Deserialize)]
    struct IpLink {
        ifname: String,
        #[serde(default)]
        linkinfo: Option<LinkInfo>,
    }
    #[derive(serde::Deserialize)]
    struct LinkInfo {
        #[serde(default)]
        info_kind: Option<String>,
    }
    let links: Vec<IpLink> = serde_json::from_slice(ip_json)
        .map_err(|e| format!("unreadable output of ip -j -d link show: {e}"))?;
    Ok(links
        .into_iter()
        .filter_map(|l| Some((l.ifname, l.linkinfo?.info_kind?)))
        .collect())
}

/// Reads every interface under `root` (a `/sys/class/net`), sorted by name; `kinds` is
/// [`link_kinds`].
pub fn read_links(root: &Path, kinds: &BTreeMap<String, String>) -> std::io::Result<Vec<Link>> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = root.join(&name);
        // Files such as bonding_masters sit beside the interfaces.
        if !dir.join("type").exists() {
            continue;
        }
        links.push(read_link(&dir, &name, kinds.get(&name).map(String::as_str)));
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(links)
}

fn read_link(dir: &Path, name: &str, info_kind: Option<&str>) -> Link {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let number = |file: &str| read(file).and_then(|s| s.parse::<i64>().ok());
    let devtype = read("uevent").and_then(|uevent| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVTYPE=").map(str::to_owned))
    });
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let master = std::fs::read_link(dir.join("master"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let has_device = dir.join("device").exists();
    let arphrd = number("type").unwrap_or(-1);
    let kind = classify_kind(&KindFacts {
        name,
        arphrd,
        devtype: devtype.as_deref(),
        tun: dir.join("tun_flags").exists(),
        bridge: dir.join("bridge").exists(),
        master,
        has_device,
        info_kind,
    });
    let flags = read("flags")
        .and_then(|f| i64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    Link {
        name: name.to_owned(),
        mac: read("address").filter(|m| !m.is_empty() && m != "00:00:00:00:00:00"),
        kind,
        driver,
        // Reading `carrier` of a link that is down fails (EINVAL): unknown, not "no".
        carrier: number("carrier").map(|c| c == 1),
        speed_mbps: number("speed")
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| *s > 0),
        up: flags & 1 == 1,
    }
}

/// What sysfs says about one interface, for [`classify_kind`].
#[derive(Debug, Clone)]
pub struct KindFacts<'a> {
    pub name: &'a str,
    /// `type`: the ARPHRD number.
    pub arphrd: i64,
    /// `uevent`'s `DEVTYPE`.
    pub devtype: Option<&'a str>,
    /// `tun_flags` exists.
    pub tun: bool,
    /// `bridge/` exists.
    pub bridge: bool,
    /// `master` links to this bridge or bond.
    pub master: Option<String>,
    /// `device` exists (a physical device backs it).
    pub has_device: bool,
    /// The netlink kind of a virtual link (`veth`, `dummy`, `vlan`, `tun`…); none when physical.
    pub info_kind: Option<&'a str>,
}

/// The kind of one interface from its sysfs facts.
pub fn classify_kind(f: &KindFacts<'_>) -> LinkKind {
    const ARPHRD_ETHER: i64 = 1;
    const ARPHRD_LOOPBACK: i64 = 772;
    if f.arphrd == ARPHRD_LOOPBACK {
        return LinkKind::Loopback;
    }
    if f.devtype == Some("wwan") || f.name.starts_with("wwan") {
        return LinkKind::Cellular;
    }
    if f.bridge || f.devtype == Some("bridge") {
        return LinkKind::Bridge;
    }
    if let Some(master) = &f.master {
        return LinkKind::Port {
            master: master.clone(),
        };
    }
    if f.tun
        || matches!(f.devtype, Some("wireguard" | "gre" | "ipip" | "sit"))
        || matches!(
            f.info_kind,
            Some("tun" | "wireguard" | "gre" | "gretap" | "ipip" | "sit" | "vxlan" | "geneve")
        )
    {
        return LinkKind::Tunnel;
    }
    if f.devtype == Some("wlan") {
        return LinkKind::Wireless;
    }
    if let Some(other) = f.devtype {
        return LinkKind::Other(other.to_owned());
    }
    if f.arphrd != ARPHRD_ETHER {
        return LinkKind::Tunnel;
    }
    match (f.info_kind, f.has_device) {
        (Some("veth"), _) => LinkKind::Veth,
        (Some(kind), _) => LinkKind::Other(kind.to_owned()),
        (None, true) => LinkKind::Ethernet,
        (None, false) => LinkKind::Other("virtual".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str) -> KindFacts<'_> {
        KindFacts {
            name,
            arphrd: 1,
            devtype: None,
            tun: false,
            bridge: false,
            master: None,
            has_device: true,
            info_kind: None,
        }
    }

    #[test]
    fn sysfs_facts_give_each_interface_its_kind() {
        assert_eq!(classify_kind(&facts("enp1s0")), LinkKind::Ethernet);
        let veth = KindFacts {
            has_device: false,
            info_kind: Some("veth"),
            ..facts("eth0")
        };
        assert_eq!(classify_kind(&veth), LinkKind::Veth);
        let dummy = KindFacts {
            has_device: false,
            info_kind: Some("dummy"),
            ..facts("dummy0")
        };
        assert!(!classify_kind(&dummy).usable());
        let lo = KindFacts {
            arphrd: 772,
            ..facts("lo")
        };
        assert_eq!(classify_kind(&lo), LinkKind::Loopback);
        let tun = KindFacts {
            arphrd: 65534,
            tun: true,
            has_device: false,
            ..facts("so-tun0")
        };
        assert_eq!(classify_kind(&tun), LinkKind::Tunnel);
        let wg = KindFacts {
            arphrd: 65534,
            devtype: Some("wireguard"),
            ..facts("wg0")
        };
        assert_eq!(classify_kind(&wg), LinkKind::Tunnel);
        let bridge = KindFacts {
            devtype: Some("bridge"),
            bridge: true,
            has_device: false,
            ..facts("br0")
        };
        assert_eq!(classify_kind(&bridge), LinkKind::Bridge);
        let port = KindFacts {
            master: Some("br0".into()),
            ..facts("eth3")
        };
        assert_eq!(
            classify_kind(&port),
            LinkKind::Port {
                master: "br0".into()
            }
        );
        // A raw-IP QMI modem has no Ethernet header (ARPHRD_NONE) but is cellular all the same.
        let wwan = KindFacts {
            arphrd: 65534,
            devtype: Some("wwan"),
            ..facts("wwp0s20u4i4")
        };
        assert_eq!(classify_kind(&wwan), LinkKind::Cellular);
        assert_eq!(classify_kind(&facts("wwan0")), LinkKind::Cellular);
        let wlan = KindFacts {
            devtype: Some("wlan"),
            ..facts("wlp2s0")
        };
        assert_eq!(classify_kind(&wlan), LinkKind::Wireless);
    }

    #[test]
    fn a_sysfs_tree_is_read_into_links_with_carrier_speed_and_driver() {
        let root = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, files: &[(&str, &str)]| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for (file, content) in files {
                std::fs::write(dir.join(file), content).expect("write");
            }
            dir
        };
        let nic = make(
            "enp1s0",
            &[
                ("type", "1\n"),
                ("address", "52:54:00:12:34:56\n"),
                ("carrier", "1\n"),
                ("speed", "1000\n"),
                ("flags", "0x1003\n"),
                ("ifindex", "2\n"),
                ("iflink", "2\n"),
                ("uevent", "INTERFACE=enp1s0\nIFINDEX=2\n"),
            ],
        );
        let device = root.path().join("pci0000/driver-igb");
        std::fs::create_dir_all(device.join("drivers/igb")).expect("mkdir");
        std::fs::create_dir_all(nic.join("device")).expect("mkdir");
        std::os::unix::fs::symlink(device.join("drivers/igb"), nic.join("device/driver"))
            .expect("symlink");
        make(
            "lo",
            &[("type", "772\n"), ("flags", "0x9\n"), ("carrier", "1\n")],
        );
        make(
            "eth9",
            &[
                ("type", "1\n"),
                ("flags", "0x1002\n"),
                ("ifindex", "5\n"),
                ("iflink", "6\n"),
                ("speed", "-1\n"),
            ],
        );
        std::fs::write(root.path().join("bonding_masters"), "").expect("write");

        let kinds = link_kinds(
            br#"[{"ifindex":1,"ifname":"lo","link_type":"loopback"},
                {"ifindex":2,"ifname":"enp1s0","link_type":"ether"},
                {"ifindex":5,"ifname":"eth9","link_type":"ether","linkinfo":{"info_kind":"veth"}}]"#,
        )
        .expect("ip json");
        assert_eq!(kinds.len(), 1);
        let links = read_links(root.path(), &kinds).expect("read");
        assert_eq!(
            links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["enp1s0", "eth9", "lo"]
        );
        assert_eq!(
            links[0],
            Link {
                name: "enp1s0".into(),
                mac: Some("52:54:00:12:34:56".into()),
                kind: LinkKind::Ethernet,
                driver: Some("igb".into()),
                carrier: Some(true),
                speed_mbps: Some(1000),
                up: true,
            }
        );
        assert_eq!(links[1].kind, LinkKind::Veth);
        assert_eq!(
            (links[1].carrier, links[1].speed_mbps, links[1].up),
            (None, None, false)
        );
        assert_eq!(links[2].kind, LinkKind::Loopback);
    }
}
