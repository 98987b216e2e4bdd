//! Sending one attack and judging its answer. A [`Ledger`] collects every failed expectation
//! (so one run names every hole, not just the first) and counts the cross-tenant denials the
//! service answered, which the metric and the audit log must then account for exactly.

use super::routes::Expect;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use tenant_tests::TestApp;

/// Not JSON at all: authorisation must refuse it before anything parses it.
pub const MALFORMED: &str = "{\"name\": oops";

#[derive(Clone, Copy)]
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a str),
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("-").to_owned()
    }

    pub fn replayed(&self) -> bool {
        self.headers.contains_key("idempotent-replayed")
    }

    /// Everything the client sees: headers and body.
    pub fn visible(&self) -> String {
        let headers: Vec<String> =
            self.headers.iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes()))).collect();
        format!("{}\n\n{}", headers.join("\n"), self.text)
    }

    pub fn summary(&self) -> String {
        format!("{} {}", self.status.as_u16(), self.code())
    }
}

/// Sends one request with `token`, an optional body and an optional `Idempotency-Key`.
pub async fn send(app: &TestApp, method: Method, path: &str, token: &str, body: Body<'_>, key: Option<&str>) -> Reply {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token).timeout(Duration::from_secs(20));
    req = match body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Raw(raw) => req.header(CONTENT_TYPE, "application/json").body(raw.to_owned()),
    };
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    Reply { status, headers, text }
}

#[derive(Default)]
pub struct Ledger {
    failures: Vec<String>,
    /// Answers with 403 `CROSS_TENANT_ACCESS_DENIED`.
    pub denials: u64,
    /// Of those, the ones naming no existing tenant (an unknown slug): audited without a tenant.
    pub anonymous_denials: u64,
    pub probes: u64,
}

impl Ledger {
    /// Counts `reply` if it is a cross-tenant denial; whether it was.
    pub fn count(&mut self, reply: &Reply) -> bool {
        let denied = reply.status == StatusCode::FORBIDDEN && reply.code() == "CROSS_TENANT_ACCESS_DENIED";
        if denied {
            self.denials += 1;
        }
        denied
    }

    /// Judges one answer: its status and code, and that nothing of `secrets` is in it.
    pub fn judge(&mut self, what: &str, reply: &Reply, expect: Expect, secrets: &[String]) {
        self.probes += 1;
        self.count(reply);
        let met = match expect {
            Expect::Refused(status, code) => reply.status == status && reply.code() == code,
            Expect::Served => reply.status.is_success(),
            Expect::Anything => !reply.status.is_server_error(),
        };
        let wanted = match expect {
            Expect::Refused(status, code) => format!("{} {code}", status.as_u16()),
            Expect::Served => "2xx".into(),
            Expect::Anything => "no 5xx".into(),
        };
        self.check(met, || format!("{what}: got {}, expected {wanted}", reply.summary()));
        self.no_leak(what, reply, secrets);
    }

    /// Fails if any of `secrets` appears in what the client of `reply` sees.
    pub fn no_leak(&mut self, what: &str, reply: &Reply, secrets: &[String]) {
        let visible = reply.visible();
        let leaked: Vec<&String> = secrets.iter().filter(|s| visible.contains(s.as_str())).collect();
        self.check(leaked.is_empty(), || format!("{what}: B's {leaked:?} in the answer ({})", reply.summary()));
    }

    pub fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    /// Panics listing every failure.
    pub fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "{} failures in {} isolation probes:\n  {}",
            self.failures.len(),
            self.probes,
            self.failures.join("\n  ")
        );
    }
}
