//! The `quarry` command-line tool (and, from the distributed-runtime issue on, the driver daemon).
//!
//! ```text
//!   quarry <command> ──▶ cli (clap) ──▶ commands::* ──▶ QuarrySession / Store (embedded)
//!                                              └──────▶ output (table, csv, json, ndjson, parquet)
//! ```
//!
//! Every command works on the embedded store in `--data-dir` (or `QUARRY_DATA_DIR`, default
//! `./quarry-data`).

pub mod cli;
pub mod commands;
pub mod logging;
pub mod output;
pub mod progress;
pub mod repl;

use cli::{Cli, Command};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone();
    match cli.command {
        Command::Demo(args) => commands::demo::run(&data_dir, args).await,
        Command::Sql(args) => commands::sql::run(&data_dir, args).await,
        Command::Load(args) => commands::load::run(&data_dir, args).await,
        Command::Tables(args) => commands::catalog::tables(&data_dir, args).await,
        Command::Describe(args) => commands::catalog::describe(&data_dir, args).await,
    }
}
