//! The driver and workers in one process, on loopback ports: plans, jobs, heartbeats and
//! hostile requests.

mod common;

use std::time::{Duration, Instant};

use arrow_flight::{FlightClient, Ticket};
use common::{TestCluster, lines, numbers};
use prost::Message;
use quarry_client::Client;
use quarry_client::auth::{AuthChannel, Bearer, Secret, with_bearer};
use quarry_client::tls::{Tls, TlsFiles};
use quarry_driver::daemon::DriverConfig;
use quarry_driver::daemon::job_tracker::JobState;
use quarry_proto::v1 as pb;
use quarry_proto::v1::driver_service_client::DriverServiceClient;
use quarry_proto::v1::worker_service_client::WorkerServiceClient;

/// A raw connection to a daemon, sending `secret` (or nothing) with every call.
async fn channel(url: &str, secret: Option<&Secret>) -> AuthChannel {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    with_bearer(channel, Bearer::new(secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_stages_exchanges_and_where_tasks_run() {
    let cluster = TestCluster::start(3, DriverConfig::default()).await;
    numbers(&cluster, 64, 1000).await;
    let plan = lines(
        &cluster
            .sql("EXPLAIN SELECT g, count(*) FROM k.t GROUP BY g ORDER BY g")
            .await,
    )
    .join("\n");
    // Partial aggregation beside the data, final aggregation after a hash exchange, the merge
    // of sorted outputs at the driver.
    assert!(plan.contains("stage 1: scan k.t"), "{plan}");
    assert!(plan.contains("hash("), "{plan}");
    assert!(plan.contains("AggregateExec: mode=Partial"), "{plan}");
    assert!(plan.contains("StoreScanExec"), "{plan}");
    assert!(plan.contains("result"), "{plan}");
    for node in 1..=3 {
        assert!(plan.contains(&format!("worker-node-{node}:")), "{plan}");
    }
    assert!(plan.contains("task(s) over "), "{plan}");
    // Which shards each worker reads, abbreviated: 64 shards over 3 nodes are scattered.
    assert!(plan.contains(" shards (0"), "{plan}");

    // A scalar subquery is explained before the query it feeds, which waits for its value;
    // nothing runs.
    let jobs_before = cluster.driver().jobs.list().len();
    let plan = lines(
        &cluster
            .sql("EXPLAIN SELECT count(*) FROM k.t WHERE id > (SELECT avg(id) FROM k.t)")
            .await,
    )
    .join("\n");
    let subquery = plan.find("scalar subquery 1: runs first").expect(&plan);
    let query = plan.find("the query:").expect(&plan);
    assert!(subquery < query, "{plan}");
    assert!(plan[subquery..query].contains("AggregateExec"), "{plan}");
    assert!(
        plan[query..].contains("scalar_subquery(<pending>)"),
        "{plan}"
    );
    assert_eq!(cluster.driver().jobs.list().len(), jobs_before, "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_tracked_with_their_stages_and_tasks() {
    let cluster = TestCluster::start(3, DriverConfig::default()).await;
    numbers(&cluster, 800, 3000).await;
    let output = cluster
        .sql("SELECT g, count(*) FROM k.t WHERE g < 3 GROUP BY g ORDER BY g")
        .await;
    // id % 97 = g: ids 1..3000 give 31 of g = 0 (97, 194, ...) and 31 or 30 of the others.
    let expected: Vec<String> = (0..3)
        .map(|g| {
            let n = (1..=3000u64).filter(|id| id % 97 == g).count();
            format!("{g}|{n}")
        })
        .collect();
    assert_eq!(lines(&output), expected);
    let job = cluster
        .driver()
        .jobs
        .list()
        .into_iter()
        .find(|j| j.sql.contains("WHERE g < 3"))
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert!(job.stages.len() >= 2, "{:?}", job.stages);
    let scan = &job.stages[0];
    // 800 shards on 3 workers: a handful of tasks per worker, none remote.
    assert!(
        (3..=3 * 8).contains(&scan.tasks_total),
        "{} tasks",
        scan.tasks_total
    );
    assert_eq!(scan.tasks_remote, 0);
    assert_eq!(
        scan.metrics.rows_in, 3000,
        "the scan stage read every row once"
    );
    for stage in &job.stages {
        assert_eq!(stage.tasks_done, stage.tasks_total, "{stage:?}");
        assert_eq!(stage.tasks_retried, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_is_written_by_the_workers_beside_the_target_shards() {
    let cluster = TestCluster::start(3, DriverConfig::default()).await;
    numbers(&cluster, 64, 3000).await;
    // The synthetic keyspace lives on two of the three nodes.
    cluster
        .sql("CREATE KEYSPACE synth WITH shards = 32 AND nodes = 2")
        .await;
    cluster
        .sql("CREATE TABLE synth.by_g (g bigint, n bigint, PRIMARY KEY (g))")
        .await;
    let insert = "INSERT INTO synth.by_g SELECT g, count(*) FROM k.t GROUP BY g";
    let upserted = |o: quarry_sql::QueryOutput| o.message.unwrap_or_default();
    assert_eq!(upserted(cluster.sql(insert).await), "upserted 97 rows");

    let expected: Vec<String> = (0..97u64)
        .map(|g| {
            let n = (1..=3000u64).filter(|id| id % 97 == g).count();
            format!("{g}|{n}")
        })
        .collect();
    let read = "SELECT g, n FROM synth.by_g ORDER BY g";
    assert_eq!(lines(&cluster.sql(read).await), expected);

    let driver = cluster.driver();
    let job = driver
        .jobs
        .list()
        .into_iter()
        .find(|j| j.sql == insert)
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    let write = job
        .stages
        .iter()
        .find(|s| s.description.starts_with("write synth.by_g"))
        .unwrap_or_else(|| panic!("no write stage in {:?}", job.stages));
    assert_eq!(write.runs_on, "workers");
    assert_eq!(write.tasks_remote, 0, "{write:?}");
    assert_eq!(write.metrics.rows_in, 97, "each row was written once");
    // Every writer sits on a node that holds the synthetic keyspace.
    let keyspace = quarry_store::Store::keyspace(driver.store.as_ref(), "synth").unwrap();
    let placement =
        quarry_core::placement::Placement::compute(&keyspace, &driver.cluster_nodes()).unwrap();
    let holders: std::collections::HashSet<_> = (0..keyspace.shards)
        .flat_map(|s| placement.replicas(quarry_core::ids::ShardId(s)).to_vec())
        .collect();
    assert_eq!(holders.len(), 2);
    for task in &write.tasks {
        let worker = driver
            .registry
            .get(&quarry_jobs::WorkerId(task.worker.clone()))
            .unwrap();
        assert!(
            holders.contains(&worker.node),
            "{task:?} ran on {}",
            worker.node
        );
    }

    // Running it again converges to the same table.
    assert_eq!(upserted(cluster.sql(insert).await), "upserted 97 rows");
    assert_eq!(lines(&cluster.sql(read).await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_report_the_shards_their_nodes_hold() {
    let config = DriverConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..DriverConfig::default()
    };
    let cluster = TestCluster::start(3, config).await;
    numbers(&cluster, 64, 10).await;
    let driver = cluster.driver();
    let keyspace = quarry_store::Store::keyspace(driver.store.as_ref(), "k").unwrap();
    let placement =
        quarry_core::placement::Placement::compute(&keyspace, &driver.cluster_nodes()).unwrap();
    // The keyspace was created after the workers registered: their heartbeats bring it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = driver.registry.live();
        if live.iter().all(|w| w.local_shards.contains_key("k")) {
            for w in &live {
                let reported = &w.local_shards["k"];
                for shard in (0..64).map(quarry_core::ids::ShardId) {
                    assert_eq!(
                        reported.contains(shard),
                        placement.replicas(shard).contains(&w.node),
                        "{} and shard {shard:?}",
                        w.id
                    );
                }
            }
            break;
        }
        assert!(Instant::now() < deadline, "no worker reported k's shards");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `quarry workers` shows them too.
    let summaries = quarry_driver::daemon::rpc::worker_summary(
        &driver.registry.all().into_iter().next().unwrap(),
    );
    assert!(!summaries.worker.unwrap().local_shards.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_reach_the_client_while_the_job_runs_and_it_ends_when_the_client_stops() {
    let cluster = TestCluster::start(1, DriverConfig::default()).await;
    let mut client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    // Far more rows than the stream's buffers hold: the job cannot finish before they are read.
    let sql = "SELECT value, value * 2 AS twice FROM generate_series(1, 3000000) AS s(value)";
    let mut result = client.sql_stream(sql).await.unwrap();
    let first = result.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    let job = |cluster: &TestCluster| {
        cluster
            .driver()
            .jobs
            .list()
            .into_iter()
            .find(|j| j.sql == sql)
            .unwrap()
    };
    assert_eq!(job(&cluster).state, JobState::Running);
    let mut rows = first.num_rows();
    for _ in 0..3 {
        rows += result.next().await.unwrap().unwrap().num_rows();
    }
    assert!(rows < 3_000_000);
    assert_eq!(job(&cluster).state, JobState::Running);

    // The client goes away: the job stops rather than computing for nobody.
    drop(result);
    let deadline = Instant::now() + Duration::from_secs(10);
    while job(&cluster).state == JobState::Running {
        assert!(Instant::now() < deadline, "the job outlived its client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_error_fails_the_job_at_once_with_its_message() {
    let cluster = TestCluster::start(2, DriverConfig::default()).await;
    numbers(&cluster, 16, 100).await;
    cluster
        .sql("CREATE TABLE k.words (id bigint, w text, PRIMARY KEY (id))")
        .await;
    cluster
        .sql("INSERT INTO k.words VALUES (1, 'one'), (2, 'two')")
        .await;
    let started = Instant::now();
    let error = cluster
        .sql_error("SELECT sum(CAST(w AS INT)) FROM k.words")
        .await;
    assert!(
        error.to_lowercase().contains("cast"),
        "the message says what failed: {error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "no retries");
    let job = cluster.driver().jobs.list().into_iter().next().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.stages.iter().all(|s| s.tasks_retried == 0));
    // Kept on the record, as the task runner classified it, and shown to clients.
    assert_eq!(job.failure, Some(quarry_jobs::Failure::USER));
    let secret = cluster.driver().auth.cluster_secret.clone();
    let mut rpc = DriverServiceClient::new(channel(&cluster.cluster.url, Some(&secret)).await);
    let shown = rpc
        .get_job(pb::GetJobRequest {
            job_id: job.id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
        .error
        .unwrap();
    assert_eq!(shown.kind, pb::ErrorKind::User as i32);
    assert!(!shown.retryable);
    // The cluster still answers.
    assert_eq!(
        lines(&cluster.sql("SELECT count(*) FROM k.t").await),
        ["100"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_flowing_while_a_task_holds_the_cpu() {
    let config = DriverConfig {
        heartbeat_interval: Duration::from_millis(50),
        lost_after: Duration::from_secs(5),
        ..DriverConfig::default()
    };
    let cluster = TestCluster::start(1, config).await;
    const ROWS: u64 = 24_000;
    numbers(&cluster, 16, ROWS).await;
    let driver = cluster.driver().clone();
    let query = tokio::spawn(async move {
        let started = Instant::now();
        let result = driver
            .run_statement(
                "SELECT count(*) FROM k.t a CROSS JOIN k.t b WHERE (a.id * b.id) % 7 = 3",
                &[],
                "busy",
            )
            .await;
        (result.map(|o| lines(&o)), started.elapsed())
    });
    let mut longest_silence = Duration::ZERO;
    let mut busy_samples = 0;
    while !query.is_finished() {
        for w in cluster.driver().registry.all() {
            longest_silence = longest_silence.max(w.last_seen);
            assert!(w.alive, "the worker was declared lost while busy");
            if w.running_tasks > 0 {
                busy_samples += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (result, elapsed) = query.await.unwrap();
    let expected = {
        // Pairs (a, b) with a * b = 3 (mod 7), counted by residue.
        let mut of_residue = [0u64; 7];
        for id in 1..=ROWS {
            of_residue[(id % 7) as usize] += 1;
        }
        let mut n = 0;
        for (ra, ca) in of_residue.iter().enumerate() {
            for (rb, cb) in of_residue.iter().enumerate() {
                if (ra * rb) % 7 == 3 {
                    n += ca * cb;
                }
            }
        }
        vec![n.to_string()]
    };
    assert_eq!(result.unwrap(), expected);
    assert!(
        elapsed > Duration::from_millis(500) && busy_samples >= 5,
        "the query must keep the worker busy for many heartbeats to test anything \
         (took {elapsed:?}, {busy_samples} busy samples)"
    );
    assert!(
        longest_silence < Duration::from_millis(400),
        "heartbeats stalled for {longest_silence:?} while the task ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_errors_and_the_daemons_keep_serving() {
    let cluster = TestCluster::start(1, DriverConfig::default()).await;
    numbers(&cluster, 16, 50).await;
    // Calls as a process of the cluster would make them.
    let secret = cluster.driver().auth.cluster_secret.clone();
    let driver_channel = channel(&cluster.cluster.url, Some(&secret)).await;
    let mut driver = DriverServiceClient::new(driver_channel.clone());
    let worker_url = cluster.driver().registry.live()[0].endpoint.clone();
    let mut worker = WorkerServiceClient::new(channel(&worker_url, Some(&secret)).await);

    // Another protocol version, at registration and on heartbeats.
    let wrong = driver
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: 99,
            worker: Some(pb::WorkerInfo {
                worker_id: "w".into(),
                node_id: "n".into(),
                flight_endpoint: "http://127.0.0.1:1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
    assert!(wrong.message().contains("99"), "{}", wrong.message());
    let wrong = driver
        .heartbeat(pb::HeartbeatRequest {
            protocol_version: 0,
            worker_id: "w".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
    let backwards = driver
        .heartbeat(pb::HeartbeatRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            worker_id: "w".into(),
            running_tasks: 0,
            local_shards: vec![pb::ShardRange {
                keyspace: "k".into(),
                first: 9,
                last: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), tonic::Code::InvalidArgument);
    assert!(
        backwards.message().contains("backwards"),
        "{}",
        backwards.message()
    );

    // Missing and oversized fields.
    let missing = driver
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            worker: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    let long_name = driver
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            worker: Some(pb::WorkerInfo {
                worker_id: "w".repeat(100_000),
                node_id: "n".into(),
                flight_endpoint: "http://127.0.0.1:1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(long_name.code(), tonic::Code::InvalidArgument);
    let greedy = driver
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            worker: Some(pb::WorkerInfo {
                worker_id: "greedy".into(),
                node_id: "n".into(),
                flight_endpoint: "http://127.0.0.1:1".into(),
                task_slots: u32::MAX,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(greedy.code(), tonic::Code::InvalidArgument);
    assert!(
        greedy.message().contains("task_slots"),
        "{}",
        greedy.message()
    );
    assert_eq!(cluster.driver().registry.live().len(), 1);

    // Unknown and malformed ids.
    let unknown = driver
        .get_job(pb::GetJobRequest {
            job_id: "12345".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad = driver
        .cancel_job(pb::CancelJobRequest {
            job_id: "not-a-job".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let unknown_task = worker
        .get_task(pb::GetTaskRequest {
            task: Some(pb::TaskId {
                job_id: "1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_task.code(), tonic::Code::NotFound);

    // A truncated message: a length-delimited field that claims more bytes than it has.
    let mut raw = tonic::client::Grpc::new(driver_channel.clone());
    raw.ready().await.unwrap();
    let truncated = raw
        .unary::<Raw, pb::RegisterWorkerResponse, _>(
            tonic::Request::new(Raw {
                worker: vec![0x0a, 100, b'a', b'b'],
            }),
            http::uri::PathAndQuery::from_static("/quarry.v1.DriverService/RegisterWorker"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_ne!(truncated.code(), tonic::Code::Ok);

    // A task whose plan is garbage fails as a task; it does not take the worker down.
    let status = launch(&mut worker, "7", vec![0xff; 64]).await;
    assert_eq!(status.state, pb::TaskState::Failed as i32);
    assert!(!status.error.unwrap().message.is_empty());

    // A payload past the message limit.
    let huge = worker
        .launch_task(pb::LaunchTaskRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            task: Some(pb::TaskDefinition {
                plan: vec![1; 65 * 1024 * 1024],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::OutOfRange, "{huge}");

    // A task reading its inputs from a worker the driver never registered is refused before it
    // runs (the worker would otherwise dial that address with the cluster secret); one reading
    // from a registered worker gets past that check and fails on its garbage plan.
    let reading_from = |endpoint: &str| pb::LaunchTaskRequest {
        protocol_version: quarry_proto::PROTOCOL_VERSION,
        task: Some(pb::TaskDefinition {
            task: Some(pb::TaskId {
                job_id: "8".into(),
                stage_id: 2,
                partition: 0,
                attempt: 0,
            }),
            plan: vec![0xff; 8],
            inputs: vec![pb::StageInput {
                stage_id: 1,
                outputs: vec![pb::TaskOutputLocation {
                    task: Some(pb::TaskId {
                        job_id: "8".into(),
                        stage_id: 1,
                        partition: 0,
                        attempt: 0,
                    }),
                    flight_endpoint: endpoint.to_string(),
                    partitions: 1,
                }],
            }],
            ..Default::default()
        }),
    };
    let stranger = worker
        .launch_task(reading_from("http://127.0.0.99:9"))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::PermissionDenied, "{stranger}");
    assert!(
        stranger.message().contains("http://127.0.0.99:9")
            && stranger.message().contains("not a worker registered"),
        "{stranger}"
    );
    let registered = worker
        .launch_task(reading_from(&worker_url))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(registered.state, pb::TaskState::Failed as i32);
    assert!(
        !registered
            .error
            .unwrap()
            .message
            .contains("not a worker registered"),
        "a registered worker's endpoint passes"
    );

    // Flight tickets that are not tickets, or name nothing.
    let mut flight = FlightClient::new(channel(&worker_url, Some(&secret)).await);
    let garbage = flight
        .do_get(Ticket::new(vec![0xff, 0x01]))
        .await
        .err()
        .unwrap();
    assert!(garbage.to_string().contains("exchange ticket"), "{garbage}");
    let nothing = flight
        .do_get(Ticket::new(
            pb::ExchangeTicket {
                task: Some(pb::TaskId {
                    job_id: "1".into(),
                    ..Default::default()
                }),
                partition: 0,
            }
            .encode_to_vec(),
        ))
        .await
        .err()
        .unwrap();
    assert!(nothing.to_string().contains("keeps no output"), "{nothing}");
    let mut driver_flight = FlightClient::new(driver_channel);
    let garbage = driver_flight
        .do_get(Ticket::new(vec![0x12, 0xff]))
        .await
        .err()
        .unwrap();
    assert!(garbage.to_string().contains("query ticket"), "{garbage}");
    // The rest of Flight is refused, saying what each daemon serves.
    let refused = flight
        .do_action(arrow_flight::Action::new("x", ""))
        .await
        .err()
        .unwrap();
    assert!(
        refused.to_string().contains("only serves DoGet"),
        "{refused}"
    );
    let refused = driver_flight.list_actions().await.err().unwrap();
    assert!(
        refused
            .to_string()
            .contains("DoPut (loads), not ListActions"),
        "{refused}"
    );

    // Both daemons still work.
    assert_eq!(
        lines(&cluster.sql("SELECT count(*) FROM k.t").await),
        ["50"]
    );
    assert_eq!(cluster.driver().registry.live().len(), 1);
}

/// Launches task 0 of stage 1 of job `job` with `plan` on `worker`; its final status.
async fn launch(
    worker: &mut WorkerServiceClient<AuthChannel>,
    job: &str,
    plan: Vec<u8>,
) -> pb::TaskStatus {
    worker
        .launch_task(pb::LaunchTaskRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            task: Some(pb::TaskDefinition {
                task: Some(pb::TaskId {
                    job_id: job.into(),
                    stage_id: 1,
                    partition: 0,
                    attempt: 0,
                }),
                plan,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

/// A message whose field 2 is raw bytes where `RegisterWorkerRequest` expects a `WorkerInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct Raw {
    #[prost(bytes = "vec", tag = "2")]
    worker: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_800_shard_table_is_scheduled_and_answered() {
    let cluster = TestCluster::start(3, DriverConfig::default()).await;
    cluster.sql("CREATE KEYSPACE e WITH shards = 800").await;
    cluster
        .sql("CREATE TABLE e.t (id bigint, v double, PRIMARY KEY (id))")
        .await;
    let output = cluster.sql("SELECT count(*), sum(v) FROM e.t").await;
    assert_eq!(lines(&output), ["0|NULL"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_right_secret_are_refused_and_change_nothing() {
    let cluster = TestCluster::start(1, DriverConfig::default()).await;
    numbers(&cluster, 8, 100).await;
    let url = &cluster.cluster.url;
    let count = "SELECT count(*) FROM k.t";

    // No token, or a wrong one: every statement is refused before it runs, saying why.
    let mut anonymous = Client::connect(url, None).await.unwrap();
    let refused = anonymous.sql("DROP KEYSPACE k").await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("no credentials"),
        "{refused:#}"
    );
    let wrong = Secret::new("not-the-token").unwrap();
    let mut impostor = Client::connect(url, Some(&wrong)).await.unwrap();
    let refused = impostor.sql("DROP TABLE k.t").await.unwrap_err();
    assert!(format!("{refused:#}").contains("not valid"), "{refused:#}");
    let listed = impostor.rpc().list_jobs(pb::ListJobsRequest {}).await;
    assert_eq!(listed.unwrap_err().code(), tonic::Code::Unauthenticated);

    // The client token runs SQL and sees jobs, but cannot pose as a worker.
    let mut client = Client::connect(url, Some(cluster.token())).await.unwrap();
    assert_eq!(lines(&client.sql(count).await.unwrap()), ["100"]);
    let posing = client
        .rpc()
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            worker: Some(pb::WorkerInfo {
                worker_id: "worker-node-1".into(),
                node_id: "node-1".into(),
                flight_endpoint: "http://127.0.0.1:1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(posing.code(), tonic::Code::PermissionDenied, "{posing}");
    let module = client
        .rpc()
        .get_module(pb::GetModuleRequest {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            hash: "0".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(module.code(), tonic::Code::PermissionDenied, "{module}");

    // Workers serve only the cluster: neither no token nor the client token reaches them.
    let worker_url = cluster.driver().registry.live()[0].endpoint.clone();
    for secret in [None, Some(cluster.token())] {
        let mut worker = WorkerServiceClient::new(channel(&worker_url, secret).await);
        let refused = worker
            .cancel_task(pb::CancelTaskRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
        let mut flight = FlightClient::new(channel(&worker_url, secret).await);
        let refused = flight.do_get(Ticket::new(vec![1])).await.err().unwrap();
        assert!(
            refused.to_string().contains("authentication credentials"),
            "{refused}"
        );
    }

    // Nothing was dropped, and the worker still registered is the real one.
    assert_eq!(lines(&cluster.sql(count).await), ["100"]);
    let live = cluster.driver().registry.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].endpoint, worker_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_the_drivers_files_and_runtime_options_only_where_the_operator_allows() {
    let cluster = TestCluster::start(1, DriverConfig::default()).await;
    let out = cluster.dir.path().join("copied.parquet");
    let copy = format!(
        "COPY (SELECT 1 AS one) TO '{}' STORED AS PARQUET",
        out.display()
    );
    let err = cluster.sql_error(&copy).await;
    assert!(err.contains("--allow-file-access"), "{err}");
    assert!(!out.exists(), "a refused COPY wrote nothing");
    let err = cluster
        .sql_error("SET datafusion.runtime.temp_directory = '/'")
        .await;
    assert!(
        err.contains("may not set datafusion.runtime.temp_directory"),
        "{err}"
    );
    let settings = [("datafusion.catalog.location".to_string(), "/".to_string())];
    let err = cluster
        .driver()
        .run_statement("SELECT 1", &settings, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("may not set datafusion.catalog.location"),
        "{err}"
    );
    // Planning options stay the client's to set.
    cluster
        .sql("SET datafusion.optimizer.hash_join_single_partition_threshold = 0")
        .await;

    // Through Flight, the refusal is PermissionDenied.
    let mut remote = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let err = remote.sql(&copy).await.unwrap_err().to_string();
    assert!(err.contains("--allow-file-access"), "{err}");
    assert!(!out.exists());

    let allowed = TestCluster::start(
        1,
        DriverConfig {
            allow_file_access: true,
            ..DriverConfig::default()
        },
    )
    .await;
    allowed.sql(&copy).await;
    assert!(
        out.exists(),
        "an operator's --allow-file-access lets COPY write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_a_task_that_would_read_its_files() {
    let cluster = TestCluster::start(1, DriverConfig::default()).await;
    // A plan that scans a Parquet file on the worker's host, as datafusion-proto can carry one.
    let ctx = datafusion::prelude::SessionContext::new();
    let file = cluster.dir.path().join("secret.parquet");
    ctx.sql(&format!(
        "COPY (SELECT 'do not read' AS s) TO '{}' STORED AS PARQUET",
        file.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    let scan = ctx
        .read_parquet(
            file.to_string_lossy().as_ref(),
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let plan = quarry_jobs::QuarryCodec::new(cluster.store.clone())
        .encode(scan)
        .unwrap();
    let secret = cluster.driver().auth.cluster_secret.clone();
    let worker_url = cluster.driver().registry.live()[0].endpoint.clone();
    let mut worker = WorkerServiceClient::new(channel(&worker_url, Some(&secret)).await);
    let status = launch(&mut worker, "8", plan).await;
    assert_eq!(status.state, pb::TaskState::Failed as i32);
    // The worker has no object store to decode a file scan against; were one registered, the
    // allow-list would refuse the node (`quarry_jobs::allow_list`'s own tests).
    let message = status.error.unwrap().message;
    assert!(
        message.contains("not DataSourceExec") || message.contains("No suitable object store"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_limit_sorts_spill_and_what_cannot_spill_fails_the_job_once() {
    const LIMIT: u64 = 8 << 20;
    let cluster = TestCluster::start(
        1,
        DriverConfig {
            memory_limit: Some(LIMIT),
            ..DriverConfig::default()
        },
    )
    .await;
    // 800,000 rows of (id, v): about 13 MB as a sort holds them, twice that while sorting, all
    // on the one worker: past its limit, so the sort must spill to finish.
    const ROWS: i64 = 800_000;
    numbers(&cluster, 16, ROWS as u64).await;
    let sorted = lines(&cluster.sql("SELECT id FROM k.t ORDER BY v DESC").await);
    let expected: Vec<String> = (1..=ROWS).rev().map(|i| i.to_string()).collect();
    assert!(
        sorted == expected,
        "the spilled sort returned every row in order"
    );

    // A join builds its hash table in memory: over the limit, the job fails with the reason,
    // at once, without moving the task from worker to worker.
    let started = Instant::now();
    let error = cluster
        .sql_error("SELECT count(*) FROM k.t a JOIN k.t b ON a.v = b.v")
        .await;
    assert!(error.contains("Resources exhausted"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "no retries");
    let job = cluster.driver().jobs.list().into_iter().next().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.stages.iter().all(|s| s.tasks_retried == 0), "{job:?}");
    assert_eq!(
        cluster.driver().registry.live().len(),
        1,
        "the worker was not lost"
    );
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1, as PEM files in `dir`.
fn certificates(dir: &std::path::Path, name: &str) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let write = |file: &str, pem: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    TlsFiles {
        cert: Some(write("cert.pem", cert.pem())),
        key: Some(write("key.pem", key.serialize_pem())),
        ca: Some(write("ca.pem", ca.pem())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_certificates_every_connection_is_tls_and_other_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = certificates(dir.path(), "cluster");
    let cluster = TestCluster::start(
        2,
        DriverConfig {
            tls: files.clone(),
            ..DriverConfig::default()
        },
    )
    .await;
    let url = cluster.cluster.url.clone();
    assert!(url.starts_with("https://"), "{url}");
    // The insert runs on the workers: tasks launched, rows exchanged and staged, all over TLS.
    numbers(&cluster, 16, 1000).await;
    let workers = cluster.driver().registry.live();
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w.endpoint.starts_with("https://")));

    let trusting = Tls::load(&TlsFiles {
        ca: files.ca.clone(),
        ..TlsFiles::default()
    })
    .unwrap();
    let mut client = Client::connect_with(&url, Some(cluster.token()), &trusting)
        .await
        .unwrap();
    let output = client
        .sql("SELECT g, count(*) FROM k.t GROUP BY g ORDER BY g LIMIT 2")
        .await
        .unwrap();
    // 1..=1000 by id % 97: g = 0 has 10 ids (97, 194, ..., 970), g = 1 has 11 (1, 98, ..., 971).
    assert_eq!(lines(&output), ["0|10", "1|11"]);

    // Without the CA, the client says what it needs.
    let err = Client::connect(&url, Some(cluster.token()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--tls-ca"), "{err}");
    // Trusting another CA, the handshake fails.
    let stranger = certificates(dir.path(), "stranger");
    let other = Tls::load(&TlsFiles {
        ca: stranger.ca,
        ..TlsFiles::default()
    })
    .unwrap();
    let refused = match Client::connect_with(&url, Some(cluster.token()), &other).await {
        Err(_) => true,
        Ok(mut c) => c.sql("SELECT 1").await.is_err(),
    };
    assert!(refused, "a server certificate from another CA was accepted");
    // Plain HTTP/2 to the TLS port gets nowhere.
    let plain = url.replace("https://", "http://");
    let refused = match Client::connect(&plain, Some(cluster.token())).await {
        Err(_) => true,
        Ok(mut c) => c.sql("SELECT 1").await.is_err(),
    };
    assert!(refused, "a plaintext client was served");
}

/// Sends and receives gRPC messages as raw bytes: whatever the fuzzer made.
#[derive(Debug, Clone, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// A fuzzed message: random bytes, or a valid message with bytes flipped, cut off or repeated,
/// or with its varints turned to their largest values.
fn fuzzed(rng: &mut rand::rngs::SmallRng, valid: &[Vec<u8>]) -> Vec<u8> {
    use rand::Rng;
    let base = valid[rng.random_range(0..valid.len())].clone();
    match rng.random_range(0..5) {
        0 => (0..rng.random_range(0..512))
            .map(|_| rng.random())
            .collect(),
        1 => {
            let mut m = base;
            for _ in 0..rng.random_range(1..8) {
                if !m.is_empty() {
                    let i = rng.random_range(0..m.len());
                    m[i] ^= 1 << rng.random_range(0..8);
                }
            }
            m
        }
        2 => {
            let mut m = base;
            m.truncate(rng.random_range(0..=m.len()));
            m
        }
        3 => base.repeat(rng.random_range(2..50)),
        _ => base
            .into_iter()
            .map(|b| if b & 0x80 != 0 { 0xff } else { b })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_messages_to_every_rpc_get_replies_and_change_nothing() {
    use rand::SeedableRng;
    let cluster = TestCluster::start(2, DriverConfig::default()).await;
    numbers(&cluster, 16, 2000).await;
    let before = lines(
        &cluster
            .sql("SELECT count(*), sum(id), sum(v) FROM k.t")
            .await,
    );
    let secret = cluster.driver().auth.cluster_secret.clone();
    let token = cluster.token().clone();
    let worker_url = cluster.driver().registry.live()[0].endpoint.clone();
    let task = pb::TaskId {
        job_id: "1".into(),
        stage_id: 1,
        partition: 0,
        attempt: 0,
    };
    // Valid messages to mutate, one or more per method.
    let driver_methods: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "ListWorkers",
            vec![pb::ListWorkersRequest {}.encode_to_vec()],
        ),
        ("ListJobs", vec![pb::ListJobsRequest {}.encode_to_vec()]),
        (
            "GetJob",
            vec![pb::GetJobRequest { job_id: "1".into() }.encode_to_vec()],
        ),
        (
            "CancelJob",
            vec![pb::CancelJobRequest { job_id: "1".into() }.encode_to_vec()],
        ),
        (
            "PutModule",
            vec![
                pb::PutModuleRequest {
                    protocol_version: quarry_proto::PROTOCOL_VERSION,
                    module: b"\0asm\x01\0\0\0".to_vec(),
                }
                .encode_to_vec(),
            ],
        ),
        (
            "PlanRustJob",
            vec![
                pb::PlanRustJobRequest {
                    protocol_version: quarry_proto::PROTOCOL_VERSION,
                    module_hash: "00".repeat(32),
                    args: Vec::new(),
                }
                .encode_to_vec(),
            ],
        ),
        (
            "RegisterWorker",
            vec![
                pb::RegisterWorkerRequest {
                    protocol_version: quarry_proto::PROTOCOL_VERSION,
                    worker: Some(pb::WorkerInfo {
                        worker_id: "fuzz".into(),
                        node_id: "n".into(),
                        flight_endpoint: "http://127.0.0.1:1".into(),
                        task_slots: 2,
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            ],
        ),
        (
            "Heartbeat",
            vec![pb::HeartbeatRequest::default().encode_to_vec()],
        ),
        (
            "GetModule",
            vec![pb::GetModuleRequest::default().encode_to_vec()],
        ),
    ];
    let worker_methods: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "LaunchTask",
            vec![
                pb::LaunchTaskRequest {
                    protocol_version: quarry_proto::PROTOCOL_VERSION,
                    task: Some(pb::TaskDefinition {
                        task: Some(task.clone()),
                        plan: vec![1, 2, 3],
                        hash_partitions: vec![0, 1],
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            ],
        ),
        (
            "CancelTask",
            vec![
                pb::CancelTaskRequest {
                    task: Some(task.clone()),
                }
                .encode_to_vec(),
            ],
        ),
        (
            "GetTask",
            vec![
                pb::GetTaskRequest {
                    task: Some(task.clone()),
                }
                .encode_to_vec(),
            ],
        ),
        (
            "ReleaseJob",
            vec![pb::ReleaseJobRequest { job_id: "1".into() }.encode_to_vec()],
        ),
    ];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    // Clients hold the token, so the driver is fuzzed with it (calls only the cluster may make
    // are refused before decoding); workers take only the cluster secret.
    for (service, url, bearer, methods) in [
        (
            "quarry.v1.DriverService",
            cluster.cluster.url.clone(),
            &token,
            &driver_methods,
        ),
        (
            "quarry.v1.WorkerService",
            worker_url.clone(),
            &secret,
            &worker_methods,
        ),
    ] {
        let mut grpc = tonic::client::Grpc::new(channel(&url, Some(bearer)).await);
        for (method, valid) in methods {
            let path: http::uri::PathAndQuery = format!("/{service}/{method}").parse().unwrap();
            for _ in 0..40 {
                let message = fuzzed(&mut rng, valid);
                grpc.ready().await.unwrap();
                let reply = grpc
                    .unary(tonic::Request::new(message), path.clone(), RawBytes)
                    .await;
                if let Err(status) = reply {
                    // A reply, not a dropped connection or a crashed handler.
                    assert_ne!(
                        status.code(),
                        tonic::Code::Unavailable,
                        "{method}: {status}"
                    );
                    assert!(!status.message().contains("panicked"), "{method}: {status}");
                }
            }
        }
    }
    // Both daemons still serve, nothing changed, and queries still run on both workers.
    assert_eq!(cluster.driver().registry.live().len(), 2);
    let after = lines(
        &cluster
            .sql("SELECT count(*), sum(id), sum(v) FROM k.t")
            .await,
    );
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_the_drivers_timeout_is_stopped_and_says_why() {
    let cluster = TestCluster::start(
        2,
        DriverConfig {
            job_timeout: Some(Duration::from_millis(500)),
            ..DriverConfig::default()
        },
    )
    .await;
    numbers(&cluster, 16, 20_000).await;
    // 400 million pairs, each through a square root and two trigonometric functions: tens of
    // seconds of CPU, far more than half a second on any machine (a plain `a.v + b.v < 0` once
    // finished within the half second on a fast one).
    let started = Instant::now();
    let error = cluster
        .sql_error(
            "SELECT count(*) FROM k.t a, k.t b \
             WHERE sqrt(a.v * b.v + 1) + sin(a.v) * cos(b.v) < 0",
        )
        .await;
    assert!(error.contains("job timeout"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let job = cluster.driver().jobs.list().into_iter().next().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.failure, Some(quarry_jobs::Failure::USER));
    // Short queries still run (on a loaded machine, the stopped tasks may still hold the cores
    // for a moment: a few tries within the half second each).
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        match cluster
            .driver()
            .run_statement("SELECT count(*) FROM k.t", &[], "test")
            .await
        {
            Ok(output) => {
                assert_eq!(lines(&output), ["20000"]);
                return;
            }
            Err(e) => outcomes.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("a short query never finished within the timeout: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_in_parts_published_together_and_oversized_ones_are_refused() {
    let cluster = TestCluster::start(
        1,
        DriverConfig {
            // Every batch its own staged part; at most 1 MB in all.
            upload_part_bytes: 1,
            max_upload_bytes: 1 << 20,
            ..DriverConfig::default()
        },
    )
    .await;
    numbers(&cluster, 16, 10).await;
    let client = Client::connect(&cluster.cluster.url, Some(cluster.token()))
        .await
        .unwrap();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("g", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Float64, true),
    ]));
    let batch = |from: i64, to: i64| {
        arrow::array::RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(from..to)),
                std::sync::Arc::new(arrow::array::Int64Array::from_iter_values(
                    (from..to).map(|i| i % 7),
                )),
                std::sync::Arc::new(arrow::array::Float64Array::from_iter_values(
                    (from..to).map(|i| i as f64),
                )),
            ],
        )
        .unwrap()
    };
    // Three parts, one commit.
    let rows = client
        .load(
            "k.t",
            vec![batch(100, 1100), batch(1100, 2100), batch(2100, 3100)],
        )
        .await
        .unwrap();
    assert_eq!(rows, 3000);
    assert_eq!(
        lines(&cluster.sql("SELECT count(*), sum(id) FROM k.t").await),
        [format!("3010|{}", 55 + (100..3100).sum::<i64>())]
    );
    // Over the cap after two parts were staged: refused, and none of it is visible.
    let before = lines(&cluster.sql("SELECT count(*), sum(id) FROM k.t").await);
    let err = client
        .load(
            "k.t",
            (0..200)
                .map(|i| batch(10_000 + i * 1000, 11_000 + i * 1000))
                .collect(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than the driver accepts"), "{err}");
    assert_eq!(
        lines(&cluster.sql("SELECT count(*), sum(id) FROM k.t").await),
        before
    );
    // Its staged parts are gone: every staged file left is one the manifest lists.
    let manifest = std::fs::read_to_string(cluster.dir.path().join("MANIFEST.json")).unwrap();
    let mut stack = vec![cluster.dir.path().join("data")];
    let mut strays = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else if name.starts_with("staged-") && !manifest.contains(&name) {
                strays.push(name);
            }
        }
    }
    assert!(
        strays.is_empty(),
        "parts of the refused upload left: {strays:?}"
    );
}
