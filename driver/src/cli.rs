//! The command line, as clap sees it. `--help` on every command explains it with examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::OutputFormat;

/// Quarry: compute-to-data analytics over a sharded wide-column store.
///
/// Everything runs on an embedded store in one data directory (--data-dir); its token maths match
/// ScyllaDB and Cassandra. Start with `quarry demo`, then explore with `quarry sql`.
#[derive(Debug, Parser)]
#[command(
    name = "quarry",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = "Examples:
  quarry demo                                  load 2M IoT readings and run example reports
  quarry sql -e \"SELECT count(*) FROM iot.readings\"
  quarry load --table iot.readings readings.csv
  quarry tables

Set RUST_LOG=debug for detailed logs.")]
pub struct Cli {
    /// Data directory of the embedded store.
    #[arg(
        long,
        global = true,
        env = "QUARRY_DATA_DIR",
        default_value = "./quarry-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the IoT demo keyspace, load generated readings, run reports and write rollups.
    Demo(DemoArgs),
    /// Run SQL: an interactive shell, or statements from -e, -f or stdin.
    Sql(SqlArgs),
    /// Load CSV, NDJSON or Parquet files into a table (upserting by primary key).
    Load(LoadArgs),
    /// List tables, with their primary keys.
    Tables(TablesArgs),
    /// Show a table's definition as CQL and its columns.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "The demo is idempotent: running it again rewrites the same rows.")]
pub struct DemoArgs {
    /// Readings to generate.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Distinct devices.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Days of history, ending 2026-11-01.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Random seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quarry sql                                        interactive shell (\\help inside)
  quarry sql -e \"SHOW TABLES\"
  quarry sql -e \"SELECT sensor, avg(value) FROM iot.readings GROUP BY sensor\" --format csv
  quarry sql -f report.sql -o report.parquet --format parquet
  echo \"SELECT 1\" | quarry sql --format json

Besides DataFusion SQL, Quarry understands CQL-flavoured DDL:
  CREATE KEYSPACE ks WITH shards = 800 AND replication_factor = 1 [AND nodes = 2]
  CREATE TABLE ks.t (id bigint, ts timestamp, v double, PRIMARY KEY ((id), ts))
  DROP TABLE ks.t; DROP KEYSPACE ks; SHOW KEYSPACES; SHOW TABLES [IN ks]; DESCRIBE ks.t
and token(partition key columns), which matches CQL's token().")]
pub struct SqlArgs {
    /// Run this statement (repeatable; a value may hold several statements separated by ';').
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    pub execute: Vec<String>,
    /// Run the statements in this file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write results to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print each statement's elapsed time on stderr.
    #[arg(long)]
    pub timing: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Files are matched to the table's columns by header/field name and cast to
the table's types. Every file is read and checked before anything is stored: a bad value stops the
load with an error naming file, line, column and value, and the table is left as it was. With
--reject-file, good rows are stored and bad ones written to the reject file as NDJSON with the
reason. Rows without a partition key are always rejected. Rows whose primary key exists replace it.

Examples:
  quarry load --table iot.readings readings.csv more.ndjson
  cat readings.csv | quarry load --table iot.readings --format csv -
  quarry load --table iot.readings --reject-file bad.ndjson dirty.csv"
)]
pub struct LoadArgs {
    /// Target table, as keyspace.table.
    #[arg(long, value_name = "KEYSPACE.TABLE")]
    pub table: String,
    /// Input format (default: from each file's extension; required for stdin).
    #[arg(long, value_name = "csv|ndjson|parquet")]
    pub format: Option<String>,
    /// Store good rows and write rejected ones here instead of failing.
    #[arg(long, value_name = "PATH")]
    pub reject_file: Option<PathBuf>,
    /// Files to load; '-' reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Only this keyspace.
    pub keyspace: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The table, as keyspace.table.
    #[arg(value_name = "KEYSPACE.TABLE")]
    pub table: String,
}
