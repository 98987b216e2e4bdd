//! What travels to and from Stripe besides the typed requests: failure classification, message
//! scrubbing, idempotency keys and tags, and the small reply types read with `.customize::<T>()`.

use super::*;

/// The one place a Stripe failure is classified: network errors, timeouts, 429, 5xx and Stripe's
/// "another request holds this object or key" conflicts are worth another attempt; every other
/// refusal is permanent. The message is Stripe's own, scrubbed and short.
pub(super) fn classify(err: StripeError) -> ExternalError {
    match err {
        StripeError::Stripe(api, status) => {
            let code = api.code.as_ref().map(|c| c.as_str().to_owned());
            let message = safe_message(api.message.as_deref().unwrap_or("no message"));
            let text = match &code {
                Some(code) => format!("Stripe answered {status} ({code}): {message}"),
                None => format!("Stripe answered {status}: {message}"),
            };
            let busy = matches!(code.as_deref(), Some("lock_timeout" | "idempotency_key_in_use" | "rate_limit"));
            if status == 429 || status >= 500 || busy {
                ExternalError::Transient(text)
            } else {
                ExternalError::Permanent(text)
            }
        }
        StripeError::Timeout => ExternalError::Transient("Stripe did not answer in time".into()),
        StripeError::ClientError(err) => {
            ExternalError::Transient(format!("Stripe unreachable: {}", safe_message(&err)))
        }
        // An error status whose body is not Stripe's JSON: a proxy's or server's error page.
        StripeError::JSONDeserialize(err) if err.contains("Stripe error") => {
            ExternalError::Transient("Stripe answered an error without details".into())
        }
        StripeError::JSONDeserialize(_) => ExternalError::Permanent("Stripe's answer could not be read".into()),
        StripeError::ConfigError(err) => ExternalError::Permanent(format!("Stripe client: {}", safe_message(&err))),
    }
}

pub(super) fn status(err: &StripeError) -> Option<u16> {
    match err {
        StripeError::Stripe(_, status) => Some(*status),
        _ => None,
    }
}

/// A refused payment (402, or Stripe's `card_error`), as opposed to a failed call.
pub(super) fn is_decline(err: &StripeError) -> bool {
    matches!(err, StripeError::Stripe(api, status) if *status == 402 || api.type_ == ApiErrorsType::CardError)
}

pub(super) fn decline_message(err: &StripeError) -> String {
    match err {
        StripeError::Stripe(api, _) => safe_message(api.message.as_deref().unwrap_or("the payment was declined")),
        _ => "the payment was declined".into(),
    }
}

pub(super) fn declined_intent(err: &StripeError) -> Option<String> {
    match err {
        StripeError::Stripe(api, _) => api.payment_intent.as_ref().map(|intent| intent.id.to_string()),
        _ => None,
    }
}

/// A message fit for logs and users: no key-like words (`sk_…`, `rk_…`), no long digit runs
/// (card numbers), at most [`MAX_MESSAGE`] characters.
pub(super) fn safe_message(raw: &str) -> String {
    let words: Vec<&str> = raw
        .split_whitespace()
        .map(|word| {
            let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
            if ["sk_", "rk_", "whsec_"].iter().any(|prefix| bare.starts_with(prefix)) {
                "[redacted]"
            } else if word.chars().filter(char::is_ascii_digit).count() >= 12 {
                "[number]"
            } else {
                word
            }
        })
        .collect();
    let message = words.join(" ");
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

/// `<key>:<step>` as Stripe's `Idempotency-Key` (at most 255 bytes: longer ones are hashed).
pub(super) fn idempotent(key: &str, step: &str) -> Result<RequestStrategy, StripeError> {
    let full = format!("{key}:{step}");
    let full = if full.len() <= 255 { full } else { format!("sha256:{}", hex::encode(Sha256::digest(&full))) };
    let key = IdempotencyKey::new(full).map_err(|err| StripeError::ConfigError(err.to_string()))?;
    Ok(RequestStrategy::Idempotent(key))
}

/// The metadata that lets a repeat find what an earlier attempt made.
pub(super) fn made_for_tags(tenant: TenantId, key: &str) -> HashMap<String, String> {
    HashMap::from([("tenant_id".to_owned(), tenant.to_string()), ("idempotency_key".to_owned(), key.to_owned())])
}

/// Stripe search query for objects tagged with `key`.
pub(super) fn made_for_query(key: &str) -> String {
    let quoted = key.replace('\\', "\\\\").replace('\'', "\\'");
    format!("metadata['idempotency_key']:'{quoted}'")
}

pub(super) fn made_for(objects: &[Tagged], key: &str) -> Option<String> {
    objects
        .iter()
        .find(|o| o.metadata.as_ref().and_then(|m| m.get("idempotency_key")).is_some_and(|k| k == key))
        .map(|o| o.id.clone())
}

/// Whether `base` (an API base URL) names Stripe itself.
pub(super) fn is_stripe_host(base: &str) -> bool {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
    host == "stripe.com" || host.ends_with(".stripe.com")
}

// ---------------------------------------------------------------- replies (only what we read)

#[derive(miniserde::Deserialize)]
pub(super) struct Tagged {
    pub(super) id: String,
    pub(super) metadata: Option<HashMap<String, String>>,
}

/// A list or search page.
#[derive(miniserde::Deserialize)]
pub(super) struct Page<T> {
    pub(super) data: Vec<T>,
    pub(super) has_more: bool,
}

#[derive(miniserde::Deserialize)]
pub(super) struct PlanReply {
    pub(super) id: String,
    pub(super) amount: Option<i64>,
    pub(super) currency: String,
    pub(super) interval: String,
}

#[derive(miniserde::Deserialize)]
pub(super) struct CustomerReply {
    pub(super) invoice_settings: Option<InvoiceSettings>,
    pub(super) default_source: Option<String>,
}

#[derive(miniserde::Deserialize)]
pub(super) struct InvoiceSettings {
    pub(super) default_payment_method: Option<String>,
}

impl CustomerReply {
    pub(super) fn default_payment_method(&self) -> Option<&str> {
        self.invoice_settings
            .as_ref()
            .and_then(|s| s.default_payment_method.as_deref())
            .or(self.default_source.as_deref())
    }
}

#[derive(miniserde::Deserialize)]
pub(super) struct SubscriptionReply {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) items: ItemPage,
}

#[derive(miniserde::Deserialize)]
pub(super) struct ItemPage {
    pub(super) data: Vec<ItemReply>,
}

#[derive(miniserde::Deserialize)]
pub(super) struct ItemReply {
    pub(super) id: String,
    pub(super) plan: Option<IdReply>,
}

#[derive(miniserde::Deserialize)]
pub(super) struct IdReply {
    pub(super) id: String,
}

impl SubscriptionReply {
    pub(super) fn has_ended(&self) -> bool {
        matches!(self.status.as_str(), "canceled" | "incomplete_expired")
    }
}

#[derive(miniserde::Deserialize)]
pub(super) struct PaymentMethodReply {
    pub(super) customer: Option<String>,
    pub(super) card: Option<CardReply>,
}

#[derive(miniserde::Deserialize)]
pub(super) struct CardReply {
    pub(super) brand: String,
    pub(super) last4: String,
}

impl PaymentMethodReply {
    pub(super) fn card(&self) -> Option<CardSummary> {
        self.card.as_ref().map(|c| CardSummary { brand: c.brand.clone(), last4: c.last4.clone() })
    }
}

#[derive(miniserde::Deserialize)]
pub(super) struct PaymentIntentReply {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) payment_method: Option<String>,
    pub(super) last_payment_error: Option<PaymentErrorReply>,
}

#[derive(miniserde::Deserialize)]
pub(super) struct PaymentErrorReply {
    pub(super) message: Option<String>,
}
