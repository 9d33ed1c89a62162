//! StayOpen dashboard: a client-side rendered Leptos app served by the cloud next to its API.

mod api;
mod logic;
mod pages;
mod session;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::Failure;
use crate::pages::fleet::FleetPage;
use crate::pages::login::LoginPage;
use crate::session::{Page, Session};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let session = Session::new();

    // A stored token may have expired since the last visit: check it before showing the fleet.
    if let Some(token) = session.token.get_untracked() {
        spawn_local(async move {
            match api::me(&token).await {
                Ok(user) => {
                    session.user.set(Some(user));
                    session.page.set(Page::Fleet);
                }
                Err(Failure::Unauthorized(_)) => {
                    if session.renew().await {
                        session.page.set(Page::Fleet);
                    } else {
                        session.expire();
                    }
                }
                // Cloud unreachable: show the fleet page, whose poll loop reports the connection
                // problem and fetches the user once the cloud answers.
                Err(_) => session.page.set(Page::Fleet),
            }
        });
    }

    // Setting the page to the one already shown must not rebuild it (and lose what was typed).
    let page = Memo::new(move |_| session.page.get());

    Effect::new(move |_| {
        let title = match page.get() {
            Page::Checking => "StayOpen",
            Page::Login => "Sign in · StayOpen",
            Page::Fleet => "Fleet · StayOpen",
        };
        document().set_title(title);
    });

    move || match page.get() {
        Page::Checking => view! {
            <main class="checking" aria-busy="true">
                <p class="muted">"Loading…"</p>
            </main>
        }
        .into_any(),
        Page::Login => view! { <LoginPage session /> }.into_any(),
        Page::Fleet => view! { <FleetPage session /> }.into_any(),
    }
}
