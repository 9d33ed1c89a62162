//! Reports for a compliance officer: each of their practices' availability, failovers, incidents and
//! drills over a period, computed from what the cloud records today (alert history and appliance
//! events). Signed evidence packages come with the compliance-evidence work; the page says so.

use chrono::{DateTime, Duration, Utc};
use leptos::prelude::*;
use stayopen_shared::alerts::{AlertKind, AlertView};
use stayopen_shared::api::{ApplianceView, EventRecord, Page, PracticeSummary};
use stayopen_shared::events::EventKind;
use stayopen_shared::ids::PracticeId;

use crate::api::{self, Failure};
use crate::components::{FeedStatus, PageHeading, loading, time_exact, use_session};
use crate::live::{feed, utc_now};
use crate::logic::{
    Interest, Route, alert_kind_label, availability_text, date_text, duration_text,
    practice_record, query_string,
};
use crate::session::Session;

/// The alert kinds a report is made of.
const REPORT_KINDS: [AlertKind; 4] = [
    AlertKind::Failover,
    AlertKind::ApplianceOffline,
    AlertKind::DrillFailed,
    AlertKind::DrillOverdue,
];

#[derive(Debug, Clone, PartialEq)]
struct ReportData {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    practices: Vec<PracticeSummary>,
    more_practices: bool,
    alerts: Vec<AlertView>,
    /// Some kind had more alerts than one request returns: the figures are a lower bound.
    truncated: bool,
}

async fn load_report(session: Session, days: i64) -> Result<ReportData, Failure> {
    let to = utc_now();
    let from = to - Duration::days(days);
    let practices: Page<PracticeSummary> = api::get(session, "/api/v1/practices?limit=100").await?;
    let mut alerts = Vec::new();
    let mut truncated = false;
    for kind in REPORT_KINDS {
        let path = format!(
            "/api/v1/alerts{}",
            query_string(&[
                ("limit", Some("500".into())),
                ("kind", Some(kind.as_str().into())),
                ("since", Some(from.to_rfc3339())),
            ])
        );
        let page: Page<AlertView> = api::get(session, &path).await?;
        truncated |= page.next_cursor.is_some();
        alerts.extend(page.items);
    }
    Ok(ReportData {
        from,
        to,
        more_practices: practices.next_cursor.is_some(),
        practices: practices.items,
        alerts,
        truncated,
    })
}

#[component]
pub fn ReportsPage() -> impl IntoView {
    let session = use_session();
    let days = RwSignal::new(30i64);
    let report = feed(Interest::Alerts, 5_000.0, move || {
        load_report(session, days.get_untracked())
    });

    view! {
        <section id="reports" class="page">
            <PageHeading title=Signal::derive(|| "Reports".to_owned()) feed=report>
                <div class="field field-inline">
                    <label for="report-period">"Period"</label>
                    <select id="report-period" on:change=move |ev| {
                        days.set(event_target_value(&ev).parse().unwrap_or(30));
                        report.reload();
                    }>
                        <option value="7">"Last 7 days"</option>
                        <option value="30" selected>"Last 30 days"</option>
                        <option value="90">"Last 90 days"</option>
                    </select>
                </div>
            </PageHeading>
            <p class="alert alert-info" id="reports-scope">
                "This page summarises what the StayOpen cloud records today: alerts and appliance events. "
                "Signed compliance evidence (exportable reports and drill sign-off) is not available yet; it will appear here when it is. "
                "Availability counts the time an appliance was unreachable; time on a backup uplink counts as connected, since that is what failover is for."
            </p>
            <FeedStatus feed=report what="the report" />
            {loading(report)}
            {move || report.data.get().map(|data| {
                let notes = (data.truncated || data.more_practices).then(|| view! {
                    <p class="alert alert-warning">
                        {if data.more_practices { "Only the first 100 practices are shown. " } else { "" }}
                        {if data.truncated { "Some alert kinds had more than 500 alerts in this period: the counts are lower bounds." } else { "" }}
                    </p>
                });
                let rows = data.practices.iter().map(|p| {
                    let alerts: Vec<AlertView> = data.alerts.iter().filter(|a| a.practice_id == p.id).cloned().collect();
                    let record = practice_record(&alerts, p.appliances, data.from, data.to);
                    view! {
                        <tr data-practice-id=p.id.to_string()>
                            <th scope="row"><a href=Route::Practice(p.id).href()>{p.name.clone()}</a></th>
                            <td class="num availability">{availability_text(record.availability_pct)}</td>
                            <td class="num">{record.failovers}</td>
                            <td class="num">{duration_text(record.on_backup_secs)}</td>
                            <td class="num">{record.offline_incidents}</td>
                            <td class="num">{duration_text(record.offline_secs)}</td>
                            <td class="num">{record.drill_failures}</td>
                            <td>{if record.drill_overdue > 0 { "overdue" } else { "" }}</td>
                        </tr>
                    }
                }).collect_view();
                let mut incidents = data.alerts.clone();
                incidents.sort_by_key(|a| std::cmp::Reverse(a.first_seen));
                view! {
                    {notes}
                    <section class="card section">
                        <h2>{format!("Availability, {} to {}", date_text(data.from.date_naive()), date_text(data.to.date_naive()))}</h2>
                        <div class="table-wrap">
                            <table class="data-table" id="report-table">
                                <thead>
                                    <tr>
                                        <th scope="col">"Practice"</th>
                                        <th scope="col" class="num">"Availability"</th>
                                        <th scope="col" class="num">"Failovers"</th>
                                        <th scope="col" class="num">"Time on backup"</th>
                                        <th scope="col" class="num">"Offline incidents"</th>
                                        <th scope="col" class="num">"Time offline"</th>
                                        <th scope="col" class="num">"Failed drills"</th>
                                        <th scope="col">"Drill status"</th>
                                    </tr>
                                </thead>
                                <tbody>{rows}</tbody>
                            </table>
                        </div>
                    </section>
                    <section class="card section">
                        <h2>"Incidents"</h2>
                        {incidents.is_empty().then(|| view! { <p class="muted">"No failovers, outages or drill problems in this period."</p> })}
                        <ul class="plain-list incident-list">
                            {incidents.into_iter().take(200).map(|a| view! {
                                <li data-kind=a.kind.as_str()>
                                    <strong>{alert_kind_label(a.kind)}</strong>" · "
                                    {a.practice_name.clone()}" · "<span class="serial">{a.appliance_serial.clone()}</span>" · "
                                    {time_exact(Some(a.first_seen))}
                                    {a.resolved_at.map(|r| format!(" · lasted {}", duration_text((r - a.first_seen).num_seconds())))}
                                    <div class="muted small">{a.summary.clone()}</div>
                                </li>
                            }).collect_view()}
                        </ul>
                    </section>
                    <DrillLog practices=data.practices.clone() days=(data.to - data.from).num_days() />
                }
            })}
        </section>
    }
}

/// One drill event with the serial of the appliance that ran it.
type Drill = (String, EventRecord);

/// Drills per practice from the appliances' own events, loaded on request (one call per appliance).
#[component]
fn DrillLog(practices: Vec<PracticeSummary>, days: i64) -> impl IntoView {
    let session = use_session();
    let chosen = RwSignal::new(String::new());
    let drills: RwSignal<Option<Result<Vec<Drill>, String>>> = RwSignal::new(None);
    let busy = RwSignal::new(false);
    let load = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(practice) = chosen.get_untracked().parse::<PracticeId>() else {
            return;
        };
        busy.set(true);
        leptos::task::spawn_local(async move {
            let result = load_drills(session, practice, days).await;
            busy.set(false);
            drills.set(Some(result.map_err(|e| e.to_string())));
        });
    };
    view! {
        <section class="card section" aria-labelledby="drills-heading">
            <h2 id="drills-heading">"Drill log"</h2>
            <form class="inline-form" on:submit=load>
                <label for="drill-practice">"Practice"</label>
                <select id="drill-practice" on:change=move |ev| chosen.set(event_target_value(&ev))>
                    <option value="">"Choose…"</option>
                    {practices.into_iter().map(|p| view! { <option value=p.id.to_string()>{p.name}</option> }).collect_view()}
                </select>
                <button type="submit" class="button button-secondary button-small" disabled=move || busy.get()>"Show drills"</button>
            </form>
            {move || drills.get().map(|r| match r {
                Err(message) => view! { <p class="notice notice-error">{message}</p> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="muted">"No drills recorded in this period."</p> }.into_any(),
                Ok(list) => view! {
                    <table class="data-table compact">
                        <thead><tr><th scope="col">"When"</th><th scope="col">"Appliance"</th><th scope="col">"Event"</th><th scope="col">"Detail"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|(serial, r)| view! {
                                <tr>
                                    <td>{time_exact(Some(r.sent_at))}</td>
                                    <td class="serial">{serial}</td>
                                    <td>{match r.event.kind {
                                        EventKind::DrillStarted => "started",
                                        EventKind::DrillFinished => "finished",
                                        _ => "failed",
                                    }}</td>
                                    <td class="small">{r.event.reason.clone()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </section>
    }
}

async fn load_drills(
    session: Session,
    practice: PracticeId,
    days: i64,
) -> Result<Vec<Drill>, Failure> {
    let since = (utc_now() - Duration::days(days)).to_rfc3339();
    let appliances: Page<ApplianceView> = api::get(
        session,
        &format!("/api/v1/appliances?practice_id={practice}&limit=100"),
    )
    .await?;
    let mut drills = Vec::new();
    for appliance in appliances.items {
        let path = format!(
            "/api/v1/appliances/{}/events{}",
            appliance.id,
            query_string(&[
                ("limit", Some("500".into())),
                ("since", Some(since.clone()))
            ])
        );
        let events: Page<EventRecord> = api::get(session, &path).await?;
        drills.extend(
            events
                .items
                .into_iter()
                .filter(|r| {
                    matches!(
                        r.event.kind,
                        EventKind::DrillStarted | EventKind::DrillFinished | EventKind::DrillFailed
                    )
                })
                .map(|r| (appliance.serial.clone(), r)),
        );
    }
    drills.sort_by_key(|d| std::cmp::Reverse(d.1.sent_at));
    Ok(drills)
}
