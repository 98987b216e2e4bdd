//! `tenant-bench [provision | all]`: the benchmarks behind `scripts/bench`. Each starts the real
//! release binaries (`tenant-api`, `tenant-worker`) next to this one, against a fresh database and
//! Redis key prefix, measures, and prints throughput, latency percentiles and the ratio to a
//! reference measured in the same run.

mod processes;
mod provision;
mod stats;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "provision" | "all" => provision::run().await,
        other => anyhow::bail!("unknown benchmark {other:?}; expected provision or all"),
    }
}
