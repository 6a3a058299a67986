//! The `quarry` command-line tool and the driver daemon.
//!
//! ```text
//!   quarry <command> ──▶ cli (clap) ──▶ commands::* ──▶ Backend ─┬─ Local: QuarrySession (embedded)
//!                                              │                 └─ Remote: a driver (remote)
//!                                              └──────▶ output (table, csv, json, ndjson, parquet)
//!   quarry driver / up ──▶ daemon::serve (planning, scheduling, jobs)
//!   quarry worker      ──▶ quarry_worker::serve
//! ```
//!
//! Commands work on the embedded store in `--data-dir` (or `QUARRY_DATA_DIR`, default
//! `./quarry-data`), or with `--driver URL` (or `QUARRY_DRIVER`) on a running driver.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod error_report;
pub mod job_build;
pub mod logging;
pub mod output;
pub mod progress;
pub mod remote;
pub mod repl;
pub mod store;

use cli::{Cli, Command};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone();
    let driver = cli.driver.clone();
    let store = cli.store.clone();
    match cli.command {
        Command::Demo(args) => commands::demo::run(&data_dir, &store, args).await,
        Command::Sql(args) => commands::sql::run(&data_dir, &driver, &store, args).await,
        Command::Load(args) => commands::load::run(&data_dir, &driver, &store, args).await,
        Command::Tables(args) => commands::catalog::tables(&data_dir, &driver, &store, args).await,
        Command::Describe(args) => commands::catalog::describe(&data_dir, &store, args).await,
        Command::Compact(args) => {
            commands::catalog::compact(&data_dir, &driver, &store, args).await
        }
        Command::Up(args) => commands::daemons::up(&data_dir, &driver, &store, args).await,
        Command::Driver(args) => commands::daemons::driver(&data_dir, &driver, &store, args).await,
        Command::Worker(args) => commands::daemons::worker(&data_dir, &driver, &store, args).await,
        Command::Submit(args) => commands::submit::run(&data_dir, &driver, &store, args).await,
        Command::Jobs(args) => commands::jobs::jobs(&data_dir, &driver, args).await,
        Command::Job(args) => commands::jobs::job(&data_dir, &driver, args).await,
        Command::Cancel(args) => commands::jobs::cancel(&data_dir, &driver, args).await,
        Command::Workers(args) => commands::jobs::workers(&data_dir, &driver, args).await,
        Command::CqlServer(args) => {
            if store.kind == cli::StoreKind::Scylla {
                anyhow::bail!(
                    "`quarry cql-server` serves the embedded store in --data-dir over CQL; it \
                     does not run with --store scylla"
                );
            }
            commands::daemons::cql_server(&data_dir, args).await
        }
    }
}
