//! The infrastructure edges the domain stands on. Nothing here knows about tenants' business
//! rules or HTTP.
//!
//! - [`config`]: typed configuration from a TOML file plus `STAYOPEN_…` environment variables.
//! - [`db`]: the PostgreSQL pool, the embedded migrations, and tenant-scoped transactions (row-level
//!   security does the isolating).
//! - [`broker`]: the embedded rumqttd broker (TLS, client certificates, per-device topic prefix) or
//!   the external broker's client; [`device_link`]: publishing to devices.
//! - [`pki`]: the device CA; [`evidence_key`]: the key that signs evidence packages; [`email`]: SMTP
//!   delivery.
//! - [`clock`]: the current time, which tests control.
//! - [`hearing`]: whether the cloud can hear its appliances right now.
//! - [`metrics`]: counters for `/metrics`; [`stream`]: the live-update hub behind dashboards.
//! - [`observability`]: the tracing subscriber, OTLP export (off by default), trace context.
//! - [`supervisor`]: background work, tracked and stopped with a deadline.

pub mod broker;
pub mod clock;
pub mod config;
pub mod db;
pub mod device_link;
pub mod email;
pub mod evidence_key;
pub mod hearing;
pub mod metrics;
pub mod observability;
pub mod pki;
pub mod stream;
pub mod supervisor;
