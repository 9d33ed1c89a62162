//! Availability per month and, for a chosen month, per day: the primary line's and what the
//! practice experienced (any uplink), both computed by the cloud from events and telemetry.

use chrono::Datelike;
use leptos::prelude::*;
use stayopen_shared::compliance::AvailabilityMonth;
use stayopen_shared::ids::PracticeId;

use crate::api;
use crate::charts::{AvailabilityGroup, availability_chart};
use crate::components::{FeedStatus, loading, use_session};
use crate::live::{feed, utc_now};
use crate::logic::{
    Interest, availability_range, availability_shares, availability_text, date_text, duration_text,
    from_first_report, gap_label, month_label, month_short,
};

/// How many months the page shows.
const MONTHS: u32 = 12;

fn month_key(month: &AvailabilityMonth) -> String {
    format!("{:04}-{:02}", month.month.year(), month.month.month())
}

#[component]
pub fn Availability(practice: PracticeId) -> impl IntoView {
    let session = use_session();
    let months = feed(Interest::Nothing, 0.0, move || {
        let (from, to) = availability_range(utc_now().date_naive(), MONTHS);
        api::get::<Vec<AvailabilityMonth>>(
            session,
            &format!(
                "/api/v1/practices/{practice}/availability?from={}&to={}",
                date_text(from),
                date_text(to)
            ),
        )
    });
    // The month whose days are shown: the latest until another is chosen.
    let chosen = RwSignal::new(None::<String>);
    let shown = Memo::new(move |_| {
        months.data.with(|d| {
            let list = d.as_ref()?;
            let key = chosen.get();
            list.iter()
                .rev()
                .find(|m| key.as_ref().is_none_or(|k| *k == month_key(m)))
                .cloned()
        })
    });

    view! {
        <section class="card section" id="report-availability" aria-labelledby="availability-heading">
            <h2 id="availability-heading">"Availability"</h2>
            <p class="muted small">
                "Primary line: the share of observed time the practice's primary line was up. "
                "Effective: the share of observed time the practice had internet on any uplink, backups included. "
                "Time no appliance reported on is a gap: it is drawn hatched, labelled “no data” and never counted as up."
            </p>
            <FeedStatus feed=months what="availability" />
            {loading(months)}
            {move || months.data.get().map(|all| {
                let list = from_first_report(&all, 1);
                let groups = list.iter().map(|m| AvailabilityGroup {
                    label: month_short(m.month).to_owned(),
                    title: month_label(m.month),
                    primary: availability_shares(m.primary_pct, m.observed_secs + m.gap_secs, m.gap_secs),
                    effective: availability_shares(m.effective_pct, m.observed_secs + m.gap_secs, m.gap_secs),
                    primary_pct: m.primary_pct,
                    effective_pct: m.effective_pct,
                    gap_secs: m.gap_secs,
                    key: month_key(m),
                }).collect();
                let rows = list.iter().rev().map(|m| view! {
                    <tr data-month=month_key(m)>
                        <th scope="row" data-label="Month">{month_label(m.month)}</th>
                        <td class="num primary" data-label="Primary line">{availability_text(m.primary_pct)}</td>
                        <td class="num effective" data-label="Effective">{availability_text(m.effective_pct)}</td>
                        <td class="num" data-label="On backup">{duration_text(m.on_backup_secs as i64)}</td>
                        <td class="num gap" data-label="Gaps">{gap_label(m.gap_secs).unwrap_or_else(|| "–".to_owned())}</td>
                    </tr>
                }).collect_view();
                view! {
                    {availability_chart("availability-months", "Per month".to_owned(), groups)}
                    <div class="table-wrap">
                        <table class="data-table compact" id="availability-table">
                            <thead>
                                <tr>
                                    <th scope="col">"Month"</th>
                                    <th scope="col" class="num">"Primary line"</th>
                                    <th scope="col" class="num">"Effective"</th>
                                    <th scope="col" class="num">"On backup"</th>
                                    <th scope="col" class="num">"Gaps"</th>
                                </tr>
                            </thead>
                            <tbody>{rows}</tbody>
                        </table>
                    </div>
                }
            })}
        </section>
        <section class="card section" id="report-availability-days" aria-labelledby="availability-days-heading">
            <div class="section-heading">
                <h2 id="availability-days-heading">"Per day"</h2>
                <div class="field field-inline">
                    <label for="availability-month">"Month"</label>
                    <select id="availability-month" on:change=move |ev| chosen.set(Some(event_target_value(&ev)))>
                        {move || months.data.get().map(|list| {
                            let current = shown.get_untracked().map(|m| month_key(&m));
                            list.iter().rev().map(|m| {
                                let key = month_key(m);
                                let selected = current.as_ref() == Some(&key);
                                view! { <option value=key selected=selected>{month_label(m.month)}</option> }
                            }).collect_view()
                        })}
                    </select>
                </div>
            </div>
            {move || shown.get().map(|m| {
                let groups = m.days.iter().map(|d| AvailabilityGroup {
                    label: d.date.day().to_string(),
                    title: date_text(d.date),
                    primary: availability_shares(d.primary_pct, d.observed_secs + d.gap_secs, d.gap_secs),
                    effective: availability_shares(d.effective_pct, d.observed_secs + d.gap_secs, d.gap_secs),
                    primary_pct: d.primary_pct,
                    effective_pct: d.effective_pct,
                    gap_secs: d.gap_secs,
                    key: date_text(d.date),
                }).collect();
                let rows = m.days.iter().map(|d| view! {
                    <tr data-date=date_text(d.date) class:gap-row=d.primary_pct.is_none()>
                        <th scope="row" data-label="Day">{date_text(d.date)}</th>
                        <td class="num primary" data-label="Primary line">{availability_text(d.primary_pct)}</td>
                        <td class="num effective" data-label="Effective">{availability_text(d.effective_pct)}</td>
                        <td class="num gap" data-label="Gaps">{gap_label(d.gap_secs).unwrap_or_else(|| "–".to_owned())}</td>
                    </tr>
                }).collect_view();
                view! {
                    {availability_chart("availability-days-chart", format!("{}, per day", month_label(m.month)), groups)}
                    <details class="day-details">
                        <summary>"The figures of each day"</summary>
                        <div class="table-wrap">
                            <table class="data-table compact" id="availability-days">
                                <thead>
                                    <tr>
                                        <th scope="col">"Day"</th>
                                        <th scope="col" class="num">"Primary line"</th>
                                        <th scope="col" class="num">"Effective"</th>
                                        <th scope="col" class="num">"Gaps"</th>
                                    </tr>
                                </thead>
                                <tbody>{rows}</tbody>
                            </table>
                        </div>
                    </details>
                }
            })}
        </section>
    }
}
