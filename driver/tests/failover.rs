//! The real binaries as separate processes: a `quarry driver` and three `quarry worker`s on
//! loopback ports sharing a temporary data directory. Workers are SIGKILLed in the middle of
//! queries, and the driver is killed and restarted under running workers.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lines;
use quarry_client::Client;
use quarry_client::auth::{Bearer, CLUSTER_SECRET_FILE, Secret, TOKEN_FILE, with_bearer};
use quarry_proto::v1 as pb;

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn quarry(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quarry"));
    command
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Files under `data/` named as staged parts that MANIFEST.json does not list.
fn unlisted_staged_files(dir: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.json")).unwrap();
    let mut found = Vec::new();
    let mut stack = vec![dir.join("data")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.starts_with("staged-") && !manifest.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

/// Starts `quarry driver` and returns it with its URL (read from its first line of output).
fn start_driver(dir: &Path, listen: &str) -> (Process, String) {
    let mut child = quarry(dir)
        .args(["driver", "--listen", listen, "--heartbeat-ms", "100"])
        .args(["--lost-after-ms", "1500", "--nodes", "node-1,node-2,node-3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("driver listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (Process(child), url)
}

fn start_worker(dir: &Path, url: &str, node: &str) -> Process {
    Process(
        quarry(dir)
            .args(["worker", "--driver", url, "--node", node, "--slots", "1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Polls `condition` until it holds or `timeout` passes.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live_workers(driver: &Client) -> Vec<String> {
    match driver.rpc().list_workers(pb::ListWorkersRequest {}).await {
        Ok(r) => r
            .into_inner()
            .workers
            .into_iter()
            .filter(|w| w.alive)
            .filter_map(|w| w.worker.map(|i| i.node_id))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The endpoint of the live worker beside `node`.
async fn worker_endpoint(driver: &Client, node: &str) -> String {
    let workers = driver
        .rpc()
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    workers
        .into_iter()
        .filter(|w| w.alive)
        .filter_map(|w| w.worker)
        .find(|w| w.node_id == node)
        .map(|w| w.rpc_endpoint)
        .unwrap_or_else(|| panic!("no live worker beside {node}"))
}

/// How many tasks of `job` (first attempts of the first stages) the worker at `endpoint` knows;
/// asked with the cluster secret in `dir`, as the driver asks.
async fn tasks_of_job(dir: &Path, endpoint: &str, job: &str) -> usize {
    let secret = Secret::read(&dir.join(CLUSTER_SECRET_FILE)).unwrap();
    let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
    else {
        return 0;
    };
    let mut worker = pb::worker_service_client::WorkerServiceClient::new(with_bearer(
        channel,
        Bearer::new(Some(&secret)),
    ));
    let mut known = 0;
    for stage_id in 1..=4 {
        for partition in 0..8 {
            let task = pb::TaskId {
                job_id: job.to_string(),
                stage_id,
                partition,
                attempt: 0,
            };
            let request = pb::GetTaskRequest { task: Some(task) };
            if worker.get_task(request).await.is_ok() {
                known += 1;
            }
        }
    }
    known
}

/// The running job of the client labelled `label`, with its tasks done so far, as `driver`
/// sees it.
async fn running_job(driver: &Client, label: &str) -> Option<(String, u32)> {
    let jobs = driver.jobs().await.ok()?;
    jobs.into_iter()
        .find(|j| j.label == label && j.state == pb::JobState::Running as i32)
        .map(|j| (j.job_id, j.tasks_done))
}

const QUERY: &str = "SELECT a.g, count(*), sum(b.v) FROM k.t a JOIN k.t b ON a.id = b.id + 1 \
                     GROUP BY a.g ORDER BY a.g";

/// Runs `sql` on a second connection and SIGKILLs `victim` once the job has finished some
/// tasks; returns the result and the job's id.
async fn run_and_kill(
    url: &str,
    token: &Secret,
    sql: &str,
    victim: &mut Process,
) -> (quarry_client::Result<Vec<String>>, String) {
    run_and(url, token, sql, || {
        victim.0.kill().unwrap();
        let _ = victim.0.wait();
    })
    .await
}

/// Runs `sql` on a second connection and does `act` once the job has finished some tasks;
/// returns the result and the job's id.
async fn run_and(
    url: &str,
    token: &Secret,
    sql: &str,
    act: impl FnOnce(),
) -> (quarry_client::Result<Vec<String>>, String) {
    let mut runner = Client::connect(url, Some(token)).await.unwrap();
    let watcher = runner.clone();
    let sql = sql.to_string();
    let query = tokio::spawn(async move { runner.sql(&sql).await.map(|o| lines(&o)) });
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        if let Some((id, done)) = running_job(&watcher, watcher.label()).await
            && done >= 1
        {
            break id;
        }
        assert!(
            Instant::now() < deadline && !query.is_finished(),
            "the job never ran a task while still running; make the query bigger"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !query.is_finished(),
        "the query finished before a worker could be killed; make it bigger"
    );
    act();
    (query.await.unwrap(), job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_a_restarted_driver_change_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut driver_process, url) = start_driver(dir.path(), "127.0.0.1:0");
    let mut workers: Vec<Process> = (1..=3)
        .map(|i| start_worker(dir.path(), &url, &format!("node-{i}")))
        .collect();
    // The driver created its token in the data directory as it started.
    let token = Secret::read(&dir.path().join(TOKEN_FILE)).unwrap();
    let mut client = Client::connect(&url, Some(&token)).await.unwrap();
    eventually("3 workers", Duration::from_secs(30), || {
        let client = client.clone();
        async move { live_workers(&client).await.len() == 3 }
    })
    .await;

    for sql in [
        "CREATE KEYSPACE k WITH shards = 800",
        "CREATE TABLE k.t (id bigint, g bigint, v double, PRIMARY KEY (id))",
        "INSERT INTO k.t SELECT value, value % 13, CAST(value AS DOUBLE) / 2 FROM generate_series(1, 600000) AS s(value)",
        "CREATE TABLE k.out (g bigint, n bigint, PRIMARY KEY (g))",
    ] {
        client.sql(sql).await.unwrap();
    }
    let expected = lines(&client.sql(QUERY).await.unwrap());
    assert_eq!(expected.len(), 13);

    // A worker dies mid-query: its tasks run again elsewhere, its lost outputs are recomputed.
    let (result, job) = run_and_kill(&url, &token, QUERY, &mut workers[1]).await;
    assert_eq!(result.unwrap(), expected);
    let stages = client
        .rpc()
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner()
        .stages;
    let retried: u32 = stages.iter().map(|s| s.tasks_retried).sum();
    assert!(retried >= 1, "no task ran again: {stages:?}");
    // The record counts each of the two scans of k.t once: runs that failed, and runs whose
    // output was lost with the worker, are not counted beside the runs that replaced them.
    let read: u64 = stages
        .iter()
        .filter_map(|s| s.metrics.as_ref()?.rows_read.get("k.t"))
        .sum();
    assert_eq!(read, 2 * 600_000, "{stages:?}");
    assert_eq!(live_workers(&client).await.len(), 2);

    // An INSERT ... SELECT interrupted by another lost worker, then run again, converges to the
    // table a clean run gives.
    let insert = "INSERT INTO k.out SELECT a.g, count(*) FROM k.t a JOIN k.t b ON a.id = b.id + 1 GROUP BY a.g";
    // The interrupted run may succeed (its tasks re-ran) or fail; either way, run it again.
    let _ = run_and_kill(&url, &token, insert, &mut workers[2]).await;
    client.sql(insert).await.unwrap();
    let table = lines(
        &client
            .sql("SELECT g, n FROM k.out ORDER BY g")
            .await
            .unwrap(),
    );
    let clean: Vec<String> = expected
        .iter()
        .map(|l| l.split('|').take(2).collect::<Vec<_>>().join("|"))
        .collect();
    assert_eq!(table, clean);
    // What the writers staged is either in the table or gone: the interrupted run's parts were
    // published or discarded, and lost attempts' parts swept. The sweep runs as the statement's
    // plan is dropped, which may be just after its client has the answer.
    let staged_dir = dir.path().to_path_buf();
    eventually(
        "no staged file left behind",
        Duration::from_secs(10),
        || {
            let strays = unlisted_staged_files(&staged_dir);
            async move { strays.is_empty() }
        },
    )
    .await;

    // The driver dies while a query runs: the client gets an error, not a hang. Once the only
    // surviving worker holds a task of the query it is frozen (SIGSTOP), so the query cannot
    // finish before the driver is killed; a query that finished before the freeze runs again.
    let survivor = worker_endpoint(&client, "node-1").await;
    let (pending, long_label, long_job) = 'query: {
        for _ in 0..5 {
            let mut long = Client::connect(&url, Some(&token)).await.unwrap();
            let long_label = long.label().to_string();
            let pending = tokio::spawn(async move { long.sql(QUERY).await });
            let deadline = Instant::now() + Duration::from_secs(60);
            let job = loop {
                if let Some((job, _)) = running_job(&client, &long_label).await
                    && tasks_of_job(dir.path(), &survivor, &job).await > 0
                {
                    break Some(job);
                }
                if pending.is_finished() {
                    break None;
                }
                assert!(
                    Instant::now() < deadline,
                    "the surviving worker never ran a task of the long query"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if let Some(job) = job {
                signal(&workers[0], "STOP");
                if running_job(&client, &long_label).await.is_some() {
                    break 'query (pending, long_label, job);
                }
                signal(&workers[0], "CONT");
            }
            let _ = pending.await;
        }
        panic!("the long query finished before its worker could be frozen, 5 times");
    };
    driver_process.0.kill().unwrap();
    let _ = driver_process.0.wait();
    let outcome = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the client hung after the driver died")
        .unwrap();
    assert!(
        outcome.is_err(),
        "a query through a dead driver cannot succeed"
    );
    signal(&workers[0], "CONT");

    // A new driver on the same address: the surviving worker registers again and reads the
    // lost nodes' shards remotely.
    let address = url.trim_start_matches("http://").to_string();
    let (_driver_process, url2) = start_driver(dir.path(), &address);
    assert_eq!(url2, url);
    client = Client::connect(&url, Some(&token)).await.unwrap();
    eventually(
        "the worker to register again",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move { live_workers(&client).await == ["node-1"] }
        },
    )
    .await;
    // The worker registered with a new driver, which knows none of the old one's jobs: it dropped
    // their tasks and outputs.
    assert_eq!(tasks_of_job(dir.path(), &survivor, &long_job).await, 0);
    let count = client.sql("SELECT count(*) FROM k.t").await.unwrap();
    assert_eq!(lines(&count), ["600000"]);
    let jobs = client
        .rpc()
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    // The new driver read the old one's job history: the query it was running has failed.
    let interrupted = jobs
        .iter()
        .find(|j| j.sql == QUERY && j.label == long_label)
        .unwrap_or_else(|| panic!("the interrupted job is not in the history: {jobs:?}"));
    assert_eq!(interrupted.state, pb::JobState::Failed as i32);
    let message = interrupted.error.as_ref().map(|e| e.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("driver stopped")),
        "{message:?}"
    );
    let stages = client
        .rpc()
        .get_job(pb::GetJobRequest {
            job_id: jobs[0].job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stages;
    assert!(
        stages.iter().any(|s| s.tasks_remote > 0),
        "shards of lost nodes are read remotely: {stages:?}"
    );
}

/// Sends `signal` (`STOP`, `CONT`) to a child process.
fn signal(process: &Process, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(process.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_is_reported_lost_and_the_query_still_answers_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_driver, url) = start_driver(dir.path(), "127.0.0.1:0");
    let workers: Vec<Process> = (1..=3)
        .map(|i| start_worker(dir.path(), &url, &format!("node-{i}")))
        .collect();
    let token = Secret::read(&dir.path().join(TOKEN_FILE)).unwrap();
    let client = Client::connect(&url, Some(&token)).await.unwrap();
    eventually("3 workers", Duration::from_secs(30), || {
        let client = client.clone();
        async move { live_workers(&client).await.len() == 3 }
    })
    .await;
    let mut setup = client.clone();
    for sql in [
        "CREATE KEYSPACE k WITH shards = 800",
        "CREATE TABLE k.t (id bigint, g bigint, v double, PRIMARY KEY (id))",
        "INSERT INTO k.t SELECT value, value % 13, CAST(value AS DOUBLE) / 2 FROM generate_series(1, 600000) AS s(value)",
    ] {
        setup.sql(sql).await.unwrap();
    }
    let expected = lines(&setup.sql(QUERY).await.unwrap());

    // SIGSTOP: the process keeps its sockets open (connections neither fail nor close) but
    // answers nothing, like a VM paused or a network black hole.
    let frozen = &workers[1];
    let stopped_at = std::cell::Cell::new(None);
    let (result, _) = run_and(&url, &token, QUERY, || {
        signal(frozen, "STOP");
        stopped_at.set(Some(Instant::now()));
    })
    .await;
    let took = stopped_at.get().unwrap().elapsed();
    assert_eq!(result.unwrap(), expected);
    assert!(
        took < Duration::from_secs(30),
        "the query took {took:?} after a worker froze"
    );
    eventually(
        "the frozen worker to be reported lost",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move { !live_workers(&client).await.contains(&"node-2".to_string()) }
        },
    )
    .await;
    signal(frozen, "CONT");
}
