#![forbid(unsafe_code)]
//! The domain of the tenant management service, shared by the API and the workers: configuration,
//! typed ids, the PostgreSQL store (with row-level security), the Redis connection, and the
//! business rules (tenant state machine, plans) that both binaries must agree on.

pub mod audit;
pub mod backup;
pub mod billing;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod events;
pub mod external;
pub mod features;
pub mod ids;
pub mod jobs;
pub mod kv;
pub mod mail;
pub mod money;
pub mod monitoring;
pub mod plans;
pub mod process_metrics;
pub mod quota;
pub mod secret;
pub mod status;
pub mod telemetry;
pub mod tenant_config;
pub mod tenant_schema;
pub mod tenants;

pub use config::Config;
pub use error::{Error, Result};
pub use ids::{JobId, PlanId, TenantId};
pub use secret::Secret;
pub use status::TenantStatus;

/// rustls cannot pick a crypto provider by itself when the build holds two (ring, and aws-lc-rs
/// through object_store); the service's TLS clients (Redis, Stripe) settle on ring, unless the
/// program installed one already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
