//! The layer every request runs inside, innermost of the common stack: it bounds the request by
//! `HTTP_REQUEST_TIMEOUT_MS` (a 503 in the envelope past it) and records it
//! ([`super::metrics::record`]: Prometheus series, error codes, the access line).
//!
//! A hand-written service rather than two `from_fn` middlewares: those box the inner service and
//! the future of every request, twice — a measurable share of a quota check. This one adds a
//! timer and a few words to the route's own future.

use super::error::ApiError;
use crate::AppState;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::time::Timeout;
use tower::{Layer, Service};

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

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        GuardFuture {
            inner: tokio::time::timeout(self.state.config.request_timeout, self.inner.call(request)),
            state: self.state.clone(),
            started,
            method,
            route,
        }
    }
}

pin_project! {
    pub struct GuardFuture<F> {
        #[pin]
        inner: Timeout<F>,
        state: AppState,
        started: Instant,
        method: Method,
        route: Option<MatchedPath>,
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_elapsed) => {
                ApiError::unavailable("the request timed out", anyhow::anyhow!("request deadline exceeded"))
                    .into_response()
            }
        };
        super::metrics::record(this.state, this.method, this.route.as_ref(), this.started.elapsed(), &response);
        Poll::Ready(Ok(response))
    }
}
