//! ScyllaDB or Cassandra as a Quarry [`Store`], through the `scylla` driver.
//!
//! ```text
//!   catalog   the cluster's schema ─▶ KeyspaceDef / TableDef; Quarry DDL ─▶ CQL DDL
//!   scan      shards ─▶ token ranges cut at ring tokens ─▶ paged range SELECTs on a replica
//!   write     rows ─▶ grouped by primary replica ─▶ unlogged batches of prepared INSERTs
//!   errors    cluster errors classified once: retried, the user's, or external
//! ```
//!
//! Quarry cuts each keyspace's ring into `shards` equal ranges, as on the embedded store, so token
//! pruning, shard sets and scheduling work unchanged; the ring's owners decide which node serves
//! each piece. CQL has no snapshots: a scan reads what the replicas hold as each page is read, and
//! a write is not all-or-nothing (see [`write`]). Reads use LOCAL_ONE and writes LOCAL_QUORUM
//! unless configured otherwise; both can be throttled in rows per second.

mod cache;
pub mod catalog;
pub mod errors;
pub mod overlay;
pub mod owners;
pub mod scan;
pub mod sizes;
pub mod tls;
pub mod write;

/// Consistency levels, as the driver names them.
pub use scylla::statement::Consistency;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use quarry_core::ids::NodeId;
use quarry_core::placement::Placement;
use quarry_core::schema::{KeyspaceDef, TableDef, TableName, ViewDef};
use quarry_core::shard_map::ShardMap;
use quarry_store::names::Names;
use quarry_store::{Error, Failure, Result, ScanPlan, ScanRequest, Store, WriteSummary};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;

use crate::cache::TableCache;
use crate::overlay::{Kind, Overlay};
use crate::owners::Owners;

/// How to reach the cluster and how hard to use it.
#[derive(Debug, Clone)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Read and write in this datacenter only (and create keyspaces there).
    pub local_dc: Option<String>,
    /// The node this process sits beside (`ip:port`, as the ring names it): scans read a range
    /// from it first whenever it holds a replica.
    pub local_node: Option<String>,
    pub read_consistency: Consistency,
    pub write_consistency: Consistency,
    /// Rows per page of a scan.
    pub page_size: i32,
    /// Rows per unlogged batch, at most.
    pub batch_rows: usize,
    /// Bytes of values per unlogged batch, at most (a row larger than this goes alone). The
    /// default, 64 KiB, stays under ScyllaDB's warning threshold for batches (128 KiB) and far
    /// under the size at which it refuses them (1 MiB).
    pub batch_bytes: usize,
    /// Batches in flight per write.
    pub writes_in_flight: usize,
    /// Quarry's shards per keyspace (the unit of pruning and scheduling).
    pub shards: u32,
    /// Rows read per second by this process, at most (unlimited when `None`).
    pub read_rows_per_second: Option<u64>,
    /// Rows written per second by this process, at most.
    pub write_rows_per_second: Option<u64>,
    /// Seconds after which the cluster expires each row written (`USING TTL`), as Spark's
    /// connector's `output.ttl`: derived results that are only wanted for a while. `None` keeps
    /// rows until they are overwritten (or the table's `default_time_to_live`).
    pub write_ttl: Option<u32>,
    /// TLS to the nodes, when the cluster serves client encryption.
    pub tls: Option<tls::ScyllaTls>,
    /// Bytes a scan split reads, about, by the cluster's size estimates (Spark's connector
    /// calls it the split size): a small table is read in few splits, a large one in many.
    pub split_bytes: u64,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        ScyllaOptions {
            nodes: Vec::new(),
            user: None,
            password: None,
            local_dc: None,
            local_node: None,
            read_consistency: Consistency::LocalOne,
            write_consistency: Consistency::LocalQuorum,
            page_size: 5000,
            batch_rows: 100,
            batch_bytes: 64 * 1024,
            writes_in_flight: 8,
            shards: quarry_core::schema::DEFAULT_SHARDS,
            read_rows_per_second: None,
            tls: None,
            split_bytes: 64 << 20,
            write_rows_per_second: None,
            write_ttl: None,
        }
    }
}

/// A ScyllaDB/Cassandra cluster as a store.
#[derive(Debug, Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) session: Session,
    pub(crate) options: ScyllaOptions,
    prepared: tokio::sync::Mutex<HashMap<String, PreparedStatement>>,
    /// Quarry's catalog beyond CQL's schema (see [`overlay`]).
    overlay: std::sync::RwLock<Overlay>,
    pub(crate) read_throttle: Throttle,
    pub(crate) write_throttle: Throttle,
    /// Pages read from the node beside this process, and from other nodes.
    pub(crate) local_pages: std::sync::atomic::AtomicU64,
    pub(crate) remote_pages: std::sync::atomic::AtomicU64,
    /// The cluster state the overlay was last read against (its address), to notice schema
    /// changes other clients made.
    seen_state: std::sync::atomic::AtomicUsize,
    /// Tables' size estimates, for sizing scan splits.
    pub(crate) sizes: TableCache<sizes::TableSize>,
    /// Tablet maps of the tables of tablet keyspaces (see [`owners`]).
    pub(crate) tablets: TableCache<Arc<owners::TabletMap>>,
}

/// Where this process's scan pages came from (see [`ScyllaStore::read_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Pages read from the `local_node`.
    pub local_pages: u64,
    /// Pages read from another replica (no local node configured, or it does not hold the
    /// range, or it failed).
    pub remote_pages: u64,
}

impl ReadStats {
    /// The share of pages read locally, from 0 to 1 (1 when nothing was read).
    pub fn local_share(&self) -> f64 {
        let total = self.local_pages + self.remote_pages;
        if total == 0 {
            1.0
        } else {
            self.local_pages as f64 / total as f64
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("nodes", &self.options.nodes)
            .finish()
    }
}

impl ScyllaStore {
    /// Connects to the cluster and reads its ring and schema.
    pub async fn connect(options: ScyllaOptions) -> Result<ScyllaStore> {
        if options.nodes.is_empty() {
            return Err(Error::Cluster {
                message: "no ScyllaDB/Cassandra nodes given: pass --scylla-nodes HOST:PORT,... \
                          or set QUARRY_SCYLLA_NODES"
                    .into(),
                failure: Failure::USER,
            });
        }
        let mut builder = SessionBuilder::new()
            .known_nodes(&options.nodes)
            .connection_timeout(Duration::from_secs(5))
            // Schema changes other clients make are re-read on this tick (the driver batches
            // the cluster's SCHEMA_CHANGE events until it fires; its default is a minute).
            .cluster_metadata_refresh_interval(Duration::from_secs(1));
        if let (Some(user), Some(password)) = (&options.user, &options.password) {
            builder = builder.user(user, password);
        }
        if let Some(tls) = &options.tls {
            builder = builder.tls_context(Some(tls::client_config(tls)?));
        }
        let session = builder.build().await.map_err(|e| Error::Cluster {
            message: format!(
                "connecting to the cluster at {}: {e}",
                options.nodes.join(", ")
            ),
            failure: Failure::TRANSIENT,
        })?;
        let seen = Arc::as_ptr(&session.get_cluster_state()) as usize;
        let overlay = Overlay::load(&session).await?;
        let store = ScyllaStore {
            inner: Arc::new(Inner {
                session,
                read_throttle: Throttle::new(options.read_rows_per_second),
                write_throttle: Throttle::new(options.write_rows_per_second),
                options,
                prepared: tokio::sync::Mutex::new(HashMap::new()),
                overlay: std::sync::RwLock::new(overlay),
                local_pages: Default::default(),
                remote_pages: Default::default(),
                seen_state: std::sync::atomic::AtomicUsize::new(seen),
                sizes: TableCache::new("size estimates", sizes::FRESH_FOR),
                tablets: TableCache::new("tablets", owners::TABLETS_FRESH_FOR),
            }),
        };
        store.inner.load_tablets().await?;
        Ok(store)
    }

    /// Reads Quarry's catalog again, in the background, when the driver's view of the cluster
    /// changed since it was last read (another client's DDL): the declared definitions of
    /// tables made elsewhere follow a moment after the tables themselves.
    fn notice_schema_changes(&self) {
        let state = self.inner.session.get_cluster_state();
        let seen = Arc::as_ptr(&state) as usize;
        let previous = self
            .inner
            .seen_state
            .swap(seen, std::sync::atomic::Ordering::Relaxed);
        if previous == seen {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            runtime.spawn(async move {
                if let Err(e) = inner.reload().await {
                    tracing::warn!("re-reading Quarry's catalog: {e}");
                }
            });
        }
    }

    /// Where the scan pages this process read came from.
    pub fn read_stats(&self) -> ReadStats {
        use std::sync::atomic::Ordering::Relaxed;
        ReadStats {
            local_pages: self.inner.local_pages.load(Relaxed),
            remote_pages: self.inner.remote_pages.load(Relaxed),
        }
    }

    /// Reads `table`'s size estimate now (scans otherwise use one read in the background at
    /// most a minute ago), and returns it.
    pub async fn refresh_size_estimate(
        &self,
        table: &TableName,
    ) -> Result<Option<sizes::TableSize>> {
        let _ = self.inner.sizes.get(table);
        let size = sizes::read(&self.inner.session, table).await;
        let result = size.as_ref().map(|s| *s).map_err(|e| Error::Cluster {
            message: e.to_string(),
            failure: Failure::EXTERNAL,
        });
        self.inner.sizes.store(table, size);
        result
    }

    /// The driver session, for callers that need the ring (locality) or raw CQL.
    pub fn session(&self) -> &Session {
        &self.inner.session
    }
}

impl Inner {
    /// A prepared statement, prepared once per process.
    pub(crate) async fn prepare(&self, text: &str) -> Result<PreparedStatement> {
        let mut cache = self.prepared.lock().await;
        if let Some(p) = cache.get(text) {
            return Ok(p.clone());
        }
        let prepared = self
            .session
            .prepare(text)
            .await
            .map_err(|e| errors::prepare(text, e))?;
        cache.insert(text.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// The last size estimate of `table`; a missing or stale one is read again in the
    /// background, for later scans.
    pub(crate) fn table_size(self: &Arc<Self>, table: &TableName) -> Option<sizes::TableSize> {
        self.cached(
            table,
            |inner| &inner.sizes,
            |inner, table| async move { sizes::read(&inner.session, &table).await }.boxed(),
        )
    }

    /// The last tablet map read of `table`; a missing or stale one is read again in the
    /// background, for later plans.
    pub(crate) fn tablet_map(
        self: &Arc<Self>,
        table: &TableName,
    ) -> Option<Arc<owners::TabletMap>> {
        self.cached(
            table,
            |inner| &inner.tablets,
            |inner, table| {
                async move { owners::read_tablets(&inner.session, &table).await }.boxed()
            },
        )
    }

    /// Reads the tablet maps of every table, in one query, when a keyspace is tablet-based (so
    /// that the first plans know where tablets are); tables left out have none.
    async fn load_tablets(&self) -> Result<()> {
        let state = self.session.get_cluster_state();
        let maps = if state.keyspaces_iter().any(|(_, ks)| ks.tablet_based) {
            owners::read_maps(&self.session, None).await?
        } else {
            HashMap::new()
        };
        self.tablets.replace_all(maps);
        Ok(())
    }

    /// The last value `cache` holds of `table`; a missing or stale one is read again with
    /// `read` in the background.
    fn cached<T: Clone + Send + 'static>(
        self: &Arc<Self>,
        table: &TableName,
        cache: fn(&Inner) -> &TableCache<T>,
        read: ReadFn<T>,
    ) -> Option<T> {
        let (value, stale) = cache(self).get(table);
        if stale {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let inner = self.clone();
                    let table = table.clone();
                    runtime.spawn(async move {
                        let value = read(inner.clone(), table.clone()).await;
                        cache(&inner).store(&table, value);
                    });
                }
                Err(_) => cache(self).store(
                    table,
                    Err(Error::Internal("no runtime to read the cluster on".into())),
                ),
            }
        }
        value
    }

    fn overlay(&self) -> std::sync::RwLockReadGuard<'_, Overlay> {
        self.overlay.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keyspace_def(&self, name: &str) -> Result<KeyspaceDef> {
        let state = self.session.get_cluster_state();
        match state.get_keyspace(name) {
            Some(ks) if !catalog::is_system_keyspace(name) => {
                let mut def = catalog::keyspace_def(name, &ks.strategy, &self.options);
                if let Some(declared) = self.overlay().keyspaces.get(name) {
                    def.shards = declared.shards;
                    def.nodes = declared.nodes;
                }
                Ok(def)
            }
            _ => Err(self.with_names(|n| n.no_such_keyspace(name))),
        }
    }

    /// Runs `f` with the catalog's names, for errors that say what exists.
    fn with_names<T>(&self, f: impl FnOnce(Names<'_>) -> T) -> T {
        let state = self.session.get_cluster_state();
        let mut keyspaces = Vec::new();
        let mut tables = Vec::new();
        for (name, ks) in state.keyspaces_iter() {
            if catalog::is_system_keyspace(name) {
                continue;
            }
            keyspaces.push(name.to_string());
            tables.extend(ks.tables.keys().map(|t| TableName::new(name, t)));
        }
        keyspaces.sort();
        tables.sort();
        let views: Vec<TableName> = self.overlay().views.keys().cloned().collect();
        f(Names {
            keyspaces: &keyspaces,
            tables: &tables,
            views: &views,
        })
    }

    /// Records a catalog entry (creating Quarry's catalog keyspace on first use) and reads the
    /// overlay again.
    async fn record(
        &self,
        kind: Kind,
        keyspace: &str,
        name: &str,
        definition: Option<String>,
    ) -> Result<()> {
        let replication = match &self.options.local_dc {
            Some(dc) => format!("{{'class': 'NetworkTopologyStrategy', '{dc}': 3}}"),
            None => {
                let nodes = self.session.get_cluster_state().get_nodes_info().len();
                format!(
                    "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                    nodes.clamp(1, 3)
                )
            }
        };
        overlay::ensure(&self.session, &replication).await?;
        overlay::put(&self.session, kind, keyspace, name, definition).await?;
        self.reload().await
    }

    async fn reload(&self) -> Result<()> {
        let fresh = Overlay::load(&self.session).await?;
        *self.overlay.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Reads the cluster's schema, its tablet maps and Quarry's overlay again, now.
    async fn refresh(&self) -> Result<()> {
        self.session
            .refresh_metadata()
            .await
            .map_err(|e| errors::other("reading the cluster's schema", e))?;
        self.load_tablets().await?;
        self.reload().await
    }

    /// Runs a DDL statement, waits for the cluster to agree on the schema, and reads it again.
    async fn ddl(&self, text: &str) -> Result<()> {
        self.session
            .query_unpaged(text, &[])
            .await
            .map_err(|e| errors::execution(&format!("running `{text}`"), e))?;
        self.session
            .await_schema_agreement()
            .await
            .map_err(|e| errors::other("waiting for the cluster to agree on the schema", e))?;
        self.session
            .refresh_metadata()
            .await
            .map_err(|e| errors::other("reading the cluster's schema", e))?;
        self.prepared.lock().await.clear();
        Ok(())
    }
}

/// Reads what the cluster says of a table (`None`: nothing).
type ReadFn<T> = fn(Arc<Inner>, TableName) -> BoxFuture<'static, Result<Option<T>>>;

/// At most `rate` rows a second, smoothed: a caller waits until its rows fit the rate.
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: Option<u64>,
    state: std::sync::Mutex<(Instant, u64)>,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            state: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    pub(crate) async fn take(&self, rows: usize) {
        let Some(rate) = self.rate else {
            return;
        };
        let wait = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (since, taken) = &mut *state;
            *taken += rows as u64;
            let due = Duration::from_secs_f64(*taken as f64 / rate as f64);
            due.saturating_sub(since.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl Store for ScyllaStore {
    fn kind(&self) -> &'static str {
        "scylla"
    }

    async fn refresh_catalog(&self) -> Result<()> {
        self.inner.refresh().await
    }

    fn keyspaces(&self) -> Vec<KeyspaceDef> {
        self.notice_schema_changes();
        let state = self.inner.session.get_cluster_state();
        let mut out: Vec<KeyspaceDef> = state
            .keyspaces_iter()
            .filter(|(name, _)| !catalog::is_system_keyspace(name))
            .filter_map(|(name, _)| self.inner.keyspace_def(name).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn keyspace(&self, name: &str) -> Result<KeyspaceDef> {
        self.inner.keyspace_def(name)
    }

    fn tables(&self, keyspace: Option<&str>) -> Result<Vec<TableDef>> {
        self.notice_schema_changes();
        if let Some(ks) = keyspace {
            self.keyspace(ks)?;
        }
        let state = self.inner.session.get_cluster_state();
        let mut out = Vec::new();
        for (name, ks) in state.keyspaces_iter() {
            if catalog::is_system_keyspace(name) || keyspace.is_some_and(|k| k != name) {
                continue;
            }
            for (table, meta) in &ks.tables {
                match self.inner.table_def(name, table, meta) {
                    Ok(def) => out.push(def),
                    Err(problem) => tracing::warn!("not listed: {problem}"),
                }
            }
        }
        out.sort_by(|a, b| (&a.keyspace, &a.name).cmp(&(&b.keyspace, &b.name)));
        Ok(out)
    }

    fn table(&self, name: &TableName) -> Result<TableDef> {
        self.notice_schema_changes();
        let state = self.inner.session.get_cluster_state();
        let meta = state
            .get_keyspace(&name.keyspace)
            .filter(|_| !catalog::is_system_keyspace(&name.keyspace))
            .and_then(|ks| ks.tables.get(&name.table))
            .ok_or_else(|| self.inner.with_names(|n| n.no_such_table(name)))?;
        self.inner
            .table_def(&name.keyspace, &name.table, meta)
            .map_err(|message| Error::Definition(quarry_core::Error::InvalidDefinition { message }))
    }

    async fn create_keyspace(&self, def: KeyspaceDef, if_not_exists: bool) -> Result<bool> {
        def.validate()?;
        if self.keyspace(&def.name).is_ok() {
            return if if_not_exists {
                Ok(false)
            } else {
                Err(quarry_store::names::keyspace_exists(&def.name))
            };
        }
        let text = catalog::create_keyspace_cql(&def, if_not_exists, &self.inner.options);
        self.inner.ddl(&text).await?;
        self.inner
            .record(Kind::Keyspace, &def.name, "", Some(json(&def)))
            .await?;
        Ok(true)
    }

    async fn drop_keyspace(&self, name: &str, if_exists: bool) -> Result<bool> {
        if let Err(e) = self.keyspace(name) {
            return if if_exists { Ok(false) } else { Err(e) };
        }
        let text = format!("DROP KEYSPACE IF EXISTS {}", catalog::quote(name));
        self.inner.ddl(&text).await?;
        let (tables, views): (Vec<String>, Vec<String>) = {
            let overlay = self.inner.overlay();
            (
                overlay
                    .tables
                    .keys()
                    .filter(|t| t.keyspace == name)
                    .map(|t| t.table.clone())
                    .collect(),
                overlay
                    .views
                    .keys()
                    .filter(|v| v.keyspace == name)
                    .map(|v| v.table.clone())
                    .collect(),
            )
        };
        for t in tables {
            self.inner.record(Kind::Table, name, &t, None).await?;
        }
        for v in views {
            self.inner.record(Kind::View, name, &v, None).await?;
        }
        self.inner.record(Kind::Keyspace, name, "", None).await?;
        Ok(true)
    }

    async fn create_table(&self, def: TableDef, if_not_exists: bool) -> Result<bool> {
        def.validate()?;
        self.keyspace(&def.keyspace)?;
        let name = def.table_name();
        if let Some(taken) = self.inner.with_names(|n| n.name_taken(&name)) {
            return match taken {
                Error::AlreadyExists { .. } if if_not_exists && self.table(&name).is_ok() => {
                    Ok(false)
                }
                taken => Err(taken),
            };
        }
        self.inner
            .ddl(&catalog::create_table_cql(&def, if_not_exists))
            .await?;
        // A new table of a tablet keyspace is read where its tablets are from its first scan.
        if owners::is_tablet_based(&self.inner.session.get_cluster_state(), &def.keyspace) {
            let map = owners::read_tablets(&self.inner.session, &name).await;
            self.inner.tablets.store(&name, map);
        }
        self.inner
            .record(Kind::Table, &def.keyspace, &def.name, Some(json(&def)))
            .await?;
        Ok(true)
    }

    async fn drop_table(&self, name: &TableName, if_exists: bool) -> Result<bool> {
        if let Err(e) = self.table(name) {
            return match e {
                Error::NoSuchTable { .. } | Error::NoSuchKeyspace { .. } if if_exists => Ok(false),
                Error::Definition(_) => self.drop_existing(name).await,
                e => Err(e),
            };
        }
        self.drop_existing(name).await
    }

    fn views(&self, keyspace: Option<&str>) -> Result<Vec<ViewDef>> {
        if let Some(ks) = keyspace {
            self.keyspace(ks)?;
        }
        let live: Vec<String> = self.keyspaces().into_iter().map(|k| k.name).collect();
        Ok(self
            .inner
            .overlay()
            .views
            .values()
            .filter(|v| keyspace.is_none_or(|k| k == v.keyspace) && live.contains(&v.keyspace))
            .cloned()
            .collect())
    }

    fn view(&self, name: &TableName) -> Result<ViewDef> {
        let found = self.inner.overlay().views.get(name).cloned();
        found.ok_or_else(|| self.inner.with_names(|n| n.no_such_view(name)))
    }

    async fn create_view(&self, def: ViewDef, or_replace: bool) -> Result<bool> {
        def.validate()?;
        self.keyspace(&def.keyspace)?;
        let name = def.view_name();
        let replaced = self.inner.overlay().views.contains_key(&name);
        if let Some(taken) = self.inner.with_names(|n| n.name_taken(&name))
            && !(replaced && or_replace)
        {
            return Err(taken);
        }
        self.inner
            .record(Kind::View, &def.keyspace, &def.name, Some(json(&def)))
            .await?;
        Ok(replaced)
    }

    async fn drop_view(&self, name: &TableName, if_exists: bool) -> Result<bool> {
        if let Err(e) = self.view(name) {
            return if if_exists
                && !matches!(e, Error::NoSuchView { ref hint, .. } if hint.contains("is a table"))
            {
                Ok(false)
            } else {
                Err(e)
            };
        }
        self.inner
            .record(Kind::View, &name.keyspace, &name.table, None)
            .await?;
        Ok(true)
    }

    async fn write(&self, table: &TableName, batches: Vec<RecordBatch>) -> Result<WriteSummary> {
        let def = self.table(table)?;
        write::write(&self.inner, &def, batches).await
    }

    fn plan_scan(&self, request: &ScanRequest) -> Result<ScanPlan> {
        let def = self.table(&request.table)?;
        scan::plan(&self.inner, def, request)
    }

    /// Each shard's replicas: the nodes that hold every piece of the shard's token range (a
    /// shard spans a ring token or tablet end or two at Quarry's shard counts), so a worker
    /// beside the shard's primary reads all of it locally; when no node holds every piece (a
    /// keyspace with one replica), those of the piece that ends the shard. The ring places
    /// every table of a vnode keyspace alike; in a tablet keyspace each table has its own
    /// tablets, so a shard's replicas are the nodes holding it of every table in `tables`
    /// (those of the first table when none holds all), and a keyspace-wide placement is an
    /// error. In the local datacenter when one is configured; nodes are named `ip:port`.
    fn placement(
        &self,
        keyspace: &KeyspaceDef,
        tables: &[TableName],
        _nodes: &[NodeId],
    ) -> Result<Placement> {
        let state = self.inner.session.get_cluster_state();
        let owners: Vec<Owners> = if owners::is_tablet_based(&state, &keyspace.name) {
            if tables.is_empty() {
                return Err(Error::PlacedPerTable {
                    keyspace: keyspace.name.clone(),
                });
            }
            tables.iter().map(|t| Owners::of(&self.inner, t)).collect()
        } else {
            let table = tables.first().map_or("", |t| t.table.as_str());
            vec![Owners::of(
                &self.inner,
                &TableName::new(&keyspace.name, table),
            )]
        };
        let boundaries: Vec<Vec<i64>> = owners.iter().map(Owners::boundaries).collect();
        let shards = ShardMap::new(keyspace.shards);
        let replicas = shards
            .all()
            .map(|shard| {
                let range = shards.range_of(shard);
                let mut per_table = owners.iter().zip(&boundaries).map(|(owners, boundaries)| {
                    let last = node_ids(owners.replicas(range.end));
                    let mut common = last.clone();
                    for t in boundaries
                        .iter()
                        .filter(|t| **t > range.start && **t < range.end)
                    {
                        let piece = node_ids(owners.replicas(*t));
                        common.retain(|n| piece.contains(n));
                    }
                    if common.is_empty() { last } else { common }
                });
                let first = per_table.next().unwrap_or_default();
                let mut all = first.clone();
                for other in per_table {
                    all.retain(|n| other.contains(n));
                }
                if all.is_empty() { first } else { all }
            })
            .collect();
        Ok(Placement::from_replicas(&keyspace.name, replicas))
    }
}

/// Nodes as placement names them, `ip:port`.
fn node_ids(replicas: Vec<owners::Replica>) -> Vec<NodeId> {
    replicas
        .into_iter()
        .map(|r| NodeId(r.node.address.to_string()))
        .collect()
}

impl ScyllaStore {
    async fn drop_existing(&self, name: &TableName) -> Result<bool> {
        let text = format!(
            "DROP TABLE IF EXISTS {}.{}",
            catalog::quote(&name.keyspace),
            catalog::quote(&name.table)
        );
        self.inner.ddl(&text).await?;
        self.inner
            .record(Kind::Table, &name.keyspace, &name.table, None)
            .await?;
        Ok(true)
    }
}

/// A catalog definition as the overlay keeps it.
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("catalog definitions serialize")
}

impl Inner {
    /// A table as the cluster describes it, with Quarry's declared definition when that still
    /// agrees (see [`overlay`]).
    fn table_def(
        &self,
        keyspace: &str,
        name: &str,
        meta: &scylla::cluster::metadata::Table,
    ) -> std::result::Result<TableDef, String> {
        let derived = catalog::table_def(keyspace, name, meta)?;
        Ok(self.overlay().table(&derived).cloned().unwrap_or(derived))
    }
}
