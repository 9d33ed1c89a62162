//! A practice's time zone and clinic hours: which routes apply to its alerts and how urgent they
//! are. Anyone who sees the practice may read them; changes are audited.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use stayopen_shared::PracticeId;
use stayopen_shared::alerts::{ClinicHours, PracticeSchedule, PracticeScheduleView};

use super::FleetError;
use crate::domain::access::AuthUser;
use crate::domain::access::visibility::visible_practice;
use crate::domain::audit::{self, Change};
use crate::domain::clinic::{clinic_now, known_time_zone};
use crate::infra::db::Tx;

async fn load(tx: &mut Tx, practice: PracticeId) -> Result<PracticeSchedule, sqlx::Error> {
    let (time_zone, clinic_hours): (String, Option<Json<ClinicHours>>) =
        sqlx::query_as("SELECT time_zone, clinic_hours FROM practices WHERE id = $1")
            .bind(practice.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
    Ok(PracticeSchedule {
        time_zone,
        clinic_hours: clinic_hours.map(|h| h.0),
    })
}

/// The schedule with whether the practice is open at `now` and when it next opens.
fn view(schedule: PracticeSchedule, now: DateTime<Utc>) -> PracticeScheduleView {
    let clinic = clinic_now(&schedule.time_zone, schedule.clinic_hours.as_ref(), now);
    PracticeScheduleView {
        time_zone: schedule.time_zone,
        clinic_hours: schedule.clinic_hours,
        open_now: clinic.open,
        next_opening: clinic.next_opening,
    }
}

/// A schedule may be stored if its zone is an IANA time zone and its hours are well-formed.
fn checked(schedule: &PracticeSchedule) -> Result<(), FleetError> {
    if !known_time_zone(&schedule.time_zone) {
        return Err(FleetError::Invalid(format!(
            "time_zone: {:?} is not an IANA time zone",
            schedule.time_zone
        )));
    }
    if let Some(hours) = &schedule.clinic_hours {
        hours
            .validate()
            .map_err(|e| FleetError::Invalid(format!("clinic_hours: {e}")))?;
    }
    Ok(())
}

/// The practice's time zone and clinic hours, and whether it is open at `now`.
pub async fn show(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    now: DateTime<Utc>,
) -> Result<PracticeScheduleView, FleetError> {
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    Ok(view(load(&mut tx, practice).await?, now))
}

/// Replaces the practice's time zone and clinic hours (`None`: none, every hour counts as open);
/// audited with the schedule before and after.
pub async fn update(
    pool: &PgPool,
    auth: &AuthUser,
    practice: PracticeId,
    schedule: PracticeSchedule,
    now: DateTime<Utc>,
) -> Result<PracticeScheduleView, FleetError> {
    checked(&schedule)?;
    let mut tx = auth.tx(pool).await?;
    visible_practice(&mut tx, auth, practice).await?;
    let before = load(&mut tx, practice).await?;
    sqlx::query("UPDATE practices SET time_zone = $2, clinic_hours = $3 WHERE id = $1")
        .bind(practice.as_uuid())
        .bind(&schedule.time_zone)
        .bind(schedule.clinic_hours.as_ref().map(Json))
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "practice.schedule",
            target_type: "practice",
            target_id: practice.to_string(),
            before: Some(serde_json::to_value(&before).unwrap_or_default()),
            after: Some(serde_json::to_value(&schedule).unwrap_or_default()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(view(schedule, now))
}
