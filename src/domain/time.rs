//! Event-time arithmetic: instants are epoch milliseconds (UTC), months are
//! counted as `year * 12 + month0` so window maths is plain integer maths.
//!
//! Everything the engine decides is in event time (SPEC §2), so this module
//! is the one place that knows what a "day", a "midnight" and a "calendar
//! month" are.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// An instant of event or stream time: milliseconds since the Unix epoch,
/// UTC. A type of its own rather than a bare `i64`, so that an instant is
/// never taken for a duration, a count or a month index: two instants
/// subtract to a duration in milliseconds (an `i64`), and an instant plus
/// a duration is an instant. Stored and sent as its `i64` (`transparent`),
/// so the stored profiles' bytes are those of the bare number.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(i64);

impl Millis {
    /// Earlier than every instant (a floor that nothing is below).
    pub const MIN: Millis = Millis(i64::MIN);
    /// Later than every instant (a deadline that never comes).
    pub const MAX: Millis = Millis(i64::MAX);

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_ms(ms: i64) -> Self {
        Millis(ms)
    }

    /// Milliseconds since the epoch (for keys, wire formats and clocks).
    pub const fn ms(self) -> i64 {
        self.0
    }
}

impl Add<i64> for Millis {
    type Output = Millis;
    /// The instant a duration in milliseconds later.
    fn add(self, ms: i64) -> Millis {
        Millis(self.0 + ms)
    }
}

impl Sub<i64> for Millis {
    type Output = Millis;
    /// The instant a duration in milliseconds earlier.
    fn sub(self, ms: i64) -> Millis {
        Millis(self.0 - ms)
    }
}

impl Sub for Millis {
    type Output = i64;
    /// The duration in milliseconds from `earlier` to `self`.
    fn sub(self, earlier: Millis) -> i64 {
        self.0 - earlier.0
    }
}

impl AddAssign<i64> for Millis {
    fn add_assign(&mut self, ms: i64) {
        self.0 += ms;
    }
}

impl SubAssign<i64> for Millis {
    fn sub_assign(&mut self, ms: i64) {
        self.0 -= ms;
    }
}

/// [`Millis::from_ms`], short for the small instants tests count in.
#[cfg(test)]
pub const fn ms(ms: i64) -> Millis {
    Millis(ms)
}

/// Written as its milliseconds, as keys and logs have always shown it.
impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One day in milliseconds; days are fixed 86 400 s in UTC (no leap seconds).
pub const DAY_MS: i64 = 86_400_000;

/// A calendar month as a single integer (`year * 12 + month - 1`), so that
/// "the current month and the 11 before it" is `m - 11 ..= m`.
pub type MonthIndex = i32;

/// The calendar month (UTC) an instant falls in.
///
/// A look-up in [`MONTH_STARTS`] for the instants events can have (the
/// engine asks this several times per event and per deadline search;
/// calendar arithmetic per call was 8% of a replay's instructions), and
/// the proleptic Gregorian "civil from days" conversion of H. Hinnant's
/// date algorithms outside that range.
pub fn month_of(t: Millis) -> MonthIndex {
    let table = &MONTH_STARTS;
    if t >= table[0] && t < table[TABLE_MONTHS] {
        // The average month's length puts the guess within one month.
        let mut i = (((t - table[0]) / AVERAGE_MONTH_MS) as usize).min(TABLE_MONTHS - 1);
        while table[i] > t {
            i -= 1;
        }
        while table[i + 1] <= t {
            i += 1;
        }
        return TABLE_FIRST + i as MonthIndex;
    }
    let (year, month0, _) = civil_from_days(t.0.div_euclid(DAY_MS));
    // Years of valid instants (decode checks the range) fit an i32.
    year as i32 * 12 + month0 as i32
}

/// The instant at which a calendar month starts (its first midnight, UTC).
pub fn month_start(m: MonthIndex) -> Millis {
    match usize::try_from(m - TABLE_FIRST) {
        Ok(i) if i <= TABLE_MONTHS => MONTH_STARTS[i],
        _ => civil_month_start(m),
    }
}

/// [`month_start`] by calendar arithmetic.
const fn civil_month_start(m: MonthIndex) -> Millis {
    let year = m.div_euclid(12) as i64;
    let month0 = m.rem_euclid(12) as i64;
    Millis(days_from_civil(year, month0, 0) * DAY_MS)
}

/// The first month [`MONTH_STARTS`] holds: January 1970 (no valid event
/// is earlier).
const TABLE_FIRST: MonthIndex = 1970 * 12;
/// How many months it covers: through December 2199.
const TABLE_MONTHS: usize = 230 * 12;
/// The mean Gregorian month, 365.2425 / 12 days.
const AVERAGE_MONTH_MS: i64 = 2_629_746_000;

/// The start of every month from [`TABLE_FIRST`] on, and of the month
/// after the last: computed at compile time, once.
static MONTH_STARTS: [Millis; TABLE_MONTHS + 1] = {
    let mut table = [Millis(0); TABLE_MONTHS + 1];
    let mut i = 0;
    while i <= TABLE_MONTHS {
        table[i] = civil_month_start(TABLE_FIRST + i as MonthIndex);
        i += 1;
    }
    table
};

/// `(year, month 0..=11, day of month 0..=30)` of a day number (days since
/// 1970-01-01).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Shift the epoch to 0000-03-01 so leap days end each 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March year
    let mp = (5 * doy + 2) / 153; // 0 = March .. 11 = February
    let day0 = doy - (153 * mp + 2) / 5;
    let month0 = if mp < 10 { mp + 2 } else { mp - 10 };
    let year = yoe + era * 400 + i64::from(month0 < 2);
    (year, month0, day0)
}

/// The day number of a civil date (`month0` 0..=11, `day0` 0..=30): the
/// inverse of [`civil_from_days`].
const fn days_from_civil(year: i64, month0: i64, day0: i64) -> i64 {
    let y = if month0 < 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month0 >= 2 { month0 - 2 } else { month0 + 10 };
    let doy = (153 * mp + 2) / 5 + day0;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The instant of an RFC 3339 time in its usual UTC form,
/// `YYYY-MM-DDTHH:MM:SS[.f]Z` with 1 to 9 fraction digits (truncated to
/// milliseconds); `None` for any other form or an invalid date, which a
/// full parser reads. Nearly every input event's `ts` has this form, and a
/// general RFC 3339 parser took a tenth of decoding.
pub fn parse_utc_z(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        b.get(from..to)?.iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let ms = match b.get(19..)? {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            let digits = num(20, 20 + fraction.len())?;
            // The first three digits, as milliseconds.
            let scale = 10i64.pow(fraction.len() as u32);
            digits * 1000 / scale
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || day < 1 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month - 1, day - 1);
    // A day past its month's end lands in the next month.
    if civil_from_days(days) != (year, month - 1, day - 1) {
        return None;
    }
    Some(Millis(
        days * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + ms,
    ))
}

/// The last UTC midnight at or before `t`.
pub fn midnight_at_or_before(t: Millis) -> Millis {
    Millis(t.0.div_euclid(DAY_MS) * DAY_MS)
}

/// The first UTC midnight strictly after `t`: the next daily tick once
/// stream time has reached `t`.
pub fn next_midnight(t: Millis) -> Millis {
    midnight_at_or_before(t) + DAY_MS
}

/// Whether a midnight is the first of a month (a month-close instant).
pub fn is_month_start(midnight: Millis) -> bool {
    civil_from_days(midnight.0.div_euclid(DAY_MS)).2 == 0
}

/// Renders an instant the way every output writes time: RFC 3339, UTC,
/// milliseconds, `Z` (SPEC §7). Years outside 0..=9999 (which no valid
/// input reaches) are left to chrono.
pub fn format_rfc3339(t: Millis) -> String {
    match rfc3339_bytes(t) {
        Some(b) => std::str::from_utf8(&b).expect("ASCII").to_owned(),
        None => utc(t).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    }
}

/// The 24 bytes of an instant in RFC 3339 (`2026-01-05T10:00:00.000Z`),
/// for years 0..=9999. Every output carries instants, so this is integer
/// arithmetic on a fixed layout, written where the caller wants it
/// without an allocation: `format!` was a fifth of output encoding.
pub fn rfc3339_bytes(t: Millis) -> Option<[u8; 24]> {
    let (year, month0, day0) = civil_from_days(t.0.div_euclid(DAY_MS));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let ms = t.0.rem_euclid(DAY_MS);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month0 + 1);
    put(8, 2, day0 + 1);
    put(11, 2, ms / 3_600_000);
    put(14, 2, ms / 60_000 % 60);
    put(17, 2, ms / 1000 % 60);
    put(20, 3, ms % 1000);
    Some(b)
}

fn utc(t: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.0)
        .single()
        .expect("instant within chrono's range (validated at decode)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_5_2026_10H: Millis = Millis(1_767_607_200_000); // 2026-01-05T10:00:00Z

    #[test]
    fn the_month_table_agrees_with_calendar_arithmetic() {
        let civil_month_of = |t: Millis| {
            let (year, month0, _) = civil_from_days(t.0.div_euclid(DAY_MS));
            year as i32 * 12 + month0 as i32
        };
        for m in TABLE_FIRST - 2..TABLE_FIRST + TABLE_MONTHS as MonthIndex + 3 {
            let start = civil_month_start(m);
            assert_eq!(month_start(m), start, "{m}");
            for t in [start - 1, start, start + 1, start + 27 * DAY_MS] {
                assert_eq!(month_of(t), civil_month_of(t), "{t}");
            }
        }
    }

    fn chrono_millis(s: &str) -> Option<Millis> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Millis(t.timestamp_millis()))
    }

    #[test]
    fn the_usual_utc_form_is_read_as_chrono_reads_it() {
        for s in [
            "2026-01-05T10:00:00Z",
            "2026-01-05T10:00:00.1Z",
            "2026-01-05T10:00:00.123Z",
            "2026-01-05T10:00:00.123999999Z",
            "2024-02-29T23:59:59.999Z",
            "1970-01-01T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
        ] {
            assert_eq!(parse_utc_z(s), chrono_millis(s), "{s}");
            assert!(parse_utc_z(s).is_some(), "{s}");
        }
        // Other forms and invalid dates are left to the full parser.
        for s in [
            "2026-01-05T10:00:00+00:00",
            "2026-01-05t10:00:00z",
            "2026-01-05T10:00:00.Z",
            "2026-01-05T10:00:00.1234567890Z",
            "2026-01-05T10:00:60Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-05T24:00:00Z",
            "2026-1-05T10:00:00Z",
            "+2026-01-05T10:00:00Z",
            "",
        ] {
            assert_eq!(parse_utc_z(s), None, "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_of_the_form_agrees_with_chrono(
            year in 0i64..10_000,
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..26,
            minute in 0u32..62,
            second in 0u32..62,
            fraction in proptest::option::of("[0-9]{1,9}"),
        ) {
            let s = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{}Z",
                fraction.map(|f| format!(".{f}")).unwrap_or_default()
            );
            if let Some(ms) = parse_utc_z(&s) {
                proptest::prop_assert_eq!(Some(ms), chrono_millis(&s), "{}", s);
            } else {
                // Refused only what chrono refuses, or a leap second.
                proptest::prop_assert!(chrono_millis(&s).is_none() || second == 60, "{}", s);
            }
        }
    }

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

    /// The integer conversions agree with chrono on every day from 1600
    /// to 2400 (both directions, and the first of each month).
    #[test]
    fn integer_calendar_matches_chrono() {
        use chrono::{Datelike, NaiveDate};
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut d = NaiveDate::from_ymd_opt(1600, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2400, 1, 1).unwrap();
        while d < end {
            let n = (d - epoch).num_days();
            let t = Millis(n * DAY_MS);
            let m = d.year() * 12 + d.month0() as i32;
            assert_eq!(month_of(t), m, "{d}");
            assert_eq!(month_of(t + DAY_MS - 1), m, "{d} 23:59:59.999");
            assert_eq!(is_month_start(t), d.day() == 1, "{d}");
            if d.day() == 1 {
                assert_eq!(month_start(m), t, "{d}");
            }
            d = d.succ_opt().unwrap();
        }
    }

    /// The integer rendering agrees with chrono's from 1600 to 2400, at
    /// instants spread over every day's hours, minutes and milliseconds.
    #[test]
    fn rendering_matches_chrono() {
        let from = Millis(-11_676_096_000_000); // 1600-01-01
        let to = Millis(13_569_465_600_000); // 2400-01-01
        let mut t = from;
        while t < to {
            let want = utc(t).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(format_rfc3339(t), want);
            t += 86_399_999 / 7 + 12_345;
        }
    }

    #[test]
    fn instants_subtract_to_durations_and_serialize_as_their_millis() {
        let t = JAN_5_2026_10H;
        assert_eq!((t + DAY_MS) - t, DAY_MS);
        assert_eq!(t + DAY_MS - DAY_MS, t);
        let mut u = t;
        u += 7;
        u -= 2;
        assert_eq!(u - t, 5);
        assert!(Millis::MIN < t && t < Millis::MAX);
        assert_eq!(t.to_string(), "1767607200000");
        assert_eq!(serde_json::to_string(&t).unwrap(), "1767607200000");
        assert_eq!(
            postcard::to_allocvec(&t).unwrap(),
            postcard::to_allocvec(&t.ms()).unwrap()
        );
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
