//! The signed-in session: token persistence in `localStorage` and the app-wide state shared through
//! Leptos context.

use leptos::prelude::*;
use stayopen_shared::api::CurrentUser;

const TOKEN_KEY: &str = "stayopen.token";

/// Shown on the login page after the cloud rejected a token.
pub const SESSION_EXPIRED: &str = "Your session expired";

fn storage() -> Option<web_sys::Storage> {
    // Storage can be unavailable (privacy modes, sandboxed iframes): the session then lives in memory
    // only and ends with the tab.
    web_sys::window()?.local_storage().ok().flatten()
}

pub fn load_token() -> Option<String> {
    storage()?
        .get_item(TOKEN_KEY)
        .ok()
        .flatten()
        .filter(|t| !t.is_empty())
}

fn store_token(token: &str) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(TOKEN_KEY, token);
    }
}

fn clear_token() {
    if let Some(storage) = storage() {
        let _ = storage.remove_item(TOKEN_KEY);
    }
}

/// Which page is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// A stored token is being checked with `GET /api/v1/me`.
    Checking,
    Login,
    Fleet,
}

impl Page {
    /// The path shown in the address bar; the cloud serves `index.html` for both.
    fn path(self) -> Option<&'static str> {
        match self {
            Page::Checking => None,
            Page::Login => Some("/login"),
            Page::Fleet => Some("/"),
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
        };
        // Keep the address bar in step with the page without adding history entries: there is no
        // meaningful "back" between login and fleet.
        Effect::new(move |_| {
            if let Some(path) = session.page.get().path() {
                replace_path(path);
            }
        });
        session
    }

    /// Stores a fresh token and shows the fleet.
    pub fn sign_in(self, token: String, user: CurrentUser) {
        store_token(&token);
        self.token.set(Some(token));
        self.user.set(Some(user));
        self.login_message.set(None);
        self.page.set(Page::Fleet);
    }

    /// Forgets the token and shows the login page with `message`, if any.
    pub fn sign_out(self, message: Option<&str>) {
        clear_token();
        self.token.set(None);
        self.user.set(None);
        self.login_message.set(message.map(str::to_owned));
        self.page.set(Page::Login);
    }

    /// The cloud answered 401 to a token: the session is over.
    pub fn expire(self) {
        self.sign_out(Some(SESSION_EXPIRED));
    }
}

fn replace_path(path: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let current = window.location().pathname().unwrap_or_default();
    if current == path {
        return;
    }
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(path));
    }
}
