//! Integration tests: the real API against real PostgreSQL and Redis.

mod auth;
mod envelope;
mod operations;
mod rls;
mod tenants;
