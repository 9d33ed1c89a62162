//! Drills of a practice (HIPAA 164.308(a)(7)(ii)(D), testing): each one's outcome, reason,
//! switchover time and what every critical application did through the backup, and the
//! compliance officer's sign-off — comment, confirm, then their name and the time.

use leptos::prelude::*;
use stayopen_shared::api::Page;
use stayopen_shared::compliance::{DrillOutcome, DrillRecord, SignOffDrill};
use stayopen_shared::ids::PracticeId;
use uuid::Uuid;

use crate::api;
use crate::components::{
    FeedStatus, Notice, Pager, act, loading, notice_view, time_exact, use_session,
};
use crate::live::{Feed, feed, follow_while};
use crate::logic::{
    Interest, app_result_text, awaits_sign_off, drill_outcome_label, drill_trigger_label,
    millis_text, query_string,
};

#[component]
pub fn Drills(practice: PracticeId, awaiting: Feed<Page<DrillRecord>>) -> impl IntoView {
    let session = use_session();
    let caps = session.capabilities();
    let only_awaiting = RwSignal::new(false);
    let pager = Pager::new();
    let drills: Feed<Page<DrillRecord>> = feed(Interest::Practice(practice), 5_000.0, move || {
        let path = format!(
            "/api/v1/drills{}",
            query_string(&[
                ("practice_id", Some(practice.to_string())),
                (
                    "awaiting_sign_off",
                    only_awaiting.get_untracked().then(|| "true".to_owned())
                ),
                ("cursor", pager.cursor.get_untracked()),
                ("limit", Some("20".into())),
            ])
        );
        api::get::<Page<DrillRecord>>(session, &path)
    });
    // A drill in progress reports within a minute or two: follow it.
    follow_while(drills, 2_000, |page: &Page<DrillRecord>| {
        page.items
            .iter()
            .any(|d| d.outcome == DrillOutcome::Running)
    });
    let changed = move || {
        drills.reload();
        awaiting.reload();
    };
    let next = move || {
        drills
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let duration = RwSignal::new(120u32);
    let run_now = move |_| {
        act(
            busy,
            notice,
            "Drill requested: each online appliance of the practice moves its traffic to the backup, checks the critical applications and fails back. The result appears here.",
            api::post::<_, serde_json::Value>(
                session,
                &format!("/api/v1/practices/{practice}/drills"),
                &serde_json::json!({ "duration_secs": duration.get_untracked() }),
            ),
            move |_| drills.reload(),
        );
    };

    view! {
        <section class="card section" id="report-drills" aria-labelledby="drills-heading">
            <div class="section-heading">
                <h2 id="drills-heading">"Drills"</h2>
                <div class="toolbar">
                    <label class="checkbox">
                        <input
                            type="checkbox"
                            id="drills-awaiting-only"
                            prop:checked=move || only_awaiting.get()
                            on:change=move |ev| {
                                only_awaiting.set(event_target_checked(&ev));
                                pager.reset();
                                drills.reload();
                            }
                        />
                        " Awaiting sign-off only"
                    </label>
                    {caps.operate.then(|| view! {
                        <div class="field field-inline">
                            <label for="drill-duration">"On the backup for"</label>
                            <select id="drill-duration" on:change=move |ev| {
                                duration.set(event_target_value(&ev).parse().unwrap_or(120));
                            }>
                                <option value="60">"1 minute"</option>
                                <option value="120" selected>"2 minutes"</option>
                                <option value="300">"5 minutes"</option>
                                <option value="600">"10 minutes"</option>
                            </select>
                        </div>
                        <button type="button" id="run-drill" class="button button-primary button-small"
                            disabled=move || busy.get() on:click=run_now>
                            "Run a drill now"
                        </button>
                    })}
                </div>
            </div>
            <p class="muted small">
                "A drill moves the practice's traffic to the backup uplink, checks every critical application through it, measures the switchover and fails back. "
                "HIPAA 164.308(a)(7)(ii)(D) asks that such tests be documented, dated and reviewed: a compliance officer signs each one off."
            </p>
            {notice_view(notice)}
            <FeedStatus feed=drills what="the drills" />
            {loading(drills)}
            {move || drills.data.get().map(|page| {
                if page.items.is_empty() {
                    return view! { <p class="muted" id="no-drills">"No drills recorded yet."</p> }.into_any();
                }
                view! {
                    <ol class="plain-list drill-list" id="drill-list">
                        {page.items.into_iter().map(|d| view! {
                            <DrillCard drill=d can_sign=caps.sign_off_drills on_signed=changed />
                        }).collect_view()}
                    </ol>
                }.into_any()
            })}
            {pager.view(next, drills)}
        </section>
    }
}

#[component]
fn DrillCard(
    drill: DrillRecord,
    can_sign: bool,
    on_signed: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let id = drill.id;
    let outcome = drill.outcome.as_str();
    let waiting = awaits_sign_off(&drill);
    let apps = (!drill.apps.is_empty()).then(|| {
        view! {
            <table class="data-table compact drill-apps">
                <thead>
                    <tr>
                        <th scope="col">"Application"</th>
                        <th scope="col">"Through the backup"</th>
                    </tr>
                </thead>
                <tbody>
                    {drill.apps.iter().map(|a| view! {
                        <tr data-app=a.app.clone() data-reachable=a.reachable.to_string()>
                            <th scope="row" data-label="Application">{a.app.clone()}</th>
                            <td class=if a.reachable { "ok-text" } else { "bad-text" } data-label="Through the backup">
                                {app_result_text(a.reachable, a.latency_ms, a.reason.as_deref())}
                            </td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        }
    });
    let sign_off = match drill.sign_off.clone() {
        Some(s) => view! {
            <p class="sign-off signed" data-signed-by=s.email.clone()>
                "Signed off by "<strong class="sign-off-name">{s.name.clone()}</strong>
                " ("{s.email.clone()}") on "<span class="sign-off-time">{time_exact(Some(s.signed_at))}</span>
                {(!s.comment.is_empty()).then(|| view! { ": “"{s.comment.clone()}"”" })}
            </p>
        }
        .into_any(),
        None if waiting && can_sign => view! { <SignOffForm id on_signed /> }.into_any(),
        None if waiting => {
            view! { <p class="sign-off muted">"Not signed off yet."</p> }.into_any()
        }
        None => ().into_any(),
    };
    view! {
        <li class="drill" data-drill-id=id.to_string() data-outcome=outcome data-awaiting=waiting.to_string()>
            <div class="drill-head">
                <span class=format!("badge badge-drill-{outcome}")>{drill_outcome_label(drill.outcome)}</span>
                {waiting.then(|| view! { <span class="badge badge-awaiting">"awaiting sign-off"</span> })}
                <strong>{time_exact(Some(drill.started_at))}</strong>
                <span class="muted">
                    " · "<span class="serial">{drill.appliance_serial.clone()}</span>
                    " · "{drill_trigger_label(drill.trigger)}
                </span>
            </div>
            <p class="drill-reason">{drill.reason.clone()}</p>
            <dl class="facts facts-compact">
                <div><dt>"Backup"</dt><dd>{drill.backup_uplink.clone().unwrap_or_else(|| "–".into())}</dd></div>
                <div><dt>"Switchover"</dt><dd class="switchover">{millis_text(drill.switchover_ms)}</dd></div>
                <div><dt>"Failback"</dt><dd>{millis_text(drill.failback_ms)}</dd></div>
                <div><dt>"Finished"</dt><dd>{time_exact(drill.finished_at)}</dd></div>
            </dl>
            {apps}
            {sign_off}
        </li>
    }
}

/// The sign-off of one drill: a comment, then a confirmation naming what signing means.
#[component]
fn SignOffForm(id: Uuid, on_signed: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let session = use_session();
    let comment = RwSignal::new(String::new());
    let confirming = RwSignal::new(false);
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let field_id = format!("sign-off-comment-{id}");
    let sign = move |_| {
        act(
            busy,
            notice,
            "",
            api::post::<_, serde_json::Value>(
                session,
                &format!("/api/v1/drills/{id}/sign-off"),
                &SignOffDrill {
                    comment: comment.get_untracked().trim().to_owned(),
                },
            ),
            move |_| on_signed(),
        );
    };
    view! {
        <form class="sign-off-form" on:submit=move |ev| {
            ev.prevent_default();
            confirming.set(true);
        }>
            <div class="field">
                <label for=field_id.clone()>"Review comment"</label>
                <textarea
                    id=field_id
                    class="sign-off-comment"
                    rows="2"
                    placeholder="What you checked, and anything to follow up"
                    prop:value=move || comment.get()
                    on:input=move |ev| comment.set(event_target_value(&ev))
                ></textarea>
            </div>
            <Show
                when=move || confirming.get()
                fallback=|| view! {
                    <button type="submit" class="button button-primary button-small sign-off-button">"Sign off…"</button>
                }
            >
                <p class="confirm">
                    "Your name, the time and your comment are recorded with this drill and in the audit log. "
                    <button type="button" class="button button-primary button-small confirm-sign-off" disabled=move || busy.get() on:click=sign>
                        "Confirm sign-off"
                    </button>
                    " "
                    <button type="button" class="button button-secondary button-small" on:click=move |_| confirming.set(false)>
                        "Cancel"
                    </button>
                </p>
            </Show>
            {notice_view(notice)}
        </form>
    }
}
