//! Which nodes own which shards.
//!
//! Each shard is hashed onto a consistent-hash ring of the keyspace's nodes (every node with the
//! same number of virtual nodes); the first `replication_factor` distinct nodes clockwise own it,
//! the first of them being the primary replica. Adding or removing one of N nodes therefore moves
//! about 1/N of the shards. A keyspace placed on `nodes = k` first picks k of the cluster's nodes,
//! again by consistent hashing (on the keyspace name), so that the choice is stable as the cluster
//! grows.

use consistent_hash::{DefaultHash, Node, StaticHashRing};

use crate::error::{Error, Result};
use crate::ids::{NodeId, ShardId};
use crate::schema::KeyspaceDef;
use crate::shard_map::ShardMap;

/// Virtual nodes per node on the ring; enough for an even spread of 800 shards.
pub const DEFAULT_VNODES: usize = 64;

/// Shard-to-node assignment of one keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    keyspace: String,
    nodes: Vec<NodeId>,
    /// `replicas[shard]` lists the owning nodes, primary first.
    replicas: Vec<Vec<NodeId>>,
}

impl Placement {
    /// Places `keyspace` on `cluster` (the store's nodes).
    pub fn compute(keyspace: &KeyspaceDef, cluster: &[NodeId]) -> Result<Self> {
        Self::compute_with_vnodes(keyspace, cluster, DEFAULT_VNODES)
    }

    pub fn compute_with_vnodes(
        keyspace: &KeyspaceDef,
        cluster: &[NodeId],
        vnodes: usize,
    ) -> Result<Self> {
        let fail = |problem: String| Error::Placement {
            keyspace: keyspace.name.clone(),
            problem,
        };
        if cluster.is_empty() {
            return Err(fail("the cluster has no nodes".into()));
        }
        let nodes = match keyspace.nodes {
            Some(k) if (k as usize) < cluster.len() => {
                let ring = ring(cluster, vnodes);
                ring.calc_candidates(&("keyspace", keyspace.name.as_str()))
                    .take(k as usize)
                    .map(|n| n.key.clone())
                    .collect()
            }
            _ => {
                let mut all = cluster.to_vec();
                all.sort();
                all.dedup();
                all
            }
        };
        let rf = keyspace.replication_factor as usize;
        if rf > nodes.len() {
            return Err(fail(format!(
                "replication_factor {rf} needs at least {rf} nodes, but the keyspace is placed \
                 on {}",
                nodes.len()
            )));
        }
        let ring = ring(&nodes, vnodes);
        let map = ShardMap::new(keyspace.shards);
        let replicas = map
            .all()
            .map(|shard| {
                ring.calc_candidates(&(keyspace.name.as_str(), shard.0))
                    .take(rf)
                    .map(|n| n.key.clone())
                    .collect()
            })
            .collect();
        Ok(Placement {
            keyspace: keyspace.name.clone(),
            nodes,
            replicas,
        })
    }

    /// A placement a store computed itself (a CQL cluster's ring): `replicas[shard]` lists the
    /// shard's owners, primary first.
    pub fn from_replicas(keyspace: impl Into<String>, replicas: Vec<Vec<NodeId>>) -> Self {
        let mut nodes: Vec<NodeId> = replicas.iter().flatten().cloned().collect();
        nodes.sort();
        nodes.dedup();
        Placement {
            keyspace: keyspace.into(),
            nodes,
            replicas,
        }
    }

    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The nodes this keyspace is placed on, sorted.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Owning nodes of a shard, primary first.
    pub fn replicas(&self, shard: ShardId) -> &[NodeId] {
        self.replicas
            .get(shard.0 as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The primary replica of a shard.
    pub fn primary(&self, shard: ShardId) -> Option<&NodeId> {
        self.replicas(shard).first()
    }

    /// The shards a node holds a replica of.
    pub fn shards_of(&self, node: &NodeId) -> Vec<ShardId> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, owners)| owners.contains(node))
            .map(|(i, _)| ShardId(i as u32))
            .collect()
    }

    /// How many shards have a different primary replica in `other` (for measuring movement).
    pub fn primaries_moved(&self, other: &Placement) -> usize {
        self.replicas
            .iter()
            .zip(&other.replicas)
            .filter(|(a, b)| a.first() != b.first())
            .count()
    }
}

fn ring(nodes: &[NodeId], vnodes: usize) -> StaticHashRing<'static, NodeId, (), DefaultHash> {
    StaticHashRing::new(
        DefaultHash,
        nodes.iter().map(|n| Node::new(n.clone()).quantity(vnodes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId::new(format!("node-{i}"))).collect()
    }

    #[test]
    fn every_shard_gets_rf_distinct_replicas() {
        let mut ks = KeyspaceDef::new("iot");
        ks.replication_factor = 3;
        let p = Placement::compute(&ks, &cluster(5)).unwrap();
        for shard in ShardMap::new(800).all() {
            let mut r = p.replicas(shard).to_vec();
            assert_eq!(r.len(), 3);
            r.dedup();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "{shard}");
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_nth_of_the_shards() {
        let ks = KeyspaceDef::new("iot");
        for n in [4usize, 10, 20] {
            let before = Placement::compute(&ks, &cluster(n)).unwrap();
            let after = Placement::compute(&ks, &cluster(n + 1)).unwrap();
            let moved = before.primaries_moved(&after) as f64 / 800.0;
            let ideal = 1.0 / (n + 1) as f64;
            assert!(
                moved > ideal * 0.5 && moved < ideal * 1.6,
                "{n} -> {} nodes moved {moved:.3} of shards, ideal {ideal:.3}",
                n + 1
            );
            // Every moved shard moved to the new node: nothing else is reshuffled.
            let new = NodeId::new(format!("node-{}", n + 1));
            for shard in ShardMap::new(800).all() {
                if before.primary(shard) != after.primary(shard) {
                    assert_eq!(after.primary(shard), Some(&new));
                }
            }
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_shards() {
        let ks = KeyspaceDef::new("iot");
        let full = cluster(10);
        let before = Placement::compute(&ks, &full).unwrap();
        let gone = NodeId::new("node-4");
        let rest: Vec<NodeId> = full.iter().filter(|n| **n != gone).cloned().collect();
        let after = Placement::compute(&ks, &rest).unwrap();
        let owned = before.shards_of(&gone).len();
        assert_eq!(before.primaries_moved(&after), owned);
        assert!((40..=130).contains(&owned), "node-4 owned {owned} of 800");
    }

    #[test]
    fn a_keyspace_can_live_on_a_subset_of_nodes() {
        let mut synth = KeyspaceDef::new("synth");
        synth.nodes = Some(2);
        let p = Placement::compute(&synth, &cluster(6)).unwrap();
        assert_eq!(p.nodes().len(), 2);
        for shard in ShardMap::new(800).all() {
            assert!(p.nodes().contains(p.primary(shard).unwrap()));
        }
        let mut too_many = KeyspaceDef::new("synth");
        too_many.replication_factor = 3;
        too_many.nodes = Some(2);
        let err = Placement::compute(&too_many, &cluster(6))
            .unwrap_err()
            .to_string();
        assert!(err.contains("replication_factor 3"), "{err}");
    }
}
