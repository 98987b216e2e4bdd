//! Job progress for `GET /api/v1/jobs/{id}/events`. A trigger on `jobs` announces every committed
//! change of a job's status or steps on the PostgreSQL channel `job_progress`; each API process
//! holds one `LISTEN` connection for it (opened by the first stream, so a replica nobody streams
//! from holds none) and fans the job ids out to its open streams through a broadcast channel.
//!
//! Notifications are a latency shortcut, not the source of truth: a stream re-reads its job row
//! when told, when the listener reconnected (notifications may have been lost meanwhile), when it
//! fell behind the broadcast, and at the latest every [`FALLBACK_POLL`].

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tenant_domain::JobId;
use tokio::sync::{OnceCell, broadcast};

/// The channel the `job_progress` trigger notifies (migration `..._job_progress.sql`).
pub const CHANNEL: &str = "job_progress";

/// How long a stream waits without any signal before it re-reads its job anyway.
pub const FALLBACK_POLL: Duration = Duration::from_secs(15);

/// Enough for a burst of step updates across many jobs; a stream that falls further behind
/// re-reads its job (see [`Signal::Resync`]).
const BUFFER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// This job's row changed.
    Changed(JobId),
    /// Changes may have been missed (the listener reconnected): every stream re-reads.
    Resync,
}

pub struct JobWatch {
    db: PgPool,
    tx: OnceCell<broadcast::Sender<Signal>>,
}

impl JobWatch {
    pub fn new(db: PgPool) -> Self {
        Self { db, tx: OnceCell::new() }
    }

    /// A receiver of job changes. The first call opens the `LISTEN` connection; once this returns,
    /// every change committed afterwards is announced to the receiver.
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<Signal>, sqlx::Error> {
        let tx = self
            .tx
            .get_or_try_init(|| async {
                let mut listener = PgListener::connect_with(&self.db).await?;
                listener.listen(CHANNEL).await?;
                let (tx, _) = broadcast::channel(BUFFER);
                tokio::spawn(relay(listener, tx.clone()));
                Ok::<_, sqlx::Error>(tx)
            })
            .await?;
        Ok(tx.subscribe())
    }
}

/// Forwards notifications until the process ends. sqlx re-establishes a lost connection (and its
/// `LISTEN`); each loss is passed on as a [`Signal::Resync`].
async fn relay(mut listener: PgListener, tx: broadcast::Sender<Signal>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match notification.payload().parse::<JobId>() {
                Ok(id) => {
                    let _ = tx.send(Signal::Changed(id));
                }
                Err(_) => tracing::warn!(payload = notification.payload(), "job_progress: not a job id"),
            },
            Ok(None) => {
                tracing::info!("job progress listener reconnected; streams re-read their jobs");
                let _ = tx.send(Signal::Resync);
            }
            Err(err) => {
                tracing::warn!(error = %err, "job progress listener lost its connection; retrying");
                let _ = tx.send(Signal::Resync);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
