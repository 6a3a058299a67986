//! A job's stages and the exchanges between them, as a petgraph DAG.
//!
//! Nodes are [`Stage`]s, edges run from a producer stage to the stage that reads its output and
//! carry the [`ExchangeKind`]. Stages are addressed by [`StageId`]; petgraph's indices stay
//! inside this module.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use quarry_core::schema::TableName;
use quarry_core::shard_set::ShardSet;

use crate::exchange::ExchangeKind;
use crate::ids::StageId;

/// What a stage's tasks cover, which decides where they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageKind {
    /// Reads store tables of one keyspace; each task covers a group of the keyspace's shards and
    /// runs beside a replica of them.
    Scan {
        keyspace: String,
        tables: Vec<TableName>,
    },
    /// Reads hash exchanges; task `p` reads hash partition `p` of every input.
    Partitioned { partitions: usize },
    /// Writes rows routed by target shard: task `p` writes the shards of `groups[p]` and runs
    /// beside a replica of them.
    Write {
        keyspace: String,
        table: TableName,
        groups: Vec<ShardSet>,
    },
    /// The job's last stage: the driver runs it and its output is the job's result.
    Driver,
}

/// A pipeline of operators between exchanges.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: StageId,
    /// The fragment each task runs; its leaves are store scans and exchange readers.
    pub plan: Arc<dyn ExecutionPlan>,
    pub kind: StageKind,
    /// How the stage's output reaches its reader (`None` for the driver stage).
    pub output: Option<ExchangeKind>,
}

impl Stage {
    /// One line for job listings: what the stage reads and how its output leaves.
    pub fn describe(&self) -> String {
        let reads = match &self.kind {
            StageKind::Scan { tables, .. } => format!(
                "scan {}",
                tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            StageKind::Partitioned { partitions } => format!("{partitions} hash partitions"),
            StageKind::Write { table, groups, .. } => {
                format!("write {table} in {} shard groups", groups.len())
            }
            StageKind::Driver => "result".to_string(),
        };
        let top = self.plan.name();
        match self.output {
            Some(kind) => format!("{reads} → {top} → {kind} exchange"),
            None => format!("{reads} → {top}"),
        }
    }
}

/// The stage DAG of one job.
#[derive(Debug, Clone)]
pub struct JobGraph {
    graph: DiGraph<Stage, ExchangeKind>,
    index: HashMap<StageId, NodeIndex>,
    root: StageId,
}

impl JobGraph {
    /// Builds the graph from stages listed inputs-first and (producer, consumer) edges.
    pub(crate) fn new(stages: Vec<Stage>, edges: &[(StageId, StageId)], root: StageId) -> Self {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for stage in stages {
            let id = stage.id;
            index.insert(id, graph.add_node(stage));
        }
        for (from, to) in edges {
            if let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) {
                let kind = graph[a].output.unwrap_or(ExchangeKind::Gather);
                graph.add_edge(a, b, kind);
            }
        }
        JobGraph { graph, index, root }
    }

    /// Stages in an order where every stage comes after the stages it reads.
    pub fn stages(&self) -> Vec<&Stage> {
        match petgraph::algo::toposort(&self.graph, None) {
            Ok(order) => order.into_iter().map(|i| &self.graph[i]).collect(),
            // The planner only adds edges from earlier to later stages, so there is no cycle;
            // fall back to id order all the same.
            Err(_) => {
                let mut all: Vec<&Stage> = self.graph.node_weights().collect();
                all.sort_by_key(|s| s.id);
                all
            }
        }
    }

    pub fn stage(&self, id: StageId) -> Option<&Stage> {
        self.index.get(&id).map(|&i| &self.graph[i])
    }

    /// The stages whose output `id` reads.
    pub fn inputs(&self, id: StageId) -> Vec<StageId> {
        let Some(&i) = self.index.get(&id) else {
            return Vec::new();
        };
        let mut inputs: Vec<StageId> = self
            .graph
            .neighbors_directed(i, Direction::Incoming)
            .map(|n| self.graph[n].id)
            .collect();
        inputs.sort();
        inputs
    }

    /// The stages that read `id`'s output.
    pub fn consumers(&self, id: StageId) -> Vec<StageId> {
        let Some(&i) = self.index.get(&id) else {
            return Vec::new();
        };
        self.graph
            .neighbors_directed(i, Direction::Outgoing)
            .map(|n| self.graph[n].id)
            .collect()
    }

    /// The driver stage.
    pub fn root(&self) -> &Stage {
        &self.graph[self.index[&self.root]]
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }
}

impl fmt::Display for JobGraph {
    /// Every stage with its inputs and plan, inputs first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stage in self.stages() {
            let inputs = self.inputs(stage.id);
            write!(f, "stage {} [{}]", stage.id, stage.describe())?;
            if !inputs.is_empty() {
                let list: Vec<String> = inputs.iter().map(ToString::to_string).collect();
                write!(f, " reads stage {}", list.join(", "))?;
            }
            writeln!(
                f,
                ", {} partition(s)",
                stage.plan.output_partitioning().partition_count()
            )?;
            for line in displayable(stage.plan.as_ref())
                .indent(true)
                .to_string()
                .lines()
            {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}
