//! Commands for appliances: queue (audited), list, show. Delivery is [`crate::domain::commands`].

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stayopen_shared::ApplianceId;
use stayopen_shared::api::{ApiError, CommandView, CreateCommand, Page};
use stayopen_shared::commands::{CommandSpec, CommandStatus};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::visibility::visible_appliance;
use crate::domain::access::{AuthUser, Permission};
use crate::domain::audit::{self, Change};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::infra::db::Tx;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct CommandRow {
    id: Uuid,
    appliance_id: Uuid,
    spec: sqlx::types::Json<CommandSpec>,
    status: String,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    deliveries: i32,
    acknowledged_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    detail: Option<String>,
    result: Option<serde_json::Value>,
}

const COMMAND_SELECT: &str =
    "SELECT id, appliance_id, spec, status, created_by, created_at, expires_at,
        delivered_at, deliveries, acknowledged_at, finished_at, detail, result FROM commands";

impl CommandRow {
    fn view(self) -> Result<CommandView, ApiFailure> {
        Ok(CommandView {
            id: self.id,
            appliance_id: ApplianceId(self.appliance_id),
            spec: self.spec.0,
            status: CommandStatus::parse(&self.status)
                .ok_or_else(|| ApiFailure::Internal(format!("unknown status {:?}", self.status)))?,
            created_by: self.created_by,
            created_at: self.created_at,
            expires_at: self.expires_at,
            delivered_at: self.delivered_at,
            deliveries: u32::try_from(self.deliveries).unwrap_or(0),
            acknowledged_at: self.acknowledged_at,
            finished_at: self.finished_at,
            detail: self.detail,
            result: self.result,
        })
    }
}

async fn load(tx: &mut Tx, id: Uuid) -> Result<Option<CommandView>, ApiFailure> {
    let row: Option<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{COMMAND_SELECT} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(CommandRow::view).transpose()
}

/// Queues a command; it is delivered as soon as the appliance is online.
#[utoipa::path(
    tag = "commands",
    params(("appliance_id" = Uuid, Path)),
    request_body = CreateCommand,
    responses((status = 201, body = CommandView), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/appliances/{appliance_id}/commands")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    body: web::Json<CreateCommand>,
) -> Result<HttpResponse, ApiFailure> {
    let appliance = path.into_inner();
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    auth.require(Permission::Operate)?;
    body.spec.validate().map_err(ApiFailure::BadRequest)?;
    let expires_in = body.expires_in_secs.unwrap_or(3600);
    if !(10..=7 * 24 * 3600).contains(&expires_in) {
        return Err(ApiFailure::BadRequest(
            "expires_in_secs must be between 10 and 604800".into(),
        ));
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, appliance_id, kind, spec, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(auth.tenant_id.as_uuid())
    .bind(appliance.as_uuid())
    .bind(body.spec.kind())
    .bind(sqlx::types::Json(&body.spec))
    .bind(auth.actor().label())
    .bind(Utc::now() + Duration::seconds(i64::from(expires_in)))
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        auth.tenant_id,
        &auth.actor(),
        Change {
            action: "command.create",
            target_type: "appliance",
            target_id: appliance.to_string(),
            before: None,
            after: Some(serde_json::json!({ "command_id": id, "spec": body.spec, "expires_in_secs": expires_in })),
        },
    )
    .await?;
    let view = load(&mut tx, id)
        .await?
        .ok_or(ApiFailure::NotFound("no such command"))?;
    tx.commit().await?;
    state.device_link.wake_delivery.notify_one();
    Ok(HttpResponse::Created().json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CommandListQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// An appliance's commands, newest first.
#[utoipa::path(
    tag = "commands",
    params(("appliance_id" = Uuid, Path), CommandListQuery),
    responses((status = 200, body = Page<CommandView>), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/appliances/{appliance_id}/commands")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<ApplianceId>,
    query: web::Query<CommandListQuery>,
) -> Result<web::Json<Page<CommandView>>, ApiFailure> {
    let appliance = path.into_inner();
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let mut tx = auth.tx(&state.pool).await?;
    visible_appliance(&mut tx, &auth, appliance).await?;
    let rows: Vec<CommandRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{COMMAND_SELECT} WHERE appliance_id = $1
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(appliance.as_uuid())
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(fetch)
    .fetch_all(&mut *tx)
    .await?;
    let items = rows
        .into_iter()
        .map(CommandRow::view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(pagination::page(items, fetch, |c| {
        (c.created_at, c.id)
    })))
}

/// One command and its outcome.
#[utoipa::path(
    tag = "commands",
    params(("command_id" = Uuid, Path)),
    responses((status = 200, body = CommandView), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/commands/{command_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<CommandView>, ApiFailure> {
    let mut tx = auth.tx(&state.pool).await?;
    let command = load(&mut tx, path.into_inner())
        .await?
        .ok_or(ApiFailure::NotFound("no such command"))?;
    visible_appliance(&mut tx, &auth, command.appliance_id)
        .await
        .map_err(|_| ApiFailure::NotFound("no such command"))?;
    Ok(web::Json(command))
}
