//! The session-survival traffic tools (`stayopen-testbed tcp-send`, `tcp-sink`, `udp-call`,
//! `udp-call-server`): a paced TCP stream from the LAN host to a server and a two-way UDP "call",
//! each side recording what it saw, so a test can tell whether the sessions survived a failover.
//!
//! Every tool takes commands on stdin, one a line, and answers `report` with one JSON line on
//! stdout: `mark` starts a new measurement window (gaps, losses and bytes are counted from there),
//! `report` prints the window and the totals, `stop` stops sending (the TCP sender closes its
//! connection cleanly). A window's largest gap includes the silence from its last arrival to the
//! report, so a stream that never came back shows as one long gap.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::testbed::TestbedError;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// How a TCP connection ended, as one side saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The peer closed it cleanly (end of stream).
    Eof,
    /// ECONNRESET: the connection was reset.
    Reset,
    /// Any other error, in words.
    Error(String),
}

impl Ending {
    fn of(error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::ConnectionReset {
            Self::Reset
        } else {
            Self::Error(error.to_string())
        }
    }
}

/// Arrival gaps since the last `mark`.
#[derive(Debug, Default)]
struct Gaps {
    last: Option<Instant>,
    max: Duration,
}

impl Gaps {
    fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.max = self.max.max(now - last);
        }
        self.last = Some(now);
    }

    fn mark(&mut self) {
        self.max = Duration::ZERO;
    }

    /// The largest gap so far, counting the silence since the last arrival.
    fn largest(&self, now: Instant) -> f64 {
        let silent = self.last.map_or(Duration::ZERO, |t| now - t);
        ms(self.max.max(silent))
    }
}

/// What one side of the UDP call received in the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SeqReport {
    /// Distinct sequence numbers received in the window.
    pub received: u64,
    /// Copies of a sequence number already received (redundant mode's duplicates, if any got past
    /// the relay or the appliance).
    pub duplicates: u64,
    /// Sequence numbers missing between the window's start and the highest received.
    pub lost: u64,
    pub highest_seq: u64,
    /// The longest time between two arrivals in the window, in milliseconds.
    pub max_gap_ms: f64,
    /// Milliseconds since the last arrival (none yet: `None`).
    pub silent_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct SeqWindow {
    /// The highest sequence number received before the window began.
    base: u64,
    seen: HashSet<u64>,
    highest: u64,
    duplicates: u64,
    gaps: Gaps,
}

impl SeqWindow {
    fn arrived(&mut self, seq: u64, now: Instant) {
        self.gaps.arrived(now);
        // A late arrival from before the window belongs to the window before.
        if seq > self.base && !self.seen.insert(seq) {
            self.duplicates += 1;
        }
        self.highest = self.highest.max(seq);
    }

    fn mark(&mut self) {
        self.base = self.highest;
        self.seen.clear();
        self.duplicates = 0;
        self.gaps.mark();
    }

    fn report(&self, now: Instant) -> SeqReport {
        let received = self.seen.len() as u64;
        SeqReport {
            received,
            duplicates: self.duplicates,
            lost: (self.highest.saturating_sub(self.base)).saturating_sub(received),
            highest_seq: self.highest,
            max_gap_ms: self.gaps.largest(now),
            silent_ms: self.gaps.last.map(|t| ms(now - t)),
        }
    }
}

/// The size of one call datagram: a sequence number padded to a voice frame.
const CALL_DATAGRAM: usize = 160;

fn call_datagram(seq: u64) -> [u8; CALL_DATAGRAM] {
    let mut datagram = [0u8; CALL_DATAGRAM];
    datagram[..8].copy_from_slice(&seq.to_be_bytes());
    datagram
}

fn call_seq(datagram: &[u8]) -> Option<u64> {
    datagram
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// Sends numbered datagrams at `rate` a second to whatever `to` holds, until `stop` is set.
fn paced_sender(
    socket: Arc<UdpSocket>,
    to: Arc<Mutex<Option<SocketAddr>>>,
    rate: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<u64>>,
) {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut next = Instant::now();
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(peer) = *lock(&to) {
            seq += 1;
            let _ = socket.send_to(&call_datagram(seq), peer);
            *lock(&sent) = seq;
        }
        next += interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// Reads window commands on stdin until it closes; `report` prints `report()` as a JSON line.
fn command_loop<R: Serialize>(
    mut mark: impl FnMut(),
    mut report: impl FnMut() -> R,
    mut stop: impl FnMut(),
) -> Result<(), TestbedError> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(io("reading commands"))?;
        match line.trim() {
            "mark" => mark(),
            "report" => {
                let text = serde_json::to_string(&report()).map_err(|e| TestbedError::Command {
                    what: "writing the report".into(),
                    stderr: e.to_string(),
                })?;
                writeln!(out, "{text}").map_err(io("writing the report"))?;
                out.flush().map_err(io("writing the report"))?;
            }
            "stop" => stop(),
            _ => {}
        }
    }
    Ok(())
}

/// What the LAN host's side of the call reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// The local address the call is sent from (before any NAT).
    pub local: Option<SocketAddr>,
    /// Datagrams sent so far (the highest sequence number sent).
    pub sent: u64,
    pub received: SeqReport,
}

/// `stayopen-testbed udp-call`: the LAN host's side of a call. Sends `rate` numbered datagrams a
/// second to `to` and records the server's own numbered stream coming back.
pub fn udp_call(to: SocketAddr, rate: u32) -> Result<(), TestbedError> {
    let socket = Arc::new(UdpSocket::bind("0.0.0.0:0").map_err(io("binding the call socket"))?);
    let local = socket.local_addr().ok();
    let window = Arc::new(Mutex::new(SeqWindow::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(0u64));
    {
        let (socket, stop, sent) = (socket.clone(), stop.clone(), sent.clone());
        let to = Arc::new(Mutex::new(Some(to)));
        std::thread::spawn(move || paced_sender(socket, to, rate, stop, sent));
    }
    {
        let window = window.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n) = socket.recv(&mut buf) {
                if let Some(seq) = call_seq(&buf[..n]) {
                    lock(&window).arrived(seq, Instant::now());
                }
            }
        });
    }
    command_loop(
        || lock(&window).mark(),
        || CallReport {
            local,
            sent: *lock(&sent),
            received: lock(&window).report(Instant::now()),
        },
        || stop.store(true, Ordering::Relaxed),
    )
}

/// One source address:port the server saw, with when (milliseconds since the server started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSeen {
    pub address: SocketAddr,
    pub packets: u64,
    pub first_ms: f64,
    pub last_ms: f64,
}

/// What the server's side of the call reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallServerReport {
    /// Every source address:port the LAN host's datagrams came from, in order of first arrival.
    pub sources: Vec<SourceSeen>,
    /// Datagrams the server sent back (the highest sequence number sent).
    pub sent: u64,
    pub received: SeqReport,
}

/// `stayopen-testbed udp-call-server`: the far end of the call. Records each source address:port
/// the call arrives from and sends its own numbered stream, `rate` a second, to the latest one.
pub fn udp_call_server(bind: SocketAddr, rate: u32) -> Result<(), TestbedError> {
    let socket = Arc::new(UdpSocket::bind(bind).map_err(io(format!("binding {bind}")))?);
    let started = Instant::now();
    let window = Arc::new(Mutex::new(SeqWindow::default()));
    let sources: Arc<Mutex<Vec<SourceSeen>>> = Arc::default();
    let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(0u64));
    {
        let (socket, peer, stop, sent) = (socket.clone(), peer.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || paced_sender(socket, peer, rate, stop, sent));
    }
    {
        let (window, sources, peer) = (window.clone(), sources.clone(), peer.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Some(seq) = call_seq(&buf[..n]) else {
                    continue;
                };
                let now = Instant::now();
                let at = ms(now - started);
                lock(&window).arrived(seq, now);
                let mut sources = lock(&sources);
                match sources.iter_mut().find(|s| s.address == from) {
                    Some(seen) => {
                        seen.packets += 1;
                        seen.last_ms = at;
                    }
                    None => sources.push(SourceSeen {
                        address: from,
                        packets: 1,
                        first_ms: at,
                        last_ms: at,
                    }),
                }
                *lock(&peer) = Some(from);
            }
        });
    }
    command_loop(
        || lock(&window).mark(),
        || CallServerReport {
            sources: lock(&sources).clone(),
            sent: *lock(&sent),
            received: lock(&window).report(Instant::now()),
        },
        || stop.store(true, Ordering::Relaxed),
    )
}

/// What the TCP sender reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpSendReport {
    pub local: Option<SocketAddr>,
    /// Bytes handed to the socket in total and in the window.
    pub bytes: u64,
    pub window_bytes: u64,
    /// How the connection ended, if it has: a reset or an error is a session the failover killed.
    pub ended: Option<Ending>,
}

#[derive(Debug, Default)]
struct SendState {
    bytes: u64,
    window_bytes: u64,
    ended: Option<Ending>,
}

/// `stayopen-testbed tcp-send`: one TCP connection to `to`, sending `rate` bytes a second (paced
/// in 5 ms slices; 0: as fast as the path takes them) until `stop`, which closes it cleanly and
/// waits for the server's close.
pub fn tcp_send(to: SocketAddr, rate: u64) -> Result<(), TestbedError> {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .map_err(io(format!("connecting to {to}")))?;
    let local = stream.local_addr().ok();
    // A write blocked this long is a dead session (and `stop` must not wait for it forever).
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(io("setting the write timeout"))?;
    let state = Arc::new(Mutex::new(SendState::default()));
    let stopping = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut stream, state, stopping) = (
            stream.try_clone().map_err(io("cloning the socket"))?,
            state.clone(),
            stopping.clone(),
        );
        std::thread::spawn(move || {
            let slice = Duration::from_millis(5);
            let chunk = if rate == 0 {
                64 * 1024
            } else {
                usize::try_from(rate / 200).unwrap_or(usize::MAX).max(1)
            };
            let data = vec![0x5au8; chunk];
            let mut next = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                match stream.write_all(&data) {
                    Ok(()) => {
                        let mut st = lock(&state);
                        st.bytes += chunk as u64;
                        st.window_bytes += chunk as u64;
                    }
                    Err(e) => {
                        if !stopping.load(Ordering::Relaxed) {
                            lock(&state).ended = Some(Ending::of(&e));
                        }
                        return;
                    }
                }
                if rate > 0 {
                    // After a stall, resume the pace rather than bursting to catch up.
                    next = (next + slice).max(Instant::now() - slice);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
        })
    };
    let mut writer = Some(writer);
    let mut reader = stream.try_clone().map_err(io("cloning the socket"))?;
    command_loop(
        || lock(&state).window_bytes = 0,
        || {
            let st = lock(&state);
            TcpSendReport {
                local,
                bytes: st.bytes,
                window_bytes: st.window_bytes,
                ended: st.ended.clone(),
            }
        },
        || {
            if stopping.swap(true, Ordering::Relaxed) {
                return;
            }
            if let Some(writer) = writer.take() {
                let _ = writer.join();
            }
            if lock(&state).ended.is_some() {
                return;
            }
            let _ = stream.shutdown(Shutdown::Write);
            let _ = reader.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 1024];
            let ending = loop {
                match reader.read(&mut buf) {
                    Ok(0) => break Ending::Eof,
                    Ok(_) => {}
                    Err(e) => break Ending::of(&e),
                }
            };
            lock(&state).ended = Some(ending);
        },
    )
}

/// One connection the TCP sink accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkConnection {
    /// The peer address:port the server saw (after every NAT on the way).
    pub peer: SocketAddr,
    pub accepted_ms: f64,
    pub bytes: u64,
    pub window_bytes: u64,
    /// The longest time between two reads in the window, counting the silence since the last one
    /// while the connection is open.
    pub window_max_gap_ms: f64,
    /// Milliseconds since the sink started of the window's first read and of the last read.
    pub window_first_read_ms: Option<f64>,
    pub last_read_ms: Option<f64>,
    pub ended: Option<Ending>,
    /// Every read: milliseconds since the sink started, and bytes (only in `reads` reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<(f64, u32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    pub connections: Vec<SinkConnection>,
}

#[derive(Debug)]
struct SinkState {
    connection: SinkConnection,
    gaps: Gaps,
}

/// `stayopen-testbed tcp-sink`: accepts TCP connections on `bind` and reads them to the end,
/// recording for each the peer it saw, every read's time and size, and how it ended. Besides the
/// window commands, `reads` prints the report with every read.
pub fn tcp_sink(bind: SocketAddr) -> Result<(), TestbedError> {
    let listener = TcpListener::bind(bind).map_err(io(format!("binding {bind}")))?;
    let started = Instant::now();
    let connections: Arc<Mutex<Vec<SinkState>>> = Arc::default();
    {
        let connections = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let index = {
                    let mut all = lock(&connections);
                    all.push(SinkState {
                        connection: SinkConnection {
                            peer,
                            accepted_ms: ms(started.elapsed()),
                            bytes: 0,
                            window_bytes: 0,
                            window_max_gap_ms: 0.0,
                            window_first_read_ms: None,
                            last_read_ms: None,
                            ended: None,
                            reads: Vec::new(),
                        },
                        gaps: Gaps::default(),
                    });
                    all.len() - 1
                };
                let connections = connections.clone();
                std::thread::spawn(move || sink_connection(stream, index, started, &connections));
            }
        });
    }
    let report = |with_reads: bool| {
        let now = Instant::now();
        SinkReport {
            connections: lock(&connections)
                .iter()
                .map(|s| {
                    let mut c = s.connection.clone();
                    c.window_max_gap_ms = if c.ended.is_some() {
                        ms(s.gaps.max)
                    } else {
                        s.gaps.largest(now)
                    };
                    if !with_reads {
                        c.reads = Vec::new();
                    }
                    c
                })
                .collect(),
        }
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(io("reading commands"))?;
        let text = match line.trim() {
            "mark" => {
                for s in lock(&connections).iter_mut() {
                    s.gaps.mark();
                    s.connection.window_bytes = 0;
                    s.connection.window_first_read_ms = None;
                }
                continue;
            }
            "report" => serde_json::to_string(&report(false)),
            "reads" => serde_json::to_string(&report(true)),
            _ => continue,
        }
        .map_err(|e| TestbedError::Command {
            what: "writing the report".into(),
            stderr: e.to_string(),
        })?;
        writeln!(out, "{text}").map_err(io("writing the report"))?;
        out.flush().map_err(io("writing the report"))?;
    }
    Ok(())
}

fn sink_connection(
    mut stream: TcpStream,
    index: usize,
    started: Instant,
    connections: &Mutex<Vec<SinkState>>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    let ending = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ending::Eof,
            Ok(n) => {
                let now = Instant::now();
                let at = ms(now - started);
                let mut all = lock(connections);
                let Some(s) = all.get_mut(index) else {
                    return;
                };
                s.gaps.arrived(now);
                let c = &mut s.connection;
                c.bytes += n as u64;
                c.window_bytes += n as u64;
                c.window_first_read_ms.get_or_insert(at);
                c.last_read_ms = Some(at);
                c.reads.push((at, u32::try_from(n).unwrap_or(u32::MAX)));
            }
            Err(e) => break Ending::of(&e),
        }
    };
    if let Some(s) = lock(connections).get_mut(index) {
        s.connection.ended = Some(ending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_the_sequence_numbers_missing_below_the_highest_received_and_copies_as_duplicates()
     {
        let t0 = Instant::now();
        let mut window = SeqWindow::default();
        for (i, seq) in [1u64, 2, 3, 5, 5, 8].into_iter().enumerate() {
            window.arrived(seq, t0 + Duration::from_millis(20 * i as u64));
        }
        let report = window.report(t0 + Duration::from_millis(100));
        assert_eq!(report.received, 5);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.lost, 3, "4, 6 and 7 never came");
        assert_eq!(report.highest_seq, 8);
        assert!((report.max_gap_ms - 20.0).abs() < 1e-6);

        window.mark();
        window.arrived(9, t0 + Duration::from_millis(400));
        window.arrived(7, t0 + Duration::from_millis(410));
        let report = window.report(t0 + Duration::from_millis(410));
        assert_eq!(report.received, 1, "a late 7 belongs to the window before");
        assert_eq!(report.lost, 0);
        assert!(
            (report.max_gap_ms - 300.0).abs() < 1e-6,
            "the gap across the mark counts: {report:?}"
        );
    }

    #[test]
    fn the_largest_gap_includes_the_silence_since_the_last_arrival() {
        let t0 = Instant::now();
        let mut gaps = Gaps::default();
        gaps.arrived(t0);
        gaps.arrived(t0 + Duration::from_millis(10));
        assert!((gaps.largest(t0 + Duration::from_millis(510)) - 500.0).abs() < 1e-6);
    }

    #[test]
    fn a_reset_is_told_apart_from_other_errors() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Ending::of(&reset), Ending::Reset);
        let other = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(matches!(Ending::of(&other), Ending::Error(_)));
    }
}
