//! The fleet as the caller may see it, and an appliance's telemetry history.

use std::collections::BTreeMap;

use actix_web::web;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stayopen_shared::api::{ApplianceView, Fleet, PracticeView, TelemetryRecord};
use stayopen_shared::telemetry::Telemetry;
use stayopen_shared::{ApplianceId, MessageId, PracticeId, SiteId};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::http::error::ApiFailure;
use crate::startup::AppState;

#[derive(sqlx::FromRow)]
struct PracticeRow {
    id: Uuid,
    name: String,
}

#[derive(sqlx::FromRow)]
struct ApplianceRow {
    id: Uuid,
    practice_id: Uuid,
    site_id: Uuid,
    site_name: String,
    serial: String,
    online: bool,
    last_seen: Option<DateTime<Utc>>,
    active_uplink: Option<String>,
    last_telemetry: Option<serde_json::Value>,
}

pub async fn fleet(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<Fleet>, ApiFailure> {
    let tenant = auth.tenant_id.as_uuid();
    // A practice user sees only their practice; `$2 IS NULL` lets an MSP admin see all of them.
    let practice_scope = auth.practice_id.map(|p| p.0);
    let tenant_name: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&state.pool)
        .await?;
    let practices: Vec<PracticeRow> = sqlx::query_as(
        "SELECT id, name FROM practices WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id = $2) ORDER BY name, id",
    )
    .bind(tenant)
    .bind(practice_scope)
    .fetch_all(&state.pool)
    .await?;
    let appliances: Vec<ApplianceRow> = sqlx::query_as(
        "SELECT a.id, a.practice_id, a.site_id, s.name AS site_name, a.serial, a.online, a.last_seen,
                a.active_uplink, a.last_telemetry
         FROM appliances a JOIN sites s ON s.id = a.site_id AND s.tenant_id = a.tenant_id
         WHERE a.tenant_id = $1 AND ($2::uuid IS NULL OR a.practice_id = $2)
         ORDER BY s.name, a.serial, a.id",
    )
    .bind(tenant)
    .bind(practice_scope)
    .fetch_all(&state.pool)
    .await?;

    let now = Utc::now();
    let offline_after = Duration::seconds(i64::from(state.config.fleet.offline_after_secs));
    let mut by_practice: BTreeMap<Uuid, Vec<ApplianceView>> = BTreeMap::new();
    for row in appliances {
        let uplinks = row
            .last_telemetry
            .and_then(|v| serde_json::from_value::<Telemetry>(v).ok())
            .map(|t| t.uplinks)
            .unwrap_or_default();
        let fresh = row
            .last_seen
            .is_some_and(|seen| now - seen <= offline_after);
        by_practice
            .entry(row.practice_id)
            .or_default()
            .push(ApplianceView {
                id: ApplianceId(row.id),
                site_id: SiteId(row.site_id),
                site_name: row.site_name,
                serial: row.serial,
                online: row.online && fresh,
                active_uplink: row.active_uplink,
                last_seen: row.last_seen,
                uplinks,
            });
    }
    let practices = practices
        .into_iter()
        .map(|p| PracticeView {
            id: PracticeId(p.id),
            name: p.name,
            appliances: by_practice.remove(&p.id).unwrap_or_default(),
        })
        .collect();
    Ok(web::Json(Fleet {
        tenant_name,
        generated_at: now,
        practices,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryQuery {
    /// Newest first; 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(sqlx::FromRow)]
struct TelemetryRow {
    message_id: Uuid,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    body: serde_json::Value,
}

pub async fn appliance_telemetry(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<TelemetryQuery>,
) -> Result<web::Json<Vec<TelemetryRecord>>, ApiFailure> {
    let appliance_id = path.into_inner();
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiFailure::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    // Scope first: an appliance of another tenant (or practice) is indistinguishable from one that
    // does not exist.
    let visible: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM appliances WHERE id = $1 AND tenant_id = $2 AND ($3::uuid IS NULL OR practice_id = $3)",
    )
    .bind(appliance_id.as_uuid())
    .bind(auth.tenant_id.as_uuid())
    .bind(auth.practice_id.map(|p| p.0))
    .fetch_optional(&state.pool)
    .await?;
    if visible.is_none() {
        return Err(ApiFailure::NotFound("no such appliance"));
    }
    let rows: Vec<TelemetryRow> = sqlx::query_as(
        "SELECT message_id, sent_at, received_at, body FROM telemetry
         WHERE appliance_id = $1 AND tenant_id = $2 ORDER BY sent_at DESC LIMIT $3",
    )
    .bind(appliance_id.as_uuid())
    .bind(auth.tenant_id.as_uuid())
    .bind(i64::from(limit))
    .fetch_all(&state.pool)
    .await?;
    let records = rows
        .into_iter()
        .map(|row| {
            let telemetry = serde_json::from_value(row.body)
                .map_err(|e| ApiFailure::Internal(format!("stored telemetry unreadable: {e}")))?;
            Ok(TelemetryRecord {
                message_id: MessageId(row.message_id),
                sent_at: row.sent_at,
                received_at: row.received_at,
                telemetry,
            })
        })
        .collect::<Result<Vec<_>, ApiFailure>>()?;
    Ok(web::Json(records))
}
