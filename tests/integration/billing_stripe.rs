//! `StripeBilling` against a real Stripe-compatible peer (localstripe, one per test), with the
//! plans of a fresh test database.

use chrono::{Duration, Utc};
use serde_json::Value;
use tenant_domain::billing::period::Interval;
use tenant_domain::billing::stripe::StripeBilling;
use tenant_domain::billing::{
    Billing, CardSummary, ChangeSubscription, Charge, ChargeStatus, CloseAccount, OpenAccount, ProviderHealth,
};
use tenant_domain::config::StripeSettings;
use tenant_domain::money::{Currency, Money};
use tenant_domain::plans::{self, Plan};
use tenant_domain::{Secret, TenantId};
use tenant_tests::fresh_database;
use tenant_tests::localstripe::{LocalStripe, SECRET_KEY};

struct Setup {
    stripe: LocalStripe,
    billing: StripeBilling,
    basic: Plan,
    pro: Plan,
}

async fn setup() -> Setup {
    let db = sqlx::PgPool::connect(&fresh_database().await.expect("fresh database")).await.expect("connect");
    let basic = plans::find(&db, "basic").await.expect("plan basic");
    let pro = plans::find(&db, "pro").await.expect("plan pro");
    db.close().await;
    let stripe = LocalStripe::start().await.expect("localstripe starts");
    let billing = StripeBilling::new(&stripe.settings()).expect("Stripe client");
    Setup { stripe, billing, basic, pro }
}

fn opening<'a>(tenant: TenantId, plan: &'a Plan, key: &'a str) -> OpenAccount<'a> {
    OpenAccount {
        tenant,
        tenant_name: "Acme Ltd",
        email: Some("billing@acme.test"),
        plan,
        interval: Interval::Month,
        anchor: Utc::now(),
        existing_customer: None,
        idempotency_key: key,
    }
}

fn stripe_plan_id(plan: &Plan, interval: &str) -> String {
    format!("plan_{}_{interval}", plan.id.0.simple())
}

fn str_of<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_default()
}

#[tokio::test]
async fn opening_twice_with_one_key_creates_one_customer_and_one_subscription() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());

    let first = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");
    let again = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open again");
    assert_eq!(first, again, "a repeat answers what the first call answered");
    assert_eq!(first.provider, "stripe");
    assert!(first.customer_ref.starts_with("cus_"), "{first:?}");
    assert!(first.subscription_ref.as_deref().is_some_and(|s| s.starts_with("sub_")), "{first:?}");

    let customers = s.stripe.customers_of(tenant).await.expect("customers");
    assert_eq!(customers.len(), 1, "{customers:#?}");
    assert_eq!(str_of(&customers[0], "id"), first.customer_ref);
    assert_eq!(str_of(&customers[0], "email"), "billing@acme.test");
    assert_eq!(str_of(&customers[0], "name"), "Acme Ltd");
    let subscriptions = s.stripe.subscriptions_of(tenant).await.expect("subscriptions");
    assert_eq!(subscriptions.len(), 1, "{subscriptions:#?}");
    let subscription = &subscriptions[0];
    assert_eq!(Some(str_of(subscription, "id")), first.subscription_ref.as_deref());
    assert_eq!(str_of(subscription, "customer"), first.customer_ref);
    assert_eq!(str_of(subscription, "status"), "active");
    let plan = &subscription["plan"];
    assert_eq!(str_of(plan, "id"), stripe_plan_id(&s.basic, "month"));
    assert_eq!(plan["amount"], s.basic.price_monthly.amount);
    assert_eq!(str_of(plan, "currency"), s.basic.currency);
    assert_eq!(str_of(plan, "interval"), "month");
    let product = s.stripe.get(&format!("/v1/products/{}", str_of(plan, "product"))).await.expect("product");
    assert_eq!(str_of(&product, "name"), s.basic.name);

    // Another key is another request: a second customer and subscription, on the same Stripe plan.
    let other_key = format!("{key}-2");
    let second = s.billing.open_account(opening(tenant, &s.basic, &other_key)).await.expect("open with another key");
    assert_ne!(second.customer_ref, first.customer_ref);
    assert_ne!(second.subscription_ref, first.subscription_ref);
    assert_eq!(s.stripe.customers_of(tenant).await.expect("customers").len(), 2);
    assert_eq!(s.stripe.subscriptions_of(tenant).await.expect("subscriptions").len(), 2);
    let plans = s.stripe.list("/v1/plans").await.expect("plans");
    assert_eq!(plans.len(), 1, "{plans:#?}");
}

#[tokio::test]
async fn a_retry_reuses_what_an_interrupted_attempt_made() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());
    // The first attempt created the customer, then died before subscribing it.
    let tenant_id = tenant.to_string();
    let made = s
        .stripe
        .post(
            "/v1/customers",
            &[("name", "Acme Ltd"), ("metadata[tenant_id]", &tenant_id), ("metadata[idempotency_key]", &key)],
        )
        .await
        .expect("customer");

    let account = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");
    assert_eq!(account.customer_ref, str_of(&made, "id"));
    assert_eq!(s.stripe.customers_of(tenant).await.expect("customers").len(), 1);
    assert_eq!(s.stripe.subscriptions_of(tenant).await.expect("subscriptions").len(), 1);
}

#[tokio::test]
async fn reopening_an_existing_customer_subscribes_it_with_the_anchor_when_it_lies_ahead() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());
    let first = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");

    let anchor = Utc::now() + Duration::days(10);
    let restore_key = format!("restore-{}", tenant.0.simple());
    let restore = OpenAccount {
        existing_customer: Some(&first.customer_ref),
        anchor,
        interval: Interval::Year,
        ..opening(tenant, &s.pro, &restore_key)
    };
    let again = s.billing.open_account(restore).await.expect("reopen");
    assert_eq!(again.customer_ref, first.customer_ref);
    assert_ne!(again.subscription_ref, first.subscription_ref);
    assert_eq!(s.stripe.customers_of(tenant).await.expect("customers").len(), 1);
    let id = again.subscription_ref.expect("subscription");
    let subscription = s.stripe.get(&format!("/v1/subscriptions/{id}")).await.expect("subscription");
    assert_eq!(subscription["billing_cycle_anchor"], anchor.timestamp());
    assert_eq!(str_of(&subscription["plan"], "id"), stripe_plan_id(&s.pro, "year"));
    assert_eq!(subscription["plan"]["amount"], s.pro.price_yearly.amount);

    // An anchor that has passed is not sent (Stripe refuses it): the period starts now.
    let first_subscription = first.subscription_ref.expect("subscription");
    let subscription =
        s.stripe.get(&format!("/v1/subscriptions/{first_subscription}")).await.expect("first subscription");
    assert_eq!(subscription["billing_cycle_anchor"], Value::Null);
}

#[tokio::test]
async fn changing_to_pro_yearly_moves_the_subscription_to_that_plan() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());
    let account = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");
    let subscription = account.subscription_ref.expect("subscription");

    let change_key = format!("change-{}", tenant.0.simple());
    let change = ChangeSubscription {
        tenant,
        subscription_ref: &subscription,
        plan: &s.pro,
        interval: Interval::Year,
        proration_date: Utc::now(),
        idempotency_key: &change_key,
    };
    s.billing.change_subscription(change.clone()).await.expect("change");
    s.billing.change_subscription(change).await.expect("change again");

    let found = s.stripe.get(&format!("/v1/subscriptions/{subscription}")).await.expect("subscription");
    assert_eq!(str_of(&found, "status"), "active");
    let items = found["items"]["data"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(str_of(&items[0]["plan"], "id"), stripe_plan_id(&s.pro, "year"));
    assert_eq!(str_of(&found["plan"], "interval"), "year");
    assert_eq!(found["plan"]["amount"], s.pro.price_yearly.amount);
    // Prorated: the interval change invoiced at once, crediting the unused basic month.
    let invoice = str_of(&found, "latest_invoice");
    let lines = s.stripe.list(&format!("/v1/invoices/{invoice}/lines")).await.expect("invoice lines");
    assert!(lines.iter().any(|l| l["proration"] == true && l["amount"].as_i64().is_some_and(|a| a < 0)), "{lines:#?}");
    assert_eq!(s.stripe.subscriptions_of(tenant).await.expect("subscriptions").len(), 1);
}

#[tokio::test]
async fn closing_cancels_the_subscription_and_closing_again_is_fine() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());
    let account = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");
    let subscription = account.subscription_ref.expect("subscription");
    let close_key = format!("close-{}", tenant.0.simple());
    let close = CloseAccount { tenant, subscription_ref: Some(&subscription), idempotency_key: &close_key };

    s.billing.close_account(close.clone()).await.expect("close");
    let found = s.stripe.get(&format!("/v1/subscriptions/{subscription}")).await.expect("subscription");
    assert_eq!(str_of(&found, "status"), "canceled");
    s.billing.close_account(close).await.expect("close again");

    let missing = CloseAccount { tenant, subscription_ref: Some("sub_missing"), idempotency_key: &close_key };
    s.billing.close_account(missing).await.expect("a missing subscription counts as closed");
    let none = CloseAccount { tenant, subscription_ref: None, idempotency_key: &close_key };
    s.billing.close_account(none).await.expect("no subscription: nothing to do");
    let customers = s.stripe.customers_of(tenant).await.expect("customers");
    assert_eq!(customers.len(), 1, "the customer stays for the record");
}

fn charging<'a>(tenant: TenantId, customer: &'a str, method: Option<&'a str>, key: &'a str) -> Charge<'a> {
    Charge {
        tenant,
        customer_ref: customer,
        invoice_number: "INV-2026-0001",
        amount: Money::new(2900, Currency::parse("usd").expect("usd")),
        payment_method: method,
        idempotency_key: key,
    }
}

#[tokio::test]
async fn charging_a_good_card_succeeds_once_per_key() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());
    let account = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");
    let card = s.stripe.card("4242424242424242").await.expect("card");

    let charge_key = format!("charge-{}", tenant.0.simple());
    let paid =
        s.billing.charge(charging(tenant, &account.customer_ref, Some(&card), &charge_key)).await.expect("charge");
    assert_eq!(paid.status, ChargeStatus::Succeeded);
    assert!(paid.provider_ref.starts_with("pi_"), "{paid:?}");
    assert_eq!(paid.card, Some(CardSummary { brand: "visa".into(), last4: "4242".into() }));
    let again = s
        .billing
        .charge(charging(tenant, &account.customer_ref, Some(&card), &charge_key))
        .await
        .expect("charge again");
    assert_eq!(again, paid, "a repeat answers what the first charge answered");

    let intents = s.stripe.payment_intents_of(tenant).await.expect("payment intents");
    assert_eq!(intents.len(), 1, "{intents:#?}");
    let intent = &intents[0];
    assert_eq!(str_of(intent, "id"), paid.provider_ref);
    assert_eq!(str_of(intent, "status"), "succeeded");
    assert_eq!(intent["amount"], 2900);
    assert_eq!(str_of(intent, "customer"), account.customer_ref);
    assert_eq!(str_of(&intent["metadata"], "invoice"), "INV-2026-0001");
    let method = s.stripe.get(&format!("/v1/payment_methods/{card}")).await.expect("payment method");
    assert_eq!(str_of(&method, "customer"), account.customer_ref, "the card is saved on the customer");

    // Without a payment method, the customer's default (here the test card given at opening).
    let default_key = format!("{charge_key}-default");
    let paid = s.billing.charge(charging(tenant, &account.customer_ref, None, &default_key)).await.expect("charge");
    assert_eq!(paid.status, ChargeStatus::Succeeded);
    assert_eq!(s.stripe.payment_intents_of(tenant).await.expect("payment intents").len(), 2);
}

#[tokio::test]
async fn a_declined_card_fails_the_charge() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let key = format!("open-{}", tenant.0.simple());
    let account = s.billing.open_account(opening(tenant, &s.basic, &key)).await.expect("open");

    // 4000000000000002 is refused as soon as it is saved on the customer.
    let declined = s.stripe.card("4000000000000002").await.expect("card");
    let charge_key = format!("charge-{}", tenant.0.simple());
    let result =
        s.billing.charge(charging(tenant, &account.customer_ref, Some(&declined), &charge_key)).await.expect("charge");
    let ChargeStatus::Failed { message } = &result.status else { panic!("declined card charged: {result:?}") };
    assert!(message.contains("declined"), "{message}");
    assert!(!message.contains("4000000000000002"), "{message}");
    assert_eq!(result.card, Some(CardSummary { brand: "visa".into(), last4: "0002".into() }));

    // 4000000000000341 is saved, then the payment itself is declined.
    let fails = s.stripe.card("4000000000000341").await.expect("card");
    let charge_key = format!("{charge_key}-341");
    let result =
        s.billing.charge(charging(tenant, &account.customer_ref, Some(&fails), &charge_key)).await.expect("charge");
    assert!(matches!(result.status, ChargeStatus::Failed { .. }), "{result:?}");
    assert!(result.provider_ref.starts_with("pi_"), "{result:?}");
    let again =
        s.billing.charge(charging(tenant, &account.customer_ref, Some(&fails), &charge_key)).await.expect("again");
    assert!(matches!(again.status, ChargeStatus::Failed { .. }), "{again:?}");
    assert_eq!(again.provider_ref, result.provider_ref);
    assert_eq!(s.stripe.payment_intents_of(tenant).await.expect("payment intents").len(), 1);
}

#[tokio::test]
async fn charging_a_customer_without_payment_method_fails() {
    let s = setup().await;
    let tenant = TenantId::new_v7();
    let customer = s.stripe.post("/v1/customers", &[("name", "Bare")]).await.expect("customer");
    let key = format!("charge-{}", tenant.0.simple());
    let result = s.billing.charge(charging(tenant, str_of(&customer, "id"), None, &key)).await.expect("charge");
    assert_eq!(result.status, ChargeStatus::Failed { message: "no payment method on file".into() });
    assert_eq!(result.card, None);
}

#[tokio::test]
async fn health_is_up_against_localstripe_and_down_against_nothing() {
    let s = setup().await;
    assert_eq!(s.billing.health().await, ProviderHealth::Up);
    s.stripe.reset().await.expect("reset");
    assert_eq!(s.billing.health().await, ProviderHealth::Up);

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let settings = StripeSettings {
        secret_key: Secret::new(SECRET_KEY.to_owned()),
        api_base: Some(format!("http://127.0.0.1:{closed}")),
    };
    let down = StripeBilling::new(&settings).expect("client");
    assert_eq!(down.health().await, ProviderHealth::Down);

    // A peer that accepts connections but never answers: down within the 2 s health timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let settings = StripeSettings {
        secret_key: Secret::new(SECRET_KEY.to_owned()),
        api_base: Some(format!("http://{}", silent.local_addr().expect("addr"))),
    };
    let hanging = StripeBilling::new(&settings).expect("client");
    let started = std::time::Instant::now();
    assert_eq!(hanging.health().await, ProviderHealth::Down);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
}
