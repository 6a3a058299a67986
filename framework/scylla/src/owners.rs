//! Who holds a table's rows, piece by piece.
//!
//! In a vnode keyspace the ring decides, alike for every table of the keyspace: the driver's
//! replica locator answers. In a tablet keyspace (ScyllaDB's tablets) each table is cut into its
//! own tablets, placed apart from other tables' and moved as the cluster balances load. The
//! driver learns a tablet's replicas only from the responses of a node that did not hold it, so
//! the connector reads each table's whole map from `system.tablets` (as the driver's own tablet
//! tests do), keeps it for [`TABLETS_FRESH_FOR`], and reads it again in the background.
//!
//! ```text
//!   Owners::of(table) ─▶ boundaries()   tokens where the replicas change (ring tokens, tablet ends)
//!                     └▶ replicas(t)    the nodes holding token t, primary first, local DC,
//!                                       with the CPU shard holding a tablet
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use quarry_core::schema::TableName;
use quarry_store::Result;
use scylla::client::session::Session;
use scylla::cluster::{ClusterState, Node, NodeRef};
use scylla::policies::load_balancing::{FallbackPlan, LoadBalancingPolicy, RoutingInfo};
use scylla::routing::{Shard, Token};

use crate::{Inner, errors};

/// How long a tablet map is used before it is read again.
pub(crate) const TABLETS_FRESH_FOR: Duration = Duration::from_secs(10);

/// One table's tablets, `(last token, replicas as (host id, CPU shard), primary first)` in
/// token order: tablet `i` holds `(last[i - 1], last[i]]`, the first from the ring's start. A
/// tablet lives whole on one shard of each replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabletMap {
    pub tablets: Vec<(i64, Vec<(uuid::Uuid, u32)>)>,
}

impl TabletMap {
    /// The replicas of the tablet holding `token`.
    pub fn replicas(&self, token: i64) -> &[(uuid::Uuid, u32)] {
        let i = self.tablets.partition_point(|(last, _)| *last < token);
        self.tablets
            .get(i)
            .or(self.tablets.last())
            .map_or(&[], |(_, r)| r.as_slice())
    }
}

/// Reads `table`'s tablet map; `None` when the cluster lists no tablets for it (a vnode table,
/// or a server without tablets).
pub(crate) async fn read_tablets(
    session: &Session,
    table: &TableName,
) -> Result<Option<Arc<TabletMap>>> {
    Ok(read_maps(session, Some(table)).await?.remove(table))
}

/// Reads the tablet maps of every table (`table: None`, one query) or of one.
pub(crate) async fn read_maps(
    session: &Session,
    table: Option<&TableName>,
) -> Result<HashMap<TableName, Arc<TabletMap>>> {
    let what = match table {
        Some(table) => format!("reading the tablets of {table}"),
        None => "reading the cluster's tablets".to_string(),
    };
    let select = "SELECT keyspace_name, table_name, last_token, replicas FROM system.tablets";
    let pager = match table {
        Some(t) => {
            session
                .query_iter(
                    format!("{select} WHERE keyspace_name = ? AND table_name = ? ALLOW FILTERING"),
                    (t.keyspace.as_str(), t.table.as_str()),
                )
                .await
        }
        None => session.query_iter(select, ()).await,
    };
    let mut rows = pager
        .map_err(|e| errors::other(&what, e))?
        .rows_stream::<(String, String, i64, Vec<(uuid::Uuid, i32)>)>()
        .map_err(|e| errors::other(&what, e))?;
    let mut maps: HashMap<TableName, TabletMap> = HashMap::new();
    while let Some((keyspace, name, last, replicas)) =
        rows.try_next().await.map_err(|e| errors::other(&what, e))?
    {
        maps.entry(TableName::new(&keyspace, &name))
            .or_insert_with(|| TabletMap {
                tablets: Vec::new(),
            })
            .tablets
            .push((
                last,
                replicas
                    .into_iter()
                    .map(|(host, shard)| (host, u32::try_from(shard).unwrap_or(0)))
                    .collect(),
            ));
    }
    Ok(maps
        .into_iter()
        .map(|(table, mut map)| {
            map.tablets.sort_by_key(|(last, _)| *last);
            (table, Arc::new(map))
        })
        .collect())
}

/// A node holding a piece of a table, and the CPU shard that holds it there (for a tablet; a
/// vnode range spreads over every shard of its node).
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) node: Arc<Node>,
    pub(crate) shard: Option<u32>,
}

impl Replica {
    /// A plan that sends a request to this replica (its shard, when known) first, then where
    /// `fallback` would: writes of a tablet's rows reach its replica, which the driver's
    /// token-aware routing cannot find for tablets it has not been told of.
    pub(crate) fn first_then(&self, fallback: Arc<dyn LoadBalancingPolicy>) -> ReplicaFirst {
        ReplicaFirst {
            replica: self.clone(),
            fallback,
        }
    }
}

/// See [`Replica::first_then`].
#[derive(Debug)]
pub(crate) struct ReplicaFirst {
    replica: Replica,
    fallback: Arc<dyn LoadBalancingPolicy>,
}

impl LoadBalancingPolicy for ReplicaFirst {
    fn pick<'a>(
        &'a self,
        _request: &'a RoutingInfo,
        _cluster: &'a ClusterState,
    ) -> Option<(NodeRef<'a>, Option<Shard>)> {
        Some((&self.replica.node, self.replica.shard))
    }

    fn fallback<'a>(
        &'a self,
        request: &'a RoutingInfo,
        cluster: &'a ClusterState,
    ) -> FallbackPlan<'a> {
        self.fallback.fallback(request, cluster)
    }

    fn name(&self) -> String {
        "ReplicaFirst".into()
    }
}

/// Who holds the rows of one table, as known when it was built.
pub(crate) struct Owners {
    state: Arc<ClusterState>,
    table: TableName,
    layout: Layout,
    local_dc: Option<String>,
}

enum Layout {
    /// A vnode keyspace: the ring.
    Ring,
    /// A tablet keyspace whose map was read.
    Tablets(Arc<TabletMap>),
    /// A tablet keyspace whose map is not known yet: no replica is known, any node serves.
    Unknown,
}

impl Owners {
    /// The owners of `table` now: a tablet map missing or stale is read again in the background,
    /// for later calls.
    pub(crate) fn of(inner: &Arc<Inner>, table: &TableName) -> Owners {
        let state = inner.session.get_cluster_state();
        let layout = if is_tablet_based(&state, &table.keyspace) {
            match inner.tablet_map(table) {
                Some(map) => Layout::Tablets(map),
                None => Layout::Unknown,
            }
        } else {
            Layout::Ring
        };
        Owners {
            state,
            table: table.clone(),
            layout,
            local_dc: inner.options.local_dc.clone(),
        }
    }

    /// The owners of `table`, reading its tablet map first when none was read yet.
    pub(crate) async fn now(inner: &Arc<Inner>, table: &TableName) -> Owners {
        let owners = Owners::of(inner, table);
        if !matches!(owners.layout, Layout::Unknown) {
            return owners;
        }
        let map = read_tablets(&inner.session, table).await;
        inner.tablets.store(table, map);
        Owners::of(inner, table)
    }

    /// Tokens where the replicas change, ascending (a piece `(a, b]` between two consecutive
    /// ones has one replica set).
    pub(crate) fn boundaries(&self) -> Vec<i64> {
        match &self.layout {
            Layout::Ring => self
                .state
                .replica_locator()
                .ring()
                .iter()
                .map(|(t, _)| t.value())
                .collect(),
            Layout::Tablets(map) => map.tablets.iter().map(|(last, _)| *last).collect(),
            Layout::Unknown => Vec::new(),
        }
    }

    /// The nodes holding `token`, primary first, in the local datacenter when one is set.
    pub(crate) fn replicas(&self, token: i64) -> Vec<Replica> {
        let replicas: Vec<Replica> = match &self.layout {
            Layout::Ring => self
                .state
                .get_token_endpoints(&self.table.keyspace, &self.table.table, Token::new(token))
                .into_iter()
                .map(|(node, _)| Replica { node, shard: None })
                .collect(),
            Layout::Tablets(map) => map
                .replicas(token)
                .iter()
                .filter_map(|(host, shard)| {
                    let node = self
                        .state
                        .get_nodes_info()
                        .iter()
                        .find(|n| n.host_id == *host)?;
                    Some(Replica {
                        node: node.clone(),
                        shard: Some(*shard),
                    })
                })
                .collect(),
            Layout::Unknown => Vec::new(),
        };
        replicas
            .into_iter()
            .filter(|r| match &self.local_dc {
                Some(dc) => r.node.datacenter.as_deref() == Some(dc),
                None => true,
            })
            .collect()
    }
}

/// Whether `keyspace` places each table on its own tablets.
pub(crate) fn is_tablet_based(state: &ClusterState, keyspace: &str) -> bool {
    state
        .get_keyspace(keyspace)
        .is_some_and(|ks| ks.tablet_based)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_belongs_to_the_tablet_ending_at_or_after_it() {
        let a = uuid::Uuid::from_u128(1);
        let b = uuid::Uuid::from_u128(2);
        let map = TabletMap {
            tablets: vec![(-10, vec![(a, 3)]), (i64::MAX, vec![(b, 0)])],
        };
        assert_eq!(map.replicas(i64::MIN), &[(a, 3)]);
        assert_eq!(map.replicas(-10), &[(a, 3)]);
        assert_eq!(map.replicas(-9), &[(b, 0)]);
        assert_eq!(map.replicas(i64::MAX), &[(b, 0)]);
        assert!(TabletMap { tablets: vec![] }.replicas(0).is_empty());
    }
}
