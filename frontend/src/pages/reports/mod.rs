//! Reports: a practice's compliance evidence under HIPAA 164.308(a)(7). Availability per month
//! and per day as the cloud computes it from events and telemetry, drills with their sign-off,
//! incidents, the critical applications register, and the signed evidence packages with how to
//! verify them.
//!
//! An MSP user picks any practice; a compliance officer or an auditor chooses among the practices
//! they are given. Controls a role cannot use are not shown (the cloud refuses them anyway).

mod availability;
mod drills;
mod incidents;
mod packages;
mod register;

use leptos::prelude::*;
use stayopen_shared::api::{Page, PracticeSummary};
use stayopen_shared::compliance::DrillRecord;
use stayopen_shared::ids::PracticeId;

use crate::api;
use crate::components::{FeedStatus, PageHeading, PracticePicker, loading, use_session};
use crate::live::{Feed, feed};
use crate::logic::{Interest, plural};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Availability,
    Drills,
    Incidents,
    Register,
    Packages,
}

impl Tab {
    const ALL: [Tab; 5] = [
        Tab::Availability,
        Tab::Drills,
        Tab::Incidents,
        Tab::Register,
        Tab::Packages,
    ];

    fn id(self) -> &'static str {
        match self {
            Tab::Availability => "availability",
            Tab::Drills => "drills",
            Tab::Incidents => "incidents",
            Tab::Register => "register",
            Tab::Packages => "packages",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tab::Availability => "Availability",
            Tab::Drills => "Drills",
            Tab::Incidents => "Incidents",
            Tab::Register => "Critical applications",
            Tab::Packages => "Evidence packages",
        }
    }
}

#[component]
pub fn ReportsPage() -> impl IntoView {
    let session = use_session();
    let msp_wide = session
        .user
        .with_untracked(|u| u.as_ref().is_some_and(|u| u.role.is_msp_wide()));
    let practices = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<PracticeSummary>>(session, "/api/v1/practices?limit=100")
    });
    let chosen: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    // The first practice until the user picks another.
    Effect::new(move |_| {
        let first = practices.data.with(|d| {
            d.as_ref()
                .and_then(|p| p.items.first().map(|p| (p.id, p.name.clone())))
        });
        if chosen.get_untracked().is_none() && first.is_some() {
            chosen.set(first);
        }
    });
    let title = Signal::derive(move || match chosen.get() {
        Some((_, name)) => format!("Reports · {name}"),
        None => "Reports".to_owned(),
    });

    let picker = if msp_wide {
        view! { <PracticePicker id="report-practice" label="Practice" chosen /> }.into_any()
    } else {
        view! {
            <div class="field field-inline">
                <label for="report-practice">"Practice"</label>
                <select id="report-practice" on:change=move |ev| {
                    let value = event_target_value(&ev);
                    let found = practices.data.with_untracked(|d| d.as_ref().and_then(|p| {
                        p.items.iter().find(|p| p.id.to_string() == value).map(|p| (p.id, p.name.clone()))
                    }));
                    if found.is_some() {
                        chosen.set(found);
                    }
                }>
                    {move || practices.data.get().map(|p| p.items.into_iter().map(|p| {
                        let selected = chosen.with_untracked(|c| c.as_ref().is_some_and(|(id, _)| *id == p.id));
                        view! { <option value=p.id.to_string() selected=selected>{p.name}</option> }
                    }).collect_view())}
                </select>
            </div>
        }
        .into_any()
    };

    view! {
        <section id="reports" class="page">
            <PageHeading title feed=practices>
                {picker}
            </PageHeading>
            <FeedStatus feed=practices what="your practices" />
            {loading(practices)}
            {move || {
                let empty = practices.data.with(|d| d.as_ref().is_some_and(|p| p.items.is_empty()));
                empty.then(|| view! { <p class="muted" id="reports-no-practice">"No practice to report on yet."</p> })
            }}
            {move || chosen.get().map(|(practice, name)| view! { <PracticeReports practice name /> })}
        </section>
    }
}

/// Everything about one practice, by tab; rebuilt when another practice is chosen.
#[component]
fn PracticeReports(practice: PracticeId, name: String) -> impl IntoView {
    let session = use_session();
    let tab = RwSignal::new(Tab::Availability);
    let awaiting: Feed<Page<DrillRecord>> =
        feed(Interest::Practice(practice), 10_000.0, move || {
            api::get::<Page<DrillRecord>>(
                session,
                &format!("/api/v1/drills?practice_id={practice}&awaiting_sign_off=true&limit=100"),
            )
        });
    let count = move || {
        awaiting
            .data
            .with(|d| d.as_ref().map(|p| (p.items.len(), p.next_cursor.is_some())))
    };
    let can_sign = session.capabilities().sign_off_drills;

    view! {
        <div class="practice-reports" data-practice-id=practice.to_string()>
            {move || count().filter(|(n, _)| *n > 0).map(|(n, more)| {
                let one = n == 1 && !more;
                let what = format!(
                    "{}{} {} of {} {} sign-off.",
                    n,
                    if more { "+" } else { "" },
                    if one { "drill" } else { "drills" },
                    name,
                    if one { "awaits" } else { "await" },
                );
                view! {
                    <p class="alert alert-warning" id="awaiting-sign-off" data-count=n.to_string()>
                        <strong>{what}</strong>
                        {if can_sign {
                            " Review each one under Drills and sign it off with a comment."
                        } else {
                            " A compliance officer of the practice reviews and signs them off."
                        }}
                        " "
                        <button type="button" class="button button-link" on:click=move |_| tab.set(Tab::Drills)>
                            "Show them"
                        </button>
                    </p>
                }
            })}
            <nav class="tabs report-tabs" aria-label="Report sections">
                {Tab::ALL.into_iter().map(|t| {
                    let badge = move || (t == Tab::Drills).then(|| count().filter(|(n, _)| *n > 0).map(|(n, _)| view! {
                        <span class="chip-count" id="awaiting-sign-off-count" title=plural(n as u32, "drill awaiting sign-off", "drills awaiting sign-off")>
                            {format!("{n} to sign off")}
                        </span>
                    }));
                    view! {
                        <button
                            type="button"
                            class="tab"
                            id=format!("tab-{}", t.id())
                            class:active=move || tab.get() == t
                            aria-pressed=move || (tab.get() == t).to_string()
                            on:click=move |_| tab.set(t)
                        >
                            {t.label()}
                            {badge}
                        </button>
                    }
                }).collect_view()}
            </nav>
            {move || match tab.get() {
                Tab::Availability => view! { <availability::Availability practice /> }.into_any(),
                Tab::Drills => view! { <drills::Drills practice awaiting /> }.into_any(),
                Tab::Incidents => view! { <incidents::Incidents practice /> }.into_any(),
                Tab::Register => view! { <register::Register practice /> }.into_any(),
                Tab::Packages => view! { <packages::Packages practice /> }.into_any(),
            }}
        </div>
    }
}
