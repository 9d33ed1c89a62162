//! Live updates for the dashboard. Whatever changes an appliance's state (presence, active uplink)
//! or an alert calls [`notify_appliance`] / [`notify_alerts`] inside its transaction: PostgreSQL
//! delivers the `NOTIFY` only on commit, to every cloud instance, so a dashboard connected to any
//! instance hears about changes made by all of them. Each instance's [`Hub`] listens and fans the
//! events out to its Server-Sent-Event subscribers, which filter by tenant and practice.
//!
//! Events carry ids, never data: the dashboard fetches what changed through the API, under the same
//! access checks as always.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    notify_appliances(tx, &[appliance]).await
}

/// Announces changes of several appliances in one statement (delivered on commit).
pub async fn notify_appliances(tx: &mut Tx, appliances: &[ApplianceId]) -> Result<(), sqlx::Error> {
    if appliances.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = appliances.iter().map(|a| a.0).collect();
    sqlx::query(
        "SELECT pg_notify($1, json_build_object('tenant_id', tenant_id, 'topic', 'appliance',
                                                'id', id, 'practice_id', practice_id)::text)
         FROM appliances WHERE id = ANY($2)",
    )
    .bind(CHANNEL)
    .bind(&ids)
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

/// Fans this instance's notifications out to its subscribers, and counts the streams open per
/// owner (a user or an API token).
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<TenantEvent>>,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One open stream of an owner; the count goes down when it is dropped (the stream ended, the
/// client went away).
#[derive(Debug)]
pub struct StreamSlot {
    owner: Uuid,
    open: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(count) = open.get_mut(&self.owner)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.owner);
            }
        }
    }
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
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `owner`, unless `limit` are open already. Check and count are
    /// one step under the lock, so concurrent openings cannot exceed the limit.
    pub fn try_open(&self, owner: Uuid, limit: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(owner).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            owner,
            open: self.open.clone(),
        })
    }

    /// How many streams `owner` has open on this instance.
    pub fn open_streams(&self, owner: Uuid) -> usize {
        self.open
            .lock()
            .map(|open| open.get(&owner).copied().unwrap_or(0))
            .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_gets_no_more_slots_than_the_limit_and_a_closed_stream_frees_one() {
        let hub = Hub::new();
        let owner = Uuid::from_u128(1);
        let slots: Vec<_> = (0..3).filter_map(|_| hub.try_open(owner, 3)).collect();
        assert_eq!(slots.len(), 3);
        assert!(hub.try_open(owner, 3).is_none());
        assert!(
            hub.try_open(Uuid::from_u128(2), 3).is_some(),
            "others are not affected"
        );
        drop(slots);
        assert_eq!(hub.open_streams(owner), 0);
        assert!(hub.try_open(owner, 3).is_some());
    }
}
