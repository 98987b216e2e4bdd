//! What a period's invoice holds, computed in one place for the period-close job and for the
//! upcoming-invoice estimate of `GET …/billing`: the lines waiting for it (first period,
//! prorations), usage beyond the limits since the last close priced at the plan's overage prices
//! (when `USAGE_BILLING_ENABLED`), and the subscription of the next period, in advance.

use super::period::{self, Interval, Period};
use super::store::{self, Account, InvoiceLine, LineKind, NewLine};
use crate::db::TenantTx;
use crate::money::{Currency, Money, MoneyError};
use crate::plans::Plan;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// `units` beyond the limit at `unit_amount` per `per` units, rounded half to even.
pub fn overage_amount(currency: Currency, unit_amount: i64, per: i64, units: i64) -> Result<Money, MoneyError> {
    Money::new(unit_amount, currency).scale(units, per.max(1))
}

pub fn subscription_description(plan: &Plan, interval: Interval, period: Period) -> String {
    format!(
        "{} v{} ({}), {} – {}",
        plan.name,
        plan.version,
        interval.adjective(),
        period.start.format("%Y-%m-%d %H:%M UTC"),
        period.end.format("%Y-%m-%d %H:%M UTC")
    )
}

fn money_error(err: MoneyError) -> Error {
    Error::Validation { field: Some("currency".into()), message: err.to_string() }
}

/// The lines the invoice closing the account's current period gets besides the waiting ones:
/// overage for usage windows in `[invoiced_through, usage_to)` and the next period's subscription.
/// `key` prefixes each line's idempotency key.
pub async fn closing_lines(
    tx: &mut TenantTx,
    account: &Account,
    plan: &Plan,
    usage_billing: bool,
    usage_to: DateTime<Utc>,
    key: &str,
) -> Result<Vec<NewLine>> {
    let interval = account.interval();
    let price = plan.price(interval).map_err(money_error)?;
    let currency = price.currency;
    let mut lines = Vec::new();
    if usage_billing {
        let prices = plan.overage_prices();
        let usage = Period { start: account.invoiced_through, end: usage_to };
        for (resource, units) in store::overage_units(tx, usage.start, usage.end).await? {
            let Some(price) = prices.get(&resource) else { continue };
            lines.push(NewLine {
                kind: LineKind::Overage,
                description: format!(
                    "{resource}: {units} beyond the limit at {} per {}",
                    Money::new(price.unit_amount, currency),
                    price.per
                ),
                resource: Some(resource.clone()),
                quantity: units,
                amount: overage_amount(currency, price.unit_amount, price.per, units).map_err(money_error)?,
                period: usage,
                source_key: format!("{key}:overage:{resource}"),
            });
        }
    }
    let next = period::next_period(account.billing_anchor, interval, account.current_period_end);
    lines.push(NewLine {
        kind: LineKind::Subscription,
        description: subscription_description(plan, interval, next),
        resource: None,
        quantity: 1,
        amount: price,
        period: next,
        source_key: format!("{key}:subscription"),
    });
    Ok(lines)
}

/// The estimate of the invoice that will close the current period, as of `now`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpcomingInvoice {
    /// The period it closes (issued at its end).
    pub period: Period,
    pub lines: Vec<EstimateLine>,
    pub total: Money,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EstimateLine {
    /// `subscription`, `proration`, `overage` or `credit`.
    pub kind: String,
    pub description: String,
    pub resource: Option<String>,
    pub quantity: i64,
    pub amount: Money,
    pub period: Period,
}

pub async fn upcoming(
    tx: &mut TenantTx,
    account: &Account,
    plan: &Plan,
    usage_billing: bool,
    now: DateTime<Utc>,
) -> Result<UpcomingInvoice> {
    let currency = plan.price(account.interval()).map_err(money_error)?.currency;
    let pending: Vec<InvoiceLine> = store::pending_lines(tx).await?;
    let usage_to = now.min(account.current_period_end);
    let closing = closing_lines(tx, account, plan, usage_billing, usage_to, "estimate").await?;
    let mut lines: Vec<EstimateLine> = Vec::new();
    for line in pending {
        let line_currency = Currency::parse(&line.currency).map_err(money_error)?;
        lines.push(EstimateLine {
            kind: line.kind,
            description: line.description,
            resource: line.resource,
            quantity: line.quantity,
            amount: Money::new(line.amount, line_currency),
            period: Period { start: line.period_start, end: line.period_end },
        });
    }
    for line in closing {
        lines.push(EstimateLine {
            kind: line.kind.as_str().into(),
            description: line.description,
            resource: line.resource,
            quantity: line.quantity,
            amount: line.amount,
            period: line.period,
        });
    }
    let total = Money::sum(currency, lines.iter().map(|l| l.amount)).map_err(money_error)?;
    Ok(UpcomingInvoice { period: account.period(), lines, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overage_is_priced_per_block_and_rounded_half_even() {
        let usd = Currency::parse("usd").unwrap_or_else(|_| unreachable!());
        let amount = |unit, per, units| overage_amount(usd, unit, per, units).map(|m| m.amount).ok();
        // 2 500 api calls beyond at 0.50 per 1000 = 1.25
        assert_eq!(amount(50, 1000, 2500), Some(125));
        // 1 500 at 0.25 per 1000 = 0.375 → 37.5 cents → 38 (half to even)
        assert_eq!(amount(25, 1000, 1500), Some(38));
        // 500 at 0.05 per 1000 = 0.025 → 2.5 cents → 2 (half to even)
        assert_eq!(amount(5, 1000, 500), Some(2));
        // 3 compute hours at 0.08 per hour
        assert_eq!(amount(8, 1, 3), Some(24));
    }
}
