//! Redis: one multiplexed connection per process, with bounded timeouts so a dead Redis turns
//! into a quick error instead of a hang, and the key prefix every key of this service carries.

use crate::{Config, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// A connection that connects (and reconnects) in the background: the API can start while Redis
/// is unreachable and reports it through `/health`.
pub fn connect(config: &Config) -> Result<ConnectionManager> {
    let client = redis::Client::open(config.redis_url.expose().as_str())?;
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.redis_response_timeout))
        .set_connection_timeout(Some(config.redis_response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    Ok(ConnectionManager::new_lazy_with_config(client, manager_config)?)
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
