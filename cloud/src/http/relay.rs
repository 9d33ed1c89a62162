//! The relay API: a StayOpen relay polls the peers it serves. Only a relay's own token (`sor_…`,
//! from `stayopen-cloud admin relay-add`) opens it; a user's access token or an API token does not,
//! and a relay token opens no tenant endpoint. See [`crate::domain::relays`].

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use stayopen_shared::tunnel::RelayPeerList;

use crate::domain::relays::{self, PeerListError};
use crate::http::error::ApiFailure;
use crate::infra::metrics::RELAY_AUTH_REJECTED;
use crate::state::AppState;

/// The relay's peer list: the non-revoked appliances of every MSP assigned to it, each with its
/// WireGuard public key and the only inner address it may send from. The answer carries
/// `ETag: "<revision>"`; sent back as `If-None-Match`, it is answered `304 Not Modified` while the
/// list is unchanged, so the relay can poll every few seconds.
#[utoipa::path(
    tag = "relay",
    params(
        ("If-None-Match" = Option<String>, Header, description = "The revision of the list the relay holds, as its ETag")
    ),
    responses(
        (status = 200, body = RelayPeerList, headers(("ETag" = String, description = "The list's revision, quoted"))),
        (status = 304, description = "The list has not changed since the revision in If-None-Match"),
        (status = 401, body = stayopen_shared::api::ApiError, description = "No relay token, an unknown or revoked relay's token, or a token of another kind"),
    ),
    security(("relay_token" = []))
)]
#[get("/relay/peers")]
pub async fn peers(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiFailure> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let relay = match relays::authenticate(&state.pool, token).await {
        Ok(relay) => relay,
        Err(PeerListError::Refused(failure)) => {
            let reason = failure.reason();
            state
                .metrics
                .increment(RELAY_AUTH_REJECTED, "reason", reason);
            tracing::warn!(
                peer = ?req.peer_addr(),
                reason,
                "rejected a request for a relay's peer list"
            );
            return Err(ApiFailure::Unauthenticated(failure.to_string()));
        }
        Err(PeerListError::Database(e)) => return Err(e.into()),
    };
    let list = relays::peer_list(&state.pool, &relay).await?;
    let etag = format!("\"{}\"", list.revision);
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sent| sent.split(',').any(|tag| tag.trim() == etag));
    if unchanged {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(list))
}
