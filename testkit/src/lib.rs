//! Test and demo infrastructure for the StayOpen appliance, kept out of what ships on the appliance.
//!
//! The appliance's production library and its `stayopen-appliance` binary hold only what runs on
//! the box. What exercises them from outside lives here, on top of their public API: the agent is
//! driven exactly as a user of the library would drive it, and none of this code (nor the servers,
//! traffic generators and fault scripts it starts) is compiled into the appliance's image.
//!
//! - [`fleet_sim`]: many real agents in one process over simulated links, for the demo
//!   (`stayopen-fleet-sim`), the dashboard's browser test and load.
//! - [`loadgen`]: N light simulated appliances (real enrolment, TLS MQTT sessions, telemetry and
//!   failovers; no engine or dataplane) and an account of every message, for the scale test and
//!   benchmark (`stayopen-loadgen`).
//! - [`testbed`]: the network-namespace testbed behind the netns tests and the failover benchmark
//!   (`stayopen-testbed`), the relay it runs for the session-safe tunnel, and the tunnel benchmark.
//! - [`traffic`]: the session-survival traffic tools (a paced TCP stream and a two-way UDP call,
//!   each side recording what it saw).

pub mod fleet_sim;
pub mod loadgen;
pub mod testbed;
pub mod traffic;
