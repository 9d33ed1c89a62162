//! Alerts: the open ones to act on (acknowledge, resolve with a note, comment) and the history with
//! filters. Practice-scoped roles see the same lists read-only.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use stayopen_shared::alerts::{
    AlertKind, AlertState, AlertView, CreateAlertComment, ResolveAlert, Severity,
};
use stayopen_shared::api::Page;
use stayopen_shared::ids::PracticeId;

use crate::api;
use crate::components::{
    FeedStatus, Notice, PageHeading, Pager, PracticePicker, act, loading, notice_view, time_ago,
    time_exact, use_session,
};
use crate::live::{Feed, feed};
use crate::logic::{Interest, Route, actor_label, alert_kind_label, parse_date, query_string};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Open,
    History,
}

#[component]
pub fn AlertsPage() -> impl IntoView {
    let session = use_session();
    let tab = RwSignal::new(Tab::Open);
    let state = RwSignal::new(String::new());
    let kind = RwSignal::new(String::new());
    let severity = RwSignal::new(String::new());
    let since = RwSignal::new(String::new());
    let practice: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    let pager = Pager::new();

    let alerts = feed(Interest::Alerts, 1_000.0, move || {
        let open = tab.get_untracked() == Tab::Open;
        let since_value = parse_date(&since.get_untracked())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| DateTime::<Utc>::from_naive_utc_and_offset(d, Utc).to_rfc3339());
        let filter = |s: RwSignal<String>| (!open).then(|| s.get_untracked());
        let path = format!(
            "/api/v1/alerts{}",
            query_string(&[
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked()),
                ("unresolved", open.then(|| "true".to_owned())),
                ("state", filter(state).flatten_empty()),
                ("kind", filter(kind).flatten_empty()),
                ("severity", filter(severity).flatten_empty()),
                (
                    "practice_id",
                    practice.get_untracked().map(|(id, _)| id.to_string())
                ),
                ("since", if open { None } else { since_value }),
            ])
        );
        async move { api::get::<Page<AlertView>>(session, &path).await }
    });
    let refilter = move || {
        pager.reset();
        alerts.reload();
    };
    Effect::new(move |previous: Option<()>| {
        practice.track();
        if previous.is_some() {
            refilter();
        }
    });
    let next = move || {
        alerts
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let tab_button = move |value: Tab, id: &'static str, label: &'static str| {
        let selected = move || tab.get() == value;
        view! {
            <button
                type="button"
                id=id
                role="tab"
                class="tab"
                class:active=selected
                aria-selected=move || if selected() { "true" } else { "false" }
                on:click=move |_| {
                    tab.set(value);
                    refilter();
                }
            >
                {label}
            </button>
        }
    };
    let select = move |id: &'static str,
                       label: &'static str,
                       signal: RwSignal<String>,
                       options: Vec<(&'static str, &'static str)>| {
        view! {
            <div class="field field-inline">
                <label for=id>{label}</label>
                <select
                    id=id
                    on:change=move |ev| {
                        signal.set(event_target_value(&ev));
                        refilter();
                    }
                >
                    <option value="">"Any"</option>
                    {options
                        .into_iter()
                        .map(|(value, text)| view! { <option value=value>{text}</option> })
                        .collect_view()}
                </select>
            </div>
        }
    };

    view! {
        <section id="alerts" class="page">
            <PageHeading title=Signal::derive(|| "Alerts".to_owned()) feed=alerts />
            <div class="tabs" role="tablist" aria-label="Alerts">
                {tab_button(Tab::Open, "tab-open", "Open")}
                {tab_button(Tab::History, "tab-history", "History")}
            </div>
            <div class="toolbar">
                <Show when=move || tab.get() == Tab::History>
                    {select(
                        "filter-state",
                        "State",
                        state,
                        vec![
                            (AlertState::Open.as_str(), "Open"),
                            (AlertState::Acknowledged.as_str(), "Acknowledged"),
                            (AlertState::Resolved.as_str(), "Resolved"),
                        ],
                    )}
                    {select(
                        "filter-kind",
                        "Kind",
                        kind,
                        AlertKind::ALL.iter().map(|k| (k.as_str(), alert_kind_label(*k))).collect(),
                    )}
                    {select(
                        "filter-severity",
                        "Severity",
                        severity,
                        vec![
                            (Severity::Critical.as_str(), "Critical"),
                            (Severity::Warning.as_str(), "Warning"),
                            (Severity::Info.as_str(), "Info"),
                        ],
                    )}
                    <div class="field field-inline">
                        <label for="filter-since">"Since"</label>
                        <input
                            id="filter-since"
                            type="date"
                            on:change=move |ev| {
                                since.set(event_target_value(&ev));
                                refilter();
                            }
                        />
                    </div>
                </Show>
                <PracticePicker id="filter-practice" label="Practice" chosen=practice allow_none=true />
            </div>
            <FeedStatus feed=alerts what="the alerts" />
            <AlertList feed=alerts show_practice=true />
            {pager.view(next, alerts)}
        </section>
    }
}

trait FlattenEmpty {
    fn flatten_empty(self) -> Option<String>;
}

impl FlattenEmpty for Option<String> {
    fn flatten_empty(self) -> Option<String> {
        self.filter(|s| !s.is_empty())
    }
}

/// Alerts as a dense list, each with its context, lifecycle and (for MSP staff) actions.
#[component]
pub fn AlertList(feed: Feed<Page<AlertView>>, show_practice: bool) -> impl IntoView {
    let items = Memo::new(move |_| {
        feed.data
            .with(|p| p.as_ref().map(|p| p.items.clone()).unwrap_or_default())
    });
    let ids = Memo::new(move |_| items.with(|i| i.iter().map(|a| a.id).collect::<Vec<_>>()));
    view! {
        {loading(feed)}
        {move || {
            (feed.loaded() && ids.with(Vec::is_empty))
                .then(|| view! { <p class="empty">"No alerts."</p> })
        }}
        <ul class="alert-list">
            <For
                each=move || ids.get()
                key=|id| *id
                children=move |id: uuid::Uuid| {
                    view! { <AlertItem items id show_practice feed /> }
                }
            />
        </ul>
    }
}

#[component]
fn AlertItem(
    items: Memo<Vec<AlertView>>,
    id: uuid::Uuid,
    show_practice: bool,
    feed: Feed<Page<AlertView>>,
) -> impl IntoView {
    let session = use_session();
    let can_act = session.capabilities().operate;
    let me = StoredValue::new(
        session
            .user
            .with_untracked(|u| u.as_ref().map(|u| (u.id, u.email.clone()))),
    );
    let who = move |actor: &str| {
        me.with_value(|me| actor_label(actor, me.as_ref().map(|(id, e)| (*id, e.as_str()))))
    };
    let alert = Memo::new(move |_| items.with(|i| i.iter().find(|a| a.id == id).cloned()));
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let note = RwSignal::new(String::new());
    let comment = RwSignal::new(String::new());
    // The item is drawn anew whenever the alert changes (a comment, a live update): remember
    // whether its comments were open so the new drawing keeps them so.
    let comments_open = RwSignal::new(false);

    // An action answers with the alert as it now is: show it at once, then let the list refresh.
    let apply = move |updated: AlertView| {
        feed.data.update(|page| {
            if let Some(page) = page
                && let Some(slot) = page.items.iter_mut().find(|a| a.id == updated.id)
            {
                *slot = updated;
            }
        });
        feed.reload();
    };
    let acknowledge = move |_| {
        act(
            busy,
            notice,
            "",
            async move {
                api::post::<_, AlertView>(
                    session,
                    &format!("/api/v1/alerts/{id}/acknowledge"),
                    &serde_json::json!({}),
                )
                .await
            },
            apply,
        );
    };
    let resolve = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = note.get_untracked().trim().to_owned();
        let body = ResolveAlert {
            note: (!text.is_empty()).then_some(text),
        };
        act(
            busy,
            notice,
            "",
            async move {
                api::post::<_, AlertView>(session, &format!("/api/v1/alerts/{id}/resolve"), &body)
                    .await
            },
            apply,
        );
    };
    let add_comment = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = CreateAlertComment {
            body: comment.get_untracked().trim().to_owned(),
        };
        if body.body.is_empty() {
            return;
        }
        act(
            busy,
            notice,
            "",
            async move {
                api::post::<_, AlertView>(session, &format!("/api/v1/alerts/{id}/comments"), &body)
                    .await
            },
            move |updated| {
                comment.set(String::new());
                apply(updated);
            },
        );
    };

    move || {
        let a = alert.get()?;
        let severity = a.severity.as_str();
        let state = a.state.as_str();
        let resolved = a.state == AlertState::Resolved;
        let open = a.state == AlertState::Open;
        let note_id = format!("note-{id}");
        let comment_id = format!("comment-{id}");
        let comments = a.comments.clone();
        Some(view! {
            <li class=format!("alert-item severity-{severity} state-{state}") data-alert-id=id.to_string() data-kind=a.kind.as_str() data-state=state>
                <div class="alert-main">
                    <span class=format!("badge badge-severity-{severity}")>{severity}</span>
                    <strong class="alert-kind">{alert_kind_label(a.kind)}</strong>
                    {(a.count > 1).then(|| view! { <span class="chip">{format!("×{}", a.count)}</span> })}
                    {a.muted.then(|| view! { <span class="chip" title="Raised during a maintenance window: nobody was notified">"muted"</span> })}
                    {a.after_hours.then(|| view! { <span class="chip" title="Raised while the practice was closed">"after hours"</span> })}
                    <span class=format!("badge badge-state-{state} alert-state")>{state}</span>
                </div>
                <p class="alert-summary">{a.summary.clone()}</p>
                <p class="alert-context muted">
                    {show_practice.then(|| view! {
                        <a href=Route::Practice(a.practice_id).href()>{a.practice_name.clone()}</a>
                        " · "
                    })}
                    {a.site_name.clone()}
                    " · "
                    <a href=Route::Appliance(a.appliance_id).href() class="serial">{a.appliance_serial.clone()}</a>
                    {(!a.subject.is_empty()).then(|| format!(" · {}", a.subject))}
                    " · first "
                    {time_ago(Some(a.first_seen))}
                    " · last "
                    {time_ago(Some(a.last_seen))}
                </p>
                {a.acknowledged_by.as_deref().map(who).map(|by| view! {
                    <p class="muted small">"Acknowledged by "{by}" "{time_ago(a.acknowledged_at)}</p>
                })}
                {a.resolved_at.map(|at| view! {
                    <p class="muted small">
                        "Resolved "{time_exact(Some(at))}
                        {a.resolved_by.as_deref().map(|by| format!(" by {}", who(by)))}
                        {a.resolution.clone().map(|r| format!(": {r}"))}
                    </p>
                })}
                {notice_view(notice)}
                <div class="alert-actions">
                    {(can_act && open).then(|| view! {
                        <button type="button" class="button button-primary button-small acknowledge" disabled=move || busy.get() on:click=acknowledge>
                            "Acknowledge"
                        </button>
                    })}
                    {(can_act && !resolved).then(|| view! {
                        <form class="inline-form resolve-form" on:submit=resolve>
                            <label for=note_id.clone() class="visually-hidden">"Resolution note"</label>
                            <input id=note_id type="text" placeholder="Resolution note (optional)" bind:value=note />
                            <button type="submit" class="button button-secondary button-small resolve" disabled=move || busy.get()>
                                "Resolve"
                            </button>
                        </form>
                    })}
                </div>
                <details
                    class="comments"
                    open=comments_open.get_untracked()
                    on:toggle=move |ev| {
                        comments_open.set(event_target::<web_sys::Element>(&ev).has_attribute("open"));
                    }
                >
                    <summary>{format!("Comments ({})", comments.len())}</summary>
                    <ul class="plain-list">
                        {comments.into_iter().map(|c| view! {
                            <li class="comment">
                                <strong>{who(&c.author)}</strong>" "
                                <span class="muted small">{time_exact(Some(c.at))}</span>
                                <p>{c.body}</p>
                            </li>
                        }).collect_view()}
                    </ul>
                    {can_act.then(|| view! {
                        <form class="inline-form" on:submit=add_comment>
                            <label for=comment_id.clone() class="visually-hidden">"Comment"</label>
                            <input id=comment_id type="text" placeholder="Add a comment" bind:value=comment />
                            <button type="submit" class="button button-secondary button-small" disabled=move || busy.get()>
                                "Comment"
                            </button>
                        </form>
                    })}
                </details>
            </li>
        })
    }
}
