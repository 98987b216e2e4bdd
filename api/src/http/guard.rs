//! The one layer every request runs inside (only the body limit sits between it and the route):
//!
//! * `Authorization` and `X-Service-Token` are marked sensitive (`Debug` of the headers hides them);
//! * the request id: `x-request-id` as sent, or a new random UUID, on the request and the response;
//! * the request's span (`http`: method, path, request id, and later tenant and service) — at
//!   `info`, but at `debug` on the hot routes ([`super::HOT_ROUTES`]), so that at the default
//!   level they build none;
//! * a panic in a handler becomes a 500 in the envelope;
//! * the deadline: past `HTTP_REQUEST_TIMEOUT_MS`, a 503 in the envelope;
//! * the measurements, inside the span ([`super::metrics::record`]: Prometheus series, error
//!   codes, the access line).
//!
//! One hand-written service instead of tower-http's sensitive-headers, request-id (twice), trace
//! and catch-panic layers and two `from_fn` middlewares: each of those wraps every request's
//! future in one more (the `from_fn` ones box it, and clone and box the service behind them), and
//! together they were a tenth of the work of a quota check.

use super::error::ApiError;
use crate::AppState;
use axum::extract::{MatchedPath, Request};
use axum::http::header::{self, Entry};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::time::Timeout;
use tower::{Layer, Service};
use tracing::Span;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const SENSITIVE: [HeaderName; 2] = [header::AUTHORIZATION, HeaderName::from_static("x-service-token")];

#[derive(Clone)]
pub struct GuardLayer {
    state: AppState,
}

impl GuardLayer {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let headers = request.headers_mut();
        for name in SENSITIVE {
            if headers.contains_key(&name)
                && let Entry::Occupied(mut values) = headers.entry(name)
            {
                values.iter_mut().for_each(|v| v.set_sensitive(true));
            }
        }
        let request_id = match headers.get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                headers.insert(REQUEST_ID, id.clone());
                id
            }
        };
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let hot = route.as_ref().and_then(|r| super::hot_route(&method, r.as_str()));
        let span = make_span(&request, hot.is_some(), &request_id);
        let inner = {
            let _entered = span.enter();
            catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
                .ok()
                .map(|future| tokio::time::timeout(self.state.config.request_timeout, future))
        };
        GuardFuture { inner, state: self.state.clone(), started, method, route, hot, request_id, span }
    }
}

pin_project! {
    pub struct GuardFuture<F> {
        // `None` when calling the route panicked.
        #[pin]
        inner: Option<Timeout<F>>,
        state: AppState,
        started: Instant,
        method: Method,
        route: Option<MatchedPath>,
        // The index in `HOT_ROUTES` of this request's method and route, if it is one.
        hot: Option<usize>,
        request_id: HeaderValue,
        span: Span,
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let polled = match this.inner.as_pin_mut() {
            Some(inner) => catch_unwind(AssertUnwindSafe(|| inner.poll(cx))).ok(),
            None => None,
        };
        let mut response = match polled {
            Some(Poll::Pending) => return Poll::Pending,
            Some(Poll::Ready(Ok(Ok(response)))) => response,
            Some(Poll::Ready(Ok(Err(never)))) => match never {},
            Some(Poll::Ready(Err(_elapsed))) => {
                ApiError::unavailable("the request timed out", anyhow::anyhow!("request deadline exceeded"))
                    .into_response()
            }
            None => ApiError::internal(anyhow::anyhow!("handler panicked")).into_response(),
        };
        if let Entry::Vacant(slot) = response.headers_mut().entry(REQUEST_ID) {
            slot.insert(this.request_id.clone());
        }
        let elapsed = this.started.elapsed();
        super::metrics::record(this.state, this.method, this.route.as_ref(), *this.hot, elapsed, &response);
        Poll::Ready(Ok(response))
    }
}

/// A random (v4) UUID, for a request that came without `x-request-id`.
fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

// `tenant_id` is filled in once the request is authorized for a tenant (the `access` gate),
// `service` once an internal call's service token is (the `ServiceCaller` extractor).
fn make_span(request: &Request, hot: bool, request_id: &HeaderValue) -> Span {
    // tracing wants a constant level at each call site: one field list, two sites.
    macro_rules! http_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "http",
                method = %request.method(),
                path = %request.uri().path(),
                request_id = request_id.to_str().unwrap_or("-"),
                tenant_id = tracing::field::Empty,
                service = tracing::field::Empty
            )
        };
    }
    if hot {
        // Disabled at the default level: no fields are formatted, nothing is allocated.
        http_span!(tracing::Level::DEBUG)
    } else {
        http_span!(tracing::Level::INFO)
    }
}
