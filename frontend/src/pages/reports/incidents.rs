//! Incidents of a practice: real outages of its primary line, built by the cloud from the
//! appliances' events — how long traffic ran on a backup, whether each critical application stayed
//! reachable, the alerts raised, the root cause the MSP writes and everyone's comments.

use leptos::prelude::*;
use stayopen_shared::api::Page;
use stayopen_shared::compliance::{AddIncidentComment, Incident, UpdateIncident};
use stayopen_shared::ids::PracticeId;
use uuid::Uuid;

use crate::api;
use crate::components::{
    FeedStatus, Notice, Pager, act, loading, notice_view, time_exact, use_session,
};
use crate::live::{Feed, feed};
use crate::logic::{
    Interest, alert_kind_label, duration_text, query_string, stayed_reachable_text,
};

#[component]
pub fn Incidents(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let caps = session.capabilities();
    let pager = Pager::new();
    let incidents: Feed<Page<Incident>> = feed(Interest::Practice(practice), 5_000.0, move || {
        let path = format!(
            "/api/v1/incidents{}",
            query_string(&[
                ("practice_id", Some(practice.to_string())),
                ("cursor", pager.cursor.get_untracked()),
                ("limit", Some("20".into())),
            ])
        );
        api::get::<Page<Incident>>(session, &path)
    });
    let next = move || {
        incidents
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let reload = move || incidents.reload();

    view! {
        <section class="card section" id="report-incidents" aria-labelledby="incidents-heading">
            <h2 id="incidents-heading">"Incidents"</h2>
            <p class="muted small">"Each outage of the primary line, from the appliances' own events: when it started and ended, the time on backup, whether the critical applications stayed reachable, and the alerts it raised."</p>
            <FeedStatus feed=incidents what="the incidents" />
            {loading(incidents)}
            {move || incidents.data.get().map(|page| {
                if page.items.is_empty() {
                    return view! { <p class="muted" id="no-incidents">"No outages recorded."</p> }.into_any();
                }
                view! {
                    <ol class="plain-list incident-list" id="incident-list">
                        {page.items.into_iter().map(|i| view! {
                            <IncidentCard incident=i can_edit=caps.operate can_comment=caps.comment_incidents on_change=reload />
                        }).collect_view()}
                    </ol>
                }.into_any()
            })}
            {pager.view(next, incidents)}
        </section>
    }
}

#[component]
fn IncidentCard(
    incident: Incident,
    can_edit: bool,
    can_comment: bool,
    on_change: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let id = incident.id;
    let lasted = incident
        .ended_at
        .map(|end| duration_text((end - incident.started_at).num_seconds()));
    let apps = incident
        .apps
        .iter()
        .map(|a| {
            let class = match a.stayed_reachable {
                Some(true) => "ok-text",
                Some(false) => "bad-text",
                None => "muted",
            };
            view! {
                <li data-app=a.app.clone()>
                    <strong>{a.app.clone()}</strong>": "
                    <span class=class>{stayed_reachable_text(a.stayed_reachable)}</span>
                    {a.reason.clone().map(|r| view! { <span class="muted">" ("{r}")"</span> })}
                </li>
            }
        })
        .collect_view();
    let alerts = incident
        .alerts
        .iter()
        .map(|a| {
            view! {
                <li>
                    <span class=format!("badge badge-severity-{}", a.severity.as_str())>{a.severity.as_str()}</span>
                    " "{alert_kind_label(a.kind)}" · "{a.title.clone()}" · "{time_exact(Some(a.raised_at))}
                </li>
            }
        })
        .collect_view();
    let comments = incident
        .comments
        .iter()
        .map(|c| {
            view! {
                <li class="comment">
                    <span class="muted small">{c.author.clone()}" · "{time_exact(Some(c.at))}</span>
                    <p>{c.body.clone()}</p>
                </li>
            }
        })
        .collect_view();
    let root_cause = incident.root_cause.clone();
    view! {
        <li class="incident" data-incident-id=id.to_string() data-ongoing=incident.ended_at.is_none().to_string()>
            <div class="drill-head">
                {if incident.ended_at.is_none() {
                    view! { <span class="badge badge-offline">"ongoing"</span> }.into_any()
                } else {
                    view! { <span class="badge badge-state-resolved">"ended"</span> }.into_any()
                }}
                <strong>{time_exact(Some(incident.started_at))}</strong>
                <span class="muted">
                    " · "<span class="serial">{incident.appliance_serial.clone()}</span>
                    {lasted.map(|l| format!(" · lasted {l}"))}
                </span>
            </div>
            <dl class="facts facts-compact">
                <div><dt>"Failed"</dt><dd>{incident.failed_uplinks.join(", ")}</dd></div>
                <div><dt>"Carried by"</dt><dd>{if incident.backup_uplinks.is_empty() { "no backup".to_owned() } else { incident.backup_uplinks.join(", ") }}</dd></div>
                <div><dt>"Time on backup"</dt><dd class="on-backup">{duration_text(incident.on_backup_secs as i64)}</dd></div>
                <div><dt>"Traffic kept flowing"</dt><dd>{if incident.traffic_kept_flowing { "yes" } else { "no" }}</dd></div>
                <div><dt>"Ended"</dt><dd>{time_exact(incident.ended_at)}</dd></div>
            </dl>
            {(!incident.apps.is_empty()).then(|| view! {
                <h3 class="small-heading">"Critical applications"</h3>
                <ul class="plain-list incident-apps">{apps}</ul>
            })}
            {(!incident.alerts.is_empty()).then(|| view! {
                <h3 class="small-heading">"Alerts"</h3>
                <ul class="plain-list incident-alerts">{alerts}</ul>
            })}
            <h3 class="small-heading">"Root cause"</h3>
            {if can_edit {
                view! { <RootCause id text=root_cause on_change /> }.into_any()
            } else if root_cause.is_empty() {
                view! { <p class="muted root-cause">"Not written yet."</p> }.into_any()
            } else {
                view! { <p class="root-cause">{root_cause}</p> }.into_any()
            }}
            <h3 class="small-heading">"Comments"</h3>
            {incident.comments.is_empty().then(|| view! { <p class="muted">"No comments yet."</p> })}
            <ul class="plain-list comments">{comments}</ul>
            {can_comment.then(|| view! { <CommentForm id on_change /> })}
        </li>
    }
}

#[component]
fn RootCause(
    id: Uuid,
    text: String,
    on_change: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let session = use_session();
    let value = RwSignal::new(text);
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let field_id = format!("root-cause-{id}");
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        act(
            busy,
            notice,
            "Root cause saved.",
            api::patch::<_, serde_json::Value>(
                session,
                &format!("/api/v1/incidents/{id}"),
                &UpdateIncident {
                    root_cause: value.get_untracked().trim().to_owned(),
                },
            ),
            move |_| on_change(),
        );
    };
    view! {
        <form class="inline-form root-cause-form" on:submit=save>
            <label for=field_id.clone() class="visually-hidden">"Root cause"</label>
            <textarea id=field_id class="root-cause-input" rows="2"
                placeholder="What failed, and what was done about it"
                prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))></textarea>
            <button type="submit" class="button button-secondary button-small" disabled=move || busy.get()>"Save"</button>
            {notice_view(notice)}
        </form>
    }
}

#[component]
fn CommentForm(id: Uuid, on_change: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let session = use_session();
    let body = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let field_id = format!("comment-{id}");
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = body.get_untracked().trim().to_owned();
        if text.is_empty() {
            notice.set(Some(Notice::Failed("Write a comment first.".into())));
            return;
        }
        act(
            busy,
            notice,
            "",
            api::post::<_, serde_json::Value>(
                session,
                &format!("/api/v1/incidents/{id}/comments"),
                &AddIncidentComment { body: text },
            ),
            move |_| {
                body.set(String::new());
                on_change();
            },
        );
    };
    view! {
        <form class="inline-form comment-form" on:submit=add>
            <label for=field_id.clone() class="visually-hidden">"Add a comment"</label>
            <textarea id=field_id class="comment-input" rows="1" placeholder="Add a comment"
                prop:value=move || body.get()
                on:input=move |ev| body.set(event_target_value(&ev))></textarea>
            <button type="submit" class="button button-secondary button-small" disabled=move || busy.get()>"Comment"</button>
            {notice_view(notice)}
        </form>
    }
}
