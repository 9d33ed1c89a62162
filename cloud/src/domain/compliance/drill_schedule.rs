//! Scheduled drills: when a practice's drill window is open ([`window_start`], pure) and whether
//! a drill is due in it ([`drill_due`], pure), and the sweep that queues one `start_drill` command
//! per appliance and window ([`sweep`]).
//!
//! Design: a window lasts an hour and is placed in the practice's own time zone relative to its
//! clinic hours: `minutes` after the last closing of a day it is open, `minutes` before its first
//! opening, or at a fixed local time every day. Wall-clock arithmetic is done on civil times and
//! converted at the end, so a window keeps its local time across daylight-saving changes (one in
//! a skipped hour moves to the first valid instant after it). A drill is due when none started
//! within `every_days` before the window (give or take the window's hour, so a daily drill does
//! not slip by the minutes the last one took). The sweep claims `(appliance, window_start)` in
//! `drill_schedule_runs` before queuing, so two cloud instances never queue two drills.

use chrono::{DateTime, Duration, Utc};
use jiff::Span;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use sqlx::PgPool;
use stayopen_shared::alerts::ClinicHours;
use stayopen_shared::commands::CommandSpec;
use stayopen_shared::policy::{DrillSchedule, DrillWindow};
use stayopen_shared::{ApplianceId, TenantId};
use uuid::Uuid;

use super::drills::SCHEDULER;
use crate::infra::db;
use crate::infra::device_link::DeviceLink;

/// How long a drill window stays open.
pub const WINDOW: Duration = Duration::hours(1);

/// Minutes after local midnight of "HH:MM" ("24:00" allowed, for a closing time).
fn minute_of(hhmm: &str) -> Option<i64> {
    if hhmm == "24:00" {
        return Some(1440);
    }
    DrillWindow::minute_of_day(hhmm).map(i64::from)
}

fn weekday_index(date: Date) -> u8 {
    u8::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0)
}

/// The instant of `minutes` after local midnight of `date` (wall-clock minutes, may run into the
/// next day or back into the previous one).
fn local_instant(tz: &TimeZone, date: Date, minutes: i64) -> Option<DateTime<Utc>> {
    let civil = date
        .at(0, 0, 0, 0)
        .checked_add(Span::new().minutes(minutes))
        .ok()?;
    let zoned = civil.to_zoned(tz.clone()).ok()?;
    DateTime::from_timestamp(zoned.timestamp().as_second(), 0)
}

/// Where the window of local day `date` starts, if that day has one.
fn day_window(
    window: &DrillWindow,
    tz: &TimeZone,
    hours: Option<&ClinicHours>,
    date: Date,
) -> Option<DateTime<Utc>> {
    let spans = |hours: &ClinicHours| -> Vec<(i64, i64)> {
        hours
            .day(weekday_index(date))
            .iter()
            .filter_map(|s| Some((minute_of(&s.open)?, minute_of(&s.close)?)))
            .collect()
    };
    match window {
        DrillWindow::LocalTime { at } => local_instant(tz, date, minute_of(at)?),
        DrillWindow::AfterClosing { minutes } => {
            let close = spans(hours?).into_iter().map(|(_, close)| close).max()?;
            local_instant(tz, date, close + i64::from(*minutes))
        }
        DrillWindow::BeforeOpening { minutes } => {
            let open = spans(hours?).into_iter().map(|(open, _)| open).min()?;
            local_instant(tz, date, open - i64::from(*minutes))
        }
    }
}

/// The start of the drill window open at `now`, or `None` when none is. A practice without
/// clinic hours has no "after closing" or "before opening" window (it counts as always open).
pub fn window_start(
    window: &DrillWindow,
    time_zone: &str,
    hours: Option<&ClinicHours>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tz = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let instant = jiff::Timestamp::from_second(now.timestamp()).ok()?;
    let today = instant.to_zoned(tz.clone()).date();
    // A window can spill past midnight either way: look at the neighbouring days too.
    [-1i64, 0, 1]
        .into_iter()
        .filter_map(|offset| today.checked_add(Span::new().days(offset)).ok())
        .filter_map(|date| day_window(window, &tz, hours, date))
        .find(|start| *start <= now && now < *start + WINDOW)
}

/// The start of the window a drill is due in at `now`: the window is open and no drill started
/// within `every_days` before it.
pub fn drill_due(
    schedule: &DrillSchedule,
    time_zone: &str,
    hours: Option<&ClinicHours>,
    last_drill: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let start = window_start(&schedule.window, time_zone, hours, now)?;
    let recent_since = start - Duration::days(i64::from(schedule.every_days)) + WINDOW;
    match last_drill {
        Some(last) if last >= recent_since => None,
        _ => Some(start),
    }
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: Uuid,
    schedule: sqlx::types::Json<DrillSchedule>,
    time_zone: String,
    clinic_hours: Option<sqlx::types::Json<ClinicHours>>,
    last_drill: Option<DateTime<Utc>>,
}

/// Queues a `start_drill` command for every appliance whose effective policy schedules drills,
/// that is due and whose practice's window is open at `now`, once per window. Returns how many
/// were queued (the caller wakes the delivery loop).
pub async fn sweep(pool: &PgPool, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("SELECT stayopen_tenants_with_drill_schedules()")
        .fetch_all(pool)
        .await?;
    let mut queued = 0;
    for tenant in tenants {
        let tenant = TenantId(tenant);
        let mut tx = db::tenant_tx(pool, tenant).await?;
        let candidates: Vec<Candidate> = sqlx::query_as(
            "SELECT a.id, a.desired_policy -> 'drill_schedule' AS schedule, p.time_zone,
                    p.clinic_hours,
                    (SELECT max(d.started_at) FROM drills d WHERE d.appliance_id = a.id) AS last_drill
             FROM appliances a JOIN practices p ON p.id = a.practice_id
             WHERE a.revoked_at IS NULL
               AND jsonb_typeof(a.desired_policy -> 'drill_schedule') = 'object'",
        )
        .fetch_all(&mut *tx)
        .await?;
        for candidate in candidates {
            let Some(window) = drill_due(
                &candidate.schedule,
                &candidate.time_zone,
                candidate.clinic_hours.as_ref().map(|h| &h.0),
                candidate.last_drill,
                now,
            ) else {
                continue;
            };
            let command_id = Uuid::new_v4();
            let claimed = sqlx::query(
                "INSERT INTO drill_schedule_runs (tenant_id, appliance_id, window_start, command_id)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(tenant.as_uuid())
            .bind(candidate.id)
            .bind(window)
            .bind(command_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                continue;
            }
            crate::domain::commands::queue_system(
                &mut tx,
                tenant,
                &SCHEDULER,
                ApplianceId(candidate.id),
                command_id,
                &CommandSpec::StartDrill {
                    duration_secs: candidate.schedule.duration_secs,
                },
                // Not started by the window's end, it waits for the next one.
                window + WINDOW,
            )
            .await?;
            queued += 1;
        }
        tx.commit().await?;
    }
    Ok(queued)
}

/// Every minute, [`sweep`] at the clock's time.
pub async fn schedule_loop(pool: PgPool, link: DeviceLink, clock: crate::infra::clock::Clock) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        match sweep(&pool, clock.now()).await {
            Ok(0) => {}
            Ok(queued) => {
                tracing::info!(queued, "scheduled drills queued");
                link.wake_delivery.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "drill schedule sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clinic::test_hours::{utc, weekdays};

    fn weekly(window: DrillWindow) -> DrillSchedule {
        DrillSchedule {
            every_days: 7,
            window,
            duration_secs: 300,
        }
    }

    #[test]
    fn a_window_after_closing_opens_that_many_minutes_after_the_clinic_closes_local_time() {
        let hours = weekdays("08:00", "18:00");
        let window = DrillWindow::AfterClosing { minutes: 30 };
        // Tuesday 2026-11-24 in Chicago (UTC−6): closes 18:00, window 18:30–19:30 = 00:30–01:30Z.
        let start = Some(utc("2026-11-25T00:30:00Z"));
        for now in ["2026-11-25T00:30:00Z", "2026-11-25T01:29:59Z"] {
            assert_eq!(
                window_start(&window, "America/Chicago", Some(&hours), utc(now)),
                start,
                "{now}"
            );
        }
        for now in ["2026-11-25T00:29:59Z", "2026-11-25T01:30:00Z"] {
            assert_eq!(
                window_start(&window, "America/Chicago", Some(&hours), utc(now)),
                None,
                "{now}"
            );
        }
    }

    #[test]
    fn a_window_before_opening_ends_when_that_many_minutes_remain_before_opening() {
        let hours = weekdays("08:00", "18:00");
        let window = DrillWindow::BeforeOpening { minutes: 90 };
        // Wednesday 2026-11-25 in Berlin (UTC+1): opens 08:00, window 06:30–07:30 = 05:30–06:30Z.
        assert_eq!(
            window_start(
                &window,
                "Europe/Berlin",
                Some(&hours),
                utc("2026-11-25T06:00:00Z")
            ),
            Some(utc("2026-11-25T05:30:00Z"))
        );
        assert_eq!(
            window_start(
                &window,
                "Europe/Berlin",
                Some(&hours),
                utc("2026-11-25T07:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn a_local_time_window_is_every_day_in_the_practices_zone() {
        let window = DrillWindow::LocalTime { at: "21:15".into() };
        // Sunday 2026-11-22 21:15 in New York (UTC−5) is 02:15Z on Monday.
        assert_eq!(
            window_start(
                &window,
                "America/New_York",
                None,
                utc("2026-11-23T02:20:00Z")
            ),
            Some(utc("2026-11-23T02:15:00Z"))
        );
        assert_eq!(
            window_start(
                &window,
                "America/New_York",
                None,
                utc("2026-11-23T21:20:00Z")
            ),
            None
        );
    }

    #[test]
    fn a_day_the_clinic_is_closed_has_no_window_relative_to_its_hours() {
        let hours = weekdays("08:00", "18:00");
        let window = DrillWindow::AfterClosing { minutes: 30 };
        // Saturday 2026-11-28 18:45 UTC: closed all day.
        assert_eq!(
            window_start(&window, "UTC", Some(&hours), utc("2026-11-28T18:45:00Z")),
            None
        );
        // Without clinic hours the practice counts as always open: never after closing.
        assert_eq!(
            window_start(&window, "UTC", None, utc("2026-11-27T18:45:00Z")),
            None
        );
        // Friday is open.
        assert_eq!(
            window_start(&window, "UTC", Some(&hours), utc("2026-11-27T18:45:00Z")),
            Some(utc("2026-11-27T18:30:00Z"))
        );
    }

    #[test]
    fn the_window_keeps_its_local_time_across_a_daylight_saving_change() {
        let hours = weekdays("08:00", "18:00");
        let window = DrillWindow::AfterClosing { minutes: 60 };
        // New York: Friday 2026-03-06 is UTC−5 (19:00 = 00:00Z); Monday 2026-03-09 is UTC−4
        // (19:00 = 23:00Z).
        assert_eq!(
            window_start(
                &window,
                "America/New_York",
                Some(&hours),
                utc("2026-03-07T00:10:00Z")
            ),
            Some(utc("2026-03-07T00:00:00Z"))
        );
        assert_eq!(
            window_start(
                &window,
                "America/New_York",
                Some(&hours),
                utc("2026-03-09T23:10:00Z")
            ),
            Some(utc("2026-03-09T23:00:00Z"))
        );
        assert_eq!(
            window_start(
                &window,
                "America/New_York",
                Some(&hours),
                utc("2026-03-10T00:10:00Z")
            ),
            None
        );
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_that_closed() {
        let hours = weekdays("08:00", "23:00");
        let window = DrillWindow::AfterClosing { minutes: 90 };
        // Friday closes 23:00, window Saturday 00:30–01:30.
        assert_eq!(
            window_start(&window, "UTC", Some(&hours), utc("2026-11-28T00:45:00Z")),
            Some(utc("2026-11-28T00:30:00Z"))
        );
    }

    #[test]
    fn a_drill_is_due_only_when_none_started_within_its_cadence() {
        let hours = weekdays("08:00", "18:00");
        let schedule = weekly(DrillWindow::AfterClosing { minutes: 30 });
        let now = utc("2026-11-27T18:45:00Z");
        let start = Some(utc("2026-11-27T18:30:00Z"));
        assert_eq!(drill_due(&schedule, "UTC", Some(&hours), None, now), start);
        // Last week's drill, a few minutes later in its window than this week's start: still due.
        assert_eq!(
            drill_due(
                &schedule,
                "UTC",
                Some(&hours),
                Some(utc("2026-11-20T18:40:00Z")),
                now
            ),
            start
        );
        assert_eq!(
            drill_due(
                &schedule,
                "UTC",
                Some(&hours),
                Some(utc("2026-11-24T10:00:00Z")),
                now
            ),
            None
        );
        // Outside the window nothing is due.
        assert_eq!(
            drill_due(
                &schedule,
                "UTC",
                Some(&hours),
                None,
                utc("2026-11-27T12:00:00Z")
            ),
            None
        );
    }
}
