//! Unix seconds as a readable UTC time, for error messages (no time-zone database needed).

use std::fmt;

/// Displays Unix seconds as `2023-11-14 22:13:20 UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc(pub u64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / 86_400;
        let secs = self.0 % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, restricted to non-negative days). Eras are 400-year cycles of 146 097
/// days starting on a March 1st, so the leap day is the last day of each era-year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::Utc;

    #[test]
    fn known_dates() {
        // Expected values from `date -u -d @N`.
        assert_eq!(Utc(0).to_string(), "1970-01-01 00:00:00 UTC");
        assert_eq!(Utc(951_782_400).to_string(), "2000-02-29 00:00:00 UTC");
        assert_eq!(Utc(951_868_799).to_string(), "2000-02-29 23:59:59 UTC");
        assert_eq!(Utc(1_700_000_000).to_string(), "2023-11-14 22:13:20 UTC");
        assert_eq!(Utc(4_107_542_399).to_string(), "2100-02-28 23:59:59 UTC");
        assert_eq!(Utc(4_107_542_400).to_string(), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn does_not_overflow() {
        let _ = Utc(u64::MAX).to_string();
    }
}
