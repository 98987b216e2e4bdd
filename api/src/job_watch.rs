//! Job progress for `GET /api/v1/jobs/{id}/events`. Workers announce every committed change of a
//! job on the Redis channel `<prefix>job-progress` (`tenant_domain::jobs::ProgressChannel`); each
//! API process holds one subscription to it (opened by the first stream, so a replica nobody
//! streams from holds none) and fans the job ids out to its open streams through a broadcast
//! channel.
//!
//! Announcements are a latency shortcut, not the source of truth (the job row is): a stream
//! re-reads its job row when told, when the subscription was re-established (announcements may
//! have been lost meanwhile), when it fell behind the broadcast, and at the latest every
//! [`FALLBACK_POLL`].

use futures::StreamExt;
use std::time::Duration;
use tenant_domain::jobs::ProgressChannel;
use tenant_domain::{Config, JobId, kv};
use tokio::sync::{OnceCell, broadcast};

/// How long a stream waits without any signal before it re-reads its job anyway.
pub const FALLBACK_POLL: Duration = Duration::from_secs(15);

/// Enough for a burst of step updates across many jobs; a stream that falls further behind
/// re-reads its job (see [`Signal::Resync`]).
const BUFFER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// This job changed.
    Changed(JobId),
    /// Changes may have been missed (the subscription was re-established): every stream re-reads.
    Resync,
}

pub struct JobWatch {
    client: redis::Client,
    channel: String,
    tx: OnceCell<broadcast::Sender<Signal>>,
}

impl JobWatch {
    pub fn new(config: &Config) -> tenant_domain::Result<Self> {
        Ok(Self {
            client: kv::client(config.redis_url.expose(), config)?,
            channel: ProgressChannel::name(&config.redis_key_prefix),
            tx: OnceCell::new(),
        })
    }

    /// A receiver of job changes. The first call subscribes; once this returns, every change
    /// announced afterwards reaches the receiver.
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<Signal>, redis::RedisError> {
        let tx = self
            .tx
            .get_or_try_init(|| async {
                let pubsub = subscribe(&self.client, &self.channel).await?;
                let (tx, _) = broadcast::channel(BUFFER);
                tokio::spawn(relay(self.client.clone(), self.channel.clone(), pubsub, tx.clone()));
                Ok::<_, redis::RedisError>(tx)
            })
            .await?;
        Ok(tx.subscribe())
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Forwards announcements until the process ends, subscribing again whenever the connection
/// drops; each re-subscription is passed on as a [`Signal::Resync`].
async fn relay(client: redis::Client, channel: String, mut pubsub: redis::aio::PubSub, tx: broadcast::Sender<Signal>) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                match message.get_payload::<String>().map(|p| p.parse::<JobId>()) {
                    Ok(Ok(id)) => {
                        let _ = tx.send(Signal::Changed(id));
                    }
                    _ => tracing::warn!(channel, "job progress: a message that is not a job id"),
                }
            }
        }
        tracing::warn!("job progress subscription lost; subscribing again");
        pubsub = loop {
            match subscribe(&client, &channel).await {
                Ok(pubsub) => break pubsub,
                Err(err) => {
                    tracing::warn!(error = %err, "job progress: cannot subscribe; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let _ = tx.send(Signal::Resync);
    }
}
