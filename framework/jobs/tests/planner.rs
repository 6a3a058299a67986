//! The distributed planner's cuts, as snapshot files of the stage DAGs (`QUARRY_BLESS=1`
//! rewrites them), and every stage plan through the codec and back.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use quarry_jobs::{
    DistributedPlanner, ExchangeReaderExec, JobGraph, QuarryCodec, StageKind, TaskBinding,
};
use quarry_sql::QuarrySession;
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

struct Fixture {
    session: QuarrySession,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let session = QuarrySession::with_config(
        store.clone(),
        SessionConfig::new().with_target_partitions(4),
    );
    session
        .execute_script(
            "CREATE KEYSPACE iot WITH shards = 64;
             CREATE TABLE iot.r (device bigint, ts timestamp, sensor text, value double,
                                 PRIMARY KEY ((device), ts, sensor));
             CREATE TABLE iot.devices (device bigint, site text, PRIMARY KEY (device));
             CREATE TABLE iot.sites (name text, region text, site_id bigint, PRIMARY KEY (name));
             CREATE KEYSPACE synth WITH shards = 8 AND nodes = 1;
             CREATE TABLE synth.daily (device bigint, n bigint, PRIMARY KEY (device));",
        )
        .await
        .unwrap();
    Fixture {
        session,
        store,
        _dir: dir,
    }
}

async fn physical(f: &Fixture, sql: &str) -> Arc<dyn ExecutionPlan> {
    let state = f.session.context().state();
    let logical = state.create_logical_plan(sql).await.unwrap();
    state.create_physical_plan(&logical).await.unwrap()
}

fn check_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("QUARRY_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}; run with QUARRY_BLESS=1 to write it",
            path.display()
        )
    });
    assert_eq!(
        expected, actual,
        "the stage DAG of {name} changed; if that is intended, rerun with QUARRY_BLESS=1"
    );
}

/// Every worker stage's plan through the codec and back prints the same.
fn round_trips(f: &Fixture, graph: &JobGraph) {
    let codec = QuarryCodec::new(f.store.clone());
    let ctx = f.session.context().task_ctx();
    for stage in graph.stages() {
        if stage.kind == StageKind::Driver {
            // The driver runs its stage itself; it never travels.
            continue;
        }
        let bytes = codec.encode(stage.plan.clone()).unwrap();
        let back = codec.decode(&bytes, &ctx).unwrap();
        assert_eq!(
            displayable(stage.plan.as_ref()).indent(true).to_string(),
            displayable(back.as_ref()).indent(true).to_string(),
            "stage {} changed on the wire",
            stage.id
        );
    }
}

const CASES: [(&str, &str); 8] = [
    (
        "group_by",
        "SELECT sensor, count(*), avg(value) FROM iot.r GROUP BY sensor ORDER BY sensor",
    ),
    ("count", "SELECT count(*) FROM iot.r WHERE value > 10"),
    (
        "top_n",
        "SELECT device, value FROM iot.r ORDER BY value DESC LIMIT 5",
    ),
    // The tables are empty, so by the scans' row estimates every task reads one side whole...
    (
        "join",
        "SELECT d.site, count(*) FROM iot.r r JOIN iot.devices d ON r.device = d.device \
         GROUP BY d.site",
    ),
    // ...and with broadcasts turned off (see `PARTITIONED`) it hashes both.
    (
        "partitioned_join",
        "SELECT d.site, count(*) FROM iot.r r JOIN iot.devices d ON r.device = d.device \
         GROUP BY d.site",
    ),
    (
        "insert_select",
        "INSERT INTO synth.daily SELECT device, count(*) FROM iot.r GROUP BY device",
    ),
    ("point_read", "SELECT * FROM iot.r WHERE device = 42"),
    ("no_table", "SELECT 1 + 1"),
];

/// The case planned with DataFusion's broadcast-join thresholds at zero.
const PARTITIONED: &str = "partitioned_join";

#[tokio::test]
async fn stage_dags_match_their_snapshots_and_survive_the_wire() {
    let f = fixture().await;
    for (name, sql) in CASES {
        let threshold = if name == PARTITIONED { "0" } else { "1048576" };
        let rows = if name == PARTITIONED { "0" } else { "131072" };
        f.session
            .execute_script(&format!(
                "SET datafusion.optimizer.hash_join_single_partition_threshold = {threshold};
                 SET datafusion.optimizer.hash_join_single_partition_threshold_rows = {rows};"
            ))
            .await
            .unwrap();
        let plan = physical(&f, sql).await;
        let graph = DistributedPlanner::new(4).plan(plan).unwrap();
        assert_eq!(graph.root().kind, StageKind::Driver);
        check_snapshot(name, &format!("-- {sql}\n{graph}"));
        round_trips(&f, &graph);
    }
}

#[tokio::test]
async fn partial_aggregates_run_beside_the_data_and_final_ones_after_a_hash_exchange() {
    let f = fixture().await;
    let plan = physical(&f, CASES[0].1).await;
    let graph = DistributedPlanner::new(4).plan(plan).unwrap();
    let stages = graph.stages();
    let scan = stages[0];
    assert!(matches!(scan.kind, StageKind::Scan { ref keyspace, .. } if keyspace == "iot"));
    let text = displayable(scan.plan.as_ref()).indent(true).to_string();
    assert!(
        text.contains("mode=Partial") && text.contains("RepartitionExec"),
        "{text}"
    );
    let after = stages[1];
    assert_eq!(after.kind, StageKind::Partitioned { partitions: 4 });
    assert_eq!(graph.inputs(after.id), vec![scan.id]);
    assert_eq!(graph.consumers(scan.id), vec![after.id]);
}

#[tokio::test]
async fn a_task_codec_binds_exchange_readers_to_their_inputs() {
    let f = fixture().await;
    let plan = physical(&f, CASES[0].1).await;
    let graph = DistributedPlanner::new(4).plan(plan).unwrap();
    let consumer = graph.stages()[1];
    let input = graph.inputs(consumer.id)[0];
    let bytes = QuarryCodec::new(f.store.clone())
        .encode(consumer.plan.clone())
        .unwrap();
    let outputs = (0..3)
        .map(|i| quarry_jobs::TaskOutput {
            task: quarry_jobs::TaskId {
                job: quarry_jobs::JobId(1),
                stage: input,
                index: i,
                attempt: 0,
            },
            endpoint: format!("http://127.0.0.1:{}", 9000 + i),
            partitions: 4,
        })
        .collect();
    let codec = QuarryCodec::for_task(
        f.store.clone(),
        TaskBinding {
            shards: None,
            hash_partitions: vec![2],
            inputs: [(input, outputs)].into(),
            client: Arc::new(NoExchange),
            scan_partitions: 2,
        },
    );
    let plan = codec
        .decode(&bytes, &f.session.context().task_ctx())
        .unwrap();
    let mut readers = Vec::new();
    let mut stack = vec![plan];
    while let Some(p) = stack.pop() {
        if let Some(r) = p.downcast_ref::<ExchangeReaderExec>() {
            readers.push(displayable(r).one_line().to_string());
        }
        stack.extend(p.children().into_iter().cloned());
    }
    // Hash partition 2 of three producer tasks: one partition, three locations.
    assert_eq!(readers.len(), 1, "{readers:?}");
    assert!(readers[0].contains("locations=3"), "{readers:?}");
}

#[tokio::test]
async fn a_union_of_two_keyspaces_reads_each_from_its_own_stage() {
    let f = fixture().await;
    let plan = physical(
        &f,
        "SELECT count(*) FROM (SELECT device FROM iot.r UNION ALL SELECT device FROM synth.daily)",
    )
    .await;
    let graph = DistributedPlanner::new(4).plan(plan).unwrap();
    let mut keyspaces: Vec<String> = graph
        .stages()
        .iter()
        .filter_map(|s| match &s.kind {
            StageKind::Scan { keyspace, .. } => Some(keyspace.clone()),
            _ => None,
        })
        .collect();
    keyspaces.sort();
    assert_eq!(keyspaces, ["iot", "synth"], "{graph}");
    assert_eq!(graph.root().kind, StageKind::Driver);
    round_trips(&f, &graph);
}

#[tokio::test]
async fn a_join_that_would_scan_two_keyspaces_in_one_stage_is_refused_with_the_reason() {
    let f = fixture().await;
    // Without hash repartitioning (a cross join of scans), both scans would share one stage.
    let plan = physical(
        &f,
        "SELECT count(*) FROM iot.r, synth.daily WHERE iot.r.device < synth.daily.n",
    )
    .await;
    match DistributedPlanner::new(4).plan(plan) {
        Ok(graph) => {
            // DataFusion may gather one side (a broadcast); then every scan stage has one
            // keyspace.
            for stage in graph.stages() {
                if let StageKind::Scan { tables, .. } = &stage.kind {
                    let keyspaces: std::collections::BTreeSet<_> =
                        tables.iter().map(|t| &t.keyspace).collect();
                    assert_eq!(keyspaces.len(), 1, "{graph}");
                }
            }
        }
        Err(quarry_jobs::Error::NotDistributable { reason }) => {
            assert!(
                reason.contains("iot") && reason.contains("synth"),
                "{reason}"
            );
        }
        Err(other) => panic!("{other}"),
    }
}

/// The router sends each row to the write group of its target shard, and nowhere else.
#[tokio::test]
async fn rows_are_routed_to_the_group_of_their_target_shard() {
    use arrow::array::{Int64Array, RecordBatch};
    use datafusion::datasource::memory::MemorySourceConfig;
    use futures::TryStreamExt;
    use quarry_core::shard_map::ShardMap;
    use quarry_core::shard_set::ShardSet;
    use quarry_jobs::write::ShardRouterExec;

    let f = fixture().await;
    let def = f
        .store
        .table(&quarry_core::schema::TableName::new("synth", "daily"))
        .unwrap();
    let schema = def.arrow_schema();
    let batches: Vec<RecordBatch> = (0..3)
        .map(|b| {
            let devices: Vec<i64> = (b * 100..(b + 1) * 100).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(devices.clone())),
                    Arc::new(Int64Array::from(devices)),
                ],
            )
            .unwrap()
        })
        .collect();
    // Two input partitions; groups as a scheduler might make them, not contiguous.
    let input = MemorySourceConfig::try_new_exec(
        &[batches[..2].to_vec(), batches[2..].to_vec()],
        schema.clone(),
        None,
    )
    .unwrap();
    let groups = vec![
        ShardSet::from_ranges([0..=1, 5..=5]),
        ShardSet::from_ranges([2..=4]),
        ShardSet::from_ranges([6..=7]),
    ];
    let router = ShardRouterExec::try_new(input, def.clone(), 8, groups.clone()).unwrap();
    assert_eq!(router.properties().partitioning.partition_count(), 3);
    let ctx = f.session.context().task_ctx();
    let shards = ShardMap::new(8);
    let mut seen = 0;
    for (p, group) in groups.iter().enumerate() {
        let out: Vec<RecordBatch> = router
            .execute(p, ctx.clone())
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for batch in &out {
            let tokens = quarry_store::row_tokens(&def, batch).unwrap();
            for token in tokens.values() {
                assert!(group.contains(shards.shard_of(*token)), "partition {p}");
            }
            seen += batch.num_rows();
        }
    }
    assert_eq!(seen, 300, "every row is routed exactly once");

    // Groups must cover every shard once.
    let input = MemorySourceConfig::try_new_exec(&[Vec::new()], schema, None).unwrap();
    let gap = ShardRouterExec::try_new(input, def, 8, groups[..2].to_vec()).unwrap_err();
    assert!(gap.to_string().contains("in no write group"), "{gap}");
}

/// A write plan is checked against the worker's own catalog before anything is allocated for it.
#[tokio::test]
async fn a_write_plan_for_another_shard_count_is_refused() {
    let f = fixture().await;
    let plan = physical(
        &f,
        "INSERT INTO synth.daily SELECT device, count(*) FROM iot.r GROUP BY device",
    )
    .await;
    let graph = DistributedPlanner::new(4).plan(plan).unwrap();
    let router = graph
        .stages()
        .into_iter()
        .find(|s| s.plan.name() == "ShardRouterExec")
        .unwrap();
    let bytes = QuarryCodec::new(f.store.clone())
        .encode(router.plan.clone())
        .unwrap();
    // A worker whose store placed synth with 16 shards, not 8.
    let other = fixture().await;
    other
        .session
        .execute_script(
            "DROP TABLE synth.daily; DROP KEYSPACE synth;
             CREATE KEYSPACE synth WITH shards = 16 AND nodes = 1;
             CREATE TABLE synth.daily (device bigint, n bigint, PRIMARY KEY (device));",
        )
        .await
        .unwrap();
    let ctx = other.session.context().task_ctx();
    let err = QuarryCodec::new(other.store.clone())
        .decode(&bytes, &ctx)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("routes 8 shards of keyspace synth, which has 16"),
        "{err}"
    );
}

/// A scan refers to columns by position: a worker whose catalog orders or types the table's
/// columns differently (a definition it has not reloaded yet) refuses it, naming both sides.
#[tokio::test]
async fn a_scan_planned_against_other_columns_than_the_workers_is_refused() {
    let f = fixture().await;
    let plan = physical(
        &f,
        "SELECT sum(site_id) FROM iot.sites WHERE region = 'north'",
    )
    .await;
    let graph = DistributedPlanner::new(4).plan(plan).unwrap();
    let scan_stage = graph
        .stages()
        .into_iter()
        .find(|s| matches!(s.kind, StageKind::Scan { .. }))
        .unwrap();
    let bytes = QuarryCodec::new(f.store.clone())
        .encode(scan_stage.plan.clone())
        .unwrap();
    // The worker's definition has the same columns in another order.
    let other = fixture().await;
    other
        .session
        .execute_script(
            "DROP TABLE iot.sites;
             CREATE TABLE iot.sites (site_id bigint, region text, name text, PRIMARY KEY (name));",
        )
        .await
        .unwrap();
    let ctx = other.session.context().task_ctx();
    let err = QuarryCodec::new(other.store.clone())
        .decode(&bytes, &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("planned with columns (") && err.contains("of iot.sites"),
        "{err}"
    );
    // The same definition decodes.
    let ctx = f.session.context().task_ctx();
    QuarryCodec::new(f.store.clone())
        .decode(&bytes, &ctx)
        .unwrap();
}

/// The aggregates of every `AggregateExec` in `plan`, as (mode, function implementation).
fn aggregates(
    plan: &Arc<dyn ExecutionPlan>,
    out: &mut Vec<(String, Arc<dyn datafusion::logical_expr::AggregateUDFImpl>)>,
) {
    if let Some(aggregate) =
        plan.downcast_ref::<datafusion::physical_plan::aggregates::AggregateExec>()
    {
        for expr in aggregate.aggr_expr() {
            out.push((
                format!("{:?}", aggregate.mode()),
                expr.fun().inner().clone(),
            ));
        }
    }
    for child in plan.children() {
        aggregates(child, out);
    }
}

#[tokio::test]
async fn checked_sum_and_avg_cross_the_wire_by_name_and_resolve_to_the_checked_ones() {
    use quarry_sql::checked_aggregates::{CheckedAvg, CheckedSum};
    use std::any::Any;

    let f = fixture().await;
    let plan = physical(
        &f,
        "SELECT device, sum(n), avg(CAST(n AS decimal(20, 2))) FROM synth.daily GROUP BY device",
    )
    .await;
    let graph = DistributedPlanner::new(4).plan(plan).unwrap();
    // A worker's session decodes the stages: the functions resolve by name in its registry.
    let worker = QuarrySession::with_config(f.store.clone(), SessionConfig::new());
    let ctx = worker.context().task_ctx();
    let codec = QuarryCodec::new(f.store.clone());
    let mut found = Vec::new();
    for stage in graph.stages() {
        if stage.kind == StageKind::Driver {
            continue;
        }
        let back = codec
            .decode(&codec.encode(stage.plan.clone()).unwrap(), &ctx)
            .unwrap();
        aggregates(&back, &mut found);
    }
    assert!(
        found.iter().any(|(mode, _)| mode == "Partial"),
        "no partial aggregate on a worker: {:?}",
        found.iter().map(|(m, _)| m).collect::<Vec<_>>()
    );
    for (mode, fun) in &found {
        let fun: &dyn Any = fun.as_ref();
        assert!(
            fun.is::<CheckedSum>() || fun.is::<CheckedAvg>(),
            "a {mode} aggregate decoded to {}",
            std::any::type_name_of_val(fun)
        );
    }
    assert_eq!(found.len() % 2, 0, "sum and avg in every aggregate");
}

/// The stage that runs the plan's only hash join, and the join's mode.
fn join_stage(graph: &JobGraph) -> (StageKind, String) {
    let stage = graph
        .stages()
        .into_iter()
        .find(|s| {
            displayable(s.plan.as_ref())
                .indent(true)
                .to_string()
                .contains("HashJoinExec")
        })
        .expect("a stage with the join");
    let text = displayable(stage.plan.as_ref()).indent(true).to_string();
    let mode = ["Partitioned", "CollectLeft"]
        .into_iter()
        .find(|m| text.contains(&format!("mode={m}")))
        .unwrap_or("other")
        .to_string();
    (stage.kind.clone(), mode)
}

#[tokio::test]
async fn exists_and_not_exists_join_on_the_workers_hashed_by_key_not_gathered_at_the_driver() {
    let f = fixture().await;
    for sql in [
        "SELECT site FROM iot.devices d WHERE EXISTS \
         (SELECT 1 FROM iot.r r WHERE r.device = d.device AND r.value > 90)",
        "SELECT site FROM iot.devices d WHERE NOT EXISTS \
         (SELECT 1 FROM iot.r r WHERE r.device = d.device AND r.value > 90)",
    ] {
        let graph = DistributedPlanner::new(4)
            .plan(physical(&f, sql).await)
            .unwrap();
        let (kind, mode) = join_stage(&graph);
        assert_eq!(
            (kind, mode.as_str()),
            (StageKind::Partitioned { partitions: 4 }, "Partitioned"),
            "{sql}\n{graph}"
        );
        // The readings only say whether a device has one: each task sends its distinct devices
        // through the exchange, not every reading.
        let readings = graph
            .stages()
            .into_iter()
            .map(|s| displayable(s.plan.as_ref()).indent(true).to_string())
            .find(|text| text.contains("table=iot.r,"))
            .expect("a stage scanning the readings");
        let distinct = readings
            .find("AggregateExec: mode=Partial, gby=[device@0 as device], aggr=[]")
            .unwrap_or_else(|| panic!("no distinct before the exchange:\n{readings}"));
        assert!(
            readings
                .find("RepartitionExec")
                .is_some_and(|r| r < distinct),
            "{readings}"
        );
        round_trips(&f, &graph);
    }
}

#[tokio::test]
async fn a_join_broadcasts_its_build_side_only_while_that_is_cheaper_than_hashing_both() {
    let f = fixture().await;
    f.session
        .execute_script(
            "INSERT INTO iot.devices SELECT value, 'site' FROM generate_series(1, 10);
             INSERT INTO iot.r SELECT value % 10, to_timestamp(value), 'temp', 1.0
                 FROM generate_series(1, 2000);",
        )
        .await
        .unwrap();
    // Ten devices to four tasks (40 rows) cost less than hashing 2,000 readings: broadcast.
    let small = "SELECT d.site, count(*) FROM iot.r r JOIN iot.devices d ON r.device = d.device \
                 GROUP BY d.site";
    // A join of the readings with themselves has a build side as large as its probe side.
    let large = "SELECT count(*) FROM iot.r a JOIN iot.r b ON a.device = b.device AND a.ts = b.ts";
    for (sql, expected) in [(small, "CollectLeft"), (large, "Partitioned")] {
        let graph = DistributedPlanner::new(4)
            .plan(physical(&f, sql).await)
            .unwrap();
        let (_, mode) = join_stage(&graph);
        assert_eq!(mode, expected, "{sql}\n{graph}");
        round_trips(&f, &graph);
    }
}

#[tokio::test]
async fn a_small_build_side_is_read_whole_by_every_task_instead_of_a_stage_gathering_it() {
    let f = fixture().await;
    f.session
        .execute_script(
            "INSERT INTO iot.devices SELECT value, 'site' || (value % 3) FROM generate_series(1, 10);
             INSERT INTO iot.r SELECT value, to_timestamp(value), 'temp', 1.0
                 FROM generate_series(1, 2000);",
        )
        .await
        .unwrap();
    // Not on the partition key, so that a reading's device is seldom in the reading's shard.
    let sql = "SELECT d.site, count(*) FROM iot.r r JOIN iot.devices d \
               ON r.device % 10 + 1 = d.device GROUP BY d.site";
    let graph = DistributedPlanner::new(4)
        .plan(physical(&f, sql).await)
        .unwrap();
    // No stage of its own for the devices: the readings' stage joins and reads them itself.
    let scans: Vec<_> = graph
        .stages()
        .into_iter()
        .filter(|s| matches!(s.kind, StageKind::Scan { .. }))
        .collect();
    assert_eq!(scans.len(), 1, "{graph}");
    let text = displayable(scans[0].plan.as_ref()).indent(true).to_string();
    assert!(
        text.contains("table=iot.devices") && text.contains("replicated"),
        "{text}"
    );
    round_trips(&f, &graph);

    // Four tasks over four shard groups: each reads its readings and every device, so the
    // joined rows add up to all the readings.
    let bytes = QuarryCodec::new(f.store.clone())
        .encode(scans[0].plan.clone())
        .unwrap();
    let mut joined = 0;
    for group in ["0-15", "16-31", "32-47", "48-63"] {
        let codec = QuarryCodec::for_task(
            f.store.clone(),
            TaskBinding {
                shards: Some(group.parse().unwrap()),
                hash_partitions: Vec::new(),
                inputs: Default::default(),
                client: Arc::new(NoExchange),
                scan_partitions: 2,
            },
        );
        let ctx = f.session.context().task_ctx();
        let plan = codec.decode(&bytes, &ctx).unwrap();
        for batch in datafusion::physical_plan::collect(plan, ctx).await.unwrap() {
            let counts = batch
                .column(1)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            joined += counts.iter().flatten().sum::<i64>();
        }
    }
    assert_eq!(joined, 2000);
}

/// An exchange client that fetches nothing: for plans that read no exchange, or are only
/// decoded.
#[derive(Debug)]
struct NoExchange;

impl quarry_jobs::ExchangeClient for NoExchange {
    fn fetch(
        &self,
        _location: &quarry_jobs::PartitionLocation,
        _schema: arrow::datatypes::SchemaRef,
    ) -> datafusion::common::Result<datafusion::execution::SendableRecordBatchStream> {
        datafusion::common::internal_err!("not fetched in this test")
    }
}
