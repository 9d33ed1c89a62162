//! Practices, sites and appliances as the caller may see them, and an appliance's telemetry and
//! events. Row-level security confines every query to the caller's MSP; `practice_filter` confines
//! compliance officers and auditors to their practices. Something outside the caller's scope is
//! indistinguishable from something that does not exist: 404.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stayopen_shared::api::{
    ApiError, ApplianceView, CreatePractice, CreateSite, EventRecord, Fleet, Page, PracticeStatus,
    PracticeSummary, PracticeView, SiteView, TelemetryRecord,
};
use stayopen_shared::telemetry::Telemetry;
use stayopen_shared::{ApplianceId, MessageId, PracticeId, SiteId};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::visibility::{visible_appliance, visible_practice};
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::db::Tx;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct ApplianceRow {
    id: Uuid,
    practice_id: Uuid,
    practice_name: String,
    site_id: Uuid,
    site_name: String,
    serial: String,
    online: bool,
    last_seen: Option<DateTime<Utc>>,
    active_uplink: Option<String>,
    last_telemetry: Option<serde_json::Value>,
}

const APPLIANCE_SELECT: &str =
    "SELECT a.id, a.practice_id, p.name AS practice_name, a.site_id, s.name AS site_name, a.serial,
        a.online, a.last_seen, a.active_uplink, a.last_telemetry
     FROM appliances a JOIN sites s ON s.id = a.site_id JOIN practices p ON p.id = a.practice_id";

impl ApplianceRow {
    fn view(self, now: DateTime<Utc>, offline_after: Duration) -> ApplianceView {
        let telemetry = self
            .last_telemetry
            .and_then(|v| serde_json::from_value::<Telemetry>(v).ok());
        let outbox = telemetry.as_ref().and_then(|t| t.outbox);
        let uplinks = telemetry.map(|t| t.uplinks).unwrap_or_default();
        let fresh = self
            .last_seen
            .is_some_and(|seen| now - seen <= offline_after);
        ApplianceView {
            id: ApplianceId(self.id),
            practice_id: PracticeId(self.practice_id),
            practice_name: self.practice_name,
            site_id: SiteId(self.site_id),
            site_name: self.site_name,
            serial: self.serial,
            online: self.online && fresh,
            active_uplink: self.active_uplink,
            last_seen: self.last_seen,
            uplinks,
            outbox,
        }
    }
}

fn offline_after(state: &AppState) -> Duration {
    Duration::seconds(i64::from(state.config.fleet.offline_after_secs))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Case-insensitive substring of the name (practices) or serial (appliances).
    pub q: Option<String>,
}

/// The fleet, practice by practice with their appliances: one page of practices by name.
#[utoipa::path(
    tag = "fleet",
    params(ListQuery),
    responses((status = 200, body = Fleet), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/fleet")]
pub async fn show_fleet(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Fleet>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(String, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let tenant_name: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(auth.tenant_id.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    let practices: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, name FROM practices
         WHERE ($1::uuid[] IS NULL OR id = ANY($1))
           AND ($2::text IS NULL OR (name, id) > ($2, $3))
           AND ($4::text IS NULL OR name ILIKE '%' || $4 || '%')
         ORDER BY name, id LIMIT $5",
    )
    .bind(auth.practice_filter())
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(query.q.as_deref())
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let page = pagination::page(practices, fetch, |(id, name)| (name.clone(), *id));
    let ids: Vec<Uuid> = page.items.iter().map(|(id, _)| *id).collect();
    let appliances: Vec<ApplianceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{APPLIANCE_SELECT} WHERE a.practice_id = ANY($1) ORDER BY s.name, a.serial, a.id"
    )))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let now = Utc::now();
    let mut by_practice: BTreeMap<Uuid, Vec<ApplianceView>> = BTreeMap::new();
    for row in appliances {
        by_practice
            .entry(row.practice_id)
            .or_default()
            .push(row.view(now, offline_after(&state)));
    }
    let practices = page
        .items
        .into_iter()
        .map(|(id, name)| PracticeView {
            id: PracticeId(id),
            name,
            appliances: by_practice.remove(&id).unwrap_or_default(),
        })
        .collect();
    Ok(web::Json(Fleet {
        tenant_name,
        generated_at: now,
        practices,
        next_cursor: page.next_cursor,
    }))
}

#[derive(sqlx::FromRow)]
struct PracticeSummaryRow {
    id: Uuid,
    name: String,
    sites: i64,
    appliances: i64,
    online: i64,
    on_backup: i64,
    open_alerts: i64,
    status: String,
}

/// Practices with their roll-up: appliances counted once per practice (the `appliances` index by
/// practice), "online" meaning heard from within the heartbeat (`$1` seconds), revoked boxes left
/// out. Callers add their WHERE on `p` and the outer `status`.
const PRACTICE_SUMMARY_SELECT: &str = "SELECT * FROM (
     SELECT p.id, p.name,
        (SELECT count(*) FROM sites s WHERE s.practice_id = p.id) AS sites,
        c.appliances, c.online, c.on_backup,
        (SELECT count(*) FROM alerts al WHERE al.practice_id = p.id AND al.state <> 'resolved') AS open_alerts,
        CASE WHEN c.appliances = 0 THEN 'empty'
             WHEN c.online < c.appliances THEN 'offline'
             WHEN c.on_backup > 0 THEN 'on_backup'
             ELSE 'primary' END AS status
     FROM practices p
     CROSS JOIN LATERAL (
         SELECT count(*) AS appliances,
                count(*) FILTER (WHERE a.online AND a.last_seen > now() - make_interval(secs => $1)) AS online,
                count(*) FILTER (WHERE a.online AND a.last_seen > now() - make_interval(secs => $1)
                                   AND a.on_backup) AS on_backup
         FROM appliances a WHERE a.practice_id = p.id AND a.revoked_at IS NULL) c";

impl From<PracticeSummaryRow> for PracticeSummary {
    fn from(row: PracticeSummaryRow) -> Self {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        PracticeSummary {
            id: PracticeId(row.id),
            name: row.name,
            sites: count(row.sites),
            appliances: count(row.appliances),
            online: count(row.online),
            on_backup: count(row.on_backup),
            offline: count(row.appliances - row.online),
            open_alerts: count(row.open_alerts),
            status: PracticeStatus::parse(&row.status).unwrap_or(PracticeStatus::Empty),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PracticeListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
    /// Only practices whose roll-up is this: `offline`, `on_backup`, `primary` or `empty`.
    pub status: Option<PracticeStatus>,
}

/// Practices with their roll-up counts, by name.
#[utoipa::path(
    tag = "fleet",
    params(PracticeListQuery),
    responses((status = 200, body = Page<PracticeSummary>), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices")]
pub async fn list_practices(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<PracticeListQuery>,
) -> Result<web::Json<Page<PracticeSummary>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(String, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<PracticeSummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{PRACTICE_SUMMARY_SELECT}
         WHERE ($2::uuid[] IS NULL OR p.id = ANY($2))
           AND ($3::text IS NULL OR (p.name, p.id) > ($3, $4))
           AND ($5::text IS NULL OR p.name ILIKE '%' || $5 || '%')) practice
         WHERE ($7::text IS NULL OR status = $7)
         ORDER BY name, id LIMIT $6"
    )))
    .bind(f64::from(state.config.fleet.offline_after_secs))
    .bind(auth.practice_filter())
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(query.q.as_deref())
    .bind(fetch)
    .bind(query.status.map(PracticeStatus::as_str))
    .fetch_all(&mut *tx)
    .await?;
    let items = rows.into_iter().map(PracticeSummary::from).collect();
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |p: &PracticeSummary| (p.name.clone(), p.id.0),
    )))
}

/// One practice with its roll-up.
#[utoipa::path(
    tag = "fleet",
    params(("practice_id" = Uuid, Path)),
    responses((status = 200, body = PracticeSummary), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}")]
pub async fn show_practice(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
) -> Result<web::Json<PracticeSummary>, ApiFailure> {
    let practice = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    let row: PracticeSummaryRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{PRACTICE_SUMMARY_SELECT} WHERE p.id = $2) practice"
    )))
    .bind(f64::from(state.config.fleet.offline_after_secs))
    .bind(practice.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    Ok(web::Json(row.into()))
}

/// Creates a practice and its first site (audited).
#[utoipa::path(
    tag = "fleet",
    request_body = CreatePractice,
    responses((status = 201, body = PracticeSummary), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/practices")]
pub async fn create_practice(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreatePractice>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    let name = checked_name("name", &body.name)?;
    let site_name = checked_name(
        "site_name",
        body.site_name.as_deref().unwrap_or("Main office"),
    )?;
    let mut tx = auth.tx(&state.pool).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO practices (id, tenant_id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiFailure::Conflict(format!(
            "a practice named {name:?} already exists"
        )));
    }
    let site = Uuid::new_v4();
    sqlx::query("INSERT INTO sites (id, tenant_id, practice_id, name) VALUES ($1, $2, $3, $4)")
        .bind(site)
        .bind(auth.tenant_id.as_uuid())
        .bind(id)
        .bind(site_name)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "practice.create",
            target_type: "practice",
            target_id: id.to_string(),
            before: None,
            after: Some(
                serde_json::json!({ "name": name, "site_id": site, "site_name": site_name }),
            ),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(PracticeSummary {
        id: PracticeId(id),
        name: name.to_owned(),
        sites: 1,
        appliances: 0,
        online: 0,
        on_backup: 0,
        offline: 0,
        open_alerts: 0,
        status: PracticeStatus::Empty,
    }))
}

fn checked_name<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiFailure> {
    let value = value.trim();
    if value.is_empty() || value.len() > 200 {
        return Err(ApiFailure::BadRequest(format!(
            "{field} must be 1 to 200 characters"
        )));
    }
    Ok(value)
}

/// A practice's sites.
#[utoipa::path(
    tag = "fleet",
    params(("practice_id" = Uuid, Path), ListQuery),
    responses((status = 200, body = Page<SiteView>), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/sites")]
pub async fn list_sites(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Page<SiteView>>, ApiFailure> {
    let practice = path.into_inner();
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(String, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, name FROM sites WHERE practice_id = $1
           AND ($2::text IS NULL OR (name, id) > ($2, $3))
           AND ($4::text IS NULL OR name ILIKE '%' || $4 || '%')
         ORDER BY name, id LIMIT $5",
    )
    .bind(practice.as_uuid())
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(query.q.as_deref())
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows
        .into_iter()
        .map(|(id, name)| SiteView {
            id: SiteId(id),
            practice_id: practice,
            name,
        })
        .collect();
    Ok(web::Json(pagination::page(items, fetch, |s: &SiteView| {
        (s.name.clone(), s.id.0)
    })))
}

/// Adds a site to a practice (audited).
#[utoipa::path(
    tag = "fleet",
    params(("practice_id" = Uuid, Path)),
    request_body = CreateSite,
    responses((status = 201, body = SiteView), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/practices/{practice_id}/sites")]
pub async fn create_site(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<CreateSite>,
) -> Result<HttpResponse, ApiFailure> {
    auth.require(Permission::Configure)?;
    let practice = path.into_inner();
    let name = checked_name("name", &body.name)?;
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO sites (id, tenant_id, practice_id, name) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(practice.as_uuid())
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiFailure::Conflict(format!(
            "the practice already has a site named {name:?}"
        )));
    }
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "site.create",
            target_type: "site",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({ "practice_id": practice, "name": name })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(SiteView {
        id: SiteId(id),
        practice_id: practice,
        name: name.to_owned(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApplianceListQuery {
    /// 1 to 500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Case-insensitive substring of the serial number.
    pub q: Option<String>,
    pub practice_id: Option<Uuid>,
    pub online: Option<bool>,
    /// Online appliances whose traffic runs over a backup uplink (`true`), or the others.
    pub on_backup: Option<bool>,
}

/// Appliances, by serial number, with optional filters.
#[utoipa::path(
    tag = "fleet",
    params(ApplianceListQuery),
    responses((status = 200, body = Page<ApplianceView>), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances")]
pub async fn list_appliances(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ApplianceListQuery>,
) -> Result<web::Json<Page<ApplianceView>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(String, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    let rows: Vec<ApplianceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{APPLIANCE_SELECT}
         WHERE ($1::uuid[] IS NULL OR a.practice_id = ANY($1))
           AND ($2::uuid IS NULL OR a.practice_id = $2)
           AND ($3::text IS NULL OR (a.serial, a.id) > ($3, $4))
           AND ($5::text IS NULL OR a.serial ILIKE '%' || $5 || '%')
           AND ($6::boolean IS NULL OR (a.online AND a.last_seen > now() - make_interval(secs => $7)) = $6)
           AND ($9::boolean IS NULL OR (a.online AND a.last_seen > now() - make_interval(secs => $7)
                                        AND a.on_backup) = $9)
         ORDER BY a.serial, a.id LIMIT $8"
    )))
    .bind(auth.practice_filter())
    .bind(query.practice_id)
    .bind(after.as_ref().map(|a| a.0.clone()))
    .bind(after.as_ref().map(|a| a.1))
    .bind(query.q.as_deref())
    .bind(query.online)
    .bind(f64::from(state.config.fleet.offline_after_secs))
    .bind(fetch)
    .bind(query.on_backup)
    .fetch_all(&mut *tx)
    .await?;
    let now = Utc::now();
    let items = rows
        .into_iter()
        .map(|r| r.view(now, offline_after(&state)))
        .collect();
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |a: &ApplianceView| (a.serial.clone(), a.id.0),
    )))
}

/// One appliance.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = ApplianceView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}")]
pub async fn show_appliance(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<ApplianceView>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    Ok(web::Json(load_appliance(&mut tx, &state, appliance).await?))
}

/// An appliance as the API shows it (the caller has checked it is visible).
async fn load_appliance(
    tx: &mut Tx,
    state: &AppState,
    appliance: ApplianceId,
) -> Result<ApplianceView, ApiFailure> {
    let row: ApplianceRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{APPLIANCE_SELECT} WHERE a.id = $1"
    )))
    .bind(appliance.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.view(Utc::now(), offline_after(state)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only records sent at or after this time.
    pub since: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    message_id: Uuid,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    body: serde_json::Value,
}

async fn history(
    tx: &mut Tx,
    table: &'static str,
    appliance: ApplianceId,
    query: &HistoryQuery,
    fetch: i64,
) -> Result<Vec<HistoryRow>, ApiFailure> {
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT message_id, sent_at, received_at, body FROM {table}
         WHERE appliance_id = $1
           AND ($2::timestamptz IS NULL OR (sent_at, message_id) < ($2, $3))
           AND ($4::timestamptz IS NULL OR sent_at >= $4)
         ORDER BY sent_at DESC, message_id DESC LIMIT $5"
    )))
    .bind(appliance.as_uuid())
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(query.since)
    .bind(fetch)
    .fetch_all(&mut **tx)
    .await?)
}

/// An appliance's telemetry, newest first.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = Page<TelemetryRecord>), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/telemetry")]
pub async fn appliance_telemetry(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<Page<TelemetryRecord>>, ApiFailure> {
    let appliance = path.into_inner();
    let fetch = pagination::fetch_limit(query.limit)?;
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    let records = history(&mut tx, "telemetry", appliance, &query, fetch)
        .await?
        .into_iter()
        .map(|row| {
            Ok(TelemetryRecord {
                message_id: MessageId(row.message_id),
                sent_at: row.sent_at,
                received_at: row.received_at,
                telemetry: serde_json::from_value(row.body).map_err(|e| {
                    ApiFailure::Internal(format!("stored telemetry unreadable: {e}"))
                })?,
            })
        })
        .collect::<Result<Vec<_>, ApiFailure>>()?;
    Ok(web::Json(pagination::page(records, fetch, |r| {
        (r.sent_at, r.message_id.0)
    })))
}

/// An appliance's events (failovers, failbacks, drills …), newest first.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = Page<EventRecord>), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/events")]
pub async fn appliance_events(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<Page<EventRecord>>, ApiFailure> {
    let appliance = path.into_inner();
    let fetch = pagination::fetch_limit(query.limit)?;
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    let records = history(&mut tx, "appliance_events", appliance, &query, fetch)
        .await?
        .into_iter()
        .map(|row| {
            Ok(EventRecord {
                message_id: MessageId(row.message_id),
                appliance_id: appliance,
                sent_at: row.sent_at,
                received_at: row.received_at,
                event: serde_json::from_value(row.body)
                    .map_err(|e| ApiFailure::Internal(format!("stored event unreadable: {e}")))?,
            })
        })
        .collect::<Result<Vec<_>, ApiFailure>>()?;
    Ok(web::Json(pagination::page(records, fetch, |r| {
        (r.sent_at, r.message_id.0)
    })))
}

/// Revokes an appliance: its session is closed at once, its certificates (on the revocation list)
/// and credentials are refused from then on, and anything it still publishes is rejected. Neither
/// enrolling again nor renewing reinstates it; only an MSP admin's restore does.
#[utoipa::path(
    tag = "fleet",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = ApplianceView), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/revoke")]
pub async fn revoke_appliance(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<ApplianceView>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    auth.require(Permission::Configure)?;
    let serial: Option<String> = sqlx::query_scalar(
        "UPDATE appliances SET revoked_at = coalesce(revoked_at, now()), online = false,
                reenrollment_approved_until = NULL
         WHERE id = $1 RETURNING cert_serial",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE device_certificates SET revoked_at = now()
         WHERE appliance_id = $1 AND revoked_at IS NULL",
    )
    .bind(appliance.as_uuid())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE commands SET status = 'expired', finished_at = now(), detail = 'appliance revoked'
         WHERE appliance_id = $1 AND status IN ('queued', 'delivered')",
    )
    .bind(appliance.as_uuid())
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "appliance.revoke",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: None,
            after: Some(serde_json::json!({ "revoked": true, "certificate_serial": serial })),
        },
    )
    .await?;
    let view = load_appliance(&mut tx, &state, appliance).await?;
    tx.commit().await?;
    crate::http::enroll::rewrite_crl(&state).await;
    if let Err(e) = crate::infra::broker::disconnect_device(
        state.broker.device_addr(),
        &state.ca,
        appliance,
        &state.revoker_secret,
    )
    .await
    {
        tracing::warn!(%appliance, error = %e, "could not close the revoked appliance's session");
    }
    tracing::info!(%appliance, "appliance revoked");
    Ok(web::Json(view))
}
