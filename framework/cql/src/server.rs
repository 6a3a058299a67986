//! The server: N nodes on consecutive loopback addresses and one port, one store behind them.
//!
//! ```text
//!   client ──TCP (or TLS)──▶ node k (127.0.0.k:port) ──▶ frame ──▶ request task ──▶ response ──▶ writer
//!                                                        │
//!                     system.* / system_schema.* ◀───────┤ (ring + catalog)
//!                     SELECT: plan_scan ─▶ cursor (paged) ┤
//!                     INSERT / BATCH: one write per table ┘
//! ```
//!
//! Every node serves every request, as a Cassandra coordinator would; what differs is whether it
//! holds the data, which the node counts ([`NodeStats`]): a scan of a token range the node
//! replicates, or a write of a row it replicates, is local; anything else was forwarded.
//! Prepared statements are shared by all nodes (the id is a digest of the statement), so an
//! EXECUTE may go to any node.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_core::schema::TableName;
use quarry_store::Store;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::system::{self, Ring};
use crate::wire::{self, BatchRequest, Body, Header, QueryParameters, Reader, code, opcode};

use crate::execute::{Cursor, execute, execute_batch};
use crate::statement::{Prepared, compile, write_bind_metadata, write_result_metadata};
/// How the server is laid out.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Nodes, on 127.0.0.1, 127.0.0.2, ...
    pub nodes: usize,
    /// Replicas of every token range (SimpleStrategy), at most `nodes`.
    pub replication: usize,
    /// Serve every keyspace as tablet-based, with this many tablets per table (as a ScyllaDB
    /// cluster with tablets on), instead of on the vnode ring.
    pub tablets: Option<u32>,
    /// Present every node as a ScyllaDB node with this many CPU shards: each connection is
    /// given a shard in turn and says which (drivers then open one per shard), and tablets
    /// name the shard that holds them.
    pub shards: Option<u16>,
    /// Tokens per node.
    pub vnodes: usize,
    /// The port every node listens on; 0 picks a free one.
    pub port: u16,
    /// The first node's address; the others follow it.
    pub first_address: Ipv4Addr,
    pub cluster_name: String,
    /// Serve client encryption (TLS) with this configuration; see [`tls_config`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            nodes: 1,
            replication: 1,
            tablets: None,
            shards: None,
            vnodes: 16,
            port: 9042,
            first_address: Ipv4Addr::new(127, 0, 0, 1),
            cluster_name: "Quarry".into(),
            tls: None,
        }
    }
}

/// What one node served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub address: Option<SocketAddr>,
    /// Requests of every kind (OPTIONS, STARTUP, QUERY, PREPARE, EXECUTE, BATCH, ...).
    pub requests: u64,
    /// Scans of user tables whose whole token range this node replicates.
    pub local_scans: u64,
    /// Scans of user tables the node had to coordinate from other replicas.
    pub forwarded_scans: u64,
    /// With CPU shards and tablets: local scans of one tablet that arrived on a connection to
    /// the shard holding it, and those that arrived on another shard's.
    pub shard_local_scans: u64,
    pub cross_shard_scans: u64,
    /// Scans of user tables with no token or partition-key restriction (the whole ring).
    pub full_scans: u64,
    /// Rows returned by scans of user tables.
    pub rows_read: u64,
    /// Rows written that this node replicates.
    pub local_writes: u64,
    /// Rows written that other nodes replicate.
    pub forwarded_writes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) local_scans: AtomicU64,
    pub(crate) forwarded_scans: AtomicU64,
    pub(crate) shard_local_scans: AtomicU64,
    pub(crate) cross_shard_scans: AtomicU64,
    pub(crate) full_scans: AtomicU64,
    pub(crate) rows_read: AtomicU64,
    pub(crate) local_writes: AtomicU64,
    pub(crate) forwarded_writes: AtomicU64,
}

/// Idle paging cursors are dropped after this long.
pub(crate) const CURSOR_IDLE: Duration = Duration::from_secs(120);
/// At most this many open cursors; the oldest is dropped first.
pub(crate) const MAX_CURSORS: usize = 1024;
/// Requests one connection may have in flight.
const IN_FLIGHT_PER_CONNECTION: usize = 256;

/// A running server; dropping it stops every node.
#[derive(Debug)]
pub struct CqlServer {
    shared: Arc<Shared>,
    addresses: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ring: Ring,
    pub(crate) cluster_name: String,
    pub(crate) prepared: Mutex<HashMap<Vec<u8>, Arc<Prepared>>>,
    pub(crate) cursors: Mutex<HashMap<u64, (Instant, Cursor)>>,
    /// Connections that registered for SCHEMA_CHANGE events.
    pub(crate) schema_listeners: Mutex<Vec<mpsc::Sender<Vec<u8>>>>,
    pub(crate) next_cursor: AtomicU64,
    pub(crate) counters: Vec<Counters>,
    /// Connections each node accepted (with shards, the next one's shard).
    pub(crate) connections: Vec<AtomicU64>,
}

impl Shared {
    pub(crate) fn stats(&self, node: usize) -> NodeStats {
        let c = &self.counters[node];
        NodeStats {
            address: None,
            requests: c.requests.load(Ordering::Relaxed),
            local_scans: c.local_scans.load(Ordering::Relaxed),
            forwarded_scans: c.forwarded_scans.load(Ordering::Relaxed),
            shard_local_scans: c.shard_local_scans.load(Ordering::Relaxed),
            cross_shard_scans: c.cross_shard_scans.load(Ordering::Relaxed),
            full_scans: c.full_scans.load(Ordering::Relaxed),
            rows_read: c.rows_read.load(Ordering::Relaxed),
            local_writes: c.local_writes.load(Ordering::Relaxed),
            forwarded_writes: c.forwarded_writes.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("store", &self.store.kind())
            .field("nodes", &self.ring.nodes.len())
            .finish()
    }
}

impl CqlServer {
    /// Binds every node and starts serving. With port 0, a port free on every node's address is
    /// picked (the first node's, tried again when another address has it taken).
    pub async fn start(store: Arc<dyn Store>, options: ServerOptions) -> std::io::Result<Self> {
        let nodes = options.nodes.max(1);
        let first = u32::from(options.first_address);
        let ips: Vec<IpAddr> = (0..nodes as u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(first + i)))
            .collect();
        let mut attempt = 0;
        let listeners = loop {
            attempt += 1;
            match bind_all(&ips, options.port).await {
                Ok(listeners) => break listeners,
                Err(e) if options.port == 0 && attempt < 20 => {
                    tracing::debug!("binding the CQL nodes failed ({e}); trying another port");
                }
                Err(e) => return Err(e),
            }
        };
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()?;
        let shared = Arc::new(Shared {
            store,
            ring: {
                let mut ring = Ring::new(&ips, options.vnodes, options.replication);
                if let Some(count) = options.tablets {
                    ring = ring.with_tablets(count);
                }
                if let Some(count) = options.shards {
                    ring = ring.with_shards(count);
                }
                ring
            },
            cluster_name: options.cluster_name.clone(),
            prepared: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            schema_listeners: Mutex::new(Vec::new()),
            next_cursor: AtomicU64::new(rand_seed()),
            counters: (0..nodes).map(|_| Counters::default()).collect(),
            connections: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(node, listener)| {
                let tls = options.tls.clone().map(TlsAcceptor::from);
                tokio::spawn(accept(shared.clone(), node, listener, tls))
            })
            .collect();
        Ok(CqlServer {
            shared,
            addresses,
            tasks,
        })
    }

    /// Where each node listens, in node order.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// What each node has served so far, in node order.
    pub fn stats(&self) -> Vec<NodeStats> {
        (0..self.addresses.len())
            .map(|node| NodeStats {
                address: Some(self.addresses[node]),
                ..self.shared.stats(node)
            })
            .collect()
    }

    /// Whether node `node` holds a replica of every token of `(start, end]` of `table`, for
    /// tests and reports.
    pub fn holds(&self, table: &TableName, node: usize, start: i64, end: i64) -> bool {
        self.shared.ring.holds(table, node, start, end)
    }

    /// Stops one node (its listener and, as connections notice, its connections), as if the
    /// machine went away; the others keep serving.
    pub fn stop_node(&mut self, node: usize) {
        if let Some(task) = self.tasks.get(node) {
            task.abort();
        }
    }
}

impl Drop for CqlServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (std::process::id() as u64) << 32
}

async fn bind_all(ips: &[IpAddr], port: u16) -> std::io::Result<Vec<TcpListener>> {
    let first = TcpListener::bind((ips[0], port)).await?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for ip in &ips[1..] {
        listeners.push(TcpListener::bind((*ip, port)).await?);
    }
    Ok(listeners)
}

/// Accepts connections of one node; each connection's task is aborted with the node.
async fn accept(shared: Arc<Shared>, node: usize, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let shared = shared.clone();
                    match &tls {
                        None => {
                            let (reader, writer) = socket.into_split();
                            connections.spawn(serve(shared, node, reader, writer));
                        }
                        Some(tls) => {
                            let handshake = tls.accept(socket);
                            connections.spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                                    Ok(Ok(stream)) => {
                                        let (reader, writer) = tokio::io::split(stream);
                                        serve(shared, node, reader, writer).await;
                                    }
                                    Ok(Err(e)) => tracing::info!(
                                        "node {node}: the TLS handshake with {peer} failed: {e}"
                                    ),
                                    Err(_) => tracing::info!(
                                        "node {node}: {peer} did not finish its TLS handshake in \
                                         {TLS_HANDSHAKE_TIMEOUT:?}"
                                    ),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("node {node}: accepting a CQL connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS configuration serving `cert` (a PEM chain) with `key` (PEM), or an error naming the
/// file that is wrong. Clients are not asked for certificates.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "the TLS certificate {} holds no certificate (expected a -----BEGIN CERTIFICATE----- \
             block)",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "the TLS certificate {} and key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// What a connection remembers between requests.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) keyspace: Mutex<Option<String>>,
    /// The CPU shard this connection is served by, on sharded nodes.
    pub(crate) shard: Option<u16>,
    /// Where this connection's frames go (responses, and events once it registered).
    pub(crate) frames: mpsc::Sender<Vec<u8>>,
}

/// A failed request: an ERROR response.
#[derive(Debug)]
pub(crate) struct CqlError {
    pub(crate) code: i32,
    pub(crate) message: String,
    /// Code-specific fields after the message.
    pub(crate) extra: Vec<u8>,
}

impl CqlError {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        CqlError {
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        CqlError::new(code::INVALID, message)
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        let mut body = wire::error_body(self.code, &self.message);
        body.extend_from_slice(&self.extra);
        body
    }
}

impl From<quarry_store::Error> for CqlError {
    fn from(e: quarry_store::Error) -> Self {
        use quarry_store::Error as E;
        let code = match &e {
            E::NoSuchKeyspace { .. }
            | E::NoSuchTable { .. }
            | E::NoSuchView { .. }
            | E::SchemaMismatch { .. }
            | E::ReadOnly { .. } => code::INVALID,
            E::AlreadyExists { .. } => code::ALREADY_EXISTS,
            E::Definition(quarry_core::Error::Syntax { .. }) => code::SYNTAX,
            E::Definition(_) => code::INVALID,
            _ => code::SERVER,
        };
        CqlError::new(code, e.to_string())
    }
}

pub(crate) type Response = Result<(u8, Vec<u8>), CqlError>;

async fn serve(
    shared: Arc<Shared>,
    node: usize,
    mut reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin + Send + 'static,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT_PER_CONNECTION);
    let writing = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
            if rx.is_empty() && writer.flush().await.is_err() {
                return;
            }
        }
    });
    let accepted = shared.connections[node].fetch_add(1, Ordering::Relaxed);
    let connection = Arc::new(Connection {
        keyspace: Mutex::new(None),
        shard: shared.ring.shards.map(|n| (accepted % u64::from(n)) as u16),
        frames: tx.clone(),
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    let mut header = [0u8; wire::HEADER];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            break;
        }
        let h = Header::parse(&header);
        shared.counters[node]
            .requests
            .fetch_add(1, Ordering::Relaxed);
        if h.version & 0x7f != wire::VERSION {
            // Drivers start high and step down when told which versions are served.
            let message = format!(
                "Invalid or unsupported protocol version ({}); supported versions are (4/v4)",
                h.version & 0x7f
            );
            let version = (h.version & 0x7f).min(wire::VERSION);
            let frame = wire::response_frame(
                version,
                h.stream,
                opcode::ERROR,
                &wire::error_body(code::PROTOCOL, &message),
            );
            let _ = tx.send(frame).await;
            break;
        }
        if h.length > wire::MAX_BODY {
            let message = format!(
                "a frame of {} bytes is larger than the {} bytes this server accepts",
                h.length,
                wire::MAX_BODY
            );
            let body = wire::error_body(code::PROTOCOL, &message);
            let _ = tx
                .send(wire::response_frame(
                    wire::VERSION,
                    h.stream,
                    opcode::ERROR,
                    &body,
                ))
                .await;
            break;
        }
        let mut body = vec![0u8; h.length];
        if reader.read_exact(&mut body).await.is_err() {
            break;
        }
        // Requests that change the connection run in order; the others run concurrently.
        let inline = matches!(
            h.opcode,
            opcode::STARTUP | opcode::OPTIONS | opcode::REGISTER
        ) || (h.opcode == opcode::QUERY && is_use(&body, h.flags));
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (shared, connection, tx) = (shared.clone(), connection.clone(), tx.clone());
        let task = async move {
            let response = handle(&shared, node, &connection, h, &body).await;
            let (op, body) = match response {
                Ok(ok) => ok,
                Err(e) => (opcode::ERROR, e.body()),
            };
            let _ = tx
                .send(wire::response_frame(wire::VERSION, h.stream, op, &body))
                .await;
            drop(permit);
        };
        if inline {
            task.await;
        } else {
            tokio::spawn(task);
        }
    }
    drop(tx);
    let _ = writing.await;
}

/// Whether a QUERY body is a `USE` (it changes the connection's keyspace).
fn is_use(body: &[u8], flags: u8) -> bool {
    let mut r = Reader::new(body);
    if flags & wire::FLAG_CUSTOM_PAYLOAD != 0 && r.skip_bytes_map().is_err() {
        return false;
    }
    r.long_string().is_ok_and(|q| {
        q.trim_start()
            .get(..4)
            .is_some_and(|w| w.eq_ignore_ascii_case("use "))
    })
}

async fn handle(
    shared: &Shared,
    node: usize,
    connection: &Connection,
    header: Header,
    body: &[u8],
) -> Response {
    let mut r = Reader::new(body);
    let protocol = |e: wire::WireError| CqlError::new(code::PROTOCOL, e.0);
    if header.flags & wire::FLAG_CUSTOM_PAYLOAD != 0 {
        r.skip_bytes_map().map_err(protocol)?;
    }
    match header.opcode {
        opcode::OPTIONS => {
            let mut options = vec![
                ("CQL_VERSION", vec![system::CQL_VERSION.to_string()]),
                ("COMPRESSION", vec![]),
                ("PROTOCOL_VERSIONS", vec!["4/v4".to_string()]),
            ];
            // A sharded ScyllaDB node says which shard the connection reached and how tokens
            // map to shards.
            if let (Some(shard), Some(count)) = (connection.shard, shared.ring.shards) {
                options.extend([
                    ("SCYLLA_SHARD", vec![shard.to_string()]),
                    ("SCYLLA_NR_SHARDS", vec![count.to_string()]),
                    (
                        "SCYLLA_PARTITIONER",
                        vec!["org.apache.cassandra.dht.Murmur3Partitioner".to_string()],
                    ),
                    (
                        "SCYLLA_SHARDING_ALGORITHM",
                        vec!["biased-token-round-robin".to_string()],
                    ),
                    ("SCYLLA_SHARDING_IGNORE_MSB", vec!["12".to_string()]),
                ]);
            }
            let options: Vec<(&str, Vec<&str>)> = options
                .iter()
                .map(|(k, v)| (*k, v.iter().map(String::as_str).collect()))
                .collect();
            let mut b = Body::new();
            b.string_multimap(&options);
            Ok((opcode::SUPPORTED, b.0))
        }
        opcode::STARTUP => {
            let options = r.string_map().map_err(protocol)?;
            if let Some((_, c)) = options.iter().find(|(k, _)| k == "COMPRESSION") {
                return Err(CqlError::new(
                    code::PROTOCOL,
                    format!("compression '{c}' is not supported; connect without compression"),
                ));
            }
            Ok((opcode::READY, Vec::new()))
        }
        opcode::REGISTER => {
            let events = r.string_list().map_err(protocol)?;
            if events.iter().any(|e| e == "SCHEMA_CHANGE") {
                shared
                    .schema_listeners
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(connection.frames.clone());
            }
            Ok((opcode::READY, Vec::new()))
        }
        opcode::AUTH_RESPONSE => Err(CqlError::new(
            code::PROTOCOL,
            "this server does not ask for authentication",
        )),
        opcode::QUERY => {
            let text = r.long_string().map_err(protocol)?;
            let params = QueryParameters::read(&mut r).map_err(protocol)?;
            let keyspace = connection
                .keyspace
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let prepared = compile(shared, &text, keyspace.as_deref())?;
            execute(shared, node, connection, &prepared, params).await
        }
        opcode::PREPARE => {
            let text = r.long_string().map_err(protocol)?;
            let keyspace = connection
                .keyspace
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let prepared = Arc::new(compile(shared, &text, keyspace.as_deref())?);
            let mut b = Body::new();
            b.int(4);
            b.short_bytes(&prepared.id);
            write_bind_metadata(&mut b, &prepared);
            write_result_metadata(&mut b, prepared.result_columns(), false, None);
            shared
                .prepared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(prepared.id.clone(), prepared);
            Ok((opcode::RESULT, b.0))
        }
        opcode::EXECUTE => {
            let id = r.short_bytes().map_err(protocol)?;
            let params = QueryParameters::read(&mut r).map_err(protocol)?;
            let prepared = lookup_prepared(shared, &id)?;
            execute(shared, node, connection, &prepared, params).await
        }
        opcode::BATCH => {
            let batch = BatchRequest::read(&mut r).map_err(protocol)?;
            execute_batch(shared, node, connection, batch).await
        }
        other => Err(CqlError::new(
            code::PROTOCOL,
            format!("opcode 0x{other:02x} is not a request this server serves"),
        )),
    }
}

pub(crate) fn lookup_prepared(shared: &Shared, id: &[u8]) -> Result<Arc<Prepared>, CqlError> {
    shared
        .prepared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(id)
        .cloned()
        .ok_or_else(|| {
            let mut e = CqlError::new(
                code::UNPREPARED,
                "this prepared statement is not known to the server (it restarted); prepare it again",
            );
            let mut extra = Body::new();
            extra.short_bytes(id);
            e.extra = extra.0;
            e
        })
}
