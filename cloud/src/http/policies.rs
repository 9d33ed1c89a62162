//! Policy layers (MSP, practice, appliance) and an appliance's effective configuration with drift.
//! Every change is audited with the layer before and after, recomputes the desired policy of the
//! appliances it affects, and publishes the new versions once committed.

use actix_web::{get, post, put, web};
use chrono::{DateTime, Utc};
use stayopen_shared::api::{ApiError, ApplianceConfiguration, PolicyLayer, PolicyPreviewRequest};
use stayopen_shared::policy::{
    EffectivePolicy, PolicyOverrides, PolicyScope, check_overrides, resolve,
};
use stayopen_shared::{ApplianceId, PracticeId};
use uuid::Uuid;

use crate::domain::access::visibility::{visible_appliance, visible_practice};
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::domain::policy::{self, scope_str};
use crate::http::error::ApiFailure;
use crate::infra::db::Tx;
use crate::state::AppState;

async fn read_layer(
    tx: &mut Tx,
    scope: PolicyScope,
    scope_id: Uuid,
) -> Result<PolicyLayer, ApiFailure> {
    let row: Option<(sqlx::types::Json<PolicyOverrides>, i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT overrides, revision, updated_by, updated_at FROM policies WHERE scope = $1 AND scope_id = $2",
    )
    .bind(scope_str(scope))
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

/// Stores a layer, audits it, recomputes the affected appliances and publishes after commit.
async fn write_layer(
    state: &AppState,
    auth: &AuthUser,
    mut tx: Tx,
    scope: PolicyScope,
    scope_id: Uuid,
    overrides: PolicyOverrides,
) -> Result<PolicyLayer, ApiFailure> {
    auth.require(Permission::Configure)?;
    check_overrides(&overrides).map_err(|e| ApiFailure::BadRequest(e.to_string()))?;
    let before = read_layer(&mut tx, scope, scope_id).await?;
    sqlx::query(
        "INSERT INTO policies (tenant_id, scope, scope_id, overrides, updated_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, scope, scope_id) DO UPDATE
         SET overrides = EXCLUDED.overrides, revision = policies.revision + 1,
             updated_by = EXCLUDED.updated_by, updated_at = now()",
    )
    .bind(auth.tenant_id.as_uuid())
    .bind(scope_str(scope))
    .bind(scope_id)
    .bind(sqlx::types::Json(&overrides))
    .bind(auth.actor().label())
    .execute(&mut *tx)
    .await?;
    let after = read_layer(&mut tx, scope, scope_id).await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "policy.update",
            target_type: scope_str(scope),
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
    .bind(scope_str(scope))
    .bind(scope_id)
    .fetch_all(&mut *tx)
    .await?;
    // Per-field checks make every combination of valid layers valid, so this cannot fail on the
    // new layer; it would only on data changed behind the API's back.
    let changed = policy::refresh(&mut tx, auth.tenant_id, &affected)
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    let messages = policy::outgoing(&mut tx, &changed).await?;
    tx.commit().await?;
    policy::send(&state.device_link, messages);
    tracing::info!(tenant_id = %auth.tenant_id, scope = scope_str(scope), %scope_id, changed = changed.len(), "policy updated");
    Ok(after)
}

fn require_msp_wide(auth: &AuthUser) -> Result<(), ApiFailure> {
    if auth.role.is_msp_wide() {
        Ok(())
    } else {
        Err(ApiFailure::Forbidden("the MSP's policy is for MSP staff"))
    }
}

/// The MSP-wide layer, under every practice and appliance.
#[utoipa::path(
    tag = "policies",
    responses((status = 200, body = PolicyLayer), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/policy")]
pub async fn show_msp(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    require_msp_wide(&auth)?;
    let mut tx = auth.tx(&state.pool).await?;
    Ok(web::Json(
        read_layer(&mut tx, PolicyScope::Msp, auth.tenant_id.0).await?,
    ))
}

/// Replaces the MSP-wide layer (a partial policy; `{}` clears it).
#[utoipa::path(
    tag = "policies",
    request_body(content = Object, description = "Policy settings to override, e.g. {\"failback_clean_period_secs\": 60}"),
    responses((status = 200, body = PolicyLayer), (status = 400, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/policy")]
pub async fn update_msp(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<PolicyOverrides>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let tx = auth.tx(&state.pool).await?;
    let tenant = auth.tenant_id.0;
    Ok(web::Json(
        write_layer(
            &state,
            &auth,
            tx,
            PolicyScope::Msp,
            tenant,
            body.into_inner(),
        )
        .await?,
    ))
}

/// A practice's layer.
#[utoipa::path(
    tag = "policies",
    params(("practice_id" = Uuid, Path)),
    responses((status = 200, body = PolicyLayer), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/practices/{practice_id}/policy")]
pub async fn show_practice(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let practice = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    Ok(web::Json(
        read_layer(&mut tx, PolicyScope::Practice, practice.0).await?,
    ))
}

/// Replaces a practice's layer.
#[utoipa::path(
    tag = "policies",
    params(("practice_id" = Uuid, Path)),
    request_body(content = Object, description = "Policy settings to override"),
    responses((status = 200, body = PolicyLayer), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/practices/{practice_id}/policy")]
pub async fn update_practice(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<PracticeId>,
    body: web::Json<PolicyOverrides>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let practice = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_practice(&mut tx, &auth, practice).await?;
    Ok(web::Json(
        write_layer(
            &state,
            &auth,
            tx,
            PolicyScope::Practice,
            practice.0,
            body.into_inner(),
        )
        .await?,
    ))
}

/// An appliance's own layer.
#[utoipa::path(
    tag = "policies",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = PolicyLayer), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/policy")]
pub async fn show_appliance(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    Ok(web::Json(
        read_layer(&mut tx, PolicyScope::Appliance, appliance.0).await?,
    ))
}

/// Replaces an appliance's own layer.
#[utoipa::path(
    tag = "policies",
    params(("appliance_id" = Uuid, Path)),
    request_body(content = Object, description = "Policy settings to override"),
    responses((status = 200, body = PolicyLayer), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[put("/appliances/{appliance_id}/policy")]
pub async fn update_appliance(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    body: web::Json<PolicyOverrides>,
) -> Result<web::Json<PolicyLayer>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    Ok(web::Json(
        write_layer(
            &state,
            &auth,
            tx,
            PolicyScope::Appliance,
            appliance.0,
            body.into_inner(),
        )
        .await?,
    ))
}

#[derive(sqlx::FromRow)]
struct VersionsRow {
    desired_version: i64,
    desired_at: Option<DateTime<Utc>>,
    reported_version: Option<i64>,
    reported_at: Option<DateTime<Utc>>,
}

/// The appliance's effective policy (with where each value comes from), the desired version and
/// the version the appliance reports running.
#[utoipa::path(
    tag = "policies",
    params(("appliance_id" = Uuid, Path)),
    responses((status = 200, body = ApplianceConfiguration), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/configuration")]
pub async fn configuration(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
) -> Result<web::Json<ApplianceConfiguration>, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    let effective = policy::effective(&mut tx, auth.tenant_id, appliance)
        .await
        .map_err(|e| ApiFailure::Internal(e.to_string()))?;
    let versions: VersionsRow = sqlx::query_as(
        "SELECT desired_version, desired_at, reported_version, reported_at FROM appliances WHERE id = $1",
    )
    .bind(appliance.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    let VersionsRow {
        desired_version,
        desired_at,
        reported_version,
        reported_at,
    } = versions;
    let desired_version = u64::try_from(desired_version).unwrap_or(0);
    let reported_version = reported_version.and_then(|v| u64::try_from(v).ok());
    Ok(web::Json(ApplianceConfiguration {
        effective,
        desired_version,
        desired_at,
        reported_version,
        reported_at,
        drift: reported_version != Some(desired_version),
    }))
}

/// What would take effect if a layer were saved with these overrides: the effective policy with
/// the source of each value, or the first invalid setting named. Nothing is stored.
#[utoipa::path(
    tag = "policies",
    request_body = PolicyPreviewRequest,
    responses((status = 200, body = EffectivePolicy), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/policy/preview")]
pub async fn preview(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<PolicyPreviewRequest>,
) -> Result<web::Json<EffectivePolicy>, ApiFailure> {
    auth.require(Permission::Configure)?;
    let request = body.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    let msp = policy::layer(&mut tx, PolicyScope::Msp, auth.tenant_id.0).await?;
    let proposed = request.overrides;
    let layers: Vec<(PolicyScope, PolicyOverrides)> = match request.scope {
        PolicyScope::Default => {
            return Err(ApiFailure::BadRequest(
                "scope: the defaults are not a layer one edits".into(),
            ));
        }
        PolicyScope::Msp => vec![(PolicyScope::Msp, proposed)],
        PolicyScope::Practice => {
            let practice = request.practice_id.ok_or_else(|| {
                ApiFailure::BadRequest("practice_id: needed for a practice layer".into())
            })?;
            visible_practice(&mut tx, &auth, practice).await?;
            vec![(PolicyScope::Msp, msp), (PolicyScope::Practice, proposed)]
        }
        PolicyScope::Appliance => {
            let appliance = request.appliance_id.ok_or_else(|| {
                ApiFailure::BadRequest("appliance_id: needed for an appliance layer".into())
            })?;
            let practice = visible_appliance(&mut tx, &auth, appliance).await?;
            let practice_layer = policy::layer(&mut tx, PolicyScope::Practice, practice.0).await?;
            vec![
                (PolicyScope::Msp, msp),
                (PolicyScope::Practice, practice_layer),
                (PolicyScope::Appliance, proposed),
            ]
        }
    };
    let borrowed: Vec<(PolicyScope, &PolicyOverrides)> =
        layers.iter().map(|(scope, o)| (*scope, o)).collect();
    resolve(&borrowed)
        .map(web::Json)
        .map_err(|e| ApiFailure::BadRequest(e.to_string()))
}
