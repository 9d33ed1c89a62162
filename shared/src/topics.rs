//! The MQTT topic scheme.
//!
//! Every device topic lives under `/tenants/{appliance_id}/`, the id written as 32 hex digits
//! without hyphens. The leading slash and the word `tenants` are the form rumqttd's
//! `validate-tenant-prefix` feature enforces with the Subject O of the device's certificate (which
//! it requires to be alphanumeric, hence no hyphens), so a broker can confine each device to its own
//! prefix: a device can neither publish as another device nor read another device's policy or
//! commands. The cloud maps appliance to MSP tenant in its database.

use std::fmt;

use crate::ids::ApplianceId;

/// The first path segment of every device topic (after the leading slash).
pub const TENANTS_ROOT: &str = "tenants";

/// What a topic carries, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Device → cloud: periodic [`crate::telemetry::Telemetry`].
    Telemetry,
    /// Device → cloud: [`crate::events::ApplianceEvent`]s (failover, failback, drills …).
    Events,
    /// Device → cloud: [`crate::telemetry::Presence`], retained; the broker publishes the
    /// device's last will (offline) here when its connection drops.
    Status,
    /// Cloud → device: the [`crate::policy::Policy`] the device must apply, retained.
    Policy,
    /// Cloud → device: [`crate::commands::DeviceCommand`]s (start a drill, fail back now …).
    Commands,
    /// Device → cloud: [`crate::commands::CommandResult`]s acknowledging and finishing commands.
    CommandResults,
    /// Cloud → device: [`crate::delivery::Ack`]s naming the messages the cloud has committed to its
    /// database, so the appliance can drop them from its outbox.
    Acks,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Telemetry,
        Channel::Events,
        Channel::Status,
        Channel::Policy,
        Channel::Commands,
        Channel::CommandResults,
        Channel::Acks,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Telemetry => "telemetry",
            Channel::Events => "events",
            Channel::Status => "status",
            Channel::Policy => "policy",
            Channel::Commands => "commands",
            Channel::CommandResults => "command-results",
            Channel::Acks => "acks",
        }
    }

    fn parse(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == segment)
    }

    /// True for the channels a device publishes on (and the cloud ingests).
    pub const fn is_device_to_cloud(self) -> bool {
        !matches!(self, Channel::Policy | Channel::Commands | Channel::Acks)
    }

    /// The channels the cloud publishes on and every appliance subscribes to.
    pub const CLOUD_TO_DEVICE: [Channel; 3] = [Channel::Policy, Channel::Commands, Channel::Acks];

    /// The filter matching this channel of every device: `/tenants/+/{channel}`.
    pub fn all_devices_filter(self) -> String {
        format!("/{TENANTS_ROOT}/+/{}", self.as_str())
    }
}

/// A parsed device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceTopic {
    pub appliance_id: ApplianceId,
    pub channel: Channel,
}

impl DeviceTopic {
    pub const fn new(appliance_id: ApplianceId, channel: Channel) -> Self {
        Self {
            appliance_id,
            channel,
        }
    }

    /// The prefix every topic of this device starts with: `/tenants/{appliance_id}/`.
    pub fn prefix(appliance_id: ApplianceId) -> String {
        format!("/{TENANTS_ROOT}/{}/", Self::segment(appliance_id))
    }

    /// How an appliance id is written in topics and in its certificate's Subject O.
    pub fn segment(appliance_id: ApplianceId) -> String {
        appliance_id.0.simple().to_string()
    }

    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix('/')
            .and_then(|t| t.strip_prefix(TENANTS_ROOT))
            .and_then(|t| t.strip_prefix('/'))
            .ok_or_else(|| TopicError::NotADeviceTopic(topic.to_owned()))?;
        let mut segments = rest.split('/');
        let (Some(id), Some(channel), None) = (segments.next(), segments.next(), segments.next())
        else {
            return Err(TopicError::NotADeviceTopic(topic.to_owned()));
        };
        let appliance_id = id
            .parse()
            .map_err(|_| TopicError::BadApplianceId(id.to_owned()))?;
        let channel = Channel::parse(channel)
            .ok_or_else(|| TopicError::UnknownChannel(channel.to_owned()))?;
        Ok(Self {
            appliance_id,
            channel,
        })
    }
}

impl fmt::Display for DeviceTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            Self::prefix(self.appliance_id),
            self.channel.as_str()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not of the form /tenants/{{appliance_id}}/{{channel}}")]
    NotADeviceTopic(String),
    #[error("topic segment {0:?} is not an appliance id")]
    BadApplianceId(String),
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    proptest! {
        #[test]
        fn every_device_topic_round_trips_through_its_string_form(bytes in any::<[u8; 16]>(), idx in 0usize..7) {
            let topic = DeviceTopic::new(ApplianceId(Uuid::from_bytes(bytes)), Channel::ALL[idx]);
            prop_assert_eq!(DeviceTopic::parse(&topic.to_string()), Ok(topic));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".*") {
            let _ = DeviceTopic::parse(&s);
        }
    }

    #[test]
    fn a_device_topic_starts_with_the_device_prefix() {
        let id = ApplianceId(Uuid::nil());
        let topic = DeviceTopic::new(id, Channel::Telemetry).to_string();
        assert!(topic.starts_with(&DeviceTopic::prefix(id)));
        assert_eq!(topic, "/tenants/00000000000000000000000000000000/telemetry");
        assert!(
            DeviceTopic::segment(id).chars().all(char::is_alphanumeric),
            "rumqttd accepts only alphanumeric tenant ids"
        );
    }

    #[test]
    fn topics_outside_the_scheme_are_rejected_with_a_reason() {
        assert!(matches!(
            DeviceTopic::parse("tenants/x/telemetry"),
            Err(TopicError::NotADeviceTopic(_))
        ));
        assert!(matches!(
            DeviceTopic::parse("/tenants/not-a-uuid/telemetry"),
            Err(TopicError::BadApplianceId(_))
        ));
        assert!(matches!(
            DeviceTopic::parse("/tenants/00000000-0000-0000-0000-000000000000/secrets"),
            Err(TopicError::UnknownChannel(_))
        ));
        assert!(matches!(
            DeviceTopic::parse("/tenants/00000000-0000-0000-0000-000000000000/telemetry/extra"),
            Err(TopicError::NotADeviceTopic(_))
        ));
    }

    #[test]
    fn the_ingest_filter_covers_every_device() {
        assert_eq!(
            Channel::Telemetry.all_devices_filter(),
            "/tenants/+/telemetry"
        );
    }
}
