//! `GET /api/v1/stream`: Server-Sent Events telling a dashboard what changed among the things its
//! user may see. Browsers' `EventSource` cannot send headers, so this one endpoint also takes the
//! access token as `?access_token=`. The stream ends when the token would expire; the dashboard
//! reconnects with a fresh one.

use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, get, web};
use stayopen_shared::api::ApiError;
use tokio::sync::broadcast::error::RecvError;

use crate::domain::access::AuthUser;
use crate::http::error::ApiFailure;
use crate::state::AppState;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The path, for the one place that accepts a token in the query string.
pub const STREAM_PATH: &str = "/api/v1/stream";

/// Live updates: each message's data is a `StreamEvent` (`topic` `appliance` or `alert`, `id`,
/// `practice_id`). Authenticate with the bearer header or `?access_token=`.
#[utoipa::path(
    tag = "fleet",
    params(("access_token" = Option<String>, Query, description = "The access token, for EventSource clients that cannot send headers")),
    responses((status = 200, description = "text/event-stream of StreamEvent", content_type = "text/event-stream"), (status = 401, body = ApiError)),
    security(("bearer" = []))
)]
#[get("/stream")]
pub async fn live_updates(
    state: web::Data<AppState>,
    auth: AuthUser,
) -> Result<HttpResponse, ApiFailure> {
    let receiver = state.hub.subscribe();
    let practices = auth.practice_filter();
    let tenant = auth.tenant_id;
    let lifetime = Duration::from_secs(u64::from(state.config.auth.token_ttl_minutes) * 60);
    let ends_at = tokio::time::Instant::now() + lifetime;
    let events = futures_util::stream::unfold((receiver, true), move |(mut receiver, first)| {
        let practices = practices.clone();
        async move {
            if first {
                let opening = Bytes::from_static(b"retry: 2000\n: connected\n\n");
                return Some((Ok::<_, actix_web::Error>(opening), (receiver, false)));
            }
            loop {
                let next = tokio::time::timeout_at(
                    ends_at.min(tokio::time::Instant::now() + KEEPALIVE),
                    receiver.recv(),
                )
                .await;
                let chunk = match next {
                    Err(_) if tokio::time::Instant::now() >= ends_at => return None,
                    Err(_) => Bytes::from_static(b": keepalive\n\n"),
                    Ok(Err(RecvError::Closed)) => return None,
                    // Fell behind: the dashboard's fallback poll catches up.
                    Ok(Err(RecvError::Lagged(_))) => continue,
                    Ok(Ok(event)) => {
                        let visible = event.tenant_id == tenant
                            && practices
                                .as_ref()
                                .is_none_or(|p| p.contains(&event.event.practice_id.0));
                        if !visible {
                            continue;
                        }
                        match serde_json::to_string(&event.event) {
                            Ok(json) => Bytes::from(format!("data: {json}\n\n")),
                            Err(_) => continue,
                        }
                    }
                };
                return Some((Ok(chunk), (receiver, false)));
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(events))
}
