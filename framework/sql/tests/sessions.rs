//! What sessions share and what they keep to themselves: stored views are in the store, for every
//! session and after the store is opened again; the keyspace, `SET` values and temporary views
//! are one session's, and travel as its settings.

use std::sync::Arc;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use quarry_sql::{QuarrySession, QueryOutput};
use quarry_store::{EmbeddedOptions, EmbeddedStore, Store};

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap())
}

async fn run(session: &QuarrySession, sql: &str) -> QueryOutput {
    session
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn error(session: &QuarrySession, sql: &str) -> String {
    match session.execute(sql).await {
        Ok(_) => panic!("{sql} succeeded"),
        Err(e) => e.to_string(),
    }
}

/// Rows as `a|b` lines.
fn lines(output: &QueryOutput) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in &output.batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

#[tokio::test]
async fn a_view_is_every_sessions_and_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = QuarrySession::new(store.clone());
    for sql in [
        "CREATE KEYSPACE iot WITH shards = 8",
        "CREATE TABLE iot.r (id bigint PRIMARY KEY, v double)",
        "INSERT INTO iot.r VALUES (1, 1.5), (2, 2.5), (3, 3.5)",
        "USE iot",
        "CREATE VIEW big AS SELECT id FROM r WHERE v > 2",
        "CREATE TEMPORARY VIEW mine AS SELECT id FROM r WHERE v < 2",
    ] {
        run(&first, sql).await;
    }

    // Another session of the same store sees the view, not the temporary view or the keyspace.
    let second = QuarrySession::new(store.clone());
    assert_eq!(second.keyspace(), None);
    let rows = run(&second, "SELECT id FROM iot.big ORDER BY id").await;
    assert_eq!(lines(&rows), ["2", "3"]);
    let e = error(&second, "SELECT * FROM mine").await;
    assert!(e.contains("table name 'mine' has no keyspace"), "{e}");
    drop((first, second));

    drop(store);
    let store = open(dir.path());
    let session = QuarrySession::new(store);
    run(&session, "INSERT INTO iot.r VALUES (4, 4.5)").await;
    let rows = run(&session, "SELECT id FROM iot.big ORDER BY id").await;
    assert_eq!(lines(&rows), ["2", "3", "4"]);
    let described = run(&session, "DESCRIBE iot.big").await;
    assert_eq!(
        lines(&described),
        [
            "id|bigint|view|Int64",
            "|SELECT id FROM r WHERE v > 2|query|"
        ]
    );
}

#[tokio::test]
async fn settings_carry_a_session_into_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = QuarrySession::new(store.clone());
    for sql in [
        "CREATE KEYSPACE iot WITH shards = 8",
        "CREATE TABLE iot.r (id bigint PRIMARY KEY, v double)",
        "INSERT INTO iot.r VALUES (1, 1.5), (2, 2.5)",
        "USE iot",
        "SET quarry.pushdown = false",
        "CREATE TEMPORARY VIEW small AS SELECT id FROM r WHERE v < 2",
    ] {
        run(&first, sql).await;
    }
    let settings = first.settings();
    assert!(
        settings.contains(&("datafusion.catalog.default_schema".into(), "iot".into())),
        "{settings:?}"
    );
    assert!(
        settings.contains(&("quarry.pushdown".into(), "false".into())),
        "{settings:?}"
    );

    // What a driver does with each statement: a fresh session, restored from the settings.
    let next = QuarrySession::new(store.clone());
    next.apply_settings(&settings).unwrap();
    assert_eq!(next.keyspace().as_deref(), Some("iot"));
    assert_eq!(lines(&run(&next, "SELECT * FROM small").await), ["1"]);
    assert_eq!(next.settings(), settings);
    let engine = QuarrySession::engine_settings(&settings);
    assert_eq!(engine.len(), 2, "{engine:?}");

    // Settings are checked as they are applied.
    let bad = QuarrySession::new(store.clone());
    for (key, value) in [
        ("datafusion.catalog.default_schema", "Not A Keyspace"),
        ("quarry.temporary_view.x", "not json"),
        ("quarry.temporary_view.Bad Name", r#"{"sql": "SELECT 1"}"#),
        ("quarry.nope", "1"),
    ] {
        let e = bad
            .apply_settings(&[(key.into(), value.into())])
            .unwrap_err();
        assert!(e.is_user_error(), "{key}: {e}");
    }
}
