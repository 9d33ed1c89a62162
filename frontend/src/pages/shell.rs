//! The signed-in app: top bar, the navigation the user's role allows, the live indicator and the page
//! the URL's fragment names.

use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use stayopen_shared::api::CurrentUser;

use crate::api::{self, Failure};
use crate::components::Clock;
use crate::live::{Live, StreamState, now_ms, run_stream};
use crate::logic::{Route, nav_sections};
use crate::pages;
use crate::session::Session;

fn current_route() -> Route {
    let hash = web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default();
    Route::parse(&hash)
}

#[component]
pub fn Shell(session: Session) -> impl IntoView {
    let live = Live::new();
    provide_context(live);
    let clock = Clock(RwSignal::new(now_ms()));
    provide_context(clock);
    // Times read in the viewer's zone, except on a practice's pages (which set theirs).
    provide_context(crate::components::DisplayZone(RwSignal::new(None)));

    let route = RwSignal::new(current_route());
    let handle = window_event_listener(leptos::ev::hashchange, move |_| {
        let next = current_route();
        if route.get_untracked() != next {
            route.set(next);
            // A new page starts at its top, like a new document would.
            window().scroll_to_with_x_and_y(0.0, 0.0);
        }
    });
    on_cleanup(move || handle.remove());

    // Cancelled with the shell (sign-out, expired session).
    spawn_local_scoped_with_cancellation(async move {
        loop {
            TimeoutFuture::new(1_000).await;
            clock.0.set(now_ms());
        }
    });
    // The user could not be fetched at start-up (cloud unreachable): retry until it works.
    spawn_local_scoped_with_cancellation(async move {
        while session.user.with_untracked(Option::is_none) {
            match api::get::<CurrentUser>(session, "/api/v1/me").await {
                Ok(user) => session.user.set(Some(user)),
                Err(Failure::Unauthorized(_)) => return,
                Err(_) => TimeoutFuture::new(3_000).await,
            }
        }
    });
    run_stream(session, live);

    let role = Memo::new(move |_| session.user.with(|u| u.as_ref().map(|u| u.role)));
    let page_route = Memo::new(move |_| route.get());
    // Once the role is known, the page modules it may open download in the background.
    let prefetching = StoredValue::new(false);
    Effect::new(move |_| {
        if let Some(role) = role.get()
            && !prefetching.get_value()
        {
            prefetching.set_value(true);
            spawn_local_scoped_with_cancellation(pages::prefetch_pages(role));
        }
    });

    Effect::new(move |_| {
        document().set_title(&format!("{} · StayOpen", page_route.get().title()));
    });

    let tenant_name = move || {
        session
            .user
            .with(|u| u.as_ref().map(|u| u.tenant_name.clone()))
            .unwrap_or_default()
    };

    // On a phone the navigation folds away behind "Menu"; choosing a page folds it again.
    let menu_open = RwSignal::new(false);
    Effect::new(move |_| {
        page_route.track();
        menu_open.set(false);
    });
    // "/" puts the cursor in the page's search box (the one marked `data-page-search`), as in
    // most web consoles, unless one is typing in a field already.
    let slash = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.key() != "/" || ev.ctrl_key() || ev.meta_key() || ev.alt_key() {
            return;
        }
        let typing = ev
            .target()
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok())
            .is_some_and(|e| {
                matches!(e.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                    || e.has_attribute("contenteditable")
            });
        if typing {
            return;
        }
        if let Some(search) = document()
            .query_selector("[data-page-search]")
            .ok()
            .flatten()
            .and_then(|e| wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(e).ok())
        {
            ev.prevent_default();
            let _ = search.focus();
        }
    });
    on_cleanup(move || slash.remove());

    // The account and "Sign out" come after the navigation in the page (and so in the Tab order),
    // while the style sheet shows them at the top right.
    view! {
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="topbar" class:menu-open=move || menu_open.get()>
            <div class="topbar-inner">
                <a class="brand" href="#/fleet">
                    <span class="brand-mark" aria-hidden="true"></span>
                    "StayOpen"
                </a>
                <div id="tenant-name" class="tenant-name">{tenant_name}</div>
                <LiveIndicator live />
                <button
                    id="menu-toggle"
                    type="button"
                    class="button button-secondary button-small menu-toggle"
                    aria-controls="main-nav"
                    aria-expanded=move || if menu_open.get() { "true" } else { "false" }
                    on:click=move |_| menu_open.update(|open| *open = !*open)
                >
                    "Menu"
                </button>
            </div>
            <nav class="nav" id="main-nav" aria-label="Main">
                <ul class="nav-inner">
                    {move || {
                        role.get()
                            .map(|role| {
                                nav_sections(role)
                                    .into_iter()
                                    .map(|section| {
                                        let current = move || page_route.get().section() == Some(section);
                                        view! {
                                            <li>
                                                <a
                                                    href=section.route().href()
                                                    class="nav-link"
                                                    class:active=current
                                                    data-nav=section.label()
                                                    aria-current=move || current().then_some("page")
                                                >
                                                    {section.label()}
                                                </a>
                                            </li>
                                        }
                                    })
                                    .collect_view()
                            })
                    }}
                </ul>
            </nav>
            <div class="user">
                {move || {
                    session
                        .user
                        .get()
                        .map(|user| {
                            view! {
                                <span id="current-user" class="user-email">{user.email}</span>
                                <span id="current-role" class="user-role" data-role=user.role.as_str()>
                                    {user.role.label()}
                                </span>
                            }
                        })
                }}
                <button
                    id="sign-out"
                    class="button button-secondary button-small"
                    type="button"
                    on:click=move |_| session.sign_out(None)
                >
                    "Sign out"
                </button>
            </div>
        </header>
        <main id="main" class="content" tabindex="-1">
            <pages::warnings::SecondFactorWarning />
            {move || {
                let route = page_route.get();
                match role.get() {
                    // The role is not known yet: wait rather than show a page it may not open.
                    None => view! { <p class="muted loading">"Loading…"</p> }.into_any(),
                    Some(role) if !route.allowed(role) => view! {
                        <section class="card not-found" id="not-found">
                            <h1>"Not available"</h1>
                            <p>"This page is not part of what your account may do."</p>
                            <p><a href="#/fleet">"Back to the fleet"</a></p>
                        </section>
                    }
                    .into_any(),
                    Some(_) => pages::page_for(route),
                }
            }}
        </main>
    }
}

#[component]
fn LiveIndicator(live: Live) -> impl IntoView {
    let label = move || match live.state.get() {
        StreamState::Live => "Live",
        StreamState::Connecting => "Connecting…",
        StreamState::Reconnecting => "Reconnecting…",
    };
    let title = move || match live.state.get() {
        StreamState::Live => "Changes appear within seconds, without reloading.",
        _ => "The live connection is down; pages refresh every 5 seconds until it is back.",
    };
    view! {
        <div
            id="live-indicator"
            class="live-indicator"
            class:is-live=move || live.state.get() == StreamState::Live
            data-state=move || match live.state.get() {
                StreamState::Live => "live",
                StreamState::Connecting => "connecting",
                StreamState::Reconnecting => "reconnecting",
            }
            title=title
            role="status"
        >
            <span class="live-dot" aria-hidden="true"></span>
            {label}
        </div>
    }
}
