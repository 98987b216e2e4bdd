//! An account's standing (active, past due, canceled) with the provider's last subscription
//! report, read from and written to its `billing_accounts` row, and the rules by which Stripe
//! events move it. The rules are pure functions of the standing and the event, so every ordering
//! case is unit-tested apart from the database: each `after_*` returns the next standing, or
//! `None` when the event is stale and changes nothing.

use crate::{Error, Result, TenantId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// The columns of `billing_accounts` the webhook reads, locked for the transaction.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AccountRow {
    status: String,
    subscription_ref: Option<String>,
    past_due_since: Option<DateTime<Utc>>,
    pub dunning_suspended_at: Option<DateTime<Utc>>,
    provider_status: Option<String>,
    provider_synced_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
}

impl AccountRow {
    pub async fn load(tx: &mut PgConnection, tenant: TenantId) -> Result<Self> {
        Ok(sqlx::query_as(
            "select status, subscription_ref, past_due_since, dunning_suspended_at, provider_status, \
                 provider_synced_at, canceled_at from billing_accounts where tenant_id = $1 for update",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?)
    }

    pub fn standing(&self) -> Result<Standing> {
        let status = match self.status.as_str() {
            "active" => AccountStatus::Active,
            "past_due" => AccountStatus::PastDue,
            "canceled" => AccountStatus::Canceled,
            other => return Err(Error::InvalidState { message: format!("unknown billing account status {other}") }),
        };
        Ok(Standing {
            status,
            subscription_ref: self.subscription_ref.clone(),
            past_due_since: self.past_due_since,
            provider_status: self.provider_status.clone(),
            provider_synced_at: self.provider_synced_at,
            canceled_at: self.canceled_at,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AccountStatus {
    Active,
    PastDue,
    Canceled,
}

impl AccountStatus {
    fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::PastDue => "past_due",
            AccountStatus::Canceled => "canceled",
        }
    }
}

/// An account's standing and the provider's last subscription report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Standing {
    pub status: AccountStatus,
    subscription_ref: Option<String>,
    past_due_since: Option<DateTime<Utc>>,
    provider_status: Option<String>,
    provider_synced_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
}

impl Standing {
    /// The subscription's status as reported after `at`, if a report that new was applied.
    fn reported_after(&self, at: DateTime<Utc>) -> Option<&str> {
        self.provider_synced_at.filter(|synced| *synced > at).and(self.provider_status.as_deref())
    }

    fn is_ours(&self, subscription: &str) -> bool {
        self.subscription_ref.as_deref().is_none_or(|ours| ours == subscription)
    }

    pub fn after_failure(&self, at: DateTime<Utc>, invoice_already_paid: bool) -> Option<Self> {
        let superseded = invoice_already_paid
            || self.status == AccountStatus::Canceled
            || matches!(self.reported_after(at), Some("active" | "trialing"));
        (!superseded).then(|| self.past_due(at))
    }

    pub fn after_payment(&self, at: DateTime<Utc>) -> Option<Self> {
        let superseded = self.status == AccountStatus::Canceled
            || self.past_due_since.is_some_and(|since| at < since)
            || matches!(self.reported_after(at), Some("past_due" | "unpaid"));
        (!superseded).then(|| Self { status: AccountStatus::Active, past_due_since: None, ..self.clone() })
    }

    pub fn after_report(&self, at: DateTime<Utc>, subscription: &str, status: &str) -> Option<Self> {
        let current = match self.provider_synced_at {
            None => true,
            Some(synced) => at > synced || (at == synced && self.provider_status.as_deref() != Some("canceled")),
        };
        if !current || !self.is_ours(subscription) {
            return None;
        }
        let mut next = Self { provider_status: Some(status.to_owned()), provider_synced_at: Some(at), ..self.clone() };
        if self.status != AccountStatus::Canceled {
            match status {
                "past_due" | "unpaid" => {
                    next.status = AccountStatus::PastDue;
                    next.past_due_since = self.past_due_since.or(Some(at));
                }
                "active" | "trialing" if self.past_due_since.is_none_or(|since| at > since) => {
                    next.status = AccountStatus::Active;
                    next.past_due_since = None;
                }
                _ => {}
            }
        }
        Some(next)
    }

    pub fn after_deletion(&self, at: DateTime<Utc>, subscription: &str) -> Option<Self> {
        if self.provider_synced_at.is_some_and(|synced| at < synced) || !self.is_ours(subscription) {
            return None;
        }
        Some(Self {
            status: AccountStatus::Canceled,
            provider_status: Some("canceled".to_owned()),
            provider_synced_at: Some(at),
            canceled_at: self.canceled_at.or(Some(at)),
            ..self.clone()
        })
    }

    fn past_due(&self, at: DateTime<Utc>) -> Self {
        Self { status: AccountStatus::PastDue, past_due_since: self.past_due_since.or(Some(at)), ..self.clone() }
    }

    pub async fn save(&self, tx: &mut PgConnection, tenant: TenantId) -> Result<()> {
        sqlx::query(
            "update billing_accounts set status = $2, past_due_since = $3, provider_status = $4, \
                 provider_synced_at = $5, canceled_at = $6, updated_at = now() where tenant_id = $1",
        )
        .bind(tenant)
        .bind(self.status.as_str())
        .bind(self.past_due_since)
        .bind(&self.provider_status)
        .bind(self.provider_synced_at)
        .bind(self.canceled_at)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_764_000_000 + secs, 0).single().expect("valid time")
    }

    fn standing() -> Standing {
        Standing {
            status: AccountStatus::Active,
            subscription_ref: Some("sub_1".into()),
            past_due_since: None,
            provider_status: None,
            provider_synced_at: None,
            canceled_at: None,
        }
    }

    #[test]
    fn subscription_reports_only_move_forward() {
        let newer = standing().after_report(t(20), "sub_1", "active").expect("first report applies");
        assert_eq!((newer.provider_status.as_deref(), newer.provider_synced_at), (Some("active"), Some(t(20))));
        assert_eq!(newer.after_report(t(10), "sub_1", "past_due"), None, "an older report is stale");
        assert!(newer.after_report(t(20), "sub_1", "past_due").is_some(), "a tie applies");
        assert_eq!(
            newer.after_report(t(30), "sub_other", "past_due"),
            None,
            "another subscription's report is ignored"
        );
        let deleted = newer.after_deletion(t(20), "sub_1").expect("deletion wins a tie");
        assert_eq!((deleted.status, deleted.canceled_at), (AccountStatus::Canceled, Some(t(20))));
        assert_eq!(deleted.after_report(t(20), "sub_1", "active"), None, "no tie undoes a deletion");
        assert_eq!(newer.after_deletion(t(10), "sub_1"), None, "an older deletion is stale");
        let later = deleted.after_report(t(40), "sub_1", "active").expect("a newer report is recorded");
        assert_eq!(later.status, AccountStatus::Canceled, "but a canceled account stays canceled");
    }

    #[test]
    fn past_due_starts_at_the_first_failure_and_ends_with_a_payment_after_it() {
        let failed = standing().after_failure(t(10), false).expect("applies");
        assert_eq!((failed.status, failed.past_due_since), (AccountStatus::PastDue, Some(t(10))));
        let again = failed.after_failure(t(20), false).expect("applies");
        assert_eq!(again.past_due_since, Some(t(10)), "the first failure counts");
        assert_eq!(failed.after_payment(t(5)), None, "a payment older than the failure does not clear it");
        let paid = failed.after_payment(t(10)).expect("applies");
        assert_eq!((paid.status, paid.past_due_since), (AccountStatus::Active, None));
        assert_eq!(standing().after_failure(t(10), true), None, "our invoice is already paid");
    }

    #[test]
    fn a_newer_report_decides_over_an_older_invoice_event() {
        let reported_active = standing().after_report(t(20), "sub_1", "active").expect("applies");
        assert_eq!(reported_active.after_failure(t(10), false), None, "failure before a newer active report");
        assert!(reported_active.after_failure(t(30), false).is_some());
        let reported_past_due = standing().after_report(t(20), "sub_1", "past_due").expect("applies");
        assert_eq!(reported_past_due.status, AccountStatus::PastDue);
        assert_eq!(reported_past_due.after_payment(t(10)), None, "payment before a newer past-due report");
    }

    #[test]
    fn an_active_report_clears_past_due_only_after_the_first_failure() {
        let failed = standing().after_failure(t(10), false).expect("applies");
        let older = failed.after_report(t(5), "sub_1", "active").expect("recorded");
        assert_eq!((older.status, older.past_due_since), (AccountStatus::PastDue, Some(t(10))));
        let same_second = failed.after_report(t(10), "sub_1", "active").expect("recorded");
        assert_eq!(same_second.status, AccountStatus::PastDue);
        let newer = failed.after_report(t(11), "sub_1", "active").expect("recorded");
        assert_eq!((newer.status, newer.past_due_since), (AccountStatus::Active, None));
        let canceled = Standing { status: AccountStatus::Canceled, ..standing() };
        assert_eq!(canceled.after_failure(t(10), false), None);
        assert_eq!(canceled.after_payment(t(10)), None);
    }
}
