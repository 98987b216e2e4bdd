//! Process metrics for both binaries: the prometheus crate's process collector
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, open fds, …) and the seed's
//! `tenant_service_cpu_usage_percent`, the CPU this process used between two scrapes, in percent
//! of one core — derived from the collector's CPU counter, not read from `/proc` by hand.

use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::{Gauge, Registry};
use std::sync::Mutex;
use std::time::Instant;

pub struct ProcessMetrics {
    collector: ProcessCollector,
    cpu_percent: Gauge,
    last: Mutex<Option<(Instant, f64)>>,
}

impl ProcessMetrics {
    /// Registers the process collector and the CPU gauge in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<std::sync::Arc<Self>> {
        let cpu_percent = Gauge::new(
            "tenant_service_cpu_usage_percent",
            "CPU used by this process since the previous scrape, in percent of one core",
        )?;
        registry.register(Box::new(ProcessCollector::for_self()))?;
        registry.register(Box::new(cpu_percent.clone()))?;
        Ok(std::sync::Arc::new(Self { collector: ProcessCollector::for_self(), cpu_percent, last: Mutex::new(None) }))
    }

    /// Updates the CPU gauge; call before encoding a scrape.
    pub fn sample(&self) {
        let Some(cpu) = self.cpu_seconds() else { return };
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else { return };
        if let Some((at, before)) = *last {
            let wall = now.duration_since(at).as_secs_f64();
            if wall > 0.0 {
                self.cpu_percent.set(((cpu - before) / wall * 100.0).max(0.0));
            }
        }
        *last = Some((now, cpu));
    }

    fn cpu_seconds(&self) -> Option<f64> {
        self.collector
            .collect()
            .into_iter()
            .find(|family| family.name() == "process_cpu_seconds_total")
            .and_then(|family| family.get_metric().first().map(|m| m.get_counter().get_value()))
    }
}
