//! One appliance: its uplinks and the one carrying traffic, the session-safe tunnel, latency and
//! loss over time, the event timeline, the effective policy with each value's source and whether
//! the appliance runs it yet, and commands (drill, fail back, diagnostics) with their
//! acknowledgement.

use leptos::prelude::*;
use stayopen_shared::alerts::AlertView;
use stayopen_shared::api::{
    ApplianceConfiguration, ApplianceMetrics, ApplianceView, CommandView, CreateCommand,
    DeviceIdentityView, EventRecord, MetricsPeriod, Page,
};
use stayopen_shared::commands::CommandSpec;
use stayopen_shared::events::EventKind;
use stayopen_shared::ids::{ApplianceId, PracticeId};

use crate::api;
use crate::charts::MetricsChart;
use crate::components::{
    FeedStatus, Notice, PageHeading, act, filter_chip, loading, notice_view, state_badge, time_ago,
    time_exact, use_session,
};
use crate::live::{Feed, feed, follow_while};
use crate::logic::{
    Interest, POLICY_FIELDS, PolicyTarget, Route, bytes_text, format_loss, format_rtt,
    handshake_text, outbox_text, primary_uplink, reachability_grid, redundant_use, scope_label,
    setting_text, tunnel_mode_text, tunnel_state_text, uplinks_by_priority,
};
use crate::pages::alerts::AlertList;
use crate::pages::practice::Maintenance;

#[component]
pub fn AppliancePage(id: ApplianceId) -> impl IntoView {
    let session = use_session();
    let caps = session.capabilities();
    let appliance = feed(Interest::ApplianceState(id), 500.0, move || {
        api::get::<ApplianceView>(session, &format!("/api/v1/appliances/{id}"))
    });
    let title = Signal::derive(move || {
        appliance
            .data
            .with(|a| a.as_ref().map(|a| a.serial.clone()))
            .unwrap_or_else(|| "Appliance".to_owned())
    });
    let practice = Memo::new(move |_| {
        appliance
            .data
            .with(|a| a.as_ref().map(|a| (a.practice_id, a.practice_name.clone())))
    });
    let missing = move || {
        appliance
            .error
            .with(|e| e.as_ref().is_some_and(|e| e.is_not_found()))
    };
    // Its timeline and times read in its practice's zone, like the practice's own page.
    Effect::new(move |_| {
        if let Some((p, _)) = practice.get() {
            crate::components::show_times_in_practice_zone(p);
        }
    });
    let zone = expect_context::<crate::components::DisplayZone>();

    view! {
        <section id="appliance" class="page" data-appliance-id=id.to_string()>
            <p class="breadcrumbs">
                <a href=Route::Fleet.href()>"Fleet"</a>
                " / "
                {move || practice.get().map(|(p, name)| view! {
                    <a href=Route::Practice(p).href() id="practice-link">{name}</a>
                    " / "
                })}
            </p>
            <PageHeading title feed=appliance>
                {caps.configure.then(|| view! {
                    <a class="button button-secondary button-small" id="edit-appliance-policy" href=Route::Policies(PolicyTarget::Appliance(id)).href()>
                        "Policy"
                    </a>
                })}
            </PageHeading>
            <FeedStatus feed=appliance what="This appliance" />
            {move || zone.0.get().map(|tz| view! {
                <p class="muted small" id="practice-zone">{format!("Times on this page are in the practice's time zone, {tz}.")}</p>
            })}
            <Show when=move || !missing()>
                {loading(appliance)}
                <Overview appliance=appliance.data />
                <Uplinks appliance=appliance.data />
                <crate::pages::cellular::Cellular appliance=appliance.data />
                <Apps appliance=appliance.data />
                <Tunnel id appliance=appliance.data />
                <Charts id />
                <div class="columns">
                    <Commands id can_operate=caps.operate />
                    <Configuration id />
                </div>
                <Identity id can_trust=caps.trust_devices />
                {move || practice.get().map(|(p, _)| view! {
                    <ApplianceAlerts id practice=p />
                    <Maintenance practice=p appliance=id />
                })}
                <Events id />
            </Show>
        </section>
    }
}

#[component]
fn Overview(appliance: RwSignal<Option<ApplianceView>>) -> impl IntoView {
    move || {
        appliance.get().map(|a| {
            let state = a.state;
            let primary = primary_uplink(&a.uplinks).map(|u| u.name.clone());
            view! {
                <dl class="facts" id="appliance-facts">
                    <div>
                        <dt>"Status"</dt>
                        <dd id="appliance-state" data-state=state.as_str()>{state_badge(state)}</dd>
                    </div>
                    <div>
                        <dt>"Active uplink"</dt>
                        <dd id="active-uplink" data-uplink=a.active_uplink.clone().unwrap_or_default()>
                            {a.active_uplink.clone().unwrap_or_else(|| "none".to_owned())}
                        </dd>
                    </div>
                    <div>
                        <dt>"Primary uplink"</dt>
                        <dd>{primary.unwrap_or_else(|| "–".to_owned())}</dd>
                    </div>
                    <div>
                        <dt>"Site"</dt>
                        <dd>{a.site_name.clone()}</dd>
                    </div>
                    <div>
                        <dt>"Last seen"</dt>
                        <dd>{time_ago(a.last_seen)}</dd>
                    </div>
                    <div>
                        <dt>"Delivery to the cloud"</dt>
                        <dd id="appliance-outbox">{outbox_text(a.outbox.as_ref())}</dd>
                    </div>
                </dl>
            }
        })
    }
}

/// Each critical application's latest check through each uplink, as the appliance reported it.
#[component]
fn Apps(appliance: RwSignal<Option<ApplianceView>>) -> impl IntoView {
    move || {
        appliance.get().map(|a| {
            let order: Vec<String> = uplinks_by_priority(&a.uplinks)
                .into_iter()
                .map(|u| u.name)
                .collect();
            let grid = reachability_grid(&a.apps, &order);
            let body = if grid.rows.is_empty() {
                view! {
                    <p class="muted" id="apps-none">
                        "No critical application checks reported yet. The practice's register lists what the appliance checks."
                    </p>
                }
                .into_any()
            } else {
                let heads = grid
                    .uplinks
                    .iter()
                    .map(|u| view! { <th scope="col">{u.clone()}</th> })
                    .collect_view();
                let uplinks = grid.uplinks.clone();
                let rows = grid
                    .rows
                    .into_iter()
                    .map(|(app, cells)| {
                        let cells = cells
                            .into_iter()
                            .zip(uplinks.iter())
                            .map(|(cell, uplink)| match cell {
                                None => view! { <td class="muted" data-uplink=uplink.clone()>"not checked"</td> }.into_any(),
                                Some(r) => {
                                    let title = format!("checked {} s before the last report", r.age_secs);
                                    view! {
                                        <td data-uplink=uplink.clone() data-reachable=r.reachable.to_string() title=title>
                                            {if r.reachable {
                                                view! { <span class="ok-text">"reachable"</span> }.into_any()
                                            } else {
                                                view! { <span class="bad-text">"unreachable"</span> }.into_any()
                                            }}
                                            {r.latency_ms.map(|ms| format!(" · {ms:.0} ms"))}
                                            {r.reason.clone().map(|why| view! { <div class="muted small">{why}</div> })}
                                        </td>
                                    }
                                    .into_any()
                                }
                            })
                            .collect_view();
                        let key = app.clone();
                        view! {
                            <tr data-app=key>
                                <th scope="row">{app}</th>
                                {cells}
                            </tr>
                        }
                    })
                    .collect_view();
                view! {
                    <div class="table-wrap">
                        <table class="data-table" id="app-reachability">
                            <thead>
                                <tr>
                                    <th scope="col">"Application"</th>
                                    {heads}
                                </tr>
                            </thead>
                            <tbody>{rows}</tbody>
                        </table>
                    </div>
                }
                .into_any()
            };
            view! {
                <section class="card section" aria-labelledby="apps-heading" id="appliance-apps">
                    <h2 id="apps-heading">"Critical applications through each uplink"</h2>
                    {body}
                </section>
            }
        })
    }
}

/// The session-safe tunnel as the appliance last reported it: its mode and state, the relay, the
/// last handshake, the data through it, and redundant mode's duplicates this month per uplink
/// against the policy's cap for metered uplinks.
#[component]
fn Tunnel(id: ApplianceId, appliance: RwSignal<Option<ApplianceView>>) -> impl IntoView {
    let session = use_session();
    let config = feed(Interest::ApplianceState(id), 1_000.0, move || {
        api::get::<ApplianceConfiguration>(
            session,
            &format!("/api/v1/appliances/{id}/configuration"),
        )
    });
    let cap_mb = move || {
        config.data.with(|c| {
            c.as_ref()
                .map(|c| c.effective.policy.redundant_metered_cap_mb)
        })
    };
    // What the cloud assigned (the relay registry), as against what the appliance reports.
    let assigned = move || {
        config.data.with(|c| {
            c.as_ref()
                .and_then(|c| c.effective.policy.tunnel_relay.clone())
        })
    };
    let state = move || {
        appliance.with(|a| {
            a.as_ref()
                .and_then(|a| a.tunnel.as_ref())
                .map_or("unreported", |t| t.state.as_str())
        })
    };
    let body = move || {
        appliance.get().map(|a| {
            let Some(report) = a.tunnel.clone() else {
                let assignment = match assigned() {
                    Some(r) => format!("The cloud assigned relay {} (inner address {}). ", r.relay, r.inner_address),
                    None => String::new(),
                };
                return view! {
                    <p class="muted" id="tunnel-none">
                        {assignment}
                        "No tunnel report yet: the appliance's agent reports the tunnel with its telemetry."
                    </p>
                }
                .into_any();
            };
            let inner_address = assigned()
                .map_or_else(|| "not assigned".to_owned(), |r| r.inner_address.to_string());
            let state_key = report.state.as_str();
            let rows = redundant_use(&report, &a.uplinks, cap_mb())
                .into_iter()
                .map(|r| {
                    view! {
                        <tr data-uplink=r.uplink.clone() data-over-cap=r.over_cap.to_string()>
                            <th scope="row">
                                {r.uplink.clone()}
                                {r.metered.then(|| view! { " " <span class="chip">"metered"</span> })}
                            </th>
                            <td class:bad-text=r.over_cap>{r.text.clone()}</td>
                        </tr>
                    }
                })
                .collect_view();
            let has_rows = !report.redundant_bytes.is_empty();
            view! {
                <dl class="facts facts-compact">
                    <div>
                        <dt>"State"</dt>
                        <dd id="tunnel-state" data-state=state_key>
                            <span class=format!("badge badge-tunnel-{state_key}")>{tunnel_state_text(report.state)}</span>
                        </dd>
                    </div>
                    <div>
                        <dt>"Mode"</dt>
                        <dd id="tunnel-mode">{tunnel_mode_text(report.mode)}</dd>
                    </div>
                    <div>
                        <dt>"Relay"</dt>
                        <dd id="tunnel-relay">{report.relay.clone().unwrap_or_else(|| "none assigned".to_owned())}</dd>
                    </div>
                    <div>
                        <dt>"Inner address"</dt>
                        <dd id="tunnel-address" class="mono">{inner_address}</dd>
                    </div>
                    <div>
                        <dt>"Last handshake"</dt>
                        <dd id="tunnel-handshake">{handshake_text(report.last_handshake_secs)}</dd>
                    </div>
                    <div>
                        <dt>"Through the tunnel"</dt>
                        <dd id="tunnel-bytes">{bytes_text(report.tunnel_bytes)}</dd>
                    </div>
                    <div>
                        <dt>"Redundant mode"</dt>
                        <dd id="tunnel-redundant">
                            {if report.redundant { "duplicating critical flows" } else { "not duplicating" }}
                        </dd>
                    </div>
                </dl>
                {if has_rows {
                    view! {
                        <div class="table-wrap">
                            <table class="data-table compact" id="tunnel-redundant-use">
                                <thead>
                                    <tr>
                                        <th scope="col">"Uplink"</th>
                                        <th scope="col">"Duplicates this month"</th>
                                    </tr>
                                </thead>
                                <tbody>{rows}</tbody>
                            </table>
                        </div>
                    }
                    .into_any()
                } else {
                    view! { <p class="muted" id="tunnel-redundant-none">"No duplicates sent this month."</p> }
                        .into_any()
                }}
            }
            .into_any()
        })
    };
    view! {
        <section class="card section" aria-labelledby="tunnel-heading" id="tunnel" data-state=state>
            <h2 id="tunnel-heading">"Session-safe tunnel"</h2>
            {body}
        </section>
    }
}

#[component]
fn Uplinks(appliance: RwSignal<Option<ApplianceView>>) -> impl IntoView {
    view! {
        <section class="card section" aria-labelledby="uplinks-heading">
            <h2 id="uplinks-heading">"Uplinks"</h2>
            <div class="table-wrap">
                <table class="data-table" id="uplinks">
                    <thead>
                        <tr>
                            <th scope="col">"Uplink"</th>
                            <th scope="col">"Priority"</th>
                            <th scope="col">"Health"</th>
                            <th scope="col">"Carrying traffic"</th>
                            <th scope="col" class="num">"Latency"</th>
                            <th scope="col" class="num">"Loss"</th>
                            <th scope="col" class="num">"Received"</th>
                            <th scope="col" class="num">"Sent"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || {
                            appliance.get().map(|a| {
                                let active = a.active_uplink.clone();
                                uplinks_by_priority(&a.uplinks)
                                    .into_iter()
                                    .map(|u| {
                                        let carrying = active.as_deref() == Some(u.name.as_str());
                                        let health = u.health.as_str();
                                        view! {
                                            <tr data-uplink=u.name.clone() class:active-row=carrying>
                                                <th scope="row" data-label="Uplink">
                                                    {u.name.clone()}
                                                    {u.metered.then(|| view! { " " <span class="chip">"metered"</span> })}
                                                </th>
                                                <td data-label="Priority">{if u.priority == 0 { "primary".to_owned() } else { format!("backup ({})", u.priority) }}</td>
                                                <td data-label="Health"><span class=format!("badge badge-health-{health}")>{health}</span></td>
                                                <td class="carrying" data-label="Carrying traffic">{if carrying { "yes" } else { "" }}</td>
                                                <td class="num" data-label="Latency">{format_rtt(u.rtt_ms)}</td>
                                                <td class="num" data-label="Loss">{format_loss(u.loss_pct)}</td>
                                                <td class="num" data-label="Received">{bytes_text(u.rx_bytes)}</td>
                                                <td class="num" data-label="Sent">{bytes_text(u.tx_bytes)}</td>
                                            </tr>
                                        }
                                    })
                                    .collect_view()
                            })
                        }}
                    </tbody>
                </table>
            </div>
        </section>
    }
}

#[component]
fn Charts(id: ApplianceId) -> impl IntoView {
    let session = use_session();
    let period = RwSignal::new(MetricsPeriod::Hour);
    let query = |period: MetricsPeriod| match period {
        MetricsPeriod::Hour => "hour",
        MetricsPeriod::Day => "day",
        MetricsPeriod::Month => "month",
    };
    let metrics_feed = feed(Interest::ApplianceState(id), 10_000.0, move || {
        let period = query(period.get_untracked());
        api::get::<ApplianceMetrics>(
            session,
            &format!("/api/v1/appliances/{id}/metrics?period={period}"),
        )
    });
    let metrics = Memo::new(move |_| metrics_feed.data.get());
    let choice = move |value: MetricsPeriod, label: &'static str| {
        filter_chip(
            query(value),
            label,
            move || period.get() == value,
            || None,
            move || {
                period.set(value);
                metrics_feed.reload();
            },
        )
    };
    view! {
        <section class="card section" aria-labelledby="charts-heading">
            <div class="section-heading">
                <h2 id="charts-heading">"Latency and loss"</h2>
                <div class="filter-chips" role="group" aria-label="Period">
                    {choice(MetricsPeriod::Hour, "Hour")}
                    {choice(MetricsPeriod::Day, "Day")}
                    {choice(MetricsPeriod::Month, "30 days")}
                </div>
            </div>
            <FeedStatus feed=metrics_feed what="the measurements" />
            {loading(metrics_feed)}
            <div class="charts">
                <MetricsChart metrics value=|p| p.rtt_ms title="Latency (median round trip)" unit="ms" floor=20.0 id="chart-latency" />
                <MetricsChart metrics value=|p| p.loss_pct title="Probe loss" unit="%" floor=1.0 fixed_max=100.0 id="chart-loss" />
            </div>
        </section>
    }
}

fn event_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::AgentStarted => "Agent started",
        EventKind::UplinkDown => "Uplink down",
        EventKind::UplinkUp => "Uplink up",
        EventKind::Failover => "Failover",
        EventKind::Failback => "Failback",
        EventKind::DrillStarted => "Drill started",
        EventKind::DrillFinished => "Drill finished",
        EventKind::DrillFailed => "Drill failed",
        EventKind::PolicyApplied => "Policy applied",
        EventKind::PolicyRejected => "Policy rejected",
        EventKind::TunnelFallback => "Tunnel fell back to direct",
        EventKind::TunnelRestored => "Tunnel restored",
    }
}

fn event_kind_key(kind: EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[component]
fn Events(id: ApplianceId) -> impl IntoView {
    let session = use_session();
    let events = feed(Interest::ApplianceState(id), 1_000.0, move || {
        api::get::<Page<EventRecord>>(session, &format!("/api/v1/appliances/{id}/events?limit=50"))
    });
    view! {
        <section class="card section" aria-labelledby="events-heading">
            <h2 id="events-heading">"Event timeline"</h2>
            <FeedStatus feed=events what="the events" />
            {loading(events)}
            <ol class="timeline" id="events">
                {move || {
                    events.data.get().map(|page| {
                        if page.items.is_empty() {
                            return view! { <li class="muted">"No events yet."</li> }.into_any();
                        }
                        page.items
                            .into_iter()
                            .map(|record| {
                                let e = record.event;
                                let key = event_kind_key(e.kind);
                                let route = match (&e.from, &e.to) {
                                    (Some(from), Some(to)) => format!("{from} → {to}"),
                                    _ => e.uplink.clone().unwrap_or_default(),
                                };
                                view! {
                                    <li class=format!("event event-{key}") data-kind=key.clone()>
                                        <span class="event-time">{time_exact(Some(record.sent_at))}</span>
                                        <strong class="event-kind">{event_label(e.kind)}</strong>
                                        <span class="event-route">{route}</span>
                                        <span class="muted event-reason">{e.reason}</span>
                                    </li>
                                }
                            })
                            .collect_view()
                            .into_any()
                    })
                }}
            </ol>
        </section>
    }
}

#[component]
fn Configuration(id: ApplianceId) -> impl IntoView {
    let session = use_session();
    let config = feed(Interest::ApplianceState(id), 1_000.0, move || {
        api::get::<ApplianceConfiguration>(
            session,
            &format!("/api/v1/appliances/{id}/configuration"),
        )
    });
    view! {
        <section class="card section" aria-labelledby="config-heading" id="configuration">
            <h2 id="config-heading">"Configuration"</h2>
            <FeedStatus feed=config what="the configuration" />
            {loading(config)}
            {move || {
                config.data.get().map(|c| {
                    let (sync_class, sync_text) = if !c.drift {
                        ("badge badge-primary", "running the desired version")
                    } else if c.reported_version.is_none() {
                        ("badge badge-on_backup", "not reported yet")
                    } else {
                        ("badge badge-on_backup", "applying the desired version")
                    };
                    let policy = serde_json::to_value(&c.effective.policy).unwrap_or_default();
                    view! {
                        <dl class="facts facts-compact">
                            <div>
                                <dt>"Desired version"</dt>
                                <dd id="config-desired">{c.desired_version}</dd>
                            </div>
                            <div>
                                <dt>"Reported version"</dt>
                                <dd id="config-reported">{c.reported_version.map_or("–".to_owned(), |v| v.to_string())}</dd>
                            </div>
                            <div>
                                <dt>"State"</dt>
                                <dd id="config-drift" data-drift=if c.drift { "true" } else { "false" }>
                                    <span class=sync_class>{sync_text}</span>
                                </dd>
                            </div>
                            <div>
                                <dt>"Reported"</dt>
                                <dd>{time_ago(c.reported_at)}</dd>
                            </div>
                        </dl>
                        <details class="effective">
                            <summary>"Effective policy and where each value comes from"</summary>
                            <table class="data-table compact" id="effective-policy">
                                <thead>
                                    <tr>
                                        <th scope="col">"Setting"</th>
                                        <th scope="col">"Value"</th>
                                        <th scope="col">"Set by"</th>
                                    </tr>
                                </thead>
                                <tbody>
                                    {POLICY_FIELDS.iter().map(|f| {
                                        let value = policy
                                            .get(f.key)
                                            .map_or_else(|| "none".to_owned(), |v| setting_text(f.kind, v));
                                        let source = c.effective.sources.get(f.key).copied();
                                        let source_label = source.map_or("default", scope_label);
                                        view! {
                                            <tr data-setting=f.key>
                                                <th scope="row" data-label="Setting">{f.label}</th>
                                                <td class="mono" data-label="Value">{value}</td>
                                                <td data-label="Set by"><span class=format!("source source-{source_label}")>{source_label}</span></td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </details>
                    }
                })
            }}
        </section>
    }
}

fn command_label(spec: &CommandSpec) -> String {
    match spec {
        CommandSpec::StartDrill { duration_secs } => format!("Drill ({duration_secs} s)"),
        CommandSpec::FailBackNow => "Fail back now".to_owned(),
        CommandSpec::CollectDiagnostics => "Collect diagnostics".to_owned(),
        CommandSpec::RebootAgent => "Restart agent".to_owned(),
    }
}

#[component]
fn Commands(id: ApplianceId, can_operate: bool) -> impl IntoView {
    let session = use_session();
    let commands: Feed<Page<CommandView>> =
        feed(Interest::ApplianceState(id), 1_000.0, move || {
            api::get::<Page<CommandView>>(
                session,
                &format!("/api/v1/appliances/{id}/commands?limit=20"),
            )
        });
    // A command's acknowledgement arrives within seconds: follow unfinished ones closely.
    follow_while(commands, 2_000, |page| {
        page.items.iter().any(|c| !c.status.is_final())
    });
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let drill_secs = RwSignal::new("60".to_owned());
    let send = move |spec: CommandSpec| {
        let label = command_label(&spec);
        let body = CreateCommand {
            spec,
            expires_in_secs: None,
        };
        act(
            busy,
            notice,
            format!("{label}: queued for the appliance."),
            async move {
                api::post::<_, CommandView>(
                    session,
                    &format!("/api/v1/appliances/{id}/commands"),
                    &body,
                )
                .await
            },
            move |_| commands.reload(),
        );
    };
    let start_drill = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match drill_secs.get_untracked().trim().parse::<u32>() {
            Ok(duration_secs) if (10..=3600).contains(&duration_secs) => {
                send(CommandSpec::StartDrill { duration_secs })
            }
            _ => notice.set(Some(Notice::Failed(
                "A drill lasts 10 to 3600 seconds.".to_owned(),
            ))),
        }
    };

    view! {
        <section class="card section" aria-labelledby="commands-heading" id="commands">
            <h2 id="commands-heading">"Actions"</h2>
            {can_operate.then(|| view! {
                <div class="actions">
                    <form class="inline-form" on:submit=start_drill>
                        <label for="drill-seconds">"Drill length (s)"</label>
                        <input id="drill-seconds" type="number" min="10" max="3600" class="input-short" bind:value=drill_secs />
                        <button type="submit" id="action-drill" class="button button-primary button-small" disabled=move || busy.get()>
                            "Start drill"
                        </button>
                    </form>
                    <button type="button" id="action-failback" class="button button-secondary button-small" disabled=move || busy.get()
                        on:click=move |_| send(CommandSpec::FailBackNow)>
                        "Fail back now"
                    </button>
                    <button type="button" id="action-diagnostics" class="button button-secondary button-small" disabled=move || busy.get()
                        on:click=move |_| send(CommandSpec::CollectDiagnostics)>
                        "Collect diagnostics"
                    </button>
                </div>
            })}
            {notice_view(notice)}
            <FeedStatus feed=commands what="the commands" />
            <ul class="plain-list command-list">
                {move || {
                    commands.data.get().map(|page| {
                        if page.items.is_empty() {
                            return view! { <li class="muted">"No commands sent."</li> }.into_any();
                        }
                        page.items.into_iter().map(|c| {
                            let status = c.status.as_str();
                            let result = c.result.as_ref().map(|r| serde_json::to_string_pretty(r).unwrap_or_default());
                            view! {
                                <li class="command" data-status=status data-kind=c.spec.kind()>
                                    <div>
                                        <strong>{command_label(&c.spec)}</strong>
                                        " "
                                        <span class=format!("badge badge-command-{status}")>{status}</span>
                                        " "
                                        <span class="muted small">{format!("by {} ", c.created_by)}{time_ago(Some(c.created_at))}</span>
                                    </div>
                                    <div class="muted small">
                                        {c.acknowledged_at.map(|at| view! { "acknowledged " {time_exact(Some(at))} })}
                                        {c.finished_at.map(|at| view! { " · finished " {time_exact(Some(at))} })}
                                        {(c.acknowledged_at.is_none() && !c.status.is_final()).then(|| format!("deliveries: {}", c.deliveries))}
                                    </div>
                                    {c.detail.clone().map(|d| view! { <p class="small">{d}</p> })}
                                    {result.map(|r| view! {
                                        <details><summary>"Result"</summary><pre class="json">{r}</pre></details>
                                    })}
                                </li>
                            }
                        }).collect_view().into_any()
                    })
                }}
            </ul>
        </section>
    }
}

/// The appliance's identity: whether it is revoked, whether enrolling the hardware again has been
/// approved, and its certificates. MSP admins approve re-enrolment (replaced hardware, lost state)
/// or restore a revoked appliance here.
#[component]
fn Identity(id: ApplianceId, can_trust: bool) -> impl IntoView {
    let session = use_session();
    let identity = feed(Interest::ApplianceState(id), 1_000.0, move || {
        api::get::<DeviceIdentityView>(session, &format!("/api/v1/appliances/{id}/identity"))
    });
    let busy = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let run = move |action: &'static str, success: &'static str| {
        act(
            busy,
            notice,
            success,
            async move {
                api::post::<_, DeviceIdentityView>(
                    session,
                    &format!("/api/v1/appliances/{id}/{action}"),
                    &(),
                )
                .await
            },
            move |view| identity.data.set(Some(view)),
        );
    };
    view! {
        <section class="card section" aria-labelledby="identity-heading" id="identity">
            <h2 id="identity-heading">"Identity"</h2>
            <FeedStatus feed=identity what="the identity" />
            {loading(identity)}
            {move || identity.data.get().map(|v| {
                let revoked = v.revoked_at.is_some();
                let current = v.current_certificate.clone();
                let valid_until = v.certificates.iter()
                    .find(|c| Some(&c.serial) == current.as_ref())
                    .map(|c| c.not_after);
                view! {
                    <dl class="facts facts-compact">
                        <div>
                            <dt>"State"</dt>
                            <dd id="identity-state" data-revoked=if revoked { "true" } else { "false" }>
                                {match v.revoked_at {
                                    Some(at) => view! { <span class="badge badge-offline">"revoked"</span> " " {time_ago(Some(at))} }.into_any(),
                                    None => view! { <span class="badge badge-primary">"active"</span> }.into_any(),
                                }}
                            </dd>
                        </div>
                        <div>
                            <dt>"Certificate valid until"</dt>
                            <dd>{time_exact(valid_until)}</dd>
                        </div>
                        <div>
                            <dt>"Re-enrolment approved until"</dt>
                            <dd id="reenrollment-approved">{match v.reenrollment_approved_until {
                                Some(until) => time_exact(Some(until)),
                                None => view! { <span class="muted">"not approved"</span> }.into_any(),
                            }}</dd>
                        </div>
                    </dl>
                    <details>
                        <summary>{format!("Certificates ({})", v.certificates.len())}</summary>
                        <table class="data-table compact">
                            <thead>
                                <tr>
                                    <th scope="col">"Serial"</th>
                                    <th scope="col">"Issued"</th>
                                    <th scope="col">"Valid until"</th>
                                    <th scope="col">"State"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {v.certificates.into_iter().map(|c| {
                                    let state = if c.revoked_at.is_some() {
                                        "revoked"
                                    } else if c.superseded_at.is_some() {
                                        "superseded"
                                    } else {
                                        "current"
                                    };
                                    view! {
                                        <tr data-state=state>
                                            <th scope="row" class="mono" data-label="Serial">{c.serial}</th>
                                            <td data-label="Issued">{time_exact(Some(c.issued_at))}</td>
                                            <td data-label="Valid until">{time_exact(Some(c.not_after))}</td>
                                            <td data-label="State">{state}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </details>
                    {can_trust.then(|| if revoked {
                        view! {
                            <div class="actions">
                                <button type="button" id="action-restore" class="button button-secondary button-small"
                                    disabled=move || busy.get()
                                    on:click=move |_| run("restore", "Restored: the appliance may enrol again within 24 hours with a token of its practice.")>
                                    "Restore"
                                </button>
                                <p class="muted small">"Ends the revocation. The box enrols again with a token of its own practice; its old certificate and password stay refused."</p>
                            </div>
                        }.into_any()
                    } else {
                        view! {
                            <div class="actions">
                                <button type="button" id="action-approve-reenrollment" class="button button-secondary button-small"
                                    disabled=move || busy.get()
                                    on:click=move |_| run("approve-reenrollment", "Approved: one enrolment of this hardware with a token of its practice is accepted within 24 hours.")>
                                    "Approve re-enrolment"
                                </button>
                                <p class="muted small">"For replaced hardware or a box that lost its state: the next enrolment of this serial and MAC with a token of its practice takes over this appliance. Appliances renew their certificates by themselves."</p>
                            </div>
                        }.into_any()
                    })}
                }
            })}
            {notice_view(notice)}
        </section>
    }
}

#[component]
fn ApplianceAlerts(id: ApplianceId, practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let alerts = feed(
        Interest::Appliance(id, Some(practice)),
        1_000.0,
        move || {
            api::get::<Page<AlertView>>(
                session,
                &format!("/api/v1/alerts?unresolved=true&limit=50&appliance_id={id}"),
            )
        },
    );
    view! {
        <section class="card section" aria-labelledby="appliance-alerts-heading" id="appliance-alerts">
            <h2 id="appliance-alerts-heading">"Open alerts"</h2>
            <FeedStatus feed=alerts what="the alerts" />
            <AlertList feed=alerts show_practice=false />
        </section>
    }
}
