//! The server: N nodes on consecutive loopback addresses and one port, one store behind them.
//!
//! ```text
//!   client ──TCP──▶ node k (127.0.0.k:port) ──▶ frame ──▶ request task ──▶ response ──▶ writer
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::kernels::cmp;
use arrow::compute::{and, filter_record_batch, or};
use futures::{StreamExt, TryStreamExt};
use quarry_core::cql_type::CqlType;
use quarry_core::cql_value::{CellDecoder, CellEncoder};
use quarry_core::ddl::{Statement, parse_statement_in};
use quarry_core::partition_key::{KeyColumn, tokens};
use quarry_core::schema::{TableDef, TableName};
use quarry_core::token::TokenRange;
use quarry_store::{BatchStream, CmpOp, Predicate, ScanRequest, Store};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::parse::{Cql, Insert, Lhs, Literal, Restriction, Select, Selection, Term, parse};
use crate::system::{self, Ring, SystemTable};
use crate::types::{ColumnType, check_cell, collection_elements, literal_cell};
use crate::wire::{
    self, BatchRequest, BatchStatement, Body, Header, QueryParameters, Reader, Value, code, opcode,
};

/// How the server is laid out.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Nodes, on 127.0.0.1, 127.0.0.2, ...
    pub nodes: usize,
    /// Replicas of every token range (SimpleStrategy), at most `nodes`.
    pub replication: usize,
    /// Tokens per node.
    pub vnodes: usize,
    /// The port every node listens on; 0 picks a free one.
    pub port: u16,
    /// The first node's address; the others follow it.
    pub first_address: Ipv4Addr,
    pub cluster_name: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            nodes: 1,
            replication: 1,
            vnodes: 16,
            port: 9042,
            first_address: Ipv4Addr::new(127, 0, 0, 1),
            cluster_name: "Quarry".into(),
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
struct Counters {
    requests: AtomicU64,
    local_scans: AtomicU64,
    forwarded_scans: AtomicU64,
    full_scans: AtomicU64,
    rows_read: AtomicU64,
    local_writes: AtomicU64,
    forwarded_writes: AtomicU64,
}

/// Idle paging cursors are dropped after this long.
const CURSOR_IDLE: Duration = Duration::from_secs(120);
/// At most this many open cursors; the oldest is dropped first.
const MAX_CURSORS: usize = 1024;
/// Requests one connection may have in flight.
const IN_FLIGHT_PER_CONNECTION: usize = 256;

/// A running server; dropping it stops every node.
#[derive(Debug)]
pub struct CqlServer {
    shared: Arc<Shared>,
    addresses: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    store: Arc<dyn Store>,
    ring: Ring,
    cluster_name: String,
    prepared: Mutex<HashMap<Vec<u8>, Arc<Prepared>>>,
    cursors: Mutex<HashMap<u64, (Instant, Cursor)>>,
    /// Connections that registered for SCHEMA_CHANGE events.
    schema_listeners: Mutex<Vec<mpsc::Sender<Vec<u8>>>>,
    next_cursor: AtomicU64,
    counters: Vec<Counters>,
}

impl Shared {
    fn stats(&self, node: usize) -> NodeStats {
        let c = &self.counters[node];
        NodeStats {
            address: None,
            requests: c.requests.load(Ordering::Relaxed),
            local_scans: c.local_scans.load(Ordering::Relaxed),
            forwarded_scans: c.forwarded_scans.load(Ordering::Relaxed),
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
            ring: Ring::new(&ips, options.vnodes, options.replication),
            cluster_name: options.cluster_name.clone(),
            prepared: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            schema_listeners: Mutex::new(Vec::new()),
            next_cursor: AtomicU64::new(rand_seed()),
            counters: (0..nodes).map(|_| Counters::default()).collect(),
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(node, listener)| tokio::spawn(accept(shared.clone(), node, listener)))
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

    /// The token ranges `(start, end]` node `node` holds a replica of, for tests and reports.
    pub fn holds(&self, node: usize, start: i64, end: i64) -> bool {
        self.shared.ring.holds(node, start, end)
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
async fn accept(shared: Arc<Shared>, node: usize, listener: TcpListener) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let _ = socket.set_nodelay(true);
                    connections.spawn(serve(shared.clone(), node, socket));
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

/// What a connection remembers between requests.
#[derive(Debug)]
struct Connection {
    keyspace: Mutex<Option<String>>,
    /// Where this connection's frames go (responses, and events once it registered).
    frames: mpsc::Sender<Vec<u8>>,
}

/// A failed request: an ERROR response.
#[derive(Debug)]
struct CqlError {
    code: i32,
    message: String,
    /// Code-specific fields after the message.
    extra: Vec<u8>,
}

impl CqlError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        CqlError {
            code,
            message: message.into(),
            extra: Vec::new(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        CqlError::new(code::INVALID, message)
    }

    fn body(&self) -> Vec<u8> {
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

type Response = Result<(u8, Vec<u8>), CqlError>;

async fn serve(shared: Arc<Shared>, node: usize, socket: TcpStream) {
    let (mut reader, writer) = socket.into_split();
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
    let connection = Arc::new(Connection {
        keyspace: Mutex::new(None),
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
            let mut b = Body::new();
            b.string_multimap(&[
                ("CQL_VERSION", vec![system::CQL_VERSION]),
                ("COMPRESSION", vec![]),
                ("PROTOCOL_VERSIONS", vec!["4/v4"]),
            ]);
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
                    .expect("listener lock")
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
            let keyspace = connection.keyspace.lock().expect("keyspace lock").clone();
            let prepared = compile(shared, &text, keyspace.as_deref())?;
            execute(shared, node, connection, &prepared, params).await
        }
        opcode::PREPARE => {
            let text = r.long_string().map_err(protocol)?;
            let keyspace = connection.keyspace.lock().expect("keyspace lock").clone();
            let prepared = Arc::new(compile(shared, &text, keyspace.as_deref())?);
            let mut b = Body::new();
            b.int(4);
            b.short_bytes(&prepared.id);
            write_bind_metadata(&mut b, &prepared);
            write_result_metadata(&mut b, prepared.result_columns(), false, None);
            shared
                .prepared
                .lock()
                .expect("prepared lock")
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

fn lookup_prepared(shared: &Shared, id: &[u8]) -> Result<Arc<Prepared>, CqlError> {
    shared
        .prepared
        .lock()
        .expect("prepared lock")
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

/// A bind marker's description.
#[derive(Debug, Clone)]
struct Bind {
    keyspace: String,
    table: String,
    name: String,
    column_type: ColumnType,
}

/// A result column.
#[derive(Debug, Clone)]
struct OutColumn {
    name: String,
    column_type: ColumnType,
}

/// A statement ready to execute: parsed, resolved against the catalog, with its bind markers
/// and result columns described.
#[derive(Debug)]
struct Prepared {
    id: Vec<u8>,
    kind: Kind,
    binds: Vec<Bind>,
    /// Indices of the markers that bind the partition key, in key order (for token-aware
    /// routing), when every partition-key column is bound by one.
    pk_indexes: Vec<u16>,
    /// The table named in the metadata (`[global table spec]`).
    table: (String, String),
}

#[derive(Debug)]
enum Kind {
    System {
        select: Select,
        table: SystemTable,
        columns: Vec<usize>,
    },
    Select {
        select: Select,
        def: TableDef,
        /// Table column index of each output column (empty for count(*)).
        columns: Vec<usize>,
        out: Vec<OutColumn>,
    },
    Insert(Vec<(Insert, TableDef)>),
    Use(String),
    Ddl(Box<Statement>),
}

impl Prepared {
    fn result_columns(&self) -> Option<Vec<OutColumn>> {
        match &self.kind {
            Kind::System { table, columns, .. } => Some(
                columns
                    .iter()
                    .map(|&i| OutColumn {
                        name: table.columns[i].0.to_string(),
                        column_type: table.columns[i].1.clone(),
                    })
                    .collect(),
            ),
            Kind::Select { out, .. } => Some(out.clone()),
            _ => None,
        }
    }
}

fn statement_id(text: &str, keyspace: Option<&str>) -> Vec<u8> {
    let digest = Sha256::digest(format!("{}\u{0}{text}", keyspace.unwrap_or("")));
    digest[..16].to_vec()
}

fn resolve_keyspace(named: &Option<String>, session: Option<&str>) -> Result<String, CqlError> {
    named
        .clone()
        .or_else(|| session.map(str::to_string))
        .ok_or_else(|| {
            CqlError::invalid(
                "no keyspace has been specified: write keyspace.table, or run USE keyspace first",
            )
        })
}

fn compile(shared: &Shared, text: &str, session: Option<&str>) -> Result<Prepared, CqlError> {
    let id = statement_id(text, session);
    let cql = parse(text).map_err(|e| CqlError::new(code::SYNTAX, e))?;
    let mut binds = vec![None; cql.markers()];
    let mut pk_indexes = Vec::new();
    let (kind, table) = match cql {
        Cql::Select(select) => {
            let keyspace = resolve_keyspace(&select.keyspace, session)?;
            if system::is_system_keyspace(&keyspace) {
                let table = system::table(
                    &keyspace,
                    &select.table,
                    0,
                    &shared.ring,
                    shared.store.as_ref(),
                    &shared.cluster_name,
                    &NodeStats::default(),
                )
                .ok_or_else(|| {
                    CqlError::invalid(format!("unconfigured table {keyspace}.{}", select.table))
                })?;
                let columns = match &select.selection {
                    Selection::All => (0..table.columns.len()).collect(),
                    Selection::Count => {
                        return Err(CqlError::invalid(
                            "count(*) of a system table is not served",
                        ));
                    }
                    Selection::Columns(names) => names
                        .iter()
                        .map(|(name, _)| {
                            table
                                .columns
                                .iter()
                                .position(|(c, _)| c == name)
                                .ok_or_else(|| {
                                    CqlError::invalid(format!(
                                        "Undefined column name {name} in table {keyspace}.{}",
                                        select.table
                                    ))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                };
                for r in &select.restrictions {
                    let (column, marker, list) = match r {
                        Restriction::Compare {
                            lhs: Lhs::Column(c),
                            op: CmpOp::Eq,
                            term,
                        } => (c, marker_of(term), false),
                        Restriction::InMarker { column, marker } => (column, Some(*marker), true),
                        Restriction::In { column, terms } => {
                            for t in terms {
                                if let Some(m) = marker_of(t) {
                                    binds[m] = Some(system_bind(&table, column, false)?);
                                }
                            }
                            continue;
                        }
                        _ => {
                            return Err(CqlError::invalid(
                                "system tables are filtered by equality and IN only",
                            ));
                        }
                    };
                    if let Some(m) = marker {
                        binds[m] = Some(system_bind(&table, column, list)?);
                    }
                }
                let names = (table.keyspace.to_string(), table.name.to_string());
                (
                    Kind::System {
                        select,
                        table,
                        columns,
                    },
                    names,
                )
            } else {
                let name = TableName::new(&keyspace, &select.table);
                let def = shared.store.table(&name)?;
                let (columns, out) = match &select.selection {
                    Selection::All => (
                        (0..def.columns.len()).collect(),
                        def.columns
                            .iter()
                            .map(|c| OutColumn {
                                name: c.name.clone(),
                                column_type: ColumnType::Cql(c.cql_type),
                            })
                            .collect(),
                    ),
                    Selection::Count => (
                        Vec::new(),
                        vec![OutColumn {
                            name: "count".into(),
                            column_type: ColumnType::Cql(CqlType::BigInt),
                        }],
                    ),
                    Selection::Columns(names) => {
                        let mut columns = Vec::new();
                        let mut out = Vec::new();
                        for (column, alias) in names {
                            let i = column_index(&def, column)?;
                            columns.push(i);
                            out.push(OutColumn {
                                name: alias.clone().unwrap_or_else(|| column.clone()),
                                column_type: ColumnType::Cql(def.columns[i].cql_type),
                            });
                        }
                        (columns, out)
                    }
                };
                let bind = |name: &str, column_type: ColumnType| Bind {
                    keyspace: keyspace.clone(),
                    table: def.name.clone(),
                    name: name.to_string(),
                    column_type,
                };
                let mut pk_markers = vec![None; def.partition_key.len()];
                for r in &select.restrictions {
                    match r {
                        Restriction::Compare { lhs, op, term } => {
                            let (name, t) = match lhs {
                                Lhs::Column(c) => {
                                    let i = column_index(&def, c)?;
                                    if *op == CmpOp::Eq
                                        && let Some(k) =
                                            def.partition_key.iter().position(|p| p == c)
                                    {
                                        pk_markers[k] = marker_of(term);
                                    }
                                    (c.clone(), ColumnType::Cql(def.columns[i].cql_type))
                                }
                                Lhs::Token(cols) => {
                                    if cols != &def.partition_key {
                                        return Err(CqlError::invalid(format!(
                                            "token() takes the partition key of {name}: token({})",
                                            def.partition_key.join(", ")
                                        )));
                                    }
                                    (
                                        "partition key token".to_string(),
                                        ColumnType::Cql(CqlType::BigInt),
                                    )
                                }
                            };
                            if let Some(m) = marker_of(term) {
                                binds[m] = Some(bind(&name, t));
                            }
                        }
                        Restriction::In { column, terms } => {
                            let i = column_index(&def, column)?;
                            for t in terms {
                                if let Some(m) = marker_of(t) {
                                    binds[m] = Some(bind(
                                        column,
                                        ColumnType::Cql(def.columns[i].cql_type),
                                    ));
                                }
                            }
                        }
                        Restriction::InMarker { column, marker } => {
                            let i = column_index(&def, column)?;
                            binds[*marker] = Some(bind(
                                column,
                                ColumnType::List(Box::new(ColumnType::Cql(
                                    def.columns[i].cql_type,
                                ))),
                            ));
                        }
                    }
                }
                if let Some(Term::Marker(m)) = &select.limit {
                    binds[*m] = Some(bind("[limit]", ColumnType::Cql(CqlType::Int)));
                }
                if pk_markers.iter().all(Option::is_some) {
                    pk_indexes = pk_markers.into_iter().flatten().map(|m| m as u16).collect();
                }
                let names = (keyspace.clone(), def.name.clone());
                (
                    Kind::Select {
                        select,
                        def,
                        columns,
                        out,
                    },
                    names,
                )
            }
        }
        Cql::Insert(insert) => {
            let (def, pk) = compile_insert(shared, &insert, session, &mut binds)?;
            pk_indexes = pk;
            let names = (def.keyspace.clone(), def.name.clone());
            (Kind::Insert(vec![(insert, def)]), names)
        }
        Cql::Batch(inserts) => {
            let mut compiled = Vec::new();
            for insert in inserts {
                let (def, _) = compile_insert(shared, &insert, session, &mut binds)?;
                compiled.push((insert, def));
            }
            let names = compiled
                .first()
                .map(|(_, d)| (d.keyspace.clone(), d.name.clone()))
                .unwrap_or_default();
            (Kind::Insert(compiled), names)
        }
        Cql::Use(keyspace) => {
            if !system::is_system_keyspace(&keyspace) {
                shared.store.keyspace(&keyspace)?;
            }
            (Kind::Use(keyspace), Default::default())
        }
        Cql::Other => {
            let statement = parse_statement_in(text, session)
                .map_err(|e| CqlError::from(quarry_store::Error::Definition(e)))?;
            match &statement {
                Statement::CreateKeyspace { .. }
                | Statement::DropKeyspace { .. }
                | Statement::CreateTable { .. }
                | Statement::DropTable { .. } => {}
                Statement::Sql(_) => {
                    return Err(CqlError::new(
                        code::SYNTAX,
                        format!(
                            "Quarry's CQL server does not serve this statement: {}; \
                             run queries with quarry sql",
                            text.trim()
                        ),
                    ));
                }
                _ => {
                    return Err(CqlError::invalid(
                        "this statement is not served over CQL; run it with quarry sql",
                    ));
                }
            }
            (Kind::Ddl(Box::new(statement)), Default::default())
        }
    };
    let binds = binds
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.ok_or_else(|| {
                CqlError::invalid(format!("bind marker {} has no place to bind", i + 1))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Prepared {
        id,
        kind,
        binds,
        pk_indexes,
        table,
    })
}

fn marker_of(term: &Term) -> Option<usize> {
    match term {
        Term::Marker(m) => Some(*m),
        Term::Literal(_) => None,
    }
}

fn system_bind(table: &SystemTable, column: &str, list: bool) -> Result<Bind, CqlError> {
    let (_, t) = table
        .columns
        .iter()
        .find(|(c, _)| *c == column)
        .ok_or_else(|| CqlError::invalid(format!("Undefined column name {column}")))?;
    Ok(Bind {
        keyspace: table.keyspace.into(),
        table: table.name.into(),
        name: column.into(),
        column_type: if list {
            ColumnType::List(Box::new(t.clone()))
        } else {
            t.clone()
        },
    })
}

fn column_index(def: &TableDef, column: &str) -> Result<usize, CqlError> {
    def.columns
        .iter()
        .position(|c| c.name == column)
        .ok_or_else(|| {
            CqlError::invalid(format!(
                "Undefined column name {column} in table {}.{} (columns: {})",
                def.keyspace,
                def.name,
                def.column_names().join(", ")
            ))
        })
}

fn compile_insert(
    shared: &Shared,
    insert: &Insert,
    session: Option<&str>,
    binds: &mut [Option<Bind>],
) -> Result<(TableDef, Vec<u16>), CqlError> {
    let keyspace = resolve_keyspace(&insert.keyspace, session)?;
    if system::is_system_keyspace(&keyspace) {
        return Err(CqlError::new(
            code::UNAUTHORIZED,
            format!("{keyspace} tables are read-only"),
        ));
    }
    let def = shared
        .store
        .table(&TableName::new(&keyspace, &insert.table))?;
    for c in &insert.columns {
        column_index(&def, c)?;
    }
    let missing: Vec<&str> = def
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !insert.columns.iter().any(|i| i == c))
        .collect();
    if !missing.is_empty() {
        return Err(CqlError::invalid(format!(
            "INSERT into {keyspace}.{} must give every column: Quarry's store replaces whole \
             rows, so a missing column would lose its value; missing: {}",
            def.name,
            missing.join(", ")
        )));
    }
    let mut pk = Vec::new();
    for key in &def.partition_key {
        let i = insert.columns.iter().position(|c| c == key).unwrap_or(0);
        if let Term::Marker(m) = insert.values[i] {
            pk.push(m as u16);
        }
    }
    if pk.len() != def.partition_key.len() {
        pk.clear();
    }
    for (column, term) in insert.columns.iter().zip(&insert.values) {
        if let Term::Marker(m) = term {
            let t = def.columns[column_index(&def, column)?].cql_type;
            binds[*m] = Some(Bind {
                keyspace: keyspace.clone(),
                table: def.name.clone(),
                name: column.clone(),
                column_type: ColumnType::Cql(t),
            });
        }
    }
    Ok((def, pk))
}

fn write_bind_metadata(b: &mut Body, p: &Prepared) {
    let global = !p.table.0.is_empty();
    b.int(if global { 0x0001 } else { 0 });
    b.int(p.binds.len() as i32);
    b.int(p.pk_indexes.len() as i32);
    for i in &p.pk_indexes {
        b.short(*i);
    }
    if global {
        b.string(&p.table.0).string(&p.table.1);
    }
    for bind in &p.binds {
        if !global {
            b.string(&bind.keyspace).string(&bind.table);
        }
        b.string(&bind.name);
        bind.column_type.write(b);
    }
}

/// Rows metadata. `None` columns: a statement without results (flag NO_METADATA, no columns).
fn write_result_metadata(
    b: &mut Body,
    columns: Option<Vec<OutColumn>>,
    skip: bool,
    paging_state: Option<&[u8]>,
) {
    write_rows_metadata(b, ("", ""), columns.as_deref(), skip, paging_state);
}

fn write_rows_metadata(
    b: &mut Body,
    table: (&str, &str),
    columns: Option<&[OutColumn]>,
    skip: bool,
    paging_state: Option<&[u8]>,
) {
    let Some(columns) = columns else {
        b.int(0x0004).int(0);
        return;
    };
    let mut flags = 0;
    let global = !skip && !table.0.is_empty();
    if global {
        flags |= 0x0001;
    }
    if paging_state.is_some() {
        flags |= 0x0002;
    }
    if skip {
        flags |= 0x0004;
    }
    b.int(flags).int(columns.len() as i32);
    if let Some(state) = paging_state {
        b.bytes(Some(state));
    }
    if skip {
        return;
    }
    if global {
        b.string(table.0).string(table.1);
    }
    for c in columns {
        if !global {
            b.string(table.0).string(table.1);
        }
        b.string(&c.name);
        c.column_type.write(b);
    }
}

/// The bound value of marker `m`, checked against its type.
fn bound<'v>(values: &'v [Value], p: &Prepared, m: usize) -> Result<&'v Value, CqlError> {
    let v = values.get(m).ok_or_else(|| {
        CqlError::invalid(format!(
            "there were {} markers (?) in the statement but {} values were bound",
            p.binds.len(),
            values.len()
        ))
    })?;
    if let (Value::Set(cell), ColumnType::Cql(t)) = (v, &p.binds[m].column_type) {
        check_cell(cell, *t).map_err(|e| {
            CqlError::invalid(format!("the value bound to {} {e}", p.binds[m].name))
        })?;
    }
    Ok(v)
}

/// The serialized value of a term for a column of type `t`; `None` is null.
fn term_cell(
    term: &Term,
    t: CqlType,
    values: &[Value],
    p: &Prepared,
    column: &str,
) -> Result<Option<Vec<u8>>, CqlError> {
    match term {
        Term::Literal(l) => {
            literal_cell(l, t).map_err(|e| CqlError::invalid(format!("column {column}: {e}")))
        }
        Term::Marker(m) => match bound(values, p, *m)? {
            Value::Set(cell) => Ok(Some(cell.clone())),
            Value::Null => Ok(None),
            Value::NotSet => Err(CqlError::invalid(format!(
                "the value for {column} is unset; Quarry's store writes whole rows, bind a value \
                 or null"
            ))),
        },
    }
}

async fn execute(
    shared: &Shared,
    node: usize,
    connection: &Connection,
    p: &Prepared,
    params: QueryParameters,
) -> Response {
    if params.names.is_some() {
        return Err(CqlError::invalid(
            "values bound by name are not supported; bind them in order",
        ));
    }
    match &p.kind {
        Kind::Use(keyspace) => {
            *connection.keyspace.lock().expect("keyspace lock") = Some(keyspace.clone());
            let mut b = Body::new();
            b.int(3).string(keyspace);
            Ok((opcode::RESULT, b.0))
        }
        Kind::Ddl(statement) => {
            let response = execute_ddl(shared, statement).await?;
            // A schema change is pushed to every connection registered for it, as a
            // Cassandra node does, so drivers read the new schema at once.
            if let Some(change) = schema_change_of(&response) {
                let event = event_frame(change);
                shared
                    .schema_listeners
                    .lock()
                    .expect("listener lock")
                    .retain(|tx| {
                        !matches!(
                            tx.try_send(event.clone()),
                            Err(mpsc::error::TrySendError::Closed(_))
                        )
                    });
            }
            Ok(response)
        }
        Kind::Insert(inserts) => {
            let rows: Vec<(&Insert, &TableDef, &[Value])> = inserts
                .iter()
                .map(|(i, d)| (i, d, params.values.as_slice()))
                .collect();
            write_rows(shared, node, p, &rows).await
        }
        Kind::System {
            select,
            table,
            columns,
        } => select_system(shared, node, p, select, table, columns, &params),
        Kind::Select { .. } => select_table(shared, node, p, params).await,
    }
}

/// The change of a SchemaChange result (what follows its kind), if `response` is one.
fn schema_change_of(response: &(u8, Vec<u8>)) -> Option<&[u8]> {
    let (op, body) = response;
    (*op == opcode::RESULT && body.get(..4) == Some(&5i32.to_be_bytes()[..])).then(|| &body[4..])
}

/// An EVENT frame (stream -1) for a schema change.
fn event_frame(change: &[u8]) -> Vec<u8> {
    let mut body = Body::new();
    body.string("SCHEMA_CHANGE");
    body.0.extend_from_slice(change);
    wire::response_frame(wire::VERSION, -1, opcode::EVENT, &body.0)
}

async fn execute_ddl(shared: &Shared, statement: &Statement) -> Response {
    let store = &shared.store;
    let change = |change: &str, target: &str, keyspace: &str, table: Option<&str>| {
        let mut b = Body::new();
        b.int(5).string(change).string(target).string(keyspace);
        if let Some(t) = table {
            b.string(t);
        }
        (opcode::RESULT, b.0)
    };
    let void = (opcode::RESULT, 1i32.to_be_bytes().to_vec());
    let already = |e: quarry_store::Error, ks: &str, table: &str| {
        let mut err = CqlError::from(e);
        if err.code == code::ALREADY_EXISTS {
            let mut extra = Body::new();
            extra.string(ks).string(table);
            err.extra = extra.0;
        }
        err
    };
    Ok(match statement {
        Statement::CreateKeyspace { def, if_not_exists } => {
            let name = def.name.clone();
            match store.create_keyspace(def.clone(), *if_not_exists).await {
                Ok(true) => change("CREATED", "KEYSPACE", &name, None),
                Ok(false) => void,
                Err(e) => return Err(already(e, &name, "")),
            }
        }
        Statement::DropKeyspace { name, if_exists } => {
            if store.drop_keyspace(name, *if_exists).await? {
                change("DROPPED", "KEYSPACE", name, None)
            } else {
                void
            }
        }
        Statement::CreateTable { def, if_not_exists } => {
            let (ks, t) = (def.keyspace.clone(), def.name.clone());
            match store.create_table(def.clone(), *if_not_exists).await {
                Ok(true) => change("CREATED", "TABLE", &ks, Some(&t)),
                Ok(false) => void,
                Err(e) => return Err(already(e, &ks, &t)),
            }
        }
        Statement::DropTable { name, if_exists } => {
            if store.drop_table(name, *if_exists).await? {
                change("DROPPED", "TABLE", &name.keyspace, Some(&name.table))
            } else {
                void
            }
        }
        _ => return Err(CqlError::invalid("this statement is not served over CQL")),
    })
}

async fn execute_batch(
    shared: &Shared,
    node: usize,
    connection: &Connection,
    batch: BatchRequest,
) -> Response {
    if batch.kind == 2 {
        return Err(CqlError::invalid(
            "counter batches are not supported (Quarry has no counters)",
        ));
    }
    let keyspace = connection.keyspace.lock().expect("keyspace lock").clone();
    let mut statements = Vec::with_capacity(batch.statements.len());
    for (statement, values) in &batch.statements {
        let prepared = match statement {
            BatchStatement::Query(text) => Arc::new(compile(shared, text, keyspace.as_deref())?),
            BatchStatement::Prepared(id) => lookup_prepared(shared, id)?,
        };
        if !matches!(prepared.kind, Kind::Insert(_)) {
            return Err(CqlError::invalid(
                "a batch holds INSERT statements only (Quarry's store has no UPDATE or DELETE)",
            ));
        }
        statements.push((prepared, values.as_slice()));
    }
    // All rows of the batch, grouped by table, are written together: one write per table.
    let mut rows: Vec<(&Insert, &TableDef, &[Value])> = Vec::new();
    for (prepared, values) in &statements {
        if let Kind::Insert(inserts) = &prepared.kind {
            rows.extend(inserts.iter().map(|(i, d)| (i, d, *values)));
        }
    }
    // Each row's markers are described by the statement it came from.
    let mut owner: Vec<&Prepared> = Vec::with_capacity(rows.len());
    for (prepared, _) in &statements {
        if let Kind::Insert(inserts) = &prepared.kind {
            owner.extend(std::iter::repeat_n(prepared.as_ref(), inserts.len()));
        }
    }
    write_grouped(shared, node, &rows, &owner).await
}

async fn write_rows(
    shared: &Shared,
    node: usize,
    p: &Prepared,
    rows: &[(&Insert, &TableDef, &[Value])],
) -> Response {
    let owner: Vec<&Prepared> = vec![p; rows.len()];
    write_grouped(shared, node, rows, &owner).await
}

/// Writes rows grouped by table, one all-or-nothing store write per table.
async fn write_grouped(
    shared: &Shared,
    node: usize,
    rows: &[(&Insert, &TableDef, &[Value])],
    owner: &[&Prepared],
) -> Response {
    let mut by_table: Vec<(&TableDef, Vec<usize>)> = Vec::new();
    for (i, (_, def, _)) in rows.iter().enumerate() {
        match by_table
            .iter_mut()
            .find(|(d, _)| d.table_name() == def.table_name())
        {
            Some((_, list)) => list.push(i),
            None => by_table.push((def, vec![i])),
        }
    }
    let mut batches = Vec::new();
    for (def, indices) in &by_table {
        let mut decoders: Vec<CellDecoder> = def
            .columns
            .iter()
            .map(|c| CellDecoder::new(c.cql_type, indices.len()))
            .collect();
        for &i in indices {
            let (insert, _, values) = rows[i];
            for (c, column) in def.columns.iter().enumerate() {
                let at = insert
                    .columns
                    .iter()
                    .position(|n| n == &column.name)
                    .unwrap_or(0);
                let cell = term_cell(
                    &insert.values[at],
                    column.cql_type,
                    values,
                    owner[i],
                    &column.name,
                )?;
                decoders[c]
                    .push(cell.as_deref())
                    .map_err(|e| CqlError::invalid(format!("column {}: {e}", column.name)))?;
            }
        }
        let columns: Vec<ArrayRef> = decoders.iter_mut().map(CellDecoder::finish).collect();
        let batch = RecordBatch::try_new(def.arrow_schema(), columns)
            .map_err(|e| CqlError::invalid(e.to_string()))?;
        batches.push((def.table_name(), batch));
    }
    // Check keys (and count locality) before anything is written.
    let mut local = 0u64;
    let mut total = 0u64;
    for ((name, batch), (def, _)) in batches.iter().zip(&by_table) {
        let key: Vec<KeyColumn<'_>> = def
            .partition_key_indices()
            .into_iter()
            .map(|i| KeyColumn {
                name: &def.columns[i].name,
                cql_type: def.columns[i].cql_type,
                values: batch.column(i),
            })
            .collect();
        let row_tokens = tokens(&key, batch.num_rows())
            .map_err(|e| CqlError::invalid(format!("{name}: {e}")))?;
        for t in row_tokens.values() {
            total += 1;
            if shared.ring.replicas(*t).contains(&node) {
                local += 1;
            }
        }
    }
    for (name, batch) in batches {
        shared.store.write(&name, vec![batch]).await?;
    }
    let c = &shared.counters[node];
    c.local_writes.fetch_add(local, Ordering::Relaxed);
    c.forwarded_writes
        .fetch_add(total - local, Ordering::Relaxed);
    Ok((opcode::RESULT, 1i32.to_be_bytes().to_vec()))
}

fn select_system(
    shared: &Shared,
    node: usize,
    p: &Prepared,
    select: &Select,
    _compiled: &SystemTable,
    columns: &[usize],
    params: &QueryParameters,
) -> Response {
    // Built again for the node asked: system.local and system.peers differ per node.
    let table = system::table(
        &select.keyspace.clone().unwrap_or_default(),
        &select.table,
        node,
        &shared.ring,
        shared.store.as_ref(),
        &shared.cluster_name,
        &shared.stats(node),
    )
    .ok_or_else(|| CqlError::invalid("unconfigured table"))?;
    let mut rows: Vec<&Vec<Option<Vec<u8>>>> = table.rows.iter().collect();
    for r in &select.restrictions {
        let (column, wanted): (&str, Vec<Option<Vec<u8>>>) = match r {
            Restriction::Compare {
                lhs: Lhs::Column(c),
                term,
                ..
            } => (c, vec![system_term(&table, c, term, &params.values, p)?]),
            Restriction::In { column, terms } => (
                column,
                terms
                    .iter()
                    .map(|t| system_term(&table, column, t, &params.values, p))
                    .collect::<Result<_, _>>()?,
            ),
            Restriction::InMarker { column, marker } => match bound(&params.values, p, *marker)? {
                Value::Set(list) => (
                    column,
                    collection_elements(list).map_err(CqlError::invalid)?,
                ),
                _ => (column, Vec::new()),
            },
            Restriction::Compare { .. } => {
                return Err(CqlError::invalid(
                    "system tables are filtered by equality only",
                ));
            }
        };
        let i = table
            .columns
            .iter()
            .position(|(c, _)| *c == column)
            .ok_or_else(|| CqlError::invalid(format!("Undefined column name {column}")))?;
        rows.retain(|row| wanted.contains(&row[i]));
    }
    if let Some(limit) = &select.limit {
        let n = limit_value(limit, &params.values, p)?;
        rows.truncate(n);
    }
    let out: Vec<OutColumn> = p.result_columns().unwrap_or_default();
    let mut b = Body::new();
    b.int(2);
    write_rows_metadata(
        &mut b,
        (table.keyspace, table.name),
        Some(&out),
        params.skip_metadata,
        None,
    );
    b.int(rows.len() as i32);
    for row in rows {
        for &c in columns {
            b.bytes(row[c].as_deref());
        }
    }
    Ok((opcode::RESULT, b.0))
}

fn system_term(
    table: &SystemTable,
    column: &str,
    term: &Term,
    values: &[Value],
    p: &Prepared,
) -> Result<Option<Vec<u8>>, CqlError> {
    match term {
        Term::Marker(m) => Ok(match bound(values, p, *m)? {
            Value::Set(cell) => Some(cell.clone()),
            _ => None,
        }),
        Term::Literal(l) => {
            let t = match table.columns.iter().find(|(c, _)| *c == column) {
                Some((_, ColumnType::Cql(t))) => *t,
                _ => CqlType::Text,
            };
            literal_cell(l, t).map_err(CqlError::invalid)
        }
    }
}

fn limit_value(term: &Term, values: &[Value], p: &Prepared) -> Result<usize, CqlError> {
    let n: i64 = match term {
        Term::Literal(Literal::Num(n)) => n.parse().unwrap_or(-1),
        Term::Marker(m) => match bound(values, p, *m)? {
            Value::Set(cell) if cell.len() == 4 => {
                i64::from(i32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
            }
            _ => -1,
        },
        _ => -1,
    };
    usize::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| CqlError::invalid("LIMIT must be a strictly positive integer"))
}

/// An exact filter on scanned rows.
#[derive(Debug, Clone)]
enum RowFilter {
    Compare {
        column: usize,
        op: CmpOp,
        value: ArrayRef,
    },
    In {
        column: usize,
        values: Vec<ArrayRef>,
    },
    Token {
        range: TokenRange,
    },
}

/// An open paged scan.
struct Cursor {
    stream: BatchStream,
    pending: Option<RecordBatch>,
    remaining: Option<usize>,
    out: Vec<OutColumn>,
    table: (String, String),
}

async fn select_table(
    shared: &Shared,
    node: usize,
    p: &Prepared,
    params: QueryParameters,
) -> Response {
    let Kind::Select {
        select,
        def,
        columns,
        out,
    } = &p.kind
    else {
        return Err(CqlError::new(code::SERVER, "not a select"));
    };
    let mut cursor = match &params.paging_state {
        Some(state) => take_cursor(shared, state)?,
        None => open_cursor(shared, node, p, select, def, columns, out, &params.values).await?,
    };
    let count = matches!(select.selection, Selection::Count);
    let page = if count {
        usize::MAX
    } else {
        params.page_size.map(|n| n as usize).unwrap_or(usize::MAX)
    };
    let mut batches = Vec::new();
    let mut rows = 0usize;
    let mut counted = 0u64;
    let mut done = false;
    while rows < page {
        if cursor.remaining == Some(0) {
            done = true;
            break;
        }
        let batch = match cursor.pending.take() {
            Some(b) => b,
            None => match cursor.stream.next().await {
                Some(b) => b?,
                None => {
                    done = true;
                    break;
                }
            },
        };
        let mut batch = batch;
        if let Some(remaining) = cursor.remaining
            && batch.num_rows() > remaining
        {
            batch = batch.slice(0, remaining);
        }
        let want = (page - rows).min(batch.num_rows());
        if want < batch.num_rows() {
            cursor.pending = Some(batch.slice(want, batch.num_rows() - want));
        }
        if let Some(remaining) = cursor.remaining.as_mut() {
            *remaining -= want;
        }
        rows += want;
        if count {
            counted += want as u64;
        } else if want > 0 {
            batches.push(batch.slice(0, want));
        }
    }
    if !done && cursor.pending.is_none() && cursor.remaining != Some(0) {
        // Look one batch ahead, so the last page does not promise more.
        match cursor.stream.next().await {
            Some(b) => cursor.pending = Some(b?),
            None => done = true,
        }
    }
    if cursor.remaining == Some(0) {
        done = true;
    }
    shared.counters[node]
        .rows_read
        .fetch_add(rows as u64, Ordering::Relaxed);
    let mut b = Body::new();
    b.int(2);
    let table = cursor.table.clone();
    let out_columns = cursor.out.clone();
    let state = if done {
        None
    } else {
        Some(put_cursor(shared, cursor))
    };
    write_rows_metadata(
        &mut b,
        (&table.0, &table.1),
        Some(&out_columns),
        params.skip_metadata,
        state.as_deref(),
    );
    if count {
        b.int(1);
        b.bytes(Some(&(counted as i64).to_be_bytes()));
        return Ok((opcode::RESULT, b.0));
    }
    b.int(rows as i32);
    for batch in &batches {
        let encoders: Vec<CellEncoder> = out_columns
            .iter()
            .zip(batch.columns())
            .map(|(c, array)| match c.column_type {
                ColumnType::Cql(t) => CellEncoder::new(t, array),
                _ => Err("collections are not stored".into()),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| CqlError::new(code::SERVER, e))?;
        let mut cell = Vec::new();
        for row in 0..batch.num_rows() {
            for e in &encoders {
                if e.is_null(row) {
                    b.int(-1);
                } else {
                    cell.clear();
                    e.write(row, &mut cell)
                        .map_err(|e| CqlError::new(code::SERVER, e))?;
                    b.bytes(Some(&cell));
                }
            }
        }
    }
    Ok((opcode::RESULT, b.0))
}

fn put_cursor(shared: &Shared, cursor: Cursor) -> Vec<u8> {
    let id = shared.next_cursor.fetch_add(1, Ordering::Relaxed);
    let mut cursors = shared.cursors.lock().expect("cursor lock");
    let now = Instant::now();
    cursors.retain(|_, (at, _)| now.duration_since(*at) < CURSOR_IDLE);
    if cursors.len() >= MAX_CURSORS
        && let Some(oldest) = cursors
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(k, _)| *k)
    {
        cursors.remove(&oldest);
    }
    cursors.insert(id, (now, cursor));
    id.to_be_bytes().to_vec()
}

fn take_cursor(shared: &Shared, state: &[u8]) -> Result<Cursor, CqlError> {
    let id = <[u8; 8]>::try_from(state)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            CqlError::new(
                code::PROTOCOL,
                "this paging state was not made by this server",
            )
        })?;
    shared
        .cursors
        .lock()
        .expect("cursor lock")
        .remove(&id)
        .map(|(_, c)| c)
        .ok_or_else(|| {
            CqlError::invalid(format!(
                "the paging state has expired (pages are kept {} s between requests); run the \
                 query again",
                CURSOR_IDLE.as_secs()
            ))
        })
}

#[allow(clippy::too_many_arguments)]
async fn open_cursor(
    shared: &Shared,
    node: usize,
    p: &Prepared,
    select: &Select,
    def: &TableDef,
    columns: &[usize],
    out: &[OutColumn],
    values: &[Value],
) -> Result<Cursor, CqlError> {
    let mut filters = Vec::new();
    let mut predicates = Vec::new();
    let mut needed: Vec<usize> = columns.to_vec();
    let mut token_range = TokenRange::new(i64::MIN, i64::MAX);
    let mut pk_values: Vec<Option<Vec<u8>>> = vec![None; def.partition_key.len()];
    let one = |t: CqlType, cell: Option<Vec<u8>>, column: &str| -> Result<ArrayRef, CqlError> {
        let cell = cell.ok_or_else(|| {
            CqlError::invalid(format!(
                "Invalid null value in condition for column {column}"
            ))
        })?;
        let mut d = CellDecoder::new(t, 1);
        d.push(Some(&cell))
            .map_err(|e| CqlError::invalid(format!("column {column}: {e}")))?;
        Ok(d.finish())
    };
    for r in &select.restrictions {
        match r {
            Restriction::Compare {
                lhs: Lhs::Column(c),
                op,
                term,
            } => {
                let i = column_index(def, c)?;
                let t = def.columns[i].cql_type;
                let cell = term_cell(term, t, values, p, c)?;
                if *op == CmpOp::Eq
                    && let Some(k) = def.partition_key.iter().position(|k| k == c)
                {
                    pk_values[k] = cell.clone();
                }
                let value = one(t, cell, c)?;
                predicates.push(Predicate::Compare {
                    column: c.clone(),
                    op: *op,
                    value: value.clone(),
                });
                filters.push(RowFilter::Compare {
                    column: i,
                    op: *op,
                    value,
                });
                needed.push(i);
            }
            Restriction::Compare {
                lhs: Lhs::Token(_),
                op,
                term,
            } => {
                let cell =
                    term_cell(term, CqlType::BigInt, values, p, "token")?.ok_or_else(|| {
                        CqlError::invalid("Invalid null value for the partition key token")
                    })?;
                let v = i64::from_be_bytes(
                    <[u8; 8]>::try_from(cell.as_slice())
                        .map_err(|_| CqlError::invalid("a token is a bigint"))?,
                );
                let Predicate::TokenRange(range) = Predicate::token_compare(*op, v) else {
                    unreachable!("token_compare makes a token range")
                };
                token_range = token_range.intersect(&range);
                needed.extend(def.partition_key_indices());
            }
            Restriction::In { column, terms } => {
                let i = column_index(def, column)?;
                let t = def.columns[i].cql_type;
                let list = terms
                    .iter()
                    .map(|term| one(t, term_cell(term, t, values, p, column)?, column))
                    .collect::<Result<Vec<_>, _>>()?;
                filters.push(RowFilter::In {
                    column: i,
                    values: list,
                });
                needed.push(i);
            }
            Restriction::InMarker { column, marker } => {
                let i = column_index(def, column)?;
                let t = def.columns[i].cql_type;
                let list = match bound(values, p, *marker)? {
                    Value::Set(cell) => collection_elements(cell).map_err(CqlError::invalid)?,
                    _ => {
                        return Err(CqlError::invalid(format!(
                            "IN ? on {column} was bound to null"
                        )));
                    }
                };
                let list = list
                    .into_iter()
                    .map(|cell| one(t, cell, column))
                    .collect::<Result<Vec<_>, _>>()?;
                filters.push(RowFilter::In {
                    column: i,
                    values: list,
                });
                needed.push(i);
            }
        }
    }
    if token_range != TokenRange::new(i64::MIN, i64::MAX) {
        predicates.push(Predicate::TokenRange(token_range));
        filters.push(RowFilter::Token { range: token_range });
    }
    // Locality: a token range, or a whole partition key, this node replicates.
    let c = &shared.counters[node];
    let local = if pk_values.iter().all(Option::is_some) {
        let components: Vec<Vec<u8>> = pk_values.into_iter().flatten().collect();
        let token = quarry_core::partition_key::token_of_components(&components);
        Some(shared.ring.replicas(token).contains(&node))
    } else if token_range == TokenRange::FULL {
        None
    } else {
        Some(match token_range.bounds_inclusive() {
            Some((first, last)) => shared.ring.holds(node, first.saturating_sub(1), last),
            None => true,
        })
    };
    match local {
        Some(true) => c.local_scans.fetch_add(1, Ordering::Relaxed),
        Some(false) => c.forwarded_scans.fetch_add(1, Ordering::Relaxed),
        None => c.full_scans.fetch_add(1, Ordering::Relaxed),
    };
    needed.sort_unstable();
    needed.dedup();
    let request = ScanRequest {
        table: def.table_name(),
        projection: Some(needed.clone()),
        filters: predicates,
        limit: None,
        shards: None,
    };
    let plan = shared.store.plan_scan(&request)?;
    let position = |i: usize| needed.iter().position(|n| *n == i).unwrap_or(0);
    let filters: Vec<RowFilter> = filters
        .into_iter()
        .map(|f| match f {
            RowFilter::Compare { column, op, value } => RowFilter::Compare {
                column: position(column),
                op,
                value,
            },
            RowFilter::In { column, values } => RowFilter::In {
                column: position(column),
                values,
            },
            token => token,
        })
        .collect();
    let key: Vec<(usize, String, CqlType)> = def
        .partition_key_indices()
        .into_iter()
        .map(|i| {
            (
                position(i),
                def.columns[i].name.clone(),
                def.columns[i].cql_type,
            )
        })
        .collect();
    let keep: Vec<usize> = columns.iter().map(|&i| position(i)).collect();
    let splits = plan.splits;
    let stream = futures::stream::iter(splits)
        .map(|split| split.source.open())
        .try_flatten()
        .map(move |batch| {
            let batch = batch?;
            let batch = apply_filters(&batch, &filters, &key)?;
            Ok(batch.project(&keep)?)
        })
        .try_filter(|b| futures::future::ready(b.num_rows() > 0));
    let remaining = match &select.limit {
        Some(l) => Some(limit_value(l, values, p)?),
        None => None,
    };
    Ok(Cursor {
        stream: Box::pin(stream),
        pending: None,
        remaining,
        out: out.to_vec(),
        table: (def.keyspace.clone(), def.name.clone()),
    })
}

fn apply_filters(
    batch: &RecordBatch,
    filters: &[RowFilter],
    key: &[(usize, String, CqlType)],
) -> quarry_store::Result<RecordBatch> {
    if filters.is_empty() {
        return Ok(batch.clone());
    }
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        let m = match f {
            RowFilter::Compare { column, op, value } => compare(batch.column(*column), *op, value)?,
            RowFilter::In { column, values } => {
                let mut any: Option<BooleanArray> = None;
                for v in values {
                    let eq = compare(batch.column(*column), CmpOp::Eq, v)?;
                    any = Some(match any {
                        Some(a) => or(&a, &eq)?,
                        None => eq,
                    });
                }
                any.unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]))
            }
            RowFilter::Token { range } => {
                let columns: Vec<KeyColumn<'_>> = key
                    .iter()
                    .map(|(i, name, t)| KeyColumn {
                        name,
                        cql_type: *t,
                        values: batch.column(*i),
                    })
                    .collect();
                let row_tokens = tokens(&columns, batch.num_rows())?;
                row_tokens
                    .values()
                    .iter()
                    .map(|t| Some(range.contains(*t)))
                    .collect()
            }
        };
        mask = Some(match mask {
            Some(prev) => and(&prev, &m)?,
            None => m,
        });
    }
    match mask {
        Some(m) => Ok(filter_record_batch(batch, &m)?),
        None => Ok(batch.clone()),
    }
}

fn compare(column: &ArrayRef, op: CmpOp, value: &ArrayRef) -> quarry_store::Result<BooleanArray> {
    let value = if value.data_type() == column.data_type() {
        value.clone()
    } else {
        arrow::compute::cast(value, column.data_type())?
    };
    let scalar = arrow::array::Scalar::new(value);
    let column = column.as_ref();
    Ok(match op {
        CmpOp::Eq => cmp::eq(&column, &scalar)?,
        CmpOp::Lt => cmp::lt(&column, &scalar)?,
        CmpOp::LtEq => cmp::lt_eq(&column, &scalar)?,
        CmpOp::Gt => cmp::gt(&column, &scalar)?,
        CmpOp::GtEq => cmp::gt_eq(&column, &scalar)?,
    })
}
