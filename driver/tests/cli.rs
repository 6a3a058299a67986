//! The `quarry` binary end to end: real processes on temporary data directories.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn quarry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running quarry")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn sql(dir: &Path, statement: &str) -> Output {
    quarry(dir, &["sql", "--format", "csv", "-e", statement])
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "quarry failed\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    o
}

#[test]
fn demo_runs_and_rerunning_it_does_not_duplicate_data() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["demo", "--rows", "20000", "--devices", "200", "--days", "3"];
    let first = ok(quarry(dir.path(), &args));
    let out = stdout(&first);
    assert!(out.contains("Fleet overview"), "{out}");
    assert!(out.contains("Try next"), "{out}");
    ok(quarry(dir.path(), &args));
    let count = ok(sql(dir.path(), "SELECT count(*) AS n FROM iot.readings"));
    assert_eq!(stdout(&count).trim(), "n\n20000");
    let rollups = ok(sql(
        dir.path(),
        "SELECT count(*) AS n, sum(readings) AS total FROM synth.device_hourly",
    ));
    let text = stdout(&rollups);
    assert!(
        text.trim().ends_with(",20000"),
        "rollups cover every reading once: {text}"
    );
}

#[test]
fn bad_sql_is_one_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let o = sql(dir.path(), "SELEC 1");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let o = sql(dir.path(), "SELECT * FROM nope.t");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
}

#[test]
fn load_reports_bad_values_precisely_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(dir.path(), "CREATE KEYSPACE ks WITH shards = 16"));
    ok(sql(
        dir.path(),
        "CREATE TABLE ks.t (id bigint, ts timestamp, v double, PRIMARY KEY ((id), ts))",
    ));
    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "id,ts,v\n1,2026-11-01T00:00:00Z,1.5\n2,2026-11-01T01:00:00Z,2.5\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,ts,v\n3,2026-11-01T00:00:00Z,3.5\n4,2026-11-01T01:00:00Z,abc\n",
    )
    .unwrap();
    ok(quarry(
        dir.path(),
        &["load", "--table", "ks.t", good.to_str().unwrap()],
    ));

    // One bad file: an error naming file, line, column, value and type; nothing stored.
    let o = quarry(
        dir.path(),
        &[
            "load",
            "--table",
            "ks.t",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    for part in ["bad.csv", "line 3", "'v'", "abc", "double"] {
        assert!(err.contains(part), "missing {part} in: {err}");
    }
    let count = ok(sql(
        dir.path(),
        "SELECT count(*) AS n, sum(v) AS s FROM ks.t",
    ));
    assert_eq!(stdout(&count).trim(), "n,s\n2,4.0");

    // With a reject file, the good rows go in and the bad one is written out with its reason.
    let rejects = dir.path().join("rejects.ndjson");
    ok(quarry(
        dir.path(),
        &[
            "load",
            "--table",
            "ks.t",
            "--reject-file",
            rejects.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    ));
    let count = ok(sql(dir.path(), "SELECT count(*) AS n FROM ks.t"));
    assert_eq!(stdout(&count).trim(), "n\n3");
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains("abc"), "{rejected}");
}

#[test]
fn stdin_loads_and_output_formats_pipe() {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(dir.path(), "CREATE KEYSPACE ks WITH shards = 8"));
    ok(sql(
        dir.path(),
        "CREATE TABLE ks.kv (k text PRIMARY KEY, v int)",
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["load", "--table", "ks.kv", "--format", "ndjson", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": 2}\n")
        .unwrap();
    ok(child.wait_with_output().unwrap());
    let json = ok(quarry(
        dir.path(),
        &[
            "sql",
            "--format",
            "ndjson",
            "-e",
            "SELECT k, v FROM ks.kv ORDER BY k",
        ],
    ));
    assert_eq!(
        stdout(&json).trim(),
        "{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\":2}"
    );
    let tables = ok(quarry(dir.path(), &["tables", "--format", "csv"]));
    assert!(stdout(&tables).contains("ks,kv,k,"), "{}", stdout(&tables));
    let describe = ok(quarry(dir.path(), &["describe", "ks.kv"]));
    assert!(
        stdout(&describe).contains("CREATE TABLE ks.kv"),
        "{}",
        stdout(&describe)
    );
}
