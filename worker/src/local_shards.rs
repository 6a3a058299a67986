//! Which shards a worker reads locally: of each keyspace, those its node holds a replica of.
//!
//! The worker reports them when it registers and with every heartbeat (keyspaces are created
//! after it starts). On the embedded store, a node's shards are what placement over the cluster's
//! nodes gives it, so the worker needs the node list (`--nodes`); without it the worker reports
//! nothing and the driver places shards itself. On a CQL cluster the store answers from the ring
//! ([`Store::placement`]), and a worker's node is its CQL node's address.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use quarry_core::ids::NodeId;
use quarry_core::schema::KeyspaceDef;
use quarry_core::shard_set::ShardSet;
use quarry_store::Store;

/// Computes (and caches, per keyspace definition) a node's local shards.
#[derive(Debug)]
pub struct LocalShards {
    node: NodeId,
    nodes: Vec<NodeId>,
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, (KeyspaceDef, ShardSet)>>,
}

impl LocalShards {
    pub fn new(node: NodeId, nodes: Vec<NodeId>, store: Arc<dyn Store>) -> Self {
        LocalShards {
            node,
            nodes,
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The local shards of every keyspace the store has now (none without a node list, or
    /// when this node is not in it).
    pub fn now(&self) -> BTreeMap<String, ShardSet> {
        let mut out = BTreeMap::new();
        if !self.nodes.contains(&self.node) {
            return out;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let keyspaces = self.store.keyspaces();
        cache.retain(|name, _| keyspaces.iter().any(|k| &k.name == name));
        for def in keyspaces {
            let shards = match cache.get(&def.name) {
                Some((cached, shards)) if *cached == def => shards.clone(),
                _ => match self.store.placement(&def, &[], &self.nodes) {
                    Ok(placement) => {
                        let shards = ShardSet::from_shards(placement.shards_of(&self.node));
                        cache.insert(def.name.clone(), (def.clone(), shards.clone()));
                        shards
                    }
                    // Each table has its own placement: the driver places them from the store.
                    Err(quarry_store::Error::PlacedPerTable { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(keyspace = %def.name, error = %e, "cannot place a keyspace; reporting none of its shards");
                        continue;
                    }
                },
            };
            out.insert(def.name, shards);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use quarry_core::placement::Placement;
    use quarry_store::{EmbeddedOptions, EmbeddedStore};

    use super::*;

    #[tokio::test]
    async fn a_node_reports_the_shards_placement_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        let nodes: Vec<NodeId> = (1..=3).map(|i| NodeId(format!("node-{i}"))).collect();
        let mine = LocalShards::new(nodes[1].clone(), nodes.clone(), store.clone());
        assert!(mine.now().is_empty());

        let mut def = KeyspaceDef::new("iot");
        def.shards = 64;
        store.create_keyspace(def.clone(), false).await.unwrap();
        let reported = mine.now();
        let expected = Placement::compute(&def, &nodes).unwrap();
        let shards = &reported["iot"];
        for shard in (0..64).map(quarry_core::ids::ShardId) {
            assert_eq!(
                shards.contains(shard),
                expected.replicas(shard).contains(&nodes[1]),
                "shard {shard:?}"
            );
        }
        assert!(!shards.is_empty() && shards.len() < 64);

        // Without a node list, or outside it, nothing is reported.
        let unknown = LocalShards::new(NodeId("node-9".into()), nodes, store.clone());
        assert!(unknown.now().is_empty());
        let no_list = LocalShards::new(NodeId("node-1".into()), Vec::new(), store);
        assert!(no_list.now().is_empty());
    }
}
