//! The `riskgate` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;
use riskgate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
