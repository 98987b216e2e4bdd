//! PostgreSQL: the pool, the embedded migrations, and the tenant-scoped transaction that
//! row-level security relies on.
//!
//! The pool connects as the schema owner, which row-level security does not restrict: it is used
//! for platform-wide work (listing tenants, plans, jobs). Work done *for one tenant* goes through
//! [`begin_tenant`], which switches the transaction to the `tenant_app` role and sets
//! `app.tenant_id`, so a query that forgets its `where tenant_id = …` still cannot see or write
//! another tenant's rows.

use crate::{Config, Result, TenantId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The role tenant-scoped transactions run as (created by the migrations; no BYPASSRLS).
pub const APP_ROLE: &str = "tenant_app";

/// A pool that connects on first use, so the API can start (and report itself unhealthy) while
/// PostgreSQL is still coming up.
pub fn pool(config: &Config) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(config.database_url.expose())?.application_name(&config.service_name);
    Ok(PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(config.db_acquire_timeout)
        .connect_lazy_with(options))
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Starts a transaction that can only see and write `tenant`'s rows.
pub async fn begin_tenant(pool: &PgPool, tenant: TenantId) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    enter_tenant(&mut tx, tenant).await?;
    Ok(tx)
}

/// Narrows a transaction begun on the owner pool to `tenant`'s rows for the rest of it (after
/// platform-wide work in the same transaction, e.g. recording a webhook event id first).
pub async fn enter_tenant(tx: &mut sqlx::PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query("set local role tenant_app").execute(&mut *tx).await?;
    sqlx::query("select set_config('app.tenant_id', $1, true)").bind(tenant.to_string()).execute(&mut *tx).await?;
    Ok(())
}
