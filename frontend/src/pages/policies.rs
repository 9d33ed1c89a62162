//! The policy editor: one layer (the MSP's, a practice's or an appliance's) setting by setting, with
//! the effective result previewed by the cloud before anything is saved.
//!
//! Saving is only offered for the exact edits last previewed, so nobody pushes a policy to a fleet
//! without having seen what it changes.

use leptos::prelude::*;
use stayopen_shared::api::{ApplianceView, PolicyLayer, PolicyPreviewRequest};
use stayopen_shared::ids::{ApplianceId, PracticeId};
use stayopen_shared::policy::{EffectivePolicy, PolicyOverrides};

use crate::api::{self, Failure};
use crate::components::{
    FeedStatus, Notice, PageHeading, PracticePicker, act, notice_view, time_ago, use_session,
};
use crate::live::feed;
use crate::logic::{
    FieldError, FieldKind, Interest, POLICY_FIELDS, PolicyField, PolicyTarget, Route,
    build_overrides, field_named_in, scope_label, setting_text, value_text,
};
use crate::session::Session;

/// One setting's row in the editor.
#[derive(Debug, Clone, Copy)]
struct FieldEdit {
    field: PolicyField,
    overridden: RwSignal<bool>,
    text: RwSignal<String>,
}

fn preview_request(target: PolicyTarget, overrides: PolicyOverrides) -> PolicyPreviewRequest {
    let (practice_id, appliance_id) = match target {
        PolicyTarget::Msp => (None, None),
        PolicyTarget::Practice(id) => (Some(id), None),
        PolicyTarget::Appliance(id) => (None, Some(id)),
    };
    PolicyPreviewRequest {
        scope: target.scope(),
        practice_id,
        appliance_id,
        overrides,
    }
}

async fn preview(
    session: Session,
    target: PolicyTarget,
    overrides: PolicyOverrides,
) -> Result<EffectivePolicy, Failure> {
    api::post(
        session,
        "/api/v1/policy/preview",
        &preview_request(target, overrides),
    )
    .await
}

#[component]
pub fn PoliciesPage(target: PolicyTarget) -> impl IntoView {
    let session = use_session();
    let layer = feed(Interest::Nothing, 0.0, move || {
        api::get::<PolicyLayer>(session, &target.api_path())
    });
    // What is in force now for this layer's subject: the saved layer, previewed.
    let current = feed(Interest::Nothing, 0.0, move || async move {
        let saved = api::get::<PolicyLayer>(session, &target.api_path()).await?;
        preview(session, target, saved.overrides).await
    });
    let edits: Vec<FieldEdit> = POLICY_FIELDS
        .iter()
        .map(|field| FieldEdit {
            field: *field,
            overridden: RwSignal::new(false),
            text: RwSignal::new(String::new()),
        })
        .collect();
    let edits = StoredValue::new(edits);
    // Bumped on every edit; a preview is valid for the revision it was made for.
    let revision = RwSignal::new(0u64);
    let previewed: RwSignal<Option<(u64, EffectivePolicy)>> = RwSignal::new(None);
    let field_error: RwSignal<Option<FieldError>> = RwSignal::new(None);
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);

    let load_into_editor = move |saved: &PolicyLayer| {
        edits.with_value(|edits| {
            for edit in edits {
                match saved.overrides.get(edit.field.key) {
                    Some(value) => {
                        edit.overridden.set(true);
                        edit.text.set(json_text(edit.field.kind, value));
                    }
                    None => {
                        edit.overridden.set(false);
                        edit.text.set(String::new());
                    }
                }
            }
        });
        previewed.set(None);
        field_error.set(None);
    };
    // Fill the editor when the layer arrives (and after each save).
    Effect::new(move |_| {
        if let Some(saved) = layer.data.get() {
            load_into_editor(&saved);
        }
    });

    let rows = move || {
        edits.with_value(|edits| {
            edits
                .iter()
                .map(|e| {
                    (
                        e.field.key,
                        e.overridden.get_untracked().then(|| e.text.get_untracked()),
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    let rows_ref = move || {
        let rows = rows();
        build_overrides(
            &rows
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<Vec<_>>(),
        )
    };

    let run_preview = move |_| {
        field_error.set(None);
        notice.set(None);
        let overrides = match rows_ref() {
            Ok(o) => o,
            Err(e) => {
                field_error.set(Some(e));
                return;
            }
        };
        let at = revision.get_untracked();
        busy.set(true);
        leptos::task::spawn_local(async move {
            let result = preview(session, target, overrides).await;
            busy.set(false);
            match result {
                Ok(effective) => previewed.set(Some((at, effective))),
                Err(Failure::Status { status: 400, body }) => {
                    let message = body
                        .map(|b| b.message().to_owned())
                        .unwrap_or_else(|| "The cloud refused these settings.".to_owned());
                    match field_named_in(&message) {
                        Some(key) => field_error.set(Some(FieldError {
                            key: key.to_owned(),
                            message,
                        })),
                        None => notice.set(Some(Notice::Failed(message))),
                    }
                }
                Err(Failure::Unauthorized(_)) => {}
                Err(other) => notice.set(Some(Notice::Failed(other.to_string()))),
            }
        });
    };
    let preview_current =
        move || previewed.with(|p| p.as_ref().is_some_and(|(at, _)| *at == revision.get()));
    let save = move |_| {
        let Ok(overrides) = rows_ref() else { return };
        act(
            busy,
            notice,
            "Saved. Appliances receive the new policy within seconds.",
            async move { api::put::<_, PolicyLayer>(session, &target.api_path(), &overrides).await },
            move |saved| {
                layer.data.set(Some(saved));
                current.reload();
            },
        );
    };
    let discard = move |_| {
        if let Some(saved) = layer.data.get_untracked() {
            load_into_editor(&saved);
            revision.update(|r| *r += 1);
        }
    };

    let title = match target {
        PolicyTarget::Msp => "Policy: all practices",
        PolicyTarget::Practice(_) => "Policy: practice",
        PolicyTarget::Appliance(_) => "Policy: appliance",
    };

    let groups = ["Failover", "Drills", "Alerts", "Telemetry"];
    view! {
        <section id="policies" class="page" data-scope=scope_label(target.scope())>
            <PageHeading title=Signal::derive(move || title.to_owned()) feed=layer />
            <TargetChooser target />
            <FeedStatus feed=layer what="This policy" />
            <FeedStatus feed=current what="the policy in force" />
            {move || layer.data.get().map(|l| view! {
                <p class="muted small" id="layer-revision" data-revision=l.revision>
                    {if l.revision == 0 {
                        "This layer has never been set: every setting is inherited.".to_owned()
                    } else {
                        format!("Revision {}{}", l.revision, l.updated_by.map(|b| format!(", by {b}")).unwrap_or_default())
                    }}
                    " "
                    {l.updated_at.map(|at| time_ago(Some(at)))}
                </p>
            })}
            <form class="policy-editor" on:submit=|ev: leptos::ev::SubmitEvent| ev.prevent_default()>
                {groups.into_iter().map(|group| view! {
                    <fieldset class="card section policy-group">
                        <legend>{group}</legend>
                        <table class="data-table policy-table">
                            <thead>
                                <tr>
                                    <th scope="col">"Setting"</th>
                                    <th scope="col">"In force now"</th>
                                    <th scope="col">"Override here"</th>
                                    <th scope="col">"Value"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {edits.with_value(|edits| edits.iter().filter(|e| e.field.group == group).map(|e| {
                                    view! { <FieldRow edit=*e current=current.data revision field_error /> }
                                }).collect_view())}
                            </tbody>
                        </table>
                    </fieldset>
                }).collect_view()}
                {notice_view(notice)}
                <div class="form-actions sticky-actions">
                    <button type="button" id="policy-preview" class="button button-secondary" disabled=move || busy.get() on:click=run_preview>
                        "Preview effect"
                    </button>
                    <button
                        type="button"
                        id="policy-save"
                        class="button button-primary"
                        disabled=move || busy.get() || !preview_current()
                        title=move || if preview_current() { "Save this layer" } else { "Preview the changes first" }
                        on:click=save
                    >
                        "Save"
                    </button>
                    <button type="button" class="button button-link" on:click=discard>"Discard changes"</button>
                </div>
            </form>
            <PreviewView previewed current=current.data revision />
        </section>
    }
}

fn json_text(kind: FieldKind, value: &serde_json::Value) -> String {
    match kind {
        FieldKind::Json => serde_json::to_string(value).unwrap_or_default(),
        _ => value_text(value),
    }
}

#[component]
fn FieldRow(
    edit: FieldEdit,
    current: RwSignal<Option<EffectivePolicy>>,
    revision: RwSignal<u64>,
    field_error: RwSignal<Option<FieldError>>,
) -> impl IntoView {
    let key = edit.field.key;
    let input_id = format!("policy-{key}");
    let check_id = format!("override-{key}");
    let error_id = format!("error-{key}");
    let in_force = move || {
        current.with(|c| {
            c.as_ref().map(|c| {
                let policy = serde_json::to_value(&c.policy).unwrap_or_default();
                let value = policy
                    .get(key)
                    .map_or_else(|| "none".to_owned(), |v| setting_text(edit.field.kind, v));
                let source = c.sources.get(key).copied().map_or("default", scope_label);
                (value, source)
            })
        })
    };
    let error = move || {
        field_error.with(|e| {
            e.as_ref()
                .filter(|e| e.key == key)
                .map(|e| e.message.clone())
        })
    };
    let touched = move || revision.update(|r| *r += 1);
    let unit = match edit.field.kind {
        FieldKind::Integer(u) | FieldKind::Decimal(u) => u,
        _ => "",
    };
    let input = match edit.field.kind {
        FieldKind::Severity => view! {
            <select
                id=input_id.clone()
                disabled=move || !edit.overridden.get()
                prop:value=move || edit.text.get()
                on:change=move |ev| { edit.text.set(event_target_value(&ev)); touched(); }
            >
                <option value="info">"info"</option>
                <option value="warning">"warning"</option>
                <option value="critical">"critical"</option>
            </select>
        }
        .into_any(),
        FieldKind::Choice(options) => view! {
            <select
                id=input_id.clone()
                disabled=move || !edit.overridden.get()
                prop:value=move || edit.text.get()
                on:change=move |ev| { edit.text.set(event_target_value(&ev)); touched(); }
            >
                {options.iter().map(|o| view! { <option value=*o>{*o}</option> }).collect_view()}
            </select>
        }
        .into_any(),
        FieldKind::Json => view! {
            <textarea
                id=input_id.clone()
                rows="2"
                class="mono"
                disabled=move || !edit.overridden.get()
                prop:value=move || edit.text.get()
                on:input=move |ev| { edit.text.set(event_target_value(&ev)); touched(); }
            ></textarea>
        }
        .into_any(),
        _ => view! {
            <input
                id=input_id.clone()
                type="text"
                inputmode="decimal"
                class="input-short"
                disabled=move || !edit.overridden.get()
                prop:value=move || edit.text.get()
                on:input=move |ev| { edit.text.set(event_target_value(&ev)); touched(); }
            />
        }
        .into_any(),
    };
    view! {
        <tr data-setting=key class:has-error=move || error().is_some() class:overridden=move || edit.overridden.get()>
            <th scope="row" data-label="Setting">
                <label for=input_id.clone()>{edit.field.label}</label>
                <div class="muted small mono">{key}</div>
            </th>
            <td class="in-force" data-label="In force now">
                {move || in_force().map(|(value, source)| view! {
                    <span class="mono">{value}</span>
                    " "
                    <span class=format!("source source-{source}")>{source}</span>
                })}
            </td>
            <td data-label="Override here">
                <input
                    id=check_id.clone()
                    type="checkbox"
                    prop:checked=move || edit.overridden.get()
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        edit.overridden.set(on);
                        if on && edit.text.get_untracked().is_empty()
                            && let Some((value, _)) = in_force()
                        {
                            edit.text.set(value);
                        }
                        touched();
                    }
                />
                <label for=check_id class="visually-hidden">{format!("Override {}", edit.field.label)}</label>
            </td>
            <td data-label="Value">
                {input}
                " "
                <span class="muted small">{unit}</span>
                {move || error().map(|message| view! {
                    <p class="field-error" id=error_id.clone() role="alert">{message}</p>
                })}
            </td>
        </tr>
    }
}

#[component]
fn PreviewView(
    previewed: RwSignal<Option<(u64, EffectivePolicy)>>,
    current: RwSignal<Option<EffectivePolicy>>,
    revision: RwSignal<u64>,
) -> impl IntoView {
    move || {
        let (at, next) = previewed.get()?;
        let stale = at != revision.get();
        let before = current
            .get()
            .map(|c| serde_json::to_value(&c.policy).unwrap_or_default())
            .unwrap_or_default();
        let after = serde_json::to_value(&next.policy).unwrap_or_default();
        let changes: Vec<_> = POLICY_FIELDS
            .iter()
            .filter_map(|f| {
                let old = before.get(f.key).cloned().unwrap_or_default();
                let new = after.get(f.key).cloned().unwrap_or_default();
                (old != new).then(|| {
                    let source = next
                        .sources
                        .get(f.key)
                        .copied()
                        .map_or("default", scope_label);
                    (
                        f.label,
                        json_text(f.kind, &old),
                        json_text(f.kind, &new),
                        source,
                    )
                })
            })
            .collect();
        Some(view! {
            <section class="card section preview" id="policy-preview-result" data-stale=if stale { "true" } else { "false" } aria-live="polite">
                <h2>"Preview"</h2>
                {stale.then(|| view! { <p class="alert alert-warning">"The settings changed since this preview: preview again before saving."</p> })}
                {if changes.is_empty() {
                    view! { <p class="muted" id="preview-no-change">"Valid. No setting in force would change."</p> }.into_any()
                } else {
                    view! {
                        <p>{format!("Valid. {} setting(s) in force would change:", changes.len())}</p>
                        <table class="data-table compact">
                            <thead><tr><th scope="col">"Setting"</th><th scope="col">"Now"</th><th scope="col">"After saving"</th><th scope="col">"Set by"</th></tr></thead>
                            <tbody>
                                {changes.into_iter().map(|(label, old, new, source)| view! {
                                    <tr class="preview-change">
                                        <th scope="row" data-label="Setting">{label}</th>
                                        <td class="mono" data-label="Now">{old}</td>
                                        <td class="mono changed" data-label="After saving">{new}</td>
                                        <td data-label="Set by"><span class=format!("source source-{source}")>{source}</span></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }}
            </section>
        })
    }
}

/// Switches between the MSP layer, a practice's and an appliance's.
#[component]
fn TargetChooser(target: PolicyTarget) -> impl IntoView {
    let session = use_session();
    let chosen: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    Effect::new(move |previous: Option<()>| {
        let picked = chosen.get();
        if previous.is_some()
            && let Some((id, _)) = picked
        {
            let _ = window()
                .location()
                .set_hash(&Route::Policies(PolicyTarget::Practice(id)).href());
        }
    });
    let appliance_name = RwSignal::new(None::<String>);
    let practice_name = RwSignal::new(None::<String>);
    match target {
        PolicyTarget::Appliance(id) => {
            leptos::task::spawn_local(load_appliance(session, id, appliance_name))
        }
        PolicyTarget::Practice(id) => leptos::task::spawn_local(async move {
            if let Ok(p) = api::get::<stayopen_shared::api::PracticeSummary>(
                session,
                &format!("/api/v1/practices/{id}"),
            )
            .await
            {
                practice_name.set(Some(p.name));
            }
        }),
        PolicyTarget::Msp => {}
    }
    let tab = |href: String, label: &'static str, active: bool| {
        view! {
            <a href=href class="tab" class:active=active aria-current=active.then_some("page")>{label}</a>
        }
    };
    view! {
        <div class="tabs" aria-label="Policy layer">
            {tab(Route::Policies(PolicyTarget::Msp).href(), "All practices (MSP)", target == PolicyTarget::Msp)}
            {tab(Route::Policies(target).href(), "This practice or appliance", target != PolicyTarget::Msp)}
        </div>
        <div class="toolbar">
            {match target {
                PolicyTarget::Msp => view! {
                    <p class="muted small">"Settings here apply to every practice and appliance unless a practice or appliance overrides them."</p>
                }.into_any(),
                PolicyTarget::Practice(id) => view! {
                    <p class="small">
                        "Practice: "
                        <a href=Route::Practice(id).href()>{move || practice_name.get().unwrap_or_else(|| id.to_string())}</a>
                        ". Overrides the MSP's settings for its appliances."
                    </p>
                }.into_any(),
                PolicyTarget::Appliance(id) => view! {
                    <p class="small">
                        "Appliance: "
                        <a href=Route::Appliance(id).href() class="serial">{move || appliance_name.get().unwrap_or_else(|| id.to_string())}</a>
                        ". Overrides its practice's and the MSP's settings."
                    </p>
                }.into_any(),
            }}
            <PracticePicker id="policy-practice" label="Edit a practice's policy" chosen />
        </div>
    }
}

async fn load_appliance(session: Session, id: ApplianceId, name: RwSignal<Option<String>>) {
    if let Ok(a) = api::get::<ApplianceView>(session, &format!("/api/v1/appliances/{id}")).await {
        name.set(Some(a.serial));
    }
}
