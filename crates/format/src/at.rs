//! Naming a past version of a database: `NAME@VERSION` or
//! `NAME@2026-11-29T10:00:00Z` (docs/format.md, "History").
//!
//! `@` is not allowed in database names, so a reference splits at its
//! only `@` without ambiguity. Times are RFC 3339 in UTC or with an
//! offset; this crate does no I/O and has no clock, so the few lines of
//! calendar arithmetic live here rather than in a dependency.

use crate::{DbName, NameError};
use std::fmt;

/// Which version of a database to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Exactly this root version.
    Version(u64),
    /// The version current at this time: going back from the newest, the
    /// first whose commit time is at or before it (ms since the Unix epoch).
    TimeMs(u64),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Version(v) => write!(f, "{v}"),
            At::TimeMs(ms) => f.write_str(&format_utc_ms(*ms)),
        }
    }
}

/// A database name, optionally at a past version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRef {
    pub name: DbName,
    pub at: Option<At>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbRefError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(
        "{0:?} after '@' is neither a version (a number from 1) nor a time like 2026-11-29T10:00:00Z"
    )]
    At(String),
}

impl DbRef {
    /// `NAME` or `NAME@AT`.
    pub fn parse(text: &str) -> Result<DbRef, DbRefError> {
        let Some((name, at)) = text.split_once('@') else {
            return Ok(DbRef {
                name: DbName::new(text)?,
                at: None,
            });
        };
        Ok(DbRef {
            name: DbName::new(name)?,
            at: Some(parse_at(at)?),
        })
    }
}

impl fmt::Display for DbRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            None => write!(f, "{}", self.name),
            Some(at) => write!(f, "{}@{at}", self.name),
        }
    }
}

/// A version (`12`) or an RFC 3339 time (`2026-11-29T10:00:00Z`,
/// `2026-11-29T11:00:00.250+01:00`).
pub fn parse_at(text: &str) -> Result<At, DbRefError> {
    let bad = || DbRefError::At(text.to_string());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let version: u64 = text.parse().map_err(|_| bad())?;
        return match version {
            0 => Err(bad()),
            v => Ok(At::Version(v)),
        };
    }
    parse_rfc3339_ms(text).map(At::TimeMs).ok_or_else(bad)
}

/// Milliseconds since the Unix epoch of an RFC 3339 date-time; `None` if
/// it is not one (or is before 1970).
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut i = 19;
    let mut ms = 0i64;
    if sep(i, b".") {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let fraction = std::str::from_utf8(b.get(start..i)?).ok()?;
        if fraction.is_empty() {
            return None;
        }
        let first3: String = fraction.chars().chain("00".chars()).take(3).collect();
        ms = first3.parse().ok()?;
    }
    let offset_min = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && sep(i + 3, b":") => {
            let minutes = digits(i + 1..i + 3)? * 60 + digits(i + 4..i + 6)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days_in_month = [
        31,
        28 + is_leap(year) as i64,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_min * 60;
    let total = seconds.checked_mul(1000)?.checked_add(ms)?;
    u64::try_from(total).ok()
}

/// `2026-11-29T10:00:00.250Z` (milliseconds shown only when not zero).
pub fn format_utc_ms(ms: u64) -> String {
    let seconds = (ms / 1000) as i64;
    let (days, in_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (in_day / 3600, in_day % 3600 / 60, in_day % 60);
    match ms % 1000 {
        0 => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        frac => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{frac:03}Z"),
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (month <= 2) as i64, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_at_sign() {
        let plain = DbRef::parse("app.db").unwrap();
        assert_eq!((plain.name.as_str(), plain.at), ("app.db", None));
        let version = DbRef::parse("app.db@12").unwrap();
        assert_eq!(version.at, Some(At::Version(12)));
        assert_eq!(version.to_string(), "app.db@12");
        let time = DbRef::parse("app.db@2026-11-29T10:00:00Z").unwrap();
        assert_eq!(time.at, Some(At::TimeMs(1_795_946_400_000)));
        assert_eq!(time.to_string(), "app.db@2026-11-29T10:00:00Z");
        for bad in ["app.db@", "app.db@0", "app.db@x", "app.db@1@2", "@3"] {
            assert!(DbRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_times_with_offsets_and_fractions() {
        let base = parse_rfc3339_ms("2026-11-29T10:00:00Z").unwrap();
        assert_eq!(parse_rfc3339_ms("2026-11-29T11:00:00+01:00"), Some(base));
        assert_eq!(parse_rfc3339_ms("2026-11-29t09:30:00-00:30"), Some(base));
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T10:00:00.25Z"),
            Some(base + 250)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-29T10:00:00",
            "2026-11-29",
            "1969-12-31T23:59:59Z",
            "2026-11-29T10:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_format_and_parse_back() {
        for ms in [0, 1_795_946_400_000, 1_795_946_400_123, 951_782_400_000] {
            assert_eq!(parse_rfc3339_ms(&format_utc_ms(ms)), Some(ms));
        }
        assert_eq!(format_utc_ms(1_795_946_400_000), "2026-11-29T10:00:00Z");
        assert_eq!(format_utc_ms(1_709_251_199_000), "2024-02-29T23:59:59Z");
    }
}
