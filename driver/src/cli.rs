//! The command line, as clap sees it. `--help` on every command explains it with examples.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use quarry_client::Client;
use quarry_client::auth::{Secret, TOKEN_ENV, TOKEN_FILE};
use quarry_client::tls::{Tls, TlsFiles};

use crate::output::OutputFormat;

/// Quarry: compute-to-data analytics over a sharded wide-column store.
///
/// Everything runs on an embedded store in one data directory (--data-dir); its token maths match
/// ScyllaDB and Cassandra. Start with `quarry demo`, then explore with `quarry sql`. `quarry up`
/// runs a local cluster (a driver and workers) that `--driver` sends work to.
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
  quarry submit examples/device-rollup         run a Rust job (compiled to WebAssembly)
  quarry up                                    a local cluster: driver + 3 workers
  quarry sql --driver http://127.0.0.1:7070    run SQL on it; `quarry jobs` lists what ran

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

    #[command(flatten)]
    pub driver: DriverConnection,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Which store commands run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded store in --data-dir.
    Embedded,
    /// A ScyllaDB or Cassandra cluster, reached through --scylla-nodes.
    Scylla,
}

/// The store and, for a cluster, how to reach it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The store commands run on: `embedded` (--data-dir) or `scylla` (a ScyllaDB or Cassandra
    /// cluster; `sql`, `load`, `tables`, `describe`, `up`, `driver` and `worker` run on it).
    #[arg(
        long = "store",
        env = "QUARRY_STORE",
        global = true,
        value_enum,
        default_value_t = StoreKind::Embedded
    )]
    pub kind: StoreKind,
    /// The cluster's contact points, for --store scylla.
    #[arg(
        long,
        env = "QUARRY_SCYLLA_NODES",
        global = true,
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    pub scylla_nodes: Vec<String>,
    /// The cluster user (with --scylla-password-file).
    #[arg(long, env = "QUARRY_SCYLLA_USER", global = true, value_name = "USER")]
    pub scylla_user: Option<String>,
    /// A file holding the cluster user's password.
    #[arg(
        long,
        env = "QUARRY_SCYLLA_PASSWORD_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub scylla_password_file: Option<PathBuf>,
    /// Read and write in this datacenter only (and create keyspaces there).
    #[arg(long, env = "QUARRY_SCYLLA_DC", global = true, value_name = "DC")]
    pub scylla_dc: Option<String>,
    /// Consistency of reads [default: local_one].
    #[arg(
        long,
        env = "QUARRY_SCYLLA_READ_CONSISTENCY",
        global = true,
        value_name = "LEVEL"
    )]
    pub scylla_read_consistency: Option<String>,
    /// Consistency of writes [default: local_quorum].
    #[arg(
        long,
        env = "QUARRY_SCYLLA_WRITE_CONSISTENCY",
        global = true,
        value_name = "LEVEL"
    )]
    pub scylla_write_consistency: Option<String>,
    /// At most this many rows read per second by this process, so analytics leave the
    /// cluster's own clients room [default: no limit].
    #[arg(
        long,
        env = "QUARRY_SCYLLA_READ_ROWS_PER_SEC",
        global = true,
        value_name = "ROWS"
    )]
    pub scylla_read_rows_per_sec: Option<u64>,
    /// At most this many rows written per second by this process [default: no limit].
    #[arg(
        long,
        env = "QUARRY_SCYLLA_WRITE_ROWS_PER_SEC",
        global = true,
        value_name = "ROWS"
    )]
    pub scylla_write_rows_per_sec: Option<u64>,
    /// About this many MiB per scan split, by the cluster's size estimates
    /// (system.size_estimates) [default: 64].
    #[arg(
        long,
        env = "QUARRY_SCYLLA_SPLIT_MB",
        global = true,
        value_name = "MIB"
    )]
    pub scylla_split_mb: Option<u64>,
    /// Rows this process writes to the cluster expire after this many seconds (CQL's USING
    /// TTL), for derived results only wanted for a while [default: kept].
    #[arg(
        long,
        env = "QUARRY_SCYLLA_WRITE_TTL",
        global = true,
        value_name = "SECONDS"
    )]
    pub scylla_write_ttl: Option<u32>,
    /// Connect to the nodes over TLS, trusting this CA (PEM). Node certificates must name each
    /// node's IP address (the driver checks the address it connects to).
    #[arg(long, env = "QUARRY_SCYLLA_TLS_CA", global = true, value_name = "FILE")]
    pub scylla_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for clusters that require one, with --scylla-tls-key.
    #[arg(
        long,
        env = "QUARRY_SCYLLA_TLS_CERT",
        global = true,
        value_name = "FILE"
    )]
    pub scylla_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --scylla-tls-cert.
    #[arg(
        long,
        env = "QUARRY_SCYLLA_TLS_KEY",
        global = true,
        value_name = "FILE"
    )]
    pub scylla_tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the IoT demo keyspace, load generated readings, run reports and write rollups.
    Demo(DemoArgs),
    /// Run SQL: an interactive shell, or statements from -e, -f or stdin.
    Sql(SqlArgs),
    /// Load CSV, NDJSON or Parquet files into a table (upserting by primary key).
    Load(LoadArgs),
    /// List tables and views, with the tables' primary keys.
    Tables(TablesArgs),
    /// Show a table's definition as CQL and its columns (or a view's query and columns).
    Describe(DescribeArgs),
    /// Merge tables' stored runs into one now, dropping rows newer writes superseded.
    Compact(CompactArgs),
    /// Run a local cluster: a driver and worker processes sharing the data directory.
    Up(UpArgs),
    /// Run the driver daemon: plans queries, schedules tasks on workers, tracks jobs.
    Driver(DriverArgs),
    /// Run a worker daemon beside one store node; it registers with a driver.
    Worker(WorkerArgs),
    /// Run a Rust job: a wasm32 module built with quarry-sdk, or a job crate to build first.
    Submit(SubmitArgs),
    /// List a driver's recent jobs.
    Jobs(JobsArgs),
    /// Show one job: its state, stages and tasks.
    Job(JobArgs),
    /// Cancel a running job and free its work on every worker.
    Cancel(JobArgs),
    /// List the workers a driver knows.
    Workers(JobsArgs),
    /// Serve the data directory over CQL (native protocol v4) as a cluster of loopback nodes.
    CqlServer(CqlServerArgs),
}

/// `quarry cql-server`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quarry cql-server                          one node on 127.0.0.1:9042, for cqlsh and CQL apps
  cqlsh 127.0.0.1 9042 -e \"SELECT * FROM iot.readings LIMIT 5\"
  quarry cql-server --nodes 3 --replication 2 --port 19042
                                             127.0.0.1-3:19042, a ring of 3 nodes (for testing
                                             the ScyllaDB connector and token-aware clients)

Served: STARTUP, OPTIONS, REGISTER, QUERY, PREPARE, EXECUTE, BATCH; paging; SELECT with column
lists or count(*), WHERE on columns, IN and token(...) ranges, LIMIT; INSERT of whole rows;
CREATE/DROP KEYSPACE and TABLE; USE; system.local, system.peers and system_schema.* as drivers
read them. Refused with an error that says why: UPDATE, DELETE, TTLs, lightweight transactions,
counters, authentication, compression. Every node serves every token (as a coordinator would)
and counts whether it held the data; the counts are printed when the server stops.")]
pub struct CqlServerArgs {
    /// How many nodes to serve, on consecutive loopback addresses from --address.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nodes: usize,
    /// Replicas of every token range (SimpleStrategy), at most --nodes. Every keyspace reports
    /// it; the rows themselves are kept once, in the data directory.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub replication: usize,
    /// The port every node listens on (0: any free port).
    #[arg(long, default_value_t = 9042, value_name = "PORT")]
    pub port: u16,
    /// The first node's IPv4 address; node k listens on this address plus k - 1.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub address: std::net::Ipv4Addr,
    /// Tokens per node on the ring.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub vnodes: usize,
    /// Serve every keyspace as tablet-based, N tablets per table, as a ScyllaDB cluster with
    /// tablets on: drivers find each table's replicas in system.tablets instead of on the ring.
    #[arg(long, value_name = "N")]
    pub tablets: Option<u32>,
    /// Present each node as a ScyllaDB node with N CPU shards (as `scylla --smp N`): each
    /// connection lands on a shard and says which, and with --tablets each tablet names the
    /// shard holding it, so shard-aware clients can be checked.
    #[arg(long, value_name = "N")]
    pub smp: Option<u16>,
    /// Serve client encryption (TLS) with this certificate chain (PEM), with --tls-key. CQL
    /// drivers check it against each node's IP address: give the certificate every node's
    /// address as a subject alternative name.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Where a running driver listens, for commands that talk to one.
#[derive(Debug, Clone, Args)]
pub struct DriverConnection {
    /// A running driver (`quarry up` or `quarry driver`) to send work to, as http://HOST:PORT.
    /// Without it, commands run in this process on --data-dir.
    #[arg(
        long = "driver",
        env = "QUARRY_DRIVER",
        global = true,
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// The file holding the driver's token. Clients send it (default: QUARRY_TOKEN, else
    /// DATA-DIR/token when it exists, as `quarry up` leaves it); `quarry driver` and `quarry up`
    /// accept it from clients (default: DATA-DIR/token, created when missing).
    #[arg(long, env = "QUARRY_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) to trust for `https://` drivers and workers: clients check the
    /// driver's certificate against it, and the driver and workers each other's.
    #[arg(long, env = "QUARRY_TLS_CA", global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl DriverConnection {
    /// Connects to the driver of `--driver`, with the token and CA this command was given.
    pub async fn connect(&self, data_dir: &std::path::Path) -> anyhow::Result<Client> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no driver: pass --driver URL or set QUARRY_DRIVER"))?;
        let tls = Tls::load(&TlsFiles {
            ca: self.tls_ca.clone(),
            ..TlsFiles::default()
        })
        .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Client::connect_with(url, self.token(data_dir)?.as_ref(), &tls).await?)
    }

    /// The token a client sends: from --token-file, QUARRY_TOKEN, or the data directory's file
    /// of a local cluster; `None` when there is none (the driver then says what it needs).
    pub fn token(&self, data_dir: &std::path::Path) -> anyhow::Result<Option<Secret>> {
        use anyhow::Context;
        if let Some(path) = &self.token_file {
            return Secret::read(path)
                .map(Some)
                .with_context(|| format!("reading the token file {}", path.display()));
        }
        if let Ok(text) = std::env::var(TOKEN_ENV) {
            return Secret::new(&text)
                .map(Some)
                .map_err(|problem| anyhow::anyhow!("{TOKEN_ENV}: {problem}"));
        }
        let local = data_dir.join(TOKEN_FILE);
        match Secret::read(&local) {
            Ok(token) => Ok(Some(token)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading the token file {}", local.display())),
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quarry up                          driver on 127.0.0.1:7070 and 3 workers; Ctrl-C stops all
  quarry up --workers 5 --listen 127.0.0.1:0
  then, in another terminal:
  quarry sql --driver http://127.0.0.1:7070 -e \"SELECT count(*) FROM iot.readings\"

Every worker stands for one store node (node-1, node-2, ...) and reads the shards placement gives
that node; all share the data directory, which the driver writes and the workers read.

On a ScyllaDB or Cassandra cluster, one worker per cluster node, each reading from its node:
  quarry --store scylla --scylla-nodes 127.0.0.1:19042 up --listen 127.0.0.1:0")]
pub struct UpArgs {
    /// Worker processes to start (with --store scylla: one per cluster node instead).
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Address the driver listens on (port 0 picks a free one; the endpoint is printed).
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "HOST:PORT")]
    pub listen: String,
    /// Task slots of each worker (default: this machine's cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Memory each process's queries (the driver's and each worker's) may hold together, such as 512MiB or 4GiB; past it, sorts,
    /// aggregates and joins spill to temporary files, and a query that cannot spill fails with
    /// the largest consumers named (default: unbounded).
    #[arg(long, env = "QUARRY_MEMORY_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:
  quarry driver --listen 0.0.0.0:7070 --nodes node-1,node-2,node-3 --data-dir /var/lib/quarry
Workers then join with `quarry worker --driver http://HOST:7070 --node NODE --nodes ...`.
Job history is kept in DATA-DIR/driver/jobs.ndjson and survives a restart.")]
pub struct DriverArgs {
    /// Address to listen on for workers and clients (gRPC and Arrow Flight).
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "HOST:PORT")]
    pub listen: String,
    /// A TOML file of settings (heartbeat_interval, lost_after, nodes, max_task_attempts,
    /// worker_wait; durations in ms); the flags below override it.
    #[arg(long, env = "QUARRY_DRIVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How often workers heartbeat, in milliseconds [default: 500].
    #[arg(long, env = "QUARRY_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// A worker silent this long is declared lost and its work moves, in milliseconds
    /// [default: 3000].
    #[arg(long, env = "QUARRY_LOST_AFTER_MS", value_name = "MS")]
    pub lost_after_ms: Option<u64>,
    /// The store's nodes, for placement (default: the nodes of registered workers).
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    pub nodes: Vec<String>,
    /// The file holding the secret the driver and its workers authenticate each other with
    /// (default: DATA-DIR/cluster-secret, created when missing). Give workers a copy.
    #[arg(long, env = "QUARRY_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Let clients run statements that read or write the driver's file system (`COPY ... TO`,
    /// `CREATE EXTERNAL TABLE`) as the driver's user. Off by default: a client may otherwise
    /// only read and write the store.
    #[arg(long)]
    pub allow_file_access: bool,
    /// Stop and fail any job still running after this many seconds [default: no limit].
    #[arg(long, env = "QUARRY_JOB_TIMEOUT_SECS", value_name = "SECONDS")]
    pub job_timeout_secs: Option<u64>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// What the driver and workers share on the command line: TLS and the memory limit.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// This daemon's TLS certificate (PEM); with --tls-key, it serves `https://` only.
    #[arg(
        long,
        env = "QUARRY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "QUARRY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Memory this process's queries may hold together, such as 512MiB or 4GiB; past it, sorts,
    /// aggregates and joins spill to temporary files, and a query that cannot spill fails with
    /// the largest consumers named (default: unbounded).
    #[arg(long, env = "QUARRY_MEMORY_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
}

impl DaemonArgs {
    /// These flags over `tls` (the config file's): a certificate given here replaces its.
    pub fn apply_tls(&self, tls: &mut TlsFiles) {
        if self.tls_cert.is_some() {
            tls.cert = self.tls_cert.clone();
            tls.key = self.tls_key.clone();
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example:
  quarry worker --driver http://10.0.0.1:7070 --node node-3 --nodes node-1,node-2,node-3 \\
      --data-dir /var/lib/quarry
Beside a ScyllaDB node (the driver runs with the same --store scylla):
  quarry worker --store scylla --scylla-nodes 10.0.0.3:9042 --local-node 10.0.0.3:9042 \\
      --driver http://10.0.0.1:7070
The worker registers with the driver given by --driver (or QUARRY_DRIVER), which is required.")]
pub struct WorkerArgs {
    /// A TOML file of settings (worker_id, node_id, driver_url, advertise_host, task_slots,
    /// exchange_memory in bytes, nodes); the flags below override it.
    #[arg(long, env = "QUARRY_WORKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The store node this worker sits beside (required, here or in the file). With --store
    /// scylla, its CQL address as the ring names it (IP:PORT): the worker owns the ranges that
    /// node replicates and reads them from it.
    #[arg(long, visible_alias = "local-node", value_name = "NODE")]
    pub node: Option<String>,
    /// The worker's name (default: worker-NODE).
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Address to listen on for tasks and exchange reads (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "HOST:PORT")]
    pub listen: String,
    /// Host name other processes reach this worker at (default: the listen address).
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// Tasks run at once (default: this machine's cores).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Memory for exchange outputs before they spill to disk, in MiB [default: 2048].
    #[arg(long, value_name = "MIB")]
    pub exchange_memory_mb: Option<u64>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The file holding the cluster's secret, the same as the driver's (default:
    /// DATA-DIR/cluster-secret, which the driver creates).
    #[arg(long, env = "QUARRY_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The store's nodes, for placement: the worker then tells the driver which shards its node
    /// holds (give the driver the same list). Not needed with --store scylla: the ring decides.
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    pub nodes: Vec<String>,
    /// Stop when the process that started this worker exits (`quarry up` starts its workers so,
    /// so that none outlives it, even when it is killed).
    #[arg(long, hide = true)]
    pub stop_with_parent: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quarry submit examples/device-rollup --arg bucket_hours=24
  quarry submit target/wasm32-unknown-unknown/release/my_job.wasm --arg days=7 --format csv

A job is a Rust crate using quarry-sdk (`quarry_sdk::job!(my_job);`, crate-type cdylib). Given
its directory, submit builds it for wasm32-unknown-unknown in release first (installing the
rustup target if missing). Rows from collect() and take(n) print in --format; counts and rows
written print on stderr. Without --driver the job runs in this process over --data-dir.")]
pub struct SubmitArgs {
    /// The job: a .wasm module, or a job crate's directory.
    #[arg(value_name = "JOB")]
    pub job: PathBuf,
    /// A job argument, NAME=VALUE (repeatable); the job reads it with ctx.arg("NAME").
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = crate::commands::submit::parse_arg)]
    pub args: Vec<(String, String)>,
    /// How to print collected rows.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write collected rows to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the plan of each of the job's results (sources, WASM operators, shuffles, sinks)
    /// instead of running it.
    #[arg(long, conflicts_with = "output")]
    pub explain: bool,
    /// Start the job on the driver's cluster (--driver) and return at once, printing its job
    /// id; follow it with `quarry job ID`. Every result must write to a table (write_to).
    #[arg(long, conflicts_with_all = ["output", "explain"])]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job's id, as `quarry jobs` lists it.
    #[arg(value_name = "ID")]
    pub id: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
#[command(
    after_help = "The demo is idempotent: running it again rewrites the same rows.\n\n\
Examples:\n  \
quarry demo                                   on the embedded store in --data-dir\n  \
quarry demo --rows 100000                     a smaller fleet\n  \
quarry --store scylla --scylla-nodes 10.0.0.1:9042 demo --rows 100000\n                                                \
on a ScyllaDB/Cassandra cluster, a worker beside each node"
)]
pub struct DemoArgs {
    /// Readings to generate.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Distinct devices (500 × 8 sensors × 30 days: the daily rollup is 17× smaller than the
    /// readings).
    #[arg(long, default_value_t = 500)]
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
  quarry sql --keyspace iot -e \"SELECT count(*) FROM readings\"

Besides DataFusion SQL, Quarry understands CQL-flavoured DDL:
  CREATE KEYSPACE ks WITH shards = 800 AND replication_factor = 1 [AND nodes = 2]
  CREATE TABLE ks.t (id bigint, ts timestamp, v double, PRIMARY KEY ((id), ts))
  CREATE TABLE ks.t2 (PRIMARY KEY (id)) AS SELECT id, max(v) AS top FROM ks.t GROUP BY id
  CREATE [OR REPLACE] [TEMPORARY] VIEW [ks.]v AS SELECT ...; DROP VIEW [ks.]v
  USE ks; DROP TABLE ks.t; DROP KEYSPACE ks; SHOW KEYSPACES; SHOW TABLES [IN ks]; DESCRIBE ks.t
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
    /// Start in this keyspace, as `USE KEYSPACE` would: table names without a keyspace
    /// resolve in it.
    #[arg(long, short = 'k', env = "QUARRY_KEYSPACE", value_name = "KEYSPACE")]
    pub keyspace: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Files are matched to the table's columns by header/field name and cast to
the table's types. Every file is read and checked before anything is stored: a bad value stops the
load with an error naming file, line, column and value, and the table is left as it was. With
--reject-file, good rows are stored and bad ones written to the reject file as NDJSON with the
reason. Rows without a partition key are always rejected. Rows whose primary key exists replace it.

Streaming (--follow, --commit-rows, --commit-secs; one CSV or NDJSON input) commits rows as they
arrive instead: every --commit-rows rows or --commit-secs seconds, whichever comes first, each
commit durable and visible to queries when the command reports it. Memory stays bounded however
long the input. Ctrl-C commits what was read and stops. While a stream loads into a local data
directory, `quarry sql` on it reads what the stream has committed.

Examples:
  quarry load --table iot.readings readings.csv more.ndjson
  cat readings.csv | quarry load --table iot.readings --format csv -
  quarry load --table iot.readings --reject-file bad.ndjson dirty.csv
  quarry load --table iot.readings --follow --commit-secs 2 /var/log/readings.ndjson
  sensor-feed | quarry load --table iot.readings --format ndjson --commit-rows 50000 -"
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
    /// Keep reading FILE as it grows (as `tail -f` does), committing rows as they arrive, until
    /// Ctrl-C. CSV or NDJSON.
    #[arg(long)]
    pub follow: bool,
    /// Stream the input: commit whenever this many rows are waiting (default 100000 when
    /// streaming). With '-', an endless pipe becomes queryable as it flows.
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_rows: Option<u64>,
    /// Stream the input: commit waiting rows at least this often, in seconds (default 1 when
    /// streaming).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub commit_secs: Option<f64>,
    /// Rows of one file held in memory before they are staged on disk, invisible until the
    /// whole load is published at its end (such as 16MiB or 1GiB); with it a load's memory is
    /// bounded whatever the input's size. Into this process's store only.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    pub part_size: u64,
    /// Files to load; '-' reads stdin. A load is all-or-nothing, unless it streams (--follow,
    /// --commit-rows, --commit-secs): then each commit is, and a bad row stops the stream after
    /// the commits before it.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

impl LoadArgs {
    /// Whether the input is read as a live stream with periodic commits.
    pub fn streams(&self) -> bool {
        self.follow || self.commit_rows.is_some() || self.commit_secs.is_some()
    }
}

/// A duration in seconds, positive and finite (`0.5`, `2`).
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "'{text}' is not a number of seconds between 0 and 86400 (such as 0.5 or 2)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Only this keyspace.
    pub keyspace: Option<String>,
    /// Also how the store keeps each table: runs, overlap depth (the most runs a scan of one
    /// shard reads), files, bytes, live rows in runs and superseded ones, rows still in the
    /// memtable (some may update rows of runs), and the last compaction (SQL: SHOW TABLES
    /// VERBOSE). Empty on a CQL cluster, which keeps that to itself.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// `quarry compact`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  quarry compact iot.readings                    merge the table's runs now, print what changed
  quarry compact iot                             every table of keyspace iot, one row each
  quarry compact                                 every table, as `nodetool compact` does
  quarry compact iot.readings --format json      as JSON, for scripts
  quarry --driver http://127.0.0.1:7077 compact iot.readings
                                                 on the driver that owns the data directory
  quarry tables --verbose                        runs, overlap depth and the last compaction

The embedded store compacts in the background on its own, choosing the tables whose scans read
the most overlapping runs; this is for when you want it done now (before a benchmark, after a
bulk load), as `nodetool compact` or Delta Lake's OPTIMIZE. Reads and writes go on meanwhile, and
memory stays bounded: shards are rewritten a window at a time. SQL: OPTIMIZE keyspace.table.
A ScyllaDB/Cassandra cluster compacts on its own; there, run `nodetool compact` on each node.")]
pub struct CompactArgs {
    /// The table, as keyspace.table, or a keyspace for each of its tables; every table of
    /// every keyspace without it.
    #[arg(value_name = "KEYSPACE[.TABLE]")]
    pub target: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The table or view, as keyspace.name.
    #[arg(value_name = "KEYSPACE.TABLE")]
    pub table: String,
}

/// A size in bytes: `1073741824`, `512MiB`, `4GiB`, `1.5 GB`.
fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("'{text}' is not a size such as 512MiB or 4GiB: {e}"))
}
