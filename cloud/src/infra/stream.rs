//! Live updates for the dashboard. Whatever changes an appliance's state (presence, active uplink)
//! or an alert calls [`notify_appliance`] / [`notify_alerts`] inside its transaction: PostgreSQL
//! delivers the `NOTIFY` only on commit, to every cloud instance, so a dashboard connected to any
//! instance hears about changes made by all of them. Each instance's [`Hub`] listens and fans the
//! events out to its Server-Sent-Event subscribers, which filter by tenant and practice.
//!
//! Events carry ids, never data: the dashboard fetches what changed through the API, under the same
//! access checks as always.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use stayopen_shared::api::StreamEvent;
use stayopen_shared::{ApplianceId, TenantId};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::infra::db::Tx;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "stayopen_stream";

/// Events a slow subscriber may fall behind by before it misses some (it then catches up with its
/// fallback poll).
const BACKLOG: usize = 4096;

/// Announces a change of `appliance` (delivered on commit).
pub async fn notify_appliance(tx: &mut Tx, appliance: ApplianceId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_notify($1, json_build_object('tenant_id', tenant_id, 'topic', 'appliance',
                                                'id', id, 'practice_id', practice_id)::text)
         FROM appliances WHERE id = $2",
    )
    .bind(CHANNEL)
    .bind(appliance.as_uuid())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Announces changes of `alerts` (delivered on commit).
pub async fn notify_alerts(tx: &mut Tx, alerts: &[Uuid]) -> Result<(), sqlx::Error> {
    if alerts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_notify($1, json_build_object('tenant_id', tenant_id, 'topic', 'alert',
                                                'id', id, 'practice_id', practice_id)::text)
         FROM alerts WHERE id = ANY($2)",
    )
    .bind(CHANNEL)
    .bind(alerts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One change, with the tenant it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TenantEvent {
    pub tenant_id: TenantId,
    #[serde(flatten)]
    pub event: StreamEvent,
}

/// Fans this instance's notifications out to its subscribers.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<TenantEvent>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TenantEvent>> {
        self.sender.subscribe()
    }

    /// Runs forever: listens on [`CHANNEL`] (reconnecting after a lost connection) and publishes
    /// what arrives. A malformed payload is logged and skipped.
    pub async fn listen(self, pool: PgPool) {
        loop {
            match self.listen_once(&pool).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "live-update listener lost; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        loop {
            let notification = listener.recv().await?;
            match serde_json::from_str::<TenantEvent>(notification.payload()) {
                // No subscriber is not an error.
                Ok(event) => drop(self.sender.send(Arc::new(event))),
                Err(e) => tracing::warn!(error = %e, "unreadable live-update notification"),
            }
        }
    }
}
