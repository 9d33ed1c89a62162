//! Calls to the cloud's REST API. The dashboard is served from the same origin, so paths are absolute.
//!
//! Every signed-in call goes through [`call`]: it sends the access token and, when the cloud answers
//! 401 (the 15-minute token ran out), renews the session once with the refresh token and retries.
//! Only a refused renewal ends the session, and then the login page says so.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use gloo_net::http::{Method, Request, RequestBuilder, Response};
use gloo_timers::callback::Timeout;
use leptos::prelude::GetUntracked;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stayopen_shared::api::{ApiError, LoginRequest, LoginResponse, RefreshRequest, StreamTicket};
use web_sys::AbortController;

use crate::session::{Renewal, Session};

/// A request that has not answered after this long is aborted, so a hung connection surfaces as a
/// connection problem instead of stalling a page.
const REQUEST_TIMEOUT_MS: u32 = 10_000;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 401: wrong credentials, or the token expired or was revoked. Carries the server's body, if any.
    Unauthorized(Option<ApiError>),
    /// Any other HTTP error; `body` is the server's `ApiError` when it sent one.
    Status { status: u16, body: Option<ApiError> },
    /// The request got no answer (offline, DNS, timeout…).
    Network(String),
    /// The answer was not the JSON we expected.
    Decode(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unauthorized(Some(e)) | Failure::Status { body: Some(e), .. } => {
                f.write_str(e.message())
            }
            Failure::Unauthorized(None) => f.write_str("You are not signed in."),
            Failure::Status { status, body: None } => {
                write!(f, "The StayOpen cloud answered with HTTP {status}.")
            }
            Failure::Network(_) => f.write_str("The StayOpen cloud cannot be reached."),
            Failure::Decode(_) => f.write_str("The StayOpen cloud sent an unexpected answer."),
        }
    }
}

impl Failure {
    /// The server's error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Unauthorized(Some(e)) | Failure::Status { body: Some(e), .. } => {
                Some(e.code())
            }
            _ => None,
        }
    }

    /// The thing asked for does not exist, or the caller may not see it (the cloud answers both
    /// with 404, so a practice of another MSP is indistinguishable from none).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Failure::Status { status: 404, .. })
    }
}

/// `POST /api/v1/auth/login`.
pub async fn login(
    email: String,
    password: String,
    totp_code: Option<String>,
) -> Result<LoginResponse, Failure> {
    let body = encode(&LoginRequest {
        email,
        password,
        totp_code,
        msp: None,
    })?;
    parse(&send(Method::POST, "/api/v1/auth/login", Some(&body), None).await?)
}

/// `POST /api/v1/auth/refresh`: the next access and refresh token of this sign-in.
pub async fn refresh(refresh_token: String) -> Result<LoginResponse, Failure> {
    let body = encode(&RefreshRequest { refresh_token })?;
    parse(&send(Method::POST, "/api/v1/auth/refresh", Some(&body), None).await?)
}

/// `POST /api/v1/auth/logout`: revokes the refresh token, so a copy of it is worthless.
pub async fn logout(refresh_token: String) {
    if let Ok(body) = encode(&RefreshRequest { refresh_token }) {
        let _ = send(Method::POST, "/api/v1/auth/logout", Some(&body), None).await;
    }
}

/// `POST /api/v1/stream/tickets`: a single-use ticket that opens the live-update stream.
pub fn stream_ticket(session: Session) -> LocalFuture<StreamTicket> {
    post(session, "/api/v1/stream/tickets", &())
}

/// A call's answer, not tied to the borrowed path or body it was made with.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = Result<T, Failure>>>>;

// Only the last step, decoding the answer into `T`, is generic: the request itself is one
// function for every type, which keeps the dashboard's download small (each generic async
// function is compiled again for every type it is called with).

pub fn get<T: DeserializeOwned>(
    session: Session,
    path: &str,
) -> impl Future<Output = Result<T, Failure>> + use<T> {
    let answer = call(session, Method::GET, path.to_owned(), None);
    async move { parse(&answer.await?) }
}

pub fn post<B: Serialize, T: DeserializeOwned + 'static>(
    session: Session,
    path: &str,
    body: &B,
) -> LocalFuture<T> {
    with_body(session, Method::POST, path, encode(body))
}

pub fn put<B: Serialize, T: DeserializeOwned + 'static>(
    session: Session,
    path: &str,
    body: &B,
) -> LocalFuture<T> {
    with_body(session, Method::PUT, path, encode(body))
}

pub fn patch<B: Serialize, T: DeserializeOwned + 'static>(
    session: Session,
    path: &str,
    body: &B,
) -> LocalFuture<T> {
    with_body(session, Method::PATCH, path, encode(body))
}

/// `DELETE`; the cloud answers 204 without a body.
pub fn delete(session: Session, path: &str) -> impl Future<Output = Result<(), Failure>> + use<> {
    let answer = call(session, Method::DELETE, path.to_owned(), None);
    async move { answer.await.map(drop) }
}

// The wrappers copy the path and encode the body before returning a `'static` future, so callers
// can build the path inline (`&format!(…)`) in a closure that returns the future.
fn with_body<T: DeserializeOwned + 'static>(
    session: Session,
    method: Method,
    path: &str,
    body: Result<String, Failure>,
) -> LocalFuture<T> {
    let answer = body.map(|body| call(session, method, path.to_owned(), Some(body)));
    Box::pin(async move { parse(&answer?.await?) })
}

/// Decodes a successful answer; an empty one (204) decodes as `()` (JSON `null`). Never inlined:
/// one copy per answer type, however many places ask for that type.
#[inline(never)]
fn parse<T: DeserializeOwned>(text: &str) -> Result<T, Failure> {
    let json = if text.trim().is_empty() { "null" } else { text };
    serde_json::from_str(json).map_err(|e| Failure::Decode(e.to_string()))
}

fn encode<B: Serialize>(body: &B) -> Result<String, Failure> {
    serde_json::to_string(body).map_err(|e| Failure::Decode(e.to_string()))
}

/// The one place a signed-in request is made: with the current access token, renewed once on 401.
/// Answers the body of a successful response.
fn call(
    session: Session,
    method: Method,
    path: String,
    body: Option<String>,
) -> LocalFuture<String> {
    Box::pin(call_unboxed(session, method, path, body))
}

async fn call_unboxed(
    session: Session,
    method: Method,
    path: String,
    body: Option<String>,
) -> Result<String, Failure> {
    let path = path.as_str();
    let Some(token) = session.token.get_untracked() else {
        return Err(Failure::Unauthorized(None));
    };
    match send(method.clone(), path, body.as_deref(), Some(&token)).await {
        // A wrong second-factor code is a 401 about the code, not the session: say it, keep the
        // session.
        Err(Failure::Unauthorized(Some(e))) if e.code() == "totp_invalid" => Err(Failure::Status {
            status: 401,
            body: Some(e),
        }),
        Err(Failure::Unauthorized(_)) => {
            // Several calls can fail at once; `renew_after` renews once for all of them, since a
            // refresh token used twice makes the cloud revoke the whole sign-in.
            match session.renew_after(&token).await {
                Renewal::Renewed => {}
                Renewal::Refused => return Err(Failure::Unauthorized(None)),
                // The access token ran out while the connection is down: show the connection
                // problem, keep the session, and renew on a later call.
                Renewal::Unreachable => {
                    return Err(Failure::Network("the session could not be renewed".into()));
                }
            }
            let Some(renewed) = session.token.get_untracked() else {
                return Err(Failure::Unauthorized(None));
            };
            let retried = send(method, path, body.as_deref(), Some(&renewed)).await;
            if let Err(Failure::Unauthorized(_)) = retried {
                session.expire();
            }
            retried
        }
        other => other,
    }
}

async fn send(
    method: Method,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<String, Failure> {
    let deadline = Deadline::start();
    let mut builder = RequestBuilder::new(path)
        .method(method)
        .header("Accept", "application/json");
    if let Some(token) = token {
        builder = builder.header("Authorization", &format!("Bearer {token}"));
    }
    let builder = deadline.attach(builder);
    let request: Request = match body {
        Some(body) => builder
            .header("Content-Type", "application/json")
            .body(body.to_owned()),
        None => builder.build(),
    }
    .map_err(|e| Failure::Network(e.to_string()))?;
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Network(e.to_string()))?;
    decode(response).await
}

async fn decode(response: Response) -> Result<String, Failure> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| Failure::Network(e.to_string()))?;
    if response.ok() {
        return Ok(text);
    }
    let body = serde_json::from_str::<ApiError>(&text).ok();
    if status == 401 {
        Err(Failure::Unauthorized(body))
    } else {
        Err(Failure::Status { status, body })
    }
}

/// Aborts the request it is attached to after [`REQUEST_TIMEOUT_MS`] unless dropped first. Must live
/// until the body is read, since reading the body can hang too.
struct Deadline {
    controller: Option<AbortController>,
    _timer: Option<Timeout>,
}

impl Deadline {
    fn start() -> Self {
        // `AbortController` exists in every browser the dashboard supports; without it, requests just
        // have no deadline.
        let controller = AbortController::new().ok();
        let timer = controller
            .clone()
            .map(|controller| Timeout::new(REQUEST_TIMEOUT_MS, move || controller.abort()));
        Self {
            controller,
            _timer: timer,
        }
    }

    fn attach(&self, builder: RequestBuilder) -> RequestBuilder {
        match &self.controller {
            Some(controller) => builder.abort_signal(Some(&controller.signal())),
            None => builder,
        }
    }
}

/// Downloads a file the API serves only to a signed-in user (an evidence package, a CSV export):
/// fetched with
/// the session's token, renewed once on 401 like [`call`], and handed to the browser to save as
/// `file_name`. A plain `<a href>` cannot send the token.
pub async fn download(
    session: Session,
    path: &str,
    file_name: &str,
    mime: &str,
) -> Result<(), Failure> {
    let Some(token) = session.token.get_untracked() else {
        return Err(Failure::Unauthorized(None));
    };
    let bytes = match fetch_bytes(path, &token).await {
        Err(Failure::Unauthorized(_)) => {
            match session.renew_after(&token).await {
                Renewal::Renewed => {}
                Renewal::Refused => return Err(Failure::Unauthorized(None)),
                Renewal::Unreachable => {
                    return Err(Failure::Network("the session could not be renewed".into()));
                }
            }
            let renewed = session
                .token
                .get_untracked()
                .ok_or(Failure::Unauthorized(None))?;
            fetch_bytes(path, &renewed).await?
        }
        other => other?,
    };
    save_file(&bytes, file_name, mime)
}

async fn fetch_bytes(path: &str, token: &str) -> Result<Vec<u8>, Failure> {
    // No deadline: a package of a year can take longer than a JSON call to arrive.
    let response = RequestBuilder::new(path)
        .method(Method::GET)
        .header("Authorization", &format!("Bearer {token}"))
        .build()
        .map_err(|e| Failure::Network(e.to_string()))?
        .send()
        .await
        .map_err(|e| Failure::Network(e.to_string()))?;
    if !response.ok() {
        return decode(response).await.map(|_| Vec::new());
    }
    response
        .binary()
        .await
        .map_err(|e| Failure::Network(e.to_string()))
}

/// Offers `bytes` to the user as a file: an object URL clicked through a detached link.
fn save_file(bytes: &[u8], file_name: &str, mime: &str) -> Result<(), Failure> {
    use wasm_bindgen::JsCast;
    let failed = |e: wasm_bindgen::JsValue| Failure::Decode(format!("{e:?}"));
    let array = web_sys::js_sys::Uint8Array::from(bytes);
    let parts = web_sys::js_sys::Array::of1(&array);
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob =
        web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(failed)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(failed)?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| Failure::Decode("no document".into()))?;
    let link: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(failed)?
        .dyn_into()
        .map_err(|_| Failure::Decode("not a link".into()))?;
    link.set_href(&url);
    link.set_download(file_name);
    link.click();
    // The browser has taken the file once the click is handled; the URL is freed a little later.
    Timeout::new(60_000, move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    })
    .forget();
    Ok(())
}
