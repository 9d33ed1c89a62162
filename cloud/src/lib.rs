//! The StayOpen cloud: a multi-tenant backend for MSPs.
//!
//! - [`config`]: typed configuration from a TOML file plus `STAYOPEN_…` environment variables.
//! - [`db`]: the PostgreSQL pool, the embedded migrations, and tenant-scoped transactions (row-level
//!   security does the isolating).
//! - [`broker`]: the embedded rumqttd broker (TLS, client certificates, per-device topic prefix) and
//!   the bridge that checks device credentials; [`pki`]: the device CA; [`enrolment`]: who may take
//!   or renew an appliance's identity, and the certificates issued.
//! - [`ingest`]: validates and stores what appliances publish; counts and logs every rejection.
//! - [`desired`]: each appliance's effective policy, versioned; [`commands`]: the command queue's
//!   delivery; [`device_link`]: publishing to devices.
//! - [`alerts`]: alert rules, de-duplication and the heartbeat sweep, which asks [`hearing`] whether
//!   the cloud could have heard an appliance before declaring it offline; [`notify`]: the notification
//!   outbox and its signed webhook delivery.
//! - [`audit`]: the tamper-evident, hash-chained audit log; [`admin`]: operator commands.
//! - [`auth`]: passwords, access tokens, roles and permissions, the authenticated-caller extractor;
//!   [`totp`]: the second factor.
//! - [`http`]: the REST API and the dashboard's static files.
//! - [`throttle`]: login throttling per account and address.
//! - [`startup`]: wires it all together so tests can start a whole cloud on free ports;
//!   [`supervisor`]: the background work it starts, tracked and stopped with a deadline.
//! - [`seed`]: the demo tenant used by the Quick start.

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod clinic;
pub mod commands;
pub mod config;
pub mod db;
pub mod desired;
pub mod device_link;
pub mod email;
pub mod enrolment;
pub mod hearing;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod seed;
pub mod startup;
pub mod stream;
pub mod supervisor;
pub mod throttle;
pub mod totp;
