//! Notifications: channels (webhook or e-mail), the rules routing alerts to them, and the deliveries.

use leptos::prelude::*;
use stayopen_shared::alerts::{
    AlertKind, ChannelKind, ChannelView, CreateChannel, CreateRoutingRule, CreatedChannel,
    NotificationView, RouteDuring, RoutingRuleView, Severity,
};
use stayopen_shared::api::{Page, UserView};
use stayopen_shared::ids::PracticeId;

use crate::api;
use crate::components::{
    FeedStatus, Notice, PageHeading, Pager, PracticePicker, act, notice_view, time_ago, use_session,
};
use crate::live::{Feed, feed};
use crate::logic::{Interest, Route, alert_kind_label, duration_text, query_string};

#[component]
pub fn NotificationsPage() -> impl IntoView {
    let session = use_session();
    let channels: Feed<Page<ChannelView>> = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<ChannelView>>(session, "/api/v1/notification-channels?limit=500")
    });
    let rules: Feed<Page<RoutingRuleView>> = feed(Interest::Nothing, 0.0, move || {
        api::get::<Page<RoutingRuleView>>(session, "/api/v1/routing-rules?limit=500")
    });
    view! {
        <section id="notifications" class="page">
            <PageHeading title=Signal::derive(|| "Notifications".to_owned()) feed=channels />
            <div class="columns">
                <Channels channels />
                <Rules rules channels />
            </div>
            <Deliveries channels />
        </section>
    }
}

fn channel_name(channels: &Option<Page<ChannelView>>, id: uuid::Uuid) -> String {
    channels
        .as_ref()
        .and_then(|p| p.items.iter().find(|c| c.id == id))
        .map_or_else(|| "deleted channel".to_owned(), |c| c.name.clone())
}

#[component]
fn Channels(channels: Feed<Page<ChannelView>>) -> impl IntoView {
    let session = use_session();
    let name = RwSignal::new(String::new());
    let kind = RwSignal::new("webhook".to_owned());
    let url = RwSignal::new(String::new());
    let recipients = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let secret: RwSignal<Option<String>> = RwSignal::new(None);
    let is_webhook = move || kind.get() == "webhook";
    // Users to mail at their current address. Only those who may list users (MSP admins) get the
    // choice; others name addresses.
    let team: RwSignal<Vec<(uuid::Uuid, String)>> = RwSignal::new(Vec::new());
    let chosen_users: RwSignal<Vec<uuid::Uuid>> = RwSignal::new(Vec::new());
    leptos::task::spawn_local(async move {
        if let Ok(page) = api::get::<Page<UserView>>(session, "/api/v1/users?limit=500").await {
            team.set(
                page.items
                    .into_iter()
                    .filter(|u| !u.disabled)
                    .map(|u| (u.id.0, u.email))
                    .collect(),
            );
        }
    });

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let webhook = kind.get_untracked() == "webhook";
        let body = CreateChannel {
            name: name.get_untracked().trim().to_owned(),
            kind: if webhook {
                ChannelKind::Webhook
            } else {
                ChannelKind::Email
            },
            url: webhook.then(|| url.get_untracked().trim().to_owned()),
            recipients: if webhook {
                vec![]
            } else {
                recipients
                    .get_untracked()
                    .split([',', ';', ' ', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            },
            user_ids: if webhook {
                vec![]
            } else {
                chosen_users.get_untracked()
            },
        };
        act(
            busy,
            notice,
            "Channel created.",
            async move {
                api::post::<_, CreatedChannel>(session, "/api/v1/notification-channels", &body)
                    .await
            },
            move |created| {
                secret.set(created.signing_secret);
                name.set(String::new());
                chosen_users.set(Vec::new());
                channels.reload();
            },
        );
    };
    let remove = move |id: uuid::Uuid| {
        act(
            busy,
            notice,
            "Channel deleted.",
            async move { api::delete(session, &format!("/api/v1/notification-channels/{id}")).await },
            move |_| channels.reload(),
        );
    };

    view! {
        <section class="card section" aria-labelledby="channels-heading">
            <h2 id="channels-heading">"Channels"</h2>
            <FeedStatus feed=channels what="the channels" />
            <ul class="plain-list" id="channel-list">
                {move || channels.data.get().map(|page| {
                    if page.items.is_empty() {
                        return view! { <li class="muted">"No channels: alerts notify nobody."</li> }.into_any();
                    }
                    page.items.into_iter().map(|c| {
                        let id = c.id;
                        let target = match c.kind {
                            ChannelKind::Webhook => c.url.clone().unwrap_or_default(),
                            ChannelKind::Email => {
                                let mut all = c.recipients.clone();
                                if !c.user_ids.is_empty() {
                                    all.push(format!("{} user(s)", c.user_ids.len()));
                                }
                                all.join(", ")
                            }
                        };
                        view! {
                            <li class="channel">
                                <strong>{c.name.clone()}</strong>" "
                                <span class="chip">{c.kind.as_str()}</span>" "
                                <span class="muted small mono">{target}</span>
                                <button type="button" class="button button-link danger" on:click=move |_| remove(id)>"Delete"</button>
                            </li>
                        }
                    }).collect_view().into_any()
                })}
            </ul>
            <form class="form" on:submit=create>
                <div class="form-grid">
                    <div class="field">
                        <label for="channel-name">"Name"</label>
                        <input id="channel-name" type="text" bind:value=name required />
                    </div>
                    <div class="field">
                        <label for="channel-kind">"Kind"</label>
                        <select id="channel-kind" on:change=move |ev| kind.set(event_target_value(&ev))>
                            <option value="webhook">"Webhook (signed JSON)"</option>
                            <option value="email">"E-mail"</option>
                        </select>
                    </div>
                </div>
                <Show when=is_webhook>
                    <div class="field">
                        <label for="channel-url">"Endpoint URL"</label>
                        <input id="channel-url" type="url" placeholder="https://psa.example/hooks/stayopen" bind:value=url required />
                    </div>
                </Show>
                <Show when=move || !is_webhook()>
                    <div class="field">
                        <label for="channel-recipients">"Addresses of people or lists (comma-separated)"</label>
                        <input id="channel-recipients" type="text" bind:value=recipients />
                    </div>
                </Show>
                <Show when=move || !is_webhook() && !team.get().is_empty()>
                    <fieldset class="field" id="channel-users">
                        <legend>"Users, mailed at their current address"</legend>
                        {move || team.get().into_iter().map(|(id, email)| {
                            let input_id = format!("channel-user-{id}");
                            let label_for = input_id.clone();
                            view! {
                                <label class="checkbox" for=label_for>
                                    <input
                                        id=input_id
                                        type="checkbox"
                                        prop:checked=move || chosen_users.with(|c| c.contains(&id))
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            chosen_users.update(|c| {
                                                c.retain(|x| *x != id);
                                                if on {
                                                    c.push(id);
                                                }
                                            });
                                        }
                                    />
                                    " " {email}
                                </label>
                            }
                        }).collect_view()}
                    </fieldset>
                </Show>
                <div class="form-actions">
                    <button type="submit" class="button button-primary" disabled=move || busy.get()>"Add channel"</button>
                </div>
            </form>
            {move || secret.get().map(|s| view! {
                <div class="alert alert-warning">
                    <strong>"Webhook signing secret, shown once: "</strong>
                    <code class="token-value">{s}</code>
                    <p class="small">"The receiver checks X-StayOpen-Signature: sha256=HMAC-SHA256(secret, \"{timestamp}.{body}\")."</p>
                </div>
            })}
            {notice_view(notice)}
        </section>
    }
}

#[component]
fn Rules(rules: Feed<Page<RoutingRuleView>>, channels: Feed<Page<ChannelView>>) -> impl IntoView {
    let session = use_session();
    let channel = RwSignal::new(String::new());
    let practice: RwSignal<Option<(PracticeId, String)>> = RwSignal::new(None);
    let kinds: Vec<(AlertKind, RwSignal<bool>)> = AlertKind::ALL
        .iter()
        .map(|k| (*k, RwSignal::new(false)))
        .collect();
    let kinds = StoredValue::new(kinds);
    let min_severity = RwSignal::new("warning".to_owned());
    let delay = RwSignal::new("0".to_owned());
    let repeat = RwSignal::new(String::new());
    let during = RwSignal::new("always".to_owned());
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(channel_id) = channel.get_untracked().parse::<uuid::Uuid>() else {
            notice.set(Some(Notice::Failed("Choose a channel.".into())));
            return;
        };
        let chosen: Vec<AlertKind> = kinds.with_value(|k| {
            k.iter()
                .filter(|(_, on)| on.get_untracked())
                .map(|(k, _)| *k)
                .collect()
        });
        let Ok(delay_secs) = delay.get_untracked().trim().parse::<u32>() else {
            notice.set(Some(Notice::Failed(
                "The delay is a number of seconds.".into(),
            )));
            return;
        };
        let body = CreateRoutingRule {
            channel_id,
            practice_id: practice.get_untracked().map(|(id, _)| id),
            kinds: (!chosen.is_empty()).then_some(chosen),
            min_severity: Severity::parse(&min_severity.get_untracked())
                .unwrap_or(Severity::Warning),
            delay_secs,
            repeat_secs: repeat.get_untracked().trim().parse().ok(),
            during: RouteDuring::parse(&during.get_untracked()).unwrap_or_default(),
        };
        act(
            busy,
            notice,
            "Rule added.",
            async move {
                api::post::<_, RoutingRuleView>(session, "/api/v1/routing-rules", &body).await
            },
            move |_| rules.reload(),
        );
    };
    let remove = move |id: uuid::Uuid| {
        act(
            busy,
            notice,
            "Rule deleted.",
            async move { api::delete(session, &format!("/api/v1/routing-rules/{id}")).await },
            move |_| rules.reload(),
        );
    };

    view! {
        <section class="card section" aria-labelledby="rules-heading">
            <h2 id="rules-heading">"Routing rules"</h2>
            <FeedStatus feed=rules what="the routing rules" />
            <ul class="plain-list" id="rule-list">
                {move || rules.data.get().map(|page| {
                    if page.items.is_empty() {
                        return view! { <li class="muted">"No rules."</li> }.into_any();
                    }
                    let names = channels.data.get();
                    page.items.into_iter().map(|r| {
                        let id = r.id;
                        let kinds = r.kinds.as_ref().map_or_else(|| "every kind".to_owned(), |k| {
                            k.iter().map(|k| alert_kind_label(*k)).collect::<Vec<_>>().join(", ")
                        });
                        let timing = match (r.delay_secs, r.repeat_secs) {
                            (0, None) => "at once".to_owned(),
                            (d, None) => format!("if unacknowledged after {}", duration_text(i64::from(d))),
                            (d, Some(rep)) => format!("after {}, then every {} until acknowledged", duration_text(i64::from(d)), duration_text(i64::from(rep))),
                        };
                        view! {
                            <li class="rule">
                                <strong>{channel_name(&names, r.channel_id)}</strong>
                                {format!(" ← {} at or above {}, {}, {}", kinds, r.min_severity.as_str(), timing, r.during.as_str().replace('_', " "))}
                                {r.practice_id.map(|p| view! { " · " <a href=Route::Practice(p).href()>"one practice"</a> })}
                                <button type="button" class="button button-link danger" on:click=move |_| remove(id)>"Delete"</button>
                            </li>
                        }
                    }).collect_view().into_any()
                })}
            </ul>
            <form class="form" on:submit=create>
                <div class="form-grid">
                    <div class="field">
                        <label for="rule-channel">"Channel"</label>
                        <select id="rule-channel" on:change=move |ev| channel.set(event_target_value(&ev)) required>
                            <option value="">"Choose…"</option>
                            {move || channels.data.get().map(|p| p.items.into_iter().map(|c| view! {
                                <option value=c.id.to_string()>{c.name}</option>
                            }).collect_view())}
                        </select>
                    </div>
                    <div class="field">
                        <label for="rule-severity">"At or above"</label>
                        <select id="rule-severity" on:change=move |ev| min_severity.set(event_target_value(&ev))>
                            <option value="info">"info"</option>
                            <option value="warning" selected>"warning"</option>
                            <option value="critical">"critical"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for="rule-during">"When"</label>
                        <select id="rule-during" on:change=move |ev| during.set(event_target_value(&ev))>
                            <option value="always">"Always"</option>
                            <option value="clinic_hours">"During clinic hours"</option>
                            <option value="after_hours">"After hours (on call)"</option>
                        </select>
                    </div>
                    <div class="field">
                        <label for="rule-delay">"Escalate after (s; 0: at once)"</label>
                        <input id="rule-delay" type="number" min="0" bind:value=delay />
                    </div>
                    <div class="field">
                        <label for="rule-repeat">"Remind every (s; empty: never)"</label>
                        <input id="rule-repeat" type="number" min="60" bind:value=repeat />
                    </div>
                </div>
                <PracticePicker id="rule-practice" label="Only this practice" chosen=practice allow_none=true />
                <fieldset class="kinds">
                    <legend>"Only these kinds (none ticked: every kind)"</legend>
                    {kinds.with_value(|k| k.iter().map(|(kind, on)| {
                        let on = *on;
                        let input_id = format!("kind-{}", kind.as_str());
                        view! {
                            <span class="field-check">
                                <input id=input_id.clone() type="checkbox" bind:checked=on />
                                <label for=input_id>{alert_kind_label(*kind)}</label>
                            </span>
                        }
                    }).collect_view())}
                </fieldset>
                <div class="form-actions">
                    <button type="submit" class="button button-primary" disabled=move || busy.get()>"Add rule"</button>
                </div>
            </form>
            {notice_view(notice)}
        </section>
    }
}

#[component]
fn Deliveries(channels: Feed<Page<ChannelView>>) -> impl IntoView {
    let session = use_session();
    let status = RwSignal::new(String::new());
    let pager = Pager::new();
    let deliveries: Feed<Page<NotificationView>> = feed(Interest::Alerts, 2_000.0, move || {
        let path = format!(
            "/api/v1/notifications{}",
            query_string(&[
                ("limit", Some("50".into())),
                ("cursor", pager.cursor.get_untracked()),
                ("status", Some(status.get_untracked())),
            ])
        );
        async move { api::get::<Page<NotificationView>>(session, &path).await }
    });
    let next = move || {
        deliveries
            .data
            .with(|p| p.as_ref().and_then(|p| p.next_cursor.clone()))
    };
    view! {
        <section class="card section" aria-labelledby="deliveries-heading">
            <div class="section-heading">
                <h2 id="deliveries-heading">"Deliveries"</h2>
                <div class="field field-inline">
                    <label for="delivery-status">"Status"</label>
                    <select id="delivery-status" on:change=move |ev| {
                        status.set(event_target_value(&ev));
                        pager.reset();
                        deliveries.reload();
                    }>
                        <option value="">"Any"</option>
                        {["pending", "delivered", "dead", "cancelled", "held", "digested"].into_iter().map(|s| view! {
                            <option value=s>{s}</option>
                        }).collect_view()}
                    </select>
                </div>
            </div>
            <FeedStatus feed=deliveries what="the deliveries" />
            <table class="data-table compact">
                <thead>
                    <tr>
                        <th scope="col">"Created"</th>
                        <th scope="col">"Channel"</th>
                        <th scope="col">"Event"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col" class="num">"Attempts"</th>
                        <th scope="col">"Last error"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || deliveries.data.get().map(|page| {
                        let names = channels.data.get();
                        page.items.into_iter().map(|n| view! {
                            <tr data-status=n.status.clone()>
                                <td data-label="Created">{time_ago(Some(n.created_at))}</td>
                                <td data-label="Channel">{channel_name(&names, n.channel_id)}</td>
                                <td data-label="Event">{if n.event == "digest" { format!("digest of {}", n.digest_of.len()) } else { n.event.clone() }}</td>
                                <td data-label="Status"><span class=format!("badge badge-delivery-{}", n.status)>{n.status.clone()}</span></td>
                                <td class="num" data-label="Attempts">{n.attempts}</td>
                                <td class="small" data-label="Last error">{n.last_error.clone().unwrap_or_default()}</td>
                            </tr>
                        }).collect_view()
                    })}
                </tbody>
            </table>
            {pager.view(next, deliveries)}
        </section>
    }
}
