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

    /// A decimal as a client may write it, and its exact value in
    /// thousandths: up to three decimals, zeros padded on either side, the
    /// integer part left out before a point (`.25`), whole numbers just above
    /// the largest request too.
    fn decimal_text() -> impl Strategy<Value = (String, i128)> {
        (
            0i64..=1_100_000_000,
            0u32..=3,
            0i64..1_000,
            0usize..3,
            0usize..4,
            any::<bool>(),
        )
            .prop_map(|(whole, places, digits, leading, trailing, bare)| {
                let digits = digits % 10_i64.pow(places);
                let mut text = if whole == 0 && bare && places > 0 {
                    String::new()
                } else {
                    format!("{}{whole}", "0".repeat(leading))
                };
                if places > 0 || trailing > 0 {
                    let decimals = if places == 0 {
                        String::new()
                    } else {
                        format!("{digits:0width$}", width = places as usize)
                    };
                    text = format!("{text}.{decimals}{}", "0".repeat(trailing));
                }
                let value = i128::from(whole) * 1_000 + i128::from(digits) * 10_i128.pow(3 - places);
                (text, value)
            })
    }

    /// Amounts at and around the edges of `i64`, and ordinary ones.
    fn thousandths_at_the_extremes() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            -2_000i64..2_000,
            (i64::MAX - 2_000)..=i64::MAX,
            i64::MIN..=(i64::MIN + 2_000),
            Just(MAX_REQUEST.thousandths()),
        ]
    }

    fn quantities_at_the_extremes() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            0u64..2_000,
            (i64::MAX as u64 - 2)..=(i64::MAX as u64 + 2),
            (u64::MAX - 2)..=u64::MAX,
        ]
    }

    fn exact(value: i128) -> Option<Credits> {
        i64::try_from(value).ok().map(Credits::from_thousandths)
    }

    fn refused(text: &str) -> bool {
        matches!(Credits::parse_decimal(text), Err(DomainError::InvalidAmount { .. }))
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(t in 0i64..=MAX_REQUEST.thousandths()) {
            let c = Credits::from_thousandths(t);
            prop_assert_eq!(Credits::parse_decimal(&c.to_string()).unwrap(), c);
        }

        /// Every decimal with at most three decimals is read exactly, up to
        /// the largest request; anything larger is refused.
        #[test]
        fn parsing_reads_every_decimal_of_up_to_three_places_exactly((text, value) in decimal_text()) {
            match Credits::parse_decimal(&text) {
                Ok(c) => {
                    prop_assert_eq!(i128::from(c.thousandths()), value, "{}", text);
                    prop_assert!(c <= MAX_REQUEST);
                }
                Err(DomainError::InvalidAmount { why, .. }) => {
                    prop_assert!(value > i128::from(MAX_REQUEST.thousandths()), "{} refused: {}", text, why);
                }
                Err(e) => prop_assert!(false, "{}: {}", text, e),
            }
        }

        /// A fourth significant decimal is a precision the unit cannot hold:
        /// refused, never rounded.
        #[test]
        fn parsing_refuses_more_than_three_decimals(
            whole in 0i64..1_000_000,
            decimals in "[0-9]{3,8}[1-9]",
        ) {
            for text in [format!("{whole}.{decimals}"), format!(".{decimals}")] {
                prop_assert!(refused(&text), "{:?} accepted", text);
            }
        }

        /// Signs, spaces, exponents, separators, other scripts' digits: one
        /// of them anywhere in a valid decimal makes it refused.
        #[test]
        fn parsing_refuses_signs_spaces_and_stray_characters(
            (text, _) in decimal_text(),
            stray in prop::sample::select(vec![
                '+', '-', ' ', '\t', '\n', 'e', 'E', ',', '_', '\'', 'x', '\u{a0}', '\u{2212}', '\u{663}', '\u{ff11}',
            ]),
            at in any::<prop::sample::Index>(),
        ) {
            let mut bad = text.clone();
            bad.insert(at.index(text.len() + 1), stray);
            prop_assert!(refused(&bad), "{:?} accepted", bad);
            // A second point is no number either.
            if text.contains('.') {
                let mut twice = text.clone();
                twice.insert(at.index(text.len() + 1), '.');
                prop_assert!(refused(&twice), "{:?} accepted", twice);
            }
        }

        /// Beyond the largest request, up to numbers `i64` cannot hold:
        /// refused as too large, without overflowing.
        #[test]
        fn parsing_refuses_amounts_beyond_the_largest_request(
            over in (MAX_REQUEST.thousandths() + 1)..=i64::MAX,
            digits in "[1-9][0-9]{10,31}",
        ) {
            let fraction = format!("{}.5", &digits[..digits.len().min(30)]);
            for text in [Credits::from_thousandths(over).to_string(), digits, fraction] {
                prop_assert!(refused(&text), "{:?} accepted", text);
            }
        }

        /// Checked arithmetic gives the exact result or refuses; it never
        /// wraps. Refusing is only allowed where the exact result does not fit.
        #[test]
        fn checked_arithmetic_is_exact_or_refused(
            a in thousandths_at_the_extremes(),
            b in thousandths_at_the_extremes(),
            units in quantities_at_the_extremes(),
        ) {
            let (x, y) = (Credits::from_thousandths(a), Credits::from_thousandths(b));
            let (a, b) = (i128::from(a), i128::from(b));
            prop_assert_eq!(x.checked_add(y), exact(a + b));
            prop_assert_eq!(x.checked_sub(y), exact(a - b));
            let product = a * i128::from(units);
            match x.checked_mul(units) {
                Some(c) => prop_assert_eq!(i128::from(c.thousandths()), product),
                None => prop_assert!(exact(product).is_none() || units > i64::MAX as u64),
            }
            // A decimal factor rounds down to the thousandth: never more
            // than the exact product, less by under a thousandth.
            let scaled = a * b;
            match x.times(y) {
                Some(c) => {
                    let c = i128::from(c.thousandths());
                    prop_assert!(c * 1_000 <= scaled && scaled < (c + 1) * 1_000);
                }
                None => prop_assert!(exact(scaled.div_euclid(1_000)).is_none()),
            }
            if b > 0 {
                let covered = i128::from(x.units_covered(y));
                prop_assert!(covered * b <= a.max(0) && a.max(0) < (covered + 1) * b);
            } else {
                prop_assert_eq!(x.units_covered(y), u64::MAX);
            }
        }

        /// What users see is the exact amount, whatever it is, `i64::MIN`
        /// included: a sign, whole credits, and up to three decimals with no
        /// trailing zero.
        #[test]
        fn display_is_exact_for_every_amount(t in thousandths_at_the_extremes()) {
            let text = Credits::from_thousandths(t).to_string();
            let (negative, digits) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            let (whole, decimals) = digits.split_once('.').unwrap_or((digits, ""));
            prop_assert!(decimals.len() <= 3 && !decimals.ends_with('0'), "{}", text);
            prop_assert!(whole == "0" || !whole.starts_with('0'), "{}", text);
            let decimals = format!("{decimals:0<3}");
            let magnitude = whole.parse::<i128>().unwrap() * 1_000 + decimals.parse::<i128>().unwrap();
            prop_assert_eq!(if negative { -magnitude } else { magnitude }, i128::from(t), "{}", text);
            prop_assert_eq!(negative, t < 0);
        }
    }
}
