//! The delivery log: every notification queued, with its status, attempts and last error (dead
//! letters among them).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::PracticeId;
use stayopen_shared::alerts::NotificationView;
use uuid::Uuid;

use crate::domain::access::AuthUser;

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: Uuid,
    alert_id: Option<Uuid>,
    practice_id: Uuid,
    channel_id: Uuid,
    event: String,
    status: String,
    digest_of: Option<Vec<Uuid>>,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

impl From<NotificationRow> for NotificationView {
    fn from(r: NotificationRow) -> Self {
        NotificationView {
            id: r.id,
            alert_id: r.alert_id,
            practice_id: PracticeId(r.practice_id),
            channel_id: r.channel_id,
            event: r.event,
            status: r.status,
            digest_of: r.digest_of.unwrap_or_default(),
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            last_error: r.last_error.as_deref().map(super::target::withhold_details),
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

/// Which notifications the log shows. `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter<'a> {
    /// `pending`, `delivered`, `dead`, `cancelled`, `held` or `digested`.
    pub status: Option<&'a str>,
    pub alert_id: Option<Uuid>,
}

/// Up to `limit` notifications, newest first, after the `after` (created at, id) of a previous
/// page.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    filter: &NotificationFilter<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<NotificationView>, sqlx::Error> {
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<NotificationRow> = sqlx::query_as(
        "SELECT id, alert_id, practice_id, channel_id, event, status, digest_of, attempts, last_error,
                created_at, delivered_at
         FROM notifications
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR alert_id = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC LIMIT $5",
    )
    .bind(filter.status)
    .bind(filter.alert_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(NotificationView::from).collect())
}
