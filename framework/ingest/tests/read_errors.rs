//! Bad input gets an error that names the input, the line (or row), the column, the value and
//! the expected type, and says what to fix.

mod common;

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use common::{Inputs, error_of, read, readings};
use parquet::arrow::ArrowWriter;
use quarry_ingest::{Error, Source};

/// A readings CSV with good rows, a quoted multi-line field on lines 3-4, and `bad` as line 9.
fn readings_csv(bad: &str) -> String {
    let mut csv = String::from("device_id,ts,sensor,value,status\n");
    csv.push_str("1,2024-01-01T00:00:00Z,temp,20.5,ok\n"); // line 2
    csv.push_str("1,2024-01-01T00:01:00Z,temp,20.5,\"two\nlines\"\n"); // lines 3-4
    csv.push('\n'); // line 5, blank
    for i in 6..9 {
        csv.push_str(&format!("2,2024-01-01T00:0{i}:00Z,hum,0.{i},ok\n"));
    }
    csv.push_str(bad); // line 9
    csv.push_str("\n3,2024-01-01T00:00:00Z,temp,1,ok\n");
    csv
}

#[test]
fn csv_bad_value_names_file_line_column_value_and_type() {
    let inputs = Inputs::new();
    let source = inputs.file(
        "readings.csv",
        readings_csv("2,2024-01-01T00:09:00Z,hum,abc,ok"),
    );
    let err = error_of(&source, &readings());
    assert_eq!(
        err,
        format!("{source} line 9: column 'value' has 'abc', expected double")
    );

    let source = inputs.file("ts.csv", readings_csv("2,last tuesday,hum,1,ok"));
    let err = error_of(&source, &readings());
    assert!(
        err.starts_with(&format!(
            "{source} line 9: column 'ts' has 'last tuesday', expected timestamp ("
        )),
        "{err}"
    );
    assert!(
        err.contains("RFC 3339") && err.contains("milliseconds"),
        "{err}"
    );
}

#[test]
fn csv_missing_partition_key_is_an_error() {
    let inputs = Inputs::new();
    let source = inputs.file(
        "readings.csv",
        readings_csv(",2024-01-01T00:09:00Z,hum,1,ok"),
    );
    let err = error_of(&source, &readings());
    assert_eq!(
        err,
        format!(
            "{source} line 9: partition-key column 'device_id' is empty; every row needs a \
             partition key"
        )
    );
    let source = inputs.file("ck.csv", readings_csv("2,,hum,1,ok"));
    let err = error_of(&source, &readings());
    assert!(
        err.contains("line 9: clustering column 'ts' is empty"),
        "{err}"
    );
}

#[test]
fn unknown_and_missing_columns_are_errors() {
    let inputs = Inputs::new();
    let source = inputs.file(
        "readings.csv",
        "device_id,ts,temprature\n1,2024-01-01T00:00:00Z,3\n",
    );
    let err = error_of(&source, &readings());
    assert_eq!(
        err,
        format!(
            "{source}: column 'temprature' is not in table iot.readings; columns are device_id, \
             ts, sensor, value, status"
        )
    );

    let source = inputs.file("nokey.csv", "device_id,value\n1,3\n");
    let err = error_of(&source, &readings());
    assert!(
        err.contains("has no column 'ts', a clustering column of table iot.readings"),
        "{err}"
    );

    let source = inputs.file("dup.csv", "device_id,ts,value,Value\n");
    let err = error_of(&source, &readings());
    assert!(
        err.contains("'value' and 'Value' both name column 'value'"),
        "{err}"
    );
}

#[test]
fn csv_structure_problems_name_the_line() {
    let inputs = Inputs::new();
    let source = inputs.file("short.csv", readings_csv("2,2024-01-01T00:09:00Z,hum"));
    let err = error_of(&source, &readings());
    assert_eq!(
        err,
        format!("{source} line 9: not valid CSV: the row has 3 fields but the header has 5")
    );

    let source = inputs.file("empty.csv", "");
    let err = error_of(&source, &readings());
    assert!(
        err.contains("is empty; a CSV file starts with a header row"),
        "{err}"
    );

    let source = inputs.file("latin1.csv", b"device_id,ts,sensor\n1,1,caf\xe9\n");
    let err = error_of(&source, &readings());
    assert!(
        err.contains("line 2: not valid CSV: the row is not UTF-8"),
        "{err}"
    );

    let source = inputs.file(
        "open.csv",
        "device_id,ts,sensor\n1,1,\"never closed\n2,2,x\n",
    );
    let err = error_of(&source, &readings());
    assert!(
        err.contains("line 2: not valid CSV: a quoted field is never closed"),
        "{err}"
    );
}

#[test]
fn ndjson_errors_name_the_line() {
    let inputs = Inputs::new();
    let table = readings();
    let good = r#"{"device_id": 1, "ts": "2024-01-01T00:00:00Z", "value": 1}"#;

    let source = inputs.file(
        "bad.ndjson",
        format!(
            "{good}\n\n{}\n",
            r#"{"device_id": 1, "ts": 5, "value": "abc"}"#
        ),
    );
    assert_eq!(
        error_of(&source, &table),
        format!("{source} line 3: column 'value' has 'abc', expected double")
    );

    let source = inputs.file(
        "unknown.ndjson",
        format!(
            "{good}\n{}\n",
            r#"{"device_id": 1, "ts": 5, "temprature": 3}"#
        ),
    );
    assert_eq!(
        error_of(&source, &table),
        format!(
            "{source} line 2: column 'temprature' is not in table iot.readings; columns are \
             device_id, ts, sensor, value, status"
        )
    );

    let source = inputs.file("nokey.ndjson", format!("{good}\n{{\"ts\": 5}}\n"));
    assert!(error_of(&source, &table).ends_with(
        "line 2: partition-key column 'device_id' is empty; every row needs a partition key"
    ));

    let source = inputs.file("broken.ndjson", format!("{good}\n{{\"device_id\": 1,\n"));
    let err = error_of(&source, &table);
    assert!(
        err.starts_with(&format!(
            "{source} line 2: not valid NDJSON: the line is not valid JSON"
        )),
        "{err}"
    );

    let source = inputs.file("array.json", format!("[{good}]\n"));
    let err = error_of(&source, &table);
    assert!(
        err.contains("line 1: not valid NDJSON: the line is a JSON array"),
        "{err}"
    );

    let source = inputs.file(
        "nested.ndjson",
        r#"{"device_id": 1, "ts": 5, "sensor": {"name": "t"}}"#,
    );
    let err = error_of(&source, &table);
    assert!(
        err.contains(r#"line 1: column 'sensor' has '{"name":"t"}', expected text"#),
        "{err}"
    );
}

fn parquet_file(
    inputs: &Inputs,
    name: &str,
    values: Vec<Option<&str>>,
    ids: Vec<Option<i64>>,
) -> Source {
    let rows = values.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Int64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("value", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(TimestampMillisecondArray::from(
                (0..rows as i64).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(values)),
        ],
    )
    .unwrap();
    let path = inputs.path(name);
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    Source::File(path)
}

#[test]
fn parquet_errors_name_the_row() {
    let inputs = Inputs::new();
    let table = readings();
    let source = parquet_file(
        &inputs,
        "bad.parquet",
        vec![Some("1"), None, Some("x1")],
        vec![Some(1), Some(2), Some(3)],
    );
    assert_eq!(
        error_of(&source, &table),
        format!("{source} row 3: column 'value' has 'x1', expected double")
    );

    let source = parquet_file(
        &inputs,
        "nokey.parquet",
        vec![None, None],
        vec![Some(1), None],
    );
    assert!(error_of(&source, &table).ends_with(
        "row 2: partition-key column 'device_id' is empty; every row needs a partition key"
    ));

    let source = inputs.file("junk.parquet", "not parquet at all");
    let err = read(&source, &table).unwrap_err();
    assert!(matches!(err, Error::Parquet { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {source} as Parquet")),
        "{err}"
    );
}

#[test]
fn unknown_formats_suggest_the_flag() {
    let inputs = Inputs::new();
    let source = inputs.file("readings.txt", "device_id,ts\n");
    let err = read(&source, &readings()).unwrap_err();
    assert!(err.is_user_error());
    let err = err.to_string();
    assert!(
        err.contains(".csv, .ndjson, .jsonl, .json, .parquet, .parq"),
        "{err}"
    );
    assert!(err.contains("--format"), "{err}");

    let err = read(&Source::Stdin, &readings()).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot tell the format of <stdin>"),
        "{err}"
    );
}
