//! Enrolment: one-time tokens (with a QR code and the exact configuration for the appliance) and
//! zero-touch serials registered ahead of delivery.

use leptos::prelude::*;
use stayopen_shared::api::{
    ClaimSerial, ClaimedSerialView, CreateEnrollmentToken, EnrollmentToken, EnrollmentTokenView,
    Page, SiteView,
};
use stayopen_shared::ids::{PracticeId, SiteId};

use crate::api;
use crate::components::{
    FeedStatus, Notice, PageHeading, Pager, PracticePicker, act, notice_view, now_utc, time_ago,
    time_exact, use_session,
};
use crate::live::{Feed, feed};
use crate::logic::{
    Interest, Route, appliance_cloud_section, appliance_enrol_command, qr_svg_path, query_string,
    token_state,
};

/// Where the installer keeps the appliance's configuration; any path works as long as the same
/// one is given to `stayopen-appliance run --config`.
const CONFIG_PATH: &str = "/etc/stayopen/appliance.toml";

#[component]
pub fn EnrolmentPage(practice: Option<PracticeId>) -> impl IntoView {
    let session = use_session();
    let chosen: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    if let Some(id) = practice {
        leptos::task::spawn_local(async move {
            if let Ok(p) = api::get::<stayopen_shared::api::PracticeSummary>(
                session,
                &format!("/api/v1/practices/{id}"),
            )
            .await
            {
                chosen.set(Some((id, p.name)));
            }
        });
    }
    // Choosing another practice changes the address, so the page can be bookmarked per practice.
    Effect::new(move |previous: Option<()>| {
        let picked = chosen.get();
        if previous.is_some()
            && let Some((id, _)) = picked
            && Some(id) != practice
        {
            let _ = window()
                .location()
                .set_hash(&Route::Enrolment(Some(id)).href());
        }
    });
    let claims = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<ClaimedSerialView>>(session, "/api/v1/claimed-serials?limit=1")
    });

    view! {
        <section id="enrolment" class="page">
            <PageHeading title=Signal::derive(|| "Enrolment".to_owned()) feed=claims />
            <div class="toolbar">
                <PracticePicker id="enrol-practice" label="Practice" chosen />
            </div>
            {move || match practice {
                None => view! {
                    <p class="muted">"Choose the practice the appliance belongs to."</p>
                }.into_any(),
                Some(id) => view! { <TokenForm practice=id /> }.into_any(),
            }}
            <ClaimedSerials practice />
        </section>
    }
}

#[component]
fn TokenForm(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let sites = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<SiteView>>(
            session,
            &format!("/api/v1/practices/{practice}/sites?limit=500"),
        )
    });
    let hours = RwSignal::new("72".to_owned());
    let uses = RwSignal::new("1".to_owned());
    let site = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let created: RwSignal<Option<EnrollmentToken>> = RwSignal::new(None);
    let pager = Pager::new();
    let tokens: Feed<Page<EnrollmentTokenView>> = feed(Interest::Nothing, 0.0, move || {
        let path = format!(
            "/api/v1/practices/{practice}/enrollment-tokens{}",
            query_string(&[
                ("limit", Some("20".into())),
                ("cursor", pager.cursor.get_untracked()),
            ])
        );
        async move { api::get::<Page<EnrollmentTokenView>>(session, &path).await }
    });

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (Ok(expires_in_hours), Ok(max_uses)) = (
            hours.get_untracked().trim().parse::<u32>(),
            uses.get_untracked().trim().parse::<u32>(),
        ) else {
            notice.set(Some(Notice::Failed(
                "Enter whole numbers for the lifetime and the number of appliances.".into(),
            )));
            return;
        };
        let body = CreateEnrollmentToken {
            expires_in_hours,
            max_uses,
            site_id: site.get_untracked().parse().ok().map(SiteId),
        };
        act(
            busy,
            notice,
            "",
            async move {
                api::post::<_, EnrollmentToken>(
                    session,
                    &format!("/api/v1/practices/{practice}/enrollment-tokens"),
                    &body,
                )
                .await
            },
            move |token| {
                created.set(Some(token));
                pager.reset();
                tokens.reload();
            },
        );
    };

    view! {
        <section class="card section" aria-labelledby="token-heading">
            <h2 id="token-heading">"Enrolment token"</h2>
            <p class="muted small">
                "The installer puts the token in the appliance's configuration; the appliance enrols on its first start and never needs it again."
            </p>
            <FeedStatus feed=sites what="the sites" />
            <form class="form form-grid" on:submit=create>
                <div class="field">
                    <label for="token-site">"Site"</label>
                    <select id="token-site" on:change=move |ev| site.set(event_target_value(&ev))>
                        <option value="">"The practice's first site"</option>
                        {move || sites.data.get().map(|page| page.items.into_iter().map(|s| view! {
                            <option value=s.id.to_string()>{s.name}</option>
                        }).collect_view())}
                    </select>
                </div>
                <div class="field">
                    <label for="token-hours">"Valid for (hours, 1–720)"</label>
                    <input id="token-hours" type="number" min="1" max="720" bind:value=hours />
                </div>
                <div class="field">
                    <label for="token-uses">"Appliances it may enrol (1–1000)"</label>
                    <input id="token-uses" type="number" min="1" max="1000" bind:value=uses />
                </div>
                <div class="form-actions">
                    <button type="submit" id="create-token" class="button button-primary" disabled=move || busy.get()>
                        "Create token"
                    </button>
                </div>
            </form>
            {notice_view(notice)}
            {move || created.get().map(|token| view! { <CreatedToken token /> })}
            <TokenList tokens pager />
        </section>
    }
}

/// The practice's tokens, newest first: how often each was used, until when it is valid, and a
/// button to revoke it (a token that leaked, or is no longer needed).
#[component]
fn TokenList(tokens: Feed<Page<EnrollmentTokenView>>, pager: Pager) -> impl IntoView {
    let session = use_session();
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let revoke = move |id: uuid::Uuid| {
        act(
            busy,
            notice,
            "Token revoked: enrolling with it is refused from now on.",
            async move {
                api::post::<_, EnrollmentTokenView>(
                    session,
                    &format!("/api/v1/enrollment-tokens/{id}/revoke"),
                    &(),
                )
                .await
            },
            move |_| tokens.reload(),
        );
    };
    let next = move || {
        tokens
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    view! {
        <h3 id="tokens-heading">"Tokens of this practice"</h3>
        {notice_view(notice)}
        <FeedStatus feed=tokens what="the enrolment tokens" />
        <table class="data-table compact" id="enrolment-tokens" aria-labelledby="tokens-heading">
            <thead>
                <tr>
                    <th scope="col">"Created"</th>
                    <th scope="col">"By"</th>
                    <th scope="col" class="num">"Used"</th>
                    <th scope="col">"Valid until"</th>
                    <th scope="col">"State"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {move || tokens.data.get().map(|page| {
                    if page.items.is_empty() {
                        return view! { <tr><td colspan="6" class="muted">"No tokens yet."</td></tr> }.into_any();
                    }
                    page.items.into_iter().map(|t| {
                        let state = token_state(&t, now_utc());
                        let id = t.id;
                        let live = state == "valid";
                        view! {
                            <tr data-token-id=t.id.to_string() data-state=state>
                                <td data-label="Created">{time_ago(Some(t.created_at))}</td>
                                <td data-label="By">{t.created_by_email.clone().unwrap_or_else(|| "–".to_owned())}</td>
                                <td class="num" data-label="Used">{format!("{} / {}", t.uses, t.max_uses)}</td>
                                <td data-label="Valid until">{time_exact(Some(t.expires_at))}</td>
                                <td data-label="State"><span class=format!("badge badge-token-{}", state.replace(' ', "-"))>{state}</span></td>
                                <td>{live.then(|| view! {
                                    <button type="button" class="button button-link danger revoke-token"
                                        disabled=move || busy.get()
                                        on:click=move |_| revoke(id)>
                                        "Revoke"
                                    </button>
                                })}</td>
                            </tr>
                        }
                    }).collect_view().into_any()
                })}
            </tbody>
        </table>
        {pager.view(next, tokens)}
    }
}

#[component]
fn CreatedToken(token: EnrollmentToken) -> impl IntoView {
    let origin = window().location().origin().unwrap_or_default();
    let section = appliance_cloud_section(&origin, &token.token);
    let command = appliance_enrol_command(CONFIG_PATH, &origin, &token.token);
    // The QR code carries the `[cloud]` section: scanned on a phone, it pastes into the appliance's
    // configuration as is.
    let qr = qrcodegen::QrCode::encode_text(&section, qrcodegen::QrCodeEcc::Medium).ok();
    let copied = RwSignal::new(false);
    let copy_text = command.clone();
    let copy = move |_| {
        let clipboard = window().navigator().clipboard();
        let _ = clipboard.write_text(&copy_text);
        copied.set(true);
    };
    view! {
        <div class="token-result" id="token-result">
            <p class="alert alert-warning">
                <strong>"Shown once. "</strong>
                "The cloud keeps only a hash of this token. It expires "
                {time_exact(Some(token.expires_at))}
                {format!(" and enrols up to {} appliance(s).", token.max_uses)}
            </p>
            <div class="token-grid">
                {qr.map(|qr| {
                    let border = 4;
                    let size = qr.size() + 2 * border;
                    let path = qr_svg_path(qr.size(), border, |x, y| qr.get_module(x, y));
                    view! {
                        <svg
                            class="qr"
                            id="token-qr"
                            viewBox=format!("0 0 {size} {size}")
                            role="img"
                            aria-label="QR code of the appliance's cloud configuration"
                            shape-rendering="crispEdges"
                        >
                            <rect width=size height=size fill="#fff" />
                            <path d=path fill="#000" />
                        </svg>
                    }
                })}
                <div>
                    <p><strong>"Token"</strong></p>
                    <p><code id="token-value" class="token-value">{token.token.clone()}</code></p>
                    <p><strong>"On the appliance"</strong>" (as root):"</p>
                    <pre class="command" id="token-command">{command}</pre>
                    <button type="button" class="button button-secondary button-small" on:click=copy>
                        {move || if copied.get() { "Copied" } else { "Copy command" }}
                    </button>
                    <p class="muted small">
                        "Or add this to the configuration file the appliance already has (see the appliance configuration guide, section [cloud]):"
                    </p>
                    <pre class="command">{section}</pre>
                </div>
            </div>
        </div>
    }
}

#[component]
fn ClaimedSerials(practice: Option<PracticeId>) -> impl IntoView {
    let session = use_session();
    let can_edit = session.capabilities().configure;
    let pager = Pager::new();
    let claims: Feed<Page<ClaimedSerialView>> = feed(Interest::Nothing, 0.0, move || {
        let path = format!(
            "/api/v1/claimed-serials{}",
            query_string(&[
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked()),
                ("practice_id", practice.map(|p| p.to_string())),
            ])
        );
        async move { api::get::<Page<ClaimedSerialView>>(session, &path).await }
    });
    let serial = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let register = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(practice) = practice else {
            notice.set(Some(Notice::Failed("Choose a practice first.".into())));
            return;
        };
        let body = ClaimSerial {
            serial: serial.get_untracked().trim().to_owned(),
            factory_key: key.get_untracked().trim().to_owned(),
            site_id: None,
        };
        act(
            busy,
            notice,
            "Serial registered: the appliance enrols itself when first connected.",
            async move {
                api::post::<_, ClaimedSerialView>(
                    session,
                    &format!("/api/v1/practices/{practice}/claimed-serials"),
                    &body,
                )
                .await
            },
            move |_| {
                serial.set(String::new());
                key.set(String::new());
                claims.reload();
            },
        );
    };
    let remove = move |serial: String| {
        act(
            busy,
            notice,
            "Serial removed.",
            async move {
                api::delete(
                    session,
                    &format!(
                        "/api/v1/claimed-serials/{}",
                        crate::logic::percent_encode(&serial)
                    ),
                )
                .await
            },
            move |_| claims.reload(),
        );
    };
    let next = move || {
        claims
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };

    view! {
        <section class="card section" aria-labelledby="claims-heading">
            <h2 id="claims-heading">"Zero-touch serials"</h2>
            <p class="muted small">
                "Register a box's serial number and factory key before it ships: it enrols into the practice by itself, nothing typed on site."
            </p>
            {(can_edit && practice.is_some()).then(|| view! {
                <form class="form form-grid" on:submit=register>
                    <div class="field">
                        <label for="claim-serial">"Serial number"</label>
                        <input id="claim-serial" type="text" bind:value=serial required />
                    </div>
                    <div class="field field-wide">
                        <label for="claim-key">"Factory key (from the vendor's manifest)"</label>
                        <input id="claim-key" type="password" autocomplete="off" bind:value=key required minlength="32" />
                    </div>
                    <div class="form-actions">
                        <button type="submit" class="button button-primary" disabled=move || busy.get()>"Register serial"</button>
                    </div>
                </form>
            })}
            {notice_view(notice)}
            <FeedStatus feed=claims what="the registered serials" />
            <table class="data-table compact">
                <thead>
                    <tr>
                        <th scope="col">"Serial"</th>
                        <th scope="col">"Practice"</th>
                        <th scope="col">"Registered"</th>
                        <th scope="col">"Enrolled"</th>
                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                    </tr>
                </thead>
                <tbody>
                    {move || claims.data.get().map(|page| page.items.into_iter().map(|c| {
                        let serial = c.serial.clone();
                        view! {
                            <tr data-serial=c.serial.clone()>
                                <th scope="row" class="serial" data-label="Serial">{c.serial.clone()}</th>
                                <td data-label="Practice"><a href=Route::Practice(c.practice_id).href()>"practice"</a></td>
                                <td data-label="Registered">{time_ago(Some(c.created_at))}</td>
                                <td data-label="Enrolled">{match c.appliance_id {
                                    Some(a) => view! { <a href=Route::Appliance(a).href()>{time_ago(c.enrolled_at)}</a> }.into_any(),
                                    None => view! { <span class="muted">"not yet"</span> }.into_any(),
                                }}</td>
                                <td>{can_edit.then(|| view! {
                                    <button type="button" class="button button-link danger" on:click=move |_| remove(serial.clone())>"Remove"</button>
                                })}</td>
                            </tr>
                        }
                    }).collect_view())}
                </tbody>
            </table>
            {move || claims.data.with(|p| p.as_ref().is_some_and(|p| p.items.is_empty())).then(|| view! {
                <p class="empty" id="claims-empty">
                    {if practice.is_none() {
                        "No serials registered. Choose a practice above to register its boxes' serials before they ship."
                    } else if can_edit {
                        "No serials registered for this practice yet. Register one with the form above."
                    } else {
                        "No serials registered for this practice."
                    }}
                </p>
            })}
            {pager.view(next, claims)}
        </section>
    }
}
