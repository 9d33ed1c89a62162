//! Alerts as people and notifications see them: with their practice, appliance and site, people
//! shown by their address, and their comments.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::alerts::{AlertComment, AlertKind, AlertState, AlertView, Severity};
use stayopen_shared::{ApplianceId, PracticeId};
use uuid::Uuid;

use crate::domain::access::{AccessError, AuthUser};
use crate::infra::db::Tx;

/// Why reading or acting on an alert failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// No such alert, or not one the caller may see.
    #[error("no such alert")]
    NotFound,
    /// The alert is not in a state the action applies to.
    #[error("{0}")]
    Conflict(String),
    /// The request's content is not acceptable (a note or comment too long, …).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: Uuid,
    kind: AlertKind,
    severity: Severity,
    state: AlertState,
    practice_id: Uuid,
    practice_name: String,
    appliance_id: Uuid,
    appliance_serial: String,
    site_name: String,
    subject: String,
    summary: String,
    muted: bool,
    after_hours: bool,
    count: i32,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<DateTime<Utc>>,
    resolved_by: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
    resolution: Option<String>,
}

const ALERT_SELECT: &str = "SELECT id, kind, severity, state, practice_id,
        (SELECT p.name FROM practices p WHERE p.id = alerts.practice_id) AS practice_name,
        appliance_id,
        (SELECT ap.serial FROM appliances ap WHERE ap.id = alerts.appliance_id) AS appliance_serial,
        (SELECT s.name FROM appliances ap JOIN sites s ON s.id = ap.site_id
         WHERE ap.id = alerts.appliance_id) AS site_name,
        subject, summary, muted, after_hours, count,
        first_seen, last_seen,
        coalesce((SELECT u.email FROM users u WHERE 'user:' || u.id = alerts.acknowledged_by),
                 acknowledged_by) AS acknowledged_by,
        acknowledged_at,
        coalesce((SELECT u.email FROM users u WHERE 'user:' || u.id = alerts.resolved_by),
                 resolved_by) AS resolved_by,
        resolved_at, resolution
     FROM alerts";

impl AlertRow {
    fn view(self, comments: Vec<AlertComment>) -> Result<AlertView, AlertError> {
        Ok(AlertView {
            id: self.id,
            kind: self.kind,
            severity: self.severity,
            state: self.state,
            practice_id: PracticeId(self.practice_id),
            practice_name: self.practice_name,
            appliance_id: ApplianceId(self.appliance_id),
            appliance_serial: self.appliance_serial,
            site_name: self.site_name,
            subject: self.subject,
            summary: self.summary,
            muted: self.muted,
            after_hours: self.after_hours,
            count: u32::try_from(self.count).unwrap_or(0),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            acknowledged_by: self.acknowledged_by,
            acknowledged_at: self.acknowledged_at,
            resolved_by: self.resolved_by,
            resolved_at: self.resolved_at,
            resolution: self.resolution,
            comments,
        })
    }
}

/// One alert with its comments, within `practices` (None: the whole tenant).
async fn fetch(
    tx: &mut Tx,
    practices: Option<Vec<Uuid>>,
    id: Uuid,
) -> Result<Option<AlertView>, AlertError> {
    let row: Option<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ALERT_SELECT} WHERE id = $1 AND ($2::uuid[] IS NULL OR practice_id = ANY($2))"
    )))
    .bind(id)
    .bind(practices)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut comments = comments_of(tx, &[id]).await?;
    row.view(comments.remove(&id).unwrap_or_default()).map(Some)
}

/// The comments of these alerts, oldest first, in one query (a list page shows them too).
async fn comments_of(
    tx: &mut Tx,
    alerts: &[Uuid],
) -> Result<HashMap<Uuid, Vec<AlertComment>>, sqlx::Error> {
    let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT c.alert_id,
                coalesce((SELECT u.email FROM users u WHERE 'user:' || u.id = c.author), c.author),
                c.body, c.created_at
         FROM alert_comments c WHERE c.alert_id = ANY($1) ORDER BY c.id",
    )
    .bind(alerts)
    .fetch_all(&mut **tx)
    .await?;
    let mut by_alert: HashMap<Uuid, Vec<AlertComment>> = HashMap::new();
    for (alert, author, body, at) in rows {
        by_alert
            .entry(alert)
            .or_default()
            .push(AlertComment { author, body, at });
    }
    Ok(by_alert)
}

/// One alert the caller may see, with its comments, inside the caller's transaction.
pub(super) async fn load(tx: &mut Tx, auth: &AuthUser, id: Uuid) -> Result<AlertView, AlertError> {
    fetch(tx, auth.practice_filter(), id)
        .await?
        .ok_or(AlertError::NotFound)
}

/// One alert the caller may see, with its comments.
pub async fn get(pool: &PgPool, auth: &AuthUser, id: Uuid) -> Result<AlertView, AlertError> {
    let mut tx = auth.tx(pool).await?;
    load(&mut tx, auth, id).await
}

/// An alert as a notification carries it (inside the tenant's transaction); `None` when it no
/// longer exists.
pub async fn for_notification(tx: &mut Tx, id: Uuid) -> Result<Option<AlertView>, AlertError> {
    fetch(tx, None, id).await
}

/// Which alerts a list shows. `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    /// `true`: open and acknowledged alerts; `false`: resolved ones.
    pub unresolved: Option<bool>,
    pub kind: Option<AlertKind>,
    /// Any of these kinds.
    pub kinds: Option<Vec<AlertKind>>,
    pub severity: Option<Severity>,
    pub practice_id: Option<Uuid>,
    pub appliance_id: Option<Uuid>,
    /// Last seen at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Up to `limit` alerts the caller may see, newest (by last seen) first, after the `after`
/// (last seen, id) of a previous page, each with its comments.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    filter: &AlertFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AlertView>, AlertError> {
    let kinds: Option<Vec<&'static str>> = filter
        .kinds
        .as_ref()
        .map(|kinds| kinds.iter().map(|k| k.as_str()).collect());
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ALERT_SELECT}
         WHERE ($1::uuid[] IS NULL OR practice_id = ANY($1))
           AND ($2::text IS NULL OR state = $2)
           AND ($3::boolean IS NULL OR (state <> 'resolved') = $3)
           AND ($4::text IS NULL OR kind = $4)
           AND ($5::text IS NULL OR severity = $5)
           AND ($6::uuid IS NULL OR practice_id = $6)
           AND ($7::uuid IS NULL OR appliance_id = $7)
           AND ($8::timestamptz IS NULL OR last_seen >= $8)
           AND ($9::timestamptz IS NULL OR (last_seen, id) < ($9, $10))
           AND ($12::text[] IS NULL OR kind = ANY($12))
         ORDER BY last_seen DESC, id DESC LIMIT $11"
    )))
    .bind(auth.practice_filter())
    .bind(filter.state.map(AlertState::as_str))
    .bind(filter.unresolved)
    .bind(filter.kind.map(AlertKind::as_str))
    .bind(filter.severity.map(Severity::as_str))
    .bind(filter.practice_id)
    .bind(filter.appliance_id)
    .bind(filter.since)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .bind(kinds)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut comments = comments_of(&mut tx, &ids).await?;
    rows.into_iter()
        .map(|r| {
            let of_alert = comments.remove(&r.id).unwrap_or_default();
            r.view(of_alert)
        })
        .collect()
}
