//! Package jobs: requests, the worker that builds them, listing and downloads.
//!
//! Who may do what: MSP users and the practice's compliance officers request packages; they and an
//! auditor of the practice (until their access expires, which sign-in enforces on every request)
//! list and download them. Another tenant's or practice's package is "not found". Every request
//! and every download is written to the audit log with the practice's id: the chain of custody.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use sqlx::PgPool;
use stayopen_shared::api::Role;
use stayopen_shared::compliance::{
    CreateEvidencePackage, EvidencePackage, PackageState, PeriodKind,
};
use stayopen_shared::{PracticeId, TenantId};
use uuid::Uuid;

use super::{AuditRecord, ChainHead, EvidenceInput, file_stem, package};
use crate::domain::access::{AuthUser, Principal};
use crate::domain::audit::{self, Actor, Change};
use crate::domain::compliance::{availability, drills, incidents, register};
use crate::infra::clock::Clock;
use crate::infra::db::{self, Tx};
use crate::infra::evidence_key::EvidenceKey;
use stayopen_shared::api::ApiTokenScope;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{0}")]
    BadPeriod(String),
    #[error("no such evidence package")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the package is not ready yet ({0})")]
    NotReady(&'static str),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The longest custom period: a year, leap day included.
pub const MAX_CUSTOM_DAYS: i64 = 366;
/// How long a worker holds a package it builds before another may take it over.
const LEASE: Duration = Duration::minutes(10);
/// Builds tried before a package is marked failed.
const MAX_ATTEMPTS: i32 = 3;

fn last_day_of_month(year: i32, month: u32) -> Option<NaiveDate> {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)?.pred_opt()
}

/// Whether `[from, to]` is a `kind` period that may be built on `today`: a month, quarter or year
/// from its first day to its last; a custom period of at most [`MAX_CUSTOM_DAYS`]; none reaching
/// past today.
pub fn check_period(
    kind: PeriodKind,
    from: NaiveDate,
    to: NaiveDate,
    today: NaiveDate,
) -> Result<(), String> {
    if to < from {
        return Err(format!("the period ends ({to}) before it starts ({from})"));
    }
    if to > today {
        return Err(format!(
            "the period reaches into the future ({to} is after today, {today})"
        ));
    }
    let exact = |expected_to: Option<NaiveDate>, what: &str| {
        if from.day() != 1 || Some(to) != expected_to {
            Err(format!(
                "a {what} runs from its first day to its last (from {from}: to {})",
                expected_to.map_or_else(|| "?".to_owned(), |d| d.to_string())
            ))
        } else {
            Ok(())
        }
    };
    match kind {
        PeriodKind::Month => exact(last_day_of_month(from.year(), from.month()), "month"),
        PeriodKind::Quarter => {
            if !(from.month() - 1).is_multiple_of(3) {
                return Err(format!(
                    "a quarter starts on 1 January, April, July or October, not {from}"
                ));
            }
            exact(last_day_of_month(from.year(), from.month() + 2), "quarter")
        }
        PeriodKind::Year => {
            if from.month() != 1 {
                return Err(format!("a year starts on 1 January, not {from}"));
            }
            exact(NaiveDate::from_ymd_opt(from.year(), 12, 31), "year")
        }
        PeriodKind::Custom => {
            let days = (to - from).num_days() + 1;
            if days > MAX_CUSTOM_DAYS {
                Err(format!(
                    "a custom period is at most {MAX_CUSTOM_DAYS} days, not {days}"
                ))
            } else {
                Ok(())
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    practice_id: Uuid,
    practice_name: String,
    period_kind: PeriodKind,
    period_from: NaiveDate,
    period_to: NaiveDate,
    state: PackageState,
    progress_pct: i16,
    status: String,
    requested_by: String,
    requested_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    key_fingerprint: Option<String>,
}

const SELECT: &str = "SELECT e.id, e.practice_id, p.name AS practice_name, e.period_kind,
        e.period_from, e.period_to, e.state, e.progress_pct, e.status, e.requested_by,
        e.requested_at, e.finished_at, e.size_bytes, e.sha256, e.key_fingerprint
    FROM evidence_packages e JOIN practices p ON p.id = e.practice_id";

impl From<Row> for EvidencePackage {
    fn from(r: Row) -> Self {
        EvidencePackage {
            id: r.id,
            practice_id: PracticeId(r.practice_id),
            practice_name: r.practice_name,
            period: r.period_kind,
            from: r.period_from,
            to: r.period_to,
            state: r.state,
            progress_pct: u8::try_from(r.progress_pct.clamp(0, 100)).unwrap_or(0),
            status: r.status,
            requested_by: r.requested_by,
            requested_at: r.requested_at,
            finished_at: r.finished_at,
            size_bytes: r.size_bytes.and_then(|s| u64::try_from(s).ok()),
            sha256: r.sha256,
            key_fingerprint: r.key_fingerprint,
            download_path: (r.state == PackageState::Ready)
                .then(|| format!("/api/v1/evidence/packages/{}/download", r.id)),
        }
    }
}

async fn fetch(tx: &mut Tx, id: Uuid) -> Result<Option<EvidencePackage>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE e.id = $1")))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(EvidencePackage::from))
}

/// How the requester is named on the package.
async fn requester(tx: &mut Tx, auth: &AuthUser) -> Result<String, sqlx::Error> {
    match auth.principal {
        Principal::User(user) => {
            let name: Option<String> = sqlx::query_scalar(
                "SELECT coalesce(nullif(display_name, ''), email) FROM users WHERE id = $1",
            )
            .bind(user.0)
            .fetch_optional(&mut **tx)
            .await?;
            Ok(name.unwrap_or_else(|| auth.actor().label()))
        }
        Principal::ApiToken(_) => Ok(auth.actor().label()),
    }
}

/// Queues a package for `body` at `now`; 202 material.
pub async fn request(
    pool: &PgPool,
    auth: &AuthUser,
    body: &CreateEvidencePackage,
    now: DateTime<Utc>,
) -> Result<EvidencePackage, EvidenceError> {
    if auth.role == Role::Auditor {
        return Err(EvidenceError::Forbidden(
            "auditors may read and download evidence packages, not request them",
        ));
    }
    if auth.api_scope == Some(ApiTokenScope::Read) {
        return Err(EvidenceError::Forbidden(
            "a read-only API token cannot request evidence packages",
        ));
    }
    if !auth.may_see_practice(body.practice_id) {
        return Err(EvidenceError::NotFound);
    }
    check_period(body.period, body.from, body.to, now.date_naive())
        .map_err(EvidenceError::BadPeriod)?;
    let mut tx = auth.tx(pool).await?;
    let practice_exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM practices WHERE id = $1")
            .bind(body.practice_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    if practice_exists.is_none() {
        return Err(EvidenceError::NotFound);
    }
    let id = Uuid::new_v4();
    let requested_by = requester(&mut tx, auth).await?;
    sqlx::query(
        "INSERT INTO evidence_packages (id, tenant_id, practice_id, period_kind, period_from,
             period_to, requested_by, requested_at, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued')",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(body.practice_id.as_uuid())
    .bind(body.period)
    .bind(body.from)
    .bind(body.to)
    .bind(&requested_by)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "evidence_package.create",
            target_type: "evidence_package",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "practice_id": body.practice_id,
                "period": body.period,
                "from": body.from,
                "to": body.to,
            })),
        },
    )
    .await?;
    let created = fetch(&mut tx, id).await?.ok_or(EvidenceError::NotFound)?;
    tx.commit().await?;
    Ok(created)
}

/// Queues the scheduled package of `practice` for `[from, to]` unless it exists; whether it was
/// queued now.
pub async fn queue_scheduled(
    tx: &mut Tx,
    tenant: TenantId,
    practice: PracticeId,
    kind: PeriodKind,
    (from, to): (NaiveDate, NaiveDate),
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO evidence_packages (id, tenant_id, practice_id, period_kind, period_from,
             period_to, scheduled, requested_by, requested_at, status)
         VALUES ($1, $2, $3, $4, $5, $6, true, 'monthly schedule', $7, 'queued')
         ON CONFLICT (practice_id, period_kind, period_from) WHERE scheduled DO NOTHING",
    )
    .bind(id)
    .bind(tenant.as_uuid())
    .bind(practice.as_uuid())
    .bind(kind)
    .bind(from)
    .bind(to)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        audit::record(
            tx,
            tenant,
            &Actor::System("evidence schedule"),
            Change {
                action: "evidence_package.create",
                target_type: "evidence_package",
                target_id: id.to_string(),
                before: None,
                after: Some(serde_json::json!({
                    "practice_id": practice,
                    "period": kind,
                    "from": from,
                    "to": to,
                    "scheduled": true,
                })),
            },
        )
        .await?;
    }
    Ok(inserted)
}

/// The packages the caller may see, newest first, after the sort key of the previous page.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    practice: Option<PracticeId>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EvidencePackage>, EvidenceError> {
    if let Some(practice) = practice
        && !auth.may_see_practice(practice)
    {
        return Err(EvidenceError::NotFound);
    }
    let mut tx = auth.tx(pool).await?;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT}
         WHERE ($1::uuid IS NULL OR e.practice_id = $1)
           AND ($2::uuid[] IS NULL OR e.practice_id = ANY($2))
           AND ($3::timestamptz IS NULL OR (e.requested_at, e.id) < ($3, $4))
         ORDER BY e.requested_at DESC, e.id DESC LIMIT $5"
    )))
    .bind(practice.map(|p| p.0))
    .bind(auth.practice_filter())
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(EvidencePackage::from).collect())
}

/// One package the caller may see.
pub async fn show(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<EvidencePackage, EvidenceError> {
    let mut tx = auth.tx(pool).await?;
    let found = fetch(&mut tx, id).await?;
    tx.commit().await?;
    found
        .filter(|p| auth.may_see_practice(p.practice_id))
        .ok_or(EvidenceError::NotFound)
}

/// A ready package's zip, for the caller, recorded in the audit log in the same transaction: no
/// download without its record.
pub async fn download(
    pool: &PgPool,
    auth: &AuthUser,
    id: Uuid,
) -> Result<(EvidencePackage, String, Vec<u8>), EvidenceError> {
    let mut tx = auth.tx(pool).await?;
    let package = fetch(&mut tx, id)
        .await?
        .filter(|p| auth.may_see_practice(p.practice_id))
        .ok_or(EvidenceError::NotFound)?;
    let zip: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT zip FROM evidence_packages WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let Some(zip) = zip else {
        return Err(EvidenceError::NotReady(package.state.as_str()));
    };
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "evidence_package.download",
            target_type: "evidence_package",
            target_id: id.to_string(),
            before: None,
            after: Some(serde_json::json!({
                "practice_id": package.practice_id,
                "period": package.period,
                "from": package.from,
                "to": package.to,
                "sha256": package.sha256,
                "size_bytes": package.size_bytes,
            })),
        },
    )
    .await?;
    tx.commit().await?;
    let name = format!(
        "{}.zip",
        file_stem(
            &package.practice_name,
            package.period,
            package.from,
            package.to
        )
    );
    Ok((package, name, zip))
}

fn day_start(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Reads everything the package of `practice` for `[from, to]` shows, in one tenant transaction.
#[allow(clippy::too_many_arguments)]
pub async fn gather(
    tx: &mut Tx,
    tenant: TenantId,
    practice: PracticeId,
    period: PeriodKind,
    (from, to): (NaiveDate, NaiveDate),
    generated_at: DateTime<Utc>,
) -> Result<Option<EvidenceInput>, sqlx::Error> {
    let names: Option<(String, String)> = sqlx::query_as(
        "SELECT t.name, p.name FROM practices p JOIN tenants t ON t.id = p.tenant_id WHERE p.id = $1",
    )
    .bind(practice.as_uuid())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((tenant_name, practice_name)) = names else {
        return Ok(None);
    };
    let (start, end) = (day_start(from), day_start(to) + Duration::days(1));
    // The head first: every entry read below is at or before it.
    let (head_seq, head_hash) = audit::chain_head(tx, tenant).await?;
    let rows = audit::practice_entries(tx, tenant, practice, (start, end), head_seq).await?;
    let audit = rows
        .into_iter()
        .map(|r| AuditRecord {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            before: r.before,
            after: r.after,
            prev_hash: hex::encode(r.prev_hash),
            hash: hex::encode(r.hash),
        })
        .collect();
    Ok(Some(EvidenceInput {
        tenant_id: tenant,
        tenant_name: tenant_name.clone(),
        practice_id: practice,
        practice_name,
        period,
        from,
        to,
        generated_at,
        register: register::for_practice(tx, practice).await?,
        drills: drills::in_period(tx, practice, start, end).await?,
        incidents: incidents::in_period(tx, practice, start, end).await?,
        availability: availability::months(tx, practice, from, to).await?,
        audit,
        chain_head: ChainHead {
            tenant_id: tenant,
            tenant_name,
            seq: head_seq,
            hash: hex::encode(head_hash),
            read_at: generated_at,
        },
    }))
}

async fn set_progress(
    pool: &PgPool,
    tenant: TenantId,
    id: Uuid,
    pct: i16,
    status: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = db::tenant_tx(pool, tenant).await?;
    sqlx::query(
        "UPDATE evidence_packages SET progress_pct = $2, status = $3, lease_until = $4
         WHERE id = $1 AND state = 'building'",
    )
    .bind(id)
    .bind(pct)
    .bind(status)
    .bind(now + LEASE)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Claims one package of `tenant` to build at `now` (queued, or building past its lease), skipping
/// rows another worker holds.
async fn claim(
    pool: &PgPool,
    tenant: TenantId,
    now: DateTime<Utc>,
) -> Result<Option<(Uuid, PracticeId, PeriodKind, NaiveDate, NaiveDate, i32)>, sqlx::Error> {
    let mut tx = db::tenant_tx(pool, tenant).await?;
    let row: Option<(Uuid, Uuid, PeriodKind, NaiveDate, NaiveDate, i32)> = sqlx::query_as(
        "SELECT id, practice_id, period_kind, period_from, period_to, attempts
         FROM evidence_packages
         WHERE state = 'queued' OR (state = 'building' AND lease_until < $1)
         ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, practice, kind, from, to, attempts)) = row else {
        return Ok(None);
    };
    sqlx::query(
        "UPDATE evidence_packages SET state = 'building', progress_pct = 5,
             status = 'gathering the records', lease_until = $2, attempts = attempts + 1
         WHERE id = $1",
    )
    .bind(id)
    .bind(now + LEASE)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((
        id,
        PracticeId(practice),
        kind,
        from,
        to,
        attempts + 1,
    )))
}

/// Builds at most one queued package of any tenant; the id of the package it finished (ready or
/// failed), `None` when there was nothing to do.
pub async fn build_next(
    pool: &PgPool,
    key: &Arc<EvidenceKey>,
    clock: &Clock,
) -> Result<Option<Uuid>, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_evidence_work($1)")
        .bind(clock.now())
        .fetch_all(pool)
        .await?;
    for tenant in tenants.into_iter().map(TenantId) {
        let Some((id, practice, kind, from, to, attempts)) =
            claim(pool, tenant, clock.now()).await?
        else {
            continue;
        };
        let outcome = build_claimed(pool, key, clock, tenant, id, practice, kind, (from, to)).await;
        let mut tx = db::tenant_tx(pool, tenant).await?;
        match outcome {
            Ok(built) => {
                sqlx::query(
                    "UPDATE evidence_packages SET state = 'ready', progress_pct = 100,
                         status = 'ready', zip = $2, size_bytes = $3, sha256 = $4,
                         key_fingerprint = $5, finished_at = $6, lease_until = NULL
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&built.zip)
                .bind(built.zip.len() as i64)
                .bind(&built.sha256)
                .bind(&built.key_fingerprint)
                .bind(clock.now())
                .execute(&mut *tx)
                .await?;
                tracing::info!(%id, size = built.zip.len(), "evidence package ready");
            }
            Err(problem) if attempts < MAX_ATTEMPTS => {
                tracing::warn!(%id, attempts, %problem, "evidence package build failed; will retry");
                sqlx::query(
                    "UPDATE evidence_packages SET state = 'queued', progress_pct = 0,
                         status = $2, lease_until = NULL WHERE id = $1",
                )
                .bind(id)
                .bind(format!("queued again after a failed attempt: {problem}"))
                .execute(&mut *tx)
                .await?;
            }
            Err(problem) => {
                tracing::error!(%id, %problem, "evidence package failed");
                sqlx::query(
                    "UPDATE evidence_packages SET state = 'failed', status = $2,
                         finished_at = $3, lease_until = NULL WHERE id = $1",
                )
                .bind(id)
                .bind(format!("failed: {problem}"))
                .bind(clock.now())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        return Ok(Some(id));
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
async fn build_claimed(
    pool: &PgPool,
    key: &Arc<EvidenceKey>,
    clock: &Clock,
    tenant: TenantId,
    id: Uuid,
    practice: PracticeId,
    kind: PeriodKind,
    period: (NaiveDate, NaiveDate),
) -> Result<package::Package, String> {
    let generated_at = clock.now();
    let mut tx = db::tenant_tx(pool, tenant)
        .await
        .map_err(|e| e.to_string())?;
    let input = gather(&mut tx, tenant, practice, kind, period, generated_at)
        .await
        .map_err(|e| format!("reading the records: {e}"))?
        .ok_or_else(|| "the practice no longer exists".to_owned())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    set_progress(
        pool,
        tenant,
        id,
        40,
        "writing summary.pdf, the tables and the manifest",
        clock.now(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let key = key.clone();
    let built = tokio::task::spawn_blocking(move || package::build(&input, &key))
        .await
        .map_err(|e| format!("the build stopped: {e}"))?
        .map_err(|e| e.to_string())?;
    set_progress(pool, tenant, id, 90, "storing the package", clock.now())
        .await
        .map_err(|e| e.to_string())?;
    Ok(built)
}

/// Builds queued packages one after another, then waits `poll` before looking again.
pub async fn worker_loop(
    pool: PgPool,
    key: Arc<EvidenceKey>,
    clock: Clock,
    poll: std::time::Duration,
) {
    loop {
        match build_next(&pool, &key, &clock).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "evidence worker: database error"),
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn months_quarters_and_years_must_be_exact_calendar_periods() {
        let today = day("2026-12-03");
        let ok = |k, f, t| check_period(k, day(f), day(t), today);
        assert!(ok(PeriodKind::Month, "2026-11-01", "2026-11-30").is_ok());
        assert!(ok(PeriodKind::Month, "2024-02-01", "2024-02-29").is_ok());
        assert!(ok(PeriodKind::Month, "2026-11-01", "2026-11-29").is_err());
        assert!(ok(PeriodKind::Month, "2026-11-02", "2026-11-30").is_err());
        assert!(ok(PeriodKind::Quarter, "2026-07-01", "2026-09-30").is_ok());
        assert!(ok(PeriodKind::Quarter, "2026-08-01", "2026-10-31").is_err());
        assert!(ok(PeriodKind::Year, "2025-01-01", "2025-12-31").is_ok());
        assert!(ok(PeriodKind::Year, "2025-01-01", "2025-12-30").is_err());
    }

    #[test]
    fn custom_periods_are_at_most_366_days_and_nothing_reaches_past_today() {
        let today = day("2026-12-03");
        assert!(
            check_period(
                PeriodKind::Custom,
                day("2025-12-03"),
                day("2026-12-03"),
                today
            )
            .is_ok()
        );
        assert!(
            check_period(
                PeriodKind::Custom,
                day("2025-12-01"),
                day("2026-12-03"),
                today
            )
            .is_err()
        );
        assert!(
            check_period(
                PeriodKind::Custom,
                day("2026-12-01"),
                day("2026-12-04"),
                today
            )
            .is_err()
        );
        assert!(
            check_period(
                PeriodKind::Month,
                day("2026-12-01"),
                day("2026-12-31"),
                today
            )
            .is_err()
        );
        assert!(
            check_period(
                PeriodKind::Custom,
                day("2026-12-02"),
                day("2026-12-01"),
                today
            )
            .is_err()
        );
    }
}
