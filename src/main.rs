//! The `riskgate` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use riskgate::cli::{self, Cli};

/// mimalloc rather than the system allocator: a durable change is allocated on a runtime worker
/// and freed on the store's writer thread, and glibc's malloc takes such frees on its slow path
/// (arena locks, consolidation). mimalloc's transparent huge pages are built out (`no_thp`), so
/// that a million idle accounts stay within their memory budget. Figures: docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // On one core (as the process's CPU affinity or cgroup quota leaves it), a current-thread
    // runtime: one worker of the multi-thread runtime does the same work with the cost of
    // handing tasks between threads that are not there. With the durable store, where the
    // store's writer wakes the callers from outside the runtime, it handled 2.7% more
    // `ReportOutcome`s at 64 callers (docs/benchmarks.md).
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // Without the LIFO slot, a task woken by a running task waits its turn in the queue
        // instead of running next. So the connection's task, woken by each finished answer,
        // runs once after the ready requests and writes their answers together instead of one
        // `writev` per answer (unary CheckTrade: +20% calls/s on one core), and no woken task is
        // kept from the other workers' reach. (A current-thread runtime queues woken tasks that
        // way by itself.) `tokio_unstable` is set in .cargo/config.toml.
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("riskgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("riskgate: {error}");
            ExitCode::FAILURE
        }
    }
}
