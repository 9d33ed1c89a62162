//! One action on many appliances: tag or untag them, start a drill on each, or replace each one's
//! own policy layer. The caller's role is checked once for the whole request (a technician may
//! drill, a compliance officer may not); each appliance is then checked (visible to the caller:
//! another tenant's id, or a practice the caller is not scoped to, is skipped as not found) and
//! audited on its own, by the same code a single change goes through. One refusal does not undo
//! the others.

use sqlx::PgPool;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{
    ApplianceBulkAction, BulkOutcome, BulkSkipped, MAX_BULK_ITEMS, normalise_tag,
};
use stayopen_shared::commands::CommandSpec;
use uuid::Uuid;

use super::FleetError;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::domain::commands::{self, CommandError};
use crate::domain::policy::LayerError;
use crate::domain::policy::layers::{self, LayerTarget};
use crate::infra::device_link::DeviceLink;

/// Runs `action` on each of `ids` (1 to [`MAX_BULK_ITEMS`], duplicates counted once).
pub async fn run(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    ids: &[ApplianceId],
    action: &ApplianceBulkAction,
) -> Result<BulkOutcome, FleetError> {
    if ids.is_empty() || ids.len() > MAX_BULK_ITEMS {
        return Err(FleetError::Invalid(format!(
            "appliance_ids must name 1 to {MAX_BULK_ITEMS} appliances"
        )));
    }
    let mut unique: Vec<ApplianceId> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(id) {
            unique.push(*id);
        }
    }
    match action {
        ApplianceBulkAction::AddTag { tag } => {
            auth.require(Permission::Configure)?;
            let tag = normalise_tag(tag).map_err(FleetError::Invalid)?;
            retag(pool, auth, &unique, &tag, true).await
        }
        ApplianceBulkAction::RemoveTag { tag } => {
            auth.require(Permission::Configure)?;
            let tag = normalise_tag(tag).map_err(FleetError::Invalid)?;
            retag(pool, auth, &unique, &tag, false).await
        }
        ApplianceBulkAction::StartDrill { duration_secs } => {
            auth.require(Permission::Operate)?;
            let spec = CommandSpec::StartDrill {
                duration_secs: *duration_secs,
            };
            spec.validate().map_err(FleetError::Invalid)?;
            let mut outcome = BulkOutcome::default();
            for id in unique {
                match commands::queue(pool, auth, link, id, &spec, None).await {
                    Ok(_) => outcome.done.push(id.0),
                    Err(CommandError::Database(e)) => return Err(e.into()),
                    Err(e) => outcome.skipped.push(skipped(id, &e)),
                }
            }
            Ok(outcome)
        }
        ApplianceBulkAction::ApplyPolicy { overrides } => {
            auth.require(Permission::Configure)?;
            stayopen_shared::policy::check_overrides(overrides)
                .map_err(|e| FleetError::Invalid(e.to_string()))?;
            let mut outcome = BulkOutcome::default();
            for id in unique {
                let target = LayerTarget::Appliance(id);
                match layers::replace(pool, auth, link, target, overrides.clone()).await {
                    Ok(_) => outcome.done.push(id.0),
                    Err(LayerError::Database(e)) => return Err(e.into()),
                    Err(e) => outcome.skipped.push(skipped(id, &e)),
                }
            }
            Ok(outcome)
        }
    }
}

fn skipped(id: ApplianceId, why: &dyn std::fmt::Display) -> BulkSkipped {
    BulkSkipped {
        id: id.0,
        reason: why.to_string(),
    }
}

/// Adds (`add`) or removes `tag` on every appliance of `ids` the caller may see, in one
/// transaction, one audit record per appliance whose tags changed.
async fn retag(
    pool: &PgPool,
    auth: &AuthUser,
    ids: &[ApplianceId],
    tag: &str,
    add: bool,
) -> Result<BulkOutcome, FleetError> {
    let mut tx = auth.tx(pool).await?;
    let wanted: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let visible: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT id, $3 = ANY(tags) FROM appliances
         WHERE id = ANY($1) AND ($2::uuid[] IS NULL OR practice_id = ANY($2))
         FOR UPDATE",
    )
    .bind(&wanted)
    .bind(auth.practice_filter())
    .bind(tag)
    .fetch_all(&mut *tx)
    .await?;
    let changing: Vec<Uuid> = visible
        .iter()
        .filter(|(_, has)| *has != add)
        .map(|(id, _)| *id)
        .collect();
    // An appliance with 20 tags already takes no more: the ones the update skips are "full".
    let changed: Vec<Uuid> = if add {
        sqlx::query_scalar(
            "UPDATE appliances SET tags = tags || $2
             WHERE id = ANY($1) AND cardinality(tags) < 20 RETURNING id",
        )
    } else {
        sqlx::query_scalar(
            "UPDATE appliances SET tags = array_remove(tags, $2) WHERE id = ANY($1) RETURNING id",
        )
    }
    .bind(&changing)
    .bind(tag)
    .fetch_all(&mut *tx)
    .await?;
    let full: Vec<Uuid> = changing
        .iter()
        .filter(|id| !changed.contains(id))
        .copied()
        .collect();
    let action = if add {
        "appliance.tag_add"
    } else {
        "appliance.tag_remove"
    };
    for id in &changed {
        audit::record(
            &mut tx,
            auth.tenant_id,
            &auth.actor(),
            Change {
                action,
                target_type: "appliance",
                target_id: id.to_string(),
                before: None,
                after: Some(serde_json::json!({ "tag": tag, "bulk": true })),
            },
        )
        .await?;
    }
    tx.commit().await?;
    let mut outcome = BulkOutcome::default();
    for id in ids {
        let seen = visible.iter().any(|(v, _)| *v == id.0);
        if !seen {
            outcome.skipped.push(skipped(*id, &"no such appliance"));
        } else if full.contains(&id.0) {
            outcome
                .skipped
                .push(skipped(*id, &"the appliance already has 20 tags"));
        } else {
            outcome.done.push(id.0);
        }
    }
    Ok(outcome)
}
