//! The envelope every MQTT payload travels in.
//!
//! The envelope carries what the cloud needs before it trusts the body: the schema version (so an old
//! cloud rejects a newer device's payload clearly instead of misreading it), a message id (so QoS 1
//! redelivery and offline-buffer replay are stored once), the appliance id (checked against the topic),
//! and the sent-at time (so buffered telemetry is stored at the time it describes).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{ApplianceId, MessageId};

/// The schema version this build writes and accepts.
pub const SCHEMA_VERSION: u16 = 1;

/// Payloads larger than this are rejected before parsing; a telemetry message is well under 4 KiB.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    pub schema_version: u16,
    pub message_id: MessageId,
    pub appliance_id: ApplianceId,
    pub sent_at: DateTime<Utc>,
    pub body: T,
    /// The W3C `traceparent` of the trace this message starts (events only; see
    /// [`crate::traceparent`]). Absent in older agents' messages and omitted when `None`, so an
    /// envelope without it is byte-for-byte what older clouds accept. An older cloud refuses an
    /// envelope that carries it (unknown field): upgrade the cloud before the appliances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Only the header, read first so a wrong schema version is reported as such rather than as whatever
/// body field a future schema renamed.
#[derive(Deserialize)]
struct Header {
    schema_version: u16,
}

impl<T> Envelope<T> {
    pub fn new(
        message_id: MessageId,
        appliance_id: ApplianceId,
        sent_at: DateTime<Utc>,
        body: T,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            message_id,
            appliance_id,
            sent_at,
            body,
            traceparent: None,
        }
    }

    /// The same envelope carrying `traceparent`.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }
}

impl<T: Serialize> Envelope<T> {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Decodes and validates a payload. Never panics, whatever the bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(WireError::TooLarge(payload.len()));
        }
        let header: Header =
            serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
        if header.schema_version != SCHEMA_VERSION {
            return Err(WireError::UnsupportedSchema(header.schema_version));
        }
        serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

/// Why a payload was rejected. The variant names are also the labels of the cloud's rejection
/// counters, so they stay stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("unsupported schema version {0} (this build speaks {SCHEMA_VERSION})")]
    UnsupportedSchema(u16),
}

impl WireError {
    pub const fn reason(&self) -> &'static str {
        match self {
            WireError::TooLarge(_) => "too_large",
            WireError::Malformed(_) => "malformed",
            WireError::UnsupportedSchema(_) => "unsupported_schema",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn sample() -> Envelope<Telemetry> {
        Envelope::new(
            MessageId(Uuid::from_u128(1)),
            ApplianceId(Uuid::from_u128(2)),
            DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            Telemetry {
                active_uplink: Some("wan0".into()),
                uplinks: vec![],
                policy_version: None,
                samples: None,
                outbox: None,
                apps: Vec::new(),
                tunnel: None,
            },
        )
    }

    #[test]
    fn an_envelope_round_trips() {
        let env = sample();
        assert_eq!(Envelope::<Telemetry>::decode(&env.encode()), Ok(env));
    }

    #[test]
    fn a_newer_schema_version_is_rejected_as_such() {
        let mut value = serde_json::to_value(sample()).unwrap_or_default();
        value["schema_version"] = 2.into();
        value["body"] = serde_json::json!({"renamed": true});
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        assert_eq!(
            Envelope::<Telemetry>::decode(&bytes),
            Err(WireError::UnsupportedSchema(2))
        );
    }

    #[test]
    fn garbage_and_missing_fields_are_malformed() {
        assert!(matches!(
            Envelope::<Telemetry>::decode(b"{not json"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::<Telemetry>::decode(br#"{"schema_version":1}"#),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_payloads_are_rejected_before_parsing() {
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            Envelope::<Telemetry>::decode(&big),
            Err(WireError::TooLarge(MAX_PAYLOAD_BYTES + 1))
        );
    }

    #[test]
    fn an_envelope_without_a_traceparent_is_the_old_format_in_both_directions() {
        // Old agent → new cloud: no traceparent field decodes as None.
        let old = br#"{"schema_version":1,"message_id":"00000000-0000-0000-0000-000000000001","appliance_id":"00000000-0000-0000-0000-000000000002","sent_at":"2023-11-14T22:13:20Z","body":{"active_uplink":"wan0","uplinks":[]}}"#;
        let decoded = Envelope::<Telemetry>::decode(old).expect("an old agent's envelope");
        assert_eq!(decoded.traceparent, None);
        // New agent without a traceparent → old cloud: the field is not written at all.
        let encoded = serde_json::to_value(sample()).unwrap_or_default();
        assert!(encoded.get("traceparent").is_none(), "{encoded}");
    }

    #[test]
    fn a_traceparent_travels_in_the_envelope() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let env = sample().with_traceparent(Some(tp.clone()));
        let decoded = Envelope::<Telemetry>::decode(&env.encode()).expect("round trip");
        assert_eq!(decoded.traceparent, Some(tp));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::<Telemetry>::decode(&bytes);
        }
    }
}
