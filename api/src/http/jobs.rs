//! Job polling and streaming: `GET /api/v1/jobs/{id}`, `GET /api/v1/jobs/{id}/events` (server-sent
//! events of its progress) and `GET /api/v1/tenants/{id}/jobs`.

use super::access::{JobAccess, Read, TenantAccess};
use super::error::{ApiError, Result};
use super::extract::Query;
use super::response::{self, Envelope, PageMeta, PageParams};
use crate::AppState;
use crate::job_watch::{FALLBACK_POLL, Signal};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use sqlx::PgPool;
use std::convert::Infallible;
use tenant_domain::jobs::{self, Job};
use tenant_domain::{Error, JobId};
use tokio::sync::{broadcast, watch};

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job with its steps", body = inline(Envelope<Job>)),
              (status = 403, description = "Another tenant's job", body = super::error::ErrorBody),
              (status = 404, description = "`JOB_NOT_FOUND`", body = super::error::ErrorBody)))]
pub async fn get(access: JobAccess) -> Result<Response> {
    Ok(response::ok(access.job))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, content_type = "text/event-stream",
               description = "Server-sent events, each carrying the whole job (the `data` of `GET /api/v1/jobs/{id}`) \
                              as JSON: first its current state, then one `progress` event per change of status or steps, \
                              and a last `finished` event when it succeeded, failed or was compensated, after which the \
                              stream ends. A job that is already finished answers with its `finished` event only.",
               body = JobEvent),
              (status = 403, description = "Another tenant's job", body = super::error::ErrorBody),
              (status = 404, description = "`JOB_NOT_FOUND`", body = super::error::ErrorBody),
              (status = 503, description = "Change announcements are unavailable (Redis down)", body = super::error::ErrorBody)))]
pub async fn events(State(state): State<AppState>, access: JobAccess) -> Result<Response> {
    let id = access.job.id;
    let signals = state
        .job_watch
        .subscribe()
        .await
        .map_err(|e| ApiError::unavailable("job progress announcements are unavailable", e))?;
    // Read again once subscribed: a change committed between the first read and the subscription
    // would otherwise be announced to nobody.
    let job = jobs::get(&state.db, id).await?;
    let stream = progress(Progress {
        db: state.db.clone(),
        id,
        signals,
        stopping: state.stopping.subscribe(),
        last: None,
        next: Some(job),
        finished: false,
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// One server-sent event of `GET /api/v1/jobs/{id}/events`.
// Documents the wire format only; the stream writes it through axum's `Event`.
#[derive(utoipa::ToSchema)]
pub struct JobEvent {
    /// `progress`, or `finished` for the last one.
    #[schema(pattern = "^(progress|finished)$")]
    pub event: String,
    /// The job's `updatedAt` in microseconds since the epoch.
    pub id: String,
    /// The whole job as JSON, as in the `data` of `GET /api/v1/jobs/{id}`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

struct Progress {
    db: PgPool,
    id: JobId,
    signals: broadcast::Receiver<Signal>,
    stopping: watch::Receiver<bool>,
    /// The JSON of the last event sent: a re-read that changed nothing visible sends nothing.
    last: Option<String>,
    /// A job read but not yet sent.
    next: Option<Job>,
    finished: bool,
}

impl Progress {
    /// Waits until this job may have changed (its notification, a resync, a lag, or the fallback
    /// poll): true; or until the server begins to shut down: false.
    async fn changed(&mut self) -> bool {
        let id = self.id;
        let signals = &mut self.signals;
        let wait = async {
            loop {
                match signals.recv().await {
                    Ok(Signal::Changed(other)) if other != id => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(FALLBACK_POLL, wait) => true,
            _ = self.stopping.wait_for(|stop| *stop) => false,
        }
    }
}

fn progress(state: Progress) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    futures::stream::unfold(state, |mut p| async move {
        if p.finished {
            return None;
        }
        loop {
            let job = match p.next.take() {
                Some(job) => job,
                None => {
                    if !p.changed().await {
                        // Shutting down: the client reconnects to another replica.
                        return None;
                    }
                    match jobs::get(&p.db, p.id).await {
                        Ok(job) => job,
                        // Removed with its tenant's rows: nothing more will come.
                        Err(Error::NotFound { .. }) => return None,
                        Err(err) => {
                            tracing::warn!(job = %p.id, error = %err, "job progress: re-read failed; trying again");
                            continue;
                        }
                    }
                }
            };
            let Ok(data) = serde_json::to_string(&job) else { return None };
            if p.last.as_deref() == Some(data.as_str()) {
                continue;
            }
            p.finished = job.status.is_final();
            let event = Event::default()
                .event(if p.finished { "finished" } else { "progress" })
                .id(job.updated_at.timestamp_micros().to_string())
                .data(&data);
            p.last = Some(data);
            return Some((Ok(event), p));
        }
    })
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/jobs", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), PageParams),
    responses((status = 200, description = "The tenant's jobs, newest first", body = inline(Envelope<Vec<Job>>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody)))]
pub async fn list_for_tenant(
    State(state): State<AppState>,
    access: TenantAccess<Read>,
    Query(params): Query<PageParams>,
) -> Result<Response> {
    let (page, limit) = params.resolve()?;
    let mut tx = access.begin(&state).await?;
    let (items, total) = jobs::list_for_tenant(&mut tx, page, limit).await?;
    tx.commit().await?;
    Ok(response::page(items, PageMeta { total, page, limit }))
}
