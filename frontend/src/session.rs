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

    /// Trades the stored refresh token for a new access token. False when there is none or the
    /// cloud refused it (expired, revoked, reused).
    async fn renew(self) -> bool {
        let Some(refresh_token) = load(REFRESH_KEY) else {
            return false;
        };
        match crate::api::refresh(refresh_token).await {
            Ok(response) => {
                store_tokens(&response);
                self.token.set(Some(response.access_token));
                self.user.set(Some(response.user));
                true
            }
            Err(_) => false,
        }
    }

    /// Renews the session after the cloud rejected the access token `rejected`, once for all the
    /// calls that saw it rejected: a later caller finds the token already replaced, or waits for
    /// the renewal under way. False when the session is over; the login page then says it expired.
    pub async fn renew_after(self, rejected: &str) -> bool {
        loop {
            let current = self.token.get_untracked();
            if current.as_deref() != Some(rejected) {
                return current.is_some();
            }
            if !self.renewing.get_untracked() {
                break;
            }
            TimeoutFuture::new(50).await;
        }
        self.renewing.set(true);
        let renewed = self.renew().await;
        self.renewing.set(false);
        if !renewed {
            self.expire();
        }
        renewed
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
