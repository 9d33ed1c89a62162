//! Wire types, the MQTT topic scheme and the policy schema shared by the appliance, the cloud and the
//! dashboard.
//!
//! This crate does no I/O and compiles for `wasm32-unknown-unknown`, so the dashboard decodes exactly
//! the types the cloud encodes. Every MQTT payload is an [`envelope::Envelope`]; every device topic is a
//! [`topics::DeviceTopic`] under the per-device prefix `/tenants/{appliance_id}/`.

pub mod alerts;
pub mod api;
pub mod commands;
pub mod delivery;
pub mod envelope;
pub mod events;
pub mod ids;
#[cfg(feature = "mqtt-tls")]
pub mod mqtt_tls;
pub mod policy;
pub mod telemetry;
pub mod topics;
pub mod url;

pub use envelope::{Envelope, SCHEMA_VERSION, WireError};
pub use ids::{ApplianceId, MessageId, PracticeId, SiteId, TenantId, UserId};
pub use topics::{Channel, DeviceTopic};
