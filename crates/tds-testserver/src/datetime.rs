//! PostgreSQL's ISO text forms of dates and times (`DateStyle = ISO`), read into what TDS
//! carries: days since 0001-01-01 and time since midnight.

/// A calendar date read from PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

/// Days from 1970-01-01 to `d` in the proleptic Gregorian calendar.
fn days_since_epoch(d: Date) -> i64 {
    // Count from March 1st so the leap day ends the year; eras are 400-year cycles.
    let y = i64::from(d.year) - i64::from(d.month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(d.month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d.day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Days from 0001-01-01 (what DATE, DATETIME2 and DATETIMEOFFSET carry).
pub fn days_since_year_one(d: Date) -> i64 {
    days_since_epoch(d)
        - days_since_epoch(Date {
            year: 1,
            month: 1,
            day: 1,
        })
}

/// The date `days` after 0001-01-01.
pub fn date_from_days(days: i64) -> Date {
    let z =
        days + days_since_epoch(Date {
            year: 1,
            month: 1,
            day: 1,
        }) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: u32::try_from(month).unwrap_or(0),
        day: u32::try_from(day).unwrap_or(0),
    }
}

fn leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Why a value cannot be sent as a TDS date or time.
pub fn out_of_range(text: &str) -> String {
    format!("{text:?} is outside what SQL Server's date types hold (0001-01-01 to 9999-12-31)")
}

/// `YYYY-MM-DD`, with years 1 to 9999 (SQL Server's range); `BC` dates and infinities are
/// errors.
pub fn parse_date(s: &str) -> Result<Date, String> {
    if s.ends_with(" BC") || s.contains("infinity") {
        return Err(out_of_range(s));
    }
    let mut parts = s.splitn(3, '-');
    let bad = || format!("{s:?} is not an ISO date");
    let year = parts.next().and_then(digits).ok_or_else(bad)?;
    let month = parts.next().and_then(digits).ok_or_else(bad)?;
    let day = parts.next().and_then(digits).ok_or_else(bad)?;
    if !(1..=9999).contains(&year) {
        return Err(out_of_range(s));
    }
    let year = i32::try_from(year).map_err(|_| bad())?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad());
    }
    Ok(Date { year, month, day })
}

/// `HH:MM:SS[.ffffff]`: microseconds since midnight.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not an ISO time");
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.splitn(3, ':');
    let h = parts.next().and_then(digits).ok_or_else(bad)?;
    let m = parts.next().and_then(digits).ok_or_else(bad)?;
    let sec = parts.next().and_then(digits).ok_or_else(bad)?;
    if h > 23 || m > 59 || sec > 59 || frac.len() > 6 {
        return Err(bad());
    }
    let mut micros = 0u64;
    if !frac.is_empty() {
        let f = u64::from(digits(frac).ok_or_else(bad)?);
        micros = f * 10u64.pow(6 - frac.len() as u32);
    }
    Ok((u64::from(h) * 3600 + u64::from(m) * 60 + u64::from(sec)) * 1_000_000 + micros)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`: the date and microseconds since its midnight.
pub fn parse_timestamp(s: &str) -> Result<(Date, u64), String> {
    if s.ends_with(" BC") || s.contains("infinity") {
        return Err(out_of_range(s));
    }
    let (d, t) = s
        .split_once(' ')
        .ok_or_else(|| format!("{s:?} is not an ISO timestamp"))?;
    Ok((parse_date(d)?, parse_time(t)?))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]]`: the UTC date, microseconds since its
/// midnight, and the offset in minutes (an offset with seconds, from before standard time
/// zones, keeps its whole minutes; the UTC instant stays exact).
pub fn parse_timestamptz(s: &str) -> Result<(Date, u64, i16), String> {
    if s.ends_with(" BC") || s.contains("infinity") {
        return Err(out_of_range(s));
    }
    let bad = || format!("{s:?} is not an ISO timestamp with time zone");
    let at = s.rfind(['+', '-']).ok_or_else(bad)?;
    let (local, offset) = s.split_at(at);
    // The last '-' could belong to the date only when there is no offset at all.
    if !local.contains(' ') {
        return Err(bad());
    }
    let sign: i64 = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].splitn(3, ':');
    let oh = parts.next().and_then(digits).ok_or_else(bad)?;
    let om = parts
        .next()
        .map(|p| digits(p).ok_or_else(bad))
        .transpose()?;
    let os = parts
        .next()
        .map(|p| digits(p).ok_or_else(bad))
        .transpose()?;
    let offset_secs = sign
        * (i64::from(oh) * 3600 + i64::from(om.unwrap_or(0)) * 60 + i64::from(os.unwrap_or(0)));
    let (date, micros) = parse_timestamp(local)?;
    let local_us = days_since_year_one(date) * 86_400_000_000 + micros as i64;
    let utc_us = local_us - offset_secs * 1_000_000;
    let days = utc_us.div_euclid(86_400_000_000);
    let date = date_from_days(days);
    if !(1..=9999).contains(&date.year) || days < 0 {
        return Err(out_of_range(s));
    }
    let minutes = i16::try_from(offset_secs / 60).map_err(|_| bad())?;
    Ok((date, utc_us.rem_euclid(86_400_000_000) as u64, minutes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d(year: i32, month: u32, day: u32) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn day_counts_match_known_dates_and_round_trip() {
        assert_eq!(days_since_year_one(d(1, 1, 1)), 0);
        assert_eq!(days_since_year_one(d(1, 1, 2)), 1);
        // 1900-01-01 is day 693595 of the proleptic Gregorian calendar counted from 0001-01-01.
        assert_eq!(days_since_year_one(d(1900, 1, 1)), 693_595);
        assert_eq!(days_since_year_one(d(1970, 1, 1)), 719_162);
        assert_eq!(days_since_year_one(d(9999, 12, 31)), 3_652_058);
        for days in (0..3_652_059).step_by(997) {
            assert_eq!(days_since_year_one(date_from_days(days)), days);
        }
        assert_eq!(date_from_days(738_944), d(2024, 2, 29));
    }

    #[test]
    fn iso_texts_are_read_and_bad_ones_refused() {
        assert_eq!(parse_date("2024-02-29").unwrap(), d(2024, 2, 29));
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("0044-03-15 BC").is_err());
        assert!(parse_date("10000-01-01").is_err());
        assert!(parse_date("infinity").is_err());
        assert_eq!(parse_time("12:34:56.5").unwrap(), 45_296_500_000);
        assert_eq!(parse_time("00:00:00").unwrap(), 0);
        assert!(parse_time("24:00:00").is_err());
        let (date, us) = parse_timestamp("2024-03-01 00:00:01.000001").unwrap();
        assert_eq!((date, us), (d(2024, 3, 1), 1_000_001));
        // 00:30 at +01 is 23:30 the day before in UTC.
        let (date, us, off) = parse_timestamptz("2024-03-01 00:30:00+01").unwrap();
        assert_eq!((date, us, off), (d(2024, 2, 29), 84_600_000_000, 60));
        let (date, us, off) = parse_timestamptz("2024-03-01 23:00:00-05:30").unwrap();
        assert_eq!((date, us, off), (d(2024, 3, 2), 16_200_000_000, -330));
        let (_, _, off) = parse_timestamptz("1850-01-01 00:00:00+00:53:28").unwrap();
        assert_eq!(off, 53);
        assert!(parse_timestamptz("2024-03-01").is_err());
        assert!(parse_timestamptz("0001-01-01 00:00:00+01").is_err());
    }
}
