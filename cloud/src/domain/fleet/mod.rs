//! MSPs' practices, sites and appliances as the caller may see them, an appliance's telemetry and
//! events, and revoking an appliance. Row-level security confines every query to the caller's MSP;
//! `practice_filter` confines compliance officers and auditors to their practices. Something
//! outside the caller's scope is indistinguishable from something that does not exist.
//!
//! Lists read `fetch` rows after the cursor key `after`: the caller asks for one more than its
//! page to learn whether another page follows, and cuts it off.
//!
//! - [`overview`]: fleet totals and an appliance's latency and loss over time.
//! - [`maintenance`]: maintenance windows, during which alerts notify nobody.
//! - [`schedule`]: a practice's time zone and clinic hours.

pub mod bulk;
pub mod maintenance;
pub mod overview;
pub mod schedule;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::{
    ApplianceSort, ApplianceState, ApplianceView, EventRecord, PracticeStatus, PracticeSummary,
    PracticeView, SetTags, SiteIsp, SiteView, TelemetryRecord, UpdateSite, UplinkKind,
};
use stayopen_shared::telemetry::Telemetry;
use stayopen_shared::{ApplianceId, MessageId, PracticeId, SiteId};
use uuid::Uuid;

use crate::domain::access::visibility::{visible_appliance, visible_practice};
use crate::domain::access::{AccessError, AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The thing does not exist (or the caller may not see it).
    #[error("{0}")]
    NotFound(&'static str),
    /// A name or a time that breaks the rules; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// A stored telemetry or event body no longer reads as its type.
    #[error("stored {what} unreadable: {source}")]
    Unreadable {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The first page of practices with their appliances, as the dashboard's fleet view shows them.
#[derive(Debug, Clone)]
pub struct FleetSnapshot {
    pub tenant_name: String,
    pub generated_at: DateTime<Utc>,
    pub practices: Vec<PracticeView>,
}

#[derive(sqlx::FromRow)]
struct ApplianceRow {
    id: Uuid,
    practice_id: Uuid,
    practice_name: String,
    site_id: Uuid,
    site_name: String,
    serial: String,
    model: String,
    agent_version: String,
    state: String,
    last_seen: Option<DateTime<Utc>>,
    active_uplink: Option<String>,
    active_uplink_kind: Option<String>,
    last_telemetry: Option<serde_json::Value>,
    tags: Vec<String>,
}

/// An appliance with its practice and site, its [`ApplianceState`] (the database's
/// `stayopen_appliance_state`, the one definition every list and count uses) with the heartbeat in
/// seconds as parameter `$offline_after`, and the kind of the uplink carrying its traffic.
fn appliance_select(offline_after: &str) -> String {
    format!(
        "SELECT a.id, a.practice_id, p.name AS practice_name, a.site_id, s.name AS site_name,
            a.serial, a.model, a.agent_version,
            stayopen_appliance_state(a.online, a.last_seen, a.on_backup, a.active_uplink,
                                     a.last_telemetry, {offline_after}) AS state,
            a.last_seen, a.active_uplink,
            CASE WHEN a.active_uplink IS NULL THEN NULL
                 WHEN jsonb_path_exists(a.last_telemetry,
                          '$.uplinks[*] ? (@.name == $n && exists(@.cellular))',
                          jsonb_build_object('n', a.active_uplink)) THEN 'cellular'
                 ELSE 'wired' END AS active_uplink_kind,
            a.last_telemetry, a.tags
         FROM appliances a JOIN sites s ON s.id = a.site_id JOIN practices p ON p.id = a.practice_id"
    )
}

impl ApplianceRow {
    fn view(self) -> ApplianceView {
        let telemetry = self
            .last_telemetry
            .and_then(|v| serde_json::from_value::<Telemetry>(v).ok());
        let outbox = telemetry.as_ref().and_then(|t| t.outbox);
        let (uplinks, apps, tunnel) = telemetry
            .map(|t| (t.uplinks, t.apps, t.tunnel))
            .unwrap_or_default();
        let state = ApplianceState::parse(&self.state).unwrap_or_default();
        ApplianceView {
            id: ApplianceId(self.id),
            practice_id: PracticeId(self.practice_id),
            practice_name: self.practice_name,
            site_id: SiteId(self.site_id),
            site_name: self.site_name,
            serial: self.serial,
            model: self.model,
            agent_version: self.agent_version,
            online: state != ApplianceState::Offline,
            state,
            active_uplink: self.active_uplink,
            active_uplink_kind: self
                .active_uplink_kind
                .and_then(|k| k.parse::<UplinkKind>().ok()),
            last_seen: self.last_seen,
            uplinks,
            outbox,
            apps,
            tunnel,
            tags: self.tags,
        }
    }
}

/// The fleet, practice by practice with their appliances: `fetch` practices by name after
/// `after`, optionally those whose name contains `q`.
pub async fn fleet(
    pool: &PgPool,
    auth: &AuthUser,
    after: Option<(String, Uuid)>,
    q: Option<&str>,
    fetch: i64,
    offline_after_secs: u32,
    now: DateTime<Utc>,
) -> Result<FleetSnapshot, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let tenant_name: String = sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(auth.tenant_id.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    let (after_name, after_id) = after.unzip();
    let practices: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, name FROM practices
         WHERE ($1::uuid[] IS NULL OR id = ANY($1))
           AND ($2::text IS NULL OR (name, id) > ($2, $3))
           AND ($4::text IS NULL OR name ILIKE '%' || $4 || '%')
         ORDER BY name, id LIMIT $5",
    )
    .bind(auth.practice_filter())
    .bind(after_name)
    .bind(after_id)
    .bind(q)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = practices.iter().map(|(id, _)| *id).collect();
    let appliances: Vec<ApplianceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} WHERE a.practice_id = ANY($1) ORDER BY s.name, a.serial, a.id",
        appliance_select("$2")
    )))
    .bind(&ids)
    .bind(f64::from(offline_after_secs))
    .fetch_all(&mut *tx)
    .await?;
    let mut by_practice: BTreeMap<Uuid, Vec<ApplianceView>> = BTreeMap::new();
    for row in appliances {
        by_practice
            .entry(row.practice_id)
            .or_default()
            .push(row.view());
    }
    let practices = practices
        .into_iter()
        .map(|(id, name)| PracticeView {
            id: PracticeId(id),
            name,
            appliances: by_practice.remove(&id).unwrap_or_default(),
        })
        .collect();
    Ok(FleetSnapshot {
        tenant_name,
        generated_at: now,
        practices,
    })
}

#[derive(sqlx::FromRow)]
struct PracticeSummaryRow {
    id: Uuid,
    name: String,
    sites: i64,
    appliances: i64,
    online: i64,
    on_backup: i64,
    degraded: i64,
    open_alerts: i64,
    status: String,
    tags: Vec<String>,
}

/// Practices with their roll-up from their appliances' states (`stayopen_appliance_state`, the
/// heartbeat in seconds as `$1`), revoked boxes left out: every appliance offline is `offline`,
/// some on a backup uplink `on_backup`, some degraded or offline `degraded`, else `primary`.
/// Callers add their WHERE on `p` and the outer `status`.
const PRACTICE_SUMMARY_SELECT: &str = "SELECT * FROM (
     SELECT p.id, p.name, p.tags,
        (SELECT count(*) FROM sites s WHERE s.practice_id = p.id) AS sites,
        c.appliances, c.appliances - c.offline AS online, c.on_backup, c.degraded,
        (SELECT count(*) FROM alerts al WHERE al.practice_id = p.id AND al.state <> 'resolved') AS open_alerts,
        CASE WHEN c.appliances = 0 THEN 'empty'
             WHEN c.offline = c.appliances THEN 'offline'
             WHEN c.on_backup > 0 THEN 'on_backup'
             WHEN c.degraded > 0 OR c.offline > 0 THEN 'degraded'
             ELSE 'primary' END AS status
     FROM practices p
     CROSS JOIN LATERAL (
         SELECT count(*) AS appliances,
                count(*) FILTER (WHERE state = 'offline') AS offline,
                count(*) FILTER (WHERE state = 'on_backup') AS on_backup,
                count(*) FILTER (WHERE state = 'degraded') AS degraded
         FROM (SELECT stayopen_appliance_state(a.online, a.last_seen, a.on_backup, a.active_uplink,
                                               a.last_telemetry, $1) AS state
               FROM appliances a WHERE a.practice_id = p.id AND a.revoked_at IS NULL) states) c";

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
            degraded: count(row.degraded),
            offline: count(row.appliances - row.online),
            open_alerts: count(row.open_alerts),
            status: PracticeStatus::parse(&row.status).unwrap_or(PracticeStatus::Empty),
            tags: row.tags,
        }
    }
}

/// Which practices to list.
#[derive(Debug, Clone, Default)]
pub struct PracticeFilter {
    /// The sort key (name, id) of the last practice of the previous page.
    pub after: Option<(String, Uuid)>,
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
    /// Only practices whose roll-up is this.
    pub status: Option<PracticeStatus>,
}

/// Practices with their roll-up counts, by name.
pub async fn practices(
    pool: &PgPool,
    auth: &AuthUser,
    filter: &PracticeFilter,
    fetch: i64,
    offline_after_secs: u32,
) -> Result<Vec<PracticeSummary>, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let (after_name, after_id) = filter.after.clone().unzip();
    let rows: Vec<PracticeSummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{PRACTICE_SUMMARY_SELECT}
         WHERE ($2::uuid[] IS NULL OR p.id = ANY($2))
           AND ($3::text IS NULL OR (p.name, p.id) > ($3, $4))
           AND ($5::text IS NULL OR p.name ILIKE '%' || $5 || '%' OR lower($5) = ANY(p.tags))) practice
         WHERE ($7::text IS NULL OR status = $7)
         ORDER BY name, id LIMIT $6"
    )))
    .bind(f64::from(offline_after_secs))
    .bind(auth.practice_filter())
    .bind(after_name)
    .bind(after_id)
    .bind(filter.q.as_deref())
    .bind(fetch)
    .bind(filter.status.map(PracticeStatus::as_str))
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(PracticeSummary::from).collect())
}

/// One practice with its roll-up.
pub async fn practice(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    offline_after_secs: u32,
) -> Result<PracticeSummary, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    summary_of(&mut tx, practice, offline_after_secs).await
}

/// Replaces a practice's tags (MSP staff; audited with the tags before and after), which the
/// fleet-wide lists search and filter by.
pub async fn set_practice_tags(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    tags: &SetTags,
    offline_after_secs: u32,
) -> Result<PracticeSummary, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    auth.require(Permission::Configure)?;
    let tags = tags.normalised().map_err(FleetError::Invalid)?;
    let before: Vec<String> =
        sqlx::query_scalar("SELECT tags FROM practices WHERE id = $1 FOR UPDATE")
            .bind(practice.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("UPDATE practices SET tags = $2 WHERE id = $1")
        .bind(practice.as_uuid())
        .bind(&tags)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "practice.tags",
            target_type: "practice",
            target_id: practice.to_string(),
            before: Some(serde_json::json!({ "tags": before })),
            after: Some(serde_json::json!({ "tags": tags })),
        },
    )
    .await?;
    let summary = summary_of(&mut tx, practice, offline_after_secs).await?;
    tx.commit().await?;
    Ok(summary)
}

/// One practice's roll-up, read in the caller's transaction (after its visibility check).
async fn summary_of(
    tx: &mut Tx,
    practice: PracticeId,
    offline_after_secs: u32,
) -> Result<PracticeSummary, FleetError> {
    let row: PracticeSummaryRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{PRACTICE_SUMMARY_SELECT} WHERE p.id = $2) practice"
    )))
    .bind(f64::from(offline_after_secs))
    .bind(practice.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.into())
}

/// A practice or site name: trimmed, 1 to 200 characters.
fn checked_name<'a>(field: &str, value: &'a str) -> Result<&'a str, FleetError> {
    let value = value.trim();
    if value.is_empty() || value.len() > 200 {
        return Err(FleetError::Invalid(format!(
            "{field} must be 1 to 200 characters"
        )));
    }
    Ok(value)
}

/// The site a new practice starts with when none is named.
const FIRST_SITE: &str = "Main office";

/// Creates a practice and its first site (`site_name`, by default "Main office"); audited.
pub async fn create_practice(
    pool: &PgPool,
    auth: &AuthUser,
    name: &str,
    site_name: Option<&str>,
) -> Result<PracticeSummary, FleetError> {
    let name = checked_name("name", name)?;
    let site_name = checked_name("site_name", site_name.unwrap_or(FIRST_SITE))?;
    let mut tx = auth.tx(pool).await?;
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
        return Err(FleetError::Conflict(format!(
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
    Ok(PracticeSummary {
        id: PracticeId(id),
        name: name.to_owned(),
        sites: 1,
        appliances: 0,
        online: 0,
        on_backup: 0,
        degraded: 0,
        offline: 0,
        open_alerts: 0,
        status: PracticeStatus::Empty,
        tags: Vec::new(),
    })
}

#[derive(sqlx::FromRow)]
struct SiteRow {
    id: Uuid,
    practice_id: Uuid,
    name: String,
    address: String,
    contact_name: String,
    contact_phone: String,
    contact_email: String,
    isps: sqlx::types::Json<Vec<SiteIsp>>,
}

impl From<SiteRow> for SiteView {
    fn from(row: SiteRow) -> Self {
        SiteView {
            id: SiteId(row.id),
            practice_id: PracticeId(row.practice_id),
            name: row.name,
            address: row.address,
            contact_name: row.contact_name,
            contact_phone: row.contact_phone,
            contact_email: row.contact_email,
            isps: row.isps.0,
        }
    }
}

const SITE_SELECT: &str = "SELECT id, practice_id, name, address, contact_name, contact_phone,
        contact_email, isps FROM sites";

/// A practice's sites by name, optionally those whose name contains `q`.
pub async fn sites(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    after: Option<(String, Uuid)>,
    q: Option<&str>,
    fetch: i64,
) -> Result<Vec<SiteView>, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    let (after_name, after_id) = after.unzip();
    let rows: Vec<SiteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SITE_SELECT} WHERE practice_id = $1
           AND ($2::text IS NULL OR (name, id) > ($2, $3))
           AND ($4::text IS NULL OR name ILIKE '%' || $4 || '%')
         ORDER BY name, id LIMIT $5"
    )))
    .bind(practice.as_uuid())
    .bind(after_name)
    .bind(after_id)
    .bind(q)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(SiteView::from).collect())
}

/// Changes a site's name, address, on-site contact or ISP lines (MSP staff; audited with the
/// values before and after). A site the caller may not see is not found.
pub async fn update_site(
    pool: &PgPool,
    auth: &AuthUser,
    site: SiteId,
    update: &UpdateSite,
) -> Result<SiteView, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let before: Option<SiteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SITE_SELECT} WHERE id = $1 AND ($2::uuid[] IS NULL OR practice_id = ANY($2)) FOR UPDATE"
    )))
    .bind(site.as_uuid())
    .bind(auth.practice_filter())
    .fetch_optional(&mut *tx)
    .await?;
    let before = SiteView::from(before.ok_or(FleetError::NotFound("no such site"))?);
    auth.require(Permission::Configure)?;
    update.validate().map_err(FleetError::Invalid)?;
    fn trimmed(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim)
    }
    let isps = update.isps.as_ref().map(|lines| {
        lines
            .iter()
            .map(|l| SiteIsp {
                uplink: l.uplink.trim().to_owned(),
                isp: l.isp.trim().to_owned(),
                circuit_id: l.circuit_id.trim().to_owned(),
                support_phone: l.support_phone.trim().to_owned(),
            })
            .collect::<Vec<_>>()
    });
    let updated: Option<SiteRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sites SET name = coalesce($2, name), address = coalesce($3, address),
                contact_name = coalesce($4, contact_name), contact_phone = coalesce($5, contact_phone),
                contact_email = coalesce($6, contact_email), isps = coalesce($7, isps)
         WHERE id = $1
         RETURNING {}",
        SITE_SELECT
            .trim_start_matches("SELECT ")
            .trim_end_matches(" FROM sites")
    )))
    .bind(site.as_uuid())
    .bind(trimmed(&update.name))
    .bind(trimmed(&update.address))
    .bind(trimmed(&update.contact_name))
    .bind(trimmed(&update.contact_phone))
    .bind(trimmed(&update.contact_email))
    .bind(isps.map(sqlx::types::Json))
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            FleetError::Conflict("the practice already has a site with that name".into())
        }
        e => FleetError::Database(e),
    })?;
    let after = SiteView::from(updated.ok_or(FleetError::NotFound("no such site"))?);
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "site.update",
            target_type: "site",
            target_id: site.to_string(),
            before: serde_json::to_value(&before).ok(),
            after: serde_json::to_value(&after).ok(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Adds a site to a practice; audited.
pub async fn create_site(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    name: &str,
) -> Result<SiteView, FleetError> {
    let name = checked_name("name", name)?;
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
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
        return Err(FleetError::Conflict(format!(
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
    Ok(SiteView {
        id: SiteId(id),
        practice_id: practice,
        name: name.to_owned(),
        address: String::new(),
        contact_name: String::new(),
        contact_phone: String::new(),
        contact_email: String::new(),
        isps: Vec::new(),
    })
}

/// Which appliances to list, and in which order.
#[derive(Debug, Clone, Default)]
pub struct ApplianceFilter {
    /// The cursor of the previous page's last appliance ([`ListedAppliance::cursor`]).
    pub after: Option<(String, Uuid)>,
    /// Finds appliances by serial prefix, practice or site name (any part), model or agent
    /// version prefix, or one of their or their practice's tags; case-insensitive.
    pub q: Option<String>,
    pub practice_id: Option<Uuid>,
    pub state: Option<ApplianceState>,
    /// Appliances not offline (`true`) or offline (`false`).
    pub online: Option<bool>,
    /// Appliances on a backup uplink (`true`), or the others.
    pub on_backup: Option<bool>,
    /// The kind of the uplink carrying traffic.
    pub uplink_kind: Option<UplinkKind>,
    /// The appliance or its practice has this tag.
    pub tag: Option<String>,
    pub sort: ApplianceSort,
    pub descending: bool,
}

/// `q` for `LIKE`: its own `%`, `_` and `\` match themselves.
pub fn like_escaped(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SQL of the text every row is ordered by for `sort`, ties broken by serial (and then by
/// id). The state sorts worst first; times as ISO text, so one text cursor serves every column.
fn sort_key(sort: ApplianceSort) -> &'static str {
    match sort {
        ApplianceSort::Serial => "serial",
        ApplianceSort::Practice => "practice_name || ' ' || site_name || ' ' || serial",
        ApplianceSort::Site => "site_name || ' ' || serial",
        ApplianceSort::Model => "model || ' ' || serial",
        ApplianceSort::AgentVersion => "agent_version || ' ' || serial",
        ApplianceSort::State => {
            "CASE state WHEN 'offline' THEN '0' WHEN 'on_backup' THEN '1'
                        WHEN 'degraded' THEN '2' ELSE '3' END || serial"
        }
        ApplianceSort::ActiveUplink => "coalesce(active_uplink, '') || ' ' || serial",
        ApplianceSort::LastSeen => {
            "coalesce(to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '')"
        }
    }
}

/// An appliance of a listing, with the key the listing is ordered by: the next page's cursor is
/// the last one's `(sort_key, id)`, as the database computed it, so cursor and order never differ.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedAppliance {
    #[sqlx(flatten)]
    row: ApplianceRowWithView,
    pub sort_key: String,
}

/// [`ApplianceRow`], turned into its view as it is read.
#[derive(Debug, Clone)]
struct ApplianceRowWithView(ApplianceView);

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ApplianceRowWithView {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        ApplianceRow::from_row(row).map(|r| ApplianceRowWithView(r.view()))
    }
}

impl ListedAppliance {
    pub fn view(&self) -> &ApplianceView {
        &self.row.0
    }

    pub fn into_view(self) -> ApplianceView {
        self.row.0
    }

    /// Where the page after this appliance starts.
    pub fn cursor(&self) -> (String, Uuid) {
        (self.sort_key.clone(), self.row.0.id.0)
    }
}

/// Appliances matching `filter`, `fetch` of them after its cursor, in its order. The whole
/// listing is one query over the caller's appliances: fast enough at 10,000 (`bash
/// infra/scripts/bench-fleet.sh` measures it), and every filter reads the same state the totals count.
pub async fn appliances(
    pool: &PgPool,
    auth: &AuthUser,
    filter: &ApplianceFilter,
    fetch: i64,
    offline_after_secs: u32,
) -> Result<Vec<ListedAppliance>, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let (after_key, after_id) = filter.after.clone().unzip();
    let (direction, beyond) = if filter.descending {
        ("DESC", "<")
    } else {
        ("ASC", ">")
    };
    let key = sort_key(filter.sort);
    let rows: Vec<ListedAppliance> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (
             SELECT listed.*, {key} AS sort_key FROM ({select}
                 WHERE ($1::uuid[] IS NULL OR a.practice_id = ANY($1))
                   AND ($2::uuid IS NULL OR a.practice_id = $2)
                   AND ($3::text IS NULL
                        OR a.serial ILIKE $3 || '%'
                        OR p.name ILIKE '%' || $3 || '%'
                        OR s.name ILIKE '%' || $3 || '%'
                        OR a.model ILIKE $3 || '%'
                        OR a.agent_version ILIKE $3 || '%'
                        OR lower($4) = ANY(a.tags || p.tags))
                   AND ($5::text IS NULL OR $5 = ANY(a.tags || p.tags))
             ) listed
         ) keyed
         WHERE ($7::text IS NULL OR state = $7)
           AND ($8::boolean IS NULL OR (state <> 'offline') = $8)
           AND ($9::boolean IS NULL OR (state = 'on_backup') = $9)
           AND ($10::text IS NULL OR active_uplink_kind = $10)
           AND ($11::text IS NULL OR (sort_key, id) {beyond} ($11, $12))
         ORDER BY sort_key {direction}, id {direction} LIMIT $13",
        select = appliance_select("$6"),
    )))
    .bind(auth.practice_filter())
    .bind(filter.practice_id)
    .bind(filter.q.as_deref().map(like_escaped))
    .bind(filter.q.as_deref().map(str::trim))
    .bind(filter.tag.as_deref())
    .bind(f64::from(offline_after_secs))
    .bind(filter.state.map(ApplianceState::as_str))
    .bind(filter.online)
    .bind(filter.on_backup)
    .bind(filter.uplink_kind.map(UplinkKind::as_str))
    .bind(after_key)
    .bind(after_id)
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}

/// One appliance.
pub async fn appliance(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
    offline_after_secs: u32,
) -> Result<ApplianceView, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    load_appliance(&mut tx, appliance, offline_after_secs).await
}

/// An appliance as the API shows it (the caller has checked it is visible).
async fn load_appliance(
    tx: &mut Tx,
    appliance: ApplianceId,
    offline_after_secs: u32,
) -> Result<ApplianceView, FleetError> {
    let row: ApplianceRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} WHERE a.id = $1",
        appliance_select("$2")
    )))
    .bind(appliance.as_uuid())
    .bind(f64::from(offline_after_secs))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.view())
}

/// Which page of an appliance's history to read: newest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryWindow {
    /// The sort key (sent_at, message_id) of the last record of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Only records sent at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub fetch: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    message_id: Uuid,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    body: serde_json::Value,
}

/// One page of `table` (`telemetry` or `appliance_events`) for a visible appliance.
async fn history(
    pool: &PgPool,
    auth: &AuthUser,
    table: &'static str,
    appliance: ApplianceId,
    window: HistoryWindow,
) -> Result<Vec<HistoryRow>, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    let (after_sent, after_id) = window.after.unzip();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT message_id, sent_at, received_at, body FROM {table}
         WHERE appliance_id = $1
           AND ($2::timestamptz IS NULL OR (sent_at, message_id) < ($2, $3))
           AND ($4::timestamptz IS NULL OR sent_at >= $4)
         ORDER BY sent_at DESC, message_id DESC LIMIT $5"
    )))
    .bind(appliance.as_uuid())
    .bind(after_sent)
    .bind(after_id)
    .bind(window.since)
    .bind(window.fetch)
    .fetch_all(&mut *tx)
    .await?)
}

/// An appliance's telemetry, newest first.
pub async fn telemetry(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
    window: HistoryWindow,
) -> Result<Vec<TelemetryRecord>, FleetError> {
    history(pool, auth, "telemetry", appliance, window)
        .await?
        .into_iter()
        .map(|row| {
            Ok(TelemetryRecord {
                message_id: MessageId(row.message_id),
                sent_at: row.sent_at,
                received_at: row.received_at,
                telemetry: serde_json::from_value(row.body).map_err(|source| {
                    FleetError::Unreadable {
                        what: "telemetry",
                        source,
                    }
                })?,
            })
        })
        .collect()
}

/// An appliance's events (failovers, failbacks, drills …), newest first.
pub async fn events(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
    window: HistoryWindow,
) -> Result<Vec<EventRecord>, FleetError> {
    history(pool, auth, "appliance_events", appliance, window)
        .await?
        .into_iter()
        .map(|row| {
            Ok(EventRecord {
                message_id: MessageId(row.message_id),
                appliance_id: appliance,
                sent_at: row.sent_at,
                received_at: row.received_at,
                event: serde_json::from_value(row.body).map_err(|source| {
                    FleetError::Unreadable {
                        what: "event",
                        source,
                    }
                })?,
            })
        })
        .collect()
}

/// Revokes an appliance in the database (audited): it is marked revoked and offline, its
/// re-enrolment approval is withdrawn, its certificates are withdrawn and its pending commands
/// expire. Neither enrolling again nor renewing reinstates it; only an MSP admin's restore does.
///
/// The caller then rewrites the revocation list and closes the appliance's broker session; both
/// happen after the commit, so a failed revocation never leaves a closed session behind.
pub async fn revoke_appliance(
    pool: &PgPool,
    auth: &AuthUser,
    appliance: ApplianceId,
    offline_after_secs: u32,
) -> Result<ApplianceView, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_appliance(&mut tx, auth, appliance).await?;
    // After the visibility check, so that an appliance the caller may not see is not found
    // rather than forbidden.
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
    let view = load_appliance(&mut tx, appliance, offline_after_secs).await?;
    tx.commit().await?;
    Ok(view)
}
