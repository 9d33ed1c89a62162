//! Calls to the cloud's REST API. The dashboard is served from the same origin, so paths are absolute.

use std::fmt;

use gloo_net::http::{Request, RequestBuilder, Response};
use gloo_timers::callback::Timeout;
use serde::de::DeserializeOwned;
use stayopen_shared::api::{
    ApiError, CurrentUser, Fleet, LoginRequest, LoginResponse, RefreshRequest,
};
use web_sys::AbortController;

/// A request that has not answered after this long is aborted, so a hung connection surfaces as a
/// connection problem instead of stalling the poll loop.
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
}

/// `POST /api/v1/auth/login`.
pub async fn login(
    email: String,
    password: String,
    totp_code: Option<String>,
) -> Result<LoginResponse, Failure> {
    post(
        "/api/v1/auth/login",
        &LoginRequest {
            email,
            password,
            totp_code,
        },
    )
    .await
}

/// `POST /api/v1/auth/refresh`: the next access and refresh token of this sign-in.
pub async fn refresh(refresh_token: String) -> Result<LoginResponse, Failure> {
    post("/api/v1/auth/refresh", &RefreshRequest { refresh_token }).await
}

async fn post<B: serde::Serialize, T: DeserializeOwned>(
    path: &str,
    body: &B,
) -> Result<T, Failure> {
    let deadline = Deadline::start();
    let request = deadline
        .attach(Request::post(path).header("Accept", "application/json"))
        .json(body)
        .map_err(|e| Failure::Network(e.to_string()))?;
    send(request).await
}

/// `GET /api/v1/me`.
pub async fn me(token: &str) -> Result<CurrentUser, Failure> {
    get("/api/v1/me", token).await
}

/// `GET /api/v1/fleet`.
pub async fn fleet(token: &str) -> Result<Fleet, Failure> {
    get("/api/v1/fleet", token).await
}

async fn get<T: DeserializeOwned>(path: &str, token: &str) -> Result<T, Failure> {
    let deadline = Deadline::start();
    let request = deadline
        .attach(
            Request::get(path)
                .header("Authorization", &format!("Bearer {token}"))
                .header("Accept", "application/json"),
        )
        .build()
        .map_err(|e| Failure::Network(e.to_string()))?;
    send(request).await
}

async fn send<T: DeserializeOwned>(request: Request) -> Result<T, Failure> {
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Network(e.to_string()))?;
    decode(response).await
}

async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Failure> {
    let status = response.status();
    if response.ok() {
        return response
            .json::<T>()
            .await
            .map_err(|e| Failure::Decode(e.to_string()));
    }
    let body = response.json::<ApiError>().await.ok();
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
