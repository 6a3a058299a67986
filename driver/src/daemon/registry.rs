//! The workers the driver knows: registration, heartbeats and loss.
//!
//! A worker is alive from its registration until it is silent for `lost_after`, or until a call
//! to it fails at the transport level. A lost worker that heartbeats again is told to register
//! again, and then counts as alive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quarry_client::tls::Tls;
use quarry_core::ids::NodeId;
use quarry_core::shard_set::ShardSet;
use quarry_jobs::WorkerId;
use quarry_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::watch;

use quarry_client::auth::{AuthChannel, Bearer, with_bearer};
use quarry_proto::MAX_MESSAGE_BYTES;

/// A worker's local shards, by keyspace, as it last reported them.
pub type LocalShards = Arc<BTreeMap<String, ShardSet>>;

/// A registered worker.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub id: WorkerId,
    pub node: NodeId,
    /// Its gRPC and Flight endpoint.
    pub endpoint: String,
    pub task_slots: u32,
    /// Its gRPC client, sending the cluster secret.
    pub client: WorkerServiceClient<AuthChannel>,
    /// Shards it reads locally, as of its registration or a later heartbeat; a keyspace missing
    /// here is placed by the driver.
    pub local_shards: LocalShards,
}

#[derive(Debug)]
struct Entry {
    handle: WorkerHandle,
    last_seen: Instant,
    alive: bool,
    running_tasks: u32,
}

/// What `ListWorkers` shows of a worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub handle: WorkerHandle,
    pub alive: bool,
    pub last_seen: Duration,
    pub running_tasks: u32,
}

/// The most task slots a worker may declare; with them, the widest hash exchange a cluster
/// plans is bounded by the workers it has.
pub const MAX_TASK_SLOTS: u32 = 1024;

/// The widest hash exchange (and DataFusion's `target_partitions`) the driver plans.
pub const MAX_HASH_PARTITIONS: usize = 4096;

/// Every worker the driver has heard from.
#[derive(Debug)]
pub struct Registry {
    workers: Mutex<BTreeMap<WorkerId, Entry>>,
    lost_after: Duration,
    /// Bumped whenever the set of live workers changes.
    changes: watch::Sender<u64>,
    /// The cluster secret, sent with every call to a worker.
    bearer: Bearer,
    /// TLS for `https://` workers.
    tls: Tls,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub fn new(lost_after: Duration, bearer: Bearer, tls: Tls) -> Self {
        Registry {
            workers: Mutex::new(BTreeMap::new()),
            lost_after,
            changes: watch::channel(0).0,
            bearer,
            tls,
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Adds (or re-adds) a worker. Fails when the endpoint is not a URL.
    pub fn register(
        &self,
        id: WorkerId,
        node: NodeId,
        endpoint: String,
        task_slots: u32,
        local_shards: BTreeMap<String, ShardSet>,
    ) -> Result<(), String> {
        if task_slots > MAX_TASK_SLOTS {
            return Err(format!(
                "task_slots {task_slots} is more than the {MAX_TASK_SLOTS} a worker may declare"
            ));
        }
        let channel = self
            .tls
            .endpoint(&endpoint)
            .map_err(|e| format!("endpoint '{endpoint}': {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            // A worker that stops answering (frozen, or behind a black-holed network) fails
            // its calls instead of holding them forever.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let client = WorkerServiceClient::new(with_bearer(channel, self.bearer.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let handle = WorkerHandle {
            id: id.clone(),
            node,
            endpoint,
            task_slots: task_slots.max(1),
            client,
            local_shards: Arc::new(local_shards),
        };
        tracing::info!(worker = %id, node = %handle.node, endpoint = %handle.endpoint, "worker registered");
        lock(&self.workers).insert(
            id,
            Entry {
                handle,
                last_seen: Instant::now(),
                alive: true,
                running_tasks: 0,
            },
        );
        self.changed();
        Ok(())
    }

    /// Records a heartbeat; false when the worker must register again.
    pub fn heartbeat(
        &self,
        id: &WorkerId,
        running_tasks: u32,
        local_shards: BTreeMap<String, ShardSet>,
    ) -> bool {
        let mut workers = lock(&self.workers);
        match workers.get_mut(id) {
            Some(entry) if entry.alive => {
                entry.last_seen = Instant::now();
                entry.running_tasks = running_tasks;
                if *entry.handle.local_shards != local_shards {
                    entry.handle.local_shards = Arc::new(local_shards);
                }
                true
            }
            _ => false,
        }
    }

    /// Declares a worker lost (a call to it failed).
    pub fn mark_lost(&self, id: &WorkerId) {
        let mut workers = lock(&self.workers);
        if let Some(entry) = workers.get_mut(id)
            && entry.alive
        {
            entry.alive = false;
            tracing::warn!(worker = %id, "worker lost");
            drop(workers);
            self.changed();
        }
    }

    /// Declares the worker at `endpoint` lost.
    pub fn mark_endpoint_lost(&self, endpoint: &str) {
        let id = lock(&self.workers)
            .values()
            .find(|e| e.handle.endpoint == endpoint)
            .map(|e| e.handle.id.clone());
        if let Some(id) = id {
            self.mark_lost(&id);
        }
    }

    /// Marks workers silent for longer than `lost_after` as lost.
    pub fn reap(&self) {
        let now = Instant::now();
        let silent: Vec<WorkerId> = lock(&self.workers)
            .values()
            .filter(|e| e.alive && now.duration_since(e.last_seen) > self.lost_after)
            .map(|e| e.handle.id.clone())
            .collect();
        for id in silent {
            self.mark_lost(&id);
        }
    }

    pub fn is_alive(&self, id: &WorkerId) -> bool {
        lock(&self.workers).get(id).is_some_and(|e| e.alive)
    }

    /// Resolves once worker `id` is no longer alive: it missed its heartbeats, a call to it
    /// failed, or it was never registered. Calls in flight to it stop waiting on this.
    pub async fn lost(&self, id: &WorkerId) {
        let mut changes = self.changes.subscribe();
        while self.is_alive(id) {
            if changes.changed().await.is_err() {
                // The registry is going away with the driver; nothing will change any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// How many partitions a query spreads over: the live workers' task slots (at least two, at
    /// most [`MAX_HASH_PARTITIONS`]).
    pub fn hash_width(&self) -> usize {
        let slots = self
            .live()
            .iter()
            .fold(0usize, |sum, w| sum.saturating_add(w.task_slots as usize));
        slots.clamp(2, MAX_HASH_PARTITIONS)
    }

    /// Live workers, by id.
    pub fn live(&self) -> Vec<WorkerHandle> {
        lock(&self.workers)
            .values()
            .filter(|e| e.alive)
            .map(|e| e.handle.clone())
            .collect()
    }

    pub fn get(&self, id: &WorkerId) -> Option<WorkerHandle> {
        lock(&self.workers).get(id).map(|e| e.handle.clone())
    }

    pub fn all(&self) -> Vec<WorkerView> {
        let now = Instant::now();
        lock(&self.workers)
            .values()
            .map(|e| WorkerView {
                handle: e.handle.clone(),
                alive: e.alive,
                last_seen: now.duration_since(e.last_seen),
                running_tasks: e.running_tasks,
            })
            .collect()
    }

    /// The endpoints of every registered worker, lost ones included (their outputs may still
    /// be read while the driver re-runs them): the peers a worker may read exchange outputs from.
    pub fn endpoints(&self) -> Vec<String> {
        lock(&self.workers)
            .values()
            .map(|e| e.handle.endpoint.clone())
            .collect()
    }

    /// The nodes of every worker ever registered, sorted: the cluster placement is computed over.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = lock(&self.workers)
            .values()
            .map(|e| e.handle.node.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Waits until at least `n` workers are alive, or `timeout` passes; returns how many are.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let live = self.live().len();
            if live >= n {
                return live;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.live().len(),
            }
        }
    }
}
