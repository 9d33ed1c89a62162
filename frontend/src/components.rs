//! Small pieces every page uses: status banners, badges, timestamps, pagers and the practice picker.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;
use stayopen_shared::api::{ApplianceState, Page, PracticeStatus, PracticeSummary};
use stayopen_shared::ids::PracticeId;

use crate::api::{self, Failure, LocalFuture};
use crate::live::{Feed, now_ms};
use crate::logic::{query_string, relative_seconds, relative_time, timestamp_text};
use crate::session::Session;

/// The browser's clock, ticking once a second, for "12 s ago" texts.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub RwSignal<f64>);

pub fn use_clock() -> Clock {
    use_context::<Clock>().unwrap_or_else(|| Clock(RwSignal::new(now_ms())))
}

pub fn use_session() -> Session {
    expect_context::<Session>()
}

/// The browser's "now" as a UTC instant (reactive: ticks with [`Clock`]).
pub fn now_utc() -> DateTime<Utc> {
    let ms = use_clock().0.get();
    DateTime::<Utc>::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// The time zone times are shown in: the viewer's (the browser's), or on a practice's pages the
/// practice's own (an IANA name). The shell provides it; a practice page sets it while shown.
#[derive(Debug, Clone, Copy)]
pub struct DisplayZone(pub RwSignal<Option<String>>);

/// Shows the times of the page being built in `practice`'s time zone, once its schedule is read,
/// and the viewer's again when the page (or the reactive scope calling this) goes away. A late
/// answer after that sets nothing.
pub fn show_times_in_practice_zone(practice: PracticeId) {
    let zone = expect_context::<DisplayZone>();
    let session = use_session();
    // Disposed with the calling scope: whether the page is still shown when the answer comes.
    let shown = StoredValue::new(());
    spawn_local(async move {
        if let Ok(view) = api::get::<stayopen_shared::alerts::PracticeScheduleView>(
            session,
            &format!("/api/v1/practices/{practice}/schedule"),
        )
        .await
            && shown.try_get_value().is_some()
        {
            zone.0.set(Some(view.time_zone));
        }
    });
    on_cleanup(move || zone.0.set(None));
}

fn display_zone() -> Option<String> {
    use_context::<DisplayZone>().and_then(|z| z.0.get())
}

/// `at` as "2026-03-04 08:05:09 GMT+1": the date and time in `zone` (the viewer's when `None`)
/// with the zone's short name, as the browser's `Intl` knows them (so no time zone database is
/// shipped). Falls back to UTC when the browser does not know the zone.
pub fn zoned_text(at: DateTime<Utc>, zone: Option<&str>) -> String {
    use wasm_bindgen::{JsCast, JsValue};
    use web_sys::js_sys::{Array, Date, Function, Intl, Object, Reflect};
    let attempt = || -> Option<String> {
        let options = Object::new();
        for (key, value) in [
            ("year", "numeric"),
            ("month", "2-digit"),
            ("day", "2-digit"),
            ("hour", "2-digit"),
            ("minute", "2-digit"),
            ("second", "2-digit"),
            ("hourCycle", "h23"),
            ("timeZoneName", "short"),
        ] {
            Reflect::set(&options, &key.into(), &value.into()).ok()?;
        }
        if let Some(zone) = zone {
            Reflect::set(&options, &"timeZone".into(), &zone.into()).ok()?;
        }
        // Constructed through Reflect so an unknown zone is an error here, not a thrown exception.
        let intl = Reflect::get(&web_sys::js_sys::global(), &"Intl".into()).ok()?;
        let constructor: Function = Reflect::get(&intl, &"DateTimeFormat".into())
            .ok()?
            .dyn_into()
            .ok()?;
        let format: Intl::DateTimeFormat =
            Reflect::construct(&constructor, &Array::of2(&"en-GB".into(), &options))
                .ok()?
                .dyn_into()
                .ok()?;
        let date = Date::new(&JsValue::from_f64(at.timestamp_millis() as f64));
        let mut parts = std::collections::HashMap::new();
        for part in format.format_to_parts(&date).iter() {
            let kind = Reflect::get(&part, &"type".into()).ok()?.as_string()?;
            let value = Reflect::get(&part, &"value".into()).ok()?.as_string()?;
            parts.insert(kind, value);
        }
        let get = |k: &str| parts.get(k).cloned().unwrap_or_default();
        Some(format!(
            "{}-{}-{} {}:{}:{} {}",
            get("year"),
            get("month"),
            get("day"),
            get("hour"),
            get("minute"),
            get("second"),
            get("timeZoneName")
        ))
    };
    attempt().unwrap_or_else(|| timestamp_text(at))
}

/// `<time>` with a relative text ("5 min ago") and the exact instant as its tooltip.
pub fn time_ago(at: Option<DateTime<Utc>>) -> AnyView {
    match at {
        None => view! { <span class="muted">"never"</span> }.into_any(),
        Some(at) => {
            let iso = at.to_rfc3339();
            // Reactive: a practice page's zone arrives after its first drawing.
            let exact = move || zoned_text(at, display_zone().as_deref());
            view! {
                <time datetime=iso title=exact>
                    {move || relative_time(now_utc(), at)}
                </time>
            }
            .into_any()
        }
    }
}

/// `<time>` with the exact instant as text.
pub fn time_exact(at: Option<DateTime<Utc>>) -> AnyView {
    match at {
        None => view! { <span class="muted">"–"</span> }.into_any(),
        Some(at) => view! {
            <time datetime=at.to_rfc3339() title=timestamp_text(at)>
                {move || zoned_text(at, display_zone().as_deref())}
            </time>
        }
        .into_any(),
    }
}

/// The state of a feed: a connection banner while fetches fail (the last data stays shown), or
/// the error in full when nothing could be loaded at all.
#[component]
pub fn FeedStatus<T: Send + Sync + 'static>(feed: Feed<T>, what: &'static str) -> impl IntoView {
    let clock = use_clock();
    move || {
        let error = feed.error.get()?;
        if error.is_not_found() {
            return Some(
                view! {
                    <div class="alert alert-error not-found" role="alert">
                        <strong>{format!("{what} not found. ")}</strong>
                        "It does not exist, or your account may not see it."
                    </div>
                }
                .into_any(),
            );
        }
        let age = move || {
            feed.updated_at.get().map(|at| {
                let secs = ((clock.0.get() - at) / 1000.0).floor().max(0.0) as i64;
                format!(" Showing data from {}; retrying.", relative_seconds(secs))
            })
        };
        let class = if feed.loaded() {
            "alert alert-warning connection-banner"
        } else {
            "alert alert-error connection-banner"
        };
        Some(
            view! {
                <div class=class role="alert">
                    <strong>{format!("Could not load {what}. ")}</strong>
                    {error.to_string()}
                    {age}
                </div>
            }
            .into_any(),
        )
    }
}

/// "Loading…" until the feed has data, and no error either.
pub fn loading<T: Send + Sync + 'static>(feed: Feed<T>) -> impl IntoView {
    move || {
        (!feed.loaded() && feed.error.with(Option::is_none))
            .then(|| view! { <p class="muted loading" aria-busy="true">"Loading…"</p> })
    }
}

/// A message after an action: what failed, or that it worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Done(String),
    Failed(String),
}

pub fn notice_view(notice: RwSignal<Option<Notice>>) -> impl IntoView {
    move || {
        notice.get().map(|n| match n {
            Notice::Done(text) => {
                view! { <p class="notice notice-ok" role="status">{text}</p> }.into_any()
            }
            Notice::Failed(text) => {
                view! { <p class="notice notice-error" role="alert">{text}</p> }.into_any()
            }
        })
    }
}

/// Runs an action against the API and reports its outcome in `notice`; `busy` disables its button
/// meanwhile. On success `done` runs (typically a feed's reload).
pub fn act<T, Fut>(
    busy: RwSignal<bool>,
    notice: RwSignal<Option<Notice>>,
    success: impl Into<String>,
    call: Fut,
    done: impl FnOnce(T) + 'static,
) where
    T: 'static,
    Fut: std::future::Future<Output = Result<T, Failure>> + 'static,
{
    // The generic part only hands the answer to `done`; the rest is `run_action`, one function
    // for every action (keeping the download small).
    let outcome: LocalFuture<Box<dyn FnOnce()>> = Box::pin(async move {
        let value = call.await?;
        Ok(Box::new(move || done(value)) as Box<dyn FnOnce()>)
    });
    run_action(busy, notice, success.into(), outcome);
}

fn run_action(
    busy: RwSignal<bool>,
    notice: RwSignal<Option<Notice>>,
    success: String,
    outcome: LocalFuture<Box<dyn FnOnce()>>,
) {
    if busy.get_untracked() {
        return;
    }
    busy.set(true);
    notice.set(None);
    spawn_local(async move {
        let result = outcome.await;
        busy.set(false);
        match result {
            Ok(done) => {
                if !success.is_empty() {
                    notice.set(Some(Notice::Done(success)));
                }
                done();
            }
            Err(Failure::Unauthorized(_)) => {}
            Err(failure) => notice.set(Some(Notice::Failed(failure.to_string()))),
        }
    });
}

/// A status word as a badge: `status` names its colour (`badge-{status}`), `label` is what people
/// read.
pub fn status_badge(status: &'static str, label: &'static str) -> impl IntoView {
    view! { <span class=format!("badge badge-{status}") data-status=status>{label}</span> }
}

/// A filter chip: pressed while its filter is the one shown (`data-filter` names it), with the
/// count of what it would list.
pub fn filter_chip(
    filter: &'static str,
    label: &'static str,
    pressed: impl Fn() -> bool + Copy + Send + Sync + 'static,
    count: impl Fn() -> Option<u32> + Send + Sync + 'static,
    choose: impl Fn() + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <button
            type="button"
            class="filter-chip"
            class:active=pressed
            aria-pressed=move || if pressed() { "true" } else { "false" }
            data-filter=filter
            on:click=move |_| choose()
        >
            {label}
            {move || count().map(|n| view! { <span class="chip-count">{n}</span> })}
        </button>
    }
}

/// An appliance's state as a badge, in the words every page uses.
pub fn state_badge(state: ApplianceState) -> impl IntoView {
    status_badge(state.as_str(), state.label())
}

/// A practice's roll-up as a badge, saying whether it is about all or some of its appliances.
pub fn practice_badge(status: PracticeStatus) -> impl IntoView {
    status_badge(status.as_str(), status.label())
}

/// Cursor pagination for lists the API pages: the cursors of the pages before the current one,
/// so "Newer" can go back.
#[derive(Debug, Clone, Copy)]
pub struct Pager {
    /// The cursor of the page shown (`None`: the first page).
    pub cursor: RwSignal<Option<String>>,
    history: RwSignal<Vec<Option<String>>>,
}

impl Pager {
    pub fn new() -> Self {
        Self {
            cursor: RwSignal::new(None),
            history: RwSignal::new(Vec::new()),
        }
    }

    pub fn reset(self) {
        self.history.set(Vec::new());
        self.cursor.set(None);
    }

    pub fn view<T: Send + Sync + 'static>(
        self,
        next: impl Fn() -> Option<String> + Send + Sync + Copy + 'static,
        feed: Feed<T>,
    ) -> impl IntoView {
        let older = move |_| {
            if let Some(cursor) = next() {
                let current = self.cursor.get_untracked();
                self.history.update(|h| h.push(current));
                self.cursor.set(Some(cursor));
                feed.reload();
            }
        };
        let newer = move |_| {
            let mut previous = None;
            self.history.update(|h| previous = h.pop());
            self.cursor.set(previous.flatten());
            feed.reload();
        };
        view! {
            // A single page has nothing to page through: no Previous/Next at all.
            <nav
                class="pager"
                aria-label="Pages"
                class:hidden=move || self.history.with(Vec::is_empty) && next().is_none()
            >
                <button
                    type="button"
                    class="button button-secondary button-small"
                    disabled=move || self.history.with(Vec::is_empty)
                    on:click=newer
                >
                    "← Previous"
                </button>
                <span class="muted">
                    {move || format!("Page {}", self.history.with(Vec::len) + 1)}
                </span>
                <button
                    type="button"
                    class="button button-secondary button-small pager-next"
                    disabled=move || next().is_none()
                    on:click=older
                >
                    "Next →"
                </button>
            </nav>
        }
    }
}

/// A search box that finds practices by name (server-side, a few at a time: an MSP may have
/// thousands) and reports the one chosen.
#[component]
pub fn PracticePicker(
    /// The `id` of the input, for its label.
    id: &'static str,
    label: &'static str,
    chosen: RwSignal<Option<(PracticeId, String)>>,
    #[prop(optional)] allow_none: bool,
) -> impl IntoView {
    let session = use_session();
    let query = RwSignal::new(String::new());
    let results: RwSignal<Vec<PracticeSummary>> = RwSignal::new(Vec::new());
    let open = RwSignal::new(false);
    let generation = StoredValue::new(0u64);

    let search = move |text: String| {
        query.set(text.clone());
        generation.update_value(|g| *g += 1);
        let mine = generation.get_value();
        spawn_local(async move {
            // Debounce: only the last keystroke within 250 ms searches.
            gloo_timers::future::TimeoutFuture::new(250).await;
            if generation.get_value() != mine {
                return;
            }
            let path = format!(
                "/api/v1/practices{}",
                query_string(&[("limit", Some("8".into())), ("q", Some(text))])
            );
            if let Ok(page) = api::get::<Page<PracticeSummary>>(session, &path).await
                && generation.get_value() == mine
            {
                results.set(page.items);
                open.set(true);
            }
        });
    };
    let list_id = format!("{id}-results");
    let list_id_attr = list_id.clone();

    view! {
        <div class="field picker">
            <label for=id>{label}</label>
            <div class="picker-chosen">
                {move || match chosen.get() {
                    Some((_, name)) => {
                        view! {
                            <span class="chip chip-chosen" data-chosen="true">{name}</span>
                            <button
                                type="button"
                                class="button button-link"
                                on:click=move |_| chosen.set(None)
                            >
                                {if allow_none { "Clear" } else { "Change" }}
                            </button>
                        }
                            .into_any()
                    }
                    None => {
                        view! {
                            <span class="muted">
                                {if allow_none { "Any practice" } else { "None chosen" }}
                            </span>
                        }
                            .into_any()
                    }
                }}
            </div>
            <input
                id=id
                type="search"
                placeholder="Search practices by name"
                autocomplete="off"
                aria-controls=list_id_attr
                prop:value=move || query.get()
                on:input=move |ev| search(event_target_value(&ev))
                on:focus=move |_| {
                    if results.with_untracked(Vec::is_empty) {
                        search(query.get_untracked());
                    } else {
                        open.set(true);
                    }
                }
            />
            <ul id=list_id class="picker-results" hidden=move || !open.get()>
                <For
                    each=move || results.get()
                    key=|p| p.id
                    children=move |p: PracticeSummary| {
                        let name = p.name.clone();
                        let id = p.id;
                        view! {
                            <li>
                                <button
                                    type="button"
                                    class="picker-option"
                                    data-practice-id=id.to_string()
                                    on:click=move |_| {
                                        chosen.set(Some((id, name.clone())));
                                        open.set(false);
                                    }
                                >
                                    {p.name.clone()}
                                </button>
                            </li>
                        }
                    }
                />
            </ul>
        </div>
    }
}

/// The page heading with the age of the data shown.
#[component]
pub fn PageHeading<T: Send + Sync + 'static>(
    title: Signal<String>,
    feed: Feed<T>,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    let clock = use_clock();
    let updated = move || match feed.updated_at.get() {
        Some(at) => {
            let secs = ((clock.0.get() - at) / 1000.0).floor().max(0.0) as i64;
            format!("Updated {}", relative_seconds(secs))
        }
        None => "Loading…".to_owned(),
    };
    view! {
        <div class="page-heading">
            <h1>{move || title.get()}</h1>
            <p class="muted last-updated">{updated}</p>
            <div class="page-actions">{children.map(|c| c())}</div>
        </div>
    }
}

/// "Export CSV": downloads `path` (a list's `.csv` endpoint with the list's current filters) as
/// `{name}-{today}.csv`, saying so when it fails.
#[component]
pub fn ExportButton(
    id: &'static str,
    name: &'static str,
    #[prop(into)] path: Signal<String>,
) -> impl IntoView {
    let session = use_session();
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let export = move |_| {
        let path = path.get_untracked();
        let file = format!("{name}-{}.csv", crate::live::utc_now().date_naive());
        act(
            busy,
            notice,
            "",
            async move { api::download(session, &path, &file, "text/csv").await },
            |()| {},
        );
    };
    view! {
        <button
            type="button"
            id=id
            class="button button-secondary button-small export-csv"
            disabled=move || busy.get()
            on:click=export
        >
            {move || if busy.get() { "Exporting…" } else { "Export CSV" }}
        </button>
        {notice_view(notice)}
    }
}
