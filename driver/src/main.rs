//! `quarry`: the one command users run. Parses arguments, installs logging, runs the command and
//! turns any error into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use quarry_driver::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Driver(_)
            | Command::Worker(_)
            | Command::Up(_)
            | Command::Demo(_)
            | Command::CqlServer(_)
    ) {
        stop_quietly_on_a_closed_pipe();
    }
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

/// Piped into `head` or a pager that quits, a command stops quietly, as other Unix tools do,
/// instead of failing its next write with EPIPE and printing an error (Rust starts with SIGPIPE
/// ignored). Sockets are unaffected: their writes do not raise SIGPIPE. Daemons keep it
/// ignored all the same.
#[cfg(unix)]
#[allow(
    unsafe_code,
    reason = "restoring SIGPIPE's default action needs libc::signal"
)]
fn stop_quietly_on_a_closed_pipe() {
    // SAFETY: runs first thing in `main`, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn stop_quietly_on_a_closed_pipe() {}
