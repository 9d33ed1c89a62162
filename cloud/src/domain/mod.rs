//! What the cloud does, apart from how it is reached. Each module owns its SQL and returns its own
//! error enum; none of them knows HTTP.
//!
//! - [`access`]: passwords, access and API tokens, roles and permissions, what a caller may see,
//!   sign-in throttling, the second factor, users.
//! - [`audit`]: the tamper-evident, hash-chained audit log.
//! - [`clinic`]: a practice's local time and opening hours.
//! - [`fleet`]: MSPs' practices, sites and appliances; claims and maintenance windows.
//! - [`enrolment`]: who may take or renew an appliance's identity, the certificates issued, and the
//!   broker's check of device credentials.
//! - [`policy`]: each appliance's effective policy, versioned; [`commands`]: the command queue.
//! - [`alerts`]: alert rules, de-duplication and the sweeps; [`notifications`]: who is told, and
//!   the signed webhook and e-mail delivery.
//! - [`compliance`]: the critical applications register, drills, incidents, availability and
//!   retention: the records behind the compliance evidence.
//! - [`ingest`]: validates and stores what appliances publish; counts and logs every rejection.
//! - [`relays`]: the relay registry of the session-safe tunnel: appliances' WireGuard keys, inner
//!   addresses and relay assignments, the relays and their peer lists.
//! - [`seed`]: the demo tenant used by the Quick start; [`admin`]: operator commands.

pub mod access;
pub mod admin;
pub mod alerts;
pub mod audit;
pub mod clinic;
pub mod commands;
pub mod compliance;
pub mod enrolment;
pub mod evidence;
pub mod fleet;
pub mod ingest;
pub mod notifications;
pub mod policy;
pub mod relays;
pub mod seed;
