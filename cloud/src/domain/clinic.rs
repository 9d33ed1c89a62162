//! A practice's clock: whether it is open now and when it next opens, in its own time zone. Pure:
//! the caller passes the time.

use chrono::{DateTime, Utc};
use jiff::tz::TimeZone;
use stayopen_shared::alerts::ClinicHours;

/// Whether a practice is open at an instant, and its next opening when it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClinicNow {
    pub open: bool,
    pub next_opening: Option<DateTime<Utc>>,
}

/// Whether `name` is an IANA time zone this server knows.
pub fn known_time_zone(name: &str) -> bool {
    TimeZone::get(name).is_ok()
}

/// The practice's state at `now`. Without clinic hours a practice counts as always open (every
/// alert is as urgent as its kind). An unknown zone (impossible through the API) reads as UTC.
pub fn clinic_now(time_zone: &str, hours: Option<&ClinicHours>, now: DateTime<Utc>) -> ClinicNow {
    let always_open = ClinicNow {
        open: true,
        next_opening: None,
    };
    let Some(hours) = hours else {
        return always_open;
    };
    let tz = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let Ok(instant) = jiff::Timestamp::from_second(now.timestamp()) else {
        return always_open;
    };
    let local = instant.to_zoned(tz.clone());
    let weekday = u8::try_from(local.weekday().to_monday_zero_offset()).unwrap_or(0);
    let minute =
        u32::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
    if hours.is_open(weekday, minute) {
        return always_open;
    }
    let next_opening = hours
        .next_opening(weekday, minute)
        .and_then(|(days_ahead, minute)| {
            let date = local
                .date()
                .checked_add(jiff::Span::new().days(i64::from(days_ahead)))
                .ok()?;
            let hour = i8::try_from(minute / 60).ok()?;
            let minute = i8::try_from(minute % 60).ok()?;
            // In a daylight-saving gap the opening moves to the first valid instant after it.
            let opening = date.at(hour, minute, 0, 0).to_zoned(tz).ok()?;
            DateTime::from_timestamp(opening.timestamp().as_second(), 0)
        });
    ClinicNow {
        open: false,
        next_opening,
    }
}

/// Clinic hours and instants for the tests of modules that reason about the clinic's day.
#[cfg(test)]
pub(crate) mod test_hours {
    use chrono::{DateTime, Utc};
    use stayopen_shared::alerts::{ClinicHours, OpenSpan};

    /// Open `open`–`close` Monday to Friday, closed at weekends.
    pub(crate) fn weekdays(open: &str, close: &str) -> ClinicHours {
        let span = || {
            vec![OpenSpan {
                open: open.into(),
                close: close.into(),
            }]
        };
        ClinicHours {
            mon: span(),
            tue: span(),
            wed: span(),
            thu: span(),
            fri: span(),
            ..ClinicHours::default()
        }
    }

    pub(crate) fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }
}

#[cfg(test)]
mod tests {
    use super::test_hours::{utc, weekdays};
    use super::*;

    #[test]
    fn ten_in_the_morning_on_a_clinic_day_is_open_in_the_practices_own_zone() {
        let hours = weekdays("08:00", "18:00");
        // Monday 2026-11-23 10:00 in Chicago (UTC−6) is 16:00 UTC.
        let now = clinic_now("America/Chicago", Some(&hours), utc("2026-11-23T16:00:00Z"));
        assert!(now.open);
        // The same instant is 17:00 in Berlin's winter (UTC+1), still open; 19:00 UTC is not.
        assert!(!clinic_now("Europe/Berlin", Some(&hours), utc("2026-11-23T19:00:00Z")).open);
    }

    #[test]
    fn three_on_a_sunday_morning_is_closed_until_monday_opening() {
        let hours = weekdays("08:00", "18:00");
        // Sunday 2026-11-22 03:00 in Chicago is 09:00 UTC.
        let now = clinic_now("America/Chicago", Some(&hours), utc("2026-11-22T09:00:00Z"));
        assert!(!now.open);
        assert_eq!(now.next_opening, Some(utc("2026-11-23T14:00:00Z")));
    }

    #[test]
    fn the_next_opening_follows_daylight_saving_time() {
        let hours = weekdays("08:00", "18:00");
        // Saturday 2026-03-07 in New York is UTC−5; Monday 2026-03-09 08:00 is already UTC−4.
        let now = clinic_now(
            "America/New_York",
            Some(&hours),
            utc("2026-03-07T15:00:00Z"),
        );
        assert_eq!(now.next_opening, Some(utc("2026-03-09T12:00:00Z")));
    }

    #[test]
    fn a_practice_without_clinic_hours_is_always_open() {
        let now = clinic_now("UTC", None, utc("2026-11-22T03:00:00Z"));
        assert!(now.open);
        assert!(known_time_zone("Australia/Sydney"));
        assert!(!known_time_zone("Mars/Olympus_Mons"));
    }
}
