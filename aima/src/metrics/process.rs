//! The standard `process_*` metrics (CPU, memory, file descriptors, threads, start
//! time), read from `/proc/self` by the procfs crate at each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A registry with this process's metrics; empty where `/proc` cannot be read.
pub(super) fn registry() -> Registry {
    let mut registry = Registry::default();
    if let Err(e) = fill(&mut registry) {
        tracing::debug!("no process metrics: {e}");
    }
    registry
}

fn gauge(value: u64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    gauge
}

fn fill(registry: &mut Registry) -> procfs::ProcResult<()> {
    let me = procfs::process::Process::myself()?;
    let stat = me.stat()?;
    let ticks = procfs::ticks_per_second() as f64;
    let cpu: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
    cpu.inc_by((stat.utime + stat.stime) as f64 / ticks);
    registry.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        gauge(stat.rss * procfs::page_size()),
    );
    registry.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        gauge(stat.vsize),
    );
    registry.register(
        "process_threads",
        "Number of OS threads in the process",
        gauge(u64::try_from(stat.num_threads).unwrap_or(0)),
    );
    let boot = procfs::boot_time_secs()?;
    let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    start.set(boot as f64 + stat.starttime as f64 / ticks);
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        start,
    );
    registry.register(
        "process_open_fds",
        "Number of open file descriptors",
        gauge(u64::try_from(me.fd_count()?).unwrap_or(0)),
    );
    if let procfs::process::LimitValue::Value(max) = me.limits()?.max_open_files.soft_limit {
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            gauge(max),
        );
    }
    Ok(())
}
