//! The async runtime the `riskgate` binary runs on, tuned for handling calls.
//!
//! - On one core (as the process's CPU affinity or cgroup quota leaves it), tokio's
//!   current-thread runtime: the multi-thread runtime's one worker does the same work plus the
//!   handing of tasks between threads that are not there.
//! - Otherwise the multi-thread runtime without its LIFO slot, so that a connection's task,
//!   woken by each finished answer, runs once after the ready requests and writes their answers
//!   together (`tokio_unstable` is set in .cargo/config.toml).
//!
//! Both measured in docs/benchmarks.md ("The runtime").

/// Builds the runtime for this process.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        builder
    };
    builder.enable_all().build()
}
