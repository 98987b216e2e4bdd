//! Each tenant's own PostgreSQL schema, `tenant_<id without dashes>`, with its starter tables;
//! and a generic dump/restore of such a schema (columns, defaults, constraints, indexes and every
//! row) for backups.

use crate::{Result, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Executor, PgConnection, PgPool};

pub fn schema_name(tenant: TenantId) -> String {
    format!("tenant_{}", tenant.0.simple())
}

/// The starter tables every tenant gets. `if not exists` makes the step idempotent.
const STARTER_TABLES: &str = r#"
create table if not exists {s}.users (
    id            uuid primary key default gen_random_uuid(),
    email         text not null unique,
    display_name  text,
    role          text not null default 'member',
    created_at    timestamptz not null default now()
);
create table if not exists {s}.documents (
    id          uuid primary key default gen_random_uuid(),
    title       text not null,
    body        jsonb not null default '{}',
    created_by  uuid references {s}.users (id),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
create table if not exists {s}.settings (
    key         text primary key,
    value       jsonb not null,
    updated_at  timestamptz not null default now()
);
"#;

/// Creates the schema and its starter tables (idempotent), as the owner.
pub async fn create(db: &PgPool, tenant: TenantId) -> Result<()> {
    let s = schema_name(tenant);
    let mut tx = crate::db::begin_owner(db).await?;
    // Two workers creating the same schema at once would race on the catalog; serialise per tenant.
    sqlx::query("select pg_advisory_xact_lock(hashtext($1))").bind(&s).execute(&mut *tx).await?;
    tx.execute(format!("create schema if not exists {s}").as_str()).await?;
    tx.execute(STARTER_TABLES.replace("{s}", &s).as_str()).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn drop(db: &PgPool, tenant: TenantId) -> Result<()> {
    let mut tx = crate::db::begin_owner(db).await?;
    tx.execute(format!("drop schema if exists {} cascade", quote_ident(&schema_name(tenant))).as_str()).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn exists(db: &PgPool, tenant: TenantId) -> Result<bool> {
    Ok(sqlx::query_scalar("select exists (select from pg_namespace where nspname = $1)")
        .bind(schema_name(tenant))
        .fetch_one(db)
        .await?)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaDump {
    pub tables: Vec<TableDump>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDump {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// `(name, definition)` as `pg_get_constraintdef` prints them, primary and unique keys first.
    pub constraints: Vec<(String, String)>,
    /// `create index` statements of indexes that back no constraint.
    pub indexes: Vec<String>,
    pub rows: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub not_null: bool,
    pub default: Option<String>,
}

/// Reads the whole schema: table definitions and every row.
pub async fn dump(conn: &mut PgConnection, tenant: TenantId) -> Result<SchemaDump> {
    let s = schema_name(tenant);
    let tables: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = $1 and c.relkind = 'r' order by c.relname",
    )
    .bind(&s)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(tables.len());
    for name in tables {
        // Catalog names go into SQL quoted: a table called `Order` or `a b` dumps like any other.
        let qualified = format!("{}.{}", quote_ident(&s), quote_ident(&name));
        let columns: Vec<ColumnDef> = sqlx::query_as(
            "select a.attname::text as name, format_type(a.atttypid, a.atttypmod) as data_type, \
                    a.attnotnull as not_null, pg_get_expr(d.adbin, d.adrelid) as default \
             from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum \
             where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum",
        )
        .bind(&qualified)
        .fetch_all(&mut *conn)
        .await?;
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "select conname::text, pg_get_constraintdef(oid) from pg_constraint where conrelid = $1::regclass \
             order by case contype when 'p' then 0 when 'u' then 1 when 'c' then 2 else 3 end, conname",
        )
        .bind(&qualified)
        .fetch_all(&mut *conn)
        .await?;
        let indexes: Vec<String> = sqlx::query_scalar(
            "select pg_get_indexdef(i.indexrelid) from pg_index i where i.indrelid = $1::regclass \
             and not exists (select from pg_constraint c where c.conindid = i.indexrelid) order by 1",
        )
        .bind(&qualified)
        .fetch_all(&mut *conn)
        .await?;
        let rows: Vec<Value> = sqlx::query_scalar(&format!("select to_jsonb(t) from {qualified} t order by 1"))
            .fetch_all(&mut *conn)
            .await?;
        out.push(TableDump { name, columns, constraints, indexes, rows });
    }
    Ok(SchemaDump { tables: out })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Recreates the schema from a dump: tables, rows, then constraints and indexes (so rows load in
/// any order). Fails if the schema already exists.
pub async fn restore(conn: &mut PgConnection, tenant: TenantId, dump: &SchemaDump) -> Result<()> {
    let s = quote_ident(&schema_name(tenant));
    conn.execute(format!("create schema {s}").as_str()).await?;
    for table in &dump.tables {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let mut def = format!("{} {}", quote_ident(&c.name), c.data_type);
                if let Some(default) = &c.default {
                    def.push_str(&format!(" default {default}"));
                }
                if c.not_null {
                    def.push_str(" not null");
                }
                def
            })
            .collect();
        let qualified = format!("{s}.{}", quote_ident(&table.name));
        conn.execute(format!("create table {qualified} ({})", columns.join(", ")).as_str()).await?;
        for row in &table.rows {
            sqlx::query(&format!("insert into {qualified} select * from jsonb_populate_record(null::{qualified}, $1)"))
                .bind(row)
                .execute(&mut *conn)
                .await?;
        }
    }
    // Keys first, across all tables, so every foreign key finds the key it references.
    for foreign in [false, true] {
        for table in &dump.tables {
            let qualified = format!("{s}.{}", quote_ident(&table.name));
            for (name, definition) in &table.constraints {
                if definition.starts_with("FOREIGN KEY") == foreign {
                    let sql = format!("alter table {qualified} add constraint {} {definition}", quote_ident(name));
                    conn.execute(sql.as_str()).await?;
                }
            }
        }
    }
    for index in dump.tables.iter().flat_map(|t| &t.indexes) {
        conn.execute(index.as_str()).await?;
    }
    Ok(())
}
