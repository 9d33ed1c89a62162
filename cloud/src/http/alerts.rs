//! Alerts: list with filters, one alert with its comments, acknowledge, resolve, comment. Every
//! action is audited with who and when.

use std::collections::HashMap;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::alerts::{
    AlertComment, AlertKind, AlertState, AlertView, CreateAlertComment, ResolveAlert, Severity,
};
use stayopen_shared::api::{ApiError, Page};
use stayopen_shared::{ApplianceId, PracticeId};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::db::Tx;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: Uuid,
    kind: String,
    severity: String,
    state: String,
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
    fn view(self, comments: Vec<AlertComment>) -> Result<AlertView, ApiFailure> {
        let bad =
            |what: &str, value: &str| ApiFailure::Internal(format!("unknown {what} {value:?}"));
        Ok(AlertView {
            id: self.id,
            kind: AlertKind::parse(&self.kind).ok_or_else(|| bad("kind", &self.kind))?,
            severity: Severity::parse(&self.severity)
                .ok_or_else(|| bad("severity", &self.severity))?,
            state: AlertState::parse(&self.state).ok_or_else(|| bad("state", &self.state))?,
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
) -> Result<Option<AlertView>, ApiFailure> {
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
) -> Result<HashMap<Uuid, Vec<AlertComment>>, ApiFailure> {
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

/// One alert the caller may see, with its comments; 404 otherwise.
async fn load(tx: &mut Tx, auth: &AuthUser, id: Uuid) -> Result<AlertView, ApiFailure> {
    fetch(tx, auth.practice_filter(), id)
        .await?
        .ok_or(ApiFailure::NotFound("no such alert"))
}

/// An alert as a notification carries it (inside the tenant's transaction).
pub async fn load_for_notification(
    tx: &mut Tx,
    id: Uuid,
) -> Result<Option<AlertView>, sqlx::Error> {
    match fetch(tx, None, id).await {
        Ok(alert) => Ok(alert),
        Err(ApiFailure::Internal(detail)) => Err(sqlx::Error::Protocol(detail)),
        Err(_) => Ok(None),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertListQuery {
    /// 1 to 500, default 50. Newest (by last seen) first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub state: Option<AlertState>,
    /// `unresolved` lists open and acknowledged alerts together.
    pub unresolved: Option<bool>,
    pub kind: Option<AlertKind>,
    /// Several kinds, comma-separated (`failover,drill_failed,drill_overdue`).
    pub kinds: Option<String>,
    pub severity: Option<Severity>,
    pub practice_id: Option<Uuid>,
    pub appliance_id: Option<Uuid>,
    /// Only alerts last seen at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Alerts, newest first, filtered by state, kind, severity, practice, appliance and time.
#[utoipa::path(
    tag = "alerts",
    params(AlertListQuery),
    responses((status = 200, body = Page<AlertView>), (status = 400, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/alerts")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<AlertListQuery>,
) -> Result<web::Json<Page<AlertView>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let kinds: Option<Vec<&'static str>> = query
        .kinds
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|k| {
                    AlertKind::parse(k.trim())
                        .map(AlertKind::as_str)
                        .ok_or_else(|| {
                            ApiFailure::BadRequest(format!("kinds: {k:?} is not an alert kind"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let mut tx = auth.tx(&state.pool).await?;
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
    .bind(query.state.map(AlertState::as_str))
    .bind(query.unresolved)
    .bind(query.kind.map(AlertKind::as_str))
    .bind(query.severity.map(Severity::as_str))
    .bind(query.practice_id)
    .bind(query.appliance_id)
    .bind(query.since)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(fetch)
    .bind(kinds)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut comments = comments_of(&mut tx, &ids).await?;
    let items = rows
        .into_iter()
        .map(|r| {
            let of_alert = comments.remove(&r.id).unwrap_or_default();
            r.view(of_alert)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |a: &AlertView| (a.last_seen, a.id),
    )))
}

/// One alert with its comments.
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = AlertView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/alerts/{alert_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<AlertView>, ApiFailure> {
    let mut tx = auth.tx(&state.pool).await?;
    Ok(web::Json(load(&mut tx, &auth, path.into_inner()).await?))
}

/// Records an action on an alert in the audit log and returns the alert as it now is.
async fn finish(
    mut tx: Tx,
    auth: &AuthUser,
    id: Uuid,
    action: &str,
    before: &AlertView,
    detail: serde_json::Value,
) -> Result<AlertView, ApiFailure> {
    let after = load(&mut tx, auth, id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action,
            target_type: "alert",
            target_id: id.to_string(),
            before: Some(serde_json::json!({ "state": before.state })),
            after: Some(serde_json::json!({ "state": after.state, "detail": detail })),
        },
    )
    .await?;
    crate::infra::stream::notify_alerts(&mut tx, &[id]).await?;
    tx.commit().await?;
    Ok(after)
}

/// Acknowledges an open alert: someone is on it (stops escalation).
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    responses((status = 200, body = AlertView), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/{alert_id}/acknowledge")]
pub async fn acknowledge(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<AlertView>, ApiFailure> {
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let before = load(&mut tx, &auth, id).await?;
    auth.require(Permission::Operate)?;
    if before.state != AlertState::Open {
        return Err(ApiFailure::Conflict(format!(
            "the alert is {}, not open",
            before.state.as_str()
        )));
    }
    sqlx::query(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_by = $2, acknowledged_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(auth.actor().label())
    .execute(&mut *tx)
    .await?;
    Ok(web::Json(
        finish(
            tx,
            &auth,
            id,
            "alert.acknowledge",
            &before,
            serde_json::Value::Null,
        )
        .await?,
    ))
}

/// Resolves an alert by hand, with an optional note.
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    request_body = ResolveAlert,
    responses((status = 200, body = AlertView), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/{alert_id}/resolve")]
pub async fn resolve(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<ResolveAlert>,
) -> Result<web::Json<AlertView>, ApiFailure> {
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let before = load(&mut tx, &auth, id).await?;
    auth.require(Permission::Operate)?;
    if before.state == AlertState::Resolved {
        return Err(ApiFailure::Conflict("the alert is already resolved".into()));
    }
    let note = body
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.len() > 2000) {
        return Err(ApiFailure::BadRequest(
            "note must be at most 2000 characters".into(),
        ));
    }
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', resolved_by = $2, resolved_at = now(),
                resolution = coalesce($3, 'resolved by hand') WHERE id = $1",
    )
    .bind(id)
    .bind(auth.actor().label())
    .bind(note)
    .execute(&mut *tx)
    .await?;
    crate::domain::notifications::enqueue(
        &mut tx,
        &[(id, crate::domain::notifications::Transition::Resolved)],
    )
    .await?;
    Ok(web::Json(
        finish(
            tx,
            &auth,
            id,
            "alert.resolve",
            &before,
            serde_json::json!({ "note": note }),
        )
        .await?,
    ))
}

/// Adds a comment to an alert.
#[utoipa::path(
    tag = "alerts",
    params(("alert_id" = Uuid, Path)),
    request_body = CreateAlertComment,
    responses((status = 201, body = AlertView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/alerts/{alert_id}/comments")]
pub async fn comment(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
    body: web::Json<CreateAlertComment>,
) -> Result<HttpResponse, ApiFailure> {
    let id = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let before = load(&mut tx, &auth, id).await?;
    auth.require(Permission::Operate)?;
    let text = body.body.trim();
    if text.is_empty() || text.len() > 4000 {
        return Err(ApiFailure::BadRequest(
            "body must be 1 to 4000 characters".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO alert_comments (tenant_id, alert_id, author, body) VALUES ($1, $2, $3, $4)",
    )
    .bind(auth.tenant_id.as_uuid())
    .bind(id)
    .bind(auth.actor().label())
    .bind(text)
    .execute(&mut *tx)
    .await?;
    let view = finish(
        tx,
        &auth,
        id,
        "alert.comment",
        &before,
        serde_json::json!({ "comment": text }),
    )
    .await?;
    Ok(HttpResponse::Created().json(view))
}
