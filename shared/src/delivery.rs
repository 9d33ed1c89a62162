//! Delivery guarantees between an appliance and the cloud.
//!
//! Design: the broker's PUBACK only says the broker has the message; the appliance needs to know the
//! cloud has *stored* it. Every message an appliance sends for the record (events, telemetry,
//! command results) stays in its on-disk outbox until an [`Ack`] naming its message id arrives on
//! the appliance's `acks` channel. The cloud publishes an ack only after the database transaction
//! that stored the message (or found it already stored) has committed, and also for a message it
//! refuses for good, so a message is never kept forever. Resending is therefore always safe: the
//! cloud stores each message id once.

use serde::{Deserialize, Serialize};

use crate::ids::MessageId;

/// The most message ids one ack names; a larger batch is split. Keeps an ack near 10 KiB (a message
/// id is 39 bytes of JSON), far below the payload limit.
pub const MAX_IDS_PER_ACK: usize = 256;

/// The cloud → appliance acknowledgement of messages it has finished with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Committed to the database (now or by an earlier copy of the same message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored: Vec<MessageId>,
    /// Refused for good (for example a payload the cloud cannot decode); resending cannot help.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<MessageId>,
}

impl Ack {
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty() && self.rejected.is_empty()
    }

    pub fn len(&self) -> usize {
        self.stored.len() + self.rejected.len()
    }
}

/// What an appliance's outbox holds and what it had to give up, reported with every telemetry
/// message so the cloud can show that nothing was lost (or exactly what was).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxReport {
    /// Messages waiting for the cloud's acknowledgement.
    pub pending: u64,
    /// Their stored size in bytes.
    pub pending_bytes: u64,
    /// Telemetry samples merged into coarser ones because the outbox was full.
    pub telemetry_rolled_up: u64,
    /// Telemetry reporting windows dropped because the outbox was full (after rolling up could not
    /// help); a dropped rolled-up sample counts every window it covered.
    pub telemetry_dropped: u64,
    /// Events and command results dropped because the outbox was full of them alone.
    pub events_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn an_ack_round_trips_and_omits_empty_lists() {
        let ack = Ack {
            stored: vec![MessageId(Uuid::from_u128(7))],
            rejected: vec![],
        };
        let json = serde_json::to_string(&ack).unwrap_or_default();
        assert!(!json.contains("rejected"), "{json}");
        assert_eq!(serde_json::from_str::<Ack>(&json).ok(), Some(ack));
    }

    #[test]
    fn the_largest_ack_fits_the_payload_limit_with_room_to_spare() {
        let ack = Ack {
            stored: (0..MAX_IDS_PER_ACK as u128)
                .map(|i| MessageId(Uuid::from_u128(i)))
                .collect(),
            rejected: vec![],
        };
        let envelope = crate::Envelope::new(
            MessageId(Uuid::nil()),
            crate::ApplianceId(Uuid::nil()),
            chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            ack,
        );
        assert!(envelope.encode().len() < crate::envelope::MAX_PAYLOAD_BYTES / 4);
    }
}
