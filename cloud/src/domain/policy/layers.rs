//! The policy layers as MSP staff edit them: the MSP's, a practice's and an appliance's own. Every
//! change is audited with the layer before and after, recomputes the desired policy of the
//! appliances it affects, and publishes the new versions once committed.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stayopen_shared::api::{PolicyLayer, PolicyPreviewRequest};
use stayopen_shared::policy::{
    EffectivePolicy, PolicyOverrides, PolicyScope, check_overrides, resolve,
};
use stayopen_shared::{ApplianceId, PracticeId};
use uuid::Uuid;

use super::{LayerError, layer, outgoing, refresh, send};
use crate::domain::access::visibility::{visible_appliance, visible_practice};
use crate::domain::access::{AccessError, AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::infra::db::Tx;
use crate::infra::device_link::DeviceLink;

/// Which layer: the caller's MSP's, or that of a practice or appliance the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerTarget {
    Msp,
    Practice(PracticeId),
    Appliance(ApplianceId),
}

impl LayerTarget {
    /// Fails as not found unless the caller sees the practice or appliance; returns the layer's
    /// scope and id.
    async fn visible(
        self,
        tx: &mut Tx,
        auth: &AuthUser,
    ) -> Result<(PolicyScope, Uuid), AccessError> {
        Ok(match self {
            LayerTarget::Msp => (PolicyScope::Msp, auth.tenant_id.0),
            LayerTarget::Practice(practice) => {
                visible_practice(tx, auth, practice).await?;
                (PolicyScope::Practice, practice.0)
            }
            LayerTarget::Appliance(appliance) => {
                visible_appliance(tx, auth, appliance).await?;
                (PolicyScope::Appliance, appliance.0)
            }
        })
    }
}

/// A layer as stored, or an empty revision 0 when nothing is.
async fn read(tx: &mut Tx, scope: PolicyScope, scope_id: Uuid) -> Result<PolicyLayer, sqlx::Error> {
    let row: Option<(
        sqlx::types::Json<PolicyOverrides>,
        i64,
        String,
        DateTime<Utc>,
    )> = sqlx::query_as(
        "SELECT overrides, revision, stayopen_actor_name(updated_by), updated_at FROM policies
         WHERE scope = $1 AND scope_id = $2",
    )
    .bind(scope)
    .bind(scope_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match row {
        Some((overrides, revision, updated_by, updated_at)) => PolicyLayer {
            scope,
            overrides: overrides.0,
            revision,
            updated_by: Some(updated_by),
            updated_at: Some(updated_at),
        },
        None => PolicyLayer {
            scope,
            overrides: PolicyOverrides::new(),
            revision: 0,
            updated_by: None,
            updated_at: None,
        },
    })
}

/// One layer. The MSP's layer is for MSP staff.
pub async fn show(
    pool: &PgPool,
    auth: &AuthUser,
    target: LayerTarget,
) -> Result<PolicyLayer, LayerError> {
    if target == LayerTarget::Msp && !auth.role.is_msp_wide() {
        return Err(AccessError::Forbidden("the MSP's policy is for MSP staff").into());
    }
    let mut tx = auth.tx(pool).await?;
    let (scope, scope_id) = target.visible(&mut tx, auth).await?;
    Ok(read(&mut tx, scope, scope_id).await?)
}

/// Critical applications are kept in each practice's register, not in policy layers: the register
/// is what the evidence shows and what the appliances check. Likewise the relay assignment comes
/// from the relay registry.
fn not_the_register(overrides: &PolicyOverrides) -> Result<(), LayerError> {
    if overrides.contains_key("critical_apps") {
        return Err(LayerError::Invalid(
            "critical_apps: critical applications are set in the practice's critical applications register (/api/v1/practices/{id}/critical-apps), not in a policy layer".into(),
        ));
    }
    if overrides.contains_key("tunnel_relay") {
        return Err(LayerError::Invalid(
            "tunnel_relay: the cloud assigns each appliance its relay from the relay registry (when the appliance registers its WireGuard key); a policy layer cannot set it".into(),
        ));
    }
    Ok(())
}

/// Replaces a layer (a partial policy; empty clears it), audited; recomputes the desired policy
/// of the appliances under it and publishes the changed ones through `link` after the commit.
pub async fn replace(
    pool: &PgPool,
    auth: &AuthUser,
    link: &DeviceLink,
    target: LayerTarget,
    overrides: PolicyOverrides,
) -> Result<PolicyLayer, LayerError> {
    let mut tx = auth.tx(pool).await?;
    // Visibility first: a practice or appliance the caller may not see is not found, not
    // forbidden.
    let (scope, scope_id) = target.visible(&mut tx, auth).await?;
    auth.require(Permission::Configure)?;
    not_the_register(&overrides)?;
    check_overrides(&overrides).map_err(|e| LayerError::Invalid(e.to_string()))?;
    let before = read(&mut tx, scope, scope_id).await?;
    sqlx::query(
        "INSERT INTO policies (tenant_id, scope, scope_id, overrides, updated_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, scope, scope_id) DO UPDATE
         SET overrides = EXCLUDED.overrides, revision = policies.revision + 1,
             updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(auth.tenant_id.as_uuid())
    .bind(scope)
    .bind(scope_id)
    .bind(sqlx::types::Json(&overrides))
    .bind(auth.actor().label())
    .execute(&mut *tx)
    .await?;
    let after = read(&mut tx, scope, scope_id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "policy.update",
            target_type: scope.as_str(),
            target_id: scope_id.to_string(),
            before: Some(serde_json::Value::Object(before.overrides)),
            after: Some(serde_json::Value::Object(after.overrides.clone())),
        },
    )
    .await?;
    let affected: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM appliances WHERE revoked_at IS NULL AND CASE $1
            WHEN 'msp' THEN true
            WHEN 'practice' THEN practice_id = $2
            ELSE id = $2 END",
    )
    .bind(scope)
    .bind(scope_id)
    .fetch_all(&mut *tx)
    .await?;
    // Per-field checks make every combination of valid layers valid, so this cannot fail on the
    // new layer; it would only on data changed behind the API's back.
    let changed = refresh(&mut tx, auth.tenant_id, &affected).await?;
    let messages = outgoing(&mut tx, &changed).await?;
    tx.commit().await?;
    send(link, messages);
    tracing::info!(tenant_id = %auth.tenant_id, scope = scope.as_str(), %scope_id, changed = changed.len(), "policy updated");
    Ok(after)
}

/// What would take effect if a layer were saved with the request's overrides: the effective
/// policy with the source of each value, or the first invalid setting named. Nothing is stored.
pub async fn preview(
    pool: &PgPool,
    auth: &AuthUser,
    request: PolicyPreviewRequest,
) -> Result<EffectivePolicy, LayerError> {
    not_the_register(&request.overrides)?;
    let mut tx = auth.tx(pool).await?;
    let msp = layer(&mut tx, PolicyScope::Msp, auth.tenant_id.0).await?;
    let proposed = request.overrides;
    let layers: Vec<(PolicyScope, PolicyOverrides)> = match request.scope {
        PolicyScope::Default => {
            return Err(LayerError::Invalid(
                "scope: the defaults are not a layer one edits".into(),
            ));
        }
        PolicyScope::Msp => vec![(PolicyScope::Msp, proposed)],
        PolicyScope::Practice => {
            let practice = request.practice_id.ok_or_else(|| {
                LayerError::Invalid("practice_id: needed for a practice layer".into())
            })?;
            visible_practice(&mut tx, auth, practice).await?;
            vec![(PolicyScope::Msp, msp), (PolicyScope::Practice, proposed)]
        }
        PolicyScope::Appliance => {
            let appliance = request.appliance_id.ok_or_else(|| {
                LayerError::Invalid("appliance_id: needed for an appliance layer".into())
            })?;
            let practice = visible_appliance(&mut tx, auth, appliance).await?;
            let practice_layer = layer(&mut tx, PolicyScope::Practice, practice.0).await?;
            vec![
                (PolicyScope::Msp, msp),
                (PolicyScope::Practice, practice_layer),
                (PolicyScope::Appliance, proposed),
            ]
        }
    };
    let borrowed: Vec<(PolicyScope, &PolicyOverrides)> =
        layers.iter().map(|(scope, o)| (*scope, o)).collect();
    resolve(&borrowed).map_err(|e| LayerError::Invalid(e.to_string()))
}
