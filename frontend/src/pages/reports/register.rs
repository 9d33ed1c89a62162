//! The practice's critical applications register (HIPAA 164.308(a)(7)(ii)(E), applications and
//! data criticality analysis): each application, its tier, the endpoints the appliance checks it
//! by, its owner and a note. MSP users and the practice's compliance officer edit it; every change
//! goes into the audit log on the server.

use leptos::prelude::*;
use stayopen_shared::compliance::{AppTier, CriticalAppEntry};
use stayopen_shared::ids::PracticeId;
use uuid::Uuid;

use crate::api;
use crate::components::{FeedStatus, Notice, act, loading, notice_view, time_exact, use_session};
use crate::live::{Feed, feed};
use crate::logic::{ENDPOINT_KINDS, Interest, endpoint_row, register_input};

/// The register allows this many endpoints per application.
const MAX_ENDPOINTS: usize = 5;

#[component]
pub fn Register(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let can_edit = session.capabilities().edit_register;
    let entries: Feed<Vec<CriticalAppEntry>> = feed(Interest::Nothing, 0.0, move || {
        api::get::<Vec<CriticalAppEntry>>(
            session,
            &format!("/api/v1/practices/{practice}/critical-apps"),
        )
    });
    // The entry being edited; `None` with the form open adds a new one.
    let editing = RwSignal::new(None::<CriticalAppEntry>);
    let form_open = RwSignal::new(false);
    let generation = RwSignal::new(0u32);
    let open_form = move |entry: Option<CriticalAppEntry>| {
        editing.set(entry);
        generation.update(|g| *g += 1);
        form_open.set(true);
    };
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let deleting = RwSignal::new(None::<Uuid>);
    let delete = move |id: Uuid| {
        act(
            busy,
            notice,
            "Removed from the register.",
            api::delete(session, &format!("/api/v1/critical-apps/{id}")),
            move |_| {
                deleting.set(None);
                entries.reload();
            },
        );
    };

    view! {
        <section class="card section" id="report-register" aria-labelledby="register-heading">
            <div class="section-heading">
                <h2 id="register-heading">"Critical applications"</h2>
                {can_edit.then(|| view! {
                    <button type="button" id="register-add" class="button button-primary button-small"
                        on:click=move |_| open_form(None)>
                        "Add an application"
                    </button>
                })}
            </div>
            <p class="muted small">
                "The applications the practice cannot work without, and how the appliance checks each one through every uplink and during drills. "
                "Tier 1: patient care stops without it. Tier 2: needed the same day. Tier 3: can wait."
            </p>
            {notice_view(notice)}
            {move || (form_open.get() && can_edit).then(|| {
                let _ = generation.get();
                view! {
                    <EntryForm
                        practice
                        entry=editing.get_untracked()
                        on_saved=move || { form_open.set(false); entries.reload(); }
                        on_cancel=move || form_open.set(false)
                    />
                }
            })}
            <FeedStatus feed=entries what="the register" />
            {loading(entries)}
            {move || entries.data.get().map(|list| {
                if list.is_empty() {
                    return view! { <p class="muted" id="register-empty">"No critical applications registered yet."</p> }.into_any();
                }
                view! {
                    <div class="table-wrap">
                        <table class="data-table" id="register-table">
                            <thead>
                                <tr>
                                    <th scope="col">"Application"</th>
                                    <th scope="col">"Tier"</th>
                                    <th scope="col">"Checked by"</th>
                                    <th scope="col">"Owner"</th>
                                    <th scope="col">"Note"</th>
                                    <th scope="col">"Last changed"</th>
                                    {can_edit.then(|| view! { <th scope="col"><span class="visually-hidden">"Actions"</span></th> })}
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|e| {
                                    let id = e.id;
                                    let for_edit = e.clone();
                                    view! {
                                        <tr data-app-id=id.to_string() data-app-name=e.name.clone()>
                                            <th scope="row" data-label="Application">{e.name.clone()}</th>
                                            <td data-label="Tier"><span class=format!("badge badge-{}", e.tier.as_str())>{tier_short(e.tier)}</span></td>
                                            <td data-label="Checked by">
                                                <ul class="plain-list endpoints">
                                                    {e.endpoints.iter().map(|ep| view! { <li class="mono small">{ep.describe()}</li> }).collect_view()}
                                                </ul>
                                            </td>
                                            <td data-label="Owner">{e.owner.clone()}</td>
                                            <td class="small" data-label="Note">{e.note.clone()}</td>
                                            <td class="small" data-label="Last changed">
                                                {time_exact(Some(e.updated_at))}
                                                {e.updated_by.clone().map(|by| view! { <div class="muted">{by}</div> })}
                                            </td>
                                            {can_edit.then(|| view! {
                                                <td class="nowrap">
                                                    <button type="button" class="button button-secondary button-small edit-app"
                                                        on:click=move |_| open_form(Some(for_edit.clone()))>"Edit"</button>
                                                    " "
                                                    <Show when=move || deleting.get() == Some(id)
                                                        fallback=move || view! {
                                                            <button type="button" class="button button-secondary button-small delete-app"
                                                                on:click=move |_| deleting.set(Some(id))>"Delete"</button>
                                                        }>
                                                        <button type="button" class="button button-link danger confirm-delete-app"
                                                            disabled=move || busy.get() on:click=move |_| delete(id)>"Confirm delete"</button>
                                                        " "
                                                        <button type="button" class="button button-link" on:click=move |_| deleting.set(None)>"Keep"</button>
                                                    </Show>
                                                </td>
                                            })}
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            })}
        </section>
    }
}

/// One endpoint row of the editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EndpointRow {
    key: usize,
    kind: RwSignal<String>,
    text: RwSignal<String>,
}

fn tier_short(tier: AppTier) -> &'static str {
    match tier {
        AppTier::Tier1 => "Tier 1",
        AppTier::Tier2 => "Tier 2",
        AppTier::Tier3 => "Tier 3",
    }
}

/// Adds an application (`entry` is `None`) or edits one. Errors, the form's own or the server's,
/// are shown next to it and nothing typed is lost.
#[component]
fn EntryForm(
    practice: PracticeId,
    entry: Option<CriticalAppEntry>,
    on_saved: impl Fn() + Copy + Send + Sync + 'static,
    on_cancel: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let session = use_session();
    let editing = entry.as_ref().map(|e| e.id);
    let name = RwSignal::new(entry.as_ref().map(|e| e.name.clone()).unwrap_or_default());
    let tier = RwSignal::new(
        entry
            .as_ref()
            .map_or(AppTier::Tier1, |e| e.tier)
            .as_str()
            .to_owned(),
    );
    let owner = RwSignal::new(entry.as_ref().map(|e| e.owner.clone()).unwrap_or_default());
    let note = RwSignal::new(entry.as_ref().map(|e| e.note.clone()).unwrap_or_default());
    let mut rows: Vec<(String, String)> = entry
        .as_ref()
        .map(|e| e.endpoints.iter().map(endpoint_row).collect())
        .unwrap_or_default();
    if rows.is_empty() {
        rows.push(("https".into(), String::new()));
    }
    // Each row keeps its own signals, so typing in one does not redraw the others (nor lose focus).
    let next_key = StoredValue::new(rows.len());
    let endpoints: RwSignal<Vec<EndpointRow>> = RwSignal::new(
        rows.into_iter()
            .enumerate()
            .map(|(key, (kind, text))| EndpointRow {
                key,
                kind: RwSignal::new(kind),
                text: RwSignal::new(text),
            })
            .collect(),
    );
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);

    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let input = match register_input(
            &name.get_untracked(),
            &tier.get_untracked(),
            &endpoints.with_untracked(|rows| {
                rows.iter()
                    .map(|r| (r.kind.get_untracked(), r.text.get_untracked()))
                    .collect::<Vec<_>>()
            }),
            &owner.get_untracked(),
            &note.get_untracked(),
        ) {
            Ok(input) => input,
            Err(problem) => {
                notice.set(Some(Notice::Failed(problem)));
                return;
            }
        };
        let call = match editing {
            Some(id) => api::put::<_, CriticalAppEntry>(
                session,
                &format!("/api/v1/critical-apps/{id}"),
                &input,
            ),
            None => api::post::<_, CriticalAppEntry>(
                session,
                &format!("/api/v1/practices/{practice}/critical-apps"),
                &input,
            ),
        };
        act(busy, notice, "", call, move |_| on_saved());
    };
    let endpoint_row_view = move |row: EndpointRow| {
        let EndpointRow { key, kind, text } = row;
        let placeholder = move || {
            ENDPOINT_KINDS
                .iter()
                .find(|(k, _, _)| kind.with(|kind| *k == kind))
                .map_or("", |(_, _, p)| *p)
        };
        view! {
            <div class="endpoint-row" data-key=key.to_string()>
                <select
                    id=format!("app-endpoint-kind-{key}")
                    aria-label="Endpoint kind"
                    on:change=move |ev| kind.set(event_target_value(&ev))
                >
                    {ENDPOINT_KINDS.iter().map(|(k, label, _)| view! {
                        <option value=*k selected=kind.get_untracked() == *k>{*label}</option>
                    }).collect_view()}
                </select>
                <input
                    type="text"
                    id=format!("app-endpoint-{key}")
                    aria-label="Endpoint"
                    placeholder=placeholder
                    bind:value=text
                />
                <button type="button" class="button button-link remove-endpoint"
                    on:click=move |_| endpoints.update(|rows| {
                        if rows.len() > 1 {
                            rows.retain(|r| r.key != key);
                        }
                    })>
                    "Remove"
                </button>
            </div>
        }
    };

    view! {
        <form class="register-form card-inset" id="register-form" on:submit=save>
            <h3 class="small-heading">{if editing.is_some() { "Edit the application" } else { "Add an application" }}</h3>
            <div class="form-grid">
                <div class="field">
                    <label for="app-name">"Name"</label>
                    <input id="app-name" type="text" required placeholder="EHR" bind:value=name />
                </div>
                <div class="field">
                    <label for="app-tier">"Tier"</label>
                    <select id="app-tier" on:change=move |ev| tier.set(event_target_value(&ev))>
                        {[AppTier::Tier1, AppTier::Tier2, AppTier::Tier3].iter().map(|t| {
                            let selected = tier.get_untracked() == t.as_str();
                            view! { <option value=t.as_str() selected=selected>{t.label()}</option> }
                        }).collect_view()}
                    </select>
                </div>
                <div class="field">
                    <label for="app-owner">"Owner"</label>
                    <input id="app-owner" type="text" placeholder="Who answers for it" bind:value=owner />
                </div>
            </div>
            <fieldset class="endpoints-fieldset">
                <legend>"Endpoints (an HTTPS URL, a TCP host:port or a DNS name)"</legend>
                <For each=move || endpoints.get() key=|r| r.key children=endpoint_row_view />
                <button type="button" class="button button-secondary button-small" id="app-endpoint-add"
                    disabled=move || endpoints.with(|e| e.len() >= MAX_ENDPOINTS)
                    on:click=move |_| {
                        let key = next_key.get_value();
                        next_key.set_value(key + 1);
                        endpoints.update(|rows| rows.push(EndpointRow {
                            key,
                            kind: RwSignal::new("https".into()),
                            text: RwSignal::new(String::new()),
                        }));
                    }>
                    "Add an endpoint"
                </button>
            </fieldset>
            <div class="field">
                <label for="app-note">"Note"</label>
                <textarea id="app-note" rows="2" prop:value=move || note.get()
                    on:input=move |ev| note.set(event_target_value(&ev))></textarea>
            </div>
            <div class="form-actions">
                <button type="submit" id="app-save" class="button button-primary" disabled=move || busy.get()>
                    {if editing.is_some() { "Save changes" } else { "Add to the register" }}
                </button>
                <button type="button" class="button button-secondary" on:click=move |_| on_cancel()>"Cancel"</button>
            </div>
            <div id="register-error">{notice_view(notice)}</div>
        </form>
    }
}
