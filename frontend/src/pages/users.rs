//! Access: the MSP's users and roles, and API tokens (whose secret is shown once).

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use stayopen_shared::api::{
    ApiTokenScope, ApiTokenView, CreateApiToken, CreateUser, CreatedApiToken, Page, Role,
    UpdateUser, UserView,
};
use stayopen_shared::ids::{PracticeId, UserId};

use crate::api;
use crate::components::{
    FeedStatus, Notice, PageHeading, Pager, PracticePicker, act, notice_view, time_ago, time_exact,
    use_session,
};
use crate::live::{Feed, feed};
use crate::logic::{Interest, parse_date, query_string};

fn end_of_day(date: &str) -> Option<DateTime<Utc>> {
    parse_date(date)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|d| DateTime::<Utc>::from_naive_utc_and_offset(d, Utc))
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let session = use_session();
    let pager = Pager::new();
    let users: Feed<Page<UserView>> = feed(Interest::Nothing, 0.0, move || {
        let path = format!(
            "/api/v1/users{}",
            query_string(&[
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked())
            ])
        );
        async move { api::get::<Page<UserView>>(session, &path).await }
    });
    let next = move || {
        users
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let me = session.user.with_untracked(|u| u.as_ref().map(|u| u.id));
    let editing = RwSignal::new(None::<UserId>);
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);

    let update = move |id: UserId, change: UpdateUser, done: &'static str| {
        act(
            busy,
            notice,
            done,
            async move {
                api::patch::<_, UserView>(session, &format!("/api/v1/users/{id}"), &change).await
            },
            move |_| users.reload(),
        );
    };
    let remove = move |id: UserId| {
        act(
            busy,
            notice,
            "User deleted.",
            async move { api::delete(session, &format!("/api/v1/users/{id}")).await },
            move |_| users.reload(),
        );
    };

    view! {
        <section id="users" class="page">
            <PageHeading title=Signal::derive(|| "Users".to_owned()) feed=users />
            <CreateUserForm on_created=move || users.reload() />
            {notice_view(notice)}
            <FeedStatus feed=users what="the users" />
            <div class="card table-card">
                <table class="data-table">
                    <thead>
                        <tr>
                            <th scope="col">"User"</th>
                            <th scope="col">"Role"</th>
                            <th scope="col">"Practices"</th>
                            <th scope="col">"Second factor"</th>
                            <th scope="col">"Access until"</th>
                            <th scope="col">"State"</th>
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || users.data.get().map(|page| page.items.into_iter().map(|u| {
                            let id = u.id;
                            let is_me = Some(id) == me;
                            let role_id = format!("role-{id}");
                            let disabled = u.disabled;
                            view! {
                                <tr data-user=u.email.clone() class:muted-row=disabled>
                                    <th scope="row" data-label="User">
                                        {u.email.clone()}
                                        <div class="muted small">{u.display_name.clone()}</div>
                                    </th>
                                    <td data-label="Role">
                                        <label for=role_id.clone() class="visually-hidden">{format!("Role of {}", u.email)}</label>
                                        <select
                                            id=role_id
                                            disabled=is_me
                                            on:change=move |ev| {
                                                if let Some(role) = Role::parse(&event_target_value(&ev)) {
                                                    update(id, UpdateUser { role: Some(role), ..UpdateUser::default() }, "Role changed.");
                                                }
                                            }
                                        >
                                            {Role::ALL.iter().map(|r| view! {
                                                <option value=r.as_str() selected=*r == u.role>{r.label()}</option>
                                            }).collect_view()}
                                        </select>
                                    </td>
                                    <td class="user-practices" data-label="Practices">
                                        {if u.role.is_msp_wide() {
                                            view! { <span class="muted">"all"</span> }.into_any()
                                        } else {
                                            view! { <UserPractices user=u.clone() editing update /> }.into_any()
                                        }}
                                    </td>
                                    <td data-label="Second factor">{if u.totp_enabled { "on" } else { "off" }}</td>
                                    <td data-label="Access until">{time_exact(u.access_expires_at)}</td>
                                    <td data-label="State">{if disabled { "disabled" } else { "active" }}</td>
                                    <td class="row-actions">
                                        {(!is_me).then(|| view! {
                                            <button type="button" class="button button-link" on:click=move |_| {
                                                update(id, UpdateUser { disabled: Some(!disabled), ..UpdateUser::default() },
                                                    if disabled { "User enabled." } else { "User disabled." });
                                            }>
                                                {if disabled { "Enable" } else { "Disable" }}
                                            </button>
                                            <button type="button" class="button button-link danger" on:click=move |_| remove(id)>"Delete"</button>
                                        })}
                                    </td>
                                </tr>
                            }
                        }).collect_view())}
                    </tbody>
                </table>
            </div>
            {pager.view(next, users)}
        </section>
    }
}

/// The practices a practice-scoped user may see: their names, and (one user at a time) an editor
/// that removes one or adds another found by name.
#[component]
fn UserPractices<F>(user: UserView, editing: RwSignal<Option<UserId>>, update: F) -> impl IntoView
where
    F: Fn(UserId, UpdateUser, &'static str) + Copy + Send + Sync + 'static,
{
    let id = user.id;
    let edit_label = format!("Edit the practices of {}", user.email);
    let practices = StoredValue::new(user.practices);
    let ids = move || practices.with_value(|p| p.iter().map(|p| p.id).collect::<Vec<_>>());
    let adding: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    let open = move || editing.get() == Some(id);
    let set_practices = move |practice_ids: Vec<PracticeId>, done: &'static str| {
        update(
            id,
            UpdateUser {
                practice_ids: Some(practice_ids),
                ..UpdateUser::default()
            },
            done,
        );
    };
    let add = move |_| {
        if let Some((practice, _)) = adding.get_untracked() {
            let mut chosen = ids();
            if !chosen.contains(&practice) {
                chosen.push(practice);
                set_practices(chosen, "Practice added.");
            }
            adding.set(None);
        }
    };
    let summary = move || {
        practices.with_value(|p| match p.len() {
            0 => "none".to_owned(),
            1..=2 => p
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            n => format!("{}, {} and {} more", p[0].name, p[1].name, n - 2),
        })
    };

    view! {
        <Show
            when=open
            fallback=move || view! {
                <span class="practice-names">{summary}</span>
                " "
                <button
                    type="button"
                    class="button button-link edit-practices"
                    aria-label=edit_label.clone()
                    on:click=move |_| editing.set(Some(id))
                >
                    "Edit"
                </button>
            }
        >
            <div class="practices-editor">
                <ul class="plain-list chips">
                    {practices.get_value().into_iter().map(|p| {
                        let practice = p.id;
                        view! {
                            <li class="chip" data-practice=practice.to_string()>
                                {p.name.clone()}
                                " "
                                <button
                                    type="button"
                                    class="button button-link danger"
                                    aria-label=format!("Remove {}", p.name)
                                    on:click=move |_| {
                                        let rest = ids().into_iter().filter(|x| *x != practice).collect();
                                        set_practices(rest, "Practice removed.");
                                    }
                                >
                                    "×"
                                </button>
                            </li>
                        }
                    }).collect_view()}
                </ul>
                <PracticePicker id="edit-user-practice" label="Add a practice" chosen=adding />
                <div class="form-actions">
                    <button
                        type="button"
                        class="button button-secondary button-small add-practice"
                        disabled=move || adding.with(Option::is_none)
                        on:click=add
                    >
                        "Add"
                    </button>
                    <button type="button" class="button button-link" on:click=move |_| editing.set(None)>
                        "Done"
                    </button>
                </div>
            </div>
        </Show>
    }
}

#[component]
fn CreateUserForm(on_created: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let session = use_session();
    let email = RwSignal::new(String::new());
    let name = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let role = RwSignal::new(Role::MspTechnician.as_str().to_owned());
    let practice: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    let until = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let scoped = move || Role::parse(&role.get()).is_some_and(|r| !r.is_msp_wide());
    let auditor = move || role.get() == Role::Auditor.as_str();

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(role_value) = Role::parse(&role.get_untracked()) else {
            return;
        };
        let practice_ids = if role_value.is_msp_wide() {
            vec![]
        } else {
            practice
                .get_untracked()
                .map(|(id, _)| id)
                .into_iter()
                .collect()
        };
        let body = CreateUser {
            email: email.get_untracked().trim().to_owned(),
            display_name: name.get_untracked().trim().to_owned(),
            password: password.get_untracked(),
            role: role_value,
            practice_ids,
            access_expires_at: (role_value == Role::Auditor)
                .then(|| end_of_day(&until.get_untracked()))
                .flatten(),
        };
        act(
            busy,
            notice,
            "User created.",
            async move { api::post::<_, UserView>(session, "/api/v1/users", &body).await },
            move |_| {
                email.set(String::new());
                name.set(String::new());
                password.set(String::new());
                on_created();
            },
        );
    };

    view! {
        <details class="card section">
            <summary class="summary-button">"Add a user"</summary>
            <form class="form form-grid" on:submit=create>
                <div class="field">
                    <label for="new-email">"Email"</label>
                    <input id="new-email" type="email" autocomplete="off" bind:value=email required />
                </div>
                <div class="field">
                    <label for="new-name">"Name"</label>
                    <input id="new-name" type="text" bind:value=name />
                </div>
                <div class="field">
                    <label for="new-password">"Initial password"</label>
                    <input id="new-password" type="password" autocomplete="new-password" bind:value=password required />
                </div>
                <div class="field">
                    <label for="new-role">"Role"</label>
                    <select id="new-role" on:change=move |ev| role.set(event_target_value(&ev))>
                        {Role::ALL.iter().map(|r| view! {
                            <option value=r.as_str() selected=*r == Role::MspTechnician>{r.label()}</option>
                        }).collect_view()}
                    </select>
                </div>
                <Show when=scoped>
                    <PracticePicker id="new-practice" label="Practice" chosen=practice />
                </Show>
                <Show when=auditor>
                    <div class="field">
                        <label for="new-until">"Access until"</label>
                        <input id="new-until" type="date" bind:value=until required />
                    </div>
                </Show>
                <div class="form-actions">
                    <button type="submit" class="button button-primary" disabled=move || busy.get()>"Create user"</button>
                </div>
            </form>
            {notice_view(notice)}
        </details>
    }
}

#[component]
pub fn ApiTokensPage() -> impl IntoView {
    let session = use_session();
    let pager = Pager::new();
    let tokens: Feed<Page<ApiTokenView>> = feed(Interest::Nothing, 0.0, move || {
        let path = format!(
            "/api/v1/api-tokens{}",
            query_string(&[
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked())
            ])
        );
        async move { api::get::<Page<ApiTokenView>>(session, &path).await }
    });
    let next = move || {
        tokens
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    let name = RwSignal::new(String::new());
    let scope = RwSignal::new("read".to_owned());
    let days = RwSignal::new("90".to_owned());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let secret: RwSignal<Option<String>> = RwSignal::new(None);

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = CreateApiToken {
            name: name.get_untracked().trim().to_owned(),
            scope: if scope.get_untracked() == "operate" {
                ApiTokenScope::Operate
            } else {
                ApiTokenScope::Read
            },
            expires_in_days: days.get_untracked().trim().parse().ok(),
        };
        act(
            busy,
            notice,
            "",
            async move { api::post::<_, CreatedApiToken>(session, "/api/v1/api-tokens", &body).await },
            move |created| {
                secret.set(Some(created.token));
                name.set(String::new());
                tokens.reload();
            },
        );
    };
    let revoke = move |id: uuid::Uuid| {
        act(
            busy,
            notice,
            "Token revoked.",
            async move { api::delete(session, &format!("/api/v1/api-tokens/{id}")).await },
            move |_| tokens.reload(),
        );
    };

    view! {
        <section id="api-tokens" class="page">
            <PageHeading title=Signal::derive(|| "API tokens".to_owned()) feed=tokens />
            <section class="card section">
                <h2>"New token"</h2>
                <p class="muted small">"For PSA and RMM integrations. A token never manages users or tokens."</p>
                <form class="form form-grid" on:submit=create>
                    <div class="field">
                        <label for="token-name">"Name"</label>
                        <input id="token-name" type="text" bind:value=name required />
                    </div>
                    <div class="field">
                        <label for="token-scope">"May"</label>
                        <select id="token-scope" on:change=move |ev| scope.set(event_target_value(&ev))>
                            <option value="read">"Read everything"</option>
                            <option value="operate">"Read and operate appliances"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for="token-days">"Expires after (days; empty: never)"</label>
                        <input id="token-days" type="number" min="1" bind:value=days />
                    </div>
                    <div class="form-actions">
                        <button type="submit" class="button button-primary" disabled=move || busy.get()>"Create token"</button>
                    </div>
                </form>
                {move || secret.get().map(|s| view! {
                    <div class="alert alert-warning" id="api-token-secret">
                        <strong>"Copy this token now: it is shown only once. "</strong>
                        <code class="token-value">{s}</code>
                        " "
                        <button type="button" class="button button-link" on:click=move |_| secret.set(None)>"Done"</button>
                    </div>
                })}
                {notice_view(notice)}
            </section>
            <FeedStatus feed=tokens what="the API tokens" />
            <div class="card table-card">
                <table class="data-table">
                    <thead>
                        <tr>
                            <th scope="col">"Name"</th>
                            <th scope="col">"Scope"</th>
                            <th scope="col">"Created"</th>
                            <th scope="col">"Expires"</th>
                            <th scope="col">"Last used"</th>
                            <th scope="col">"State"</th>
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || tokens.data.get().map(|page| page.items.into_iter().map(|t| {
                            let id = t.id;
                            view! {
                                <tr class:muted-row=t.revoked>
                                    <th scope="row" data-label="Name">{t.name.clone()}</th>
                                    <td data-label="Scope">{match t.scope { ApiTokenScope::Read => "read", ApiTokenScope::Operate => "operate" }}</td>
                                    <td data-label="Created">{time_ago(Some(t.created_at))}</td>
                                    <td data-label="Expires">{time_exact(t.expires_at)}</td>
                                    <td data-label="Last used">{time_ago(t.last_used_at)}</td>
                                    <td data-label="State">{if t.revoked { "revoked" } else { "active" }}</td>
                                    <td>{(!t.revoked).then(|| view! {
                                        <button type="button" class="button button-link danger" on:click=move |_| revoke(id)>"Revoke"</button>
                                    })}</td>
                                </tr>
                            }
                        }).collect_view())}
                    </tbody>
                </table>
            </div>
            {pager.view(next, tokens)}
        </section>
    }
}
