//! The local record of every decision: one JSON object per line, readable without the cloud.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use stayopen_shared::events::ApplianceEvent;

#[derive(Debug)]
pub struct EventsLog {
    path: PathBuf,
    file: std::fs::File,
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    event: &'a ApplianceEvent,
}

impl EventsLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    pub fn append(&mut self, at: DateTime<Utc>, event: &ApplianceEvent) {
        let line = Line {
            ts: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            event,
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = self.file.write_all(&bytes).and_then(|()| self.file.flush()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the events file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stayopen_shared::events::EventKind;

    #[test]
    fn each_event_is_one_json_line_with_a_millisecond_utc_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let mut log = EventsLog::open(&path).expect("open");
        let at = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).unwrap_or_default();
        log.append(
            at,
            &ApplianceEvent {
                kind: EventKind::Failover,
                uplink: None,
                from: Some("fiber".into()),
                to: Some("lte".into()),
                reason: "active uplink down".into(),
                drill: None,
            },
        );
        let text = std::fs::read_to_string(&path).expect("read");
        let value: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
        assert_eq!(value["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["kind"], "failover");
        assert_eq!(value["from"], "fiber");
        assert_eq!(value["to"], "lte");
    }
}
