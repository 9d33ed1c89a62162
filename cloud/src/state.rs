//! The state every HTTP handler can reach: the pool, the token keys, the broker and device link,
//! the live-update hub. [`crate::startup`] builds it; handlers receive it as `web::Data<AppState>`.

use std::sync::Arc;

use sqlx::PgPool;

use crate::domain::access::TokenKeys;
use crate::infra::broker::BrokerHandle;
use crate::infra::config::CloudConfig;
use crate::infra::device_link::DeviceLink;
use crate::infra::evidence_key::EvidenceKey;
use crate::infra::metrics::Metrics;
use crate::infra::pki::DeviceCa;
use crate::infra::stream::Hub;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub tokens: TokenKeys,
    pub metrics: Arc<Metrics>,
    pub config: Arc<CloudConfig>,
    pub broker: BrokerHandle,
    /// `/api/v1/openapi.json`, generated from the routes at start.
    pub openapi_json: String,
    /// Publishes desired policies and commands to devices.
    pub device_link: DeviceLink,
    /// Signs device certificates at enrolment.
    pub ca: Arc<DeviceCa>,
    /// The password of the cloud's own connection that closes revoked appliances' sessions.
    pub revoker_secret: String,
    /// Live updates for dashboards (`GET /api/v1/stream`).
    pub hub: Hub,
    /// Signs evidence packages; its public half is published.
    pub evidence_key: Arc<EvidenceKey>,
}
