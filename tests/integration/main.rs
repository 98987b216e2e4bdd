//! Integration tests: the real API against real PostgreSQL and Redis.

mod auth;
mod billing;
mod billing_stripe;
mod billing_webhooks;
mod cli;
mod console;
mod envelope;
mod events;
mod faults;
mod isolation;
mod lifecycle;
mod logs;
mod monitoring;
mod operations;
mod plans;
mod quota_cluster;
mod quota_leases;
mod quotas;
mod recovery;
mod redis_tls;
mod retention;
mod rls;
mod settings;
mod tenants;
mod tokens;
