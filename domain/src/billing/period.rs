//! Billing periods and proration — pure functions, no I/O, so the preview of a plan change and
//! the `change_plan` job compute the same lines from the same inputs.
//!
//! **Periods.** An account's periods run from its *anchor* in whole intervals of calendar months
//! (1 or 12): boundary k is `anchor + k·interval`, clamped to the end of a short month as Stripe
//! does (an anchor on the 31st gives Feb 28, then Mar 31). A new account is anchored on
//! `BILLING_CYCLE_DAY` (1–28) at 00:00 UTC, so its first period is a partial one up to the next
//! cycle day; an interval change moves the anchor to the moment of the change.
//!
//! **Proration, as Stripe does it** (to the second, in minor units, each line rounded half to
//! even by [`Money::scale`]): with `full` the length of the period in which the change happens
//! and `left` the seconds from the change to its end,
//! - same interval: a credit of `−old × left / full` and a charge of `+new × left / full`; the
//!   period and anchor stay;
//! - interval change (monthly ⇄ yearly): the credit of `−old × left / full`, and a charge of the
//!   whole new price for a new period that starts at the change (the new anchor).

use crate::PlanId;
use crate::money::{Money, MoneyError};
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn months(self) -> u32 {
        match self {
            Interval::Month => 1,
            Interval::Year => 12,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub fn parse(raw: &str) -> Option<Interval> {
        match raw {
            "month" | "monthly" => Some(Interval::Month),
            "year" | "yearly" => Some(Interval::Year),
            _ => None,
        }
    }

    pub fn adjective(self) -> &'static str {
        match self {
            Interval::Month => "monthly",
            Interval::Year => "yearly",
        }
    }
}

/// `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = BillingPeriod)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    pub fn seconds(&self) -> i64 {
        (self.end - self.start).num_seconds()
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// The anchor of an account opened at `at`: day `cycle_day` (1–28) at 00:00 UTC of `at`'s month
/// if that is not after `at`, else of the month before.
pub fn cycle_anchor(at: DateTime<Utc>, cycle_day: u32) -> DateTime<Utc> {
    let day = cycle_day.clamp(1, 28);
    let this_month = NaiveDate::from_ymd_opt(at.year(), at.month(), day).unwrap_or_else(|| at.date_naive());
    let candidate = Utc.from_utc_datetime(&this_month.and_time(chrono::NaiveTime::MIN));
    if candidate <= at { candidate } else { candidate.checked_sub_months(Months::new(1)).unwrap_or(candidate) }
}

/// Boundary `k` after `anchor`: `anchor + k·interval` in calendar months, clamped to month ends.
pub fn boundary(anchor: DateTime<Utc>, interval: Interval, k: u32) -> DateTime<Utc> {
    anchor.checked_add_months(Months::new(k.saturating_mul(interval.months()))).unwrap_or(anchor)
}

/// The whole period `[boundary k, boundary k+1)` that contains `at` (`at` at or after `anchor`;
/// before it, the first period).
pub fn period_containing(anchor: DateTime<Utc>, interval: Interval, at: DateTime<Utc>) -> Period {
    // Start from an estimate in months and correct it: clamping makes boundaries irregular.
    let months = (at.year() - anchor.year()) * 12 + (at.month() as i32 - anchor.month() as i32);
    let mut k = u32::try_from(months.max(0)).unwrap_or(0) / interval.months();
    k = k.saturating_sub(1);
    while boundary(anchor, interval, k + 1) <= at {
        k += 1;
    }
    Period { start: boundary(anchor, interval, k), end: boundary(anchor, interval, k + 1) }
}

/// The period of an account opened at `opened` with `anchor`: from the opening to the end of the
/// whole period containing it.
pub fn first_period(anchor: DateTime<Utc>, interval: Interval, opened: DateTime<Utc>) -> Period {
    Period { start: opened, end: period_containing(anchor, interval, opened).end }
}

/// The period after one that ends at `end`.
pub fn next_period(anchor: DateTime<Utc>, interval: Interval, end: DateTime<Utc>) -> Period {
    period_containing(anchor, interval, end)
}

/// The charge of the (possibly partial) `period` at `price` per interval: the price times the
/// part of the whole period it covers.
pub fn period_charge(
    price: Money,
    anchor: DateTime<Utc>,
    interval: Interval,
    period: Period,
) -> Result<Money, MoneyError> {
    let whole = period_containing(anchor, interval, period.start);
    if whole.start == period.start && whole.end == period.end {
        return Ok(price);
    }
    price.scale(period.seconds(), whole.seconds())
}

/// One side of a plan change: a plan version's price for an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceRef {
    pub plan_id: PlanId,
    pub plan_name: String,
    pub version: i32,
    pub interval: Interval,
    /// The price per interval.
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProrationLine {
    pub description: String,
    /// Negative for the credit.
    pub amount: Money,
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Proration {
    /// The moment the change takes effect (to the second).
    pub proration_date: DateTime<Utc>,
    pub lines: Vec<ProrationLine>,
    pub total: Money,
    /// The account's anchor and current period after the change.
    pub new_anchor: DateTime<Utc>,
    pub new_period: Period,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProrationError {
    #[error("the change must fall inside the current period ({start} to {end})")]
    OutsidePeriod { start: DateTime<Utc>, end: DateTime<Utc> },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The proration of moving from `old` to `new` at `at`, inside the account's current `period`
/// (anchored at `anchor`). Both the preview and the job call this.
pub fn prorate(
    old: &PriceRef,
    new: &PriceRef,
    anchor: DateTime<Utc>,
    period: Period,
    at: DateTime<Utc>,
) -> Result<Proration, ProrationError> {
    if !period.contains(at) {
        return Err(ProrationError::OutsidePeriod { start: period.start, end: period.end });
    }
    if old.amount.currency != new.amount.currency {
        return Err(MoneyError::CurrencyMismatch(old.amount.currency, new.amount.currency).into());
    }
    let at = at.with_nanosecond0();
    let whole = period_containing(anchor, old.interval, period.start);
    let full = whole.seconds();
    let left = (period.end - at).num_seconds();
    let remaining = Period { start: at, end: period.end };
    let credit = ProrationLine {
        description: format!(
            "Unused time on {} v{} ({}) from {}",
            old.plan_name,
            old.version,
            old.interval.adjective(),
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        amount: -old.amount.scale(left, full)?,
        period: remaining,
    };
    let (charge, new_anchor, new_period) = if old.interval == new.interval {
        let charge = ProrationLine {
            description: format!(
                "Remaining time on {} v{} ({}) from {}",
                new.plan_name,
                new.version,
                new.interval.adjective(),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            amount: new.amount.scale(left, full)?,
            period: remaining,
        };
        (charge, anchor, period)
    } else {
        let new_period = Period { start: at, end: boundary(at, new.interval, 1) };
        let charge = ProrationLine {
            description: format!(
                "{} v{} ({}) from {}",
                new.plan_name,
                new.version,
                new.interval.adjective(),
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            amount: new.amount,
            period: new_period,
        };
        (charge, at, new_period)
    };
    let total = credit.amount.checked_add(charge.amount)?;
    Ok(Proration { proration_date: at, lines: vec![credit, charge], total, new_anchor, new_period })
}

trait WholeSeconds {
    fn with_nanosecond0(self) -> Self;
}

impl WholeSeconds for DateTime<Utc> {
    fn with_nanosecond0(self) -> Self {
        DateTime::from_timestamp(self.timestamp(), 0).unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc)
    }

    fn usd(amount: i64) -> Money {
        Money::new(amount, Currency::parse("usd").expect("valid"))
    }

    fn price(name: &str, amount: i64, interval: Interval) -> PriceRef {
        PriceRef {
            plan_id: PlanId(uuid::Uuid::nil()),
            plan_name: name.into(),
            version: 1,
            interval,
            amount: usd(amount),
        }
    }

    fn amounts(p: &Proration) -> Vec<i64> {
        p.lines.iter().map(|l| l.amount.amount).collect()
    }

    // January 2026: 31 days = 2 678 400 s. February 2026: 28 days = 2 419 200 s.
    const JAN: i64 = 2_678_400;
    const FEB: i64 = 2_419_200;

    #[test]
    fn anchors_on_the_cycle_day() {
        assert_eq!(cycle_anchor(t("2026-01-15T10:00:00Z"), 1), t("2026-01-01T00:00:00Z"));
        assert_eq!(cycle_anchor(t("2026-01-15T10:00:00Z"), 20), t("2025-12-20T00:00:00Z"));
        assert_eq!(cycle_anchor(t("2026-01-20T00:00:00Z"), 20), t("2026-01-20T00:00:00Z"));
        let first = first_period(t("2026-01-01T00:00:00Z"), Interval::Month, t("2026-01-15T10:00:00Z"));
        assert_eq!(first, Period { start: t("2026-01-15T10:00:00Z"), end: t("2026-02-01T00:00:00Z") });
        // The partial first month at 29.00: 16 days 14 h of 31 days = 1 432 800 / 2 678 400 s.
        let charge = period_charge(usd(2900), t("2026-01-01T00:00:00Z"), Interval::Month, first).expect("valid");
        assert_eq!(charge.amount, 1551); // 2900 × 1432800 / 2678400 = 1551.34…
        let whole = Period { start: t("2026-02-01T00:00:00Z"), end: t("2026-03-01T00:00:00Z") };
        assert_eq!(
            period_charge(usd(2900), t("2026-01-01T00:00:00Z"), Interval::Month, whole).expect("valid").amount,
            2900
        );
    }

    #[test]
    fn month_ends_clamp_like_stripe() {
        let anchor = t("2026-01-31T00:00:00Z");
        assert_eq!(boundary(anchor, Interval::Month, 1), t("2026-02-28T00:00:00Z"));
        assert_eq!(boundary(anchor, Interval::Month, 2), t("2026-03-31T00:00:00Z"));
        let p = period_containing(anchor, Interval::Month, t("2026-03-01T00:00:00Z"));
        assert_eq!(p, Period { start: t("2026-02-28T00:00:00Z"), end: t("2026-03-31T00:00:00Z") });
        let y = period_containing(t("2024-02-29T00:00:00Z"), Interval::Year, t("2025-06-01T00:00:00Z"));
        assert_eq!(y, Period { start: t("2025-02-28T00:00:00Z"), end: t("2026-02-28T00:00:00Z") });
        assert_eq!(
            next_period(t("2026-01-01T00:00:00Z"), Interval::Month, t("2026-02-01T00:00:00Z")),
            Period { start: t("2026-02-01T00:00:00Z"), end: t("2026-03-01T00:00:00Z") }
        );
    }

    fn jan() -> Period {
        Period { start: t("2026-01-01T00:00:00Z"), end: t("2026-02-01T00:00:00Z") }
    }

    #[test]
    fn upgrade_mid_period_in_a_31_day_month() {
        // Basic 29.00 → Pro 99.00 on Jan 11 00:00: 21 days = 1 814 400 s of 2 678 400 left.
        let p = prorate(
            &price("Basic", 2900, Interval::Month),
            &price("Pro", 9900, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            jan(),
            t("2026-01-11T00:00:00Z"),
        )
        .expect("valid");
        // 2900 × 1814400 / 2678400 = 1964.516… → 1965; 9900 × … = 6706.45… → 6706
        assert_eq!(amounts(&p), vec![-1965, 6706]);
        assert_eq!(p.total.amount, 4741);
        assert_eq!(p.new_period, jan());
        assert_eq!(p.new_anchor, t("2026-01-01T00:00:00Z"));
        assert_eq!(jan().seconds(), JAN);
    }

    #[test]
    fn downgrade_mid_period_in_a_28_day_month() {
        // Pro 99.00 → Basic 29.00 on Feb 15 12:00: 13.5 days = 1 166 400 s of 2 419 200 left.
        let feb = Period { start: t("2026-02-01T00:00:00Z"), end: t("2026-03-01T00:00:00Z") };
        let p = prorate(
            &price("Pro", 9900, Interval::Month),
            &price("Basic", 2900, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            feb,
            t("2026-02-15T12:00:00Z"),
        )
        .expect("valid");
        assert_eq!(FEB, feb.seconds());
        // 9900 × 1166400 / 2419200 = 4773.214… → 4773; 2900 × … = 1398.214… → 1398
        assert_eq!(amounts(&p), vec![-4773, 1398]);
        assert_eq!(p.total.amount, -3375);
    }

    #[test]
    fn a_change_in_the_first_second_swaps_whole_prices() {
        let p = prorate(
            &price("Basic", 2900, Interval::Month),
            &price("Pro", 9900, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            jan(),
            t("2026-01-01T00:00:00Z"),
        )
        .expect("valid");
        assert_eq!(amounts(&p), vec![-2900, 9900]);
    }

    #[test]
    fn a_change_in_the_last_second_is_worth_one_second() {
        let p = prorate(
            &price("Basic", 2900, Interval::Month),
            &price("Enterprise", 4_990_000, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            jan(),
            t("2026-01-31T23:59:59Z"),
        )
        .expect("valid");
        // 2900 / 2678400 = 0.001 → 0 (credit of −0 is 0); 4 990 000 / 2 678 400 = 1.863 → 2
        assert_eq!(amounts(&p), vec![0, 2]);
        // the period end itself is outside the period
        assert!(matches!(
            prorate(
                &price("Basic", 2900, Interval::Month),
                &price("Pro", 9900, Interval::Month),
                t("2026-01-01T00:00:00Z"),
                jan(),
                t("2026-02-01T00:00:00Z"),
            ),
            Err(ProrationError::OutsidePeriod { .. })
        ));
    }

    #[test]
    fn fractions_of_a_second_are_dropped() {
        let at = t("2026-01-11T00:00:00.999Z");
        let p = prorate(
            &price("Basic", 2900, Interval::Month),
            &price("Pro", 9900, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            jan(),
            at,
        )
        .expect("valid");
        assert_eq!(p.proration_date, t("2026-01-11T00:00:00Z"));
        assert_eq!(amounts(&p), vec![-1965, 6706]);
    }

    #[test]
    fn monthly_to_yearly_starts_a_new_period() {
        // Basic monthly 29.00 → Pro yearly 990.00 on Jan 11: credit 21/31 of 29.00, charge 990.00
        // for Jan 11 2026 – Jan 11 2027.
        let p = prorate(
            &price("Basic", 2900, Interval::Month),
            &price("Pro", 99_000, Interval::Year),
            t("2026-01-01T00:00:00Z"),
            jan(),
            t("2026-01-11T00:00:00Z"),
        )
        .expect("valid");
        assert_eq!(amounts(&p), vec![-1965, 99_000]);
        assert_eq!(p.total.amount, 97_035);
        assert_eq!(p.new_anchor, t("2026-01-11T00:00:00Z"));
        assert_eq!(p.new_period, Period { start: t("2026-01-11T00:00:00Z"), end: t("2027-01-11T00:00:00Z") });
    }

    #[test]
    fn yearly_to_monthly_credits_the_unused_year() {
        // Pro yearly 990.00 for 2026 (365 days = 31 536 000 s) → Pro monthly 99.00 on Jul 2 2026
        // 00:00: 183 days = 15 811 200 s left. 99000 × 15811200 / 31536000 = 49 635.616… → 49 636.
        let year = Period { start: t("2026-01-01T00:00:00Z"), end: t("2027-01-01T00:00:00Z") };
        assert_eq!(year.seconds(), 31_536_000);
        let p = prorate(
            &price("Pro", 99_000, Interval::Year),
            &price("Pro", 9900, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            year,
            t("2026-07-02T00:00:00Z"),
        )
        .expect("valid");
        assert_eq!(amounts(&p), vec![-49_636, 9900]);
        assert_eq!(p.total.amount, -39_736);
        assert_eq!(p.new_period, Period { start: t("2026-07-02T00:00:00Z"), end: t("2026-08-02T00:00:00Z") });
    }

    #[test]
    fn a_partial_first_period_prorates_against_the_whole_period() {
        // Opened Jan 15 10:00, anchored Jan 1: the period is Jan 15 10:00 – Feb 1, but a month is
        // 31 days, so a change on Jan 21 00:00 (11 days = 950 400 s left) credits 11/31.
        let first = first_period(t("2026-01-01T00:00:00Z"), Interval::Month, t("2026-01-15T10:00:00Z"));
        let p = prorate(
            &price("Basic", 2900, Interval::Month),
            &price("Pro", 9900, Interval::Month),
            t("2026-01-01T00:00:00Z"),
            first,
            t("2026-01-21T00:00:00Z"),
        )
        .expect("valid");
        // 2900 × 950400 / 2678400 = 1029.03 → 1029; 9900 × … = 3512.90 → 3513
        assert_eq!(amounts(&p), vec![-1029, 3513]);
    }

    #[test]
    fn currencies_must_agree() {
        let mut eur = price("Pro", 9900, Interval::Month);
        eur.amount = Money::new(9900, Currency::parse("eur").expect("valid"));
        assert!(
            prorate(&price("Basic", 2900, Interval::Month), &eur, jan().start, jan(), t("2026-01-11T00:00:00Z"))
                .is_err()
        );
    }
}
