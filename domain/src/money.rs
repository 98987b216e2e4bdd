//! Money: an integer amount of a currency's minor unit (cents; yen for zero-decimal currencies)
//! plus its ISO 4217 code. Never a float. Plans, proration, invoices and payments all use it.
//!
//! **Rounding** happens in one place, [`Money::scale`]: an amount times a fraction is rounded
//! to the nearest minor unit, **ties to even** (banker's rounding), on the exact 128-bit
//! product, so `2900 × 1/2 = 1450`, `25 × 1/2 = 12`, `35 × 1/2 = 18`. Each invoice line is
//! rounded on its own (as Stripe does per proration line); totals are sums of rounded lines.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Currencies this service bills in (Stripe supports them all).
pub const SUPPORTED: &[&str] = &["usd", "eur", "gbp", "jpy", "cny", "cad", "aud", "chf"];

/// Zero-decimal currencies: the amount is in whole units.
const ZERO_DECIMAL: &[&str] = &["jpy", "krw", "vnd", "clp", "isk", "ugx"];

/// A supported ISO 4217 currency, lower case as Stripe writes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unsupported currency {0:?}")]
    UnsupportedCurrency(String),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount out of range")]
    Overflow,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let lower = code.trim().to_ascii_lowercase();
        if !SUPPORTED.contains(&lower.as_str()) {
            return Err(MoneyError::UnsupportedCurrency(code.trim().to_owned()));
        }
        let b = lower.as_bytes();
        Ok(Currency([b[0], b[1], b[2]]))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Digits after the decimal point: 2, or 0 for zero-decimal currencies.
    pub fn exponent(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.as_str()) { 0 } else { 2 }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Currency::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An amount in minor units of a currency. Serialized as `{"amount": 2900, "currency": "usd"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Minor units (cents; whole yen for zero-decimal currencies). Negative for credits.
    pub amount: i64,
    /// ISO 4217, lower case.
    #[schema(value_type = String, example = "usd")]
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Money { amount: 0, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.checked_add(-other)
    }

    /// `self × numerator / denominator`, rounded half to even — the one rounding rule.
    pub fn scale(self, numerator: i64, denominator: i64) -> Result<Money, MoneyError> {
        if denominator == 0 {
            return Err(MoneyError::Overflow);
        }
        let product = i128::from(self.amount) * i128::from(numerator);
        let amount = div_round_half_even(product, i128::from(denominator));
        let amount = i64::try_from(amount).map_err(|_| MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }

    /// The sum of `items`, all in `currency`.
    pub fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }

    /// `"29.00"`, `"-0.05"`, `"500"` (yen).
    pub fn decimal(&self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.amount.to_string();
        }
        let div = 10u64.pow(exp);
        let abs = self.amount.unsigned_abs();
        let sign = if self.amount < 0 { "-" } else { "" };
        format!("{sign}{}.{:0width$}", abs / div, abs % div, width = exp as usize)
    }
}

impl std::ops::Neg for Money {
    type Output = Money;

    fn neg(self) -> Money {
        Money { amount: -self.amount, currency: self.currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.decimal(), self.currency.as_str().to_ascii_uppercase())
    }
}

/// `n / d` rounded to the nearest integer, ties to the even neighbour.
fn div_round_half_even(n: i128, d: i128) -> i128 {
    let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d); // 0 <= r < d; n = q·d + r
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount: i64) -> Money {
        Money::new(amount, Currency::parse("usd").expect("valid"))
    }

    #[test]
    fn rounds_half_to_even() {
        assert_eq!(usd(25).scale(1, 2).expect("valid").amount, 12);
        assert_eq!(usd(35).scale(1, 2).expect("valid").amount, 18);
        assert_eq!(usd(-25).scale(1, 2).expect("valid").amount, -12);
        assert_eq!(usd(-35).scale(1, 2).expect("valid").amount, -18);
        assert_eq!(usd(10).scale(1, 3).expect("valid").amount, 3);
        assert_eq!(usd(20).scale(1, 3).expect("valid").amount, 7);
        assert_eq!(usd(-20).scale(1, 3).expect("valid").amount, -7);
        assert_eq!(usd(2900).scale(0, 7).expect("valid").amount, 0);
    }

    #[test]
    fn large_products_do_not_overflow() {
        // 1e15 minor units × a year in seconds / a year in seconds
        let m = usd(1_000_000_000_000_000).scale(31_536_000, 31_536_000).expect("valid");
        assert_eq!(m.amount, 1_000_000_000_000_000);
    }

    #[test]
    fn currencies_must_match_and_be_supported() {
        let eur = Money::new(1, Currency::parse("EUR").expect("valid"));
        assert!(matches!(usd(1).checked_add(eur), Err(MoneyError::CurrencyMismatch(..))));
        assert!(Currency::parse("zzz").is_err());
        assert_eq!(Currency::parse(" Usd ").expect("valid").as_str(), "usd");
    }

    #[test]
    fn formats_by_exponent() {
        assert_eq!(usd(2900).decimal(), "29.00");
        assert_eq!(usd(-5).decimal(), "-0.05");
        assert_eq!(Money::new(500, Currency::parse("jpy").expect("valid")).decimal(), "500");
        assert_eq!(
            serde_json::to_value(usd(2900)).expect("valid"),
            serde_json::json!({"amount": 2900, "currency": "usd"})
        );
    }
}
