#![forbid(unsafe_code)]
//! Jobs: their kinds and payloads, the queue they travel on, the saga engine that runs them, and
//! one module per saga.
//!
//! Design. The `jobs` row in PostgreSQL is the source of truth (status, attempts, per-step
//! progress, result, error); Redis (apalis-redis) only carries *deliveries*: a small message
//! `{jobId}` under a fresh task id per push. A worker claims the row with a lease before running
//! anything, so a duplicate delivery (apalis delivers at least once) finds the row leased or done
//! and is acknowledged without effect. Retries are new deliveries scheduled with our own
//! exponential backoff; the reconciler in the worker re-pushes jobs whose delivery Redis lost.
//! Every step is idempotent and every external side effect carries an idempotency key derived
//! from job id + step, so resuming after a crash never does anything twice.

pub mod account;
pub mod billing_cycle;
pub mod change_plan;
pub mod context;
pub mod delete;
pub mod deliver;
pub mod engine;
pub mod kinds;
pub mod provision;
pub mod queue;
pub mod registry;
pub mod restore;
pub mod retention;
pub mod rollup;
pub mod status;

pub use context::JobContext;
pub use engine::{Outcome, StepError};
pub use kinds::{JobKind, JobMessage};
pub use queue::Queue;
pub use registry::{run, steps};
