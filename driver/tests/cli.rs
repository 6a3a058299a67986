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

/// The fields of the first row after the header of CSV output (no quoted commas).
fn first_row(csv: &str) -> Vec<&str> {
    csv.lines().nth(1).unwrap_or_default().split(',').collect()
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
    assert!(
        out.contains("the job's rows equal the SQL rollup's, row for row"),
        "{out}"
    );
    assert!(out.contains("Try next"), "{out}");
    ok(quarry(dir.path(), &args));
    let count = ok(sql(dir.path(), "SELECT count(*) AS n FROM iot.readings"));
    assert_eq!(stdout(&count).trim(), "n\n20000");
    let rollups = ok(sql(
        dir.path(),
        "SELECT count(*) AS n, sum(readings) AS total FROM synth.device_rollup",
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

/// Files named `staged-*` anywhere under `dir`: staged parts, committed or not.
fn staged_files(dir: &Path) -> usize {
    let mut found = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with("staged-") {
                found += 1;
            }
        }
    }
    found
}

#[test]
fn a_load_larger_than_its_part_size_is_staged_in_parts_and_published_at_once() {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(
        dir.path(),
        "CREATE KEYSPACE ks WITH shards = 16; CREATE TABLE ks.kv (k bigint PRIMARY KEY, v bigint)",
    ));
    let write = |name: &str, rows: &mut dyn Iterator<Item = (i64, i64)>| {
        let path = dir.path().join(name);
        let mut text = String::from("k,v\n");
        for (k, v) in rows {
            text.push_str(&format!("{k},{v}\n"));
        }
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    // b repeats half of a's keys, and key 5 twice at its end: the later row wins each time.
    let a = write("a.csv", &mut (1..=20_000).map(|k| (k, 1)));
    let b = write(
        "b.csv",
        &mut (10_001..=30_000).map(|k| (k, 2)).chain([(5, 3), (5, 4)]),
    );
    let loaded = ok(quarry(
        dir.path(),
        &["load", "--table", "ks.kv", "--part-size", "16KiB", &a, &b],
    ));
    let report = stderr(&loaded);
    assert!(
        report.contains("loaded 30000 rows into ks.kv")
            && report.contains("10002 rows repeated an earlier row's primary key and replaced it"),
        "{report}"
    );
    // The parts were merged into one run as they were published, and are gone.
    assert_eq!(staged_files(dir.path()), 0);
    let described = stdout(&ok(quarry(dir.path(), &["describe", "ks.kv"])));
    assert!(described.contains("storage: 1 run(s)"), "{described}");
    let totals = ok(sql(
        dir.path(),
        "SELECT count(*) AS n, sum(v) AS s, max(CASE WHEN k = 5 THEN v END) AS five FROM ks.kv",
    ));
    assert_eq!(
        stdout(&totals).trim(),
        format!("n,s,five\n30000,{},4", 9_999 + 4 + 20_000 * 2)
    );

    // A bad row after some parts were staged: nothing of the load is visible, and its parts
    // are gone.
    let c = write("c.csv", &mut (40_001..=60_000).map(|k| (k, 7)));
    let mut bad_rows = (60_001..=70_000)
        .map(|k| format!("{k},8\n"))
        .collect::<String>();
    bad_rows.push_str("70001,eight\n");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("k,v\n{bad_rows}")).unwrap();
    let failed = quarry(
        dir.path(),
        &[
            "load",
            "--table",
            "ks.kv",
            "--part-size",
            "16KiB",
            &c,
            bad.to_str().unwrap(),
        ],
    );
    assert!(!failed.status.success());
    assert!(stderr(&failed).contains("eight"), "{}", stderr(&failed));
    let after = ok(sql(
        dir.path(),
        "SELECT count(*) AS n, sum(v) AS s FROM ks.kv",
    ));
    assert_eq!(
        stdout(&after).trim(),
        format!("n,s\n30000,{}", 9_999 + 4 + 20_000 * 2)
    );
    assert_eq!(
        staged_files(dir.path()),
        0,
        "the failed load's parts were removed"
    );
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
    assert!(
        stdout(&tables).contains("ks,kv,table,k,"),
        "{}",
        stdout(&tables)
    );
    let describe = ok(quarry(dir.path(), &["describe", "ks.kv"]));
    assert!(
        stdout(&describe).contains("CREATE TABLE ks.kv"),
        "{}",
        stdout(&describe)
    );
    let report = stdout(&describe);
    assert!(
        report.contains("rows: 2 live in runs (0 superseded")
            && report.contains("last compaction: never"),
        "{report}"
    );
    // An update supersedes half of the run it lands on: the store compacts, and says so.
    ok(sql(dir.path(), "INSERT INTO ks.kv VALUES ('a', 3)"));
    let report = stdout(&ok(quarry(dir.path(), &["describe", "ks.kv"])));
    assert!(
        report.contains("rows: 2 live in runs (0 superseded")
            && report.contains("last compaction: 20")
            && report.contains("2 run(s) into one, 2 rows in 1 window(s) of at most 2 rows"),
        "{report}"
    );
    // The same, for every table at once.
    let verbose = stdout(&ok(quarry(
        dir.path(),
        &["tables", "--verbose", "--format", "csv", "ks"],
    )));
    let mut lines = verbose.lines();
    assert_eq!(
        lines.next(),
        Some(
            "keyspace,table,kind,partition_key,clustering,runs,overlap_depth,files,bytes,\
             run_rows,superseded_rows,memtable_rows,last_compaction"
        )
    );
    let row: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    assert_eq!(
        row[..8],
        ["ks", "kv", "table", "k", "", "1", "1", "1"],
        "{verbose}"
    );
    assert!(row[8].parse::<u64>().unwrap() > 0, "{verbose}");
    assert_eq!(row[9..12], ["2", "0", "0"], "{verbose}");
    assert!(row[12].starts_with("20"), "{verbose}");
}

#[test]
fn compact_merges_the_runs_and_drops_superseded_rows() {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(dir.path(), "CREATE KEYSPACE ks WITH shards = 8"));
    ok(sql(
        dir.path(),
        "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)",
    ));
    // Three statements, three runs: 0..300 with v = k, then 300..600, then 20 updates of
    // keys of the first run to v = -1, too few for the store to compact on its own.
    let values = |keys: std::ops::Range<i32>, v: &dyn Fn(i32) -> i32| {
        keys.map(|k| format!("({k}, {})", v(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for rows in [
        values(0..300, &|k| k),
        values(300..600, &|k| k),
        values(100..120, &|_| -1),
    ] {
        ok(sql(dir.path(), &format!("INSERT INTO ks.kv VALUES {rows}")));
    }
    let expected_sum: i64 = (0..600i64).filter(|k| !(100..120).contains(k)).sum::<i64>() - 20;
    let query = "SELECT count(*) AS n, sum(v) AS total FROM ks.kv";
    let expected = format!("n,total\n600,{expected_sum}\n");
    assert_eq!(stdout(&ok(sql(dir.path(), query))), expected);

    let report = stdout(&ok(quarry(
        dir.path(),
        &["compact", "ks.kv", "--format", "csv"],
    )));
    assert_eq!(
        report.lines().next(),
        Some(
            "table,runs_merged,runs_after,rows_written,superseded_rows_dropped,bytes_before,\
             bytes_after,seconds"
        )
    );
    let row = first_row(&report);
    assert_eq!(row[..5], ["ks.kv", "3", "1", "600", "20"], "{report}");
    let bytes = |i: usize| row[i].parse::<u64>().unwrap();
    assert!(bytes(6) > 0 && bytes(6) < bytes(5), "{report}");
    assert_eq!(stdout(&ok(sql(dir.path(), query))), expected);

    // Nothing left to merge: the table is as it was.
    let again = stdout(&ok(quarry(
        dir.path(),
        &["compact", "ks.kv", "--format", "csv"],
    )));
    let row = first_row(&again);
    assert_eq!(row[..5], ["ks.kv", "0", "1", "0", "0"], "{again}");
    assert_eq!(stdout(&ok(sql(dir.path(), query))), expected);

    // Bad names are clear errors; OPTIMIZE is the same in SQL.
    for (args, says) in [
        (&["compact", "ks.nope"][..], "table ks.nope does not exist"),
        (&["compact", "kv"][..], "keyspace 'kv' does not exist"),
        (&["sql", "-e", "OPTIMIZE ks.kv ZORDER BY (v)"][..], "ZORDER"),
    ] {
        let out = quarry(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let optimized = stdout(&ok(sql(dir.path(), "OPTIMIZE TABLE ks.kv")));
    assert!(optimized.starts_with("table,runs_merged"), "{optimized}");

    // A keyspace's tables, or every table: one row each, views left out.
    ok(sql(dir.path(), "CREATE KEYSPACE other WITH shards = 4"));
    ok(sql(
        dir.path(),
        "CREATE TABLE other.t (k int PRIMARY KEY, v int)",
    ));
    ok(sql(dir.path(), "INSERT INTO other.t VALUES (1, 1)"));
    ok(sql(dir.path(), "INSERT INTO other.t VALUES (1, 2)"));
    ok(sql(
        dir.path(),
        "CREATE VIEW ks.big AS SELECT * FROM ks.kv WHERE v > 100",
    ));
    let tables = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["compact", "--format", "csv"];
        all.extend(args);
        let out = stdout(&ok(quarry(dir.path(), &all)));
        out.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(tables(&["ks"]), ["ks.kv"]);
    assert_eq!(tables(&[]), ["ks.kv", "other.t"]);
    assert_eq!(
        stdout(&ok(sql(dir.path(), "SELECT k, v FROM other.t"))),
        "k,v\n1,2\n"
    );
}

#[test]
fn a_keyspace_given_by_flag_environment_or_use_resolves_bare_names() {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(dir.path(), "CREATE KEYSPACE ks WITH shards = 8"));
    ok(sql(dir.path(), "CREATE KEYSPACE other WITH shards = 8"));
    ok(sql(
        dir.path(),
        "CREATE TABLE ks.kv (k text PRIMARY KEY, v int)",
    ));
    ok(sql(
        dir.path(),
        "INSERT INTO ks.kv VALUES ('a', 1), ('b', 2)",
    ));

    let flag = ok(quarry(
        dir.path(),
        &[
            "sql",
            "--keyspace",
            "ks",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n FROM kv",
        ],
    ));
    assert_eq!(stdout(&flag), "n\n2\n");

    let env = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["sql", "--format", "csv", "-e", "SELECT sum(v) AS s FROM kv"])
        .env("QUARRY_KEYSPACE", "ks")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(stdout(&ok(env)), "s\n3\n");

    // A script switches keyspaces with USE; the view it creates outlives it.
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "USE other;\n\
         CREATE TABLE t (id int PRIMARY KEY);\n\
         INSERT INTO t VALUES (7);\n\
         USE ks;\n\
         CREATE VIEW doubled AS SELECT k, v * 2 AS v2 FROM kv;\n\
         SELECT d.k, d.v2, t.id FROM doubled d CROSS JOIN other.t ORDER BY d.k;\n",
    )
    .unwrap();
    let run = ok(quarry(
        dir.path(),
        &["sql", "--format", "csv", "-f", script.to_str().unwrap()],
    ));
    assert_eq!(stdout(&run), "k,v2,id\na,2,7\nb,4,7\n");
    assert!(
        stderr(&run).contains("created view ks.doubled"),
        "{}",
        stderr(&run)
    );

    let again = ok(sql(dir.path(), "SELECT max(v2) AS m FROM ks.doubled"));
    assert_eq!(stdout(&again), "m\n4\n");
    let tables = ok(quarry(dir.path(), &["tables", "--format", "csv"]));
    assert!(
        stdout(&tables).contains("ks,doubled,view,,"),
        "{}",
        stdout(&tables)
    );
    let describe = ok(quarry(dir.path(), &["describe", "ks.doubled"]));
    assert!(
        stdout(&describe).contains("CREATE VIEW ks.doubled AS SELECT k, v * 2 AS v2 FROM kv;"),
        "{}",
        stdout(&describe)
    );

    // Without a keyspace, a bare name says how to give one.
    let bare = sql(dir.path(), "SELECT * FROM kv");
    assert!(!bare.status.success());
    assert!(
        stderr(&bare).contains("has no keyspace; write keyspace.table"),
        "{}",
        stderr(&bare)
    );
    let missing = quarry(dir.path(), &["sql", "--keyspace", "nope", "-e", "SELECT 1"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("keyspace 'nope' does not exist; keyspaces are ks, other"),
        "{}",
        stderr(&missing)
    );
}

/// The processes whose command line names `dir` and runs a worker.
#[cfg(target_os = "linux")]
fn workers_on(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.iter().any(|a| a == &dir) && args.iter().any(|a| a == "worker") {
            pids.push(pid);
        }
    }
    pids
}

/// `quarry up` killed outright (no chance to stop its workers) leaves no worker behind.
#[cfg(target_os = "linux")]
#[test]
fn workers_stop_when_up_is_killed() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let (up, mut out) = spawn_quarry(
        dir.path(),
        &["up", "--workers", "2", "--listen", "127.0.0.1:0"],
    );
    let mut up = Daemon(up);
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "up exited early");
        if line.contains("Ctrl-C stops the cluster") {
            break;
        }
    }
    assert_eq!(workers_on(dir.path()).len(), 2, "two workers run");
    up.0.kill().unwrap();
    up.0.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !workers_on(dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "workers outlived up: {:?}",
            workers_on(dir.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn up_runs_a_cluster_that_the_other_commands_talk_to() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let (mut up, mut out) = spawn_quarry(
        dir.path(),
        &[
            "up",
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--slots",
            "1",
        ],
    );
    let mut printed = Vec::new();
    let mut url = None;
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "up exited: {printed:?}"
        );
        if let Some(u) = line.trim().strip_prefix("driver listening on ") {
            url = Some(u.to_string());
        }
        let done = line.contains("Ctrl-C stops the cluster");
        printed.push(line);
        if done {
            break;
        }
    }
    let url = url.unwrap();
    assert_eq!(
        printed.iter().filter(|l| l.starts_with("worker ")).count(),
        2,
        "{printed:?}"
    );
    // Commands given --driver do not touch their own data directory; they authenticate with
    // the token `quarry up` left in its data directory (owner-only).
    let elsewhere = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let anonymous = quarry(
        &elsewhere.path().join("unused"),
        &[
            "sql",
            "-e",
            "CREATE KEYSPACE nope",
            "--driver",
            url.as_str(),
        ],
    );
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).contains("no credentials: pass --token-file"),
        "{}",
        stderr(&anonymous)
    );
    let remote = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--driver", url.as_str(), "--token-file"]);
        all.push(token.to_str().unwrap());
        quarry(&elsewhere.path().join("unused"), &all)
    };
    ok(remote(&[
        "sql",
        "-e",
        "CREATE KEYSPACE ks WITH shards = 800",
    ]));
    ok(remote(&[
        "sql",
        "-e",
        "CREATE TABLE ks.kv (k text PRIMARY KEY, v int)",
    ]));
    let csv = dir.path().join("kv.csv");
    std::fs::write(&csv, "k,v\na,1\nb,2\nc,3\n").unwrap();
    let loaded = ok(remote(&["load", "--table", "ks.kv", csv.to_str().unwrap()]));
    assert!(
        stderr(&loaded).contains("loaded 3 rows"),
        "{}",
        stderr(&loaded)
    );
    let totals = || {
        stdout(&ok(remote(&[
            "sql",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n, sum(v) AS total FROM ks.kv",
        ])))
    };
    assert_eq!(totals().trim(), "n,total\n3,6");
    // Compaction asked of the driver runs where the writable store is; a process beside it
    // has the directory read-only and says where to send it.
    std::fs::write(&csv, "k,v\na,1\n").unwrap();
    ok(remote(&["load", "--table", "ks.kv", csv.to_str().unwrap()]));
    let compacted = stdout(&ok(remote(&["compact", "ks.kv", "--format", "csv"])));
    let row = first_row(&compacted);
    assert_eq!(row[..5], ["ks.kv", "2", "1", "3", "1"], "{compacted}");
    let beside = quarry(dir.path(), &["compact", "ks.kv"]);
    assert!(!beside.status.success());
    assert!(
        stderr(&beside).contains("send writes through that process (--driver)"),
        "{}",
        stderr(&beside)
    );
    assert_eq!(totals().trim(), "n,total\n3,6");
    let rows = ok(remote(&[
        "sql",
        "--format",
        "ndjson",
        "-e",
        "SELECT k, v FROM ks.kv ORDER BY k",
    ]));
    assert_eq!(
        stdout(&rows).lines().collect::<Vec<_>>(),
        [
            r#"{"k":"a","v":1}"#,
            r#"{"k":"b","v":2}"#,
            r#"{"k":"c","v":3}"#
        ]
    );
    let tables = ok(remote(&["tables", "--format", "csv"]));
    assert!(
        stdout(&tables).contains("ks,kv,table,k,"),
        "{}",
        stdout(&tables)
    );

    // One CLI session through the driver keeps its keyspace and temporary views from statement
    // to statement; a stored view is there for the next session, and for `quarry tables`.
    let script = dir.path().join("session.sql");
    std::fs::write(
        &script,
        "USE ks;\n\
         CREATE TEMPORARY VIEW big AS SELECT k, v FROM kv WHERE v > 1;\n\
         CREATE VIEW ks.big_sum AS SELECT sum(v) AS total FROM kv WHERE v > 1;\n\
         SELECT count(*) AS n FROM big;\n\
         SELECT b.k, s.total FROM big b CROSS JOIN big_sum s ORDER BY b.k;\n",
    )
    .unwrap();
    let session = ok(remote(&[
        "sql",
        "--format",
        "csv",
        "-f",
        script.to_str().unwrap(),
    ]));
    assert_eq!(
        stdout(&session),
        "n\n2\nk,total\nb,5\nc,5\n",
        "{}",
        stderr(&session)
    );
    let keyspace = ok(remote(&[
        "sql",
        "--keyspace",
        "ks",
        "--format",
        "csv",
        "-e",
        "SELECT total FROM big_sum",
    ]));
    assert_eq!(stdout(&keyspace), "total\n5\n");
    // The temporary view ended with its session.
    let gone = remote(&["sql", "--keyspace", "ks", "-e", "SELECT * FROM big"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("table ks.big does not exist"),
        "{}",
        stderr(&gone)
    );
    let tables = ok(remote(&["tables", "ks", "--format", "csv"]));
    assert!(
        stdout(&tables).contains("ks,big_sum,view,,"),
        "{}",
        stdout(&tables)
    );
    let bad = remote(&["sql", "--keyspace", "nope", "-e", "SELECT 1"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("keyspace 'nope' does not exist; keyspaces are ks"),
        "{}",
        stderr(&bad)
    );
    let bad = remote(&["sql", "-e", "SELECT nope FROM ks.kv"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("nope"), "{}", stderr(&bad));
    assert!(!stderr(&bad).contains("backtrace"), "{}", stderr(&bad));

    let jobs = ok(remote(&["jobs", "--format", "csv"]));
    let listing = stdout(&jobs);
    let job_line = listing
        .lines()
        .find(|l| l.contains("sum(v)"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(job_line.contains("succeeded"), "{job_line}");
    let id = job_line.split(',').next().unwrap();
    let job = ok(remote(&["job", id]));
    assert!(stdout(&job).contains("stages"), "{}", stdout(&job));
    assert!(stdout(&job).contains("scan ks.kv"), "{}", stdout(&job));
    assert!(stdout(&job).contains("worker-node-"), "{}", stdout(&job));
    let workers = ok(remote(&["workers", "--format", "csv"]));
    assert_eq!(
        stdout(&workers).matches(",true,").count(),
        2,
        "{}",
        stdout(&workers)
    );
    let missing = remote(&["job", "1"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no job 1"),
        "{}",
        stderr(&missing)
    );

    // Ctrl-C stops everything cleanly.
    ok(Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .output()
        .unwrap());
    let status = up.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("stopping"), "{rest}");
}

/// The `faulty` job's CSV output over ks.numbers 1..=100: each number doubled, once.
fn assert_doubles_one_to_a_hundred(o: &Output) {
    let mut doubled: Vec<i64> = stdout(o)
        .lines()
        .skip(1)
        .map(|l| l.parse().unwrap())
        .collect();
    doubled.sort();
    assert_eq!(doubled, (1..=100).map(|n| n * 2).collect::<Vec<_>>());
}

#[test]
fn submit_runs_a_job_crate_and_refuses_bad_modules_and_arguments_clearly() {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(dir.path(), "CREATE KEYSPACE ks WITH shards = 8"));
    ok(sql(
        dir.path(),
        "CREATE TABLE ks.numbers (n bigint, PRIMARY KEY (n))",
    ));
    ok(sql(
        dir.path(),
        "INSERT INTO ks.numbers SELECT value FROM generate_series(1, 100)",
    ));
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jobs/faulty");
    let job = job.to_str().unwrap();

    let o = ok(quarry(dir.path(), &["submit", job, "--format", "csv"]));
    assert_doubles_one_to_a_hundred(&o);

    let o = ok(quarry(dir.path(), &["submit", job, "--explain"]));
    let plan = stdout(&o);
    assert!(plan.contains("result 0: collect"), "{plan}");
    assert!(plan.contains("WasmExec"), "{plan}");
    assert!(plan.contains("StoreScanExec"), "{plan}");

    let o = quarry(dir.path(), &["submit", job, "--detach"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--detach leaves the job running on a driver's cluster"));

    let o = quarry(dir.path(), &["submit", job, "--arg", "fault=panic"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bad reading 7"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");

    let not_wasm = dir.path().join("job.wasm");
    std::fs::write(&not_wasm, "fn main() {}").unwrap();
    let o = quarry(dir.path(), &["submit", not_wasm.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a WebAssembly module"),
        "{}",
        stderr(&o)
    );

    let o = quarry(dir.path(), &["submit", job, "--arg", "nonsense"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("'nonsense' is not NAME=VALUE"),
        "{}",
        stderr(&o)
    );
    // Nothing changed the table.
    let count = ok(sql(dir.path(), "SELECT count(*) AS n FROM ks.numbers"));
    assert_eq!(stdout(&count).trim(), "n\n100");
}

#[test]
fn output_piped_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // As `quarry sql ... | head -1` does: read one line, close the pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["sql", "--format", "csv", "-e"])
        .arg("SELECT value FROM generate_series(1, 2000000)")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "value");
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(
        !err.contains("panicked") && !err.contains("error"),
        "a closed pipe is not an error: {err}"
    );
}

/// A daemon started with `args`, killed when dropped, and the first line it printed.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `quarry ARGS...` on `dir` left running, and its stdout to read what it prints.
fn spawn_quarry(
    dir: &Path,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// A daemon and the first line it printed.
fn daemon(dir: &Path, args: &[&str]) -> (Daemon, String) {
    use std::io::BufRead;
    let (child, mut out) = spawn_quarry(dir, args);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (Daemon(child), line.trim().to_string())
}

#[test]
fn daemons_given_certificates_serve_tls_to_the_cli() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let tls = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let path = |name: &str| tls.path().join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    let tls_args = [
        "--tls-cert",
        &path("cert.pem"),
        "--tls-key",
        &path("key.pem"),
        "--tls-ca",
        &path("ca.pem"),
    ];

    let mut driver_args = vec!["driver", "--listen", "127.0.0.1:0"];
    driver_args.extend(tls_args);
    let (_driver, line) = daemon(dir.path(), &driver_args);
    let url = line
        .strip_prefix("driver listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut worker_args = vec!["worker", "--driver", &url, "--node", "node-1"];
    worker_args.extend(tls_args);
    let (_worker, line) = daemon(dir.path(), &worker_args);
    assert!(line.contains("listening on https://"), "{line}");

    let out = ok(quarry(
        dir.path(),
        &[
            "sql",
            "--driver",
            &url,
            "--tls-ca",
            &path("ca.pem"),
            "--format",
            "csv",
            "-e",
            "CREATE KEYSPACE t WITH shards = 8; CREATE TABLE t.n (id bigint, PRIMARY KEY (id)); \
             INSERT INTO t.n VALUES (1), (2), (3); SELECT sum(id) AS s FROM t.n",
        ],
    ));
    assert!(stdout(&out).contains("s\n6"), "{}", stdout(&out));
    // Without the CA the CLI says what is missing.
    let refused = quarry(dir.path(), &["sql", "--driver", &url, "-e", "SELECT 1"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--tls-ca"),
        "{}",
        stderr(&refused)
    );
}

/// A data directory with table `ks.t (id bigint PRIMARY KEY, v int)`.
fn table_t() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(sql(dir.path(), "CREATE KEYSPACE ks WITH shards = 8"));
    ok(sql(
        dir.path(),
        "CREATE TABLE ks.t (id bigint PRIMARY KEY, v int)",
    ));
    dir
}

/// `quarry load --table ks.t ARGS` running, stdin, stdout and stderr piped.
fn spawn_load(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
        .arg("--data-dir")
        .arg(dir)
        .args(["load", "--table", "ks.t"])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The table's row count as `quarry sql` reads it (beside a streaming load, read-only).
fn count(dir: &Path) -> Option<u64> {
    let out = sql(dir, "SELECT count(*) AS n FROM ks.t");
    stdout(&out).lines().nth(1)?.trim().parse().ok()
}

/// Polls until the table holds `rows` rows, for at most 30 s.
fn wait_for_rows(dir: &Path, rows: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let seen = count(dir);
        if seen == Some(rows) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the table never reached {rows} rows (last seen: {seen:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_stream_is_queryable_while_it_flows_and_stops_at_a_bad_row() {
    let dir = table_t();
    let mut child = spawn_load(
        dir.path(),
        &["--format", "ndjson", "--commit-secs", "0.2", "-"],
    );
    let mut stdin = child.stdin.take().unwrap();
    for id in 1..=5 {
        writeln!(stdin, "{{\"id\": {id}, \"v\": {}}}", id * 10).unwrap();
    }
    stdin.flush().unwrap();
    // Committed and readable while the pipe is still open.
    wait_for_rows(dir.path(), 5);
    writeln!(
        stdin,
        "{{\"id\": \"six\", \"v\": 60}}\n{{\"id\": 7, \"v\": 70}}"
    )
    .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a bad row must fail the stream");
    let message = stderr(&out);
    assert!(
        message.contains("line 6") && message.contains("loaded 5 rows"),
        "{message}"
    );
    assert_eq!(count(dir.path()), Some(5));
}

#[test]
fn a_followed_file_is_loaded_as_it_grows_until_interrupted() {
    let dir = table_t();
    let file = dir.path().join("live.csv");
    std::fs::write(&file, "id,v\n1,10\n2,20\n3,30\n").unwrap();
    let file_arg = file.to_string_lossy().to_string();
    let child = spawn_load(dir.path(), &["--follow", "--commit-secs", "0.2", &file_arg]);
    wait_for_rows(dir.path(), 3);
    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    writeln!(append, "4,40\n2,22").unwrap();
    append.flush().unwrap();
    wait_for_rows(dir.path(), 4);
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("loaded 5 rows"), "{}", stderr(&out));
    let rows = stdout(&ok(sql(dir.path(), "SELECT id, v FROM ks.t ORDER BY id")));
    assert_eq!(rows, "id,v\n1,10\n2,22\n3,30\n4,40\n");
}

#[test]
fn sql_load_tables_and_describe_run_on_a_cql_cluster_with_store_scylla() {
    let server_dir = tempfile::tempdir().unwrap();
    let client_dir = tempfile::tempdir().unwrap();
    let (server, mut server_out, nodes) = cql_server(server_dir.path());
    let node = nodes[0].clone();
    let scylla = |args: &[&str]| on_cluster(client_dir.path(), &node, args);
    ok(scylla(&[
        "sql",
        "-e",
        "CREATE KEYSPACE shop WITH shards = 64 AND replication_factor = 2",
    ]));
    ok(scylla(&[
        "sql",
        "-e",
        "CREATE TABLE shop.orders (customer_id bigint, sku text, amount decimal(12, 2), \
         PRIMARY KEY ((customer_id), sku))",
    ]));
    // 500 orders, some loaded twice (an upsert), totals computed here.
    let csv = client_dir.path().join("orders.csv");
    let mut text = String::from("customer_id,sku,amount\n");
    let mut expected_cents = 0i64;
    for i in 0..500i64 {
        let cents = i * 37 % 10_000;
        expected_cents += cents;
        text.push_str(&format!(
            "{},sku-{},{}.{:02}\n",
            i % 50,
            i,
            cents / 100,
            cents % 100
        ));
    }
    std::fs::write(&csv, &text).unwrap();
    ok(scylla(&[
        "load",
        "--table",
        "shop.orders",
        csv.to_str().unwrap(),
    ]));
    ok(scylla(&[
        "load",
        "--table",
        "shop.orders",
        csv.to_str().unwrap(),
    ]));
    let totals = |scylla: &dyn Fn(&[&str]) -> Output| {
        stdout(&ok(scylla(&[
            "sql",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n, sum(amount) AS total FROM shop.orders",
        ])))
    };
    let expected = format!(
        "n,total\n500,{}.{:02}\n",
        expected_cents / 100,
        expected_cents % 100
    );
    assert_eq!(totals(&scylla), expected);

    // A bad row is a clear error that names it, and nothing of that file is kept.
    let bad = client_dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "customer_id,sku,amount\n900,x,1.00\nnot-a-number,y,2.00\n",
    )
    .unwrap();
    let out = scylla(&["load", "--table", "shop.orders", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    assert_eq!(totals(&scylla), expected);

    let tables = stdout(&ok(scylla(&["tables"])));
    assert!(
        tables.contains("shop") && tables.contains("orders"),
        "{tables}"
    );
    let described = stdout(&ok(scylla(&["describe", "shop.orders"])));
    assert!(described.contains("decimal(12, 2)"), "{described}");
    assert!(described.contains("64 shards"), "{described}");
    assert!(
        described.contains("stored on the scylla cluster"),
        "{described}"
    );
    // A cluster compacts on its own: asked to, Quarry says what does it there.
    let compact = scylla(&["compact", "shop.orders"]);
    assert!(!compact.status.success());
    assert!(
        stderr(&compact).contains("nodetool compact shop orders"),
        "{}",
        stderr(&compact)
    );

    // The server kept the rows in its own data directory; stopped, it says what each node served.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut server_out, &mut rest).unwrap();
    drop(server);
    assert_eq!(
        rest.lines().filter(|l| l.starts_with("node ")).count(),
        3,
        "{rest}"
    );
    let count = stdout(&ok(sql(
        server_dir.path(),
        "SELECT count(*) FROM shop.orders",
    )));
    assert!(count.contains("500"), "{count}");
}

/// `quarry cql-server` with 3 nodes and replication 2 on a free port: the process, its stdout
/// (for the report it prints when it stops) and the nodes' addresses.
fn cql_server(
    dir: &Path,
) -> (
    Daemon,
    std::io::BufReader<std::process::ChildStdout>,
    Vec<String>,
) {
    cql_server_with(dir, &[])
}

/// [`cql_server`] with more of `quarry cql-server`'s flags.
fn cql_server_with(
    dir: &Path,
    flags: &[&str],
) -> (
    Daemon,
    std::io::BufReader<std::process::ChildStdout>,
    Vec<String>,
) {
    use std::io::BufRead;
    let mut args = vec![
        "cql-server",
        "--nodes",
        "3",
        "--replication",
        "2",
        "--vnodes",
        "4",
        "--port",
        "0",
    ];
    args.extend_from_slice(flags);
    let (server, mut out) = spawn_quarry(dir, &args);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // "serving DIR over CQL on 127.0.0.1:P, 127.0.0.2:P, 127.0.0.3:P (replication 2); ..."
    let nodes: Vec<String> = line
        .split(" on ")
        .nth(1)
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no addresses in {line:?}"))
        .split(", ")
        .map(str::to_string)
        .collect();
    assert_eq!(nodes.len(), 3, "{line}");
    (Daemon(server), out, nodes)
}

/// `quarry --store scylla --scylla-nodes NODE ARGS...` with `dir` as its data directory.
fn on_cluster(dir: &Path, node: &str, args: &[&str]) -> Output {
    let mut all = vec!["--store", "scylla", "--scylla-nodes", node];
    all.extend_from_slice(args);
    quarry(dir, &all)
}

/// Each node's `system.quarry_stats` row: (local, forwarded) scans it served.
fn scans_by_node(nodes: &[String]) -> Vec<(i64, i64)> {
    use scylla::client::session_builder::SessionBuilder;
    use scylla::policies::load_balancing::{NodeIdentifier, SingleTargetLoadBalancingPolicy};
    use scylla::statement::Statement;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let session = SessionBuilder::new()
            .known_node(&nodes[0])
            .build()
            .await
            .unwrap();
        let mut out = Vec::new();
        for node in nodes {
            let mut statement =
                Statement::new("SELECT local_scans, forwarded_scans FROM system.quarry_stats");
            statement.set_load_balancing_policy(Some(SingleTargetLoadBalancingPolicy::new(
                NodeIdentifier::NodeAddress(node.parse().unwrap()),
                None,
            )));
            let row: (i64, i64) = session
                .query_unpaged(statement, &[])
                .await
                .unwrap()
                .into_rows_result()
                .unwrap()
                .single_row()
                .unwrap();
            out.push(row);
        }
        out
    })
}

#[test]
fn workers_beside_cql_nodes_scan_their_ranges_and_a_lost_worker_is_covered() {
    workers_beside_cql_nodes(&[]);
}

/// As above on a cluster of ScyllaDB tablets on sharded nodes: each table's tablets are placed
/// apart from the ring's ranges, and workers still read only what their node holds.
#[test]
fn workers_beside_cql_nodes_scan_their_tablets_and_a_lost_worker_is_covered() {
    workers_beside_cql_nodes(&["--tablets", "8", "--smp", "2"]);
}

fn workers_beside_cql_nodes(server_flags: &[&str]) {
    let server_dir = tempfile::tempdir().unwrap();
    let driver_dir = tempfile::tempdir().unwrap();
    let (_server, _server_out, nodes) = cql_server_with(server_dir.path(), server_flags);
    let scylla = on_cluster;
    let here = driver_dir.path();
    ok(scylla(
        here,
        &nodes[0],
        &[
            "sql",
            "-e",
            "CREATE KEYSPACE ks WITH shards = 32 AND replication_factor = 2",
        ],
    ));
    ok(scylla(
        here,
        &nodes[0],
        &[
            "sql",
            "-e",
            "CREATE TABLE ks.t (id bigint PRIMARY KEY, v bigint)",
        ],
    ));
    let csv = here.join("t.csv");
    let mut text = String::from("id,v\n");
    for i in 0..3000i64 {
        text.push_str(&format!("{},{}\n", i * 7919, i * 3));
    }
    std::fs::write(&csv, text).unwrap();
    ok(scylla(
        here,
        &nodes[0],
        &["load", "--table", "ks.t", csv.to_str().unwrap()],
    ));
    let expected = format!("n,s\n3000,{}\n", (0..3000i64).map(|i| i * 3).sum::<i64>());

    // A driver, and one worker beside each node.
    let (_driver, line) = daemon(
        here,
        &[
            "--store",
            "scylla",
            "--scylla-nodes",
            &nodes[0],
            "driver",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let url = line
        .strip_prefix("driver listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let mut workers: Vec<Option<Daemon>> = nodes
        .iter()
        .map(|node| {
            let (w, _) = daemon(
                here,
                &[
                    "--store",
                    "scylla",
                    "--scylla-nodes",
                    node,
                    "worker",
                    "--driver",
                    &url,
                    "--local-node",
                    node,
                ],
            );
            Some(w)
        })
        .collect();
    let query = || {
        quarry(
            here,
            &[
                "--driver",
                &url,
                "sql",
                "--format",
                "csv",
                "-e",
                "SELECT count(*) AS n, sum(v) AS s FROM ks.t",
            ],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let workers_listed = |n: usize| {
        let out = quarry(here, &["--driver", &url, "workers", "--format", "csv"]);
        stdout(&out)
            .lines()
            .filter(|l| l.contains("127.0.0."))
            .count()
            >= n
    };
    while !workers_listed(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers did not register"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let before = scans_by_node(&nodes);
    assert_eq!(stdout(&ok(query())), expected);
    let after = scans_by_node(&nodes);
    for (node, (b, a)) in nodes.iter().zip(before.iter().zip(&after)) {
        assert!(
            a.0 > b.0,
            "{node} served none of the scans ({b:?} then {a:?})"
        );
        assert_eq!(a.1, b.1, "{node} was asked for ranges it does not hold");
    }

    // A derived table written back by the workers, beside the replicas of its rows.
    ok(scylla(
        here,
        &nodes[1],
        &[
            "sql",
            "-e",
            "CREATE TABLE ks.doubled (id bigint PRIMARY KEY, v bigint)",
        ],
    ));
    // The driver learns of the new table from the cluster's schema event, a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = quarry(
            here,
            &[
                "--driver",
                &url,
                "sql",
                "-e",
                "INSERT INTO ks.doubled SELECT id, v * 2 FROM ks.t",
            ],
        );
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && stderr(&out).contains("does not exist"),
            "{}",
            stderr(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let doubled = stdout(&ok(scylla(
        here,
        &nodes[2],
        &[
            "sql",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n, sum(v) AS s FROM ks.doubled",
        ],
    )));
    assert_eq!(
        doubled,
        format!("n,s\n3000,{}\n", (0..3000i64).map(|i| i * 6).sum::<i64>())
    );

    // Without the worker beside node 2, its ranges are read through another replica.
    workers[1] = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = query();
        if out.status.success() {
            assert_eq!(stdout(&out), expected);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn demo_and_submit_run_on_a_cql_cluster_with_a_worker_beside_each_node() {
    let server_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_server, _server_out, nodes) = cql_server(server_dir.path());
    let scylla = |args: &[&str]| on_cluster(dir.path(), &nodes[0], args);
    let args = ["demo", "--rows", "6000", "--devices", "30", "--days", "2"];
    let out = stdout(&ok(scylla(&args)));
    for node in &nodes {
        assert!(out.contains(node.as_str()), "a worker beside {node}: {out}");
    }
    assert!(out.contains("loaded 6000 generated readings"), "{out}");
    assert!(out.contains("Fleet overview"), "{out}");
    assert!(
        out.contains("the job's rows equal the SQL rollup's, row for row"),
        "{out}"
    );
    assert!(out.contains("--store scylla --scylla-nodes"), "{out}");
    // The rows are on the cluster, read back through another client: the scylla driver.
    let counts = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use scylla::client::session_builder::SessionBuilder;
        let session = SessionBuilder::new()
            .known_node(&nodes[0])
            .build()
            .await
            .unwrap();
        let mut counts = Vec::new();
        for table in [
            "iot.readings",
            "synth.device_rollup",
            "synth.device_rollup_job",
        ] {
            let (n,): (i64,) = session
                .query_unpaged(format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .into_rows_result()
                .unwrap()
                .single_row()
                .unwrap();
            counts.push(n);
        }
        counts
    });
    assert_eq!(counts[0], 6000, "{counts:?}");
    assert!(counts[1] > 0 && counts[1] == counts[2], "{counts:?}");
    // Every reading counted once in the SQL rollup.
    let total = stdout(&ok(scylla(&[
        "sql",
        "--format",
        "csv",
        "-e",
        "SELECT sum(readings) AS total FROM synth.device_rollup",
    ])));
    assert_eq!(total.trim(), "total\n6000");

    // A Rust job in this process, over the cluster.
    ok(scylla(&[
        "sql",
        "-e",
        "CREATE KEYSPACE ks WITH shards = 8; CREATE TABLE ks.numbers (n bigint, PRIMARY KEY (n)); \
         INSERT INTO ks.numbers SELECT value FROM generate_series(1, 100)",
    ]));
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jobs/faulty");
    let o = ok(scylla(&[
        "submit",
        job.to_str().unwrap(),
        "--format",
        "csv",
    ]));
    assert_doubles_one_to_a_hundred(&o);
}

#[test]
fn up_on_a_cql_cluster_starts_a_worker_beside_each_node() {
    use std::io::BufRead;
    let server_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_server, _server_out, nodes) = cql_server(server_dir.path());
    let scylla = |args: &[&str]| on_cluster(dir.path(), &nodes[0], args);
    ok(scylla(&[
        "sql",
        "-e",
        "CREATE KEYSPACE ks WITH replication_factor = 2",
    ]));
    ok(scylla(&[
        "sql",
        "-e",
        "CREATE TABLE ks.t (id bigint PRIMARY KEY, v bigint); \
         INSERT INTO ks.t SELECT value, value * 10 FROM generate_series(1, 500) AS g(value)",
    ]));
    let (up, mut out) = spawn_quarry(
        dir.path(),
        &[
            "--store",
            "scylla",
            "--scylla-nodes",
            &nodes[0],
            "up",
            "--listen",
            "127.0.0.1:0",
            "--slots",
            "1",
        ],
    );
    let _up = Daemon(up);
    let (mut url, mut workers) = (None, Vec::new());
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "up exited early");
        if let Some(u) = line.trim().strip_prefix("driver listening on ") {
            url = Some(u.to_string());
        }
        if line.starts_with("worker ") {
            workers.push(line.clone());
        }
        if line.contains("Ctrl-C stops the cluster") {
            break;
        }
    }
    // One worker per node, named by the node's address.
    assert_eq!(workers.len(), 3, "{workers:?}");
    for node in &nodes {
        assert!(
            workers.iter().any(|w| w.contains(node.as_str())),
            "{workers:?}"
        );
    }
    let url = url.expect("the driver's address");
    let total = stdout(&ok(quarry(
        dir.path(),
        &[
            "--driver",
            &url,
            "sql",
            "--format",
            "csv",
            "-e",
            "SELECT count(*) AS n, sum(v) AS s FROM ks.t",
        ],
    )));
    assert_eq!(
        total,
        format!("n,s\n500,{}\n", (1..=500i64).map(|v| v * 10).sum::<i64>())
    );

    // The job's record says where its 500 rows were read: by a worker beside a replica of
    // their range, unless its task ran elsewhere.
    let remote = |args: &[&str]| {
        let mut all = vec!["--driver", url.as_str()];
        all.extend_from_slice(args);
        quarry(dir.path(), &all)
    };
    let listing = stdout(&ok(remote(&["jobs", "--format", "csv"])));
    let id = listing
        .lines()
        .find(|l| l.contains("sum(v)"))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{listing}"))
        .to_string();
    let stages = stdout(&ok(remote(&["job", &id, "--format", "csv"])));
    let header: Vec<&str> = stages.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (mut local, mut elsewhere, mut remote_tasks) = (0u64, 0u64, 0u64);
    for line in stages.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        local += fields[column("rows_local")].parse::<u64>().unwrap();
        elsewhere += fields[column("rows_remote")].parse::<u64>().unwrap();
        remote_tasks += fields[column("remote_tasks")].parse::<u64>().unwrap();
    }
    assert_eq!(local + elsewhere, 500, "{stages}");
    if remote_tasks == 0 {
        assert_eq!(elsewhere, 0, "{stages}");
    }
    let table = stdout(&ok(remote(&["job", &id])));
    assert!(
        table.contains("store reads beside the data: ") && table.contains("of 500 rows"),
        "{table}"
    );
    assert!(
        table.contains("read from the store:\n  ks.t: 500 rows"),
        "{table}"
    );
}
