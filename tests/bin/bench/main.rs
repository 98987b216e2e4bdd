//! `tenant-bench [provision | plan-change | quota [seconds] | context [seconds] | all [seconds]]`: the benchmarks behind `scripts/bench`. Each starts the real
//! release binaries (`tenant-api`, `tenant-worker`) next to this one, against a fresh database and
//! Redis key prefix, measures, and prints throughput, latency percentiles and the ratio to a
//! reference measured in the same run.

mod context;
mod plan_change;
mod processes;
mod provision;
mod quota;
mod sagas;
mod stats;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let seconds: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    match which.as_str() {
        "provision" => provision::run().await,
        "plan-change" => plan_change::run().await,
        "quota" => quota::run(seconds).await,
        "context" => context::run(seconds).await,
        "all" => {
            provision::run().await?;
            println!();
            plan_change::run().await?;
            println!();
            quota::run(seconds).await?;
            println!();
            context::run(seconds).await
        }
        other => anyhow::bail!("unknown benchmark {other:?}; expected provision, plan-change, quota, context or all"),
    }
}
