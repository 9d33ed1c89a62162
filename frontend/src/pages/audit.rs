//! The MSP's tamper-evident audit log: who changed what and when, with the values before and after.

use leptos::prelude::*;
use stayopen_shared::api::{AuditEntry, Page};

use crate::api;
use crate::components::{FeedStatus, PageHeading, Pager, loading, time_exact, use_session};
use crate::live::{Feed, feed};
use crate::logic::{Interest, query_string};

#[component]
pub fn AuditPage() -> impl IntoView {
    let session = use_session();
    let action = RwSignal::new(String::new());
    let target = RwSignal::new(String::new());
    let pager = Pager::new();
    let entries: Feed<Page<AuditEntry>> = feed(Interest::Nothing, 0.0, move || {
        let path = format!(
            "/api/v1/audit-log{}",
            query_string(&[
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked()),
                ("action", Some(action.get_untracked().trim().to_owned())),
                ("target_id", Some(target.get_untracked().trim().to_owned())),
            ])
        );
        async move { api::get::<Page<AuditEntry>>(session, &path).await }
    });
    let next = move || {
        entries
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        pager.reset();
        entries.reload();
    };
    let json = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
    };

    view! {
        <section id="audit" class="page">
            <PageHeading title=Signal::derive(|| "Audit log".to_owned()) feed=entries />
            <form class="toolbar" on:submit=apply>
                <div class="field field-inline">
                    <label for="audit-action">"Action"</label>
                    <input id="audit-action" type="text" placeholder="e.g. policy.update" bind:value=action />
                </div>
                <div class="field field-inline">
                    <label for="audit-target">"Target"</label>
                    <input id="audit-target" type="text" placeholder="Serial, e-mail, practice or id" bind:value=target />
                </div>
                <button type="submit" class="button button-secondary button-small">"Filter"</button>
            </form>
            <FeedStatus feed=entries what="the audit log" />
            {loading(entries)}
            <div class="card table-card">
                <table class="data-table compact" id="audit-table">
                    <thead>
                        <tr>
                            <th scope="col" class="num">"#"</th>
                            <th scope="col">"When"</th>
                            <th scope="col">"Who"</th>
                            <th scope="col">"Action"</th>
                            <th scope="col">"Target"</th>
                            <th scope="col">"Change"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || entries.data.get().map(|page| page.items.into_iter().map(|e| {
                            let before = json(&e.before);
                            let after = json(&e.after);
                            let has_change = before.is_some() || after.is_some();
                            view! {
                                <tr data-action=e.action.clone()>
                                    <td class="num" data-label="#">{e.seq}</td>
                                    <td class="nowrap" data-label="When">{time_exact(Some(e.at))}</td>
                                    <td data-label="Who" title=e.actor.clone()>{if e.actor_name.is_empty() { e.actor.clone() } else { e.actor_name.clone() }}</td>
                                    <td class="mono" data-label="Action">{e.action.clone()}</td>
                                    <td class="small" data-label="Target" title=e.target_id.clone()>
                                        {e.target_type.replace('_', " ")}" "
                                        {if e.target_name.is_empty() {
                                            view! { <span class="mono muted">{e.target_id.clone()}</span> }.into_any()
                                        } else {
                                            view! { <strong>{e.target_name.clone()}</strong> }.into_any()
                                        }}
                                    </td>
                                    <td data-label="Change">
                                        {has_change.then(|| view! {
                                            <details>
                                                <summary>"Before / after"</summary>
                                                <div class="diff">
                                                    <pre class="json">{before.unwrap_or_else(|| "–".into())}</pre>
                                                    <pre class="json">{after.unwrap_or_else(|| "–".into())}</pre>
                                                </div>
                                            </details>
                                        })}
                                    </td>
                                </tr>
                            }
                        }).collect_view())}
                    </tbody>
                </table>
            </div>
            {pager.view(next, entries)}
        </section>
    }
}
