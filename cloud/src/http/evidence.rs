//! Evidence packages: the signing key's public half, requests, the list, one package and its
//! download ([`crate::domain::evidence`]).

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use stayopen_shared::PracticeId;
use stayopen_shared::api::{ApiError, Page};
use stayopen_shared::compliance::{CreateEvidencePackage, EvidencePackage, EvidencePublicKey};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::domain::access::AuthUser;
use crate::domain::evidence::jobs::{self, EvidenceError};
use crate::http::error::ApiFailure;
use crate::http::pagination;
use crate::state::AppState;

impl From<EvidenceError> for ApiFailure {
    fn from(e: EvidenceError) -> Self {
        match e {
            EvidenceError::BadPeriod(why) => ApiFailure::BadRequest(why),
            EvidenceError::NotFound => ApiFailure::NotFound("no such evidence package or practice"),
            EvidenceError::Forbidden(why) => ApiFailure::Forbidden(why),
            e @ EvidenceError::NotReady(_) => ApiFailure::Conflict(e.to_string()),
            EvidenceError::Database(e) => ApiFailure::from(e),
        }
    }
}

/// The public key that verifies evidence packages, and its fingerprint (printed on every
/// package's cover and in its manifest).
#[utoipa::path(
    tag = "evidence",
    responses((status = 200, body = EvidencePublicKey), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/evidence/public-key")]
pub async fn public_key(
    state: web::Data<AppState>,
    _auth: AuthUser,
) -> Result<web::Json<EvidencePublicKey>, ApiFailure> {
    let public = state.evidence_key.public();
    Ok(web::Json(EvidencePublicKey {
        algorithm: "ed25519".to_owned(),
        public_key_pem: public
            .pem()
            .map_err(|e| ApiFailure::Internal(e.to_string()))?,
        fingerprint: public.fingerprint(),
    }))
}

/// Queues a package for a practice and period; it is built in the background (poll it for
/// progress). Months, quarters and years must be exact calendar periods; a custom period is at
/// most 366 days; none may reach past today. Auditors may not request packages.
#[utoipa::path(
    tag = "evidence",
    request_body = CreateEvidencePackage,
    responses((status = 202, body = EvidencePackage), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/evidence/packages")]
pub async fn create(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateEvidencePackage>,
) -> Result<HttpResponse, ApiFailure> {
    let package = jobs::request(&state.pool, &auth, &body, Utc::now()).await?;
    Ok(HttpResponse::Accepted().json(package))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PackageListQuery {
    /// 1 to 500, default 50. Newest first.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub practice_id: Option<PracticeId>,
}

/// Evidence packages the caller may see, newest first.
#[utoipa::path(
    tag = "evidence",
    params(PackageListQuery),
    responses((status = 200, body = Page<EvidencePackage>), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/evidence/packages")]
pub async fn list(
    state: web::Data<AppState>,
    auth: AuthUser,
    query: web::Query<PackageListQuery>,
) -> Result<web::Json<Page<EvidencePackage>>, ApiFailure> {
    let fetch = pagination::fetch_limit(query.limit)?;
    let after: Option<(DateTime<Utc>, Uuid)> = pagination::decode_cursor(query.cursor.as_deref())?;
    let items = jobs::list(&state.pool, &auth, query.practice_id, after, fetch).await?;
    Ok(web::Json(pagination::page(
        items,
        fetch,
        |p: &EvidencePackage| (p.requested_at, p.id),
    )))
}

/// One package, with its progress while it builds.
#[utoipa::path(
    tag = "evidence",
    params(("package_id" = Uuid, Path)),
    responses((status = 200, body = EvidencePackage), (status = 404, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/evidence/packages/{package_id}")]
pub async fn show(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<web::Json<EvidencePackage>, ApiFailure> {
    Ok(web::Json(
        jobs::show(&state.pool, &auth, path.into_inner()).await?,
    ))
}

/// The package's zip. Every download is recorded in the audit log (chain of custody).
#[utoipa::path(
    tag = "evidence",
    params(("package_id" = Uuid, Path)),
    responses(
        (status = 200, content_type = "application/zip", body = Vec<u8>),
        (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "not built yet")
    ),
    security(("bearer" = []))
)]
#[get("/evidence/packages/{package_id}/download")]
pub async fn download(
    state: web::Data<AppState>,
    auth: AuthUser,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiFailure> {
    let (package, name, zip) = jobs::download(&state.pool, &auth, path.into_inner()).await?;
    let mut response = HttpResponse::Ok();
    response
        .content_type("application/zip")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(name)],
        })
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(sha256) = &package.sha256 {
        response.insert_header(("X-Evidence-SHA256", sha256.as_str()));
    }
    Ok(response.body(zip))
}
