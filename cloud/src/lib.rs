//! The StayOpen cloud: a multi-tenant backend for MSPs.
//!
//! The crate is layered; each layer uses only the layers below it (checked by
//! `tests/layers.rs`; the diagram is in `docs/ARCHITECTURE.md`):
//!
//! 1. [`infra`]: the edges — configuration, the database and tenant transactions, the broker, the
//!    device PKI, e-mail, the clock, metrics, the live-update hub, task supervision.
//! 2. [`domain`]: what the cloud does — access, fleet, enrolment and identity, policy, commands,
//!    alerts, notifications, audit, ingest. Domain modules own their SQL and their error enums.
//! 3. [`state`]: what every HTTP handler can reach.
//! 4. [`http`]: the REST API: extract, call the domain, map the result. No SQL.
//! 5. [`startup`]: wires it all together so `main` and the tests start the same cloud.

pub mod domain;
pub mod http;
pub mod infra;
pub mod startup;
pub mod state;
