//! Tenant backups: one archive per backup holding the tenant row, every row of the tenant-scoped
//! tables and its whole schema, as gzip'd JSON encrypted with AES-256-GCM, in the backup store
//! (`object_store`: a local directory, or an S3-compatible bucket with the `s3` build feature).
//!
//! File layout: `TMSBAK1` · key-id length (1 byte) · key id · 12-byte nonce · ciphertext+tag.
//! The magic and key id are authenticated as associated data. The SHA-256 recorded in
//! `tenant_backups` is over the whole file, so it can be checked without the key.

use crate::config::BackupSettings;
use crate::db::{self, TenantTx};
use crate::tenant_schema::{self, SchemaDump};
use crate::{Result, TenantId};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, PutOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

pub const FORMAT_VERSION: i32 = 1;
const MAGIC: &[u8] = b"TMSBAK1";

/// Tenant-scoped tables whose rows a backup holds (besides the tenant row and its schema).
/// The audit log, jobs, outbox and sent-mail records stay in place and are not part of it.
pub const SCOPED_TABLES: &[&str] = &["tenant_configs", "tenant_quotas", "billing_accounts"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archive {
    pub format: i32,
    pub created_at: DateTime<Utc>,
    pub tenant_id: TenantId,
    /// The `tenants` row as JSON.
    pub tenant: Value,
    /// Rows of [`SCOPED_TABLES`], by table.
    pub tables: BTreeMap<String, Vec<Value>>,
    pub schema: Option<SchemaDump>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a backup archive (bad header)")]
    BadHeader,
    #[error("archive was encrypted with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("archive does not decrypt: wrong key or corrupted")]
    Decrypt,
    #[error("archive content is corrupted: {0}")]
    Corrupt(String),
    #[error("backup store: {0}")]
    Store(#[from] object_store::Error),
}

/// Reads everything the tenant owns in one consistent snapshot: the tenant schema as its owner,
/// then the tenant's rows through the tenant-scoped role (the same transaction, one snapshot).
pub async fn collect(db: &PgPool, tenant: TenantId) -> Result<Archive> {
    let mut tx = db.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    sqlx::query("set local role none").execute(&mut *tx).await?;
    let schema_exists: bool = sqlx::query_scalar("select exists (select from pg_namespace where nspname = $1)")
        .bind(tenant_schema::schema_name(tenant))
        .fetch_one(&mut *tx)
        .await?;
    let schema = if schema_exists { Some(tenant_schema::dump(&mut tx, tenant).await?) } else { None };
    let mut tx = TenantTx::enter(tx, tenant).await?;
    let row: Value = sqlx::query_scalar("select to_jsonb(t) - 'search' from tenants t where id = $1")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(crate::Error::tenant_not_found)?;
    let mut tables = BTreeMap::new();
    for table in SCOPED_TABLES {
        let rows: Vec<Value> =
            sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t where tenant_id = $1 order by 1"))
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await?;
        tables.insert((*table).to_owned(), rows);
    }
    tx.commit().await?;
    Ok(Archive { format: FORMAT_VERSION, created_at: Utc::now(), tenant_id: tenant, tenant: row, tables, schema })
}

/// Deletes the tenant's rows from every table a backup holds, in one tenant-scoped transaction.
pub async fn delete_scoped_rows(db: &PgPool, tenant: TenantId) -> Result<()> {
    let mut tx = db::begin_tenant(db, tenant).await?;
    for table in SCOPED_TABLES {
        sqlx::query(&format!("delete from {table} where tenant_id = $1")).bind(tenant).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// JSON → gzip → AES-256-GCM under `key`. CPU-bound: call it from `spawn_blocking`.
pub fn seal(archive: &Archive, key: &[u8; 32], key_id: &str) -> anyhow::Result<Vec<u8>> {
    let key_id_len = u8::try_from(key_id.len()).map_err(|_| anyhow::anyhow!("key id longer than 255 bytes"))?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    serde_json::to_writer(&mut gz, archive)?;
    let compressed = gz.finish()?;
    let mut header = Vec::with_capacity(MAGIC.len() + 1 + key_id.len());
    header.extend_from_slice(MAGIC);
    header.push(key_id_len);
    header.extend_from_slice(key_id.as_bytes());
    let nonce_bytes: [u8; 12] = rand::random();
    let cipher = Aes256Gcm::new(key.into());
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce_bytes), Payload { msg: &compressed, aad: &header })
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    let mut out = header;
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// The key id an archive names in its header.
pub fn key_id_of(bytes: &[u8]) -> Result<&str, BackupError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(BackupError::BadHeader)?;
    let (&len, rest) = rest.split_first().ok_or(BackupError::BadHeader)?;
    let id = rest.get(..usize::from(len)).ok_or(BackupError::BadHeader)?;
    std::str::from_utf8(id).map_err(|_| BackupError::BadHeader)
}

/// Decrypts and decodes an archive. CPU-bound: call it from `spawn_blocking`.
pub fn open(bytes: &[u8], keys: &[(&str, &[u8; 32])]) -> Result<Archive, BackupError> {
    let key_id = key_id_of(bytes)?;
    let header_len = MAGIC.len() + 1 + key_id.len();
    let key = keys
        .iter()
        .find(|(id, _)| *id == key_id)
        .map(|(_, k)| *k)
        .ok_or_else(|| BackupError::UnknownKey(key_id.into()))?;
    let (header, rest) = bytes.split_at(header_len);
    if rest.len() < 12 + 16 {
        return Err(BackupError::BadHeader);
    }
    let (nonce, ciphertext) = rest.split_at(12);
    let compressed = Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: header })
        .map_err(|_| BackupError::Decrypt)?;
    let mut json = Vec::new();
    GzDecoder::new(compressed.as_slice()).read_to_end(&mut json).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| BackupError::Corrupt(e.to_string()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where archives live.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
}

impl BackupStore {
    pub fn new(settings: &BackupSettings) -> anyhow::Result<Self> {
        if let Some(bucket) = &settings.s3_bucket {
            return Self::s3(settings, bucket);
        }
        std::fs::create_dir_all(&settings.dir).map_err(|e| anyhow::anyhow!("BACKUP_DIR {:?}: {e}", settings.dir))?;
        let local = object_store::local::LocalFileSystem::new_with_prefix(&settings.dir)?;
        Ok(Self { store: Arc::new(local) })
    }

    #[cfg(feature = "s3")]
    fn s3(settings: &BackupSettings, bucket: &str) -> anyhow::Result<Self> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &settings.s3_endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &settings.s3_region {
            builder = builder.with_region(region);
        }
        if let (Some(id), Some(secret)) = (&settings.s3_access_key_id, &settings.s3_secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret.expose());
        }
        Ok(Self { store: Arc::new(builder.build()?) })
    }

    #[cfg(not(feature = "s3"))]
    fn s3(_: &BackupSettings, _: &str) -> anyhow::Result<Self> {
        anyhow::bail!("BACKUP_S3_BUCKET is set but this build has no S3 support (build with `--features s3`)")
    }

    pub fn object_key(tenant: TenantId, backup: uuid::Uuid) -> String {
        format!("tenants/{tenant}/{backup}.tmsbak")
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.store.put_opts(&ObjectPath::from(key), bytes.into(), PutOptions::default()).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BackupError> {
        Ok(self.store.get_opts(&ObjectPath::from(key), GetOptions::default()).await?.bytes().await?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        Archive {
            format: FORMAT_VERSION,
            created_at: Utc::now(),
            tenant_id: TenantId(uuid::Uuid::new_v4()),
            tenant: serde_json::json!({ "slug": "acme" }),
            tables: BTreeMap::from([("tenant_configs".to_owned(), vec![serde_json::json!({ "key": "x" })])]),
            schema: None,
        }
    }

    #[test]
    fn sealed_archives_open_with_their_key_only() {
        let key = [7u8; 32];
        let archive = sample();
        let sealed = seal(&archive, &key, "k1").expect("sealed");
        assert!(!sealed.windows(4).any(|w| w == b"acme"), "plaintext visible in the archive");
        assert_eq!(key_id_of(&sealed).expect("header"), "k1");
        assert_eq!(open(&sealed, &[("k1", &key)]).expect("opens"), archive);
        assert!(matches!(open(&sealed, &[("k1", &[8u8; 32])]), Err(BackupError::Decrypt)));
        assert!(matches!(open(&sealed, &[("k2", &key)]), Err(BackupError::UnknownKey(_))));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(open(&tampered, &[("k1", &key)]), Err(BackupError::Decrypt)));
        assert!(matches!(open(b"nonsense", &[("k1", &key)]), Err(BackupError::BadHeader)));
    }

    #[test]
    fn the_same_archive_seals_differently_each_time() {
        let key = [1u8; 32];
        let a = sample();
        assert_ne!(sha256_hex(&seal(&a, &key, "k1").expect("a")), sha256_hex(&seal(&a, &key, "k1").expect("b")));
    }
}
