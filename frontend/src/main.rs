//! StayOpen dashboard: a client-side rendered Leptos app served by the cloud next to its API.

mod api;
mod charts;
mod components;
mod live;
mod logic;
mod pages;
mod session;

use leptos::prelude::*;
use leptos::task::spawn_local;
use stayopen_shared::api::CurrentUser;

use crate::api::Failure;
use crate::pages::login::LoginPage;
use crate::pages::shell::Shell;
use crate::session::{Page, Session};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let session = Session::new();
    provide_context(session);

    // A stored token may have expired since the last visit: check it (renewing it if need be)
    // before showing the app.
    if session.token.get_untracked().is_some() {
        spawn_local(async move {
            match api::get::<CurrentUser>(session, "/api/v1/me").await {
                Ok(user) => {
                    session.user.set(Some(user));
                    session.page.set(Page::App);
                }
                // `api` already ended the session and the login page says why.
                Err(Failure::Unauthorized(_)) => {}
                // Cloud unreachable: show the app, whose pages report the connection problem; the
                // shell fetches the user once the cloud answers.
                Err(_) => session.page.set(Page::App),
            }
        });
    }

    // Setting the page to the one already shown must not rebuild it (and lose what was typed).
    let page = Memo::new(move |_| session.page.get());

    move || match page.get() {
        Page::Checking => view! {
            <main class="checking" aria-busy="true">
                <p class="muted">"Loading…"</p>
            </main>
        }
        .into_any(),
        Page::Login => {
            document().set_title("Sign in · StayOpen");
            view! { <LoginPage session /> }.into_any()
        }
        Page::App => view! { <Shell session /> }.into_any(),
    }
}
