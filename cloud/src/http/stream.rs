//! `GET /api/v1/stream`: Server-Sent Events telling a dashboard what changed among the things its
//! user may see. Browsers' `EventSource` cannot send headers, so the stream opens with a
//! single-use ticket (`POST /api/v1/stream/tickets`, see
//! [`crate::domain::access::stream_tickets`]) in its query string, never with a token. An open
//! stream checks every `edge.stream_reauthorise_secs` that its holder may still see it, and ends
//! when not; each user (or API token) may hold `edge.max_streams_per_user` streams at once.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::Utc;
use stayopen_shared::api::{ApiError, StreamTicket};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::domain::access::AuthUser;
use crate::domain::access::stream_tickets::{self, StreamGrant, TicketError};
use crate::http::caller::CallerSession;
use crate::http::error::ApiFailure;
use crate::infra::metrics::API_REJECTED;
use crate::infra::stream::{StreamSlot, TenantEvent};
use crate::state::AppState;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The stream's path.
pub const STREAM_PATH: &str = "/api/v1/stream";

/// A ticket for one live-update stream: redeem it within `edge.stream_ticket_ttl_secs` (30 s) at
/// `GET /api/v1/stream?ticket=…`. It works once.
#[utoipa::path(
    tag = "fleet",
    responses((status = 200, body = StreamTicket), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[post("/stream/tickets")]
pub async fn create_ticket(
    state: web::Data<AppState>,
    caller: CallerSession,
) -> Result<web::Json<StreamTicket>, ApiFailure> {
    let ttl = chrono::Duration::seconds(i64::from(state.config.edge.stream_ticket_ttl_secs));
    let issued = stream_tickets::issue(&state.pool, &caller.user, caller.session, ttl, Utc::now())
        .await
        .map_err(|e| match e {
            TicketError::Database(e) => ApiFailure::from(e),
            other => ApiFailure::Internal(other.to_string()),
        })?;
    Ok(web::Json(StreamTicket {
        ticket: issued.ticket,
        expires_at: issued.expires_at,
    }))
}

#[derive(Debug, Default, serde::Deserialize)]
struct StreamQuery {
    ticket: Option<String>,
    /// Refused: tokens do not belong in URLs.
    access_token: Option<String>,
}

/// Counts and logs a refused stream (never the ticket or token itself).
fn refuse(state: &AppState, reason: &'static str, failure: ApiFailure) -> ApiFailure {
    state.metrics.increment(API_REJECTED, "reason", reason);
    tracing::info!(path = STREAM_PATH, reason, "live-update stream refused");
    failure
}

/// Live updates: each message's data is a `StreamEvent` (`topic` `appliance` or `alert`, `id`,
/// `practice_id`). Open it with a ticket from `POST /api/v1/stream/tickets`; a token in the query
/// string is refused.
#[utoipa::path(
    tag = "fleet",
    params(("ticket" = String, Query, description = "A single-use ticket from POST /api/v1/stream/tickets")),
    responses(
        (status = 200, description = "text/event-stream of StreamEvent", content_type = "text/event-stream"),
        (status = 401, body = ApiError, description = "No ticket, or an unknown, used or expired one, or a token in the query"),
        (status = 429, body = ApiError, description = "Too many streams open for this user"),
    )
)]
#[get("/stream")]
pub async fn live_updates(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiFailure> {
    let query = web::Query::<StreamQuery>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    if query.access_token.is_some() {
        return Err(refuse(
            &state,
            "token_in_query",
            ApiFailure::Unauthenticated(
                "access tokens are not accepted in URLs; open the stream with a ticket from POST /api/v1/stream/tickets".into(),
            ),
        ));
    }
    let Some(ticket) = query.ticket else {
        return Err(refuse(
            &state,
            "stream_ticket_missing",
            ApiFailure::Unauthenticated(
                "open the stream with a ticket from POST /api/v1/stream/tickets".into(),
            ),
        ));
    };
    let grant = stream_tickets::redeem(&state.pool, &ticket, Utc::now())
        .await
        .map_err(|e| ticket_failure(&state, e))?;
    let auth = stream_tickets::reauthorise(&state.pool, grant)
        .await
        .map_err(|e| ticket_failure(&state, e))?;
    let limit = state.config.edge.max_streams_per_user;
    let slot = state
        .hub
        .try_open(grant.holder.owner(), limit as usize)
        .ok_or_else(|| {
            refuse(
                &state,
                "too_many_streams",
                ApiFailure::TooManyStreams(limit),
            )
        })?;
    let every = Duration::from_secs(u64::from(state.config.edge.stream_reauthorise_secs));
    let open = OpenStream {
        receiver: state.hub.subscribe(),
        state: state.clone(),
        grant,
        auth,
        every,
        next_check: Instant::now() + every,
        _slot: slot,
    };
    let events = futures_util::stream::unfold((open, true), |(mut open, first)| async move {
        if first {
            let opening = Bytes::from_static(b"retry: 2000\n: connected\n\n");
            return Some((Ok::<_, actix_web::Error>(opening), (open, false)));
        }
        let chunk = open.next_chunk().await?;
        Some((Ok(chunk), (open, false)))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events))
}

fn ticket_failure(state: &AppState, error: TicketError) -> ApiFailure {
    match error {
        TicketError::Database(e) => ApiFailure::from(e),
        other => refuse(
            state,
            other.reason(),
            ApiFailure::Unauthenticated(other.to_string()),
        ),
    }
}

/// One open stream: its subscription, its holder as last authorised, and its slot among the
/// holder's streams (freed when the stream is dropped).
struct OpenStream {
    receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<TenantEvent>>,
    state: web::Data<AppState>,
    grant: StreamGrant,
    auth: AuthUser,
    every: Duration,
    next_check: Instant,
    _slot: StreamSlot,
}

impl OpenStream {
    /// The next chunk to send, or `None` when the stream ends (holder no longer authorised, or
    /// the hub closed).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let wake = self.next_check.min(Instant::now() + KEEPALIVE);
            match tokio::time::timeout_at(wake, self.receiver.recv()).await {
                Err(_) if Instant::now() >= self.next_check => {
                    self.reauthorise().await?;
                }
                Err(_) => return Some(Bytes::from_static(b": keepalive\n\n")),
                Ok(Err(RecvError::Closed)) => return None,
                // Fell behind: the dashboard's fallback poll catches up.
                Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Ok(event)) => {
                    if let Some(chunk) = self.visible(&event) {
                        return Some(chunk);
                    }
                }
            }
        }
    }

    fn visible(&self, event: &TenantEvent) -> Option<Bytes> {
        let visible = event.tenant_id == self.auth.tenant_id
            && self.auth.may_see_practice(event.event.practice_id);
        if !visible {
            return None;
        }
        let json = serde_json::to_string(&event.event).ok()?;
        Some(Bytes::from(format!("data: {json}\n\n")))
    }

    /// Asks again whether the holder may see live updates, taking their current role and
    /// practices; `None` ends the stream (a failed check fails closed: the dashboard reconnects
    /// with a new ticket if it still may).
    async fn reauthorise(&mut self) -> Option<()> {
        match stream_tickets::reauthorise(&self.state.pool, self.grant).await {
            Ok(auth) => {
                self.auth = auth;
                self.next_check = Instant::now() + self.every;
                Some(())
            }
            Err(e) => {
                let reason = match &e {
                    TicketError::Database(_) => "stream_reauthorise_failed",
                    other => other.reason(),
                };
                self.state.metrics.increment(API_REJECTED, "reason", reason);
                tracing::info!(reason, why = %e, owner = %self.grant.holder.owner(),
                    "live-update stream closed");
                None
            }
        }
    }
}
