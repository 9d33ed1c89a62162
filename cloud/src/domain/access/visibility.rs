//! What a caller may see: a practice or appliance outside the caller's tenant (row-level security)
//! or outside a practice-scoped caller's practices is reported as not found, never as forbidden,
//! so its existence is not revealed.

use stayopen_shared::{ApplianceId, PracticeId};
use uuid::Uuid;

use super::{AccessError, AuthUser};
use crate::infra::db::Tx;

/// Fails with 404 unless the caller may see `appliance`; returns its practice.
pub async fn visible_appliance(
    tx: &mut Tx,
    auth: &AuthUser,
    appliance: ApplianceId,
) -> Result<PracticeId, AccessError> {
    let practice: Option<Uuid> = sqlx::query_scalar(
        "SELECT practice_id FROM appliances WHERE id = $1 AND ($2::uuid[] IS NULL OR practice_id = ANY($2))",
    )
    .bind(appliance.as_uuid())
    .bind(auth.practice_filter())
    .fetch_optional(&mut **tx)
    .await?;
    practice
        .map(PracticeId)
        .ok_or(AccessError::NotFound("no such appliance"))
}

/// Fails with 404 unless the caller may see `practice`.
pub async fn visible_practice(
    tx: &mut Tx,
    auth: &AuthUser,
    practice: PracticeId,
) -> Result<String, AccessError> {
    if !auth.may_see_practice(practice) {
        return Err(AccessError::NotFound("no such practice"));
    }
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM practices WHERE id = $1")
        .bind(practice.as_uuid())
        .fetch_optional(&mut **tx)
        .await?;
    name.ok_or(AccessError::NotFound("no such practice"))
}
