//! The distributed planner: cuts a DataFusion physical plan into stages at exchange points.
//!
//! ```text
//!   AggregateExec(Final)                          driver:   AggregateExec(Final)
//!     CoalescePartitionsExec          ──cut──▶               CoalescePartitionsExec
//!       AggregateExec(Partial)                                 ExchangeReaderExec(stage 1, gather)
//!         StoreScanExec                           stage 1:  AggregateExec(Partial)   (workers, per
//!                                                             StoreScanExec           shard group)
//! ```
//!
//! A subtree is *distributed* when its rows are spread over tasks: it reads a store scan (each task
//! reads a group of shards) or a hash exchange (each task reads some hash partitions). Where an
//! operator needs all rows of a distributed child in one place, the planner cuts:
//!
//! - a hash `RepartitionExec` becomes a hash exchange: the producer stage ends with it and the
//!   consumer reads one hash partition per task (final aggregation and partitioned joins run on
//!   workers after it);
//! - `CoalescePartitionsExec`, `SortPreservingMergeExec`, and any operator that requires a single
//!   partition (a final aggregate, a global limit, the build side of a `CollectLeft` join) get a
//!   gather exchange below them, read whole by whoever runs them (every task of a join: a
//!   broadcast; the driver: the final merge);
//! - an operator that requires hash partitioning of a child that is not hash-partitioned gets a
//!   hash exchange inserted.
//!
//! A join's build side is not cut when it is small and only reads the store (a dimension table,
//! filtered): its scans are marked replicated, and every task of the probing stage reads the
//! whole table itself instead of a gather stage's broadcast.
//!
//! An `INSERT` whose rows are distributed becomes a write: the rows are routed by target shard
//! to a write stage whose task `p` writes shard group `p` (beside a replica of it), and the
//! driver commits what the writers staged (see [`crate::write`]).
//!
//! What is left at the top runs at the driver. The inputs of an operator that needs no particular
//! distribution (a union) but whose inputs cannot share a stage (scans of differently placed
//! keyspaces, or shard-split scans beside hash partitions) are gathered from their own stages.
//! Other plans whose stages would mix those are not cut ([`Error::NotDistributable`]); the
//! caller runs them in one process.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Distribution, Partitioning, PhysicalExpr, physical_exprs_equal};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode, SortMergeJoinExec,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, StatisticsArgs, StatisticsContext,
};
use quarry_core::schema::TableName;
use quarry_core::shard_set::ShardSet;
use quarry_sql::scan_exec::StoreScanExec;
use quarry_sql::sink::StoreSink;

use crate::error::{Error, Result};
use crate::exchange::{ExchangeKind, ExchangeReaderExec};
use crate::ids::StageId;
use crate::job_graph::{JobGraph, Stage, StageKind};
use crate::write::{ShardRouterExec, StoreCommitExec, StoreWriteExec, new_statement_id};

/// How a distributed write groups a keyspace's shards into tasks (the driver groups them by the
/// worker beside their replicas).
pub trait WriteGroups: Send + Sync + Debug {
    /// Groups covering shards `0..shard_count` of `table`, each shard exactly once.
    fn groups(&self, table: &TableName, shard_count: u32) -> Vec<ShardSet>;
}

/// Cuts physical plans into stage DAGs.
#[derive(Debug, Clone)]
pub struct DistributedPlanner {
    /// Width of the hash exchanges the planner inserts itself (those DataFusion planned keep their
    /// own width, the session's `target_partitions`).
    pub hash_partitions: usize,
    /// Shard groups of distributed writes; without it, `hash_partitions` contiguous groups.
    write_groups: Option<Arc<dyn WriteGroups>>,
}

/// How a subtree's rows are spread over tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spread {
    /// All rows are here (or it reads gathered inputs only).
    Whole,
    /// Split by shards of these tables.
    Shards(BTreeSet<TableName>),
    /// Split by hash partitions of this many.
    Hash(usize),
}

struct Cut {
    plan: Arc<dyn ExecutionPlan>,
    spread: Spread,
}

#[derive(Default)]
struct Builder {
    stages: Vec<Stage>,
    edges: Vec<(StageId, StageId)>,
}

impl DistributedPlanner {
    pub fn new(hash_partitions: usize) -> Self {
        DistributedPlanner {
            hash_partitions: hash_partitions.max(1),
            write_groups: None,
        }
    }

    /// This planner with distributed writes grouped by `groups`.
    pub fn with_write_groups(mut self, groups: Arc<dyn WriteGroups>) -> Self {
        self.write_groups = Some(groups);
        self
    }

    fn groups(&self, table: &TableName, shard_count: u32) -> Vec<ShardSet> {
        let groups = match &self.write_groups {
            Some(g) => g.groups(table, shard_count),
            None => Vec::new(),
        };
        if !groups.is_empty() {
            return groups;
        }
        let n = (self.hash_partitions as u32).clamp(1, shard_count.max(1));
        (0..n)
            .map(|i| {
                let start = (i as u64 * shard_count as u64 / n as u64) as u32;
                let end = ((i as u64 + 1) * shard_count as u64 / n as u64) as u32;
                ShardSet::from_ranges([start..=end.saturating_sub(1)])
            })
            .filter(|g| !g.is_empty())
            .collect()
    }

    /// An `INSERT` into a store table: a write from the workers when its rows are distributed.
    fn visit_insert(
        &self,
        b: &mut Builder,
        plan: &Arc<dyn ExecutionPlan>,
        sink: &DataSinkExec,
        target: &StoreSink,
    ) -> Result<Cut> {
        // DataFusion merges the input for the sink; a distributed write needs no merge.
        let input = match sink.input().downcast_ref::<CoalescePartitionsExec>() {
            Some(merge) => merge.input().clone(),
            None => sink.input().clone(),
        };
        let child = self.visit(b, input)?;
        if child.spread == Spread::Whole {
            let input = if child.plan.output_partitioning().partition_count() > 1 {
                Arc::new(CoalescePartitionsExec::new(child.plan)) as Arc<dyn ExecutionPlan>
            } else {
                child.plan
            };
            return Ok(Cut {
                plan: replace_children_if_necessary(plan.clone(), vec![input])?,
                spread: Spread::Whole,
            });
        }
        let def = target.def().clone();
        let groups = self.groups(&def.table_name(), target.shard_count());
        let router = Arc::new(ShardRouterExec::try_new(
            child.plan,
            def.clone(),
            target.shard_count(),
            groups.clone(),
        )?);
        let partitions = groups.len();
        let routed = b.cut_stage(router, child.spread, ExchangeKind::Hash { partitions })?;
        let statement = new_statement_id();
        let write: Arc<dyn ExecutionPlan> = Arc::new(StoreWriteExec::new(
            routed,
            def.clone(),
            statement,
            target.store().clone(),
        ));
        let schema = write.schema();
        let kind = StageKind::Write {
            keyspace: def.keyspace.clone(),
            table: def.table_name(),
            groups,
        };
        let id = b.add_stage(write, kind, Some(ExchangeKind::Gather));
        let parts = Arc::new(CoalescePartitionsExec::new(Arc::new(
            ExchangeReaderExec::new(id, ExchangeKind::Gather, schema),
        )));
        Ok(Cut {
            plan: Arc::new(StoreCommitExec::new(
                parts,
                def.table_name(),
                statement,
                target.store().clone(),
                plan.schema(),
            )),
            spread: Spread::Whole,
        })
    }

    /// Cuts `plan` into stages; the last stage runs at the driver.
    pub fn plan(&self, plan: Arc<dyn ExecutionPlan>) -> Result<JobGraph> {
        let mut builder = Builder::default();
        let cut = self.visit(&mut builder, plan)?;
        let root_plan = match cut.spread {
            Spread::Whole => cut.plan,
            spread => {
                let reader = builder.cut_stage(cut.plan, spread, ExchangeKind::Gather)?;
                Arc::new(CoalescePartitionsExec::new(reader)) as Arc<dyn ExecutionPlan>
            }
        };
        let root = builder.add_stage(root_plan, StageKind::Driver, None);
        Ok(JobGraph::new(builder.stages, &builder.edges, root))
    }

    fn visit(&self, b: &mut Builder, plan: Arc<dyn ExecutionPlan>) -> Result<Cut> {
        if let Some(scan) = plan.downcast_ref::<StoreScanExec>() {
            let table = scan.request().table.clone();
            return Ok(Cut {
                plan,
                spread: Spread::Shards(BTreeSet::from([table])),
            });
        }
        if let Some(sink) = plan.downcast_ref::<DataSinkExec>()
            && let Some(target) = sink.sink().downcast_ref::<StoreSink>()
        {
            return self.visit_insert(b, &plan, sink, target);
        }
        if plan.is::<ExchangeReaderExec>() {
            return Ok(Cut {
                plan,
                spread: Spread::Whole,
            });
        }
        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>()
            && let Partitioning::Hash(_, n) = repartition.partitioning()
        {
            let n = *n;
            let child = self.visit(b, repartition.input().clone())?;
            let rebuilt = replace_children_if_necessary(plan.clone(), vec![child.plan])?;
            if child.spread == Spread::Whole {
                return Ok(Cut {
                    plan: rebuilt,
                    spread: Spread::Whole,
                });
            }
            let reader =
                b.cut_stage(rebuilt, child.spread, ExchangeKind::Hash { partitions: n })?;
            return Ok(Cut {
                plan: reader,
                spread: Spread::Hash(n),
            });
        }
        if let Some(join) = plan.downcast_ref::<HashJoinExec>()
            && *join.partition_mode() == PartitionMode::CollectLeft
        {
            return self.visit_collect_left(b, &plan, join);
        }
        let plan = distinct_before_hashing(plan)?;
        let cuts = plan
            .children()
            .into_iter()
            .map(|child| self.visit(b, child.clone()))
            .collect::<Result<Vec<_>>>()?;
        self.combine(b, plan, cuts)
    }

    /// A join that collects its left input whole (a broadcast, once cut) over inputs that are
    /// both distributed becomes a partitioned join, both inputs hashed by the join keys, when a
    /// broadcast would cost more than the two exchanges, or when the join keeps left rows that
    /// only the whole right input can decide (semi, anti, outer): run as a broadcast, every task
    /// would emit them, so otherwise both inputs would be gathered and joined in one place.
    fn visit_collect_left(
        &self,
        b: &mut Builder,
        plan: &Arc<dyn ExecutionPlan>,
        join: &HashJoinExec,
    ) -> Result<Cut> {
        let coalesce = join
            .left()
            .downcast_ref::<CoalescePartitionsExec>()
            .map(|_| join.left().clone());
        let build = match &coalesce {
            Some(coalesce) => coalesce.children()[0].clone(),
            None => join.left().clone(),
        };
        // A small build side that only reads the store is read whole by every task that probes,
        // from the store, where a broadcast would cut a stage to gather it first.
        let replicate = !keeps_left(*join.join_type())
            && !join.null_aware
            && replicable(&build)
            && !self.broadcast_costs_more(join);
        let left = if replicate {
            Cut {
                plan: replicate_scans(build)?,
                spread: Spread::Whole,
            }
        } else {
            self.visit(b, build)?
        };
        let right = self.visit(b, join.right().clone())?;
        let distributed = left.spread != Spread::Whole && right.spread != Spread::Whole;
        // `NOT IN` (a null-aware anti join) must see every right row to know there is no null.
        if distributed && !join.null_aware && self.broadcast_costs_more(join) {
            let n = self.hash_partitions;
            let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
            let side = existence_side(join);
            let (mut left, mut right) = (left, right);
            if side == Some(0) {
                left.plan = distinct_keys(left.plan, &left_keys)?;
            } else if side == Some(1) {
                right.plan = distinct_keys(right.plan, &right_keys)?;
            }
            let children = vec![
                hash_exchange(b, left, left_keys, n)?,
                hash_exchange(b, right, right_keys, n)?,
            ];
            let partitioned = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .with_new_children(children)?
                .reset_state()
                .build_exec()?;
            return Ok(Cut {
                plan: partitioned,
                spread: Spread::Hash(n),
            });
        }
        let left = match coalesce {
            Some(coalesce) => self.combine(b, coalesce, vec![left])?,
            None => left,
        };
        self.combine(b, plan.clone(), vec![left, right])
    }

    /// Whether broadcasting `join`'s left input to every task costs more rows than hashing both
    /// inputs once, by upper bounds on their rows (see [`row_bound`]); always, for a join that
    /// keeps unmatched left rows.
    fn broadcast_costs_more(&self, join: &HashJoinExec) -> bool {
        if keeps_left(*join.join_type()) {
            return true;
        }
        let tasks = self.hash_partitions as u64;
        let build = row_bound(join.left());
        let probe = row_bound(join.right());
        build.saturating_mul(tasks.saturating_sub(1)) > probe
    }

    /// The tail of [`Self::visit`]: `plan` over its children's cuts, with the exchanges its
    /// required input distributions call for.
    fn combine(
        &self,
        b: &mut Builder,
        plan: Arc<dyn ExecutionPlan>,
        cuts: Vec<Cut>,
    ) -> Result<Cut> {
        let merges = plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>();
        let requirements = plan.input_distribution_requirements().into_per_child();
        // An input that every task of a stage reads whole must not pass its rows on from every
        // task (a union's constant branch; the preserved side of an outer, semi or anti join,
        // whose unmatched rows only the whole other side can tell): such an operator runs once,
        // where its output goes, over its gathered inputs.
        let spreads: Vec<&Spread> = cuts.iter().map(|c| &c.spread).collect();
        if repeats_whole_rows(&plan, &spreads) {
            return b.gather_inputs(plan, cuts);
        }
        // Children that need no particular distribution (a union's inputs) but cannot share a
        // stage (differently placed keyspaces, shards and hash partitions): each is gathered
        // from its own stages, and the operator runs where its output goes.
        let unconstrained = requirements
            .iter()
            .all(|r| matches!(r, Distribution::UnspecifiedDistribution));
        if !merges
            && unconstrained
            && cuts
                .iter()
                .try_fold(Spread::Whole, |acc, c| merge(acc, c.spread.clone()))
                .is_err()
        {
            return b.gather_inputs(plan, cuts);
        }
        let mut children = Vec::new();
        let mut spread = Spread::Whole;
        for (i, cut) in cuts.into_iter().enumerate() {
            let requirement = requirements
                .get(i)
                .cloned()
                .unwrap_or(Distribution::UnspecifiedDistribution);
            let child_plan = if cut.spread == Spread::Whole {
                cut.plan
            } else if merges {
                b.cut_stage(cut.plan, cut.spread, ExchangeKind::Gather)?
            } else {
                #[expect(deprecated, reason = "DataFusion still reports HashPartitioned")]
                match requirement {
                    Distribution::SinglePartition => {
                        let reader = b.cut_stage(cut.plan, cut.spread, ExchangeKind::Gather)?;
                        Arc::new(CoalescePartitionsExec::new(reader)) as Arc<dyn ExecutionPlan>
                    }
                    Distribution::HashPartitioned(exprs) | Distribution::KeyPartitioned(exprs)
                        if !matches!(cut.spread, Spread::Hash(_)) =>
                    {
                        let n = self.hash_partitions;
                        let repartition = Arc::new(RepartitionExec::try_new(
                            cut.plan,
                            Partitioning::Hash(exprs, n),
                        )?);
                        let reader = b.cut_stage(
                            repartition,
                            cut.spread,
                            ExchangeKind::Hash { partitions: n },
                        )?;
                        spread = merge(spread, Spread::Hash(n))?;
                        reader
                    }
                    _ => {
                        spread = merge(spread, cut.spread)?;
                        cut.plan
                    }
                }
            };
            children.push(child_plan);
        }
        let plan = if children.is_empty() {
            plan
        } else {
            replace_children_if_necessary(plan, children)?
        };
        Ok(Cut { plan, spread })
    }
}

/// Whether `plan`, run in every task of a distributed stage, would return some rows once per task:
/// the rows of an input that each task reads whole (`Spread::Whole`, or a join's collected build
/// side) which the operator passes on without the distributed input deciding it (a union's other
/// branches; the preserved side of an outer, semi or anti join, `NOT IN` among them).
fn repeats_whole_rows(plan: &Arc<dyn ExecutionPlan>, spreads: &[&Spread]) -> bool {
    let whole = |i: usize| spreads.get(i).is_some_and(|s| **s == Spread::Whole);
    let split = |i: usize| spreads.get(i).is_some_and(|s| **s != Spread::Whole);
    if plan.is::<UnionExec>() || plan.is::<InterleaveExec>() {
        return (0..spreads.len()).any(whole) && (0..spreads.len()).any(split);
    }
    let (join_type, collects_left) = if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        (
            *join.join_type(),
            *join.partition_mode() == PartitionMode::CollectLeft,
        )
    } else if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        (*join.join_type(), true)
    } else if let Some(join) = plan.downcast_ref::<SortMergeJoinExec>() {
        (join.join_type(), false)
    } else {
        return false;
    };
    let keeps_left = keeps_left(join_type);
    let keeps_right = matches!(
        join_type,
        JoinType::Right
            | JoinType::RightAnti
            | JoinType::RightSemi
            | JoinType::RightMark
            | JoinType::Full
    );
    (keeps_left && (collects_left || whole(0)) && split(1)) || (keeps_right && whole(1) && split(0))
}

/// Of a semi or anti join, the input (0 left, 1 right) whose rows only say whether a key
/// exists: duplicates of a key there change nothing. Not for `NOT IN` (null-aware) or a join with
/// a filter over both inputs' columns.
fn existence_side(join: &HashJoinExec) -> Option<usize> {
    if join.null_aware || join.filter().is_some() {
        return None;
    }
    match join.join_type() {
        JoinType::LeftSemi | JoinType::LeftAnti => Some(1),
        JoinType::RightSemi | JoinType::RightAnti => Some(0),
        _ => None,
    }
}

/// A partitioned semi or anti join whose existence side is hashed by its keys: each partition
/// of that side is reduced to its distinct keys before the hash exchange (a partial aggregate
/// with no aggregates), so a key repeated across rows crosses the network once per task, not
/// once per row. TPC-H q22's `NOT EXISTS` over orders sends 1.5M order rows for 100k customers.
fn distinct_before_hashing(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(plan);
    };
    let Some(side) = existence_side(join) else {
        return Ok(plan);
    };
    if *join.partition_mode() != PartitionMode::Partitioned {
        return Ok(plan);
    }
    let mut children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let Some(repartition) = children[side].downcast_ref::<RepartitionExec>() else {
        return Ok(plan);
    };
    let Partitioning::Hash(keys, n) = repartition.partitioning().clone() else {
        return Ok(plan);
    };
    let input = distinct_keys(repartition.input().clone(), &keys)?;
    if Arc::ptr_eq(&input, repartition.input()) {
        return Ok(plan);
    }
    children[side] = Arc::new(RepartitionExec::try_new(
        input,
        Partitioning::Hash(keys, n),
    )?);
    Ok(replace_children_if_necessary(plan, children)?)
}

/// `input`'s distinct rows within each partition, when every one of its columns is a key (a
/// `Column` of `keys`): otherwise `input` unchanged, since the other columns would change the
/// rows the join sees.
fn distinct_keys(
    input: Arc<dyn ExecutionPlan>,
    keys: &[Arc<dyn PhysicalExpr>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let key_columns: BTreeSet<usize> = keys
        .iter()
        .filter_map(|k| k.downcast_ref::<Column>().map(Column::index))
        .collect();
    if schema.fields().is_empty()
        || (0..schema.fields().len()).any(|i| !key_columns.contains(&i))
        || input.is::<AggregateExec>()
    {
        return Ok(input);
    }
    let group_by = PhysicalGroupBy::new_single(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                    f.name().clone(),
                )
            })
            .collect(),
    );
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        group_by,
        Vec::new(),
        Vec::new(),
        input,
        schema,
    )?))
}

/// Whether a join emits left rows by what it did not find on the right (outer, semi, anti).
fn keeps_left(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftAnti
            | JoinType::LeftSemi
            | JoinType::LeftMark
            | JoinType::Full
    )
}

/// An upper bound on the rows `plan` returns, from the store's estimates of the rows its scans
/// read: a filter, projection or aggregate returns at most its input, a limit at most its fetch,
/// a semi or anti join at most its kept side, any other join at most the product of its inputs.
/// `u64::MAX` where nothing is known. DataFusion's own estimates assume independent keys and
/// take a foreign-key join to return the smaller side, which is how a join of the largest table
/// came to be broadcast; a broadcast's cost is multiplied by the tasks, so only a bound will do.
fn row_bound(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let bound = if let Some((join_type, left, right)) = join_inputs(plan) {
        let (left, right) = (row_bound(left), row_bound(right));
        match join_type {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
            _ => left.saturating_mul(right),
        }
    } else if plan.children().is_empty() {
        // A leaf: the store's estimate for a scan.
        StatisticsContext::new()
            .compute(plan.as_ref(), &StatisticsArgs::new())
            .ok()
            .and_then(|s| s.num_rows.get_value().copied())
            .map_or(u64::MAX, |rows| rows as u64)
    } else {
        plan.children()
            .into_iter()
            .map(row_bound)
            .fold(0, u64::saturating_add)
    };
    plan.fetch().map_or(bound, |fetch| bound.min(fetch as u64))
}

/// Rows up to which a join's build side that only reads the store is read whole by every task
/// that probes it ([`replicable`]). Reading it costs each task about what receiving its broadcast
/// would, and saves a stage: for small dimension tables (TPC-H's region, nation and supplier) the
/// stage's latency is most of the cost.
const REPLICATED_BUILD_ROWS: u64 = 100_000;

/// Whether every task can compute `plan` itself: it reads store scans only, through operators
/// that need nothing from another task, and at most [`REPLICATED_BUILD_ROWS`] rows by its bound.
fn replicable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    fn local(plan: &Arc<dyn ExecutionPlan>) -> bool {
        if plan.is::<StoreScanExec>() {
            return true;
        }
        let operator = plan.is::<FilterExec>()
            || plan.is::<ProjectionExec>()
            || plan.is::<CoalescePartitionsExec>()
            || plan.is::<RepartitionExec>()
            || plan.is::<HashJoinExec>();
        operator && !plan.children().is_empty() && plan.children().into_iter().all(local)
    }
    local(plan) && row_bound(plan) <= REPLICATED_BUILD_ROWS
}

/// `plan` with its store scans marked to read every shard wherever they run.
fn replicate_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let replicated = plan.transform_up(|node| {
        Ok(match node.downcast_ref::<StoreScanExec>() {
            Some(scan) => Transformed::yes(Arc::new(scan.replicated()) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })?;
    Ok(replicated.data)
}

/// A join's type and its left and right inputs.
type JoinInputs<'a> = (
    JoinType,
    &'a Arc<dyn ExecutionPlan>,
    &'a Arc<dyn ExecutionPlan>,
);

/// A join's type and inputs.
fn join_inputs(plan: &Arc<dyn ExecutionPlan>) -> Option<JoinInputs<'_>> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        Some((*join.join_type(), join.left(), join.right()))
    } else if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        Some((*join.join_type(), join.left(), join.right()))
    } else if let Some(join) = plan.downcast_ref::<SortMergeJoinExec>() {
        Some((join.join_type(), join.left(), join.right()))
    } else if let Some(join) = plan.downcast_ref::<CrossJoinExec>() {
        Some((JoinType::Inner, join.left(), join.right()))
    } else {
        None
    }
}

/// `cut`'s rows hashed by `keys` into `n` partitions: the cut itself where its stage already
/// partitions them so, else a hash exchange after it.
fn hash_exchange(
    b: &mut Builder,
    cut: Cut,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    n: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    if cut.spread == Spread::Hash(n)
        && let Partitioning::Hash(exprs, m) = cut.plan.output_partitioning()
        && *m == n
        && physical_exprs_equal(exprs, &keys)
    {
        return Ok(cut.plan);
    }
    let repartition = Arc::new(RepartitionExec::try_new(
        cut.plan,
        Partitioning::Hash(keys, n),
    )?);
    b.cut_stage(
        repartition,
        cut.spread,
        ExchangeKind::Hash { partitions: n },
    )
}

fn merge(a: Spread, b: Spread) -> Result<Spread> {
    Ok(match (a, b) {
        (Spread::Whole, x) | (x, Spread::Whole) => x,
        (Spread::Shards(mut x), Spread::Shards(y))
            if x.iter()
                .chain(&y)
                .map(|t| &t.keyspace)
                .collect::<BTreeSet<_>>()
                .len()
                == 1 =>
        {
            x.extend(y);
            Spread::Shards(x)
        }
        (Spread::Hash(x), Spread::Hash(y)) if x == y => Spread::Hash(x),
        (x, y) => {
            return Err(Error::NotDistributable {
                reason: format!("one stage would read both {x:?} and {y:?}"),
            });
        }
    })
}

impl Builder {
    /// `plan` run where its output goes, over its inputs gathered from their own stages.
    fn gather_inputs(&mut self, plan: Arc<dyn ExecutionPlan>, cuts: Vec<Cut>) -> Result<Cut> {
        let children = cuts
            .into_iter()
            .map(|cut| match cut.spread {
                Spread::Whole => Ok(cut.plan),
                spread => self.cut_stage(cut.plan, spread, ExchangeKind::Gather),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cut {
            plan: replace_children_if_necessary(plan, children)?,
            spread: Spread::Whole,
        })
    }

    fn next_id(&self) -> StageId {
        StageId(self.stages.len() as u32 + 1)
    }

    /// Ends a stage with `plan` and returns the reader of its output, which takes its place.
    fn cut_stage(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        spread: Spread,
        output: ExchangeKind,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let kind = match spread {
            Spread::Shards(tables) => {
                let keyspaces: BTreeSet<&str> =
                    tables.iter().map(|t| t.keyspace.as_str()).collect();
                if keyspaces.len() > 1 {
                    return Err(Error::NotDistributable {
                        reason: format!(
                            "one stage would scan tables of keyspaces {} together, which are \
                             placed independently",
                            keyspaces.into_iter().collect::<Vec<_>>().join(" and ")
                        ),
                    });
                }
                let keyspace = keyspaces.into_iter().next().unwrap_or_default().to_string();
                StageKind::Scan {
                    keyspace,
                    tables: tables.into_iter().collect(),
                }
            }
            Spread::Hash(partitions) => StageKind::Partitioned { partitions },
            Spread::Whole => StageKind::Driver,
        };
        let schema = plan.schema();
        let id = self.add_stage(plan, kind, Some(output));
        Ok(Arc::new(ExchangeReaderExec::new(id, output, schema)))
    }

    /// Adds a stage; its inputs are the stages whose readers its plan contains.
    fn add_stage(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        kind: StageKind,
        output: Option<ExchangeKind>,
    ) -> StageId {
        let id = self.next_id();
        for input in readers_in(&plan) {
            self.edges.push((input, id));
        }
        self.stages.push(Stage {
            id,
            plan,
            kind,
            output,
        });
        id
    }
}

/// The input stages of a stage plan: the exchange readers it contains.
pub fn readers_in(plan: &Arc<dyn ExecutionPlan>) -> Vec<StageId> {
    let mut found = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some(reader) = p.downcast_ref::<ExchangeReaderExec>() {
            found.push(reader.stage());
        }
        stack.extend(p.children().into_iter().cloned());
    }
    found.sort();
    found.dedup();
    found
}

/// The store scans of a stage plan.
pub fn scans_in(plan: &Arc<dyn ExecutionPlan>) -> Vec<TableName> {
    let mut found = Vec::new();
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some(scan) = p.downcast_ref::<StoreScanExec>() {
            found.push(scan.request().table.clone());
        }
        stack.extend(p.children().into_iter().cloned());
    }
    found
}
