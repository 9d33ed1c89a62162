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

use crate::logic::Route;

/// The page a route shows; rebuilt when the route changes.
pub fn page_for(route: Route) -> AnyView {
    match route {
        Route::Fleet => view! { <fleet::FleetPage /> }.into_any(),
        Route::Appliances => view! { <appliances::AppliancesPage /> }.into_any(),
        Route::Practice(id) => view! { <practice::PracticePage id /> }.into_any(),
        Route::Appliance(id) => view! { <appliance::AppliancePage id /> }.into_any(),
        Route::Alerts => view! { <alerts::AlertsPage /> }.into_any(),
        Route::Policies(target) => view! { <policies::PoliciesPage target /> }.into_any(),
        Route::Enrolment(practice) => view! { <enrolment::EnrolmentPage practice /> }.into_any(),
        Route::Users => view! { <users::UsersPage /> }.into_any(),
        Route::ApiTokens => view! { <users::ApiTokensPage /> }.into_any(),
        Route::Notifications => view! { <notifications::NotificationsPage /> }.into_any(),
        Route::Audit => view! { <audit::AuditPage /> }.into_any(),
        Route::Reports => view! { <reports::ReportsPage /> }.into_any(),
        Route::NotFound => view! {
            <section class="card not-found" id="not-found">
                <h1>"Page not found"</h1>
                <p>"There is no page at this address."</p>
                <p>
                    <a href="#/fleet">"Back to the fleet"</a>
                </p>
            </section>
        }
        .into_any(),
    }
}
