//! Buckets: the parts a meter's balance is made of, each with a source and
//! an expiry, and the order they are spent in.
//!
//! Every bucket's id follows from what granted it, so one grant always names
//! one bucket and the account holds a bounded number of them: one plan
//! bucket per meter and month, one trial bucket per meter, and one
//! purchased pool per meter however many packs were bought. The pool is
//! spent oldest pack first by construction: each pack occupies a range of
//! the pool's cumulative grants, and spending moves a cursor through them
//! (see [`Bucket::consumed`]), so every pack stays traceable without a
//! bucket of its own.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::EntryLine;
use crate::{Credits, DomainError, MeterId, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketSource {
    /// A user's own monthly budget (per-user license plans).
    License,
    /// Last month's unused allowance carried over (plans with a rollover cap).
    Rollover,
    /// The plan's monthly allowance (per-seat plans included).
    Plan,
    Trial,
    Adjustment,
    Purchased,
    /// Credits the account may owe: spent after everything else, repaid
    /// first by the next purchase.
    Overdraft,
}

impl BucketSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BucketSource::License => "license",
            BucketSource::Rollover => "rollover",
            BucketSource::Plan => "plan",
            BucketSource::Trial => "trial",
            BucketSource::Adjustment => "adjustment",
            BucketSource::Purchased => "purchased",
            BucketSource::Overdraft => "overdraft",
        }
    }
}

/// Which bucket, named by what grants it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BucketId {
    /// One month's plan allowance (or, for an annual plan granting up
    /// front, the year's): `plan:<meter>:<period start>`.
    Plan { meter: MeterId, period: NaiveDate },
    /// What a month carried over of the month before: `rollover:<meter>:<period start>`.
    Rollover { meter: MeterId, period: NaiveDate },
    /// One member's license for one month: `license:<meter>:<period start>:<user>`
    /// (the user last: user ids may contain `:`).
    License {
        meter: MeterId,
        period: NaiveDate,
        user: UserId,
    },
    /// The one-time trial grant: `trial:<meter>`.
    Trial { meter: MeterId },
    /// Every pack bought for a meter, spent oldest first: `purchased:<meter>`.
    Purchased { meter: MeterId },
    /// The overdraft allowance of a meter: `granted` is the allowance,
    /// `remaining` what may still be borrowed, so what is owed is their
    /// difference: `overdraft:<meter>`.
    Overdraft { meter: MeterId },
}

impl BucketId {
    pub fn meter(&self) -> &MeterId {
        match self {
            BucketId::Plan { meter, .. }
            | BucketId::Rollover { meter, .. }
            | BucketId::License { meter, .. }
            | BucketId::Trial { meter }
            | BucketId::Purchased { meter }
            | BucketId::Overdraft { meter } => meter,
        }
    }

    pub fn source(&self) -> BucketSource {
        match self {
            BucketId::Plan { .. } => BucketSource::Plan,
            BucketId::Rollover { .. } => BucketSource::Rollover,
            BucketId::License { .. } => BucketSource::License,
            BucketId::Trial { .. } => BucketSource::Trial,
            BucketId::Purchased { .. } => BucketSource::Purchased,
            BucketId::Overdraft { .. } => BucketSource::Overdraft,
        }
    }

    /// The member a license belongs to.
    pub fn licensee(&self) -> Option<&UserId> {
        match self {
            BucketId::License { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Reads the form [`fmt::Display`] writes (stored entries, bucket views).
    pub fn parse(text: &str) -> Result<BucketId, DomainError> {
        let bad = || DomainError::InvalidRequest(format!("invalid bucket id {text:?}"));
        if let Some(rest) = text.strip_prefix("license:") {
            let mut parts = rest.splitn(3, ':');
            let (meter, period, user) = (
                parts.next().ok_or_else(bad)?,
                parts.next().ok_or_else(bad)?,
                parts.next().ok_or_else(bad)?,
            );
            return Ok(BucketId::License {
                meter: MeterId::parse(meter).map_err(|_| bad())?,
                period: period.parse().map_err(|_| bad())?,
                user: UserId::parse(user).map_err(|_| bad())?,
            });
        }
        let mut parts = text.split(':');
        let (kind, meter) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
        let meter = MeterId::parse(meter).map_err(|_| bad())?;
        let id = match (kind, parts.next()) {
            ("plan", Some(date)) => BucketId::Plan {
                meter,
                period: date.parse().map_err(|_| bad())?,
            },
            ("rollover", Some(date)) => BucketId::Rollover {
                meter,
                period: date.parse().map_err(|_| bad())?,
            },
            ("trial", None) => BucketId::Trial { meter },
            ("purchased", None) => BucketId::Purchased { meter },
            ("overdraft", None) => BucketId::Overdraft { meter },
            _ => return Err(bad()),
        };
        match parts.next() {
            None => Ok(id),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketId::Plan { meter, period } => write!(f, "plan:{meter}:{period}"),
            BucketId::Rollover { meter, period } => write!(f, "rollover:{meter}:{period}"),
            BucketId::License { meter, period, user } => write!(f, "license:{meter}:{period}:{user}"),
            BucketId::Trial { meter } => write!(f, "trial:{meter}"),
            BucketId::Purchased { meter } => write!(f, "purchased:{meter}"),
            BucketId::Overdraft { meter } => write!(f, "overdraft:{meter}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub id: BucketId,
    /// Everything ever granted into it (for the purchased pool: every pack).
    pub granted: Credits,
    pub remaining: Credits,
    /// `None`: never expires (purchased credits, the trial).
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_at: DateTime<Utc>,
    /// The ledger entry that opened it.
    pub granted_by: u64,
    /// The purchased pool's voided ranges (offset, amount), by offset: the
    /// part of a voided pack that was not spent yet, which spending skips.
    pub voided: Vec<(Credits, Credits)>,
}

impl Bucket {
    pub fn meter(&self) -> &MeterId {
        self.id.meter()
    }

    pub fn source(&self) -> BucketSource {
        self.id.source()
    }

    /// What is owed: borrowed from an overdraft and not repaid yet (nothing
    /// for every other bucket).
    pub fn owed(&self) -> Credits {
        match self.source() {
            BucketSource::Overdraft => self.granted.checked_sub(self.remaining).unwrap_or_default(),
            _ => Credits::ZERO,
        }
    }

    /// What it adds to the balance: what it holds, or for an overdraft,
    /// minus what is owed (what may still be borrowed is spendable but not
    /// the account's).
    pub fn balance(&self) -> Credits {
        match self.source() {
            BucketSource::Overdraft => -self.owed(),
            _ => self.remaining,
        }
    }

    /// How far spending has moved through the bucket's grants. In the
    /// purchased pool a pack granted at offset `o` of `n` credits has had
    /// `clamp(consumed - o, 0, n)` of them spent.
    pub fn consumed(&self) -> Credits {
        let taken: Credits = self.voided.iter().map(|(_, a)| *a).sum();
        let drawn = self
            .granted
            .checked_sub(self.remaining)
            .and_then(|d| d.checked_sub(taken))
            .unwrap_or(Credits::ZERO);
        // Spending skips each voided range it reaches.
        let mut at = drawn;
        for (offset, amount) in &self.voided {
            if *offset <= at {
                at = at.checked_add(*amount).unwrap_or(at);
            }
        }
        at
    }

    /// Spending priority: credits that expire first are spent first (a
    /// bucket that never expires comes last); among equals, license before
    /// plan before trial before adjustment before purchased, oldest first.
    pub fn priority(&self) -> (bool, Option<DateTime<Utc>>, BucketSource, u64) {
        (
            self.expires_at.is_none(),
            self.expires_at,
            self.source(),
            self.granted_by,
        )
    }

    /// Whether its credits are spendable at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// One bucket's share of a debit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draw {
    pub bucket: BucketId,
    pub amount: Credits,
    /// Where in the bucket's grants the draw starts (its `consumed` before):
    /// in the purchased pool it names the packs that paid.
    pub offset: Credits,
}

impl Draw {
    /// The draw as an entry's line: negative; a pool line says where in the
    /// pool it drew.
    pub fn debit_line(&self) -> EntryLine {
        EntryLine {
            bucket: self.bucket.clone(),
            amount: -self.amount,
            offset: (self.bucket.source() == BucketSource::Purchased).then_some(self.offset),
        }
    }
}

/// Splits `amount` over buckets in spending priority: each bucket gives
/// what it has before the next is touched, none gives more than it holds,
/// and the draws sum to `amount`. Buckets may come in any order; only live
/// ones (see [`Bucket::is_live`]) should be passed. Refuses with what is
/// available when the buckets do not cover the amount.
pub fn allocate(buckets: &[&Bucket], amount: Credits) -> Result<Vec<Draw>, Credits> {
    let mut ordered: Vec<&Bucket> = buckets.to_vec();
    ordered.sort_by_key(|b| b.priority());
    let mut draws = Vec::new();
    let mut left = amount;
    for b in ordered {
        if !left.is_positive() {
            break;
        }
        let take = b.remaining.min(left);
        if take.is_positive() {
            draws.push(Draw {
                bucket: b.id.clone(),
                amount: take,
                offset: b.consumed(),
            });
            left = left.checked_sub(take).expect("take <= left");
        }
    }
    if left.is_positive() {
        return Err(buckets.iter().map(|b| b.remaining).sum());
    }
    Ok(draws)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn meter() -> MeterId {
        MeterId::parse("credits").unwrap()
    }

    #[test]
    fn bucket_ids_read_back_what_they_write() {
        let ids = [
            BucketId::Plan {
                meter: meter(),
                period: NaiveDate::from_ymd_opt(2026, 1, 31).unwrap(),
            },
            BucketId::Trial { meter: meter() },
            BucketId::Purchased { meter: meter() },
            BucketId::Overdraft { meter: meter() },
            BucketId::Rollover {
                meter: meter(),
                period: NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
            },
            BucketId::License {
                meter: meter(),
                period: NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
                user: UserId::parse("auth0|a:b").unwrap(),
            },
        ];
        for id in ids {
            assert_eq!(BucketId::parse(&id.to_string()).unwrap(), id);
        }
        assert_eq!(BucketId::Purchased { meter: meter() }.to_string(), "purchased:credits");
        for bad in [
            "",
            "plan:credits",
            "trial",
            "purchased:credits:x",
            "gift:credits",
            "plan:credits:2026-13-01",
            "license:credits:2026-01-01",
            "license:credits:2026-01-01:",
            "rollover:credits",
        ] {
            assert!(BucketId::parse(bad).is_err(), "{bad}");
        }
    }

    fn bucket_strategy() -> impl Strategy<Value = Bucket> {
        let source = prop_oneof![Just(0u8), Just(1u8), Just(2u8)];
        (source, 0i64..5_000, 0i64..5_000, prop::option::of(1u32..28), 0u64..50).prop_map(
            |(kind, remaining, spent, day, by)| {
                let id = match kind {
                    0 => BucketId::Plan {
                        meter: meter(),
                        period: NaiveDate::from_ymd_opt(2026, 1, day.unwrap_or(1)).unwrap(),
                    },
                    1 => BucketId::Trial { meter: meter() },
                    _ => BucketId::Purchased { meter: meter() },
                };
                let expires_at = match kind {
                    0 => Some(Utc.with_ymd_and_hms(2026, 2, day.unwrap_or(1), 0, 0, 0).unwrap()),
                    _ => None,
                };
                Bucket {
                    id,
                    granted: Credits::from_thousandths(remaining + spent),
                    remaining: Credits::from_thousandths(remaining),
                    expires_at,
                    granted_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                    granted_by: by,
                    voided: Vec::new(),
                }
            },
        )
    }

    /// A bucket of any source. Those that expire (a license, a rollover,
    /// a month's or a year's plan allowance) do so at midnight or noon of
    /// some day, so expiries often coincide; the trial, the purchased pool
    /// and the overdraft never expire.
    fn any_bucket() -> impl Strategy<Value = Bucket> {
        (0u8..6, 0i64..10, any::<bool>(), 0i64..5_000, 0i64..2_000, 0u64..50).prop_map(
            |(kind, day, noon, remaining, spent, by)| {
                let expires = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::hours(day * 24 + if noon { 12 } else { 0 });
                let period = expires.date_naive();
                let (id, expires_at) = match kind {
                    0 => {
                        let user = UserId::parse("u1").unwrap();
                        (
                            BucketId::License {
                                meter: meter(),
                                period,
                                user,
                            },
                            Some(expires),
                        )
                    }
                    1 => (BucketId::Rollover { meter: meter(), period }, Some(expires)),
                    2 => (BucketId::Plan { meter: meter(), period }, Some(expires)),
                    3 => (BucketId::Trial { meter: meter() }, None),
                    4 => (BucketId::Purchased { meter: meter() }, None),
                    _ => (BucketId::Overdraft { meter: meter() }, None),
                };
                Bucket {
                    id,
                    granted: Credits::from_thousandths(remaining + spent),
                    remaining: Credits::from_thousandths(remaining),
                    expires_at,
                    granted_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                    granted_by: by,
                    voided: Vec::new(),
                }
            },
        )
    }

    /// The order the product promises among credits expiring together: the
    /// member's own license, then the plan's allowance (what was carried
    /// over first), the trial, purchased credits, and the overdraft only
    /// once everything else is spent.
    fn promised_rank(source: BucketSource) -> u8 {
        match source {
            BucketSource::License => 0,
            BucketSource::Rollover => 1,
            BucketSource::Plan => 2,
            BucketSource::Trial => 3,
            BucketSource::Adjustment => 4,
            BucketSource::Purchased => 5,
            BucketSource::Overdraft => 6,
        }
    }

    /// Which bucket pays first: the soonest expiry (never expiring: last),
    /// then the promised order. Stated from the product's rule, not from
    /// [`Bucket::priority`].
    fn promised_order(b: &Bucket) -> (DateTime<Utc>, u8) {
        (
            b.expires_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
            promised_rank(b.source()),
        )
    }

    /// Generated buckets as an account holds them: ids unique (the first kept).
    fn distinct_ids(generated: Vec<Bucket>) -> Vec<Bucket> {
        let mut buckets: Vec<Bucket> = Vec::new();
        for b in generated {
            if !buckets.iter().any(|x| x.id == b.id) {
                buckets.push(b);
            }
        }
        buckets
    }

    proptest! {
        /// Over buckets of every source, a debit never draws a bucket while
        /// one due earlier keeps credits: what expires first goes first,
        /// purchased credits after every expiring one, the overdraft last.
        #[test]
        fn credits_expiring_first_are_spent_first_and_the_overdraft_last(
            generated in prop::collection::vec(any_bucket(), 0..10),
            amount in 0i64..25_000,
        ) {
            let buckets = distinct_ids(generated);
            let amount = Credits::from_thousandths(amount);
            let refs: Vec<&Bucket> = buckets.iter().collect();
            let total: Credits = buckets.iter().map(|b| b.remaining).sum();
            let draws = match allocate(&refs, amount) {
                Err(available) => {
                    prop_assert!(total < amount);
                    prop_assert_eq!(available, total);
                    return Ok(());
                }
                Ok(draws) => draws,
            };
            prop_assert!(amount <= total);
            prop_assert_eq!(draws.iter().map(|d| d.amount).sum::<Credits>(), amount);
            let drawn = |b: &Bucket| -> Credits { draws.iter().filter(|d| d.bucket == b.id).map(|d| d.amount).sum() };
            for x in buckets.iter().filter(|b| drawn(b).is_positive()) {
                prop_assert!(drawn(x) <= x.remaining, "{} gave more than it holds", x.id);
                for y in &buckets {
                    let kept = y.remaining.checked_sub(drawn(y)).unwrap();
                    prop_assert!(
                        !(kept.is_positive() && promised_order(y) < promised_order(x)),
                        "{} drawn while {} keeps {}", x.id, y.id, kept
                    );
                }
            }
            let bucket = |d: &Draw| buckets.iter().find(|b| b.id == d.bucket).unwrap();
            prop_assert!(
                draws.windows(2).all(|w| promised_order(bucket(&w[0])) < promised_order(bucket(&w[1]))),
                "draws listed in spending order, each bucket once"
            );
        }

        /// For arbitrary buckets and amounts the split respects priority
        /// (no bucket is drawn while one before it still holds credits),
        /// never takes a bucket below zero, and sums to the amount; or it
        /// refuses with exactly what the buckets hold.
        #[test]
        fn allocation_respects_priority_and_sums_to_the_amount(
            generated in prop::collection::vec(bucket_strategy(), 0..8),
            amount in 0i64..30_000,
        ) {
            let buckets = distinct_ids(generated);
            let amount = Credits::from_thousandths(amount);
            let refs: Vec<&Bucket> = buckets.iter().collect();
            let total: Credits = buckets.iter().map(|b| b.remaining).sum();
            match allocate(&refs, amount) {
                Err(available) => {
                    prop_assert!(total < amount);
                    prop_assert_eq!(available, total);
                }
                Ok(draws) => {
                    prop_assert!(amount <= total);
                    prop_assert_eq!(draws.iter().map(|d| d.amount).sum::<Credits>(), amount);
                    let mut ordered = refs.clone();
                    ordered.sort_by_key(|b| b.priority());
                    let position = |id: &BucketId| ordered.iter().position(|b| &b.id == id).unwrap();
                    let drawn: Vec<usize> = draws.iter().map(|d| position(&d.bucket)).collect();
                    prop_assert!(drawn.windows(2).all(|w| w[0] < w[1]), "draws follow priority");
                    for d in &draws {
                        let b = ordered[position(&d.bucket)];
                        prop_assert!(d.amount.is_positive() && d.amount <= b.remaining, "never below zero");
                        prop_assert_eq!(d.offset, b.consumed());
                    }
                    // Every bucket before the last one drawn gave all it had.
                    let last = drawn.last().copied().unwrap_or(0);
                    for b in ordered.iter().take(last) {
                        let taken: Credits = draws.iter().filter(|d| d.bucket == b.id).map(|d| d.amount).sum();
                        prop_assert_eq!(taken, b.remaining);
                    }
                }
            }
        }
    }
}
