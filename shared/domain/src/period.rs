//! Billing periods: each account renews monthly on its own anchor day.
//!
//! Month ends clamp to the anchor's day, not to the previous period: an
//! anchor on the 31st renews on Feb 28 (29) and again on Mar 31.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// One billing month: `[start, end)`; `end` is the next renewal date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Period {
    /// The period of `anchor` that contains `date` (a date before the anchor
    /// belongs to the first period).
    pub fn containing(anchor: NaiveDate, date: NaiveDate) -> Period {
        let mut n = months_between(anchor, date).max(0) as u32;
        // months_between counts calendar months; clamping can leave the
        // candidate start after `date` (anchor 31, date Mar 30 → start Mar 31).
        while n > 0 && month_from_anchor(anchor, n) > date {
            n -= 1;
        }
        Period {
            start: month_from_anchor(anchor, n),
            end: month_from_anchor(anchor, n + 1),
        }
    }

    /// Which month of the anchor this is: 0 for the first, 12 for the
    /// first month of the second year.
    pub fn index(&self, anchor: NaiveDate) -> u32 {
        months_between(anchor, self.start).max(0) as u32
    }

    /// The instant the period starts (00:00 UTC).
    pub fn starts_at(&self) -> DateTime<Utc> {
        start_of_day(self.start)
    }

    /// The instant the period ends and the next allowance is due (00:00 UTC).
    pub fn renews_at(&self) -> DateTime<Utc> {
        start_of_day(self.end)
    }
}

pub fn start_of_day(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn months_between(from: NaiveDate, to: NaiveDate) -> i64 {
    (i64::from(to.year()) - i64::from(from.year())) * 12 + i64::from(to.month()) - i64::from(from.month())
}

/// The anchor moved `n` months on, its day clamped to the month's length.
pub fn month_from_anchor(anchor: NaiveDate, n: u32) -> NaiveDate {
    let month0 = anchor.month0() + n;
    let year = anchor.year() + (month0 / 12) as i32;
    let month = month0 % 12 + 1;
    let mut day = anchor.day();
    loop {
        if let Some(d) = NaiveDate::from_ymd_opt(year, month, day) {
            return d;
        }
        day -= 1;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn month_ends_clamp_to_the_anchor_day() {
        let anchor = d(2026, 1, 31);
        assert_eq!(month_from_anchor(anchor, 1), d(2026, 2, 28));
        assert_eq!(month_from_anchor(anchor, 2), d(2026, 3, 31));
        assert_eq!(month_from_anchor(anchor, 3), d(2026, 4, 30));
        assert_eq!(month_from_anchor(d(2027, 12, 31), 2), d(2028, 2, 29));
    }

    #[test]
    fn finds_the_period_containing_a_date() {
        let anchor = d(2026, 1, 31);
        assert_eq!(
            Period::containing(anchor, d(2026, 1, 31)),
            Period {
                start: d(2026, 1, 31),
                end: d(2026, 2, 28)
            }
        );
        assert_eq!(
            Period::containing(anchor, d(2026, 2, 27)),
            Period {
                start: d(2026, 1, 31),
                end: d(2026, 2, 28)
            }
        );
        assert_eq!(
            Period::containing(anchor, d(2026, 2, 28)),
            Period {
                start: d(2026, 2, 28),
                end: d(2026, 3, 31)
            }
        );
        assert_eq!(
            Period::containing(anchor, d(2026, 3, 30)),
            Period {
                start: d(2026, 2, 28),
                end: d(2026, 3, 31)
            }
        );
        assert_eq!(
            Period::containing(anchor, d(2026, 3, 31)),
            Period {
                start: d(2026, 3, 31),
                end: d(2026, 4, 30)
            }
        );
        assert_eq!(
            Period::containing(d(2026, 11, 22), d(2027, 2, 1)),
            Period {
                start: d(2027, 1, 22),
                end: d(2027, 2, 22)
            }
        );
    }

    #[test]
    fn every_date_falls_in_exactly_one_period() {
        for anchor_day in [1, 15, 28, 29, 30, 31] {
            let anchor = d(2024, 1, anchor_day);
            let mut date = anchor;
            for _ in 0..800 {
                let p = Period::containing(anchor, date);
                assert!(p.start <= date && date < p.end, "{anchor} {date} {p:?}");
                date = date.succ_opt().unwrap();
            }
        }
    }

    /// Any anchor a subscription can have: any day 1-31 that exists in any
    /// month of 2000-2100.
    fn anchor() -> impl Strategy<Value = NaiveDate> {
        (2000i32..=2100, 1u32..=12, 1u32..=31)
            .prop_filter_map("a real date", |(y, m, day)| NaiveDate::from_ymd_opt(y, m, day))
    }

    /// Days in a month, from the calendar rather than from the code under test.
    fn days_in(year: i32, month: u32) -> u32 {
        let next = if month == 12 {
            d(year + 1, 1, 1)
        } else {
            d(year, month + 1, 1)
        };
        next.pred_opt().unwrap().day()
    }

    fn month_number(date: NaiveDate) -> i64 {
        i64::from(date.year()) * 12 + i64::from(date.month0())
    }

    proptest! {
        /// Over a century of renewals: each falls in the very next calendar
        /// month (none skipped, none repeated), on the anchor's day or the
        /// month's last day when the month is shorter, strictly after the one
        /// before.
        #[test]
        fn renewals_fall_on_the_anchor_day_every_month(anchor in anchor()) {
            let mut previous = anchor;
            prop_assert_eq!(month_from_anchor(anchor, 0), anchor);
            for n in 1..=1_212u32 {
                let renewal = month_from_anchor(anchor, n);
                prop_assert!(renewal > previous, "{} not after {}", renewal, previous);
                prop_assert_eq!(month_number(renewal), month_number(anchor) + i64::from(n));
                let day = anchor.day().min(days_in(renewal.year(), renewal.month()));
                prop_assert_eq!(renewal.day(), day, "{} from anchor {}", renewal, anchor);
                previous = renewal;
            }
        }

        /// The period of any day runs from one renewal to the next and holds
        /// that day (a day before the anchor belongs to the first period);
        /// asked from any day in it, the next renewal is its end, and from
        /// its end, the period after it starts.
        #[test]
        fn the_period_of_any_day_ends_at_its_next_renewal(anchor in anchor(), offset in -400i64..40_000) {
            let date = anchor + chrono::Duration::days(offset);
            let p = Period::containing(anchor, date);
            if date < anchor {
                prop_assert_eq!(p, Period { start: anchor, end: month_from_anchor(anchor, 1) });
            } else {
                prop_assert!(p.start <= date && date < p.end, "{} not in {:?}", date, p);
            }
            let n = p.index(anchor);
            prop_assert_eq!((p.start, p.end), (month_from_anchor(anchor, n), month_from_anchor(anchor, n + 1)));
            prop_assert_eq!(Period::containing(anchor, p.start), p);
            prop_assert_eq!(Period::containing(anchor, p.end.pred_opt().unwrap()), p);
            let next = Period::containing(anchor, p.end);
            prop_assert_eq!((next.start, next.index(anchor)), (p.end, n + 1));
            prop_assert_eq!((p.starts_at(), p.renews_at()), (start_of_day(p.start), start_of_day(p.end)));
        }
    }
}
