#![forbid(unsafe_code)]
//! `tenantctl`, the command-line client of the tenant management API.
//!
//! It is a plain HTTP client of the public `/api/v1` routes — it links none of the service's
//! crates, so it builds small and talks to any deployment. The program is [`main_entry`], which
//! `main.rs` and the integration tests' copy of the binary both call.
//!
//! Exit codes: 0 ok; 1 refused by the API (its `code` and `message` on stderr), a waited job
//! that failed or was compensated, or an API that can't be reached; 2 usage (clap's errors, a
//! missing URL or token, a bad config file).

pub mod api;
pub mod args;
mod cmd;
pub mod error;
pub mod output;
pub mod settings;
pub mod watch;

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// The whole program, as `tenantctl`'s `main` runs it.
pub fn main_entry() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` come this way too, with exit code 0.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(cli: args::Cli) -> error::Result<()> {
    let settings = settings::resolve(&cli.global, |name| std::env::var(name).ok())?;
    let out = output::Out { json: cli.global.json, compact: cli.global.compact };
    let api = api::Client::new(settings, Duration::from_secs(cli.global.request_timeout.max(1)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error::Failure::other(format!("cannot start: {e}")))?;
    runtime.block_on(cmd::run(&cmd::Ctx { api, out }, cli.command))
}
