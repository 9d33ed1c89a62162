//! Compliance records under HIPAA 45 CFR 164.308(a)(7): what the evidence package is built from.
//!
//! - [`register`]: each practice's critical applications (criticality analysis, (E)); the
//!   register is the `critical_apps` of its appliances' effective policy.
//! - [`drills`]: drills built from the appliances' events at ingest, and their sign-off
//!   (testing, (D)); [`drill_schedule`]: when the cloud starts the scheduled ones.
//! - [`incidents`]: real outages built from failover and failback events, with the MSP's root
//!   cause and comments.
//! - [`availability`]: the hourly roll-up behind primary-line and effective availability.
//! - [`retention`]: raw telemetry kept for days, records for six years (164.316(b)(2)).
//!
//! The read functions taking a [`Tx`](crate::infra::db::Tx) (`register::for_practice`,
//! `drills::in_period`, `incidents::in_period`, `availability::months`) serve the evidence
//! package; the others check the caller and serve the API.

pub mod availability;
pub mod drill_schedule;
pub mod drills;
pub mod incidents;
pub mod register;
pub mod retention;

use crate::domain::access::AccessError;
use crate::domain::commands::CommandError;
use crate::domain::policy::DesiredError;

/// Why reading or changing a compliance record failed.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    /// A body or query that breaks the rules; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with what is stored (a name taken, a drill already signed off).
    #[error("{0}")]
    Conflict(String),
    /// The record does not exist or the caller may not see it (the two are not told apart).
    #[error("{0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Desired(#[from] DesiredError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
