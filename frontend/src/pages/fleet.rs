//! The fleet overview: every practice and appliance the signed-in user may see, polled every few
//! seconds.
//!
//! Sections and rows are keyed by id and read their data through memos, so a poll updates the text
//! in place instead of rebuilding the table (selection, focus and scroll survive a refresh).

use chrono::{DateTime, SecondsFormat, Utc};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use leptos::task::spawn_local_scoped_with_cancellation;
use stayopen_shared::api::{ApplianceView, Fleet, PracticeView, Role};
use stayopen_shared::ids::{ApplianceId, PracticeId};
use stayopen_shared::telemetry::UplinkTelemetry;

use crate::api::{self, Failure};
use crate::logic::{
    FleetSummary, is_on_backup, relative_seconds, relative_time, uplink_metrics,
    uplinks_by_priority,
};
use crate::session::Session;

/// Time between the end of one `GET /api/v1/fleet` and the start of the next.
const POLL_INTERVAL_MS: u32 = 3_000;

/// Milliseconds since the epoch by the browser's clock. Only differences between two readings are
/// shown, so clock skew with the cloud does not matter.
fn now_ms() -> f64 {
    web_sys::js_sys::Date::now()
}

#[component]
pub fn FleetPage(session: Session) -> impl IntoView {
    let fleet: RwSignal<Option<Fleet>> = RwSignal::new(None);
    // When the last poll succeeded, and why the polls since then failed.
    let last_success: RwSignal<Option<f64>> = RwSignal::new(None);
    let problem: RwSignal<Option<String>> = RwSignal::new(None);
    let clock = RwSignal::new(now_ms());

    // Both loops are cancelled when the page is unmounted (sign-out, expired session).
    spawn_local_scoped_with_cancellation(async move {
        while let Some(token) = session.token.get_untracked() {
            if session.user.with_untracked(Option::is_none) {
                // The stored token could not be checked at start-up (cloud unreachable): fetch the
                // user along with the fleet until it works.
                match api::me(&token).await {
                    Ok(user) => session.user.set(Some(user)),
                    Err(Failure::Unauthorized(_)) => {
                        if session.renew().await {
                            continue;
                        }
                        session.expire();
                        break;
                    }
                    Err(_) => {}
                }
            }
            match api::fleet(&token).await {
                Ok(latest) => {
                    fleet.set(Some(latest));
                    last_success.set(Some(now_ms()));
                    set_if_changed(problem, None);
                }
                Err(Failure::Unauthorized(_)) => {
                    // The short-lived access token ran out: trade the refresh token for a new
                    // one and poll again at once; only a refused refresh ends the session.
                    if session.renew().await {
                        continue;
                    }
                    session.expire();
                    break;
                }
                Err(failure) => set_if_changed(problem, Some(failure.to_string())),
            }
            TimeoutFuture::new(POLL_INTERVAL_MS).await;
        }
    });
    spawn_local_scoped_with_cancellation(async move {
        loop {
            TimeoutFuture::new(1_000).await;
            clock.set(now_ms());
        }
    });

    let updated_ago = move || {
        last_success.get().map(|at| {
            let seconds = ((clock.get() - at) / 1000.0).floor().max(0.0) as i64;
            relative_seconds(seconds)
        })
    };
    let tenant_name = move || {
        fleet
            .with(|f| f.as_ref().map(|f| f.tenant_name.clone()))
            .or_else(|| {
                session
                    .user
                    .with(|u| u.as_ref().map(|u| u.tenant_name.clone()))
            })
            .unwrap_or_default()
    };
    let generated_at = Memo::new(move |_| fleet.with(|f| f.as_ref().map(|f| f.generated_at)));
    let summary = Memo::new(move |_| fleet.with(|f| f.as_ref().map(FleetSummary::of)));
    let practice_ids = Memo::new(move |_| {
        fleet.with(|f| {
            f.as_ref()
                .map(|f| f.practices.iter().map(|p| p.id).collect::<Vec<_>>())
                .unwrap_or_default()
        })
    });

    view! {
        <header class="topbar">
            <div class="topbar-inner">
                <div class="brand">
                    <span class="brand-mark" aria-hidden="true"></span>
                    "StayOpen"
                </div>
                <div id="tenant-name" class="tenant-name">{tenant_name}</div>
                <div class="user">
                    {move || {
                        session
                            .user
                            .get()
                            .map(|user| {
                                view! {
                                    <span id="current-user" class="user-email">{user.email}</span>
                                    <span class="user-role">{role_label(&user.role)}</span>
                                }
                            })
                    }}
                    <button
                        id="sign-out"
                        class="button button-secondary"
                        type="button"
                        on:click=move |_| session.sign_out(None)
                    >
                        "Sign out"
                    </button>
                </div>
            </div>
        </header>
        <main id="fleet" class="fleet">
            <div class="fleet-heading">
                <h1>"Fleet"</h1>
                <p id="last-updated" class="muted">
                    {move || match updated_ago() {
                        Some(ago) => format!("Updated {ago}"),
                        None => "Loading…".to_owned(),
                    }}
                </p>
            </div>
            {move || {
                // Re-rendered only when the message changes, so the alert is announced once per
                // outage; the age of the data shown is in `#last-updated`.
                problem
                    .get()
                    .map(|message| {
                        view! {
                            <div id="connection-banner" class="alert alert-warning" role="alert">
                                <strong>"Connection problem. "</strong>
                                {message}
                                " Showing the last data received; retrying every 3 seconds."
                            </div>
                        }
                    })
            }}
            {move || summary.get().map(|s| view! { <Summary summary=s /> })}
            {move || {
                let empty = fleet.with(|f| f.as_ref().is_some_and(|f| f.practices.is_empty()));
                empty
                    .then(|| {
                        view! {
                            <p class="empty card">"No practices yet. Appliances appear here once they enrol."</p>
                        }
                    })
            }}
            <For
                each=move || practice_ids.get()
                key=|id| *id
                children=move |id: PracticeId| {
                    view! { <PracticeSection fleet generated_at id /> }
                }
            />
        </main>
    }
}

/// Sets `signal` only when the value differs, so views reading it do not re-render for nothing.
fn set_if_changed<T: PartialEq + Send + Sync + 'static>(signal: RwSignal<T>, value: T) {
    if signal.with_untracked(|current| *current != value) {
        signal.set(value);
    }
}

fn role_label(role: &Role) -> &'static str {
    role.label()
}

#[component]
fn Summary(summary: FleetSummary) -> impl IntoView {
    let stat = |key: &'static str, label: &'static str, value: usize, tone: &'static str| {
        let tone = if value == 0 { "neutral" } else { tone };
        view! {
            <div class=format!("stat stat-{key} tone-{tone}") data-stat=key>
                <dt>{label}</dt>
                <dd>{value}</dd>
            </div>
        }
    };
    view! {
        <section aria-label="Fleet summary">
            <dl id="fleet-summary" class="summary">
                {stat("practices", "Practices", summary.practices, "neutral")}
                {stat("appliances", "Appliances", summary.appliances, "neutral")}
                {stat("online", "Online", summary.online, "ok")}
                {stat("on-backup", "On backup uplink", summary.on_backup, "warn")}
                {stat("offline", "Offline", summary.offline, "bad")}
            </dl>
        </section>
    }
}

#[component]
fn PracticeSection(
    fleet: RwSignal<Option<Fleet>>,
    generated_at: Memo<Option<DateTime<Utc>>>,
    id: PracticeId,
) -> impl IntoView {
    let practice: Memo<Option<PracticeView>> = Memo::new(move |_| {
        fleet.with(|f| {
            f.as_ref()
                .and_then(|f| f.practices.iter().find(|p| p.id == id).cloned())
        })
    });
    let name = move || practice.with(|p| p.as_ref().map(|p| p.name.clone()).unwrap_or_default());
    let appliance_ids = Memo::new(move |_| {
        practice.with(|p| {
            p.as_ref()
                .map(|p| p.appliances.iter().map(|a| a.id).collect::<Vec<_>>())
                .unwrap_or_default()
        })
    });
    let count = move || {
        let n = appliance_ids.with(Vec::len);
        if n == 1 {
            "1 appliance".to_owned()
        } else {
            format!("{n} appliances")
        }
    };
    let heading_id = format!("practice-{id}");
    let labelled_by = heading_id.clone();

    view! {
        <section class="practice card" data-practice-id=id.to_string() aria-labelledby=labelled_by>
            <div class="practice-heading">
                <h2 id=heading_id>{name}</h2>
                <span class="muted">{count}</span>
            </div>
            {move || {
                appliance_ids
                    .with(Vec::is_empty)
                    .then(|| view! { <p class="empty">"No appliances in this practice yet."</p> })
            }}
            <div class="table-wrap" class:hidden=move || appliance_ids.with(Vec::is_empty)>
                <table class="appliances">
                    <thead>
                        <tr>
                            <th scope="col">"Serial"</th>
                            <th scope="col">"Site"</th>
                            <th scope="col">"Status"</th>
                            <th scope="col">"Active uplink"</th>
                            <th scope="col">"Uplinks"</th>
                            <th scope="col">"Last seen"</th>
                        </tr>
                    </thead>
                    <tbody>
                        <For
                            each=move || appliance_ids.get()
                            key=|id| *id
                            children=move |id: ApplianceId| {
                                view! { <ApplianceRow practice generated_at id /> }
                            }
                        />
                    </tbody>
                </table>
            </div>
        </section>
    }
}

#[component]
fn ApplianceRow(
    practice: Memo<Option<PracticeView>>,
    generated_at: Memo<Option<DateTime<Utc>>>,
    id: ApplianceId,
) -> impl IntoView {
    let appliance: Memo<Option<ApplianceView>> = Memo::new(move |_| {
        practice.with(|p| {
            p.as_ref()
                .and_then(|p| p.appliances.iter().find(|a| a.id == id).cloned())
        })
    });
    let field = move |f: fn(&ApplianceView) -> String| {
        move || appliance.with(|a| a.as_ref().map(f).unwrap_or_default())
    };
    let online = move || appliance.with(|a| a.as_ref().is_some_and(|a| a.online));
    let on_backup = move || appliance.with(|a| a.as_ref().is_some_and(is_on_backup));
    let no_uplink =
        move || appliance.with(|a| a.as_ref().is_some_and(|a| a.active_uplink.is_none()));

    let last_seen = move || {
        let seen = appliance.with(|a| a.as_ref().and_then(|a| a.last_seen));
        match (seen, generated_at.get()) {
            (Some(seen), Some(now)) => relative_time(now, seen),
            (Some(_), None) => String::new(),
            (None, _) => "never".to_owned(),
        }
    };
    let last_seen_iso = move || {
        appliance.with(|a| {
            a.as_ref()
                .and_then(|a| a.last_seen)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        })
    };

    view! {
        <tr
            class="appliance"
            class:is-offline=move || !online()
            class:is-on-backup=on_backup
            data-appliance-id=id.to_string()
        >
            <td class="serial" data-label="Serial">{field(|a| a.serial.clone())}</td>
            <td class="site" data-label="Site">{field(|a| a.site_name.clone())}</td>
            <td data-label="Status">
                <span
                    class="online-badge"
                    class:badge-online=online
                    class:badge-offline=move || !online()
                >
                    {move || if online() { "online" } else { "offline" }}
                </span>
            </td>
            <td
                class="active-uplink"
                class:backup=on_backup
                class:no-uplink=no_uplink
                data-label="Active uplink"
                data-backup=move || if on_backup() { "true" } else { "false" }
                title=move || {
                    if on_backup() {
                        "Running on a backup uplink"
                    } else if no_uplink() {
                        "No uplink is carrying traffic"
                    } else {
                        "Running on the primary uplink"
                    }
                }
            >
                {field(|a| a.active_uplink.clone().unwrap_or_else(|| "none".to_owned()))}
            </td>
            <td data-label="Uplinks">
                <ul class="uplinks">
                    {move || {
                        appliance
                            .with(|a| a.as_ref().map(|a| uplinks_by_priority(&a.uplinks)))
                            .unwrap_or_default()
                            .into_iter()
                            .map(uplink_chip)
                            .collect_view()
                    }}
                </ul>
            </td>
            <td class="last-seen" data-label="Last seen">
                <time datetime=last_seen_iso title=last_seen_iso>
                    {last_seen}
                </time>
            </td>
        </tr>
    }
}

fn uplink_chip(uplink: UplinkTelemetry) -> impl IntoView {
    let health = uplink.health.as_str();
    let metrics = uplink_metrics(&uplink);
    let title = format!(
        "{}: {health}, priority {}{}, {metrics}",
        uplink.name,
        uplink.priority,
        if uplink.metered { ", metered" } else { "" },
    );
    let data_uplink = uplink.name.clone();
    view! {
        <li class=format!("uplink-chip health-{health}") data-uplink=data_uplink title=title>
            <span class="chip-dot" aria-hidden="true"></span>
            <span class="chip-name">{uplink.name}</span>
            " "
            <span class="chip-health">{health}</span>
            " "
            {uplink.metered.then(|| view! { <span class="chip-metered">"metered"</span> " " })}
            <span class="chip-metrics">{metrics}</span>
        </li>
    }
}
