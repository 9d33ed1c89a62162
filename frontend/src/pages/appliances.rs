//! Every appliance of the fleet in one list: searched (serial prefix, practice, site, model,
//! agent version, tag), filtered by state and uplink kind, sorted by any column and paged by the
//! cloud, so 10,000 appliances load as 50 rows. `/` puts the cursor in the search box; Enter opens
//! the first match. MSP staff select appliances to tag them, start a drill on each, clear their own
//! policy settings or give them another appliance's, after a confirmation that lists what changes;
//! the cloud checks the role, audits each appliance and says which it skipped.

use leptos::prelude::*;
use leptos::task::spawn_local;
use stayopen_shared::api::{
    ApplianceBulkAction, ApplianceSort, ApplianceState, ApplianceView, BulkApplianceRequest,
    BulkOutcome, FleetTotals, Page, PolicyLayer,
};
use stayopen_shared::ids::ApplianceId;
use stayopen_shared::policy::PolicyOverrides;

use crate::api::{self, Failure};
use crate::components::{
    ExportButton, FeedStatus, Notice, PageHeading, Pager, act, filter_chip, loading, notice_view,
    state_badge, time_ago, use_session,
};
use crate::live::feed;
use crate::logic::{Interest, PolicyTarget, Route, copy_settings_question, plural, query_string};
use crate::session::Session;

/// Rows per page.
const PAGE_SIZE: u32 = 50;

/// The columns, as (sort key, heading).
const COLUMNS: [(ApplianceSort, &str); 8] = [
    (ApplianceSort::Serial, "Serial"),
    (ApplianceSort::Practice, "Practice"),
    (ApplianceSort::Site, "Site"),
    (ApplianceSort::State, "State"),
    (ApplianceSort::ActiveUplink, "Active uplink"),
    (ApplianceSort::Model, "Model"),
    (ApplianceSort::AgentVersion, "Agent version"),
    (ApplianceSort::LastSeen, "Last seen"),
];

/// What the list shows: the search and filters, and the order.
#[derive(Debug, Clone, Default, PartialEq)]
struct Filters {
    q: String,
    state: Option<ApplianceState>,
    uplink_kind: String,
    tag: String,
    sort: ApplianceSort,
    descending: bool,
}

impl Filters {
    /// The query pairs the list, its export and its "open the first match" share.
    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("q", Some(self.q.trim().to_owned())),
            ("state", self.state.map(|s| s.as_str().to_owned())),
            ("uplink_kind", Some(self.uplink_kind.clone())),
            ("tag", Some(self.tag.trim().to_owned())),
            (
                "sort",
                (self.sort != ApplianceSort::Serial).then(|| self.sort.as_str().to_owned()),
            ),
            ("order", self.descending.then(|| "desc".to_owned())),
        ]
    }
}

fn navigate(href: &str) {
    if let Some(window) = web_sys::window() {
        let _ = window.location().set_hash(href);
    }
}

#[component]
pub fn AppliancesPage() -> impl IntoView {
    let session = use_session();
    let caps = session.capabilities();
    let filters = RwSignal::new(Filters::default());
    let pager = Pager::new();
    let selected: RwSignal<Vec<ApplianceId>> = RwSignal::new(Vec::new());

    let totals = feed(Interest::Everything, 1_500.0, move || {
        api::get::<FleetTotals>(session, "/api/v1/fleet/totals")
    });
    let list = feed(Interest::Everything, 1_500.0, move || {
        let mut pairs = vec![
            ("limit", Some(PAGE_SIZE.to_string())),
            ("cursor", pager.cursor.get_untracked()),
        ];
        pairs.extend(filters.with_untracked(Filters::pairs));
        let path = format!("/api/v1/appliances{}", query_string(&pairs));
        async move { api::get::<Page<ApplianceView>>(session, &path).await }
    });
    let refilter = move |change: &dyn Fn(&mut Filters)| {
        filters.update(|f| change(f));
        pager.reset();
        selected.set(Vec::new());
        list.reload();
    };

    // Search as one types, once typing pauses; Enter opens the first match at once.
    let typed = StoredValue::new(0u64);
    let on_search = move |text: String| {
        typed.update_value(|n| *n += 1);
        let mine = typed.get_value();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(300).await;
            if typed.get_value() == mine && filters.with_untracked(|f| f.q != text) {
                refilter(&|f| f.q = text.clone());
            }
        });
    };
    let open_first = move |text: String| {
        let mut wanted = filters.get_untracked();
        wanted.q = text;
        let mut pairs = vec![("limit", Some("1".to_owned()))];
        pairs.extend(wanted.pairs());
        let path = format!("/api/v1/appliances{}", query_string(&pairs));
        spawn_local(async move {
            if let Ok(page) = api::get::<Page<ApplianceView>>(session, &path).await
                && let Some(first) = page.items.first()
            {
                navigate(&Route::Appliance(first.id).href());
            }
        });
    };

    let items = Memo::new(move |_| {
        list.data
            .with(|p| p.as_ref().map(|p| p.items.clone()).unwrap_or_default())
    });
    let ids = Memo::new(move |_| items.with(|i| i.iter().map(|a| a.id).collect::<Vec<_>>()));
    let next = move || {
        list.data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };

    let chip = move |value: Option<ApplianceState>, label: &'static str| {
        let pressed = move || filters.with(|f| f.state == value);
        let count = move || {
            totals.data.with(|t| {
                t.as_ref().map(|t| match value {
                    None => t.appliances,
                    Some(ApplianceState::Primary) => t.on_primary,
                    Some(ApplianceState::OnBackup) => t.on_backup,
                    Some(ApplianceState::Degraded) => t.degraded,
                    Some(ApplianceState::Offline) => t.offline,
                })
            })
        };
        filter_chip(
            value.map_or("all", ApplianceState::as_str),
            label,
            pressed,
            count,
            move || refilter(&|f| f.state = value),
        )
    };

    let heading = move |sort: ApplianceSort, label: &'static str| {
        let active = move || filters.with(|f| f.sort == sort);
        let aria = move || match (active(), filters.with(|f| f.descending)) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        };
        let arrow = move || match aria() {
            "ascending" => " ▲",
            "descending" => " ▼",
            _ => "",
        };
        view! {
            <th scope="col" aria-sort=aria>
                <button
                    type="button"
                    class="sort-button"
                    data-sort=sort.as_str()
                    on:click=move |_| {
                        let again = filters.with_untracked(|f| f.sort == sort);
                        refilter(&|f| {
                            f.descending = again && !f.descending;
                            f.sort = sort;
                        });
                    }
                >
                    {label}
                    <span aria-hidden="true">{arrow}</span>
                </button>
            </th>
        }
    };
    let all_selected = move || {
        ids.with(|ids| !ids.is_empty() && selected.with(|s| ids.iter().all(|id| s.contains(id))))
    };
    let export_path = Signal::derive(move || {
        format!(
            "/api/v1/appliances.csv{}",
            query_string(&filters.with(Filters::pairs))
        )
    });
    let can_bulk = caps.operate || caps.configure;

    view! {
        <section id="appliances" class="page">
            <PageHeading title=Signal::derive(|| "Appliances".to_owned()) feed=list>
                <ExportButton id="export-appliances" name="appliances" path=export_path />
            </PageHeading>
            <FeedStatus feed=list what="the appliances" />
            <div class="toolbar">
                <div class="field field-inline search">
                    <label for="appliance-list-search">"Search appliances"</label>
                    <input
                        id="appliance-list-search"
                        type="search"
                        data-page-search="true"
                        placeholder="Serial, practice, site, model, version or tag  ( / )"
                        autocomplete="off"
                        aria-describedby="appliance-search-hint"
                        on:input=move |ev| on_search(event_target_value(&ev))
                        on:keydown=move |ev| {
                            if ev.key() == "Enter" {
                                ev.prevent_default();
                                open_first(event_target_value(&ev));
                            }
                        }
                    />
                    <span id="appliance-search-hint" class="visually-hidden">
                        "Press Enter to open the first match."
                    </span>
                </div>
                <div class="field field-inline">
                    <label for="filter-uplink-kind">"Uplink"</label>
                    <select
                        id="filter-uplink-kind"
                        on:change=move |ev| {
                            let kind = event_target_value(&ev);
                            refilter(&|f| f.uplink_kind = kind.clone());
                        }
                    >
                        <option value="">"Any"</option>
                        <option value="wired">"Wired (fibre, cable, DSL)"</option>
                        <option value="cellular">"Cellular"</option>
                    </select>
                </div>
                <div class="field field-inline">
                    <label for="filter-tag">"Tag"</label>
                    <input
                        id="filter-tag"
                        type="text"
                        autocomplete="off"
                        on:change=move |ev| {
                            let tag = event_target_value(&ev);
                            refilter(&|f| f.tag = tag.clone());
                        }
                    />
                </div>
            </div>
            <div class="filter-chips" role="group" aria-label="Filter appliances by state (counts are appliances)">
                {chip(None, "All")}
                {chip(Some(ApplianceState::Primary), "Online on primary")}
                {chip(Some(ApplianceState::OnBackup), "Online on backup")}
                {chip(Some(ApplianceState::Degraded), "Degraded")}
                {chip(Some(ApplianceState::Offline), "Offline")}
            </div>
            {can_bulk.then(|| view! { <BulkBar selected list=list.data caps_operate=caps.operate caps_configure=caps.configure reload=move || list.reload() /> })}
            {loading(list)}
            <div class="card table-card" class:hidden=move || !list.loaded()>
                <table class="data-table appliance-list">
                    <caption class="visually-hidden">"Appliances"</caption>
                    <thead>
                        <tr>
                            {can_bulk.then(|| view! {
                                <th scope="col" class="select">
                                    <input
                                        type="checkbox"
                                        id="select-all"
                                        aria-label="Select every appliance on this page"
                                        prop:checked=all_selected
                                        on:change=move |ev| {
                                            if event_target_checked(&ev) {
                                                selected.set(ids.get_untracked());
                                            } else {
                                                selected.set(Vec::new());
                                            }
                                        }
                                    />
                                </th>
                            })}
                            {COLUMNS.into_iter().map(|(sort, label)| heading(sort, label)).collect_view()}
                            <th scope="col">"Tags"</th>
                        </tr>
                    </thead>
                    <tbody>
                        <For
                            each=move || ids.get()
                            key=|id| *id
                            children=move |id: ApplianceId| view! { <Row items id selected can_bulk /> }
                        />
                    </tbody>
                </table>
                {move || {
                    (list.loaded() && ids.with(Vec::is_empty))
                        .then(|| {
                            let filtered = filters.with(|f| *f != Filters::default());
                            view! {
                                <p class="empty">
                                    {if filtered {
                                        "No appliance matches this search and these filters."
                                    } else {
                                        "No appliances yet. They appear here once they enrol."
                                    }}
                                </p>
                            }
                        })
                }}
            </div>
            {pager.view(next, list)}
        </section>
    }
}

#[component]
fn Row(
    items: Memo<Vec<ApplianceView>>,
    id: ApplianceId,
    selected: RwSignal<Vec<ApplianceId>>,
    can_bulk: bool,
) -> impl IntoView {
    let appliance = Memo::new(move |_| items.with(|i| i.iter().find(|a| a.id == id).cloned()));
    let text = move |f: fn(&ApplianceView) -> String| {
        move || appliance.with(|a| a.as_ref().map(f).unwrap_or_default())
    };
    let state = move || appliance.with(|a| a.as_ref().map(|a| a.state).unwrap_or_default());
    let serial = text(|a| a.serial.clone());
    view! {
        <tr class="appliance-row" data-appliance-id=id.to_string() data-state=move || state().as_str()>
            {can_bulk.then(|| view! {
                <td class="select">
                    <input
                        type="checkbox"
                        class="select-appliance"
                        aria-label=move || format!("Select {}", serial())
                        prop:checked=move || selected.with(|s| s.contains(&id))
                        on:change=move |ev| {
                            let on = event_target_checked(&ev);
                            selected.update(|s| {
                                s.retain(|x| *x != id);
                                if on {
                                    s.push(id);
                                }
                            });
                        }
                    />
                </td>
            })}
            <th scope="row" class="serial" data-label="Serial">
                <a href=Route::Appliance(id).href() class="row-link">{text(|a| a.serial.clone())}</a>
            </th>
            <td data-label="Practice">
                {move || appliance.with(|a| a.as_ref().map(|a| view! {
                    <a href=Route::Practice(a.practice_id).href()>{a.practice_name.clone()}</a>
                }))}
            </td>
            <td data-label="Site">{text(|a| a.site_name.clone())}</td>
            <td data-label="State">{move || state_badge(state())}</td>
            <td data-label="Active uplink">
                {text(|a| match (&a.active_uplink, a.active_uplink_kind) {
                    (None, _) => "none".to_owned(),
                    (Some(name), Some(kind)) => format!("{name} ({})", kind.as_str()),
                    (Some(name), None) => name.clone(),
                })}
            </td>
            <td data-label="Model">{text(|a| a.model.clone())}</td>
            <td data-label="Agent version">{text(|a| a.agent_version.clone())}</td>
            <td data-label="Last seen">{move || time_ago(appliance.with(|a| a.as_ref().and_then(|a| a.last_seen)))}</td>
            <td data-label="Tags" class="tags">
                {move || appliance.with(|a| a.as_ref().map(|a| a.tags.iter().map(|t| view! { <span class="chip tag">{t.clone()}</span> }).collect_view()))}
            </td>
        </tr>
    }
}

/// What to do to the selected appliances, shown once some are selected.
#[component]
fn BulkBar(
    selected: RwSignal<Vec<ApplianceId>>,
    list: RwSignal<Option<Page<ApplianceView>>>,
    caps_operate: bool,
    caps_configure: bool,
    reload: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let session = use_session();
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let tag = RwSignal::new(String::new());
    let drill_secs = RwSignal::new("60".to_owned());
    let run = move |action: ApplianceBulkAction, question: String| {
        let ids = selected.get_untracked();
        if ids.is_empty() {
            return;
        }
        let confirmed = web_sys::window()
            .and_then(|w| w.confirm_with_message(&question).ok())
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        let request = BulkApplianceRequest {
            appliance_ids: ids,
            action,
        };
        act(
            busy,
            notice,
            "",
            async move {
                api::post::<_, BulkOutcome>(session, "/api/v1/appliances/bulk", &request).await
            },
            move |outcome: BulkOutcome| {
                notice.set(Some(outcome_notice(&outcome, list)));
                selected.set(Vec::new());
                reload();
            },
        );
    };
    let add_tag = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = tag.get_untracked().trim().to_lowercase();
        if value.is_empty() {
            return;
        }
        let n = selected.with_untracked(Vec::len) as u32;
        run(
            ApplianceBulkAction::AddTag { tag: value.clone() },
            format!(
                "Add the tag \"{value}\" to {}?",
                plural(n, "appliance", "appliances")
            ),
        );
    };
    // Copy an appliance's own settings onto the selection: found by its serial, its layer read,
    // every setting shown in the confirmation.
    let source = RwSignal::new(String::new());
    let copy_settings = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let serial = source.get_untracked().trim().to_owned();
        if serial.is_empty() || busy.get_untracked() {
            return;
        }
        let n = selected.with_untracked(Vec::len) as u32;
        busy.set(true);
        notice.set(None);
        spawn_local(async move {
            let found = own_settings_of(session, &serial).await;
            busy.set(false);
            match found {
                Ok(Some((source, overrides))) => {
                    let question = copy_settings_question(&source, n, &overrides);
                    run(ApplianceBulkAction::ApplyPolicy { overrides }, question);
                }
                Ok(None) => notice.set(Some(Notice::Failed(format!(
                    "No appliance with the serial {serial} in your fleet."
                )))),
                Err(Failure::Unauthorized(_)) => {}
                Err(failure) => notice.set(Some(Notice::Failed(failure.to_string()))),
            }
        });
    };
    let drill = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let secs: u32 = drill_secs.get_untracked().parse().unwrap_or(60);
        let n = selected.with_untracked(Vec::len) as u32;
        run(
            ApplianceBulkAction::StartDrill {
                duration_secs: secs,
            },
            format!(
                "Start a {secs}-second failover drill on {}? Their traffic moves to the backup uplink for the drill.",
                plural(n, "appliance", "appliances")
            ),
        );
    };
    // Every action waits for the one before it and needs a selection.
    let unavailable = move || busy.get() || selected.with(Vec::is_empty);
    view! {
        <div class="bulk-bar" id="appliance-bulk" class:hidden=move || selected.with(Vec::is_empty) && notice.with(Option::is_none)>
            <span class="bulk-count" id="appliance-selection">
                {move || format!("{} selected", plural(selected.with(Vec::len) as u32, "appliance", "appliances"))}
            </span>
            {caps_configure.then(|| view! {
                <form class="inline-form" on:submit=add_tag>
                    <label for="bulk-tag" class="visually-hidden">"Tag to add"</label>
                    <input id="bulk-tag" type="text" placeholder="Tag (e.g. dental)" bind:value=tag />
                    <button type="submit" id="bulk-add-tag" class="button button-secondary button-small" disabled=unavailable>
                        "Add tag"
                    </button>
                </form>
            })}
            {caps_operate.then(|| view! {
                <form class="inline-form" on:submit=drill>
                    <label for="bulk-drill-secs" class="visually-hidden">"Drill length"</label>
                    <select id="bulk-drill-secs" on:change=move |ev| drill_secs.set(event_target_value(&ev))>
                        <option value="60">"1 minute"</option>
                        <option value="300">"5 minutes"</option>
                        <option value="900">"15 minutes"</option>
                    </select>
                    <button type="submit" id="bulk-drill" class="button button-secondary button-small" disabled=unavailable>
                        "Start drill"
                    </button>
                </form>
            })}
            {caps_configure.then(|| view! {
                <button
                    type="button"
                    id="bulk-inherit-policy"
                    class="button button-secondary button-small"
                    title="Clear each one's own policy layer, so its practice's and the MSP's settings apply"
                    disabled=unavailable
                    on:click=move |_| {
                        let n = selected.with_untracked(Vec::len) as u32;
                        run(
                            ApplianceBulkAction::ApplyPolicy { overrides: Default::default() },
                            format!(
                                "Clear the own policy settings of {}? Their practice's and the MSP's settings apply again.",
                                plural(n, "appliance", "appliances")
                            ),
                        );
                    }
                >
                    "Use practice policy"
                </button>
                <form class="inline-form" on:submit=copy_settings>
                    <label for="bulk-copy-from" class="visually-hidden">"Serial of the appliance whose settings to copy"</label>
                    <input id="bulk-copy-from" type="text" placeholder="Copy settings of (serial)" bind:value=source />
                    <button type="submit" id="bulk-copy-settings" class="button button-secondary button-small" disabled=unavailable>
                        "Apply its settings"
                    </button>
                </form>
            })}
            <button type="button" class="button button-link button-small" on:click=move |_| { selected.set(Vec::new()); notice.set(None); }>
                "Clear"
            </button>
            {notice_view(notice)}
        </div>
    }
}

/// The appliance with exactly this serial (any case) in the caller's fleet, with its own policy
/// settings; `None` when there is none.
async fn own_settings_of(
    session: Session,
    serial: &str,
) -> Result<Option<(String, PolicyOverrides)>, Failure> {
    let path = format!(
        "/api/v1/appliances{}",
        query_string(&[
            ("q", Some(serial.to_owned())),
            ("limit", Some("5".to_owned()))
        ])
    );
    let page = api::get::<Page<ApplianceView>>(session, &path).await?;
    let Some(found) = page
        .items
        .into_iter()
        .find(|a| a.serial.eq_ignore_ascii_case(serial))
    else {
        return Ok(None);
    };
    let layer =
        api::get::<PolicyLayer>(session, &PolicyTarget::Appliance(found.id).api_path()).await?;
    Ok(Some((found.serial, layer.overrides)))
}

/// "Done for 3 appliances; skipped SO-000009: no such appliance."
fn outcome_notice(outcome: &BulkOutcome, list: RwSignal<Option<Page<ApplianceView>>>) -> Notice {
    let done = format!(
        "Done for {}.",
        plural(outcome.done.len() as u32, "appliance", "appliances")
    );
    if outcome.skipped.is_empty() {
        return Notice::Done(done);
    }
    let serial = |id: uuid::Uuid| {
        list.with_untracked(|p| {
            p.as_ref()
                .and_then(|p| p.items.iter().find(|a| a.id.0 == id))
                .map_or_else(|| id.to_string(), |a| a.serial.clone())
        })
    };
    let skipped: Vec<String> = outcome
        .skipped
        .iter()
        .map(|s| format!("{}: {}", serial(s.id), s.reason))
        .collect();
    Notice::Failed(format!("{done} Skipped {}", skipped.join("; ")))
}
