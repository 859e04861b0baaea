//! Amounts of money in fen (0.01 yuan).
//!
//! Inside the system an amount is an integer number of fen in a `u64`; arithmetic is checked
//! and never wraps. At every boundary amounts are decimal strings in yuan ("12.30"), parsed
//! strictly with `rust_decimal`: a sign, an exponent, more than two decimal places, an empty or
//! non-numeric string, or a value above the configured maximum is refused with its own error.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// An amount of money in fen. Never negative; arithmetic is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u64);

/// Why a decimal amount string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error(
        "amount must not carry a sign ('{0}'): amounts are never negative and '+' is not accepted"
    )]
    Sign(char),
    #[error("amount must not use an exponent: write it out in plain digits")]
    Exponent,
    #[error(
        "amount is not a decimal number: unexpected character {found:?} at position {position}"
    )]
    NotNumeric { found: char, position: usize },
    #[error("amount is not a decimal number: {0}")]
    Malformed(&'static str),
    #[error("amount has {places} decimal places; at most 2 are allowed (1 fen = 0.01)")]
    TooManyDecimalPlaces { places: u32 },
    #[error("amount {given} is above the maximum of {max}")]
    AboveMaximum { given: String, max: Amount },
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// Fen per yuan.
    pub const FEN_PER_YUAN: u64 = 100;
    /// The default maximum accepted at a boundary: 100 trillion yuan, far above any real
    /// single amount, well inside `u64` so sums of many maxima cannot overflow unnoticed.
    pub const DEFAULT_MAX: Amount = Amount(100_000_000_000_000 * Self::FEN_PER_YUAN);

    pub const fn from_fen(fen: u64) -> Amount {
        Amount(fen)
    }

    /// Whole yuan; `None` on overflow.
    pub const fn from_yuan(yuan: u64) -> Option<Amount> {
        match yuan.checked_mul(Self::FEN_PER_YUAN) {
            Some(fen) => Some(Amount(fen)),
            None => None,
        }
    }

    pub const fn fen(self) -> u64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// Sum of amounts; `None` if the sum overflows `u64`.
    pub fn checked_sum<I: IntoIterator<Item = Amount>>(items: I) -> Option<Amount> {
        items
            .into_iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a))
    }

    /// Parses a decimal yuan string ("12", "12.3", "12.30") with [`Amount::DEFAULT_MAX`].
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        Self::parse_with_max(text, Self::DEFAULT_MAX)
    }

    /// Parses a decimal yuan string, refusing anything above `max`.
    pub fn parse_with_max(text: &str, max: Amount) -> Result<Amount, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let mut dot: Option<usize> = None;
        for (position, c) in text.char_indices() {
            match c {
                '0'..='9' => {}
                '-' | '+' => return Err(AmountError::Sign(c)),
                'e' | 'E' => return Err(AmountError::Exponent),
                '.' if dot.is_none() => dot = Some(position),
                found => return Err(AmountError::NotNumeric { found, position }),
            }
        }
        let (int_part, frac_part) = match dot {
            Some(d) => (&text[..d], &text[d + 1..]),
            None => (text, ""),
        };
        if int_part.is_empty() {
            return Err(AmountError::Malformed(
                "a digit must come before the decimal point",
            ));
        }
        if dot.is_some() && frac_part.is_empty() {
            return Err(AmountError::Malformed(
                "a digit must follow the decimal point",
            ));
        }
        let places = frac_part.len() as u32;
        if places > 2 {
            return Err(AmountError::TooManyDecimalPlaces { places });
        }
        let above = || AmountError::AboveMaximum {
            given: text.to_owned(),
            max,
        };
        // rust_decimal holds 28 digits; anything longer is certainly above any maximum, and
        // so is a 27- or 28-digit number that overflows when turned into fen.
        let decimal = Decimal::from_str_exact(text).map_err(|_| above())?;
        let fen = decimal
            .checked_mul(Decimal::ONE_HUNDRED)
            .and_then(|d| d.trunc().to_u64())
            .ok_or_else(above)?;
        if fen > max.0 {
            return Err(above());
        }
        Ok(Amount(fen))
    }

    /// The amount as an exact decimal in yuan.
    pub fn to_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), 2)
    }
}

/// Prints yuan with exactly two decimal places: `12.30`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cases = [
            ("0", 0),
            ("1", 100),
            ("1.5", 150),
            ("1.05", 105),
            ("0.01", 1),
            ("12.30", 1230),
            ("007.10", 710),
        ];
        for (text, fen) in cases {
            assert_eq!(Amount::parse(text), Ok(Amount::from_fen(fen)), "{text}");
        }
        assert_eq!(Amount::from_fen(1230).to_string(), "12.30");
        assert_eq!(Amount::from_fen(5).to_string(), "0.05");
        assert_eq!(
            Amount::from_fen(u64::MAX).to_string(),
            "184467440737095516.15"
        );
    }

    #[test]
    fn refuses_each_bad_form_precisely() {
        use AmountError::*;
        assert_eq!(Amount::parse(""), Err(Empty));
        assert_eq!(Amount::parse("-1"), Err(Sign('-')));
        assert_eq!(Amount::parse("+1"), Err(Sign('+')));
        assert_eq!(Amount::parse("1e3"), Err(Exponent));
        assert_eq!(Amount::parse("1E3"), Err(Exponent));
        assert_eq!(
            Amount::parse("1.234"),
            Err(TooManyDecimalPlaces { places: 3 })
        );
        assert_eq!(
            Amount::parse("1.230"),
            Err(TooManyDecimalPlaces { places: 3 })
        );
        assert_eq!(
            Amount::parse("12a"),
            Err(NotNumeric {
                found: 'a',
                position: 2
            })
        );
        assert_eq!(
            Amount::parse("1.2.3"),
            Err(NotNumeric {
                found: '.',
                position: 3
            })
        );
        assert_eq!(
            Amount::parse(" 1"),
            Err(NotNumeric {
                found: ' ',
                position: 0
            })
        );
        assert!(matches!(Amount::parse(".5"), Err(Malformed(_))));
        assert!(matches!(Amount::parse("5."), Err(Malformed(_))));
        let max = Amount::from_fen(10_000);
        assert_eq!(Amount::parse_with_max("100", max), Ok(max));
        assert!(matches!(
            Amount::parse_with_max("100.01", max),
            Err(AboveMaximum { .. })
        ));
        assert!(matches!(
            Amount::parse("99999999999999999999999999999999999"),
            Err(AboveMaximum { .. })
        ));
        assert!(matches!(
            Amount::parse_with_max("184467440737095516.16", Amount::from_fen(u64::MAX)),
            Err(AboveMaximum { .. })
        ));
        // Found by fuzzing: 28 digits fit rust_decimal, but not once multiplied into fen
        // (this panicked).
        for text in [
            "1011111111111111111111111110",
            "9999999999999999999999999999.9",
        ] {
            assert!(
                matches!(Amount::parse(text), Err(AboveMaximum { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Amount::from_fen(u64::MAX);
        assert_eq!(max.checked_add(Amount::from_fen(1)), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::from_fen(1)), None);
        assert_eq!(Amount::checked_sum([max, Amount::from_fen(1)]), None);
        assert_eq!(
            Amount::checked_sum([Amount::from_fen(1), Amount::from_fen(2)]),
            Some(Amount::from_fen(3))
        );
    }
}
