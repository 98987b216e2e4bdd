//! Redis: one multiplexed connection per process, with bounded timeouts so a dead Redis turns
//! into a quick error instead of a hang, and the key prefix every key of this service carries.
//! The quota counters may live elsewhere (`QUOTA_REDIS_URL`: another Redis or a Redis Cluster);
//! [`QuotaConn`] is either kind behind one `ConnectionLike`.

use crate::config::QuotaRedis;
use crate::{Config, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// A connection that connects (and reconnects) in the background: the API can start while Redis
/// is unreachable and reports it through `/health`.
pub fn connect(config: &Config) -> Result<ConnectionManager> {
    connect_to(config.redis_url.expose(), config)
}

/// A client for `url`: with `rediss://`, TLS verified against `REDIS_TLS_CA_FILE` (else the
/// system's roots), with the client certificate when one is configured. Every Redis connection
/// of the service — commands, pub/sub, the cluster's nodes — is made through here.
pub fn client(url: &str, config: &Config) -> Result<redis::Client> {
    if !url.starts_with("rediss://") {
        return Ok(redis::Client::open(url)?);
    }
    crate::install_crypto_provider();
    Ok(match config.redis_tls.certificates() {
        Some(certs) => redis::Client::build_with_tls(url, certs)?,
        None => redis::Client::open(url)?,
    })
}

fn connect_to(url: &str, config: &Config) -> Result<ConnectionManager> {
    let client = client(url, config)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.redis_response_timeout))
        .set_connection_timeout(Some(config.redis_response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_lazy_with_config(client, manager_config)?)
}

/// A connection to where the quota counters live: a single Redis or a Redis Cluster. Both
/// multiplex, connect lazily and reconnect by themselves; the cluster one routes each command
/// (and each pipeline, whose keys must share a slot) to the node owning its keys' slot.
#[derive(Clone)]
pub enum QuotaConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl QuotaConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, QuotaConn::Cluster(_))
    }
}

/// A connection to the quota Redis (`QUOTA_REDIS_URL`, else `REDIS_URL`).
pub fn connect_quota(config: &Config) -> Result<QuotaConn> {
    Ok(match &config.quota.redis {
        QuotaRedis::Shared => QuotaConn::Single(connect(config)?),
        QuotaRedis::Single(url) => QuotaConn::Single(connect_to(url.expose(), config)?),
        QuotaRedis::Cluster(nodes) => {
            let timeout = config.redis_response_timeout;
            let mut builder = ClusterClientBuilder::new(nodes.expose().iter().map(String::as_str))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .max_retry_wait(500);
            if nodes.expose().iter().any(|n| n.starts_with("rediss://")) {
                crate::install_crypto_provider();
                if let Some(certs) = config.redis_tls.certificates() {
                    builder = builder.certs(certs);
                }
            }
            let client = builder.build()?;
            let cluster_config = ClusterConfig::new().set_connection_timeout(timeout).set_response_timeout(timeout);
            // Connects in the background, like the single-node connection: the API starts while
            // the cluster is unreachable and its quota calls answer 503 until it is back.
            QuotaConn::Cluster(client.get_pending_async_connection_with_config(cluster_config))
        }
    })
}

impl ConnectionLike for QuotaConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            QuotaConn::Single(c) => c.req_packed_command(cmd),
            QuotaConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            QuotaConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            QuotaConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            QuotaConn::Single(c) => c.get_db(),
            QuotaConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Builds this deployment's Redis key names.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }
}

/// `PING` with a deadline: true when Redis answered in time.
pub async fn ping(conn: &mut ConnectionManager, deadline: Duration) -> bool {
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(conn);
    matches!(tokio::time::timeout(deadline, ping).await, Ok(Ok(_)))
}
