//! Proleptic Gregorian calendar arithmetic on day numbers (days since
//! 1970-01-01), in O(1) and without allocation. The algorithms are Howard
//! Hinnant's `days_from_civil` / `civil_from_days`.

/// Day number of `year`-`month`-`day` (month 1..=12, day 1..=31).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of day number `days`.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31 by construction.
    (year, month as u32, day as u32)
}

/// Number of days in `month` of `year`.
pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, NaiveDate};

    use super::*;

    fn check(year: i32, month: u32, day: u32) {
        let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
        let expected = date
            .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
            .num_days();
        let days = days_from_civil(i64::from(year), month, day);
        assert_eq!(days, expected, "{date}");
        assert_eq!(
            civil_from_days(days),
            (i64::from(year), month, day),
            "{date}"
        );
        let last = (28..=31)
            .rev()
            .find(|d| NaiveDate::from_ymd_opt(year, month, *d).is_some())
            .unwrap();
        assert_eq!(days_in_month(i64::from(year), month), last, "{date}");
        assert_eq!(date.day(), day);
    }

    #[test]
    fn day_numbers_agree_with_chrono() {
        check(1970, 1, 1);
        check(1969, 12, 31);
        check(2000, 2, 29);
        check(1900, 2, 28);
        check(2024, 2, 29);
        check(2026, 3, 8);
        check(1600, 3, 1);
        check(-44, 3, 15);
        check(9999, 12, 31);
        for days in (-800_000..800_000).step_by(997) {
            let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Days::new(0);
            let date = date
                .checked_add_signed(chrono::TimeDelta::days(days))
                .unwrap();
            check(date.year(), date.month(), date.day());
        }
    }
}
