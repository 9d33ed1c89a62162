//! Alerts: the open ones to act on (acknowledge, resolve with a note, comment) and the history with
//! filters. Practice-scoped roles see the same lists read-only.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use stayopen_shared::alerts::{
    AlertBulkAction, AlertKind, AlertState, AlertView, BulkAlertRequest, CreateAlertComment,
    ResolveAlert, Severity,
};
use stayopen_shared::api::{BulkOutcome, Page};
use stayopen_shared::ids::{ApplianceId, PracticeId};

use crate::api;
use crate::components::{
    ExportButton, FeedStatus, Notice, PageHeading, Pager, PracticePicker, act, loading,
    notice_view, time_ago, time_exact, use_session,
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
    let selected: RwSignal<Vec<uuid::Uuid>> = RwSignal::new(Vec::new());
    let can_act = session.capabilities().operate;

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
        selected.set(Vec::new());
        alerts.reload();
    };
    // The export has the list's filters, every page of them.
    let export_path = Signal::derive(move || {
        let open = tab.get() == Tab::Open;
        let filter = |s: RwSignal<String>| (!open).then(|| s.get()).flatten_empty();
        format!(
            "/api/v1/alerts.csv{}",
            query_string(&[
                ("unresolved", open.then(|| "true".to_owned())),
                ("state", filter(state)),
                ("kind", filter(kind)),
                ("severity", filter(severity)),
                ("practice_id", practice.get().map(|(id, _)| id.to_string())),
            ])
        )
    });
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
            <PageHeading title=Signal::derive(|| "Alerts".to_owned()) feed=alerts>
                <ExportButton id="export-alerts" name="alerts" path=export_path />
            </PageHeading>
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
            <crate::pages::warnings::NoChannelsWarning />
            {can_act.then(|| view! { <AlertBulkBar selected feed=alerts /> })}
            {if can_act {
                view! { <AlertList feed=alerts show_practice=true selected=selected /> }.into_any()
            } else {
                view! { <AlertList feed=alerts show_practice=true /> }.into_any()
            }}
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

/// Alerts as a dense list grouped by appliance (the worst news of one box together), each with
/// its context, lifecycle and (for MSP staff) actions. With `selected`, unresolved alerts get a
/// checkbox, and each appliance's group one that selects its alerts, for the bulk actions.
#[component]
pub fn AlertList(
    feed: Feed<Page<AlertView>>,
    show_practice: bool,
    #[prop(optional)] selected: Option<RwSignal<Vec<uuid::Uuid>>>,
) -> impl IntoView {
    let items = Memo::new(move |_| {
        feed.data
            .with(|p| p.as_ref().map(|p| p.items.clone()).unwrap_or_default())
    });
    // Appliances in the order of their newest alert, each with its alerts newest first.
    let groups = Memo::new(move |_| {
        items.with(|items| {
            let mut groups: Vec<(ApplianceId, Vec<uuid::Uuid>)> = Vec::new();
            for a in items {
                match groups.iter_mut().find(|(id, _)| *id == a.appliance_id) {
                    Some((_, ids)) => ids.push(a.id),
                    None => groups.push((a.appliance_id, vec![a.id])),
                }
            }
            groups
        })
    });
    let appliances =
        Memo::new(move |_| groups.with(|g| g.iter().map(|(id, _)| *id).collect::<Vec<_>>()));
    view! {
        {loading(feed)}
        {move || {
            (feed.loaded() && appliances.with(Vec::is_empty))
                .then(|| view! { <p class="empty">"No alerts."</p> })
        }}
        <div class="alert-groups">
            <For
                each=move || appliances.get()
                key=|id| *id
                children=move |appliance: ApplianceId| {
                    let ids = Memo::new(move |_| {
                        groups.with(|g| {
                            g.iter()
                                .find(|(id, _)| *id == appliance)
                                .map(|(_, ids)| ids.clone())
                                .unwrap_or_default()
                        })
                    });
                    view! { <AlertGroup items appliance ids show_practice feed selected /> }
                }
            />
        </div>
    }
}

/// One appliance's alerts under a heading that names the box, its site and practice.
#[component]
fn AlertGroup(
    items: Memo<Vec<AlertView>>,
    appliance: ApplianceId,
    ids: Memo<Vec<uuid::Uuid>>,
    show_practice: bool,
    feed: Feed<Page<AlertView>>,
    selected: Option<RwSignal<Vec<uuid::Uuid>>>,
) -> impl IntoView {
    let first =
        Memo::new(move |_| items.with(|i| i.iter().find(|a| a.appliance_id == appliance).cloned()));
    let selectable = Memo::new(move |_| {
        items.with(|i| {
            i.iter()
                .filter(|a| a.appliance_id == appliance && a.state != AlertState::Resolved)
                .map(|a| a.id)
                .collect::<Vec<_>>()
        })
    });
    view! {
        <section class="alert-group-section" data-appliance-id=appliance.to_string()>
            {move || first.get().map(|a| {
                let count = ids.with(Vec::len) as u32;
                view! {
                    <h2 class="alert-group-heading">
                        {selected.map(|selected| {
                            let all = move || selectable.with(|s| !s.is_empty() && selected.with(|sel| s.iter().all(|id| sel.contains(id))));
                            view! {
                                <input
                                    type="checkbox"
                                    class="select-group"
                                    aria-label=format!("Select every open alert of {}", a.appliance_serial)
                                    prop:checked=all
                                    disabled=move || selectable.with(Vec::is_empty)
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        let mine = selectable.get_untracked();
                                        selected.update(|sel| {
                                            sel.retain(|id| !mine.contains(id));
                                            if on {
                                                sel.extend(mine.iter().copied());
                                            }
                                        });
                                    }
                                />
                            }
                        })}
                        <a href=Route::Appliance(a.appliance_id).href() class="serial">{a.appliance_serial.clone()}</a>
                        <span class="muted small">
                            {show_practice.then(|| format!("{} · ", a.practice_name))}
                            {a.site_name.clone()}
                            {format!(" · {}", crate::logic::plural(count, "alert", "alerts"))}
                        </span>
                    </h2>
                }
            })}
            <ul class="alert-list">
                <For
                    each=move || ids.get()
                    key=|id| *id
                    children=move |id: uuid::Uuid| {
                        view! { <AlertItem items id show_practice feed selected /> }
                    }
                />
            </ul>
        </section>
    }
}

#[component]
fn AlertItem(
    items: Memo<Vec<AlertView>>,
    id: uuid::Uuid,
    show_practice: bool,
    feed: Feed<Page<AlertView>>,
    selected: Option<RwSignal<Vec<uuid::Uuid>>>,
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
                    {selected.filter(|_| !resolved).map(|selected| view! {
                        <input
                            type="checkbox"
                            class="select-alert"
                            aria-label=format!("Select the {} alert of {}", alert_kind_label(a.kind), a.appliance_serial)
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
                    })}
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

/// Acknowledge or resolve the selected alerts, after a confirmation; says what was skipped.
#[component]
fn AlertBulkBar(selected: RwSignal<Vec<uuid::Uuid>>, feed: Feed<Page<AlertView>>) -> impl IntoView {
    let session = use_session();
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let note = RwSignal::new(String::new());
    let run = move |action: AlertBulkAction| {
        let ids = selected.get_untracked();
        if ids.is_empty() {
            return;
        }
        let what = crate::logic::plural(ids.len() as u32, "alert", "alerts");
        let question = match action {
            AlertBulkAction::Acknowledge => {
                format!("Acknowledge {what}? Escalation stops for them.")
            }
            AlertBulkAction::Resolve => format!("Resolve {what} by hand?"),
        };
        let confirmed = web_sys::window()
            .and_then(|w| w.confirm_with_message(&question).ok())
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        let text = note.get_untracked().trim().to_owned();
        let request = BulkAlertRequest {
            alert_ids: ids,
            action,
            note: (action == AlertBulkAction::Resolve && !text.is_empty()).then_some(text),
        };
        act(
            busy,
            notice,
            "",
            async move { api::post::<_, BulkOutcome>(session, "/api/v1/alerts/bulk", &request).await },
            move |outcome: BulkOutcome| {
                let verb = match action {
                    AlertBulkAction::Acknowledge => "Acknowledged",
                    AlertBulkAction::Resolve => "Resolved",
                };
                let done = format!(
                    "{verb} {}.",
                    crate::logic::plural(outcome.done.len() as u32, "alert", "alerts")
                );
                notice.set(Some(if outcome.skipped.is_empty() {
                    Notice::Done(done)
                } else {
                    let why: Vec<String> =
                        outcome.skipped.iter().map(|s| s.reason.clone()).collect();
                    Notice::Failed(format!(
                        "{done} Skipped {}: {}",
                        outcome.skipped.len(),
                        why.join("; ")
                    ))
                }));
                note.set(String::new());
                selected.set(Vec::new());
                feed.reload();
            },
        );
    };
    view! {
        <div class="bulk-bar" id="alert-bulk" class:hidden=move || selected.with(Vec::is_empty) && notice.with(Option::is_none)>
            <span class="bulk-count" id="alert-selection">
                {move || format!("{} selected", crate::logic::plural(selected.with(Vec::len) as u32, "alert", "alerts"))}
            </span>
            <button
                type="button"
                id="bulk-acknowledge"
                class="button button-primary button-small"
                disabled=move || busy.get() || selected.with(Vec::is_empty)
                on:click=move |_| run(AlertBulkAction::Acknowledge)
            >
                "Acknowledge"
            </button>
            <label for="bulk-note" class="visually-hidden">"Resolution note"</label>
            <input id="bulk-note" type="text" placeholder="Resolution note (optional)" bind:value=note />
            <button
                type="button"
                id="bulk-resolve"
                class="button button-secondary button-small"
                disabled=move || busy.get() || selected.with(Vec::is_empty)
                on:click=move |_| run(AlertBulkAction::Resolve)
            >
                "Resolve"
            </button>
            <button type="button" class="button button-link button-small" on:click=move |_| { selected.set(Vec::new()); notice.set(None); }>
                "Clear"
            </button>
            {notice_view(notice)}
        </div>
    }
}
