//! Security headers on every response — API, dashboard files, health endpoints and errors alike —
//! and the request log line, which never carries a query string.
//!
//! The dashboard keeps its tokens in `localStorage`, so script injection would be account
//! takeover: the Content-Security-Policy allows scripts only from the cloud's own origin (plus
//! `'wasm-unsafe-eval'`, which WebAssembly compilation needs, and which does not allow `eval` of
//! JavaScript), no inline script or style, connections only to the same origin, and no framing
//! (clickjacking). API responses are not stored by caches (`no-store`): they carry tenant data.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::{Logger, Next};
use actix_web::web;

use crate::state::AppState;

/// The dashboard's policy. `img-src data:` serves the enrolment QR codes; `style-src 'self'`
/// is enough since the dashboard sets no inline styles.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The headers for a response to `path`: `hsts_max_age` when HSTS applies (TLS, or configured).
pub fn apply(headers: &mut HeaderMap, path: &str, hsts_max_age: Option<u32>) {
    let fixed: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Some(max_age) = hsts_max_age
        && let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}; includeSubDomains"))
    {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    if path.starts_with("/api/") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// A year: what browsers' preload lists expect, used when the request arrived over TLS and no
/// value is configured.
const HSTS_OVER_TLS: u32 = 31_536_000;

/// The middleware: adds [`apply`]'s headers to every response. Failures of handlers and extractors
/// (`ApiFailure`, the JSON/path/query error handlers) are responses by the time they get here, so
/// error answers carry the headers too.
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let configured = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.config.edge.hsts_max_age_secs);
    let hsts = configured.or(req.app_config().secure().then_some(HSTS_OVER_TLS));
    let path = req.path().to_owned();
    let mut response = next.call(req).await?;
    apply(response.headers_mut(), &path, hsts);
    Ok(response)
}

/// The request log: method, path (without the query string, which may carry secrets), status and
/// time. The health check is left out.
pub fn request_logger() -> Logger {
    Logger::new("%{method}xi %{path}xi %s %Dms")
        .custom_request_replace("method", |req| req.method().to_string())
        .custom_request_replace("path", |req| req.path().to_owned())
        .exclude("/healthz")
}

/// `text` with every quoted or backticked part replaced by `…`: parser errors quote the value
/// they could not read (`invalid type: integer `123456`, expected a string`), which may be a
/// password, a TOTP code or a token sent with the wrong type. The client gets the whole message;
/// the log gets this.
pub fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(quote) if c == quote => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None if matches!(c, '"' | '`') => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_quoted_in_parser_errors_do_not_reach_the_log() {
        assert_eq!(
            redact_quoted("invalid type: integer `123456`, expected a string at line 1 column 20"),
            "invalid type: integer `…`, expected a string at line 1 column 20"
        );
        assert_eq!(
            redact_quoted("invalid type: string \"sot_abc\", expected u32"),
            "invalid type: string \"…\", expected u32"
        );
        assert_eq!(redact_quoted("unterminated \"secret"), "unterminated \"…");
    }

    #[test]
    fn api_responses_are_not_stored_and_files_may_be() {
        let mut api = HeaderMap::new();
        apply(&mut api, "/api/v1/fleet", None);
        assert_eq!(
            api.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
            Some(&b"no-store"[..])
        );
        let mut file = HeaderMap::new();
        apply(&mut file, "/style.css", None);
        assert!(file.get(header::CACHE_CONTROL).is_none());
        assert!(file.get(header::STRICT_TRANSPORT_SECURITY).is_none());
    }

    #[test]
    fn the_policy_allows_no_inline_script_and_no_framing() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("'unsafe-eval'"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        let mut headers = HeaderMap::new();
        apply(&mut headers, "/", Some(600));
        assert_eq!(
            headers
                .get(header::STRICT_TRANSPORT_SECURITY)
                .map(|v| v.as_bytes()),
            Some(&b"max-age=600; includeSubDomains"[..])
        );
    }
}
