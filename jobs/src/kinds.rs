//! The job kinds, their versioned queue names and their steps.

use serde::{Deserialize, Serialize};
use tenant_domain::JobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    ProvisionTenant,
    DeleteTenant,
    RestoreTenant,
    QuotaRollup,
    DeliverEvent,
    ChangePlan,
    BillingCycle,
    Retention,
}

impl JobKind {
    pub const ALL: [JobKind; 8] = [
        JobKind::ProvisionTenant,
        JobKind::DeleteTenant,
        JobKind::RestoreTenant,
        JobKind::QuotaRollup,
        JobKind::DeliverEvent,
        JobKind::ChangePlan,
        JobKind::BillingCycle,
        JobKind::Retention,
    ];

    /// The `kind` clients see on the job.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::ProvisionTenant => "provision_tenant",
            JobKind::DeleteTenant => "delete_tenant",
            JobKind::RestoreTenant => "restore_tenant",
            JobKind::QuotaRollup => "quota_rollup",
            JobKind::DeliverEvent => "deliver_event",
            JobKind::ChangePlan => "change_plan",
            JobKind::BillingCycle => "billing_cycle",
            JobKind::Retention => "retention",
        }
    }

    /// The queue name: versioned, so a payload of an older shape can't reach a newer handler.
    pub fn queue(self) -> &'static str {
        match self {
            JobKind::ProvisionTenant => "provision_tenant:v1",
            JobKind::DeleteTenant => "delete_tenant:v1",
            JobKind::RestoreTenant => "restore_tenant:v1",
            JobKind::QuotaRollup => "quota_rollup:v1",
            JobKind::DeliverEvent => "deliver_event:v1",
            JobKind::ChangePlan => "change_plan:v1",
            JobKind::BillingCycle => "billing_cycle:v1",
            JobKind::Retention => "retention:v1",
        }
    }

    pub fn from_name(name: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What travels through Redis: the id of the job row, nothing else.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    pub job_id: JobId,
}
