#![forbid(unsafe_code)]
//! Job payloads, their queue names and the saga steps the workers run. Payloads are small and
//! versioned: ids, not state — a handler reloads what it needs, and a version bump in the queue
//! name keeps an old payload from becoming a poison pill after a deploy.
//!
//! Status: the job kinds arrive with the lifecycle issue; this crate holds their names so the API
//! and the worker agree on them.

/// The queue (and job-row `kind`) names, versioned.
pub mod kinds {
    pub const PROVISION_TENANT: &str = "provision_tenant:v1";
    pub const DELETE_TENANT: &str = "delete_tenant:v1";
    pub const RESTORE_TENANT: &str = "restore_tenant:v1";
}
