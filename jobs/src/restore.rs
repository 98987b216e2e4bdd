//! `restore_tenant`: fetch the archive and check its SHA-256 against the record, then bring back
//! the schema (in one transaction), the tenant-scoped rows (as they were, ids and timestamps
//! included) and the tenant row's fields, reopen billing, and mark the tenant active.
//! A failure undoes what was restored and leaves the tenant `deleted`.

use crate::account;
use crate::context::JobContext;
use crate::engine::{self, Saga, Step, StepError};
use crate::kinds::JobKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenant_domain::backup::{self, Archive};
use tenant_domain::jobs::{Job, StepRecord};
use tenant_domain::tenants::{self, ChangeContext, Tenant, Transition};
use tenant_domain::{JobId, TenantId, TenantStatus, db, events, tenant_schema};
use tokio::sync::OnceCell;
use uuid::Uuid;

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum RestoreStep {
        VerifyArchive => "verify_archive",
        RestoreSchema => "restore_schema",
        RestoreRows => "restore_rows",
        ReopenBilling => "reopen_billing",
        Activate => "activate",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePayload {
    pub tenant_id: TenantId,
    pub backup_id: Uuid,
}

pub struct Restore {
    job: JobId,
    /// When the job was made: the reopened billing account's period starts then, the same on
    /// every attempt.
    created: chrono::DateTime<chrono::Utc>,
    tenant: Tenant,
    backup_id: Uuid,
    archive: OnceCell<Archive>,
}

impl Restore {
    /// The archive, fetched and checked once per run: the SHA-256 must match the record.
    async fn archive(&self, ctx: &JobContext) -> Result<&Archive, StepError> {
        self.archive
            .get_or_try_init(|| async {
                let row: Option<(String, String, String)> =
                    sqlx::query_as("select object_key, sha256, key_id from tenant_backups where id = $1")
                        .bind(self.backup_id)
                        .fetch_optional(&ctx.db)
                        .await?;
                let (object_key, expected, key_id) =
                    row.ok_or_else(|| StepError::Permanent(format!("backup {} does not exist", self.backup_id)))?;
                let bytes = ctx.backups.get(&object_key).await.map_err(|e| match e {
                    backup::BackupError::Store(object_store_err)
                        if object_store_err.to_string().contains("not found") =>
                    {
                        StepError::Permanent(format!("backup archive {object_key} is missing from the store"))
                    }
                    other => StepError::Transient(other.to_string()),
                })?;
                let actual = backup::sha256_hex(&bytes);
                if actual != expected {
                    return Err(StepError::Permanent(format!(
                        "backup archive hash mismatch: recorded {expected}, found {actual}"
                    )));
                }
                let settings = ctx.config.backup.clone();
                if key_id != settings.key_id {
                    return Err(StepError::Permanent(format!(
                        "backup was encrypted with key {key_id:?}, not configured"
                    )));
                }
                let archive = tokio::task::spawn_blocking(move || {
                    backup::open(&bytes, &[(settings.key_id.as_str(), settings.key.expose())])
                })
                .await
                .map_err(|e| StepError::Transient(format!("restore task: {e}")))?
                .map_err(|e| StepError::Permanent(format!("backup does not read back: {e}")))?;
                if archive.tenant_id != self.tenant.id {
                    return Err(StepError::Permanent("backup holds another tenant".into()));
                }
                Ok(archive)
            })
            .await
    }
}

impl Saga for Restore {
    const KIND: JobKind = JobKind::RestoreTenant;
    type Step = RestoreStep;

    async fn load(ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: RestorePayload = engine::payload(job)?;
        let tenant = tenants::get(&ctx.db, payload.tenant_id).await?;
        Ok(Restore {
            job: job.id,
            created: job.created_at,
            tenant,
            backup_id: payload.backup_id,
            archive: OnceCell::new(),
        })
    }

    async fn run(&self, ctx: &JobContext, step: RestoreStep) -> Result<(), StepError> {
        let id = self.tenant.id;
        match step {
            RestoreStep::VerifyArchive => {
                self.archive(ctx).await?;
            }
            RestoreStep::RestoreSchema => {
                let archive = self.archive(ctx).await?;
                if let Some(dump) = &archive.schema
                    && !tenant_schema::exists(&ctx.db, id).await?
                {
                    // One transaction: a crash leaves no half-restored schema behind.
                    let mut tx = db::begin_owner(&ctx.db).await?;
                    tenant_schema::restore(&mut tx, id, dump).await?;
                    tx.commit().await?;
                }
            }
            RestoreStep::RestoreRows => {
                let archive = self.archive(ctx).await?;
                // As the tenant: a row of the archive that names another tenant is refused.
                let mut tx = db::begin_tenant(&ctx.db, id).await?;
                for table in backup::SCOPED_TABLES {
                    for row in archive.tables.get(*table).into_iter().flatten() {
                        sqlx::query(&format!(
                            "insert into {table} select * from jsonb_populate_record(null::{table}, $1) on conflict do nothing"
                        ))
                        .bind(row)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                // The tenant row's own fields, as they were before deletion (status aside).
                sqlx::query(
                    "update tenants t set name = r.name, domain = r.domain, plan_id = r.plan_id, owner_id = r.owner_id, \
                         owner_email = r.owner_email, settings = r.settings, features = r.features, \
                         created_at = r.created_at, expires_at = r.expires_at, updated_at = now() \
                     from jsonb_populate_record(null::tenants, $2) r where t.id = $1",
                )
                .bind(id)
                .bind(&archive.tenant)
                .execute(&mut *tx)
                .await
                .map_err(tenant_domain::Error::from_db)?;
                tx.commit().await?;
            }
            RestoreStep::ReopenBilling => {
                let plan = archive_plan(self.archive(ctx).await?).unwrap_or(self.tenant.plan_id.0);
                let key = engine::step_key(self.job, step.name());
                account::reopen(ctx, &self.tenant, Some(tenant_domain::PlanId(plan)), self.created, &key).await?;
            }
            RestoreStep::Activate => {
                self.activate(ctx).await?;
                ctx.quota.sync(&ctx.db, id).await?;
            }
        }
        Ok(())
    }

    async fn compensate(&self, ctx: &JobContext, step: RestoreStep) -> Result<(), StepError> {
        let id = self.tenant.id;
        match step {
            RestoreStep::RestoreSchema => tenant_schema::drop(&ctx.db, id).await?,
            RestoreStep::RestoreRows => {
                backup::delete_scoped_rows(&ctx.db, id).await?;
            }
            RestoreStep::ReopenBilling => {
                account::close(ctx, &self.tenant, &engine::step_key(self.job, "reopen_billing_undo")).await?
            }
            _ => {}
        }
        Ok(())
    }

    async fn failed(&self, ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        crate::status::record_failure(
            ctx,
            self.tenant.id,
            self.job,
            TenantStatus::Deleted,
            &format!("restore failed: {reason}"),
            "tenant.restore_failed",
        )
        .await
    }

    fn result(&self) -> Value {
        json!({ "tenantId": self.tenant.id, "backupId": self.backup_id })
    }
}

fn archive_plan(archive: &Archive) -> Option<Uuid> {
    archive.tenant.get("plan_id").and_then(Value::as_str).and_then(|s| s.parse().ok())
}

impl Restore {
    async fn activate(&self, ctx: &JobContext) -> Result<(), StepError> {
        let t = Transition {
            to: TenantStatus::Active,
            reason: None,
            action: "tenant.restore",
            event: Some((events::TENANT_RESTORED, json!({ "backupId": self.backup_id }))),
            detail: json!({ "backupId": self.backup_id }),
        };
        let mut tx = ctx.db.begin().await?;
        tenants::transition(&mut tx, self.tenant.id, t, &ChangeContext::system()).await?;
        tx.commit().await?;
        Ok(())
    }
}
