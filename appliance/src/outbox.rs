//! The durable outbox: every event, telemetry sample and command result is on disk before it is
//! published, and stays there until the cloud acknowledges that it is stored.
//!
//! Design: the MQTT connection runs through the uplink that has just failed at exactly the moment
//! the most important event (the failover) is produced, so the broker's PUBACK is not enough — a
//! message is done only when the cloud's [`Ack`](stayopen_shared::delivery::Ack), sent after its
//! database commit, names it. Messages are kept in sequence order and resent oldest first after a
//! reconnect, an agent restart or a power cut; the cloud stores each message id once, so a resend
//! is always safe.
//!
//! Storage: [redb](https://docs.rs/redb), an embedded pure-Rust key-value store with ACID
//! transactions and crash-safe copy-on-write commits (checksummed, so a torn write on power loss
//! rolls back to the last commit instead of corrupting the file). Chosen over SQLite (a C build
//! for one table, and SQL for a queue) and a hand-written segment log (whose crash recovery and
//! compaction we would have to write and test ourselves). Three tables: `entries` (sequence →
//! kind, message id, payload), `by_id` (message id → sequence, so an ack finds its entry), and
//! `meta` (counters that survive restarts).
//!
//! Fsync policy: an append commits with [`Durability::Immediate`] (fsync before `append` returns,
//! so nothing is published that a power cut could lose); an acknowledgement commits with
//! [`Durability::None`] (no fsync: a power cut may bring acknowledged messages back, which are
//! then resent and de-duplicated by the cloud — a duplicate send, never a loss). The next append's
//! fsync makes earlier acknowledgements durable too.
//!
//! Bound: the stored payload bytes are kept under a configured limit (64 MB by default, about a
//! month of telemetry at the default cadence). When an append would pass it, space is made in this
//! order: (1) telemetry is rolled up — adjacent samples merged pairwise into coarser ones
//! ([`Telemetry::roll_up`]), oldest first, which halves the telemetry held per pass; (2) the
//! oldest telemetry is dropped; (3) the oldest events and command results are dropped. Everything
//! given up is counted (kept in `meta`) and reported in every telemetry message.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use stayopen_shared::delivery::OutboxReport;
use stayopen_shared::telemetry::Telemetry;
use stayopen_shared::{Channel, Envelope, MessageId};
use uuid::Uuid;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const BY_ID: TableDefinition<u128, u64> = TableDefinition::new("by_id");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const NEXT_SEQ: &str = "next_seq";
const PENDING_BYTES: &str = "pending_bytes";
const ROLLED_UP: &str = "telemetry_rolled_up";
const TELEMETRY_DROPPED: &str = "telemetry_dropped";
const EVENTS_DROPPED: &str = "events_dropped";

/// The default bound on stored payload bytes.
pub const DEFAULT_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// What a stored message is, which decides its channel and how long it is kept when space runs
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Event,
    CommandResult,
}

impl Kind {
    const fn tag(self) -> u8 {
        match self {
            Kind::Telemetry => 1,
            Kind::Event => 2,
            Kind::CommandResult => 3,
        }
    }

    const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Kind::Telemetry),
            2 => Some(Kind::Event),
            3 => Some(Kind::CommandResult),
            _ => None,
        }
    }

    pub const fn channel(self) -> Channel {
        match self {
            Kind::Telemetry => Channel::Telemetry,
            Kind::Event => Channel::Events,
            Kind::CommandResult => Channel::CommandResults,
        }
    }
}

/// One message waiting for the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub kind: Kind,
    pub message_id: MessageId,
    /// The encoded [`Envelope`], exactly as published.
    pub payload: Vec<u8>,
}

/// Header bytes stored before each payload: kind tag and message id.
const HEADER: usize = 1 + 16;

impl Entry {
    fn encode(kind: Kind, message_id: MessageId, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.push(kind.tag());
        bytes.extend_from_slice(message_id.0.as_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn decode(seq: u64, bytes: &[u8]) -> Option<Self> {
        let kind = Kind::from_tag(*bytes.first()?)?;
        let id: [u8; 16] = bytes.get(1..HEADER)?.try_into().ok()?;
        Some(Self {
            seq,
            kind,
            message_id: MessageId(Uuid::from_bytes(id)),
            payload: bytes[HEADER..].to_vec(),
        })
    }

    /// The bytes this entry counts against the bound.
    fn size(&self) -> u64 {
        (HEADER + self.payload.len()) as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Store { path: PathBuf, source: redb::Error },
    #[error("a message of {size} bytes cannot fit an outbox limited to {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
}

/// The on-disk outbox. Not `Sync` by design: the cloud link keeps it behind one mutex so appends
/// and acknowledgements are serialised.
pub struct Outbox {
    db: Database,
    path: PathBuf,
    limit_bytes: u64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.path)
            .field("limit_bytes", &self.limit_bytes)
            .finish_non_exhaustive()
    }
}

fn meta_get(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, redb::Error> {
    Ok(table.get(key)?.map_or(0, |v| v.value()))
}

fn meta_add(
    table: &mut redb::Table<&'static str, u64>,
    key: &str,
    delta: i128,
) -> Result<(), redb::Error> {
    let current = i128::from(meta_get(table, key)?);
    let next = u64::try_from((current + delta).max(0)).unwrap_or(u64::MAX);
    table.insert(key, next)?;
    Ok(())
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`. A file left by a crash is recovered by redb to its
    /// last committed state.
    pub fn open(path: &Path, limit_bytes: u64) -> Result<Self, OutboxError> {
        let store = |source: redb::Error| OutboxError::Store {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| store(redb::Error::Io(e)))?;
        }
        let db = Database::create(path).map_err(|e| store(e.into()))?;
        let outbox = Self {
            db,
            path: path.to_owned(),
            limit_bytes,
        };
        // Create the tables once so readers never meet a missing table.
        outbox
            .write(Durability::Immediate, |tx| {
                tx.open_table(ENTRIES)?;
                tx.open_table(BY_ID)?;
                tx.open_table(META)?;
                Ok(())
            })
            .map_err(store)?;
        Ok(outbox)
    }

    fn write<T>(
        &self,
        durability: Durability,
        work: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, redb::Error> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        let value = work(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    fn error(&self, source: redb::Error) -> OutboxError {
        OutboxError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores a message durably (fsync) and returns its sequence number. Makes room first when the
    /// bound would be passed (see the module doc).
    pub fn append(
        &self,
        kind: Kind,
        message_id: MessageId,
        payload: &[u8],
    ) -> Result<u64, OutboxError> {
        let bytes = Entry::encode(kind, message_id, payload);
        let size = bytes.len() as u64;
        if size > self.limit_bytes {
            return Err(OutboxError::TooLarge {
                size,
                limit: self.limit_bytes,
            });
        }
        let limit = self.limit_bytes;
        self.write(Durability::Immediate, |tx| {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut by_id = tx.open_table(BY_ID)?;
            let mut meta = tx.open_table(META)?;
            if meta_get(&meta, PENDING_BYTES)? + size > limit {
                make_room(&mut entries, &mut by_id, &mut meta, limit - size)?;
            }
            let seq = meta_get(&meta, NEXT_SEQ)?.max(1);
            entries.insert(seq, bytes.as_slice())?;
            by_id.insert(message_id.0.as_u128(), seq)?;
            meta.insert(NEXT_SEQ, seq + 1)?;
            meta_add(&mut meta, PENDING_BYTES, i128::from(size))?;
            Ok(seq)
        })
        .map_err(|e| self.error(e))
    }

    /// Up to `max` entries with a sequence number above `after`, oldest first.
    pub fn after(&self, after: u64, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let read = || -> Result<Vec<Entry>, redb::Error> {
            let tx = self.db.begin_read()?;
            let entries = tx.open_table(ENTRIES)?;
            let mut found = Vec::new();
            for item in entries.range(after.saturating_add(1)..)? {
                if found.len() >= max {
                    break;
                }
                let (seq, bytes) = item?;
                if let Some(entry) = Entry::decode(seq.value(), bytes.value()) {
                    found.push(entry);
                }
            }
            Ok(found)
        };
        read().map_err(|e| self.error(e))
    }

    /// How many entries with a sequence number up to `through` are held, counting at most `cap`.
    pub fn held_through(&self, through: u64, cap: usize) -> Result<usize, OutboxError> {
        let read = || -> Result<usize, redb::Error> {
            let tx = self.db.begin_read()?;
            let entries = tx.open_table(ENTRIES)?;
            Ok(entries.range(..=through)?.take(cap).count())
        };
        read().map_err(|e| self.error(e))
    }

    /// The oldest entry's sequence number, if any.
    pub fn oldest(&self) -> Result<Option<u64>, OutboxError> {
        let read = || -> Result<Option<u64>, redb::Error> {
            let tx = self.db.begin_read()?;
            let entries = tx.open_table(ENTRIES)?;
            Ok(entries.first()?.map(|(seq, _)| seq.value()))
        };
        read().map_err(|e| self.error(e))
    }

    /// Removes the acknowledged messages; ids not (or no longer) held are ignored. Returns how
    /// many were removed. Not fsynced: see the module doc.
    pub fn acknowledge(&self, ids: &[MessageId]) -> Result<usize, OutboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(Durability::None, |tx| {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut by_id = tx.open_table(BY_ID)?;
            let mut meta = tx.open_table(META)?;
            let mut removed = 0;
            let mut freed: i128 = 0;
            for id in ids {
                let Some(seq) = by_id.remove(id.0.as_u128())?.map(|s| s.value()) else {
                    continue;
                };
                if let Some(bytes) = entries.remove(seq)? {
                    freed += bytes.value().len() as i128;
                    removed += 1;
                }
            }
            meta_add(&mut meta, PENDING_BYTES, -freed)?;
            Ok(removed)
        })
        .map_err(|e| self.error(e))
    }

    /// What the outbox holds and has given up.
    pub fn report(&self) -> Result<OutboxReport, OutboxError> {
        let read = || -> Result<OutboxReport, redb::Error> {
            let tx = self.db.begin_read()?;
            let entries = tx.open_table(ENTRIES)?;
            let meta = tx.open_table(META)?;
            Ok(OutboxReport {
                pending: redb::ReadableTableMetadata::len(&entries)?,
                pending_bytes: meta_get(&meta, PENDING_BYTES)?,
                telemetry_rolled_up: meta_get(&meta, ROLLED_UP)?,
                telemetry_dropped: meta_get(&meta, TELEMETRY_DROPPED)?,
                events_dropped: meta_get(&meta, EVENTS_DROPPED)?,
            })
        };
        read().map_err(|e| self.error(e))
    }

    /// The configured bound on stored bytes.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }
}

/// Frees space until at most `target` bytes are held: rolls telemetry up pairwise (oldest first),
/// then drops the oldest telemetry, then the oldest of everything else. Runs inside the append's
/// transaction, so a crash leaves either the old or the new state.
fn make_room(
    entries: &mut redb::Table<u64, &[u8]>,
    by_id: &mut redb::Table<u128, u64>,
    meta: &mut redb::Table<&'static str, u64>,
    target: u64,
) -> Result<(), redb::Error> {
    let held = |meta: &redb::Table<&'static str, u64>| meta_get(meta, PENDING_BYTES);

    // 1. Roll telemetry up: merge each pair of telemetry samples (in sequence order) into the
    //    later one, which keeps its message id and time, so a sample the cloud already stored is
    //    not stored twice.
    let telemetry: Vec<Entry> = entries
        .iter()?
        .filter_map(|item| item.ok())
        .filter_map(|(seq, bytes)| Entry::decode(seq.value(), bytes.value()))
        .filter(|e| e.kind == Kind::Telemetry)
        .collect();
    for pair in telemetry.chunks_exact(2) {
        if held(meta)? <= target {
            return Ok(());
        }
        let (earlier, later) = (&pair[0], &pair[1]);
        let (Ok(a), Ok(b)) = (
            Envelope::<Telemetry>::decode(&earlier.payload),
            Envelope::<Telemetry>::decode(&later.payload),
        ) else {
            continue;
        };
        let merged = Envelope::new(
            b.message_id,
            b.appliance_id,
            b.sent_at,
            Telemetry::roll_up(&a.body, &b.body),
        )
        .encode();
        let merged = Entry::encode(Kind::Telemetry, later.message_id, &merged);
        entries.remove(earlier.seq)?;
        by_id.remove(earlier.message_id.0.as_u128())?;
        entries.insert(later.seq, merged.as_slice())?;
        let delta = merged.len() as i128 - earlier.size() as i128 - later.size() as i128;
        meta_add(meta, PENDING_BYTES, delta)?;
        meta_add(meta, ROLLED_UP, 1)?;
    }

    // 2. and 3. Drop the oldest telemetry, then the oldest of the rest.
    for drop_kind in [Some(Kind::Telemetry), None] {
        let victims: Vec<Entry> = entries
            .iter()?
            .filter_map(|item| item.ok())
            .filter_map(|(seq, bytes)| Entry::decode(seq.value(), bytes.value()))
            .filter(|e| drop_kind.is_none_or(|k| e.kind == k))
            .collect();
        for victim in victims {
            if held(meta)? <= target {
                return Ok(());
            }
            entries.remove(victim.seq)?;
            by_id.remove(victim.message_id.0.as_u128())?;
            meta_add(meta, PENDING_BYTES, -(victim.size() as i128))?;
            if victim.kind == Kind::Telemetry {
                // Counted in reporting windows, so a dropped rolled-up sample counts for all of
                // the windows it covered.
                let windows = Envelope::<Telemetry>::decode(&victim.payload)
                    .map_or(1, |e| e.body.sample_count());
                meta_add(meta, TELEMETRY_DROPPED, i128::from(windows))?;
            } else {
                meta_add(meta, EVENTS_DROPPED, 1)?;
            }
            tracing::warn!(seq = victim.seq, kind = ?victim.kind, "outbox full: dropped the oldest message");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use stayopen_shared::ApplianceId;
    use stayopen_shared::events::{ApplianceEvent, EventKind};
    use stayopen_shared::telemetry::{UplinkHealth, UplinkTelemetry};

    fn telemetry(n: u128) -> (MessageId, Vec<u8>) {
        let id = MessageId(Uuid::from_u128(n));
        let body = Telemetry {
            active_uplink: Some("fiber".into()),
            uplinks: vec![UplinkTelemetry {
                name: "fiber".into(),
                priority: 0,
                metered: false,
                health: UplinkHealth::Up,
                rtt_ms: Some(n as f64),
                loss_pct: 0.0,
                rx_bytes: 0,
                tx_bytes: 0,
                cellular: None,
            }],
            policy_version: None,
            samples: None,
            outbox: None,
            apps: Vec::new(),
            tunnel: None,
        };
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000 + n as i64, 0).unwrap_or_default();
        (
            id,
            Envelope::new(id, ApplianceId(Uuid::nil()), at, body).encode(),
        )
    }

    fn event(n: u128) -> (MessageId, Vec<u8>) {
        let id = MessageId(Uuid::from_u128(n));
        let body = ApplianceEvent {
            kind: EventKind::Failover,
            uplink: None,
            from: Some("fiber".into()),
            to: Some("lte".into()),
            reason: format!("event {n}"),
            drill: None,
        };
        (
            id,
            Envelope::new(id, ApplianceId(Uuid::nil()), Utc::now(), body).encode(),
        )
    }

    #[test]
    fn a_resent_event_keeps_the_traceparent_it_was_stored_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = MessageId(Uuid::from_u128(7));
        let traceparent = crate::cloud_link::new_traceparent();
        let (_, payload) = event(7);
        let payload = Envelope::<ApplianceEvent>::decode(&payload)
            .expect("decode")
            .with_traceparent(Some(traceparent.clone()))
            .encode();
        open(&dir, DEFAULT_LIMIT_BYTES)
            .append(Kind::Event, id, &payload)
            .expect("append");
        // Sent once, not acknowledged, the agent restarts: the pump reads the stored bytes again.
        for _attempt in 0..2 {
            let outbox = open(&dir, DEFAULT_LIMIT_BYTES);
            let entries = outbox.after(0, 10).expect("read");
            let resent = Envelope::<ApplianceEvent>::decode(&entries[0].payload).expect("decode");
            assert_eq!(resent.traceparent.as_deref(), Some(traceparent.as_str()));
        }
    }

    fn open(dir: &tempfile::TempDir, limit: u64) -> Outbox {
        Outbox::open(&dir.path().join("outbox.redb"), limit).expect("open")
    }

    #[test]
    fn messages_come_back_in_the_order_they_were_appended_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(&dir, DEFAULT_LIMIT_BYTES);
        let mut ids = Vec::new();
        for n in 1..=5 {
            let (id, payload) = event(n);
            outbox.append(Kind::Event, id, &payload).expect("append");
            ids.push(id);
        }
        let all = outbox.after(0, 100).expect("read");
        assert_eq!(all.iter().map(|e| e.message_id).collect::<Vec<_>>(), ids);
        assert_eq!(outbox.after(all[1].seq, 2).expect("read").len(), 2);
        assert_eq!(outbox.acknowledge(&[ids[0], ids[2]]).expect("ack"), 2);
        assert_eq!(
            outbox.acknowledge(&[ids[0]]).expect("ack"),
            0,
            "acks are idempotent"
        );
        let left: Vec<_> = outbox
            .after(0, 100)
            .expect("read")
            .into_iter()
            .map(|e| e.message_id)
            .collect();
        assert_eq!(left, vec![ids[1], ids[3], ids[4]]);
        assert_eq!(outbox.report().expect("report").pending, 3);
    }

    #[test]
    fn what_was_not_acknowledged_survives_reopening_and_new_messages_sort_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, payload) = event(1);
        {
            let outbox = open(&dir, DEFAULT_LIMIT_BYTES);
            outbox.append(Kind::Event, first, &payload).expect("append");
            let (acked, payload) = event(2);
            outbox.append(Kind::Event, acked, &payload).expect("append");
            outbox.acknowledge(&[acked]).expect("ack");
        }
        let outbox = open(&dir, DEFAULT_LIMIT_BYTES);
        let (third, payload) = event(3);
        outbox.append(Kind::Event, third, &payload).expect("append");
        let ids: Vec<_> = outbox
            .after(0, 10)
            .expect("read")
            .into_iter()
            .map(|e| e.message_id)
            .collect();
        assert_eq!(ids, vec![first, third]);
        let report = outbox.report().expect("report");
        assert_eq!(report.pending, 2);
        assert!(report.pending_bytes > 0);
    }

    #[test]
    fn a_full_outbox_rolls_telemetry_up_before_it_drops_anything_and_keeps_every_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = telemetry(0).1.len() as u64 + HEADER as u64;
        let outbox = open(&dir, one * 40);
        let mut events = Vec::new();
        for n in 1..=200u128 {
            if n % 20 == 0 {
                let (id, payload) = event(10_000 + n);
                outbox.append(Kind::Event, id, &payload).expect("append");
                events.push(id);
            } else {
                let (id, payload) = telemetry(n);
                outbox
                    .append(Kind::Telemetry, id, &payload)
                    .expect("append");
            }
            let report = outbox.report().expect("report");
            assert!(report.pending_bytes <= one * 40, "bound kept: {report:?}");
        }
        let report = outbox.report().expect("report");
        assert!(report.telemetry_rolled_up > 0, "{report:?}");
        assert_eq!(report.events_dropped, 0, "{report:?}");
        let held = outbox.after(0, 1000).expect("read");
        let held_events: Vec<_> = held
            .iter()
            .filter(|e| e.kind == Kind::Event)
            .map(|e| e.message_id)
            .collect();
        assert_eq!(held_events, events, "every event kept, in order");
        // The rolled-up samples still describe the whole outage: their windows add up.
        let windows: u32 = held
            .iter()
            .filter(|e| e.kind == Kind::Telemetry)
            .map(|e| {
                Envelope::<Telemetry>::decode(&e.payload)
                    .expect("telemetry")
                    .body
                    .sample_count()
            })
            .sum();
        let telemetry_appended = 190;
        assert_eq!(
            u64::from(windows) + report.telemetry_dropped,
            telemetry_appended,
            "every sample is either in a rolled-up window or counted as dropped: {report:?}"
        );
    }

    #[test]
    fn when_only_events_remain_the_oldest_events_go_and_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = event(1).1.len() as u64 + HEADER as u64;
        let outbox = open(&dir, one * 10 + one / 2);
        for n in 1..=15 {
            let (id, payload) = event(n);
            outbox.append(Kind::Event, id, &payload).expect("append");
        }
        let report = outbox.report().expect("report");
        assert_eq!(report.pending, 10);
        assert_eq!(report.events_dropped, 5);
        let first = outbox.after(0, 1).expect("read");
        assert_eq!(first[0].message_id, event(6).0, "the oldest went first");
    }

    #[test]
    fn a_message_larger_than_the_whole_outbox_is_refused_not_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = open(&dir, 64);
        let (id, payload) = event(1);
        assert!(matches!(
            outbox.append(Kind::Event, id, &payload),
            Err(OutboxError::TooLarge { .. })
        ));
        assert_eq!(outbox.report().expect("report").pending, 0);
    }
}
