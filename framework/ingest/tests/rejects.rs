//! With rejects kept, good rows load and every bad row is reported once, in input order.

mod common;

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use common::{Inputs, cells, one_batch, read_keeping_rejects, readings};
use parquet::arrow::ArrowWriter;
use quarry_ingest::{Reject, Source};
use serde_json::Value;

fn summary(rejects: &[Reject]) -> Vec<(u64, Option<&str>, &str)> {
    rejects
        .iter()
        .map(|r| (r.line, r.column.as_deref(), r.reason.as_str()))
        .collect()
}

#[test]
fn csv_rejects_keep_the_good_rows() {
    let inputs = Inputs::new();
    let csv = "device_id,ts,sensor,value\n\
               1,2024-01-01T00:00:00Z,a,1.5\n\
               2,2024-01-01T00:00:00Z,b,abc\n\
               ,2024-01-01T00:00:00Z,c,2\n\
               3,2024-01-01T00:00:00Z,d\n\
               4,2024-01-01T00:00:00Z,\"e\nf\",2.5\n\
               x,,g,zz\n\
               5,1704067200000,h,3.5\n";
    let source = inputs.file("readings.csv", csv);
    let table = readings();
    let data = read_keeping_rejects(&source, &table).unwrap();
    let batch = one_batch(&data, &table);
    assert_eq!(data.rows, 3);
    assert_eq!(cells(&batch, "device_id"), vec!["1", "4", "5"]);
    assert_eq!(cells(&batch, "sensor"), vec!["a", "e\nf", "h"]);

    assert_eq!(
        summary(&data.rejects),
        vec![
            (
                3,
                Some("value"),
                "column 'value' has 'abc', expected double"
            ),
            (
                4,
                Some("device_id"),
                "partition-key column 'device_id' is empty; every row needs a partition key"
            ),
            (
                5,
                None,
                "not valid CSV: the row has 3 fields but the header has 4"
            ),
            (
                8,
                Some("device_id"),
                "column 'device_id' has 'x', expected bigint (a whole number that fits in 64 bits)"
            ),
        ]
    );
    let bad = &data.rejects[0];
    assert_eq!(bad.source, source.to_string());
    assert_eq!(bad.value.as_deref(), Some("abc"));
    assert_eq!(bad.expected.as_deref(), Some("double"));
    assert_eq!(bad.record["sensor"], Value::String("b".into()));
    assert_eq!(bad.record["device_id"], Value::String("2".into()));
    let missing = &data.rejects[1];
    assert_eq!(missing.record["device_id"], Value::Null);
    assert_eq!(missing.expected.as_deref(), Some("bigint"));
    let short = &data.rejects[2];
    assert_eq!(short.value.as_deref(), Some("3,2024-01-01T00:00:00Z,d"));
    assert!(short.record.is_empty());

    // Reject lines are NDJSON that reads back.
    for reject in &data.rejects {
        let line = reject.to_json_line();
        let back: Reject = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, reject);
    }
}

#[test]
fn ndjson_rejects_explain_each_line() {
    let inputs = Inputs::new();
    let lines = [
        r#"{"device_id": 1, "ts": "2024-01-01T00:00:00Z", "value": 1}"#,
        r#"{"device_id": 2, "ts": "2024-01-01T00:00:00Z", "value": "abc"}"#,
        r#"{"device_id": 3, "ts": "#,
        r#"[1, 2]"#,
        r#"{"device_id": 4, "ts": "2024-01-01T00:00:00Z", "sensor": [1]}"#,
        r#"{"ts": "2024-01-01T00:00:00Z"}"#,
        r#"{"device_id": 5, "ts": "2024-01-01T00:00:00Z"} {"device_id": 6, "ts": 0}"#,
        r#"{"device_id": 7, "ts": "2024-01-01T00:00:00Z", "value": 7}"#,
    ];
    let source = inputs.file("readings.ndjson", lines.join("\n"));
    let table = readings();
    let data = read_keeping_rejects(&source, &table).unwrap();
    let batch = one_batch(&data, &table);
    assert_eq!(cells(&batch, "device_id"), vec!["1", "7"]);
    let got: Vec<(u64, Option<&str>)> = data
        .rejects
        .iter()
        .map(|r| (r.line, r.column.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, Some("value")),
            (3, None),
            (4, None),
            (5, Some("sensor")),
            (6, Some("device_id")),
            (7, None),
        ]
    );
    assert!(
        data.rejects[1].reason.contains("not valid JSON"),
        "{:?}",
        data.rejects[1]
    );
    assert!(
        data.rejects[2].reason.contains("JSON array"),
        "{:?}",
        data.rejects[2]
    );
    assert!(
        data.rejects[5].reason.contains("more than one JSON value"),
        "{:?}",
        data.rejects[5]
    );
    assert_eq!(data.rejects[1].value.as_deref(), Some(lines[2]));
    assert_eq!(data.rejects[0].record["value"], Value::String("abc".into()));
}

#[test]
fn parquet_rejects_are_numbered_by_row() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Int64, true),
        Field::new("ts", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
            Arc::new(StringArray::from(vec!["0", "0", "0", "0"])),
            Arc::new(StringArray::from(vec![
                Some("1"),
                Some("2"),
                Some("bad"),
                None,
            ])),
        ],
    )
    .unwrap();
    let inputs = Inputs::new();
    let path = inputs.path("r.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let table = readings();
    let data = read_keeping_rejects(&Source::File(path), &table).unwrap();
    assert_eq!(
        cells(&one_batch(&data, &table), "device_id"),
        vec!["1", "4"]
    );
    let got: Vec<(u64, Option<&str>)> = data
        .rejects
        .iter()
        .map(|r| (r.line, r.column.as_deref()))
        .collect();
    assert_eq!(got, vec![(2, Some("device_id")), (3, Some("value"))]);
    assert_eq!(data.rejects[1].record["value"], Value::String("bad".into()));
    assert_eq!(
        data.rejects[1].record["device_id"],
        Value::String("3".into())
    );
}

#[test]
fn a_source_of_only_rejects_has_no_batches() {
    let inputs = Inputs::new();
    let source = inputs.file("r.csv", "device_id,ts\n,1\n,2\n");
    let data = read_keeping_rejects(&source, &readings()).unwrap();
    assert_eq!(data.rows, 0);
    assert!(data.batches.is_empty());
    assert_eq!(data.rejects.len(), 2);
}
