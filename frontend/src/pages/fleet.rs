//! The fleet overview: totals over everything the user may see, then practices one page at a time,
//! filtered and searched by the cloud. Nothing here grows with the fleet: an MSP with 10,000
//! appliances loads the same 50 rows as one with 10.
//!
//! Rows are keyed by id and read their data through memos, so a refresh updates text in place
//! instead of rebuilding the table (focus and scroll survive it).

use leptos::prelude::*;
use leptos::task::spawn_local;
use stayopen_shared::api::{FleetTotals, Page, PracticeStatus, PracticeSummary};
use stayopen_shared::ids::PracticeId;

use crate::api::{self, Failure};
use crate::components::{
    ExportButton, FeedStatus, PageHeading, filter_chip, loading, practice_badge, use_session,
};
use crate::live::feed;
use crate::logic::{Interest, Route, plural, query_string};
use crate::session::Session;

/// Practices fetched per "Show more".
const PAGE_SIZE: usize = 50;
/// The API's largest page.
const MAX_LIMIT: usize = 500;
/// The overview changes with every appliance of the fleet: re-fetch at most this often.
const FLEET_MIN_INTERVAL_MS: f64 = 1_500.0;

/// The practices shown: the first `count` matching the filters, and the cursor after them.
#[derive(Debug, Clone, PartialEq)]
struct Practices {
    items: Vec<PracticeSummary>,
    next_cursor: Option<String>,
}

async fn fetch_practices(
    session: Session,
    q: String,
    status: Option<PracticeStatus>,
    count: usize,
) -> Result<Practices, Failure> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    // Refreshing "the first `count`" rather than appending pages keeps every row shown current.
    loop {
        let limit = (count - items.len()).clamp(1, MAX_LIMIT);
        let path = format!(
            "/api/v1/practices{}",
            query_string(&[
                ("limit", Some(limit.to_string())),
                ("cursor", cursor.clone()),
                ("q", Some(q.clone())),
                ("status", status.map(|s| s.as_str().to_owned())),
            ])
        );
        let page: Page<PracticeSummary> = api::get(session, &path).await?;
        items.extend(page.items);
        cursor = page.next_cursor;
        if items.len() >= count || cursor.is_none() {
            return Ok(Practices {
                items,
                next_cursor: cursor,
            });
        }
    }
}

#[component]
pub fn FleetPage() -> impl IntoView {
    let session = use_session();
    let query = RwSignal::new(String::new());
    let status: RwSignal<Option<PracticeStatus>> = RwSignal::new(None);
    let count = RwSignal::new(PAGE_SIZE);

    let totals = feed(Interest::Everything, FLEET_MIN_INTERVAL_MS, move || {
        api::get::<FleetTotals>(session, "/api/v1/fleet/totals")
    });
    let practices = feed(Interest::Everything, FLEET_MIN_INTERVAL_MS, move || {
        fetch_practices(
            session,
            query.get_untracked(),
            status.get_untracked(),
            count.get_untracked(),
        )
    });

    // Search as one types, once typing pauses.
    let typed = StoredValue::new(0u64);
    let on_search = move |text: String| {
        typed.update_value(|n| *n += 1);
        let mine = typed.get_value();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(300).await;
            if typed.get_value() == mine && query.get_untracked() != text {
                query.set(text);
                count.set(PAGE_SIZE);
                practices.reload();
            }
        });
    };
    let choose = move |s: Option<PracticeStatus>| {
        status.set(s);
        count.set(PAGE_SIZE);
        practices.reload();
    };

    let export_path = Signal::derive(move || {
        format!(
            "/api/v1/practices.csv{}",
            query_string(&[
                ("q", Some(query.get())),
                ("status", status.get().map(|s| s.as_str().to_owned())),
            ])
        )
    });
    let items = Memo::new(move |_| {
        practices
            .data
            .with(|p| p.as_ref().map(|p| p.items.clone()).unwrap_or_default())
    });
    let ids = Memo::new(move |_| items.with(|i| i.iter().map(|p| p.id).collect::<Vec<_>>()));
    let has_more = move || {
        practices
            .data
            .with(|p| p.as_ref().is_some_and(|p| p.next_cursor.is_some()))
    };

    let chip = move |value: Option<PracticeStatus>, label: &'static str| {
        let pressed = move || status.get() == value;
        let count = move || {
            totals.data.with(|t| {
                t.as_ref().map(|t| match value {
                    None => t.practices,
                    Some(PracticeStatus::Offline) => t.practices_offline,
                    Some(PracticeStatus::OnBackup) => t.practices_on_backup,
                    Some(PracticeStatus::Degraded) => t.practices_degraded,
                    Some(PracticeStatus::Primary) => t.practices_primary,
                    Some(PracticeStatus::Empty) => t.practices_empty,
                })
            })
        };
        filter_chip(
            value.map_or("all", PracticeStatus::as_str),
            label,
            pressed,
            count,
            move || choose(value),
        )
    };

    view! {
        <section id="fleet" class="page">
            <PageHeading title=Signal::derive(|| "Fleet".to_owned()) feed=totals />
            <FeedStatus feed=totals what="the fleet totals" />
            <crate::pages::warnings::NoChannelsWarning />
            <Totals totals=totals.data />
            <div class="toolbar">
                <div class="field field-inline search">
                    <label for="practice-search">"Search practices"</label>
                    <input
                        id="practice-search"
                        type="search"
                        placeholder="Practice name or tag  ( / )"
                        data-page-search="true"
                        autocomplete="off"
                        on:input=move |ev| on_search(event_target_value(&ev))
                    />
                </div>
                <a class="button button-secondary button-small" href=Route::Appliances.href()>
                    "Find an appliance"
                </a>
                <ExportButton id="export-practices" name="practices" path=export_path />
            </div>
            <div class="filter-chips" role="group" aria-label="Filter practices by status (counts are practices)">
                {chip(None, "All practices")}
                {chip(Some(PracticeStatus::Primary), PracticeStatus::Primary.label())}
                {chip(Some(PracticeStatus::OnBackup), PracticeStatus::OnBackup.label())}
                {chip(Some(PracticeStatus::Degraded), PracticeStatus::Degraded.label())}
                {chip(Some(PracticeStatus::Offline), PracticeStatus::Offline.label())}
                {chip(Some(PracticeStatus::Empty), PracticeStatus::Empty.label())}
            </div>
            <FeedStatus feed=practices what="the practices" />
            {loading(practices)}
            <div class="card table-card" class:hidden=move || !practices.loaded()>
                <table class="data-table practices">
                    <caption class="visually-hidden">"Practices"</caption>
                    <thead>
                        <tr>
                            <th scope="col">"Practice"</th>
                            <th scope="col">"Status"</th>
                            <th scope="col" class="num">"Appliances"</th>
                            <th scope="col" class="num">"Online"</th>
                            <th scope="col" class="num">"On backup"</th>
                            <th scope="col" class="num">"Offline"</th>
                            <th scope="col" class="num">"Sites"</th>
                            <th scope="col" class="num">"Open alerts"</th>
                        </tr>
                    </thead>
                    <tbody>
                        <For
                            each=move || ids.get()
                            key=|id| *id
                            children=move |id: PracticeId| view! { <PracticeRow items id /> }
                        />
                    </tbody>
                </table>
                {move || {
                    (practices.loaded() && ids.with(Vec::is_empty))
                        .then(|| {
                            let filtered = status.get().is_some() || !query.get().is_empty();
                            view! {
                                <p class="empty">
                                    {if filtered {
                                        "No practice matches these filters."
                                    } else {
                                        "No practices yet. Appliances appear here once they enrol."
                                    }}
                                </p>
                            }
                        })
                }}
            </div>
            <div class="list-footer">
                <span class="muted">
                    {move || {
                        let shown = ids.with(Vec::len) as u32;
                        format!("Showing {}", plural(shown, "practice", "practices"))
                    }}
                </span>
                <button
                    id="load-more"
                    type="button"
                    class="button button-secondary"
                    class:hidden=move || !has_more()
                    on:click=move |_| {
                        count.update(|c| *c += PAGE_SIZE);
                        practices.reload();
                    }
                >
                    "Show more"
                </button>
            </div>
        </section>
    }
}

#[component]
fn Totals(totals: RwSignal<Option<FleetTotals>>) -> impl IntoView {
    let stat = move |key: &'static str,
                     label: &'static str,
                     tone: &'static str,
                     value: fn(&FleetTotals) -> u32| {
        let number = move || totals.with(|t| t.as_ref().map(value));
        let tone_class = move || {
            let tone = if number().unwrap_or(0) == 0 {
                "neutral"
            } else {
                tone
            };
            format!("stat stat-{key} tone-{tone}")
        };
        view! {
            <div class=tone_class data-stat=key>
                <dt>{label}</dt>
                <dd>{move || number().map_or("–".to_owned(), |n| n.to_string())}</dd>
            </div>
        }
    };
    view! {
        <section aria-label="Fleet totals">
            <dl id="fleet-totals" class="summary">
                {stat("practices", "Practices", "neutral", |t| t.practices)}
                {stat("appliances", "Appliances", "neutral", |t| t.appliances)}
                {stat("online", "Appliances online", "ok", |t| t.online)}
                {stat("on-backup", "Appliances on backup uplink", "warn", |t| t.on_backup)}
                {stat("degraded", "Appliances degraded", "warn", |t| t.degraded)}
                {stat("offline", "Appliances offline", "bad", |t| t.offline)}
                {stat("open-alerts", "Open alerts", "warn", |t| t.open_alerts)}
                {stat("critical-alerts", "Critical alerts now", "bad", |t| t.critical_alerts)}
            </dl>
        </section>
    }
}

#[component]
fn PracticeRow(items: Memo<Vec<PracticeSummary>>, id: PracticeId) -> impl IntoView {
    let practice = Memo::new(move |_| items.with(|i| i.iter().find(|p| p.id == id).cloned()));
    let number = move |f: fn(&PracticeSummary) -> u32| {
        move || practice.with(|p| p.as_ref().map(f).unwrap_or(0))
    };
    let name = move || practice.with(|p| p.as_ref().map(|p| p.name.clone()).unwrap_or_default());
    let status_value =
        move || practice.with(|p| p.as_ref().map_or(PracticeStatus::Empty, |p| p.status));
    let status = move || status_value().as_str();
    let href = Route::Practice(id).href();
    view! {
        <tr class="practice-row" data-practice-id=id.to_string() data-status=status>
            <th scope="row" data-label="Practice">
                <a href=href class="row-link">{name}</a>
            </th>
            <td data-label="Status">{move || practice_badge(status_value())}</td>
            <td class="num" data-label="Appliances">{number(|p| p.appliances)}</td>
            <td class="num" data-label="Online">{number(|p| p.online)}</td>
            <td class="num" data-label="On backup" class:warn-text=move || practice.with(|p| p.as_ref().is_some_and(|p| p.on_backup > 0))>
                {number(|p| p.on_backup)}
            </td>
            <td class="num" data-label="Offline" class:bad-text=move || practice.with(|p| p.as_ref().is_some_and(|p| p.offline > 0))>
                {number(|p| p.offline)}
            </td>
            <td class="num" data-label="Sites">{number(|p| p.sites)}</td>
            <td class="num" data-label="Open alerts">
                <span class:alert-count=move || practice.with(|p| p.as_ref().is_some_and(|p| p.open_alerts > 0))>
                    {number(|p| p.open_alerts)}
                </span>
            </td>
        </tr>
    }
}
