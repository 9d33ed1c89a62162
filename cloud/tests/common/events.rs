//! An appliance's events as it emitted them (its local events file) and as the cloud stored them,
//! in the same form, so a test can compare the two: exactly once, in order.

use std::path::Path;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One line of the agent's local events file.
#[derive(serde::Deserialize)]
struct LoggedEvent {
    ts: DateTime<Utc>,
    kind: serde_json::Value,
}

/// The events the agent emitted, in order, from its local file: (kind, sent-at in ms).
pub fn emitted(path: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<LoggedEvent>(l).ok())
        .map(|e| {
            (
                e.kind.as_str().unwrap_or_default().to_owned(),
                e.ts.timestamp_millis(),
            )
        })
        .collect()
}

/// The events the cloud stored for `appliance`, in the order it stored them.
pub async fn stored(pool: &sqlx::PgPool, appliance: Uuid) -> Vec<(String, i64)> {
    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT kind, sent_at FROM appliance_events WHERE appliance_id = $1
         ORDER BY received_at, sent_at",
    )
    .bind(appliance)
    .fetch_all(pool)
    .await
    .expect("events");
    rows.into_iter()
        .map(|(kind, at)| (kind, at.timestamp_millis()))
        .collect()
}

/// True once `appliance` has reported an empty outbox in telemetry it sent after `since`:
/// everything it sent before was acknowledged, so nothing is left to resend (and to double).
pub async fn outbox_empty_since(
    pool: &sqlx::PgPool,
    appliance: Uuid,
    since: DateTime<Utc>,
) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT coalesce(last_telemetry_at > $2
                         AND (last_telemetry->'outbox'->>'pending')::bigint = 0, false)
         FROM appliances WHERE id = $1",
    )
    .bind(appliance)
    .bind(since)
    .fetch_one(pool)
    .await
    .expect("query")
}

/// Waits (up to 30 s) until the cloud has stored at least `count` events for `appliance`, and
/// returns them: what a test compares with what the agent emitted once the agent has stopped.
pub async fn stored_at_least(
    pool: &sqlx::PgPool,
    appliance: Uuid,
    count: usize,
) -> Vec<(String, i64)> {
    super::eventually(
        std::time::Duration::from_secs(30),
        "the last events stored",
        || async {
            let rows = stored(pool, appliance).await;
            (rows.len() >= count).then_some(rows)
        },
    )
    .await
}
