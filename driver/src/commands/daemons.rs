//! `quarry driver`, `quarry worker` and `quarry up`: thin wrappers over the daemons' `serve`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quarry_client::auth::CLUSTER_SECRET_FILE;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};
use quarry_worker::WorkerConfig;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::cli::{
    CqlServerArgs, DriverArgs, DriverConnection, StoreArgs, StoreKind, UpArgs, WorkerArgs,
};
use crate::daemon::{self, DriverConfig, DriverState};

/// Completes on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Completes once the process that started this one has exited (this one is then re-parented).
async fn parent_exited() {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}

async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} (is another process using it?)"))
}

fn open_writer(data_dir: &Path) -> anyhow::Result<Arc<EmbeddedStore>> {
    Ok(Arc::new(
        EmbeddedStore::open(data_dir, EmbeddedOptions::default())
            .with_context(|| format!("opening the data directory {}", data_dir.display()))?,
    ))
}

/// Settings from a TOML file, or the defaults when there is none.
pub fn load_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "the config file {} is not valid: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })
}

/// The driver's settings: defaults, then the file, then flags (and their environment variables).
pub fn driver_config(args: &DriverArgs) -> anyhow::Result<DriverConfig> {
    let mut config: DriverConfig = load_config(args.config.as_deref())?;
    if let Some(ms) = args.heartbeat_ms {
        config.heartbeat_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = args.lost_after_ms {
        config.lost_after = Duration::from_millis(ms);
    }
    if !args.nodes.is_empty() {
        config.nodes = args.nodes.clone();
    }
    if let Some(path) = &args.cluster_secret_file {
        config.cluster_secret_file = Some(path.clone());
    }
    config.allow_file_access |= args.allow_file_access;
    if let Some(secs) = args.job_timeout_secs {
        config.job_timeout = Some(Duration::from_secs(secs));
    }
    args.daemon.apply_tls(&mut config.tls);
    if let Some(bytes) = args.daemon.memory_limit {
        config.memory_limit = Some(bytes);
    }
    config.heartbeat_interval = config.heartbeat_interval.max(Duration::from_millis(10));
    config.lost_after = config.lost_after.max(config.heartbeat_interval * 2);
    Ok(config)
}

pub async fn driver(
    data_dir: &Path,
    connection: &DriverConnection,
    store_args: &StoreArgs,
    args: DriverArgs,
) -> anyhow::Result<()> {
    let mut config = driver_config(&args)?;
    if let Some(path) = &connection.token_file {
        config.token_file = Some(path.clone());
    }
    if let Some(ca) = &connection.tls_ca {
        config.tls.ca = Some(ca.clone());
    }
    // The driver's own files (jobs, modules, secrets) stay in --data-dir whatever the store.
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let store = crate::store::open(data_dir, store_args, crate::store::Access::Write)
        .await?
        .store();
    let listener = bind(&args.listen).await?;
    let address = listener.local_addr()?;
    let state = DriverState::new(config, store, data_dir)?;
    println!("driver listening on {}://{address}", state.tls.scheme());
    print_credentials(&state);
    daemon::serve(listener, state, stop_signal()).await?;
    Ok(())
}

pub async fn worker(
    data_dir: &Path,
    driver: &DriverConnection,
    store_args: &StoreArgs,
    args: WorkerArgs,
) -> anyhow::Result<()> {
    let stop_with_parent = args.stop_with_parent;
    let mut config: WorkerConfig = load_config(args.config.as_deref())?;
    if let Some(url) = &driver.url {
        config.driver_url = url.clone();
    }
    if let Some(node) = args.node {
        config.node_id = node;
    }
    if config.node_id.is_empty() {
        anyhow::bail!("a worker needs the store node it sits beside: pass --node NODE");
    }
    if config.driver_url.is_empty() {
        anyhow::bail!("a worker registers with a driver: pass --driver URL or set QUARRY_DRIVER");
    }
    if let Some(id) = args.id {
        config.worker_id = id;
    }
    if config.worker_id.is_empty() {
        config.worker_id = format!("worker-{}", config.node_id);
    }
    if let Some(slots) = args.slots {
        config.task_slots = slots;
    }
    config.task_slots = config.task_slots.max(1);
    if config.module_cache.is_none() {
        config.module_cache = Some(crate::daemon::compiled_modules_dir(data_dir));
    }
    if let Some(host) = args.advertise_host {
        config.advertise_host = Some(host);
    }
    if let Some(mb) = args.exchange_memory_mb {
        config.exchange_memory = mb << 20;
    }
    if let Some(bytes) = args.daemon.memory_limit {
        config.memory_limit = Some(bytes);
    }
    args.daemon.apply_tls(&mut config.tls);
    if let Some(ca) = &driver.tls_ca {
        config.tls.ca = Some(ca.clone());
    }
    if !args.nodes.is_empty() {
        config.nodes = args.nodes;
    }
    if let Some(path) = args.cluster_secret_file {
        config.cluster_secret_file = Some(path);
    }
    if config.cluster_secret_file.is_none() {
        config.cluster_secret_file = Some(data_dir.join(CLUSTER_SECRET_FILE));
    }
    let store: Arc<dyn Store> = match store_args.kind {
        StoreKind::Embedded => Arc::new(
            EmbeddedStore::open_reader(data_dir, EmbeddedOptions::default())
                .with_context(|| format!("opening the data directory {}", data_dir.display()))?,
        ),
        // Beside a CQL node: the ring places shards, and reads go to that node first.
        StoreKind::Scylla => {
            if config.nodes.is_empty() {
                config.nodes = vec![config.node_id.clone()];
            }
            let options = quarry_scylla::ScyllaOptions {
                local_node: Some(config.node_id.clone()),
                ..crate::store::scylla_options(store_args)?
            };
            let nodes = options.nodes.join(", ");
            Arc::new(
                quarry_scylla::ScyllaStore::connect(options)
                    .await
                    .with_context(|| format!("opening the ScyllaDB/Cassandra store at {nodes}"))?,
            )
        }
    };
    let listener = bind(&args.listen).await?;
    let scheme = if config.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "worker {} (node {}) listening on {scheme}://{}",
        config.worker_id,
        config.node_id,
        listener.local_addr()?
    );
    let stop = async move {
        if stop_with_parent {
            tokio::select! {
                _ = stop_signal() => {}
                _ = parent_exited() => {
                    tracing::info!("the process that started this worker exited; stopping");
                }
            }
        } else {
            stop_signal().await;
        }
    };
    quarry_worker::serve(listener, config, store, stop).await?;
    Ok(())
}

/// Asks a child to stop as Ctrl-C would, then kills it if it lingers.
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SIGTERM through kill(1): the workers stop cleanly on it.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Where the driver's secrets are, for whoever starts it (on stderr: scripts read the
/// endpoint from the first line of stdout).
fn print_credentials(state: &DriverState) {
    eprintln!(
        "clients authenticate with the token in {} (quarry reads it from there with this \
         --data-dir; elsewhere pass --token-file FILE or set QUARRY_TOKEN); workers with the \
         cluster secret in {}",
        state.auth.token_file.display(),
        state.auth.cluster_secret_file.display()
    );
}

pub async fn up(
    data_dir: &Path,
    connection: &DriverConnection,
    store_args: &StoreArgs,
    args: UpArgs,
) -> anyhow::Result<()> {
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let opened = crate::store::open(data_dir, store_args, crate::store::Access::Write).await?;
    // Embedded: --workers nodes sharing the directory. A cluster: a worker beside each node.
    let nodes: Vec<String> = match &opened {
        crate::store::OpenedStore::Embedded(_) => {
            (1..=args.workers).map(|i| format!("node-{i}")).collect()
        }
        crate::store::OpenedStore::Scylla(store) => crate::store::ring_nodes(store),
    };
    let store = opened.store();
    let listener = bind(&args.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let config = DriverConfig {
        nodes: nodes.clone(),
        token_file: connection.token_file.clone(),
        memory_limit: args.memory_limit,
        ..DriverConfig::default()
    };
    let state = DriverState::new(config, store, data_dir)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let state = state.clone();
        tokio::spawn(daemon::serve(listener, state, async move {
            let _ = stopped.await;
        }))
    };
    let exe = std::env::current_exe().context("finding the quarry executable")?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let slots = args.slots.unwrap_or(cores).max(1);
    let mut children = Vec::new();
    for node in &nodes {
        let mut command = Command::new(&exe);
        command.arg("--data-dir").arg(data_dir);
        if store_args.kind == StoreKind::Scylla {
            command.args(store_flags(store_args, node));
        }
        command
            .args([
                "worker",
                "--driver",
                &url,
                "--node",
                node,
                "--stop-with-parent",
            ])
            .args(["--listen", "127.0.0.1:0", "--slots", &slots.to_string()])
            .arg("--cluster-secret-file")
            .arg(&state.auth.cluster_secret_file);
        if store_args.kind == StoreKind::Embedded {
            command.args(["--nodes", &nodes.join(",")]);
        }
        if let Some(bytes) = args.memory_limit {
            command.args(["--memory-limit", &bytes.to_string()]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        children.push(child);
    }
    let live = state
        .registry
        .wait_for(nodes.len(), Duration::from_secs(30))
        .await;
    if live < nodes.len() {
        for child in children.iter_mut() {
            stop_child(child).await;
        }
        anyhow::bail!(
            "only {live} of {} workers registered within 30 s",
            nodes.len()
        );
    }
    println!("driver listening on {url}");
    for w in state.registry.live() {
        println!("worker {} (node {}) on {}", w.id, w.node, w.endpoint);
    }
    print_credentials(&state);
    println!(
        "Run SQL on it with: quarry sql --driver {url}   (or export QUARRY_DRIVER={url})\nCtrl-C stops the cluster."
    );
    let watch_children = async {
        // A worker that exits on its own is reported; the cluster goes on without it.
        let mut reported = vec![false; children.len()];
        loop {
            for (i, child) in children.iter_mut().enumerate() {
                if !reported[i]
                    && let Ok(Some(status)) = child.try_wait()
                {
                    eprintln!("worker {} exited ({status})", nodes[i]);
                    reported[i] = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = stop_signal() => {}
        _ = watch_children => {}
    }
    println!("stopping");
    for child in children.iter_mut() {
        stop_child(child).await;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// The store flags a worker beside cluster node `node` is started with: the parent's, with that
/// node as its contact point.
fn store_flags(args: &StoreArgs, node: &str) -> Vec<String> {
    let mut flags = vec![
        "--store".to_string(),
        "scylla".to_string(),
        "--scylla-nodes".to_string(),
        node.to_string(),
    ];
    let mut add = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            flags.push(flag.to_string());
            flags.push(value);
        }
    };
    add("--scylla-user", args.scylla_user.clone());
    add(
        "--scylla-password-file",
        args.scylla_password_file
            .as_ref()
            .map(|p| p.display().to_string()),
    );
    add("--scylla-dc", args.scylla_dc.clone());
    add(
        "--scylla-read-consistency",
        args.scylla_read_consistency.clone(),
    );
    add(
        "--scylla-write-consistency",
        args.scylla_write_consistency.clone(),
    );
    add(
        "--scylla-read-rows-per-sec",
        args.scylla_read_rows_per_sec.map(|n| n.to_string()),
    );
    add(
        "--scylla-write-rows-per-sec",
        args.scylla_write_rows_per_sec.map(|n| n.to_string()),
    );
    add(
        "--scylla-split-mb",
        args.scylla_split_mb.map(|n| n.to_string()),
    );
    add(
        "--scylla-write-ttl",
        args.scylla_write_ttl.map(|n| n.to_string()),
    );
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    add("--scylla-tls-ca", path(&args.scylla_tls_ca));
    add("--scylla-tls-cert", path(&args.scylla_tls_cert));
    add("--scylla-tls-key", path(&args.scylla_tls_key));
    flags
}

/// `quarry cql-server`: the data directory over CQL until Ctrl-C, then what each node served.
pub async fn cql_server(data_dir: &Path, args: CqlServerArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 250 {
        anyhow::bail!("--nodes must be between 1 and 250, got {}", args.nodes);
    }
    if args.replication == 0 || args.replication > args.nodes {
        anyhow::bail!(
            "--replication must be between 1 and --nodes ({}), got {}",
            args.nodes,
            args.replication
        );
    }
    if args.vnodes == 0 || args.vnodes > 1024 {
        anyhow::bail!("--vnodes must be between 1 and 1024, got {}", args.vnodes);
    }
    if let Some(n) = args.tablets
        && !(1..=65536).contains(&n)
    {
        anyhow::bail!("--tablets must be between 1 and 65536, got {n}");
    }
    if args.smp == Some(0) {
        anyhow::bail!("--smp must be at least 1");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(quarry_cql::tls_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let store = open_writer(data_dir)?;
    let options = quarry_cql::ServerOptions {
        nodes: args.nodes,
        replication: args.replication,
        vnodes: args.vnodes,
        tablets: args.tablets,
        shards: args.smp,
        port: args.port,
        first_address: args.address,
        tls,
        ..quarry_cql::ServerOptions::default()
    };
    let server = quarry_cql::CqlServer::start(store.clone(), options)
        .await
        .with_context(|| {
            format!(
                "listening on port {} of {} node address(es) from {} (is another process using \
                 it? --port 0 picks a free one)",
                args.port, args.nodes, args.address
            )
        })?;
    let addresses: Vec<String> = server.addresses().iter().map(|a| a.to_string()).collect();
    println!(
        "serving {} over CQL{} on {} (replication {}{}); Ctrl-C stops",
        data_dir.display(),
        if args.tls_cert.is_some() {
            " with TLS"
        } else {
            ""
        },
        addresses.join(", "),
        args.replication,
        match args.tablets {
            Some(n) => format!(", {n} tablets per table"),
            None => String::new(),
        }
    );
    stop_signal().await;
    let stats = server.stats();
    drop(server);
    for (node, s) in stats.iter().enumerate() {
        println!(
            "node {} ({}): {} requests, {} local, {} forwarded and {} whole-ring scans, {} rows \
             read, {} local and {} forwarded rows written{}",
            node + 1,
            addresses[node],
            s.requests,
            s.local_scans,
            s.forwarded_scans,
            s.full_scans,
            s.rows_read,
            s.local_writes,
            s.forwarded_writes,
            if args.smp.is_some() && args.tablets.is_some() {
                format!(
                    "; {} tablet scans on their shard, {} on another",
                    s.shard_local_scans, s.cross_shard_scans
                )
            } else {
                String::new()
            }
        );
    }
    store.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn driver_args(args: &[&str]) -> DriverArgs {
        let mut all = vec!["quarry", "driver"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Driver(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn driver_settings_come_from_defaults_then_the_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("driver.toml");
        std::fs::write(
            &file,
            "heartbeat_interval = 250\nlost_after = 5000\nnodes = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let config =
            driver_config(&driver_args(&["--config", path, "--lost-after-ms", "900"])).unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(config.lost_after, Duration::from_millis(900));
        assert_eq!(config.nodes, ["a", "b"]);
        assert_eq!(
            config.max_task_attempts,
            DriverConfig::default().max_task_attempts
        );

        std::fs::write(&file, "heartbeat_intervall = 250\n").unwrap();
        let error = driver_config(&driver_args(&["--config", path]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("driver.toml") && error.contains("heartbeat_intervall"),
            "{error}"
        );
        let missing =
            driver_config(&driver_args(&["--config", "/nonexistent/quarry.toml"])).unwrap_err();
        assert!(
            format!("{missing:#}").contains("/nonexistent/quarry.toml"),
            "{missing:#}"
        );
    }

    #[test]
    fn the_shipped_example_configs_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
        let driver: DriverConfig = load_config(Some(&dir.join("driver.toml"))).unwrap();
        let worker: quarry_worker::WorkerConfig =
            load_config(Some(&dir.join("worker.toml"))).unwrap();
        assert_eq!(driver.nodes.len(), 3);
        assert_eq!(
            driver.nodes, worker.nodes,
            "the driver and workers place alike"
        );
        assert!(!worker.driver_url.is_empty());
    }
}
