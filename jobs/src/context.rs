//! Everything a saga step may use. Built once per worker process.

use crate::queue::Queue;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::sync::Arc;
use tenant_domain::Config;
use tenant_domain::backup::BackupStore;
use tenant_domain::billing::Billing;
use tenant_domain::jobs::ProgressChannel;
use tenant_domain::kv::Keys;
use tenant_domain::mail::Mailer;
use tenant_domain::quota::engine::QuotaEngine;
use tokio::sync::watch;

#[derive(Clone)]
pub struct JobContext {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub queue: Queue,
    pub quota: Arc<QuotaEngine>,
    /// For calls to the platform's other services.
    pub http: reqwest::Client,
    pub billing: Arc<dyn Billing>,
    pub mailer: Arc<dyn Mailer>,
    pub backups: BackupStore,
    /// Where job changes are announced to the API's progress streams.
    pub progress: ProgressChannel,
    /// Unique per process; the owner name of the leases this worker takes.
    pub worker_id: String,
    /// Becomes true on SIGTERM: running sagas stop between steps and release their jobs.
    pub shutdown: watch::Receiver<bool>,
}

impl JobContext {
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
