//! Maintenance windows: planned work on a practice (or one appliance) during which alerts are
//! recorded but notify nobody. Listing follows the caller's practices; planning and cancelling are
//! audited.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use stayopen_shared::alerts::{CreateMaintenanceWindow, MaintenanceWindowView};
use stayopen_shared::{ApplianceId, PracticeId};
use uuid::Uuid;

use super::FleetError;
use crate::domain::access::AuthUser;
use crate::domain::access::visibility::visible_practice;
use crate::domain::audit::{self, Change};

/// The longest maintenance window one may plan.
const LONGEST_WINDOW: Duration = Duration::days(7);

#[derive(sqlx::FromRow)]
struct WindowRow {
    id: Uuid,
    practice_id: Uuid,
    appliance_id: Option<Uuid>,
    appliance_serial: Option<String>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

/// A window's columns with its appliance's serial, over `maintenance_windows w`.
const WINDOW_COLUMNS: &str = "w.id, w.practice_id, w.appliance_id,
    (SELECT a.serial FROM appliances a WHERE a.id = w.appliance_id) AS appliance_serial,
    w.starts_at, w.ends_at, w.reason, w.created_by, w.created_at";

impl From<WindowRow> for MaintenanceWindowView {
    fn from(row: WindowRow) -> Self {
        MaintenanceWindowView {
            id: row.id,
            practice_id: PracticeId(row.practice_id),
            appliance_id: row.appliance_id.map(ApplianceId),
            appliance_serial: row.appliance_serial,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            reason: row.reason,
            created_by: row.created_by,
            created_at: row.created_at,
        }
    }
}

/// The window's reason, trimmed, if the window is one that may be planned at `now`: a reason of 1
/// to 500 characters, an end after its start and after `now`, at most [`LONGEST_WINDOW`] long.
fn checked(request: &CreateMaintenanceWindow, now: DateTime<Utc>) -> Result<&str, FleetError> {
    let reason = request.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(FleetError::Invalid(
            "reason must be 1 to 500 characters".into(),
        ));
    }
    if request.ends_at <= request.starts_at {
        return Err(FleetError::Invalid(
            "ends_at must be after starts_at".into(),
        ));
    }
    if request.ends_at <= now {
        return Err(FleetError::Invalid("ends_at is in the past".into()));
    }
    if request.ends_at - request.starts_at > LONGEST_WINDOW {
        return Err(FleetError::Invalid(
            "a maintenance window lasts at most 7 days".into(),
        ));
    }
    Ok(reason)
}

/// Plans a maintenance window on a practice the caller sees, or on one of its appliances; audited.
pub async fn create(
    pool: &PgPool,
    auth: &AuthUser,
    request: &CreateMaintenanceWindow,
    now: DateTime<Utc>,
) -> Result<MaintenanceWindowView, FleetError> {
    let reason = checked(request, now)?;
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, request.practice_id).await?;
    if let Some(appliance) = request.appliance_id {
        let of_practice: Option<bool> =
            sqlx::query_scalar("SELECT practice_id = $2 FROM appliances WHERE id = $1")
                .bind(appliance.as_uuid())
                .bind(request.practice_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
        match of_practice {
            None => return Err(FleetError::NotFound("no such appliance")),
            Some(false) => {
                return Err(FleetError::Invalid(
                    "the appliance belongs to another practice".into(),
                ));
            }
            Some(true) => {}
        }
    }
    let row: WindowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO maintenance_windows AS w
             (id, tenant_id, practice_id, appliance_id, starts_at, ends_at, reason, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {WINDOW_COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(auth.tenant_id.as_uuid())
    .bind(request.practice_id.as_uuid())
    .bind(request.appliance_id.map(|a| a.0))
    .bind(request.starts_at)
    .bind(request.ends_at)
    .bind(reason)
    .bind(auth.actor().label())
    .fetch_one(&mut *tx)
    .await?;
    let view = MaintenanceWindowView::from(row);
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "maintenance_window.create",
            target_type: "maintenance_window",
            target_id: view.id.to_string(),
            before: None,
            after: Some(serde_json::to_value(&view).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(view)
}

/// Which maintenance windows to list, latest start first.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowFilter {
    /// The sort key (starts_at, id) of the last window of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub practice_id: Option<Uuid>,
    /// Only the windows that cover this appliance: its own and its whole practice's.
    pub appliance_id: Option<Uuid>,
    /// Only windows not over yet (current and planned).
    pub upcoming: Option<bool>,
}

/// Maintenance windows of the caller's practices, latest start first.
pub async fn list(
    pool: &PgPool,
    auth: &AuthUser,
    filter: WindowFilter,
    fetch: i64,
) -> Result<Vec<MaintenanceWindowView>, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let (after_start, after_id) = filter.after.unzip();
    let rows: Vec<WindowRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WINDOW_COLUMNS} FROM maintenance_windows w
         WHERE ($1::uuid[] IS NULL OR w.practice_id = ANY($1))
           AND ($2::uuid IS NULL OR w.practice_id = $2)
           AND (NOT coalesce($3, false) OR w.ends_at > now())
           AND ($4::timestamptz IS NULL OR (w.starts_at, w.id) < ($4, $5))
           AND ($7::uuid IS NULL OR w.appliance_id = $7
                OR (w.appliance_id IS NULL
                    AND w.practice_id = (SELECT practice_id FROM appliances WHERE id = $7)))
         ORDER BY w.starts_at DESC, w.id DESC LIMIT $6"
    )))
    .bind(auth.practice_filter())
    .bind(filter.practice_id)
    .bind(filter.upcoming)
    .bind(after_start)
    .bind(after_id)
    .bind(fetch)
    .bind(filter.appliance_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(MaintenanceWindowView::from).collect())
}

/// Cancels a maintenance window of the caller's practices (alerts already raised inside it stay
/// muted); audited.
pub async fn remove(pool: &PgPool, auth: &AuthUser, id: Uuid) -> Result<(), FleetError> {
    let mut tx = auth.tx(pool).await?;
    let row: WindowRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM maintenance_windows AS w
         WHERE w.id = $1 AND ($2::uuid[] IS NULL OR w.practice_id = ANY($2))
         RETURNING {WINDOW_COLUMNS}"
    )))
    .bind(id)
    .bind(auth.practice_filter())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(FleetError::NotFound("no such maintenance window"))?;
    let before = MaintenanceWindowView::from(row);
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "maintenance_window.delete",
            target_type: "maintenance_window",
            target_id: id.to_string(),
            before: Some(serde_json::to_value(&before).unwrap_or_default()),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: &str, starts_at: &str, ends_at: &str) -> CreateMaintenanceWindow {
        CreateMaintenanceWindow {
            practice_id: PracticeId(Uuid::from_u128(1)),
            appliance_id: None,
            starts_at: starts_at.parse().expect("time"),
            ends_at: ends_at.parse().expect("time"),
            reason: reason.into(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().expect("time")
    }

    #[test]
    fn a_window_of_a_day_with_a_reason_may_be_planned_and_its_reason_is_trimmed() {
        let ok = request(
            " router swap ",
            "2026-11-23T08:00:00Z",
            "2026-11-24T08:00:00Z",
        );
        assert_eq!(checked(&ok, now()).expect("valid"), "router swap");
    }

    #[test]
    fn windows_without_reason_backwards_over_or_longer_than_a_week_are_refused() {
        for (reason, starts, ends) in [
            ("  ", "2026-11-23T08:00:00Z", "2026-11-23T09:00:00Z"),
            ("x", "2026-11-23T09:00:00Z", "2026-11-23T08:00:00Z"),
            ("x", "2026-11-21T08:00:00Z", "2026-11-22T09:00:00Z"),
            ("x", "2026-11-23T08:00:00Z", "2026-11-30T08:00:01Z"),
        ] {
            let window = request(reason, starts, ends);
            let refused = checked(&window, now());
            assert!(
                matches!(refused, Err(FleetError::Invalid(_))),
                "{reason:?} {starts} {ends}"
            );
        }
    }
}
