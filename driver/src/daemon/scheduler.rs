//! Which worker runs which task.
//!
//! A scan stage's tasks cover groups of shards. Each shard goes to the live worker beside its
//! first live replica (a *local* read); a shard with no live replica goes to the least loaded
//! live worker, which reads it remotely through the store. Each worker's shards are then cut into
//! `task_slots` groups, in ring order, so that 800 shards on 3 workers make a handful of tasks
//! per worker rather than one per shard. A partitioned stage's hash partitions are dealt round
//! robin over live workers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quarry_core::ids::{NodeId, ShardId};
use quarry_core::placement::Placement;
use quarry_core::shard_set::ShardSet;
use quarry_jobs::WorkerId;

/// A live worker as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub worker: WorkerId,
    pub node: NodeId,
    pub task_slots: u32,
    /// The shards it reported it reads locally, by keyspace.
    pub local_shards: Arc<BTreeMap<String, ShardSet>>,
}

impl Slot {
    fn holds(&self, placement: &Placement, shard: ShardId) -> bool {
        reads_locally(&self.local_shards, &self.node, placement, shard)
    }
}

/// Whether the worker on `node` that reported `local` reads `shard` of `placement`'s keyspace
/// locally: as it reported, for a keyspace it reported; otherwise as placement says.
pub fn reads_locally(
    local: &BTreeMap<String, ShardSet>,
    node: &NodeId,
    placement: &Placement,
    shard: ShardId,
) -> bool {
    match local.get(placement.keyspace()) {
        Some(shards) => shards.contains(shard),
        None => placement.replicas(shard).contains(node),
    }
}

/// A scan task: which shards, on which worker, and whether that worker holds a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanAssignment {
    pub worker: WorkerId,
    pub shards: ShardSet,
    pub local: bool,
}

/// Assigns the shards `0..shard_count` of a keyspace placed by `placement` to `workers`.
pub fn assign_scan(
    placement: &Placement,
    shard_count: u32,
    workers: &[Slot],
) -> Vec<ScanAssignment> {
    if workers.is_empty() {
        return Vec::new();
    }
    let by_node: HashMap<&NodeId, &Slot> = workers.iter().map(|w| (&w.node, w)).collect();
    // (worker index, local) -> shards
    let mut groups: BTreeMap<(usize, bool), Vec<ShardId>> = BTreeMap::new();
    let mut load = vec![0usize; workers.len()];
    let index_of: HashMap<&WorkerId, usize> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| (&w.worker, i))
        .collect();
    // Workers that reported this keyspace may hold shards placement does not give their node.
    let reporting: Vec<&Slot> = workers
        .iter()
        .filter(|w| w.local_shards.contains_key(placement.keyspace()))
        .collect();
    let mut remote = Vec::new();
    for shard in (0..shard_count).map(ShardId) {
        let local = placement
            .replicas(shard)
            .iter()
            .filter_map(|node| by_node.get(node).copied())
            .find(|slot| slot.holds(placement, shard))
            .or_else(|| {
                reporting
                    .iter()
                    .copied()
                    .find(|slot| slot.holds(placement, shard))
            });
        match local {
            Some(slot) => {
                let i = index_of[&slot.worker];
                load[i] += 1;
                groups.entry((i, true)).or_default().push(shard);
            }
            None => remote.push(shard),
        }
    }
    for shard in remote {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .unwrap_or((0, &0));
        load[i] += 1;
        groups.entry((i, false)).or_default().push(shard);
    }
    let mut assignments = Vec::new();
    for ((i, local), shards) in groups {
        let worker = &workers[i];
        let tasks = (worker.task_slots.max(1) as usize).min(shards.len()).max(1);
        let per_task = shards.len().div_ceil(tasks);
        for chunk in shards.chunks(per_task) {
            assignments.push(ScanAssignment {
                worker: worker.worker.clone(),
                shards: ShardSet::from_shards(chunk.iter().copied()),
                local,
            });
        }
    }
    assignments
}

/// The worker to write a group of shards: one beside replicas of all of them, else the one beside
/// replicas of most of them, else (no replica alive) the `index`-th worker round robin.
pub fn owner_of(
    placement: &Placement,
    group: &ShardSet,
    workers: &[Slot],
    index: usize,
) -> WorkerId {
    let held = |w: &Slot| group.iter().filter(|&s| w.holds(placement, s)).count();
    workers
        .iter()
        .map(|w| (held(w), w))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, w)| w.worker.clone())
        .or_else(|| {
            workers
                .get(index % workers.len().max(1))
                .map(|w| w.worker.clone())
        })
        .unwrap_or_else(|| WorkerId(String::new()))
}

/// Deals hash partitions `0..partitions` over `workers`, one task per partition.
pub fn assign_partitions(partitions: usize, workers: &[Slot]) -> Vec<(WorkerId, u32)> {
    if workers.is_empty() {
        return Vec::new();
    }
    (0..partitions)
        .map(|p| (workers[p % workers.len()].worker.clone(), p as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use quarry_core::schema::KeyspaceDef;

    use super::*;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| Slot {
                worker: WorkerId(format!("w{i}")),
                node: NodeId(format!("node-{i}")),
                task_slots: 2,
                local_shards: Default::default(),
            })
            .collect()
    }

    fn keyspace(shards: u32, rf: u32) -> KeyspaceDef {
        KeyspaceDef {
            name: "iot".into(),
            shards,
            replication_factor: rf,
            nodes: None,
        }
    }

    #[test]
    fn every_shard_is_read_once_and_locally_when_replicas_live() {
        let workers = slots(3);
        let nodes: Vec<NodeId> = workers.iter().map(|w| w.node.clone()).collect();
        let placement = Placement::compute(&keyspace(800, 1), &nodes).unwrap();
        let tasks = assign_scan(&placement, 800, &workers);
        assert!(
            tasks.len() <= 6 && tasks.len() >= 3,
            "{} tasks",
            tasks.len()
        );
        let mut seen = vec![0; 800];
        for t in &tasks {
            assert!(t.local);
            for s in t.shards.iter() {
                seen[s.0 as usize] += 1;
                let owner = placement.primary(s).unwrap();
                let worker = workers.iter().find(|w| &w.node == owner).unwrap();
                assert_eq!(
                    worker.worker, t.worker,
                    "shard {} ran away from its replica",
                    s.0
                );
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn shards_without_a_live_replica_run_remotely_elsewhere() {
        let all = slots(3);
        let nodes: Vec<NodeId> = all.iter().map(|w| w.node.clone()).collect();
        let placement = Placement::compute(&keyspace(64, 1), &nodes).unwrap();
        let live = &all[..2];
        let tasks = assign_scan(&placement, 64, live);
        let covered: u32 = tasks.iter().map(|t| t.shards.len()).sum();
        assert_eq!(covered, 64);
        let lost_shards = placement.shards_of(&all[2].node).len() as u32;
        let remote: u32 = tasks
            .iter()
            .filter(|t| !t.local)
            .map(|t| t.shards.len())
            .sum();
        assert_eq!(remote, lost_shards);
        // With replication 2, a lost node's shards still have a live replica.
        let placement = Placement::compute(&keyspace(64, 2), &nodes).unwrap();
        let tasks = assign_scan(&placement, 64, live);
        assert!(tasks.iter().all(|t| t.local));
    }

    #[test]
    fn hash_partitions_spread_over_workers() {
        let got = assign_partitions(6, &slots(3));
        assert_eq!(got.len(), 6);
        assert_eq!(got.iter().filter(|(w, _)| w.0 == "w0").count(), 2);
        assert!(assign_partitions(4, &[]).is_empty());
    }
}
