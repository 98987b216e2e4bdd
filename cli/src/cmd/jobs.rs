//! `tenantctl jobs get|watch`. `get` shows a job and exits 0 whatever the job's own status;
//! `watch` follows it to its end and exits 1 if it failed or was compensated (a job already
//! finished answers at once).

use super::{Ctx, job_finished, steps_table};
use crate::api::path;
use crate::args::JobsCmd;
use crate::error::Result;
use crate::output::{self, print_fields, text, time};
use crate::watch::{self, View};
use serde_json::Value;
use std::time::Duration;

pub async fn run(ctx: &Ctx, cmd: JobsCmd) -> Result<()> {
    match cmd {
        JobsCmd::Get { job } => {
            let job = ctx.api.get(&path(&["api", "v1", "jobs", job.trim()]), &[]).await?.data;
            if ctx.out.json {
                ctx.out.json(&job);
            } else {
                print_job(&job);
            }
            Ok(())
        }
        JobsCmd::Watch { job, wait_timeout } => {
            let mut view = View::new(!ctx.out.json);
            let done = watch::follow(&ctx.api, job.trim(), Duration::from_secs(wait_timeout), &mut view).await?;
            if ctx.out.json {
                ctx.out.json(&done);
            } else {
                println!("{}", job_finished(&done));
            }
            watch::outcome(&done)
        }
    }
}

fn print_job(job: &Value) {
    let error = match (job["error"]["code"].as_str(), job["error"]["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => String::new(),
    };
    let finished = if job["finishedAt"].is_null() { String::new() } else { time(&job["finishedAt"]) };
    print_fields(&[
        ("id", text(&job["id"])),
        ("kind", text(&job["kind"])),
        ("status", text(&job["status"])),
        ("tenant", output::opt(&job["tenantId"])),
        ("attempts", format!("{} of {}", text(&job["attempts"]), text(&job["maxAttempts"]))),
        ("created", time(&job["createdAt"])),
        ("finished", finished),
        ("took", output::elapsed(&job["createdAt"], &job["finishedAt"]).unwrap_or_default()),
        ("error", error),
        ("result", if job["result"].is_null() { String::new() } else { job["result"].to_string() }),
    ]);
    println!();
    steps_table(job).print();
}
