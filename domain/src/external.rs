//! Failures of external services (Stripe, SMTP, the backup store), classified once, where the
//! client knows what the failure means: a transient one is retried with backoff, a permanent one
//! makes the saga compensate.

#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// Network trouble, timeouts, 5xx, rate limits: worth another attempt.
    #[error("{0}")]
    Transient(String),
    /// Refused for good (validation, 4xx): retrying can't help.
    #[error("{0}")]
    Permanent(String),
}
