//! One module per page of the dashboard.

pub mod alerts;
pub mod appliance;
pub mod appliances;
pub mod audit;
pub mod cellular;
pub mod enrolment;
pub mod fleet;
pub mod login;
pub mod notifications;
pub mod policies;
pub mod practice;
pub mod reports;
pub mod shell;
pub mod users;
pub mod warnings;

use leptos::prelude::*;
use leptos::wasm_split::{SplitLoaderError, wasm_split};
use send_wrapper::SendWrapper;
use stayopen_shared::api::Role;

use crate::logic::{Route, Section};

/// The page a route shows; rebuilt when the route changes.
///
/// The fleet page, where most visits start, is part of the main download. Every other page is
/// its own WebAssembly module, fetched the first time it is opened (`#[wasm_split]`, split off by
/// `infra/scripts/build-frontend.sh`), so the dashboard opens after downloading only what its
/// first page needs.
pub fn page_for(route: Route) -> AnyView {
    match route {
        Route::Fleet => view! { <fleet::FleetPage /> }.into_any(),
        Route::Appliances | Route::Practice(_) | Route::Appliance(_) => {
            downloaded_page(route, appliance_pages)
        }
        Route::Alerts => downloaded_page(route, alert_pages),
        Route::Policies(_)
        | Route::Enrolment(_)
        | Route::Users
        | Route::ApiTokens
        | Route::Notifications
        | Route::Audit => downloaded_page(route, administration_pages),
        Route::Reports => downloaded_page(route, report_pages),
        Route::NotFound => not_found(),
    }
}

/// Loads the dashboard again from the cloud: a new build's main module and its page modules.
fn reload_dashboard() {
    if let Err(error) = window().location().reload() {
        leptos::logging::warn!("reloading the dashboard failed: {error:?}");
    }
}

fn not_found() -> AnyView {
    view! {
        <section class="card not-found" id="not-found">
            <h1>"Page not found"</h1>
            <p>"There is no page at this address."</p>
            <p>
                <a href="#/fleet">"Back to the fleet"</a>
            </p>
        </section>
    }
    .into_any()
}

/// A page's module could not be fetched (the loader logs why to the browser's console).
#[derive(Debug)]
struct PageNotDownloaded;

impl From<SplitLoaderError> for PageNotDownloaded {
    fn from(_: SplitLoaderError) -> Self {
        PageNotDownloaded
    }
}

type PageResult = Result<AnyView, PageNotDownloaded>;

/// Shows a page whose module may still be downloading: "Loading…" until it arrives (at once when
/// it was fetched before), and a way to try again when the download failed (the loader keeps no
/// failure, so the next attempt fetches again).
fn downloaded_page<Page>(route: Route, load: fn(Route) -> Page) -> AnyView
where
    Page: std::future::Future<Output = PageResult> + 'static,
{
    let attempt = RwSignal::new(0_u32);
    (move || {
        attempt.track();
        let loading = RwSignal::new(true);
        // The loader holds browser objects and is only ever polled on the page's one thread;
        // Suspend's bound on Send is for servers.
        let page = SendWrapper::new(load(route));
        let page = Suspend::new(async move {
            let page = page.await;
            loading.set(false);
            page.unwrap_or_else(|PageNotDownloaded| {
                view! {
                    <section class="card not-found" id="page-not-downloaded" role="alert">
                        <h1>"This page could not be downloaded"</h1>
                        <p>
                            "The connection to StayOpen may have dropped: check it, then try again. If StayOpen was updated since this tab was opened, reload the dashboard."
                        </p>
                        <p class="actions">
                            <button type="button" class="button" id="page-try-again" on:click=move |_| attempt.update(|n| *n += 1)>
                                "Try again"
                            </button>
                            <button type="button" class="button button-secondary" id="page-reload" on:click=|_| reload_dashboard()>
                                "Reload the dashboard"
                            </button>
                        </p>
                    </section>
                }
                .into_any()
            })
        });
        view! {
            {move || loading.get().then(|| view! { <p class="muted loading">"Loading…"</p> })}
            {page}
        }
    })
    .into_any()
}

// The pages come in four modules, by what they are used for: a technician's appliances and
// practices, the on-call alert queue, administration, and compliance reports. Fewer modules share
// code in fewer pieces (the splitter makes one piece per set of modules using a function), so a
// page needs fewer requests. Each function builds its page without tracking what it reads, so the
// route's closure in the shell does not come to depend on what the page reads while it is set up.
macro_rules! downloaded_pages {
    ($($module:ident, $fetch:ident => |$route:ident| $page:expr;)*) => {$(
        #[wasm_split($module, wasm_split_path = ::leptos::wasm_split, fallible, preload($fetch))]
        fn $module($route: Route) -> PageResult {
            Ok(untrack(move || $page))
        }
    )*};
}

downloaded_pages! {
    appliance_pages, fetch_appliance_pages => |route| match route {
        Route::Appliances => view! { <appliances::AppliancesPage /> }.into_any(),
        Route::Practice(id) => view! { <practice::PracticePage id /> }.into_any(),
        Route::Appliance(id) => view! { <appliance::AppliancePage id /> }.into_any(),
        _ => not_found(),
    };
    alert_pages, fetch_alert_pages => |_route| view! { <alerts::AlertsPage /> }.into_any();
    administration_pages, fetch_administration_pages => |route| match route {
        Route::Policies(target) => view! { <policies::PoliciesPage target /> }.into_any(),
        Route::Enrolment(practice) => view! { <enrolment::EnrolmentPage practice /> }.into_any(),
        Route::Users => view! { <users::UsersPage /> }.into_any(),
        Route::ApiTokens => view! { <users::ApiTokensPage /> }.into_any(),
        Route::Notifications => view! { <notifications::NotificationsPage /> }.into_any(),
        Route::Audit => view! { <audit::AuditPage /> }.into_any(),
        _ => not_found(),
    };
    report_pages, fetch_report_pages => |_route| view! { <reports::ReportsPage /> }.into_any();
}

/// Fetches, one after another, the page modules `role` may open, once the first page has had a
/// moment to load its own data: opening the dashboard waits only for the main module, and moving
/// to another page later does not wait for the network. A failed fetch is left for the page to
/// retry when it is opened.
pub async fn prefetch_pages(role: Role) {
    gloo_timers::future::TimeoutFuture::new(1_500).await;
    let _ = fetch_appliance_pages().await;
    let _ = fetch_alert_pages().await;
    let _ = fetch_report_pages().await;
    let administers = [
        Section::Policies,
        Section::Enrolment,
        Section::Notifications,
        Section::Users,
        Section::ApiTokens,
        Section::Audit,
    ]
    .into_iter()
    .any(|section| section.allowed(role));
    if administers {
        let _ = fetch_administration_pages().await;
    }
}
