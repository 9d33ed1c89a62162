//! Practices, sites and appliances as the caller may see them, an appliance's telemetry and
//! events, and revocation: extract, call [`crate::domain::fleet`], map. Something outside the
//! caller's scope is indistinguishable from something that does not exist: 404.

use actix_web::{HttpResponse, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::api::{
    ApiError, ApplianceSort, ApplianceState, ApplianceView, BulkApplianceRequest, BulkOutcome,
    CreatePractice, CreateSite, EventRecord, Fleet, Page, PracticeStatus, PracticeSummary, SetTags,
    SiteView, TelemetryRecord, UpdateSite, UplinkKind, normalise_tag,
};
use stayopen_shared::{ApplianceId, PracticeId, SiteId};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::{AuthUser, Permission};
use crate::domain::fleet::{self, ApplianceFilter, FleetError, HistoryWindow, PracticeFilter};
use crate::http::error::ApiFailure;
use crate::http::{csv, pagination};
use crate::state::AppState;

impl From<FleetError> for ApiFailure {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::NotFound(what) => ApiFailure::NotFound(what),
            FleetError::Invalid(why) => ApiFailure::BadRequest(why),
            FleetError::Conflict(why) => ApiFailure::Conflict(why),
            e @ FleetError::Unreadable { .. } => ApiFailure::Internal(e.to_string()),
            FleetError::Access(e) => ApiFailure::from(e),
            FleetError::Database(e) => ApiFailure::from(e),
        }
    }
}

/// Seconds without a word after which an appliance counts as offline.
fn offline_after_secs(state: &AppState) -> u32 {
    state.config.fleet.offline_after_secs
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
    let snapshot = fleet::fleet(
        &state.pool,
        &auth,
        after,
        query.q.as_deref(),
        fetch,
        offline_after_secs(&state),
        Utc::now(),
    )
    .await?;
    let page = pagination::page(snapshot.practices, fetch, |p| (p.name.clone(), p.id.0));
    Ok(web::Json(Fleet {
        tenant_name: snapshot.tenant_name,
        generated_at: snapshot.generated_at,
        practices: page.items,
        next_cursor: page.next_cursor,
    }))
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
    let query = query.into_inner();
    let filter = PracticeFilter {
        after: pagination::decode_cursor(query.cursor.as_deref())?,
        q: query.q,
        status: query.status,
    };
    let items = fleet::practices(
        &state.pool,
        &auth,
        &filter,
        fetch,
        offline_after_secs(&state),
    )
    .await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |p: &PracticeSummary| (p.name.clone(), p.id.0),
    )))
}

/// The practices the same query lists, with their roll-up, every row, as CSV: the fleet at a
/// glance for a spreadsheet or a monthly report.
#[utoipa::path(
    tag = "fleet",
    params(PracticeListQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices.csv")]
pub async fn export_practices(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<PracticeListQuery>,
) -> Result<HttpResponse, ApiFailure> {
    let query = query.into_inner();
    let pool = state.pool.clone();
    let offline_after = offline_after_secs(&state);
    csv::export(
        "practices",
        &[
            "practice",
            "status",
            "appliances",
            "online",
            "on_backup",
            "degraded",
            "offline",
            "sites",
            "open_alerts",
            "tags",
            "id",
        ],
        move |after: Option<(String, Uuid)>| {
            let (pool, auth) = (pool.clone(), auth.clone());
            let filter = PracticeFilter {
                after,
                q: query.q.clone(),
                status: query.status,
            };
            async move {
                let items =
                    fleet::practices(&pool, &auth, &filter, csv::EXPORT_FETCH, offline_after)
                        .await?;
                Ok(csv::rows_and_next(items, |p: &PracticeSummary| {
                    (p.name.clone(), p.id.0)
                }))
            }
        },
        |p: &PracticeSummary| {
            vec![
                p.name.clone(),
                p.status.as_str().to_owned(),
                p.appliances.to_string(),
                p.online.to_string(),
                p.on_backup.to_string(),
                p.degraded.to_string(),
                p.offline.to_string(),
                p.sites.to_string(),
                p.open_alerts.to_string(),
                p.tags.join(" "),
                p.id.to_string(),
            ]
        },
    )
    .await
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
    Ok(web::Json(
        fleet::practice(&state.pool, &auth, practice, offline_after_secs(&state)).await?,
    ))
}

/// Replaces a practice's tags (audited).
#[utoipa::path(
    tag = "fleet",
    params(("practice_id" = Uuid, Path)),
    request_body = SetTags,
    responses((status = 200, body = PracticeSummary), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/practices/{practice_id}/tags")]
pub async fn set_practice_tags(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<SetTags>,
) -> Result<web::Json<PracticeSummary>, ApiFailure> {
    Ok(web::Json(
        fleet::set_practice_tags(
            &state.pool,
            &auth,
            path.into_inner(),
            &body,
            offline_after_secs(&state),
        )
        .await?,
    ))
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
    let created =
        fleet::create_practice(&state.pool, &auth, &body.name, body.site_name.as_deref()).await?;
    Ok(HttpResponse::Created().json(created))
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
    let items = fleet::sites(
        &state.pool,
        &auth,
        practice,
        after,
        query.q.as_deref(),
        fetch,
    )
    .await?;
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
    let created = fleet::create_site(&state.pool, &auth, practice, &body.name).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

/// Changes a site's name, address, on-site contact or ISP lines (audited).
#[utoipa::path(
    tag = "fleet",
    params(("site_id" = Uuid, Path)),
    request_body = UpdateSite,
    responses((status = 200, body = SiteView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = []))
)]
#[patch("/sites/{site_id}")]
pub async fn update_site(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<SiteId>,
    body: web::Json<UpdateSite>,
) -> Result<web::Json<SiteView>, ApiFailure> {
    Ok(web::Json(
        fleet::update_site(&state.pool, &auth, path.into_inner(), &body).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApplianceListQuery {
    /// 1 to 500, default 50 (the CSV export ignores it and the cursor: it has every row).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Serial number prefix, part of the practice or site name, model or agent version prefix,
    /// or a tag of the appliance or its practice; case-insensitive.
    pub q: Option<String>,
    pub practice_id: Option<Uuid>,
    /// `primary`, `on_backup`, `degraded` or `offline`.
    pub state: Option<ApplianceState>,
    /// Appliances not offline (`true`) or offline (`false`).
    pub online: Option<bool>,
    /// Appliances whose traffic runs over a backup uplink (`true`), or the others.
    pub on_backup: Option<bool>,
    /// The kind of the uplink carrying traffic: `wired` or `cellular`.
    pub uplink_kind: Option<UplinkKind>,
    /// Appliances with this tag, or in a practice with it.
    pub tag: Option<String>,
    /// The column to sort by, default `serial`.
    pub sort: Option<ApplianceSort>,
    pub order: Option<SortOrder>,
}

impl ApplianceListQuery {
    fn filter(&self) -> Result<ApplianceFilter, ApiFailure> {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        let tag = text(&self.tag)
            .map(|t| normalise_tag(&t))
            .transpose()
            .map_err(ApiFailure::BadRequest)?;
        Ok(ApplianceFilter {
            after: pagination::decode_cursor(self.cursor.as_deref())?,
            q: text(&self.q),
            practice_id: self.practice_id,
            state: self.state,
            online: self.online,
            on_backup: self.on_backup,
            uplink_kind: self.uplink_kind,
            tag,
            sort: self.sort.unwrap_or_default(),
            descending: self.order == Some(SortOrder::Desc),
        })
    }
}

/// Appliances across the fleet: searched, filtered by state, uplink kind, practice and tag, and
/// sorted by any column, a page at a time.
#[utoipa::path(
    tag = "fleet",
    params(ApplianceListQuery),
    responses((status = 200, body = Page<ApplianceView>), (status = 400, body = ApiError), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances")]
pub async fn list_appliances(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ApplianceListQuery>,
) -> Result<web::Json<Page<ApplianceView>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let filter = query.filter()?;
    let items = fleet::appliances(
        &state.pool,
        &auth,
        &filter,
        fetch,
        offline_after_secs(&state),
    )
    .await?;
    let page = pagination::page(items, fetch, fleet::ListedAppliance::cursor);
    Ok(web::Json(Page {
        items: page
            .items
            .into_iter()
            .map(fleet::ListedAppliance::into_view)
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// The appliances the same query lists, every row, as CSV.
#[utoipa::path(
    tag = "fleet",
    params(ApplianceListQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances.csv")]
pub async fn export_appliances(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<ApplianceListQuery>,
) -> Result<HttpResponse, ApiFailure> {
    let mut filter = query.filter()?;
    filter.after = None;
    let pool = state.pool.clone();
    let offline_after = offline_after_secs(&state);
    csv::export(
        "appliances",
        &[
            "serial",
            "practice",
            "site",
            "state",
            "active_uplink",
            "active_uplink_kind",
            "model",
            "agent_version",
            "last_seen",
            "tags",
            "id",
        ],
        move |after: Option<(String, Uuid)>| {
            let (pool, auth) = (pool.clone(), auth.clone());
            let filter = ApplianceFilter {
                after,
                ..filter.clone()
            };
            async move {
                let items =
                    fleet::appliances(&pool, &auth, &filter, csv::EXPORT_FETCH, offline_after)
                        .await?;
                Ok(csv::rows_and_next(items, fleet::ListedAppliance::cursor))
            }
        },
        |listed: &fleet::ListedAppliance| {
            let a = listed.view();
            vec![
                a.serial.clone(),
                a.practice_name.clone(),
                a.site_name.clone(),
                a.state.as_str().to_owned(),
                a.active_uplink.clone().unwrap_or_default(),
                a.active_uplink_kind
                    .map(|k| k.as_str().to_owned())
                    .unwrap_or_default(),
                a.model.clone(),
                a.agent_version.clone(),
                csv::time(a.last_seen),
                a.tags.join(" "),
                a.id.to_string(),
            ]
        },
    )
    .await
}

/// Does one thing to many appliances: tag or untag them, start a drill on each, or replace each
/// one's own policy layer. Each appliance is checked (visible to the caller, and the caller's
/// role allows the action) and audited on its own; the answer says which were done and why the
/// others were skipped.
#[utoipa::path(
    tag = "fleet",
    request_body = BulkApplianceRequest,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/appliances/bulk")]
pub async fn bulk_appliances(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<BulkApplianceRequest>,
) -> Result<web::Json<BulkOutcome>, ApiFailure> {
    let request = body.into_inner();
    let outcome = crate::domain::fleet::bulk::run(
        &state.pool,
        &auth,
        &state.device_link,
        &request.appliance_ids,
        &request.action,
    )
    .await?;
    tracing::info!(
        action = request.action.name(),
        done = outcome.done.len(),
        skipped = outcome.skipped.len(),
        "bulk appliance action"
    );
    Ok(web::Json(outcome))
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
    Ok(web::Json(
        fleet::appliance(&state.pool, &auth, appliance, offline_after_secs(&state)).await?,
    ))
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

impl HistoryQuery {
    fn window(&self, fetch: i64) -> Result<HistoryWindow, ApiFailure> {
        Ok(HistoryWindow {
            after: pagination::decode_cursor(self.cursor.as_deref())?,
            since: self.since,
            fetch,
        })
    }
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
    let records = fleet::telemetry(&state.pool, &auth, appliance, query.window(fetch)?).await?;
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
    let records = fleet::events(&state.pool, &auth, appliance, query.window(fetch)?).await?;
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
    let view =
        fleet::revoke_appliance(&state.pool, &auth, appliance, offline_after_secs(&state)).await?;
    crate::http::enroll::issuer(&state)
        .refresh_crl(&state.pool)
        .await;
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
