//! One practice: its roll-up, sites, appliances (paged and filtered by the cloud), open alerts,
//! clinic hours and maintenance windows.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use stayopen_shared::alerts::{
    AlertView, ClinicHours, CreateMaintenanceWindow, MaintenanceWindowView, PracticeSchedule,
    PracticeScheduleView,
};
use stayopen_shared::api::{
    ApplianceState, ApplianceView, Page, PracticeSummary, SetTags, SiteIsp, SiteView, UpdateSite,
};
use stayopen_shared::ids::{ApplianceId, PracticeId};
use stayopen_shared::telemetry::UplinkTelemetry;

use crate::api;
use crate::components::{
    DisplayZone, FeedStatus, Notice, PageHeading, Pager, act, loading, notice_view, practice_badge,
    show_times_in_practice_zone, state_badge, time_ago, time_exact, use_session,
};
use crate::live::{Feed, feed};
use crate::logic::{
    Interest, PolicyTarget, Route, format_spans, is_on_backup, parse_spans, plural, query_string,
    uplink_metrics, uplinks_by_priority,
};
use crate::pages::alerts::AlertList;

#[component]
pub fn PracticePage(id: PracticeId) -> impl IntoView {
    let session = use_session();
    let caps = session.capabilities();
    let summary = feed(Interest::Practice(id), 1_000.0, move || {
        api::get::<PracticeSummary>(session, &format!("/api/v1/practices/{id}"))
    });
    let name = Signal::derive(move || {
        summary
            .data
            .with(|s| s.as_ref().map(|s| s.name.clone()))
            .unwrap_or_else(|| "Practice".to_owned())
    });
    let alerts = feed(Interest::Practice(id), 1_000.0, move || {
        api::get::<Page<AlertView>>(
            session,
            &format!("/api/v1/alerts?unresolved=true&limit=100&practice_id={id}"),
        )
    });
    // Times on a practice's pages read in the practice's own zone: "the outage at 08:15" means
    // 08:15 at the clinic, wherever the technician sits.
    show_times_in_practice_zone(id);
    let zone = expect_context::<DisplayZone>();
    // A practice another MSP owns (or one a practice-scoped user is not assigned) is the cloud's
    // 404: show only that, nothing that would hint at what is behind it.
    let missing = move || {
        summary
            .error
            .with(|e| e.as_ref().is_some_and(|e| e.is_not_found()))
    };

    view! {
        <section id="practice" class="page" data-practice-id=id.to_string()>
            <p class="breadcrumbs">
                <a href=Route::Fleet.href()>"Fleet"</a>
                " / "
            </p>
            <PageHeading title=name feed=summary>
                {caps
                    .configure
                    .then(|| {
                        view! {
                            <a class="button button-secondary button-small" href=Route::Policies(PolicyTarget::Practice(id)).href()>
                                "Policy"
                            </a>
                            <a class="button button-secondary button-small" href=Route::Enrolment(Some(id)).href()>
                                "Enrol an appliance"
                            </a>
                        }
                    })}
            </PageHeading>
            <FeedStatus feed=summary what="This practice" />
            {move || zone.0.get().map(|tz| view! {
                <p class="muted small" id="practice-zone">{format!("Times on this page are in the practice's time zone, {tz}.")}</p>
            })}
            <Show when=move || !missing()>
                <PracticeSummaryView summary=summary.data />
                <PracticeTags practice=id summary=summary.data />
                <Appliances practice=id />
                <section class="card section" aria-labelledby="practice-alerts-heading">
                    <h2 id="practice-alerts-heading">"Open alerts"</h2>
                    <FeedStatus feed=alerts what="the alerts" />
                    <AlertList feed=alerts show_practice=false />
                </section>
                <div class="columns">
                    <Schedule practice=id />
                    <Maintenance practice=id />
                </div>
                <Sites practice=id />
            </Show>
        </section>
    }
}

#[component]
fn PracticeSummaryView(summary: RwSignal<Option<PracticeSummary>>) -> impl IntoView {
    move || {
        summary.get().map(|s| {
            view! {
                <div class="practice-summary">
                    {practice_badge(s.status)}
                    <span>{plural(s.appliances, "appliance", "appliances")}</span>
                    <span class="ok-text">{format!("{} online", s.online)}</span>
                    <span class:warn-text={s.on_backup > 0}>{format!("{} on backup", s.on_backup)}</span>
                    <span class:warn-text={s.degraded > 0}>{format!("{} degraded", s.degraded)}</span>
                    <span class:bad-text={s.offline > 0}>{format!("{} offline", s.offline)}</span>
                    <span>{plural(s.sites, "site", "sites")}</span>
                    <span class:bad-text={s.open_alerts > 0}>
                        {plural(s.open_alerts, "open alert", "open alerts")}
                    </span>
                </div>
            }
        })
    }
}

/// The practice's tags (to find and act on practices together), edited in place by MSP staff.
#[component]
fn PracticeTags(practice: PracticeId, summary: RwSignal<Option<PracticeSummary>>) -> impl IntoView {
    let session = use_session();
    let can_edit = session.capabilities().configure;
    let editing = RwSignal::new(false);
    let text = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let tags = move || summary.with(|s| s.as_ref().map(|s| s.tags.clone()).unwrap_or_default());
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = SetTags {
            tags: text
                .get_untracked()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        act(
            busy,
            notice,
            "",
            async move {
                api::put::<_, PracticeSummary>(
                    session,
                    &format!("/api/v1/practices/{practice}/tags"),
                    &body,
                )
                .await
            },
            move |updated| {
                summary.set(Some(updated));
                editing.set(false);
            },
        );
    };
    view! {
        <div class="practice-tags" id="practice-tags">
            <span class="muted small">"Tags: "</span>
            {move || {
                let tags = tags();
                if tags.is_empty() {
                    view! { <span class="muted small">"none"</span> }.into_any()
                } else {
                    tags.into_iter().map(|t| view! { <span class="chip tag">{t}</span> }).collect_view().into_any()
                }
            }}
            {can_edit.then(|| view! {
                <button type="button" class="button button-link button-small" class:hidden=move || editing.get()
                    on:click=move |_| { text.set(tags().join(", ")); editing.set(true); }>
                    "Edit tags"
                </button>
                <Show when=move || editing.get()>
                    <form class="inline-form" on:submit=save>
                        <label for="practice-tags-input" class="visually-hidden">"Tags, separated by commas"</label>
                        <input id="practice-tags-input" type="text" placeholder="dental, pilot" bind:value=text />
                        <button type="submit" class="button button-secondary button-small" disabled=move || busy.get()>"Save tags"</button>
                    </form>
                </Show>
            })}
            {notice_view(notice)}
        </div>
    }
}

#[component]
fn Appliances(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let query = RwSignal::new(String::new());
    // The state model's words, as on the Appliances page; empty is every state.
    let state = RwSignal::new(String::new());
    let pager = Pager::new();
    let appliances = feed(Interest::Practice(practice), 1_000.0, move || {
        let path = format!(
            "/api/v1/appliances{}",
            query_string(&[
                ("practice_id", Some(practice.to_string())),
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked()),
                ("q", Some(query.get_untracked())),
                ("state", Some(state.get_untracked())),
            ])
        );
        async move { api::get::<Page<ApplianceView>>(session, &path).await }
    });
    let items = Memo::new(move |_| {
        appliances
            .data
            .with(|p| p.as_ref().map(|p| p.items.clone()).unwrap_or_default())
    });
    let ids = Memo::new(move |_| items.with(|i| i.iter().map(|a| a.id).collect::<Vec<_>>()));
    let next = move || {
        appliances
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let typed = StoredValue::new(0u64);
    let on_search = move |text: String| {
        typed.update_value(|n| *n += 1);
        let mine = typed.get_value();
        leptos::task::spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(300).await;
            if typed.get_value() == mine {
                query.set(text);
                pager.reset();
                appliances.reload();
            }
        });
    };
    let on_filter = move |ev: leptos::ev::Event| {
        state.set(event_target_value(&ev));
        pager.reset();
        appliances.reload();
    };

    view! {
        <section class="card section" aria-labelledby="appliances-heading">
            <div class="section-heading">
                <h2 id="appliances-heading">"Appliances"</h2>
                <div class="field field-inline">
                    <label for="appliance-filter">"Show"</label>
                    <select id="appliance-filter" on:change=on_filter>
                        <option value="">"All"</option>
                        {[ApplianceState::Primary, ApplianceState::OnBackup, ApplianceState::Degraded, ApplianceState::Offline]
                            .into_iter()
                            .map(|s| view! { <option value=s.as_str()>{s.label()}</option> })
                            .collect_view()}
                    </select>
                </div>
                <div class="field field-inline search">
                    <label for="serial-search">"Serial"</label>
                    <input
                        id="serial-search"
                        type="search"
                        autocomplete="off"
                        on:input=move |ev| on_search(event_target_value(&ev))
                    />
                </div>
            </div>
            <FeedStatus feed=appliances what="the appliances" />
            {loading(appliances)}
            <ApplianceTable items ids />
            {move || {
                (appliances.loaded() && ids.with(Vec::is_empty))
                    .then(|| view! { <p class="empty">"No appliance matches."</p> })
            }}
            {pager.view(next, appliances)}
        </section>
    }
}

/// Appliances as table rows that update in place.
#[component]
pub fn ApplianceTable(
    items: Memo<Vec<ApplianceView>>,
    ids: Memo<Vec<ApplianceId>>,
) -> impl IntoView {
    view! {
        <div class="table-wrap" class:hidden=move || ids.with(Vec::is_empty)>
            <table class="data-table appliances">
                <thead>
                    <tr>
                        <th scope="col">"Serial"</th>
                        <th scope="col">"Site"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Active uplink"</th>
                        <th scope="col">"Uplinks"</th>
                        <th scope="col">"Last seen"</th>
                    </tr>
                </thead>
                <tbody>
                    <For
                        each=move || ids.get()
                        key=|id| *id
                        children=move |id: ApplianceId| view! { <ApplianceRow items id /> }
                    />
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn ApplianceRow(items: Memo<Vec<ApplianceView>>, id: ApplianceId) -> impl IntoView {
    let appliance = Memo::new(move |_| items.with(|i| i.iter().find(|a| a.id == id).cloned()));
    let field = move |f: fn(&ApplianceView) -> String| {
        move || appliance.with(|a| a.as_ref().map(f).unwrap_or_default())
    };
    let state = move || appliance.with(|a| a.as_ref().map(|a| a.state).unwrap_or_default());
    let online = move || appliance.with(|a| a.as_ref().is_some_and(|a| a.online));
    let on_backup = move || appliance.with(|a| a.as_ref().is_some_and(is_on_backup));
    let no_uplink =
        move || appliance.with(|a| a.as_ref().is_some_and(|a| a.active_uplink.is_none()));
    view! {
        <tr
            class="appliance"
            class:is-offline=move || !online()
            class:is-on-backup=on_backup
            data-appliance-id=id.to_string()
            data-state=move || state().as_str()
        >
            <th scope="row" class="serial" data-label="Serial">
                <a href=Route::Appliance(id).href() class="row-link">{field(|a| a.serial.clone())}</a>
            </th>
            <td class="site" data-label="Site">{field(|a| a.site_name.clone())}</td>
            <td data-label="Status">{move || state_badge(state())}</td>
            <td
                class="active-uplink"
                class:backup=on_backup
                class:no-uplink=no_uplink
                data-label="Active uplink"
                data-backup=move || if on_backup() { "true" } else { "false" }
            >
                {field(|a| a.active_uplink.clone().unwrap_or_else(|| "none".to_owned()))}
            </td>
            <td data-label="Uplinks">
                <ul class="uplinks">
                    {move || {
                        appliance
                            .with(|a| a.as_ref().map(|a| uplinks_by_priority(&a.uplinks)))
                            .unwrap_or_default()
                            .into_iter()
                            .map(uplink_chip)
                            .collect_view()
                    }}
                </ul>
            </td>
            <td class="last-seen" data-label="Last seen">
                {move || time_ago(appliance.with(|a| a.as_ref().and_then(|a| a.last_seen)))}
            </td>
        </tr>
    }
}

pub fn uplink_chip(uplink: UplinkTelemetry) -> impl IntoView {
    let health = uplink.health.as_str();
    let metrics = uplink_metrics(&uplink);
    let title = format!(
        "{}: {health}, priority {}{}, {metrics}",
        uplink.name,
        uplink.priority,
        if uplink.metered { ", metered" } else { "" },
    );
    let data_uplink = uplink.name.clone();
    view! {
        <li class=format!("uplink-chip health-{health}") data-uplink=data_uplink title=title>
            <span class="chip-dot" aria-hidden="true"></span>
            <span class="chip-name">{uplink.name}</span>
            " "
            <span class="chip-health">{health}</span>
            " "
            <span class="chip-metrics">{metrics}</span>
        </li>
    }
}

/// The practice's sites with what a technician needs to call about them: the address, who is on
/// site, and each internet line's provider, circuit id and support number (links dial on a phone).
#[component]
fn Sites(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let can_edit = session.capabilities().configure;
    let sites = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<SiteView>>(
            session,
            &format!("/api/v1/practices/{practice}/sites?limit=500"),
        )
    });
    view! {
        <section class="card section" aria-labelledby="sites-heading">
            <h2 id="sites-heading">"Sites"</h2>
            <FeedStatus feed=sites what="the sites" />
            {move || {
                sites
                    .data
                    .get()
                    .map(|page| {
                        page.items
                            .into_iter()
                            .map(|site| view! { <SiteCard site can_edit reload=move || sites.reload() /> })
                            .collect_view()
                    })
            }}
        </section>
    }
}

#[component]
fn SiteCard(
    site: SiteView,
    can_edit: bool,
    reload: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let session = use_session();
    let editing = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let id = site.id;
    let address = RwSignal::new(site.address.clone());
    let contact_name = RwSignal::new(site.contact_name.clone());
    let contact_phone = RwSignal::new(site.contact_phone.clone());
    let contact_email = RwSignal::new(site.contact_email.clone());
    // Four lines at most; blank rows are left out when saving.
    let lines: [[RwSignal<String>; 4]; 4] = std::array::from_fn(|i| {
        let line = site.isps.get(i).cloned().unwrap_or_default();
        [
            RwSignal::new(line.uplink),
            RwSignal::new(line.isp),
            RwSignal::new(line.circuit_id),
            RwSignal::new(line.support_phone),
        ]
    });
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let isps = lines
            .iter()
            .map(|[uplink, isp, circuit, phone]| SiteIsp {
                uplink: uplink.get_untracked().trim().to_owned(),
                isp: isp.get_untracked().trim().to_owned(),
                circuit_id: circuit.get_untracked().trim().to_owned(),
                support_phone: phone.get_untracked().trim().to_owned(),
            })
            .filter(|l| {
                !(l.uplink.is_empty()
                    && l.isp.is_empty()
                    && l.circuit_id.is_empty()
                    && l.support_phone.is_empty())
            })
            .collect();
        let body = UpdateSite {
            address: Some(address.get_untracked()),
            contact_name: Some(contact_name.get_untracked()),
            contact_phone: Some(contact_phone.get_untracked()),
            contact_email: Some(contact_email.get_untracked()),
            isps: Some(isps),
            ..UpdateSite::default()
        };
        act(
            busy,
            notice,
            "Saved.",
            async move {
                api::patch::<_, SiteView>(session, &format!("/api/v1/sites/{id}"), &body).await
            },
            move |_| {
                editing.set(false);
                reload();
            },
        );
    };
    let tel = |number: &str| {
        format!(
            "tel:{}",
            number
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect::<String>()
        )
    };
    let field = |id: String, label: &'static str, value: RwSignal<String>, kind: &'static str| {
        view! {
            <div class="field">
                <label for=id.clone()>{label}</label>
                <input id=id type=kind bind:value=value />
            </div>
        }
    };
    let key = id.to_string();
    view! {
        <article class="site-card" data-site-id=id.to_string()>
            <h3>{site.name.clone()}</h3>
            <dl class="facts">
                <div>
                    <dt>"Address"</dt>
                    <dd class="site-address">{if site.address.is_empty() { "not given".to_owned() } else { site.address.clone() }}</dd>
                </div>
                <div>
                    <dt>"On-site contact"</dt>
                    <dd class="site-contact">
                        {if site.contact_name.is_empty() { "not given".to_owned() } else { site.contact_name.clone() }}
                        {(!site.contact_phone.is_empty()).then(|| view! { " · " <a href=tel(&site.contact_phone)>{site.contact_phone.clone()}</a> })}
                        {(!site.contact_email.is_empty()).then(|| view! { " · " <a href=format!("mailto:{}", site.contact_email)>{site.contact_email.clone()}</a> })}
                    </dd>
                </div>
            </dl>
            {(!site.isps.is_empty()).then(|| view! {
                <table class="data-table compact site-isps">
                    <thead>
                        <tr>
                            <th scope="col">"Uplink"</th>
                            <th scope="col">"ISP"</th>
                            <th scope="col">"Circuit id"</th>
                            <th scope="col">"Support line"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {site.isps.iter().map(|l| view! {
                            <tr data-uplink=l.uplink.clone()>
                                <th scope="row" data-label="Uplink">{l.uplink.clone()}</th>
                                <td data-label="ISP">{l.isp.clone()}</td>
                                <td class="mono" data-label="Circuit id">{l.circuit_id.clone()}</td>
                                <td data-label="Support line">
                                    {(!l.support_phone.is_empty()).then(|| view! { <a href=tel(&l.support_phone)>{l.support_phone.clone()}</a> })}
                                </td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
            {(can_edit && site.isps.is_empty()).then(|| view! {
                <p class="muted small">"No internet lines recorded: add each ISP's circuit id and support number, to quote when calling them."</p>
            })}
            {can_edit.then(|| view! {
                <button type="button" class="button button-secondary button-small site-edit" class:hidden=move || editing.get() on:click=move |_| editing.set(true)>
                    "Edit site details"
                </button>
                <Show when=move || editing.get()>
                    <form class="form form-grid site-form" on:submit=save>
                        <div class="field field-wide">
                            <label for=format!("site-address-{key}")>"Address"</label>
                            <input id=format!("site-address-{key}") type="text" bind:value=address />
                        </div>
                        {field(format!("site-contact-{key}"), "On-site contact", contact_name, "text")}
                        {field(format!("site-phone-{key}"), "Contact phone", contact_phone, "tel")}
                        {field(format!("site-email-{key}"), "Contact e-mail", contact_email, "email")}
                        {lines.iter().enumerate().map(|(i, [uplink, isp, circuit, phone])| {
                            let n = i + 1;
                            view! {
                                <fieldset class="field-wide isp-line">
                                    <legend>{format!("Internet line {n}")}</legend>
                                    {field(format!("site-{key}-uplink-{n}"), "Uplink (e.g. fiber)", *uplink, "text")}
                                    {field(format!("site-{key}-isp-{n}"), "ISP", *isp, "text")}
                                    {field(format!("site-{key}-circuit-{n}"), "Circuit id", *circuit, "text")}
                                    {field(format!("site-{key}-support-{n}"), "Support phone", *phone, "tel")}
                                </fieldset>
                            }
                        }).collect_view()}
                        <div class="form-actions">
                            <button type="submit" class="button button-primary" disabled=move || busy.get()>"Save"</button>
                            <button type="button" class="button button-link" on:click=move |_| editing.set(false)>"Cancel"</button>
                        </div>
                    </form>
                </Show>
            })}
            {notice_view(notice)}
        </article>
    }
}

const DAYS: [(&str, &str); 7] = [
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
    ("sun", "Sunday"),
];

fn day_spans(hours: &ClinicHours, day: usize) -> String {
    format_spans(hours.day(day as u8))
}

#[component]
fn Schedule(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let can_edit = session.capabilities().configure;
    let schedule = feed(Interest::Nothing, 0.0, move || {
        api::get::<PracticeScheduleView>(session, &format!("/api/v1/practices/{practice}/schedule"))
    });
    let editing = RwSignal::new(false);
    let time_zone = RwSignal::new(String::new());
    let always_open = RwSignal::new(true);
    let days: [RwSignal<String>; 7] = std::array::from_fn(|_| RwSignal::new(String::new()));
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);

    let start_edit = move |_| {
        if let Some(view) = schedule.data.get_untracked() {
            time_zone.set(view.time_zone.clone());
            always_open.set(view.clinic_hours.is_none());
            let hours = view.clinic_hours.unwrap_or_default();
            for (i, day) in days.iter().enumerate() {
                day.set(day_spans(&hours, i));
            }
        }
        notice.set(None);
        editing.set(true);
    };
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let clinic_hours = if always_open.get_untracked() {
            None
        } else {
            let mut parsed = Vec::new();
            for (i, day) in days.iter().enumerate() {
                match parse_spans(&day.get_untracked()) {
                    Ok(spans) => parsed.push(spans),
                    Err(message) => {
                        notice.set(Some(Notice::Failed(format!("{}: {message}", DAYS[i].1))));
                        return;
                    }
                }
            }
            let mut it = parsed.into_iter();
            let mut next = move || it.next().unwrap_or_default();
            Some(ClinicHours {
                mon: next(),
                tue: next(),
                wed: next(),
                thu: next(),
                fri: next(),
                sat: next(),
                sun: next(),
            })
        };
        let body = PracticeSchedule {
            time_zone: time_zone.get_untracked().trim().to_owned(),
            clinic_hours,
        };
        act(
            busy,
            notice,
            "Clinic hours saved.",
            async move {
                api::put::<_, PracticeScheduleView>(
                    session,
                    &format!("/api/v1/practices/{practice}/schedule"),
                    &body,
                )
                .await
            },
            move |saved| {
                schedule.data.set(Some(saved));
                editing.set(false);
            },
        );
    };

    view! {
        <section class="card section" aria-labelledby="hours-heading">
            <div class="section-heading">
                <h2 id="hours-heading">"Clinic hours"</h2>
                {can_edit
                    .then(|| {
                        view! {
                            <button
                                type="button"
                                class="button button-secondary button-small"
                                class:hidden=move || editing.get()
                                on:click=start_edit
                            >
                                "Edit"
                            </button>
                        }
                    })}
            </div>
            <FeedStatus feed=schedule what="the clinic hours" />
            {notice_view(notice)}
            <Show when=move || !editing.get()>
                {move || {
                    schedule
                        .data
                        .get()
                        .map(|s| {
                            let open_text = if s.open_now {
                                "Open now".to_owned()
                            } else {
                                "Closed now".to_owned()
                            };
                            view! {
                                <p>
                                    <span class=if s.open_now { "badge badge-primary" } else { "badge badge-empty" }>
                                        {open_text}
                                    </span>
                                    " "
                                    <span class="muted">{format!("Time zone {}", s.time_zone)}</span>
                                </p>
                                {match s.clinic_hours {
                                    None => {
                                        view! {
                                            <p class="muted">"No clinic hours set: every hour counts as open."</p>
                                        }
                                            .into_any()
                                    }
                                    Some(hours) => {
                                        view! {
                                            <dl class="hours">
                                                {DAYS
                                                    .iter()
                                                    .enumerate()
                                                    .map(|(i, (_, label))| {
                                                        let spans = day_spans(&hours, i);
                                                        view! {
                                                            <dt>{*label}</dt>
                                                            <dd>{if spans.is_empty() { "closed".to_owned() } else { spans }}</dd>
                                                        }
                                                    })
                                                    .collect_view()}
                                            </dl>
                                        }
                                            .into_any()
                                    }
                                }}
                            }
                        })
                }}
            </Show>
            <Show when=move || editing.get()>
                <form class="form" on:submit=save>
                    <div class="field">
                        <label for="time-zone">"Time zone (IANA, e.g. America/Chicago)"</label>
                        <input id="time-zone" type="text" bind:value=time_zone required />
                    </div>
                    <div class="field field-check">
                        <input id="always-open" type="checkbox" bind:checked=always_open />
                        <label for="always-open">"No clinic hours (always open)"</label>
                    </div>
                    <fieldset class="hours-edit" disabled=move || always_open.get()>
                        <legend>"Open hours per day, e.g. 08:00-12:00, 13:00-17:00; empty: closed"</legend>
                        {DAYS
                            .iter()
                            .enumerate()
                            .map(|(i, (key, label))| {
                                let input_id = format!("hours-{key}");
                                view! {
                                    <div class="field field-inline">
                                        <label for=input_id.clone()>{*label}</label>
                                        <input id=input_id type="text" bind:value=days[i] />
                                    </div>
                                }
                            })
                            .collect_view()}
                    </fieldset>
                    <div class="form-actions">
                        <button type="submit" class="button button-primary" disabled=move || busy.get()>
                            "Save clinic hours"
                        </button>
                        <button type="button" class="button button-secondary" on:click=move |_| editing.set(false)>
                            "Cancel"
                        </button>
                    </div>
                </form>
            </Show>
        </section>
    }
}

/// The ISO instant of a `datetime-local` value, read in the browser's time zone.
fn local_input_to_utc(value: &str) -> Option<DateTime<Utc>> {
    if value.is_empty() {
        return None;
    }
    let date = web_sys::js_sys::Date::new(&wasm_bindgen::JsValue::from_str(value));
    let ms = date.get_time();
    if ms.is_nan() {
        return None;
    }
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
}

/// Planned maintenance: on the practice page every window of the practice, planned for all of its
/// appliances or one of them; on an appliance's page (`appliance` given) the windows that cover
/// that appliance, and new ones are planned for it alone.
#[component]
pub fn Maintenance(
    practice: PracticeId,
    #[prop(optional)] appliance: Option<ApplianceId>,
) -> impl IntoView {
    let session = use_session();
    let can_edit = session.capabilities().operate;
    let windows: Feed<Page<MaintenanceWindowView>> = feed(Interest::Nothing, 0.0, move || {
        let scope = match appliance {
            Some(a) => format!("appliance_id={a}"),
            None => format!("practice_id={practice}"),
        };
        api::get::<Page<MaintenanceWindowView>>(
            session,
            &format!("/api/v1/maintenance-windows?{scope}&upcoming=true&limit=100"),
        )
    });
    // On the practice page the window may be for one appliance: offer the practice's appliances.
    let candidates: Feed<Page<ApplianceView>> = feed(Interest::Nothing, 0.0, move || async move {
        if appliance.is_some() || !can_edit {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        api::get::<Page<ApplianceView>>(
            session,
            &format!("/api/v1/appliances?practice_id={practice}&limit=500"),
        )
        .await
    });
    let applies_to = RwSignal::new(String::new());
    let starts = RwSignal::new(String::new());
    let ends = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (Some(starts_at), Some(ends_at)) = (
            local_input_to_utc(&starts.get_untracked()),
            local_input_to_utc(&ends.get_untracked()),
        ) else {
            notice.set(Some(Notice::Failed(
                "Enter when the work starts and ends.".into(),
            )));
            return;
        };
        let body = CreateMaintenanceWindow {
            practice_id: practice,
            appliance_id: appliance.or_else(|| {
                applies_to
                    .get_untracked()
                    .parse::<uuid::Uuid>()
                    .ok()
                    .map(ApplianceId)
            }),
            starts_at,
            ends_at,
            reason: reason.get_untracked(),
        };
        act(
            busy,
            notice,
            "Maintenance window planned.",
            async move {
                api::post::<_, MaintenanceWindowView>(session, "/api/v1/maintenance-windows", &body)
                    .await
            },
            move |_| {
                reason.set(String::new());
                windows.reload();
            },
        );
    };
    let remove = move |id: uuid::Uuid| {
        act(
            busy,
            notice,
            "Maintenance window removed.",
            async move { api::delete(session, &format!("/api/v1/maintenance-windows/{id}")).await },
            move |_| windows.reload(),
        );
    };

    view! {
        <section class="card section" aria-labelledby="maintenance-heading">
            <h2 id="maintenance-heading">"Maintenance windows"</h2>
            <p class="muted small">"Alerts raised during planned work are recorded but notify nobody."</p>
            <FeedStatus feed=windows what="the maintenance windows" />
            {notice_view(notice)}
            <ul class="plain-list windows">
                {move || {
                    windows
                        .data
                        .get()
                        .map(|page| {
                            if page.items.is_empty() {
                                return view! { <li class="muted">"None planned."</li> }.into_any();
                            }
                            page.items
                                .into_iter()
                                .map(|w| {
                                    let id = w.id;
                                    view! {
                                        <li class="window" data-window=id.to_string()>
                                            <span>{time_exact(Some(w.starts_at))}" – "{time_exact(Some(w.ends_at))}</span>
                                            " "
                                            {match (w.appliance_id, w.appliance_serial.clone()) {
                                                (Some(a), serial) => view! {
                                                    <a class="chip serial" href=Route::Appliance(a).href()>
                                                        {serial.unwrap_or_else(|| "one appliance".to_owned())}
                                                    </a>
                                                }.into_any(),
                                                (None, _) => view! {
                                                    <span class="chip">"whole practice"</span>
                                                }.into_any(),
                                            }}
                                            " "
                                            <span class="muted">{w.reason.clone()}</span>
                                            {can_edit
                                                .then(|| {
                                                    view! {
                                                        <button
                                                            type="button"
                                                            class="button button-link danger"
                                                            on:click=move |_| remove(id)
                                                        >
                                                            "Remove"
                                                        </button>
                                                    }
                                                })}
                                        </li>
                                    }
                                })
                                .collect_view()
                                .into_any()
                        })
                }}
            </ul>
            {can_edit
                .then(|| {
                    view! {
                        <form class="form form-grid" id="maintenance-form" on:submit=create>
                            {appliance.is_none().then(|| view! {
                                <div class="field field-wide">
                                    <label for="mw-scope">"Applies to"</label>
                                    <select id="mw-scope" on:change=move |ev| applies_to.set(event_target_value(&ev))>
                                        <option value="" selected=true>"Every appliance of the practice"</option>
                                        {move || candidates.data.get().map(|page| page.items.into_iter().map(|a| view! {
                                            <option value=a.id.to_string()>{format!("{} ({})", a.serial, a.site_name)}</option>
                                        }).collect_view())}
                                    </select>
                                </div>
                            })}
                            <div class="field">
                                <label for="mw-start">"Starts (your time)"</label>
                                <input id="mw-start" type="datetime-local" bind:value=starts required />
                            </div>
                            <div class="field">
                                <label for="mw-end">"Ends (your time)"</label>
                                <input id="mw-end" type="datetime-local" bind:value=ends required />
                            </div>
                            <div class="field field-wide">
                                <label for="mw-reason">"Reason"</label>
                                <input id="mw-reason" type="text" bind:value=reason required />
                            </div>
                            <div class="form-actions">
                                <button type="submit" class="button button-primary" disabled=move || busy.get()>
                                    "Plan window"
                                </button>
                            </div>
                        </form>
                    }
                })}
        </section>
    }
}
