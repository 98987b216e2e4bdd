//! `provision_tenant`: schema → default config → quotas → billing account → welcome email →
//! active → `tenant.created`. A permanent failure undoes the completed steps in reverse and
//! leaves the tenant `failed` with the reason.

use crate::account;
use crate::context::JobContext;
use crate::engine::{self, Saga, Step, StepError};
use crate::kinds::JobKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenant_domain::jobs::{Job, StepRecord};
use tenant_domain::mail::{self, OutgoingMail};
use tenant_domain::plans::{self, Plan};
use tenant_domain::quota::store as quotas;
use tenant_domain::tenants::{self, ChangeContext, Tenant, Transition};
use tenant_domain::{JobId, TenantId, TenantStatus, events, tenant_config, tenant_schema};

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum ProvisionStep {
        CreateSchema => "create_schema",
        DefaultConfig => "default_config",
        Quotas => "quotas",
        BillingAccount => "billing_account",
        WelcomeEmail => "welcome_email",
        Activate => "activate",
    }
}

/// The job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionPayload {
    pub tenant_id: TenantId,
}

pub struct Provision {
    job: JobId,
    created: chrono::DateTime<chrono::Utc>,
    tenant: Tenant,
    plan: Plan,
}

impl Provision {
    fn key(&self, step: &str) -> String {
        engine::step_key(self.job, step)
    }
}

impl Saga for Provision {
    const KIND: JobKind = JobKind::ProvisionTenant;
    type Step = ProvisionStep;

    async fn load(ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: ProvisionPayload = engine::payload(job)?;
        let tenant = tenants::get(&ctx.db, payload.tenant_id).await?;
        let plan = plans::find(&ctx.db, &tenant.plan_id.to_string()).await?;
        Ok(Provision { job: job.id, created: job.created_at, tenant, plan })
    }

    async fn run(&self, ctx: &JobContext, step: ProvisionStep) -> Result<(), StepError> {
        let id = self.tenant.id;
        match step {
            ProvisionStep::CreateSchema => tenant_schema::create(&ctx.db, id).await?,
            ProvisionStep::DefaultConfig => tenant_config::insert_defaults(&ctx.db, id).await?,
            ProvisionStep::Quotas => {
                quotas::insert_from_plan(&ctx.db, id, &self.plan).await?;
                // Mirror limits and status into Redis, for the hot path.
                ctx.quota.sync(&ctx.db, id).await?;
            }
            ProvisionStep::BillingAccount => {
                account::open(ctx, &self.tenant, &self.plan, self.created, &self.key(step.name())).await?
            }
            ProvisionStep::WelcomeEmail => {
                if let Some(to) = &self.tenant.owner_email {
                    let mail = OutgoingMail {
                        to: to.clone(),
                        subject: format!("Welcome to the platform, {}", self.tenant.name),
                        text: format!(
                            "Your tenant \"{}\" ({}) is ready on the {} plan.\n",
                            self.tenant.name, self.tenant.slug, self.plan.name
                        ),
                        message_id: format!("welcome.{}@tenant-service", self.job),
                    };
                    mail::send_once(&ctx.db, ctx.mailer.as_ref(), &self.key(step.name()), Some(id), "welcome", &mail)
                        .await?;
                }
            }
            ProvisionStep::Activate => {
                activate(ctx, &self.tenant).await?;
                ctx.quota.sync(&ctx.db, id).await?;
            }
        }
        Ok(())
    }

    async fn compensate(&self, ctx: &JobContext, step: ProvisionStep) -> Result<(), StepError> {
        let id = self.tenant.id;
        match step {
            ProvisionStep::CreateSchema => tenant_schema::drop(&ctx.db, id).await?,
            ProvisionStep::DefaultConfig => {
                tenant_config::delete_all(&ctx.db, id).await?;
            }
            ProvisionStep::Quotas => {
                quotas::delete_all(&ctx.db, id).await?;
                ctx.quota.forget(id).await?;
            }
            ProvisionStep::BillingAccount => {
                account::close(ctx, &self.tenant, &self.key("billing_account_undo")).await?
            }
            // A sent mail can't be unsent; activation is the last step and has nothing after it.
            _ => {}
        }
        Ok(())
    }

    async fn failed(&self, ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        crate::status::record_failure(
            ctx,
            self.tenant.id,
            self.job,
            TenantStatus::Failed,
            reason,
            "tenant.provision_failed",
        )
        .await
    }

    fn result(&self) -> Value {
        json!({ "tenantId": self.tenant.id })
    }
}

/// `provisioning → active`, with `tenant.created` written in the same transaction (once).
async fn activate(ctx: &JobContext, tenant: &Tenant) -> Result<(), StepError> {
    let t = Transition {
        to: TenantStatus::Active,
        reason: None,
        action: "tenant.activate",
        event: Some((
            events::TENANT_CREATED,
            json!({ "name": tenant.name, "slug": tenant.slug, "planId": tenant.plan_id }),
        )),
        detail: json!({}),
    };
    let mut tx = ctx.db.begin().await?;
    tenants::transition(&mut tx, tenant.id, t, &ChangeContext::system()).await?;
    tx.commit().await?;
    Ok(())
}
