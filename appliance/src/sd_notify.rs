//! systemd's service notification protocol (`sd_notify(3)`), for the unit's `Type=notify` and
//! `WatchdogSec=` (`infra/systemd/stayopen-appliance.service`).
//!
//! Design: the protocol is one datagram of `KEY=VALUE` lines to the Unix socket systemd names in
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). That is a few lines
//! of the standard library, so no crate (the `sd-notify` and `libsystemd` crates would add a
//! dependency, and the latter `unsafe`-heavy bindings, for one `send_to`). The decisions — whether
//! the watchdog is on for this process, and when the next ping is due — are pure functions of the
//! environment's values and of `now`, tested without a socket; [`Notifier`] is the thin I/O edge.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`: tests, the demo, a shell) every call does nothing.
//! The variables are left in the environment (removing them is `unsafe` in Rust 2024): the agent's
//! children (`ip`, `nft`, `conntrack`) never write to the socket, and systemd's default
//! `NotifyAccess=main` would ignore them if they did.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The watchdog's plan: ping every half of systemd's timeout, as `sd_watchdog_enabled(3)`
/// recommends, so one late turn of the loop does not get a healthy agent killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    every: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd asked for, from the values of `$WATCHDOG_USEC` and `$WATCHDOG_PID`:
    /// none when the timeout is absent, zero or unreadable, or when `$WATCHDOG_PID` names another
    /// process (the variables were inherited from a parent that systemd watches).
    pub fn from_env_values(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Self> {
        let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
        if let Some(pid) = pid
            && pid.trim().parse::<u32>().ok() != Some(own_pid)
        {
            return None;
        }
        Some(Self {
            every: Duration::from_micros(usec) / 2,
            last: None,
        })
    }

    /// How often the watchdog is pinged.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Whether a ping is due at `now`; if so it counts as sent. The first call is always due.
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Where `$NOTIFY_SOCKET` points: `@name` is Linux's abstract namespace, anything else a path.
pub fn socket_address(notify_socket: &str) -> std::io::Result<SocketAddr> {
    match notify_socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(notify_socket),
    }
}

/// Tells systemd how the agent is doing. Cheap to hold; does nothing outside systemd.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Watchdog>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A socket that cannot be
    /// opened is logged once and notification is off: the agent runs on regardless.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        let target = var("NOTIFY_SOCKET").and_then(|path| match Self::open(&path) {
            Ok(target) => Some(target),
            Err(e) => {
                tracing::warn!(socket = %path, error = %e, "cannot open systemd's notification socket");
                None
            }
        });
        let watchdog = target.as_ref().and_then(|_| {
            Watchdog::from_env_values(
                var("WATCHDOG_USEC").as_deref(),
                var("WATCHDOG_PID").as_deref(),
                std::process::id(),
            )
        });
        if let Some(watchdog) = &watchdog {
            tracing::info!(every = ?watchdog.every(), "systemd watchdog on");
        }
        Self { target, watchdog }
    }

    fn open(path: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let address = socket_address(path)?;
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer (systemd busy) must never stall the decision loop.
        socket.set_nonblocking(true)?;
        Ok((socket, address))
    }

    /// `READY=1`: start-up is complete (the dataplane is up and the control socket answers).
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `STOPPING=1`: the agent is shutting down on purpose.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `WATCHDOG=1` when a ping is due at `now`. Called from every turn of the decision loop, so a
    /// loop that stops turning stops the pings and systemd restarts the agent.
    pub fn watchdog(&mut self, now: Instant) {
        if let Some(watchdog) = &mut self.watchdog
            && watchdog.due(now)
        {
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.target
            && let Err(e) = socket.send_to_addr(message.as_bytes(), address)
        {
            tracing::warn!(message, error = %e, "cannot notify systemd");
        }
    }

    /// A notifier that writes to `socket_path` with the given watchdog interval (tests).
    pub fn to_socket(socket_path: &str, watchdog_usec: Option<u64>) -> std::io::Result<Self> {
        let target = Self::open(socket_path)?;
        let watchdog = watchdog_usec.and_then(|usec| {
            Watchdog::from_env_values(Some(&usec.to_string()), None, std::process::id())
        });
        Ok(Self {
            target: Some(target),
            watchdog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_every_half_of_systemds_timeout() {
        let mut watchdog = Watchdog::from_env_values(Some("30000000"), None, 7).expect("on");
        assert_eq!(watchdog.every(), Duration::from_secs(15));
        let start = Instant::now();
        assert!(watchdog.due(start), "the first turn pings at once");
        assert!(!watchdog.due(start + Duration::from_secs(14)));
        assert!(watchdog.due(start + Duration::from_secs(15)));
        assert!(!watchdog.due(start + Duration::from_secs(16)));
        assert!(watchdog.due(start + Duration::from_secs(31)));
    }

    #[test]
    fn no_watchdog_without_a_timeout_or_for_another_process() {
        assert_eq!(Watchdog::from_env_values(None, None, 7), None);
        assert_eq!(Watchdog::from_env_values(Some("0"), None, 7), None);
        assert_eq!(Watchdog::from_env_values(Some("soon"), None, 7), None);
        assert_eq!(Watchdog::from_env_values(Some("1000"), Some("8"), 7), None);
        assert!(Watchdog::from_env_values(Some("1000"), Some("7"), 7).is_some());
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket_and_anything_else_a_path() {
        use std::os::linux::net::SocketAddrExt;
        let abstract_name = socket_address("@/org/freedesktop/systemd1/notify").expect("abstract");
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        let path = socket_address("/run/systemd/notify").expect("path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }

    #[test]
    fn systemd_hears_ready_then_paced_watchdog_pings_then_stopping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).expect("bind");
        systemd.set_nonblocking(true).expect("nonblocking");
        let mut notifier =
            Notifier::to_socket(path.to_str().expect("utf-8"), Some(2_000_000)).expect("open");
        let start = Instant::now();
        notifier.ready();
        for ms in [0, 500, 999, 1000, 1500, 2100] {
            notifier.watchdog(start + Duration::from_millis(ms));
        }
        notifier.stopping();
        let mut heard = Vec::new();
        let mut buffer = [0u8; 64];
        while let Ok(n) = systemd.recv(&mut buffer) {
            heard.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        assert_eq!(
            heard,
            [
                "READY=1",
                "WATCHDOG=1",
                "WATCHDOG=1",
                "WATCHDOG=1",
                "STOPPING=1"
            ],
            "pings at 0, 1000 and 2100 ms for a 2 s timeout"
        );
    }
}
