//! PostgreSQL: which role does what, in one place.
//!
//! Every tenant-scoped table has row-level security with `FORCE` (migration
//! `20261130000010_force_rls.sql`), so no role reads or writes a tenant row unless a policy names
//! it — the schema's owner included. There are three ways in, and this module is the only one
//! that chooses between them:
//!
//! * [`pool`] — connections that switch to the role `tenant_platform` as they open. Platform-wide
//!   work runs here: listing tenants, the job queue, the outbox relay, rollups, retention, the
//!   reconciler, the sagas' bookkeeping. Its policy sees every tenant.
//! * [`begin_tenant`] / [`TenantTx::enter`] — a [`TenantTx`]: a transaction switched to the role
//!   `tenant_app` with `app.tenant_id` set. It sees and writes only that tenant's rows, even for
//!   a query that forgot its `where tenant_id = …`. Store functions that work on one tenant's
//!   rows take a `&mut TenantTx`, so they cannot be handed anything else.
//! * [`begin_owner`] — a transaction back as the owner (`set local role none`), for DDL only: the
//!   tenant schemas' creation, dump, restore and drop. The owner sees no tenant row.
//!
//! Migrations run on a connection of their own as the owner ([`migrate`]).

use crate::{Config, Result, TenantId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use std::str::FromStr;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The role tenant-scoped transactions run as (created by the migrations; no BYPASSRLS).
pub const APP_ROLE: &str = "tenant_app";
/// The role the pool's connections run as (created by the migrations; no BYPASSRLS).
pub const PLATFORM_ROLE: &str = "tenant_platform";

fn connect_options(config: &Config) -> Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(config.database_url.expose())?.application_name(&config.service_name))
}

/// The service's pool: connections as `tenant_platform`. It connects on first use, so the API
/// can start (and report itself unhealthy) while PostgreSQL is still coming up.
pub fn pool(config: &Config) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(config.db_acquire_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("set role tenant_platform").await?;
                Ok(())
            })
        })
        .connect_lazy_with(connect_options(config)?))
}

/// Applies the migrations as the owner, on a connection of its own.
pub async fn migrate(config: &Config) -> Result<()> {
    let mut conn = PgConnection::connect_with(&connect_options(config)?).await?;
    migrate_on(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Applies the migrations on `conn`, which must be the schema owner's.
pub async fn migrate_on(conn: &mut PgConnection) -> Result<()> {
    check_owner(&mut *conn).await?;
    MIGRATOR.run(conn).await?;
    Ok(())
}

/// Reads whether row-level security holds the `DATABASE_URL` user itself, and warns in the log
/// when it does not: a superuser, a role with `BYPASSRLS`, or one that inherits the rights of
/// `tenant_platform` (whose policy sees every tenant) reads every tenant's rows on the owner's
/// own connections (the migrations, the tenant schemas' DDL). The pool and tenant-scoped
/// transactions are held either way — they switch to roles that are none of these — so this
/// warns rather than refuses. Returns true when it warned; an error means PostgreSQL did not
/// answer.
pub async fn check_owner<'e>(e: impl Executor<'e, Database = Postgres>) -> Result<bool> {
    let (user, bypasses): (String, bool) = sqlx::query_as(
        "select rolname::text, rolsuper or rolbypassrls or coalesce( \
             (select pg_has_role(session_user, p.oid, 'usage') from pg_roles p where p.rolname = $1), false) \
         from pg_roles where rolname = session_user",
    )
    .bind(PLATFORM_ROLE)
    .fetch_one(e)
    .await?;
    if bypasses {
        tracing::warn!(
            user,
            "row-level security does not hold the DATABASE_URL user (a superuser, BYPASSRLS, or it inherits \
             tenant_platform), so the owner's connections see every tenant's rows; make it an ordinary NOINHERIT \
             role that owns the database (deploy/postgres/owner.sql; README, Security model)"
        );
    }
    Ok(bypasses)
}

/// A transaction that can only see and write one tenant's rows: the role `tenant_app` with
/// `app.tenant_id` set. The only ways to get one are [`begin_tenant`] and [`TenantTx::enter`].
/// It dereferences to the connection, so queries run on `&mut *tx`.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
}

/// Starts a transaction that can only see and write `tenant`'s rows.
pub async fn begin_tenant(pool: &PgPool, tenant: TenantId) -> Result<TenantTx> {
    TenantTx::enter(pool.begin().await?, tenant).await
}

impl TenantTx {
    /// Narrows a transaction to `tenant`'s rows for the rest of it (after platform-wide work in
    /// the same transaction, e.g. recording a webhook's event id, or a snapshot's isolation level).
    pub async fn enter(mut tx: Transaction<'static, Postgres>, tenant: TenantId) -> Result<Self> {
        sqlx::query("select set_config('role', 'tenant_app', true), set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(Self { tx, tenant })
    }

    /// The tenant this transaction is scoped to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl std::ops::Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A transaction as the schema's owner, for the tenant schemas' DDL. It sees no tenant row.
pub async fn begin_owner(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    tx.execute("set local role none").await?;
    Ok(tx)
}
