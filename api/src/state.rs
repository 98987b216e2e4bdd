//! Application state: cheap clones of the pools, the config and the metrics registry.

use crate::cache::ContextCache;
use crate::http::auth::TokenVerifier;
use crate::http::metrics::Metrics;
use crate::job_watch::JobWatch;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::sync::Arc;
use tenant_domain::kv;
use tenant_domain::quota::engine::QuotaEngine;
use tenant_domain::tenant_config::secrets::ConfigCipher;
use tenant_domain::{Config, db};
use tenant_jobs::Queue;

/// Cheap to clone: one reference count.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub struct AppInner {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenVerifier>,
    pub queue: Queue,
    pub quota: Arc<QuotaEngine>,
    pub contexts: Arc<ContextCache>,
    pub cipher: ConfigCipher,
    pub job_watch: JobWatch,
    /// The payment provider (Stripe, or local billing without `STRIPE_SECRET_KEY`).
    pub billing: Arc<dyn tenant_domain::billing::Billing>,
    /// The provider's last health answer, for `/health` (a provider call at most every 30 s).
    pub billing_health: crate::http::health::ProviderHealthCache,
    /// Turns true when the server begins its graceful shutdown, so long-lived responses (job
    /// event streams) end and let it finish.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// Builds the state without touching the network: PostgreSQL and Redis connect on first use.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let db = db::pool(&config)?;
        let redis = kv::connect(&config)?;
        let tokens = Arc::new(TokenVerifier::new(&config));
        let queue = Queue::new(redis.clone(), &config.redis_key_prefix, config.jobs.clone());
        let quota = QuotaEngine::connect(&config)?;
        let contexts = Arc::new(ContextCache::new(&config, redis.clone()));
        let cipher = ConfigCipher::new(config.config_keys.clone());
        let billing = tenant_domain::billing::from_config(&config, db.clone())?;
        Ok(Self(Arc::new(AppInner {
            job_watch: JobWatch::new(&config)?,
            billing,
            billing_health: Default::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            contexts,
            cipher,
            quota,
            queue,
            config: Arc::new(config),
            db,
            redis,
            metrics: Arc::new(Metrics::new()?),
            tokens,
        })))
    }
}
