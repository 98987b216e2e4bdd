//! How a saga records that it failed on the tenant: a status move through the one transition
//! function (`tenants::transition`), made by the system, with the job's id in its event.

use crate::context::JobContext;
use crate::engine::StepError;
use serde_json::json;
use tenant_domain::tenants::{self, ChangeContext, Transition};
use tenant_domain::{JobId, TenantId, TenantStatus};

/// Moves `tenant` to `to` with `reason` after job `job` failed. A tenant that is no longer where
/// the job left it (an operator moved it) is left alone: the move is then not the lifecycle's.
pub async fn record_failure(
    ctx: &JobContext,
    tenant: TenantId,
    job: JobId,
    to: TenantStatus,
    reason: &str,
    action: &str,
) -> Result<(), StepError> {
    let t = Transition { to, reason: Some(reason), action, event: None, detail: json!({ "jobId": job }) };
    let mut tx = ctx.db.begin().await?;
    match tenants::transition(&mut tx, tenant, t, &ChangeContext::system()).await {
        Ok(_) | Err(tenant_domain::Error::InvalidState { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    tx.commit().await?;
    Ok(())
}
