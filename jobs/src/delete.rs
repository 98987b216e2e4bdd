//! `delete_tenant`: back up everything the tenant owns, read the archive back and verify it, and
//! only then cancel billing, clear Redis, drop the schema and delete the rows. The tenant row
//! stays, as `deleted`, with `last_backup_id` pointing at the archive (so it can be restored and
//! the audit trail keeps its subject); its slug and domain become free.
//!
//! The backup's id is the job's id, so a retried backup step overwrites its own archive instead
//! of leaving a second one.

use crate::account;
use crate::context::JobContext;
use crate::engine::{self, Saga, Step, StepError};
use crate::kinds::JobKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenant_domain::backup::{self, BackupStore};
use tenant_domain::jobs::{Job, StepRecord, StepStatus};
use tenant_domain::mail::{self, OutgoingMail};
use tenant_domain::tenants::{self, ChangeContext, Tenant, Transition};
use tenant_domain::{JobId, TenantId, TenantStatus, events, tenant_schema};

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum DeleteStep {
        Backup => "backup",
        VerifyBackup => "verify_backup",
        CancelBilling => "cancel_billing",
        ClearCache => "clear_cache",
        DropSchema => "drop_schema",
        DeleteRows => "delete_rows",
        Finalize => "finalize",
        Notify => "notify",
    }
}

/// The first step that destroys data: once it has run, a failure is not undone (the backup is
/// the way back) and the tenant stays `deleting` with the reason.
const FIRST_DESTRUCTIVE: DeleteStep = DeleteStep::DropSchema;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletePayload {
    pub tenant_id: TenantId,
    /// The status to return to if the deletion is called off before anything was destroyed.
    pub previous_status: TenantStatus,
}

pub struct Delete {
    job: JobId,
    /// When the job was made: a billing account reopened by the undo starts its period then,
    /// the same on every attempt.
    created: chrono::DateTime<chrono::Utc>,
    tenant: Tenant,
    previous_status: TenantStatus,
}

impl Delete {
    fn backup_id(&self) -> uuid::Uuid {
        self.job.0
    }

    fn key(&self, step: &str) -> String {
        engine::step_key(self.job, step)
    }
}

impl Saga for Delete {
    const KIND: JobKind = JobKind::DeleteTenant;
    type Step = DeleteStep;

    async fn load(ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: DeletePayload = engine::payload(job)?;
        let tenant = tenants::get(&ctx.db, payload.tenant_id).await?;
        Ok(Delete { job: job.id, created: job.created_at, tenant, previous_status: payload.previous_status })
    }

    async fn run(&self, ctx: &JobContext, step: DeleteStep) -> Result<(), StepError> {
        let id = self.tenant.id;
        match step {
            DeleteStep::Backup => self.write_backup(ctx).await?,
            DeleteStep::VerifyBackup => self.verify_backup(ctx).await?,
            DeleteStep::CancelBilling => account::close(ctx, &self.tenant, &self.key(step.name())).await?,
            DeleteStep::ClearCache => {
                clear_redis(ctx, id).await?;
                // the counters' own store, when they have one (Finalize leaves a tombstone there)
                ctx.quota.clear_tenant(id).await?;
            }
            DeleteStep::DropSchema => tenant_schema::drop(&ctx.db, id).await?,
            DeleteStep::DeleteRows => {
                backup::delete_scoped_rows(&ctx.db, id).await?;
            }
            DeleteStep::Finalize => {
                self.finalize(ctx).await?;
                // The next quota check sees `deleted` without asking PostgreSQL.
                ctx.quota.sync(&ctx.db, id).await?;
            }
            DeleteStep::Notify => {
                if let Some(to) = &self.tenant.owner_email {
                    let mail = OutgoingMail {
                        to: to.clone(),
                        subject: format!("Your tenant {} was deleted", self.tenant.name),
                        text: format!(
                            "Your tenant \"{}\" ({}) was deleted. Its data is kept in backup {} and can be restored.\n",
                            self.tenant.name,
                            self.tenant.slug,
                            self.backup_id()
                        ),
                        message_id: format!("deleted.{}@tenant-service", self.job),
                    };
                    mail::send_once(&ctx.db, ctx.mailer.as_ref(), &self.key(step.name()), Some(id), "deleted", &mail)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn compensate(&self, ctx: &JobContext, step: DeleteStep) -> Result<(), StepError> {
        if step == DeleteStep::CancelBilling {
            account::reopen(ctx, &self.tenant, None, self.created, &self.key("cancel_billing_undo")).await?;
        }
        // The archive is kept (it is harmless and may help); cache entries refill by themselves;
        // the destructive steps can't be undone — `failed` reports that.
        Ok(())
    }

    async fn failed(&self, ctx: &JobContext, reason: &str, steps: &[StepRecord]) -> Result<(), StepError> {
        let destroyed = steps
            .iter()
            .skip_while(|s| s.name != FIRST_DESTRUCTIVE.name())
            .any(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Compensated | StepStatus::Failed));
        let (status, note) = if destroyed {
            (
                TenantStatus::Deleting,
                format!("deletion failed after data was removed ({reason}); restore from backup {}", self.backup_id()),
            )
        } else {
            (self.previous_status, format!("deletion called off: {reason}"))
        };
        crate::status::record_failure(ctx, self.tenant.id, self.job, status, &note, "tenant.delete_failed").await
    }

    fn result(&self) -> Value {
        json!({ "tenantId": self.tenant.id, "backupId": self.backup_id() })
    }
}

impl Delete {
    async fn write_backup(&self, ctx: &JobContext) -> Result<(), StepError> {
        let archive = backup::collect(&ctx.db, self.tenant.id).await?;
        let settings = ctx.config.backup.clone();
        let sealed =
            tokio::task::spawn_blocking(move || backup::seal(&archive, settings.key.expose(), &settings.key_id))
                .await
                .map_err(|e| StepError::Transient(format!("backup task: {e}")))?
                .map_err(|e| StepError::Permanent(format!("sealing the archive: {e}")))?;
        let sha256 = backup::sha256_hex(&sealed);
        let size = i64::try_from(sealed.len()).unwrap_or(i64::MAX);
        let object_key = BackupStore::object_key(self.tenant.id, self.backup_id());
        ctx.backups.put(&object_key, sealed).await.map_err(|e| StepError::Transient(e.to_string()))?;
        sqlx::query(
            "insert into tenant_backups (id, tenant_id, tenant_slug, job_id, object_key, size_bytes, sha256, key_id, format_version) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             on conflict (id) do update set size_bytes = excluded.size_bytes, sha256 = excluded.sha256, \
                 key_id = excluded.key_id, created_at = now(), verified_at = null",
        )
        .bind(self.backup_id())
        .bind(self.tenant.id)
        .bind(&self.tenant.slug)
        .bind(self.job)
        .bind(&object_key)
        .bind(size)
        .bind(&sha256)
        .bind(&ctx.config.backup.key_id)
        .bind(backup::FORMAT_VERSION)
        .execute(&ctx.db)
        .await?;
        tracing::info!(tenant = %self.tenant.id, backup = %self.backup_id(), size, "backup written");
        Ok(())
    }

    /// Reads the archive back from the store: the hash must match the row, and it must decrypt to
    /// this tenant's data. Nothing is destroyed before this passed.
    async fn verify_backup(&self, ctx: &JobContext) -> Result<(), StepError> {
        let (object_key, expected): (String, String) =
            sqlx::query_as("select object_key, sha256 from tenant_backups where id = $1")
                .bind(self.backup_id())
                .fetch_one(&ctx.db)
                .await?;
        let bytes = ctx.backups.get(&object_key).await.map_err(|e| StepError::Transient(e.to_string()))?;
        let actual = backup::sha256_hex(&bytes);
        if actual != expected {
            return Err(StepError::Permanent(format!("backup hash mismatch: recorded {expected}, read back {actual}")));
        }
        let settings = ctx.config.backup.clone();
        let archive = tokio::task::spawn_blocking(move || {
            backup::open(&bytes, &[(settings.key_id.as_str(), settings.key.expose())])
        })
        .await
        .map_err(|e| StepError::Transient(format!("backup task: {e}")))?
        .map_err(|e| StepError::Permanent(format!("backup does not read back: {e}")))?;
        if archive.tenant_id != self.tenant.id {
            return Err(StepError::Permanent("backup holds another tenant".into()));
        }
        sqlx::query("update tenant_backups set verified_at = now() where id = $1")
            .bind(self.backup_id())
            .execute(&ctx.db)
            .await?;
        Ok(())
    }

    async fn finalize(&self, ctx: &JobContext) -> Result<(), StepError> {
        let t = Transition {
            to: TenantStatus::Deleted,
            reason: None,
            action: "tenant.delete",
            event: Some((events::TENANT_DELETED, json!({ "slug": self.tenant.slug, "backupId": self.backup_id() }))),
            detail: json!({ "backupId": self.backup_id() }),
        };
        let mut tx = ctx.db.begin().await?;
        tenants::transition(&mut tx, self.tenant.id, t, &ChangeContext::system()).await?;
        sqlx::query("update tenants set last_backup_id = $2 where id = $1")
            .bind(self.tenant.id)
            .bind(self.backup_id())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Deletes every Redis key of the tenant (`{prefix}t:{id}:*`: quota counters, limits, caches).
pub async fn clear_redis(ctx: &JobContext, tenant: TenantId) -> Result<(), StepError> {
    let pattern = ctx.keys.key(&format!("t:{tenant}:*"));
    let mut conn = ctx.redis.clone();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query_async::<()>(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
