//! The signed-in session: token persistence in `localStorage` and the app-wide state shared through
//! Leptos context.

use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use leptos::task::spawn_local;
use stayopen_shared::api::{CurrentUser, LoginResponse};

use crate::logic::Capabilities;

const TOKEN_KEY: &str = "stayopen.token";
const REFRESH_KEY: &str = "stayopen.refresh";

/// Shown on the login page after the cloud rejected a token.
pub const SESSION_EXPIRED: &str = "Your session expired";

fn storage() -> Option<web_sys::Storage> {
    // Storage can be unavailable (privacy modes, sandboxed iframes): the session then lives in memory
    // only and ends with the tab.
    web_sys::window()?.local_storage().ok().flatten()
}

fn load(key: &str) -> Option<String> {
    storage()?
        .get_item(key)
        .ok()
        .flatten()
        .filter(|t| !t.is_empty())
}

pub fn load_token() -> Option<String> {
    load(TOKEN_KEY)
}

fn store_tokens(response: &LoginResponse) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(TOKEN_KEY, &response.access_token);
        let _ = storage.set_item(REFRESH_KEY, &response.refresh_token);
    }
}

fn clear_tokens() {
    if let Some(storage) = storage() {
        let _ = storage.remove_item(TOKEN_KEY);
        let _ = storage.remove_item(REFRESH_KEY);
    }
}

/// How renewing the access token went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// A new access token is in place.
    Renewed,
    /// The cloud refused the refresh token (expired, revoked, reused, user disabled): the
    /// session is over.
    Refused,
    /// No answer (the connection is down): neither renewed nor over; a later call tries again.
    Unreachable,
}

impl Renewal {
    /// What a failed refresh means: only the cloud's own refusal ends the session. A network
    /// failure or an answer the dashboard cannot read (a proxy's error page while the cloud is
    /// restarting) says nothing about the sign-in.
    pub fn after(failure: &crate::api::Failure) -> Renewal {
        use crate::api::Failure;
        match failure {
            Failure::Unauthorized(_) => Renewal::Refused,
            Failure::Status { status, .. } if (400..500).contains(status) => Renewal::Refused,
            Failure::Status { .. } | Failure::Network(_) | Failure::Decode(_) => {
                Renewal::Unreachable
            }
        }
    }
}

/// Which screen is shown; inside the signed-in app, the URL's fragment picks the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// A stored token is being checked with `GET /api/v1/me`.
    Checking,
    Login,
    App,
}

impl Page {
    /// The path shown in the address bar; the cloud serves `index.html` for both. The fragment
    /// (the page inside the app) is kept, so a deep link survives signing in.
    fn path(self) -> Option<&'static str> {
        match self {
            Page::Checking => None,
            Page::Login => Some("/login"),
            Page::App => Some("/"),
        }
    }
}

/// App-wide state; every field is a `Copy` signal handle, so the struct is passed around freely.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub page: RwSignal<Page>,
    pub token: RwSignal<Option<String>>,
    pub user: RwSignal<Option<CurrentUser>>,
    /// Message for the login page (failed sign-in or expired session).
    pub login_message: RwSignal<Option<String>>,
    /// A refresh is in flight: other calls wait for it instead of spending the refresh token again.
    renewing: RwSignal<bool>,
}

impl Session {
    pub fn new() -> Self {
        let token = load_token();
        let page = if token.is_some() {
            Page::Checking
        } else {
            Page::Login
        };
        let session = Self {
            page: RwSignal::new(page),
            token: RwSignal::new(token),
            user: RwSignal::new(None),
            login_message: RwSignal::new(None),
            renewing: RwSignal::new(false),
        };
        // Keep the address bar in step with the screen without adding history entries: there is
        // no meaningful "back" between login and the app.
        Effect::new(move |_| {
            if let Some(path) = session.page.get().path() {
                replace_path(path);
            }
        });
        session
    }

    /// What the signed-in user may change; nothing until the user is known.
    pub fn capabilities(self) -> Capabilities {
        self.user
            .with(|u| u.as_ref().map(|u| Capabilities::of(u.role)))
            .unwrap_or_default()
    }

    /// Stores a fresh session and shows the app.
    pub fn sign_in(self, response: LoginResponse) {
        store_tokens(&response);
        self.token.set(Some(response.access_token));
        self.user.set(Some(response.user));
        self.login_message.set(None);
        self.page.set(Page::App);
    }

    /// Trades the stored refresh token for a new access token.
    async fn renew(self) -> Renewal {
        let Some(refresh_token) = load(REFRESH_KEY) else {
            return Renewal::Refused;
        };
        match crate::api::refresh(refresh_token).await {
            Ok(response) => {
                store_tokens(&response);
                self.token.set(Some(response.access_token));
                self.user.set(Some(response.user));
                Renewal::Renewed
            }
            Err(failure) => Renewal::after(&failure),
        }
    }

    /// Renews the session after the cloud rejected the access token `rejected`, once for all the
    /// calls that saw it rejected: a later caller finds the token already replaced, or waits for
    /// the renewal under way. When the cloud refuses, the session is over and the login page says
    /// it expired; when the cloud cannot be reached, the session is kept for the next try.
    pub async fn renew_after(self, rejected: &str) -> Renewal {
        loop {
            let current = self.token.get_untracked();
            if current.as_deref() != Some(rejected) {
                return if current.is_some() {
                    Renewal::Renewed
                } else {
                    Renewal::Refused
                };
            }
            if !self.renewing.get_untracked() {
                break;
            }
            TimeoutFuture::new(50).await;
        }
        self.renewing.set(true);
        let renewal = self.renew().await;
        self.renewing.set(false);
        if renewal == Renewal::Refused {
            self.expire();
        }
        renewal
    }

    /// Forgets the tokens and shows the login page with `message`, if any.
    pub fn sign_out(self, message: Option<&str>) {
        if message.is_none()
            && let Some(refresh_token) = load(REFRESH_KEY)
        {
            // Signing out on purpose also ends the sign-in in the cloud.
            spawn_local(crate::api::logout(refresh_token));
        }
        clear_tokens();
        self.token.set(None);
        self.user.set(None);
        self.login_message.set(message.map(str::to_owned));
        self.page.set(Page::Login);
    }

    /// The cloud refused the session: it is over.
    pub fn expire(self) {
        if self.page.get_untracked() != Page::Login {
            self.sign_out(Some(SESSION_EXPIRED));
        }
    }
}

fn replace_path(path: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let location = window.location();
    let current = location.pathname().unwrap_or_default();
    if current == path {
        return;
    }
    let hash = location.hash().unwrap_or_default();
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(
            &wasm_bindgen::JsValue::NULL,
            "",
            Some(&format!("{path}{hash}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Failure;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn only_the_clouds_refusal_ends_a_session_and_a_lost_connection_keeps_it() {
        for refused in [
            Failure::Unauthorized(None),
            Failure::Status {
                status: 400,
                body: None,
            },
            Failure::Status {
                status: 403,
                body: None,
            },
        ] {
            assert_eq!(Renewal::after(&refused), Renewal::Refused, "{refused:?}");
        }
        for unreachable in [
            Failure::Network("connection refused".into()),
            Failure::Status {
                status: 502,
                body: None,
            },
            Failure::Decode("expected value at line 1 column 1".into()),
        ] {
            assert_eq!(
                Renewal::after(&unreachable),
                Renewal::Unreachable,
                "{unreachable:?}"
            );
        }
    }
}
