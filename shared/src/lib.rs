//! Wire types, the MQTT topic scheme and the policy schema shared by the appliance, the cloud and the
//! dashboard.
//!
//! This crate does no I/O and compiles for `wasm32-unknown-unknown`, so the dashboard decodes exactly
//! the types the cloud encodes. Every MQTT payload is an [`envelope::Envelope`]; every device topic is a
//! [`topics::DeviceTopic`] under the per-device prefix `/tenants/{appliance_id}/`.

pub mod alerts;
pub mod api;
pub mod cellular;
pub mod commands;
pub mod compliance;
pub mod delivery;
pub mod envelope;
pub mod events;
pub mod ids;
#[cfg(feature = "mqtt-tls")]
pub mod mqtt_tls;
pub mod policy;
pub mod telemetry;
pub mod topics;
pub mod traceparent;
pub mod tunnel;
pub mod url;

pub use envelope::{Envelope, SCHEMA_VERSION, WireError};
pub use ids::{ApplianceId, MessageId, PracticeId, SiteId, TenantId, UserId};
pub use topics::{Channel, DeviceTopic};

/// The enums stored and sent by name derive the name twice, for serde (JSON) and for strum
/// (`as_str`/`parse`, and the database through `sqlx::Type`); these tests keep the two equal.
#[cfg(test)]
mod enum_names {
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use strum::VariantArray;

    fn names_agree<T>()
    where
        T: VariantArray
            + Serialize
            + DeserializeOwned
            + Into<&'static str>
            + std::str::FromStr
            + Copy
            + PartialEq
            + std::fmt::Debug,
    {
        for &variant in T::VARIANTS {
            let name: &'static str = variant.into();
            let json = serde_json::to_value(variant).expect("serialise");
            assert_eq!(
                json,
                serde_json::Value::String(name.to_owned()),
                "{variant:?}"
            );
            assert!(
                name.parse::<T>().ok() == Some(variant),
                "{name} does not parse back to {variant:?}"
            );
        }
        assert!("not_a_variant".parse::<T>().is_err());
    }

    #[test]
    fn every_named_enum_has_the_same_name_in_json_and_in_the_database() {
        names_agree::<crate::alerts::AlertKind>();
        names_agree::<crate::alerts::Severity>();
        names_agree::<crate::alerts::AlertState>();
        names_agree::<crate::alerts::ChannelKind>();
        names_agree::<crate::alerts::RouteDuring>();
        names_agree::<crate::api::Role>();
        names_agree::<crate::api::PracticeStatus>();
        names_agree::<crate::api::ApiTokenScope>();
        names_agree::<crate::commands::CommandStatus>();
        names_agree::<crate::telemetry::UplinkHealth>();
        names_agree::<crate::policy::PolicyScope>();
        names_agree::<crate::compliance::AppTier>();
        names_agree::<crate::compliance::DrillOutcome>();
        names_agree::<crate::compliance::DrillTrigger>();
        names_agree::<crate::compliance::PeriodKind>();
        names_agree::<crate::compliance::PackageState>();
        names_agree::<crate::tunnel::TunnelMode>();
        names_agree::<crate::tunnel::TunnelState>();
    }
}
