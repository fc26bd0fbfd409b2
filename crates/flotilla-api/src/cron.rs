//! CronJob schedules: the standard five cron fields (minute, hour, day of month, month,
//! day of week, with names, lists, ranges and steps) and the `@yearly` … `@hourly` macros,
//! as kube's `cron.ParseStandard` reads them, evaluated in a CronJob's `timeZone`.
//!
//! Parsing is croner's (seconds and years disallowed, day of month and day of week
//! matched as either-or, as Vixie cron and kube do). Time zones come from jiff's bundled
//! IANA database, so a machine without `/usr/share/zoneinfo` still knows them, as
//! kube-controller-manager embeds Go's.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
}

impl Schedule {
    /// Parses a `spec.schedule`; the error says what is wrong, as the API reports it.
    pub fn parse(schedule: &str) -> Result<Schedule, String> {
        let trimmed = schedule.trim();
        // kube's parser knows `@midnight`; croner calls it `@daily`.
        let pattern = if trimmed.eq_ignore_ascii_case("@midnight") { "@daily" } else { trimmed };
        if !pattern.starts_with('@') {
            let fields = pattern.split_whitespace().count();
            if fields != 5 {
                return Err(format!("expected exactly 5 fields, found {fields}: {schedule}"));
            }
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(pattern).map_err(|e| e.to_string())?;
        Ok(Schedule { cron })
    }

    /// The first scheduled time strictly after `after`, on the wall clock of `zone`.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(zone.clone());
        self.cron.find_next_occurrence(&start, false).ok().map(|z| z.timestamp())
    }
}

/// The zone of a CronJob's `spec.timeZone` (UTC when unset), or why it is not one.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None => Ok(TimeZone::UTC),
        Some("") => Err("timeZone must be nil or non-empty string".to_string()),
        Some(name) if name.eq_ignore_ascii_case("local") => {
            Err("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".to_string())
        }
        Some(name) => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn standard_fields_macros_and_names() {
        let every_15 = Schedule::parse("*/15 * * * *").expect("parses");
        assert_eq!(every_15.next_after(at("2026-01-01T10:07:00Z"), &TimeZone::UTC), Some(at("2026-01-01T10:15:00Z")));
        let hourly = Schedule::parse("@hourly").expect("parses");
        assert_eq!(hourly.next_after(at("2026-01-01T10:00:00Z"), &TimeZone::UTC), Some(at("2026-01-01T11:00:00Z")));
        let midnight = Schedule::parse("@midnight").expect("parses");
        assert_eq!(midnight.next_after(at("2026-01-01T10:00:00Z"), &TimeZone::UTC), Some(at("2026-01-02T00:00:00Z")));
        let weekdays = Schedule::parse("30 9 * * mon-fri").expect("parses");
        // 2026-01-03 is a Saturday: the next run is Monday.
        assert_eq!(weekdays.next_after(at("2026-01-03T00:00:00Z"), &TimeZone::UTC), Some(at("2026-01-05T09:30:00Z")));
    }

    #[test]
    fn day_of_month_and_day_of_week_are_either_or() {
        // The 13th, or any Friday (Vixie cron's rule).
        let schedule = Schedule::parse("0 0 13 * 5").expect("parses");
        // 2026-02-01 is a Sunday; Friday 2026-02-06 comes before the 13th.
        assert_eq!(schedule.next_after(at("2026-02-01T00:00:00Z"), &TimeZone::UTC), Some(at("2026-02-06T00:00:00Z")));
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in ["", "* * * *", "0 0 * * * *", "61 * * * *", "* * * * funday", "not a schedule"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        let nine = Schedule::parse("0 9 * * *").expect("parses");
        let tokyo = time_zone(Some("Asia/Tokyo")).expect("a zone");
        // 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(nine.next_after(at("2026-06-01T12:00:00Z"), &tokyo), Some(at("2026-06-02T00:00:00Z")));
        assert!(time_zone(Some("Mars/Olympus_Mons")).expect_err("not a zone").contains("unknown time zone"));
        assert!(time_zone(Some("Local")).is_err());
        assert!(time_zone(Some("")).is_err());
        assert_eq!(time_zone(None).expect("UTC"), TimeZone::UTC);
    }
}
