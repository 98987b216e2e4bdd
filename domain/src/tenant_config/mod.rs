//! The tenant's layered configuration: `system` (from the service), `plan` (from the plan) and
//! the writable `tenant` layer (branding, notifications, security, integrations) stored as rows
//! in `tenant_configs`, validated against [`schema`], with secrets encrypted ([`secrets`]).

pub mod schema;
pub mod secrets;
pub mod store;

pub use store::{delete_all, insert_defaults};
