//! One module per command group; this one dispatches and holds what they share: the tenant
//! paths, and what happens after the API accepted a job (202) — follow it with `--wait`, or say
//! how to.

mod billing;
mod jobs;
mod plans;
mod quota;
mod tenants;

use crate::api::{Client, path};
use crate::args::{Command, WaitArgs};
use crate::error::{Failure, Result};
use crate::output::{self, Out};
use crate::watch::{self, View};
use serde_json::Value;
use std::time::Duration;

pub struct Ctx {
    pub api: Client,
    pub out: Out,
}

pub async fn run(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Tenants(cmd) => tenants::run(ctx, cmd).await,
        Command::Jobs(cmd) => jobs::run(ctx, cmd).await,
        Command::Plans(cmd) => plans::run(ctx, cmd).await,
        Command::Quota(cmd) => quota::run(ctx, cmd).await,
        Command::Billing(cmd) => billing::run(ctx, cmd).await,
    }
}

/// `/api/v1/tenants/{tenant}/{rest…}`; the tenant by id or slug.
fn tenant_path(tenant: &str, rest: &[&str]) -> Result<String> {
    let tenant = tenant.trim();
    if tenant.is_empty() {
        return Err(Failure::Usage("a tenant id or slug is required".into()));
    }
    let mut segments = vec!["api", "v1", "tenants", tenant];
    segments.extend_from_slice(rest);
    Ok(path(&segments))
}

/// With `--wait`, follows the accepted job to its end and returns it (whatever its outcome);
/// without, None.
async fn wait_for(ctx: &Ctx, job: &Value, wait: &WaitArgs) -> Result<Option<Value>> {
    if !wait.wait {
        return Ok(None);
    }
    let id = job["id"].as_str().ok_or_else(|| Failure::other("the API answered without a job id"))?;
    let mut view = View::new(!ctx.out.json);
    let job = watch::follow(&ctx.api, id, Duration::from_secs(wait.wait_timeout), &mut view).await?;
    Ok(Some(job))
}

/// `job 0193… (provision_tenant) queued` and how to follow it.
fn job_started(job: &Value) -> String {
    let id = output::text(&job["id"]);
    format!(
        "job {id} ({}) {} — follow it: tenantctl jobs watch {id}",
        output::text(&job["kind"]),
        output::text(&job["status"])
    )
}

/// `job 0193… succeeded in 1.42 s`.
fn job_finished(job: &Value) -> String {
    let took = output::elapsed(&job["createdAt"], &job["finishedAt"]).map(|t| format!(" in {t}")).unwrap_or_default();
    format!("job {} {}{took}", output::text(&job["id"]), output::text(&job["status"]))
}

/// The steps of a job as a table.
fn steps_table(job: &Value) -> output::Table {
    let mut table = output::Table::new(&["STEP", "STATUS", "STARTED", "TOOK", "ERROR"]);
    for step in job["steps"].as_array().into_iter().flatten() {
        table.row(vec![
            output::text(&step["name"]),
            output::text(&step["status"]),
            output::time(&step["startedAt"]),
            output::elapsed(&step["startedAt"], &step["finishedAt"]).unwrap_or_else(|| "-".into()),
            output::opt(&step["error"]),
        ]);
    }
    table
}
