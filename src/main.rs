//! The `riskgate` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use riskgate::cli::{self, Cli};

/// mimalloc rather than the system allocator: durable changes are allocated on a runtime worker
/// and freed on the store's writer thread, which glibc's malloc handles on its slow path; its
/// transparent huge pages are built out (`no_thp`) to keep idle accounts small
/// (docs/benchmarks.md, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match riskgate::runtime::build() {
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
