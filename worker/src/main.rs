//! `tenant-worker`: runs until SIGTERM/SIGINT.

use std::process::ExitCode;
use tenant_domain::Config;
use tenant_domain::telemetry::{self, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    match tenant_worker::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "tenant-worker failed");
            eprintln!("tenant-worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}
