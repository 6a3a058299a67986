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

const CASES: [(&str, &str); 7] = [
    (
        "group_by",
        "SELECT sensor, count(*), avg(value) FROM iot.r GROUP BY sensor ORDER BY sensor",
    ),
    ("count", "SELECT count(*) FROM iot.r WHERE value > 10"),
    (
        "top_n",
        "SELECT device, value FROM iot.r ORDER BY value DESC LIMIT 5",
    ),
    (
        "join",
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

#[tokio::test]
async fn stage_dags_match_their_snapshots_and_survive_the_wire() {
    let f = fixture().await;
    for (name, sql) in CASES {
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
    #[derive(Debug)]
    struct Nowhere;
    impl quarry_jobs::ExchangeClient for Nowhere {
        fn fetch(
            &self,
            _location: &quarry_jobs::PartitionLocation,
            _schema: arrow::datatypes::SchemaRef,
        ) -> datafusion::common::Result<datafusion::execution::SendableRecordBatchStream> {
            datafusion::common::internal_err!("not fetched in this test")
        }
    }
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
            client: Arc::new(Nowhere),
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
async fn scans_of_two_keyspaces_in_one_stage_are_refused_with_the_reason() {
    let f = fixture().await;
    let plan = physical(
        &f,
        "SELECT count(*) FROM (SELECT device FROM iot.r UNION ALL SELECT device FROM synth.daily)",
    )
    .await;
    match DistributedPlanner::new(4).plan(plan) {
        Err(quarry_jobs::Error::NotDistributable { reason }) => {
            assert!(reason.contains("iot and synth"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
