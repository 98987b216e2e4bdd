//! What can go wrong, and the exit code and one-line message for each: 2 for usage (clap's
//! errors and a missing URL or token), 1 for everything refused or failed — an API error (its
//! `code` and `message` printed as the API said them, with a hint per status), a waited job that
//! failed or was compensated, or an API that can't be reached.

use serde_json::Value;
use std::fmt;

#[derive(Debug)]
pub enum Failure {
    /// The command line or the configuration is wrong: exit 2.
    Usage(String),
    /// The API answered with its error envelope.
    Api(ApiError),
    /// A job this command followed ended failed or compensated.
    Job { id: String, status: String, code: String, message: String },
    /// Network trouble, a timeout, an answer that isn't the API's.
    Other(String),
}

/// The API's error envelope (`{"success":false,"error":{code, message, details?}}`).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
    /// `Retry-After` of a 429, in seconds.
    pub retry_after: Option<String>,
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Api(_) | Self::Job { .. } | Self::Other(_) => 1,
        }
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) => write!(f, "tenantctl: {message} (see tenantctl --help)"),
            Self::Api(err) => write!(f, "tenantctl: {err}"),
            Self::Job { id, status, code, message } => write!(f, "tenantctl: job {id} {status}: {code}: {message}"),
            Self::Other(message) => write!(f, "tenantctl: {message}"),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, one_line(&self.message))?;
        match self.hint() {
            Some(hint) => write!(f, " — {hint} (HTTP {})", self.status),
            None => write!(f, " (HTTP {})", self.status),
        }
    }
}

impl ApiError {
    /// What the status means for the person at the terminal; the figures of a refused quota.
    fn hint(&self) -> Option<String> {
        let detail = |key: &str| self.details.as_ref().and_then(|d| d.get(key)).and_then(Value::as_i64);
        Some(match (self.status, self.code.as_str()) {
            (_, "QUOTA_EXCEEDED") => match (detail("used"), detail("limit"), detail("requested")) {
                (Some(used), Some(limit), Some(requested)) => {
                    format!("used {used} of {limit}, {requested} requested")
                }
                _ => return None,
            },
            (401, _) => "check the token (TENANT_API_TOKEN, --token or the config file)".into(),
            (403, "CROSS_TENANT_ACCESS_DENIED") => "the token belongs to another tenant".into(),
            (403, "TENANT_NOT_ACTIVE") => "the tenant is not active".into(),
            (403, _) => "this token's role may not do that".into(),
            (404, _) => "check the id or slug".into(),
            (409, _) => "it conflicts with the current state; nothing was changed".into(),
            (422, _) => "the request was understood but refused".into(),
            (429, _) => match &self.retry_after {
                Some(secs) => format!("rate limited; retry in {secs} s"),
                None => "rate limited; retry later".into(),
            },
            (503, _) => "the service or one of its dependencies is unavailable; retry later".into(),
            (500..=599, _) => "the server failed; retry later".into(),
            _ => return None,
        })
    }
}

/// Collapses whitespace, so a message stays on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(status: u16, code: &str) -> ApiError {
        ApiError { status, code: code.into(), message: "nope\nreally".into(), details: None, retry_after: None }
    }

    #[test]
    fn messages_are_one_line_with_code_and_hint() {
        assert_eq!(
            err(401, "UNAUTHORIZED").to_string(),
            "UNAUTHORIZED: nope really — check the token (TENANT_API_TOKEN, --token or the config file) (HTTP 401)"
        );
        let mut limited = err(429, "RATE_LIMITED");
        limited.retry_after = Some("12".into());
        assert!(limited.to_string().contains("retry in 12 s"));
        let mut quota = err(403, "QUOTA_EXCEEDED");
        quota.details = Some(json!({"used": 100, "limit": 100, "requested": 1}));
        assert!(quota.to_string().contains("used 100 of 100, 1 requested"));
        assert_eq!(err(400, "VALIDATION_FAILED").to_string(), "VALIDATION_FAILED: nope really (HTTP 400)");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        assert_eq!(Failure::Api(err(409, "INVALID_STATE")).exit_code(), 1);
        assert_eq!(Failure::other("x").exit_code(), 1);
    }
}
