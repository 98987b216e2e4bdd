//! The HTTP side: one client with the bearer token, paths built from encoded segments (a tenant
//! named by slug or id goes into `{id}` as it is, and nothing a user types can change the path),
//! the envelope unwrapped into its `data` (and `meta`), and every non-2xx answer turned into the
//! API's own error.

use crate::error::{ApiError, Failure, Result};
use crate::settings::Settings;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    /// For server-sent events: no overall deadline (reads are bounded one by one instead).
    streaming: reqwest::Client,
    settings: Settings,
}

/// A successful answer's `data` and `meta`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub data: Value,
    pub meta: Option<Value>,
}

/// A request path of encoded segments: `path(&["api", "v1", "tenants", slug])`.
pub fn path(segments: &[&str]) -> String {
    segments.iter().map(|s| format!("/{}", encode(s))).collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(settings: Settings, timeout: Duration) -> Result<Self> {
        let build = |timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("tenantctl/", env!("CARGO_PKG_VERSION")));
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            builder.build().map_err(|e| Failure::other(format!("cannot set up HTTP: {e}")))
        };
        Ok(Self { http: build(Some(timeout))?, streaming: build(None)?, settings })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer> {
        self.send(Method::GET, path, query, None, None).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer> {
        let mut request = self.request(&self.http, method, path).query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let retry_after = header_text(&response, header::RETRY_AFTER);
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(Failure::Api(api_error(status, &text, retry_after)));
        }
        let mut envelope: Value = serde_json::from_str(&text)
            .map_err(|_| Failure::other(format!("the API answered {status} with something that is not JSON")))?;
        Ok(Answer { status: status.as_u16(), data: envelope["data"].take(), meta: envelope.get("meta").cloned() })
    }

    /// Opens a server-sent event stream; a non-2xx answer is the API's error.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response> {
        let response = self
            .request(&self.streaming, Method::GET, path)
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = header_text(&response, header::RETRY_AFTER);
        let text = response.text().await.unwrap_or_default();
        Err(Failure::Api(api_error(status, &text, retry_after)))
    }

    fn request(&self, client: &reqwest::Client, method: Method, path: &str) -> reqwest::RequestBuilder {
        client.request(method, format!("{}{path}", self.settings.url)).bearer_auth(self.settings.token.expose())
    }

    /// A transport failure, named by host and root cause (never by the full URL or headers).
    pub fn unreachable(&self, err: &reqwest::Error) -> Failure {
        let host = reqwest::Url::parse(&self.settings.url)
            .ok()
            .map(|u| {
                format!("{}{}", u.host_str().unwrap_or("?"), u.port().map(|p| format!(":{p}")).unwrap_or_default())
            })
            .unwrap_or_default();
        let mut cause: &dyn std::error::Error = err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if err.is_timeout() {
            Failure::other(format!("the API at {host} did not answer in time (--request-timeout)"))
        } else {
            Failure::other(format!("cannot reach the API at {host}: {cause}"))
        }
    }
}

fn header_text(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The error envelope, or — from something that isn't the API (a proxy, say) — the status alone.
fn api_error(status: StatusCode, text: &str, retry_after: Option<String>) -> ApiError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let error = &body["error"];
    match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => ApiError {
            status: status.as_u16(),
            code: code.to_owned(),
            message: message.to_owned(),
            details: error.get("details").cloned(),
            retry_after,
        },
        _ => ApiError {
            status: status.as_u16(),
            code: format!("HTTP_{}", status.as_u16()),
            message: status.canonical_reason().unwrap_or("error").to_owned(),
            details: None,
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(path(&["api", "v1", "tenants", "acme"]), "/api/v1/tenants/acme");
        assert_eq!(path(&["tenants", "../plans?x=1"]), "/tenants/..%2Fplans%3Fx%3D1");
    }

    #[test]
    fn error_envelopes_and_foreign_errors() {
        let e = api_error(
            StatusCode::CONFLICT,
            r#"{"success":false,"error":{"code":"INVALID_STATE","message":"no"}}"#,
            None,
        );
        assert_eq!((e.status, e.code.as_str(), e.message.as_str()), (409, "INVALID_STATE", "no"));
        let e = api_error(StatusCode::BAD_GATEWAY, "<html>", None);
        assert_eq!(e.code, "HTTP_502");
    }
}
