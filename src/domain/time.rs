//! Event-time arithmetic: instants are epoch milliseconds (UTC), months are
//! counted as `year * 12 + month0` so window maths is plain integer maths.
//!
//! Everything the engine decides is in event time (SPEC §2), so this module
//! is the one place that knows what a "day", a "midnight" and a "calendar
//! month" are.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC. Event time and stream time.
pub type Millis = i64;

/// One day in milliseconds; days are fixed 86 400 s in UTC (no leap seconds).
pub const DAY_MS: Millis = 86_400_000;

/// A calendar month as a single integer (`year * 12 + month - 1`), so that
/// "the current month and the 11 before it" is `m - 11 ..= m`.
pub type MonthIndex = i32;

/// The calendar month (UTC) an instant falls in.
pub fn month_of(t: Millis) -> MonthIndex {
    let d = utc(t);
    d.year() * 12 + d.month0() as i32
}

/// The instant at which a calendar month starts (its first midnight, UTC).
pub fn month_start(m: MonthIndex) -> Millis {
    let date = NaiveDate::from_ymd_opt(m.div_euclid(12), m.rem_euclid(12) as u32 + 1, 1)
        .expect("month index within chrono's range");
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

/// The last UTC midnight at or before `t`.
pub fn midnight_at_or_before(t: Millis) -> Millis {
    t.div_euclid(DAY_MS) * DAY_MS
}

/// The first UTC midnight strictly after `t`: the next daily tick once
/// stream time has reached `t`.
pub fn next_midnight(t: Millis) -> Millis {
    midnight_at_or_before(t) + DAY_MS
}

/// Whether a midnight is the first of a month (a month-close instant).
pub fn is_month_start(midnight: Millis) -> bool {
    utc(midnight).day() == 1
}

/// Renders an instant the way every output writes time: RFC 3339, UTC,
/// milliseconds, `Z` (SPEC §7).
pub fn format_rfc3339(t: Millis) -> String {
    utc(t).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Converts whole and fractional days to milliseconds.
pub fn days(d: f64) -> Millis {
    (d * DAY_MS as f64).round() as Millis
}

fn utc(t: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t)
        .single()
        .expect("instant within chrono's range (validated at decode)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_5_2026_10H: Millis = 1_767_607_200_000; // 2026-01-05T10:00:00Z

    #[test]
    fn formats_with_milliseconds_and_z() {
        assert_eq!(format_rfc3339(JAN_5_2026_10H), "2026-01-05T10:00:00.000Z");
        assert_eq!(
            format_rfc3339(JAN_5_2026_10H + 7),
            "2026-01-05T10:00:00.007Z"
        );
    }

    #[test]
    fn months_round_trip_and_cross_years() {
        let m = month_of(JAN_5_2026_10H);
        assert_eq!(m, 2026 * 12);
        assert_eq!(format_rfc3339(month_start(m)), "2026-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(month_start(m - 1)),
            "2025-12-01T00:00:00.000Z"
        );
        assert_eq!(month_of(month_start(m) - 1), m - 1);
    }

    #[test]
    fn midnights() {
        let m0 = midnight_at_or_before(JAN_5_2026_10H);
        assert_eq!(format_rfc3339(m0), "2026-01-05T00:00:00.000Z");
        assert_eq!(next_midnight(m0), m0 + DAY_MS);
        assert_eq!(midnight_at_or_before(m0), m0);
        assert!(is_month_start(month_start(2026 * 12 + 2)));
        assert!(!is_month_start(m0));
    }
}
