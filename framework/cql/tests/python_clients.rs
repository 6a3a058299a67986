//! The DataStax Python driver and cqlsh, unmodified from PyPI, against a 3-node server: the
//! driver discovers the peers, creates a table, writes with a prepared statement, reads back by
//! token range and by key; cqlsh runs the statements a user types. Answers are checked against
//! the rows written, in the store itself.
//!
//! Needs a Python with `cassandra-driver` and `cqlsh` installed, named by `QUARRY_CQL_PYTHON`
//! (`.ci/run` makes a venv and sets it); without it the test says it was skipped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use futures::TryStreamExt;
use quarry_core::schema::TableName;
use quarry_cql::{CqlServer, ServerOptions};
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanRequest, Store};

fn python() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("QUARRY_CQL_PYTHON")?);
    path.exists().then_some(path)
}

const SCRIPT: &str = r#"
import json, sys
from cassandra.cluster import Cluster
port = int(sys.argv[1])
cluster = Cluster(['127.0.0.1'], port=port)
session = cluster.connect()
hosts = sorted(h.address for h in cluster.metadata.all_hosts())
session.execute("CREATE KEYSPACE py WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}")
session.execute("CREATE TABLE py.events (id int, seq int, label text, amount double, PRIMARY KEY ((id), seq))")
session.set_keyspace('py')
insert = session.prepare("INSERT INTO events (id, seq, label, amount) VALUES (?, ?, ?, ?)")
for i in range(200):
    session.execute(insert, (i % 20, i, 'e%d' % i, i * 0.25))
lo = session.execute("SELECT count(*) FROM events WHERE token(id) <= 0").one()[0]
hi = session.execute("SELECT count(*) FROM events WHERE token(id) > 0").one()[0]
scan = session.prepare("SELECT id, seq FROM events")
scan.fetch_size = 7
page = session.execute(scan)
paged = sum(1 for _ in page)
by_key = [r.seq for r in session.execute("SELECT seq FROM events WHERE id = 3")]
table = cluster.metadata.keyspaces['py'].tables['events']
session.execute("CREATE TABLE devices (id int PRIMARY KEY, tags map<text, int>, owners set<text>, readings list<double>)")
put = session.prepare("INSERT INTO devices (id, tags, owners, readings) VALUES (?, ?, ?, ?)")
session.execute(put, (1, {'b': 2, 'a': 1}, {'zed', 'amy'}, [2.5, 1.5, 2.5]))
session.execute("INSERT INTO devices (id, tags, owners, readings) VALUES (2, {'k': 7}, {'x', 'x'}, [])")
devices = {
    r.id: [dict(r.tags or {}), list(r.owners or []), r.readings and list(r.readings)]
    for r in session.execute("SELECT id, tags, owners, readings FROM devices")
}
print(json.dumps({
    "devices": devices,
    "hosts": hosts, "lo": lo, "hi": hi, "paged": paged, "by_key": sorted(by_key),
    "partition_key": [c.name for c in table.partition_key],
    "clustering_key": [c.name for c in table.clustering_key],
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_driver_and_cqlsh_work_unmodified() {
    let Some(python) = python() else {
        println!(
            "skipped: QUARRY_CQL_PYTHON does not name a Python with cassandra-driver and cqlsh \
             (.ci/run installs them into a venv)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let server = CqlServer::start(
        store.clone(),
        ServerOptions {
            nodes: 3,
            replication: 2,
            vnodes: 4,
            port: 0,
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    let port = server.addresses()[0].port().to_string();

    let (python2, port2) = (python.clone(), port.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python2)
            .args(["-c", SCRIPT, &port2])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the Python driver failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("the script prints JSON");
    assert_eq!(
        report["hosts"],
        serde_json::json!(["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
        "the driver found every node"
    );
    assert_eq!(report["partition_key"], serde_json::json!(["id"]));
    assert_eq!(report["clustering_key"], serde_json::json!(["seq"]));
    // The store holds 200 rows; both token halves and the paged read see all of them.
    let name = TableName::new("py", "events");
    let mut stored = 0;
    for split in store.plan_scan(&ScanRequest::full(name)).unwrap().splits {
        let batches: Vec<_> = split.source.open().unwrap().try_collect().await.unwrap();
        stored += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert_eq!(stored, 200);
    let lo = report["lo"].as_u64().unwrap();
    let hi = report["hi"].as_u64().unwrap();
    assert_eq!(lo + hi, 200);
    assert!(
        lo > 0 && hi > 0,
        "both halves of the ring hold rows ({lo}, {hi})"
    );
    assert_eq!(report["paged"], 200);
    let expected: Vec<u64> = (0..200).filter(|i| i % 20 == 3).collect();
    assert_eq!(report["by_key"], serde_json::json!(expected));
    // Collections as the driver sends them (a Python set and dict bound to markers) and as CQL
    // literals: sets come back distinct and sorted, lists as written, and an empty collection is
    // NULL (None), as on a Cassandra or ScyllaDB node.
    assert_eq!(
        report["devices"],
        serde_json::json!({
            "1": [{"a": 1, "b": 2}, ["amy", "zed"], [2.5, 1.5, 2.5]],
            "2": [{"k": 7}, ["x"], null],
        })
    );

    // cqlsh, as a user types at it.
    let cqlsh = python.with_file_name("cqlsh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(cqlsh)
            .args([
                "127.0.0.1",
                &port,
                "-e",
                "USE py; SELECT label, amount FROM events WHERE id = 3 AND seq = 43; \
                 SELECT count(*) FROM events; SELECT tags, owners FROM devices WHERE id = 1; \
                 DESCRIBE KEYSPACES; DESCRIBE TABLES; DESCRIBE TABLE devices; DESCRIBE KEYSPACE py; \
                 SELECT cluster_name, release_version FROM system.local; \
                 SELECT address, local_scans FROM system.quarry_stats;",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cqlsh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("e43") && stdout.contains("10.75"),
        "{stdout}"
    );
    assert!(stdout.contains("200"), "{stdout}");
    assert!(
        stdout.contains("{'a': 1, 'b': 2}") && stdout.contains("{'amy', 'zed'}"),
        "{stdout}"
    );
    // DESCRIBE, answered by the server as Cassandra 4 does: names, then CREATE statements.
    assert!(stdout.contains("py"), "{stdout}");
    assert!(
        stdout.contains("devices") && stdout.contains("events"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "CREATE TABLE py.devices (\n    id int,\n    tags map<text, int>,\n    owners \
             set<text>,\n    readings list<double>,\n    PRIMARY KEY (id)\n);"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("CREATE KEYSPACE py WITH replication")
            && stdout.contains("PRIMARY KEY (id, seq)")
            && stdout.contains("WITH CLUSTERING ORDER BY (seq ASC)"),
        "{stdout}"
    );
    // System tables, which cqlsh reads only once the schema lists them.
    assert!(
        stdout.contains("4.0.11") && stdout.contains("local_scans"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("DESCRIBE"), "{stderr}");
    assert!(!stderr.contains("not found"), "{stderr}");
}
