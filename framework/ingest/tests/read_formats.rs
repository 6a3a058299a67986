//! Happy paths: every CQL type from CSV, NDJSON and Parquet lands in the table's schema with the
//! values the input meant.

mod common;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use common::{Inputs, cell, cells, every_type, one_batch, read, readings};
use parquet::arrow::ArrowWriter;
use quarry_ingest::{Format, ReadOptions, Source, read_source};

const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";
const UUID_V4: &str = "9b2f0e4c-5a1d-4c2b-8e7f-0a1b2c3d4e5f";
const TIMEUUID: &str = "5b6962dd-3f90-11ee-be56-0242ac120002";

/// The first row every format's fixture holds, as display text.
fn assert_full_row(batch: &RecordBatch, row: usize) {
    let expect = [
        ("id", UUID),
        ("b", "true"),
        ("ti", "-128"),
        ("si", "32767"),
        ("i", "2147483647"),
        ("bi", "9223372036854775807"),
        ("f", "1.5"),
        ("d", "2.25"),
        ("dec", "12345.678900"),
        ("a", "plain"),
        ("bl", "cafe01"),
        ("ts", "2024-01-15T10:30:00.250Z"),
        ("dt", "2024-01-15"),
        ("tm", "10:30:00.500"),
        ("tu", TIMEUUID),
        ("ip", "::1"),
    ];
    for (column, value) in expect {
        assert_eq!(cell(batch, column, row), value, "column {column}");
    }
}

#[test]
fn csv_with_every_type() {
    let inputs = Inputs::new();
    // Header order differs from the table's, one name differs in case, `k` holds a quoted
    // comma and newline, and the second row leaves every non-key column empty.
    let csv = format!(
        "ID,k,b,ti,si,i,bi,f,d,dec,a,bl,ts,dt,tm,tu,ip\n\
         {},\"a,b\nc\",true,-128,32767,2147483647,9223372036854775807,1.5,2.25,12345.6789,plain,\
         0xCAFE01,2024-01-15 10:30:00.250,2024-01-15,10:30:00.5,{TIMEUUID},0:0:0:0:0:0:0:1\n\
         {UUID_V4},k2,,,,,,,,,,,,,,,\n",
        UUID.to_uppercase()
    );
    let source = inputs.file("every.csv", csv);
    let table = every_type();
    let data = read(&source, &table).unwrap();
    assert_eq!(data.rows, 2);
    assert!(data.rejects.is_empty());
    let batch = one_batch(&data, &table);
    assert_full_row(&batch, 0);
    assert_eq!(cell(&batch, "k", 0), "a,b\nc");
    assert_eq!(cell(&batch, "id", 1), UUID_V4);
    for column in ["b", "ti", "dec", "bl", "ts", "dt", "tm", "tu", "ip", "a"] {
        assert_eq!(
            cell(&batch, column, 1),
            "NULL",
            "empty CSV field {column} is NULL"
        );
    }
    assert_eq!(data.source, source.to_string());
}

#[test]
fn csv_header_only_and_crlf_and_bom() {
    let inputs = Inputs::new();
    let table = readings();
    let empty = inputs.file("empty.csv", "device_id,ts,value\n");
    let data = read(&empty, &table).unwrap();
    assert_eq!(data.rows, 0);
    assert!(data.batches.is_empty());

    let crlf = inputs.file(
        "crlf.csv",
        "\u{feff}device_id,ts,value\r\n1,2024-01-01T00:00:00Z,0.5\r\n\r\n2,1704067200000,1e3",
    );
    let data = read(&crlf, &table).unwrap();
    let batch = one_batch(&data, &table);
    assert_eq!(cells(&batch, "device_id"), vec!["1", "2"]);
    assert_eq!(cells(&batch, "ts"), vec!["2024-01-01T00:00:00Z"; 2]);
    assert_eq!(cells(&batch, "value"), vec!["0.5", "1000.0"]);
    assert_eq!(cells(&batch, "sensor"), vec!["NULL", "NULL"]);
}

#[test]
fn ndjson_with_every_type() {
    let inputs = Inputs::new();
    let lines = [
        format!(
            r#"{{"id":"{UUID}","k":"x","b":true,"ti":-128,"si":32767,"i":2147483647,"bi":9223372036854775807,"f":1.5,"d":2.25,"dec":12345.6789,"a":"plain","bl":"0xcafe01","ts":"2024-01-15T10:30:00.250Z","dt":"2024-01-15","tm":"10:30:00.5","tu":"{TIMEUUID}","ip":"::1"}}"#
        ),
        String::new(),
        format!(r#"{{"id":"{UUID_V4}","k":"y","ts":1705314600250,"b":null}}"#),
    ];
    let table = every_type();
    for name in ["every.ndjson", "every.jsonl", "every.json"] {
        let source = inputs.file(name, lines.join("\n"));
        let data = read(&source, &table).unwrap_or_else(|e| panic!("{name}: {e}"));
        let batch = one_batch(&data, &table);
        assert_eq!(batch.num_rows(), 2, "{name}");
        assert_full_row(&batch, 0);
        assert_eq!(cell(&batch, "ts", 1), "2024-01-15T10:30:00.250Z");
        assert_eq!(cell(&batch, "b", 1), "NULL");
        assert_eq!(cell(&batch, "d", 1), "NULL");
    }
}

#[test]
fn ndjson_keys_may_differ_in_case_from_the_table() {
    let inputs = Inputs::new();
    let source = inputs.file(
        "r.ndjson",
        "{\"Device_ID\": 7, \"TS\": \"2024-01-01T00:00:00Z\", \"Value\": 1.25}\n\
         {\"Device_ID\": 8, \"TS\": \"2024-01-01T00:00:01Z\", \"Value\": \"2\"}\n",
    );
    let table = readings();
    let batch = one_batch(&read(&source, &table).unwrap(), &table);
    assert_eq!(cells(&batch, "device_id"), vec!["7", "8"]);
    assert_eq!(cells(&batch, "value"), vec!["1.25", "2.0"]);
}

fn write_parquet(inputs: &Inputs, name: &str, batch: &RecordBatch) -> Source {
    let path = inputs.path(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    Source::File(path)
}

#[test]
fn parquet_with_every_type_in_its_own_types() {
    let uuid_bytes = uuid_bytes(UUID);
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "ID",
            Arc::new(
                FixedSizeBinaryArray::try_from_iter([uuid_bytes, uuid_bytes].into_iter()).unwrap(),
            ),
        ),
        ("k", Arc::new(StringArray::from(vec!["x", "y"]))),
        ("b", Arc::new(BooleanArray::from(vec![Some(true), None]))),
        ("ti", Arc::new(Int32Array::from(vec![Some(-128), None]))),
        ("si", Arc::new(Int16Array::from(vec![Some(32767), None]))),
        ("i", Arc::new(Int32Array::from(vec![Some(i32::MAX), None]))),
        ("bi", Arc::new(Int64Array::from(vec![Some(i64::MAX), None]))),
        ("f", Arc::new(Float32Array::from(vec![Some(1.5), None]))),
        ("d", Arc::new(Float64Array::from(vec![Some(2.25), None]))),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(123_456_789), None])
                    .with_precision_and_scale(12, 4)
                    .unwrap(),
            ),
        ),
        ("a", Arc::new(StringArray::from(vec![Some("plain"), None]))),
        (
            "bl",
            Arc::new(BinaryArray::from(vec![Some(&[0xca, 0xfe, 0x01][..]), None])),
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1_705_314_600_250_000),
                None,
            ])),
        ),
        ("dt", Arc::new(Date32Array::from(vec![Some(19737), None]))),
        (
            "tm",
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(37_800_500_000),
                None,
            ])),
        ),
        (
            "tu",
            Arc::new(StringArray::from(vec![Some(TIMEUUID), None])),
        ),
        ("ip", Arc::new(StringArray::from(vec![Some("::1"), None]))),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch =
        RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let inputs = Inputs::new();
    let table = every_type();
    for name in ["every.parquet", "every.parq"] {
        let source = write_parquet(&inputs, name, &batch);
        let data = read(&source, &table).unwrap();
        let out = one_batch(&data, &table);
        assert_eq!(out.num_rows(), 2);
        assert_full_row(&out, 0);
        assert_eq!(cell(&out, "ts", 1), "NULL");
    }
}

#[test]
fn parquet_text_columns_are_parsed_like_csv() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("value", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["1", "2"])),
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![0, 1])),
            Arc::new(StringArray::from(vec![Some("0.5"), None])),
        ],
    )
    .unwrap();
    let inputs = Inputs::new();
    let source = write_parquet(&inputs, "r.parquet", &batch);
    let table = readings();
    let out = one_batch(&read(&source, &table).unwrap(), &table);
    assert_eq!(cells(&out, "device_id"), vec!["1", "2"]);
    assert_eq!(
        cells(&out, "ts"),
        vec!["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.001Z"]
    );
    assert_eq!(cells(&out, "value"), vec!["0.5", "NULL"]);
}

#[test]
fn batches_follow_batch_size_and_progress_counts_rows() {
    let inputs = Inputs::new();
    let mut csv = String::from("device_id,ts,value\n");
    for i in 0..25 {
        csv.push_str(&format!("{i},{},{i}.5\n", 1_700_000_000_000u64 + i));
    }
    let table = readings();
    let source = inputs.file("many.csv", csv);
    let options = ReadOptions {
        batch_size: 10,
        ..ReadOptions::default()
    };
    let mut seen = Vec::new();
    let data = read_source(&source, &table, &options, &mut |rows| seen.push(rows)).unwrap();
    assert_eq!(seen, vec![10, 20, 25]);
    assert_eq!(data.rows, 25);
    assert_eq!(
        data.batches
            .iter()
            .map(|b| b.num_rows())
            .collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    let batch = one_batch(&data, &table);
    assert_eq!(cell(&batch, "device_id", 24), "24");
    assert_eq!(cell(&batch, "value", 24), "24.5");
}

#[test]
fn format_option_overrides_the_extension() {
    let inputs = Inputs::new();
    let table = readings();
    let source = inputs.file("readings.txt", "device_id,ts\n1,2024-01-01T00:00:00Z\n");
    let options = ReadOptions {
        format: Some(Format::Csv),
        ..ReadOptions::default()
    };
    let data = read_source(&source, &table, &options, &mut |_| {}).unwrap();
    assert_eq!(data.rows, 1);
}

fn uuid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn devices() -> quarry_core::schema::TableDef {
    use quarry_core::cql_type::CqlType;
    use quarry_core::schema::{ColumnDef, TableDef};
    TableDef::new(
        "iot",
        "devices",
        vec![
            ColumnDef::new("id", CqlType::BigInt),
            ColumnDef::new("tags", CqlType::map(CqlType::Text, CqlType::Int).unwrap()),
            ColumnDef::new("owners", CqlType::set(CqlType::Uuid).unwrap()),
            ColumnDef::new("readings", CqlType::list(CqlType::Double).unwrap()),
        ],
        vec!["id".into()],
        vec![],
    )
    .unwrap()
}

#[test]
fn collections_from_ndjson_csv_and_parquet() {
    let inputs = Inputs::new();
    let table = devices();
    let upper = UUID.to_uppercase();
    let expected_first = [
        ("tags", "{b: 2, a: 1}".to_string()),
        ("owners", format!("[{UUID}]")),
        ("readings", "[2.5, 1.0]".to_string()),
    ];

    let ndjson = inputs.file(
        "devices.ndjson",
        format!(
            "{{\"id\": 1, \"tags\": {{\"b\": 2, \"a\": 1}}, \"owners\": [\"{upper}\"], \"readings\": [2.5, 1]}}\n\
             {{\"id\": 2, \"tags\": null}}\n"
        ),
    );
    let csv = inputs.file(
        "devices.csv",
        format!(
            "id,tags,owners,readings\n\
             1,\"{{\"\"b\"\": 2, \"\"a\"\": 1}}\",\"[\"\"{upper}\"\"]\",\"[2.5, 1]\"\n\
             2,,,\n"
        ),
    );
    for source in [&ndjson, &csv] {
        let batch = one_batch(&read(source, &table).unwrap(), &table);
        for (column, value) in &expected_first {
            assert_eq!(&cell(&batch, column, 0), value, "{source} column {column}");
        }
        for column in ["tags", "owners", "readings"] {
            assert_eq!(cell(&batch, column, 1), "NULL", "{source} column {column}");
        }
    }

    // Parquet lists and maps of other element types convert element by element.
    let mut readings = arrow::array::ListBuilder::new(arrow::array::Float32Builder::new());
    readings.append_value([Some(2.5), Some(1.0)]);
    let mut tags = arrow::array::MapBuilder::new(
        None,
        arrow::array::StringBuilder::new(),
        arrow::array::Int64Builder::new(),
    );
    tags.keys().append_value("b");
    tags.values().append_value(2);
    tags.keys().append_value("a");
    tags.values().append_value(1);
    tags.append(true).unwrap();
    let mut owners = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
    owners.append_value([Some(upper.as_str())]);
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("tags", Arc::new(tags.finish())),
        ("owners", Arc::new(owners.finish())),
        ("readings", Arc::new(readings.finish())),
    ])
    .unwrap();
    let parquet = write_parquet(&inputs, "devices.parquet", &batch);
    let batch = one_batch(&read(&parquet, &table).unwrap(), &table);
    for (column, value) in &expected_first {
        assert_eq!(&cell(&batch, column, 0), value, "parquet column {column}");
    }
}

#[test]
fn a_bad_collection_element_names_the_line_and_the_shape_expected() {
    let inputs = Inputs::new();
    let table = devices();
    for (name, contents, line) in [
        (
            "bad.ndjson",
            "{\"id\": 1, \"readings\": [1.5]}\n{\"id\": 2, \"readings\": [1, \"x\"]}\n",
            2,
        ),
        ("bad.csv", "id,readings\n1,[1.5]\n2,\"[1, \"\"x\"\"]\"\n", 3),
    ] {
        let source = inputs.file(name, contents);
        let err = common::error_of(&source, &table);
        assert!(
            err.contains(&format!("line {line}: column 'readings' has")),
            "{err}"
        );
        assert!(
            err.contains("expected list<double> (a JSON array, like [1, 2])"),
            "{err}"
        );
    }
}
