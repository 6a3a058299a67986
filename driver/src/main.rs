//! `quarry`: the one command users run. Parses arguments, installs logging, runs the command and
//! turns any error into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use quarry_driver::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    quarry_driver::logging::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quarry_driver::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", quarry_driver::error_report::describe(&e));
            ExitCode::FAILURE
        }
    }
}
