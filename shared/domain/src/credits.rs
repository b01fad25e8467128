//! Credit amounts in fixed point: thousandths of a credit, never floats.
//!
//! An email verification costs 0.5, so the unit must hold halves exactly; a
//! thousandth leaves room for finer prices without ever rounding.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Thousandths per credit.
pub const SCALE: i64 = 1_000;
const SCALE_DIGITS: usize = 3;
/// The largest amount one request may name: a limit on everything, and far
/// below where `i64` arithmetic over many buckets could overflow.
pub const MAX_REQUEST: Credits = Credits(1_000_000_000 * SCALE);

/// A signed amount of credits in thousandths. Balances are never negative
/// (an invariant of [`crate::Account`]); ledger lines are signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credits(i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    pub const fn from_thousandths(thousandths: i64) -> Self {
        Credits(thousandths)
    }

    pub const fn whole(credits: i64) -> Self {
        Credits(credits * SCALE)
    }

    pub const fn thousandths(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_whole(self) -> bool {
        self.0 % SCALE == 0
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }

    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }

    pub fn checked_mul(self, units: u64) -> Option<Credits> {
        i64::try_from(units)
            .ok()
            .and_then(|u| self.0.checked_mul(u))
            .map(Credits)
    }

    /// This amount times a decimal `factor` (e.g. a rollover cap of `"1.5"`
    /// months), rounded down to the thousandth: never more than the exact product.
    pub fn times(self, factor: Credits) -> Option<Credits> {
        let exact = i128::from(self.0).checked_mul(i128::from(factor.0))?;
        i64::try_from(exact.div_euclid(i128::from(SCALE))).ok().map(Credits)
    }

    pub fn min(self, other: Credits) -> Credits {
        Credits(self.0.min(other.0))
    }

    /// How many whole units of `unit_cost` this amount covers.
    pub fn units_covered(self, unit_cost: Credits) -> u64 {
        if unit_cost.0 <= 0 {
            return u64::MAX;
        }
        u64::try_from(self.0.max(0) / unit_cost.0).unwrap_or(0)
    }

    /// Parses a non-negative decimal such as `"12.5"` exactly from its text.
    pub fn parse_decimal(text: &str) -> Result<Credits, DomainError> {
        let invalid = |why: &str| DomainError::InvalidAmount {
            text: text.chars().take(40).collect(),
            why: why.to_string(),
        };
        // Exactly digits, with a point and up to 3 decimals: no sign, no
        // spaces (the contract says a non-number is a 400).
        let t = text;
        if t.is_empty() || t.len() > 32 {
            return Err(invalid("not a decimal number"));
        }
        if t.starts_with('-') {
            return Err(invalid("must not be negative"));
        }
        let (int_part, frac_part) = match t.split_once('.') {
            Some((i, f)) => (i, f),
            None => (t, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty())
            || !digits(int_part)
            || !digits(frac_part)
            || (t.contains('.') && frac_part.is_empty())
        {
            return Err(invalid("not a decimal number"));
        }
        let frac_trimmed = frac_part.trim_end_matches('0');
        if frac_trimmed.len() > SCALE_DIGITS {
            return Err(invalid("more than 3 decimal places"));
        }
        let whole: i64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid("too large"))?
        };
        let mut frac: i64 = 0;
        for (i, b) in frac_trimmed.bytes().enumerate() {
            frac += i64::from(b - b'0') * 10_i64.pow((SCALE_DIGITS - 1 - i) as u32);
        }
        let value = whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(frac))
            .map(Credits)
            .ok_or_else(|| invalid("too large"))?;
        if value > MAX_REQUEST {
            return Err(invalid("too large"));
        }
        Ok(value)
    }
}

impl FromStr for Credits {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Credits::parse_decimal(s)
    }
}

/// Shown to users as a plain decimal with no trailing zeros: `12.5`, `3`, `-0.5`.
impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / SCALE as u64;
        let frac = abs % SCALE as u64;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let frac = format!("{frac:03}");
            write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl std::ops::Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        Credits(-self.0)
    }
}

impl std::iter::Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        Credits(iter.map(|c| c.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_halves_and_whole_numbers_exactly() {
        assert_eq!(Credits::parse_decimal("0.5").unwrap(), Credits::from_thousandths(500));
        assert_eq!(Credits::parse_decimal("12").unwrap(), Credits::whole(12));
        assert_eq!(
            Credits::parse_decimal("12.500").unwrap(),
            Credits::from_thousandths(12_500)
        );
        assert_eq!(Credits::parse_decimal(".25").unwrap(), Credits::from_thousandths(250));
        assert_eq!(Credits::parse_decimal("0.001").unwrap(), Credits::from_thousandths(1));
    }

    #[test]
    fn rejects_what_the_unit_cannot_hold_or_is_not_a_number() {
        for bad in [
            "0.0001",
            "-1",
            "abc",
            "",
            "1.",
            ".",
            "1e3",
            "1.2.3",
            " ",
            "NaN",
            "0x10",
            "99999999999999999999",
        ] {
            assert!(Credits::parse_decimal(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn displays_without_trailing_zeros() {
        assert_eq!(Credits::from_thousandths(12_500).to_string(), "12.5");
        assert_eq!(Credits::whole(3).to_string(), "3");
        assert_eq!(Credits::from_thousandths(-500).to_string(), "-0.5");
        assert_eq!(Credits::from_thousandths(1).to_string(), "0.001");
        assert_eq!(Credits::ZERO.to_string(), "0");
    }

    #[test]
    fn counts_units_covered() {
        assert_eq!(Credits::whole(7).units_covered(Credits::whole(2)), 3);
        assert_eq!(
            Credits::from_thousandths(1_500).units_covered(Credits::from_thousandths(500)),
            3
        );
        assert_eq!(Credits::ZERO.units_covered(Credits::whole(1)), 0);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(t in 0i64..=MAX_REQUEST.thousandths()) {
            let c = Credits::from_thousandths(t);
            prop_assert_eq!(Credits::parse_decimal(&c.to_string()).unwrap(), c);
        }
    }
}
