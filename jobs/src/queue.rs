//! The Redis side of jobs: one apalis-redis queue per job kind, under this deployment's key
//! prefix. Pushing never decides anything; it only wakes a worker for a job row.

use crate::kinds::{JobKind, JobMessage};
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{Config as QueueConfig, RedisStorage};
use redis::aio::ConnectionManager;
use std::str::FromStr;
use std::time::Duration;
use tenant_domain::JobId;
use tenant_domain::config::JobSettings;

#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    prefix: String,
    settings: JobSettings,
}

#[derive(Debug, thiserror::Error)]
#[error("could not push the job to Redis: {0}")]
pub struct PushError(String);

/// Set members read per `SSCAN` (and handled per script call) by [`Queue::vacuum`].
const VACUUM_BATCH: usize = 200;

impl Queue {
    pub fn new(conn: ConnectionManager, prefix: &str, settings: JobSettings) -> Self {
        Self { conn, prefix: prefix.to_owned(), settings }
    }

    /// apalis configuration of `kind`'s queue: one task per fetch (sagas are long; prefetching
    /// would park jobs on a busy worker), and a short heartbeat so a dead worker's deliveries are
    /// handed over in seconds, not the default five minutes.
    pub fn config(&self, kind: JobKind) -> QueueConfig {
        QueueConfig::default()
            .queue(format!("{}queue:{}", self.prefix, kind.queue()))
            .batch_size(1)
            .heartbeat_interval(self.settings.heartbeat)
            .missed_heartbeats(self.settings.missed_heartbeats)
    }

    pub fn storage(&self, kind: JobKind) -> RedisStorage<JobMessage> {
        RedisStorage::new(self.conn.clone()).with_config(self.config(kind))
    }

    /// A fresh task id for one delivery.
    pub fn new_delivery_id() -> String {
        ulid::Ulid::generate().to_string()
    }

    /// Pushes one delivery of `job`, to run now. There are no delayed deliveries: a job due
    /// later (a retry, a backoff) waits in its row until the workers' dispatcher pushes it when
    /// due (`jobs::dispatch_due`), in bounded batches — apalis-redis promotes every due scheduled
    /// task in one Lua call, which fails for every worker once ~8,000 are due at once.
    pub async fn push(&self, kind: JobKind, job: JobId, delivery_id: &str) -> Result<(), PushError> {
        let task_id = TaskId::from_str(delivery_id).map_err(|e| PushError(e.to_string()))?;
        let builder = TaskBuilder::new(JobMessage { job_id: job }).task_id(task_id);
        let mut storage = self.storage(kind);
        storage.push_task(builder.build()).await.map_err(|e| PushError(e.to_string()))
    }

    /// Whether Redis still holds `delivery_id` as a delivery to be made (pending, scheduled,
    /// running, or failed and due for apalis's own retry).
    pub async fn holds(&self, kind: JobKind, delivery_id: &str) -> redis::RedisResult<bool> {
        let config = self.config(kind);
        let mut conn = self.conn.clone();
        let status: Option<String> = redis::cmd("HGET")
            .arg(format!("{}:{delivery_id}", config.job_meta_hash()))
            .arg("status")
            .query_async(&mut conn)
            .await?;
        let dead: bool =
            redis::cmd("SISMEMBER").arg(config.dead_jobs_set()).arg(delivery_id).query_async(&mut conn).await?;
        Ok(matches!(status.as_deref(), Some(s) if s != "Done" && s != "Killed") && !dead)
    }

    /// Removes deliveries that finished more than `keep` ago (they and their metadata would
    /// otherwise stay in Redis forever); returns how many. The job rows keep the history. The
    /// done and dead sets are walked with `SSCAN` in batches of [`VACUUM_BATCH`], each batch
    /// handled by one short script, so Redis — and the quota hot path on it — is never blocked
    /// for more than a few milliseconds.
    pub async fn vacuum(&self, keep: Duration) -> redis::RedisResult<u64> {
        let script = redis::Script::new(include_str!("vacuum.lua"));
        let mut conn = self.conn.clone();
        let mut removed = 0;
        for kind in JobKind::ALL {
            let config = self.config(kind);
            for set in [config.done_jobs_set(), config.dead_jobs_set()] {
                let mut cursor = 0u64;
                loop {
                    let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                        .arg(&set)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(VACUUM_BATCH)
                        .query_async(&mut conn)
                        .await?;
                    if !ids.is_empty() {
                        let n: u64 = script
                            .key(config.job_data_hash())
                            .key(config.job_meta_hash())
                            .key(&set)
                            .arg(keep.as_secs())
                            .arg(&ids)
                            .invoke_async(&mut conn)
                            .await?;
                        removed += n;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(removed)
    }

    /// Deliveries waiting in Redis (ready plus scheduled), over all kinds.
    pub async fn depth(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for kind in JobKind::ALL {
            let config = self.config(kind);
            pipe.cmd("LLEN").arg(config.active_jobs_list()).cmd("ZCARD").arg(config.scheduled_jobs_set());
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(counts.iter().sum())
    }
}
