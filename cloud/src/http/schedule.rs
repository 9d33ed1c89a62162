//! A practice's time zone and clinic hours: which routes apply to its alerts and how urgent they
//! are. Anyone who sees the practice may read them; MSP staff change them (audited).

use actix_web::{get, put, web};
use chrono::Utc;
use sqlx::types::Json;
use stayopen_shared::PracticeId;
use stayopen_shared::alerts::{ClinicHours, PracticeSchedule, PracticeScheduleView};
use stayopen_shared::api::ApiError;

use crate::domain::access::visibility::visible_practice;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::domain::clinic::{clinic_now, known_time_zone};
use crate::http::error::ApiFailure;
use crate::infra::db::Tx;
use crate::state::AppState;

async fn load(tx: &mut Tx, practice: PracticeId) -> Result<PracticeSchedule, ApiFailure> {
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

fn view(schedule: PracticeSchedule) -> PracticeScheduleView {
    let now = clinic_now(
        &schedule.time_zone,
        schedule.clinic_hours.as_ref(),
        Utc::now(),
    );
    PracticeScheduleView {
        time_zone: schedule.time_zone,
        clinic_hours: schedule.clinic_hours,
        open_now: now.open,
        next_opening: now.next_opening,
    }
}

/// The practice's time zone and clinic hours, and whether it is open now.
#[utoipa::path(
    tag = "alerts",
    params(("practice_id" = Uuid, Path)),
    responses((status = 200, body = PracticeScheduleView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/schedule")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
) -> Result<web::Json<PracticeScheduleView>, ApiFailure> {
    let practice = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    Ok(web::Json(view(load(&mut tx, practice).await?)))
}

/// Sets the practice's time zone (IANA, e.g. `America/Chicago`) and clinic hours (`null`: none,
/// every hour counts as open).
#[utoipa::path(
    tag = "alerts",
    params(("practice_id" = Uuid, Path)),
    request_body = PracticeSchedule,
    responses((status = 200, body = PracticeScheduleView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/practices/{practice_id}/schedule")]
pub async fn update(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<PracticeSchedule>,
) -> Result<web::Json<PracticeScheduleView>, ApiFailure> {
    auth.require(Permission::Configure)?;
    let practice = path.into_inner();
    let schedule = body.into_inner();
    if !known_time_zone(&schedule.time_zone) {
        return Err(ApiFailure::BadRequest(format!(
            "time_zone: {:?} is not an IANA time zone",
            schedule.time_zone
        )));
    }
    if let Some(hours) = &schedule.clinic_hours {
        hours
            .validate()
            .map_err(|e| ApiFailure::BadRequest(format!("clinic_hours: {e}")))?;
    }
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
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
    Ok(web::Json(view(schedule)))
}
