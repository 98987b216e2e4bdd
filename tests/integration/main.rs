//! Integration tests: the real API against real PostgreSQL and Redis.

mod auth;
mod envelope;
mod events;
mod lifecycle;
mod monitoring;
mod operations;
mod quotas;
mod recovery;
mod rls;
mod settings;
mod tenants;
