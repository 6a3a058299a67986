//! Throughput check, ignored by default (it is only meaningful in an optimised build):
//! `cargo test -p quarry-ingest --release --test throughput -- --ignored --nocapture`.
//! The targets are 300k rows/s from CSV and 1M rows/s from Parquet on two cores.

mod common;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use common::{Inputs, read, readings};
use parquet::arrow::ArrowWriter;
use quarry_ingest::Source;

const ROWS: usize = 1_000_000;

fn rate(label: &str, rows: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label}: {rows} rows in {secs:.2} s = {:.0} rows/s",
        rows as f64 / secs
    );
}

#[test]
#[ignore = "slow; run in release to measure"]
fn csv_ndjson_and_parquet_throughput() {
    let inputs = Inputs::new();
    let table = readings();
    let mut csv = String::from("device_id,ts,sensor,value,status\n");
    let mut ndjson = String::new();
    for i in 0..ROWS {
        let ts = 1_700_000_000_000u64 + i as u64;
        csv.push_str(&format!("{},{ts},temp,{}.25,ok\n", i % 1000, i % 97));
        ndjson.push_str(&format!(
            "{{\"device_id\":{},\"ts\":{ts},\"sensor\":\"temp\",\"value\":{}.25,\"status\":\"ok\"}}\n",
            i % 1000,
            i % 97
        ));
    }
    let source = inputs.file("big.csv", csv);
    let started = Instant::now();
    let data = read(&source, &table).unwrap();
    rate("csv (epoch ms)", data.rows, started);

    let mut csv = String::from("device_id,ts,sensor,value,status\n");
    for i in 0..ROWS {
        csv.push_str(&format!(
            "{},2024-01-15T10:{:02}:{:02}.123Z,temp,{}.25,ok\n",
            i % 1000,
            (i / 60) % 60,
            i % 60,
            i % 97
        ));
    }
    let source = inputs.file("big_text_ts.csv", csv);
    let started = Instant::now();
    let data = read(&source, &table).unwrap();
    rate("csv (RFC 3339)", data.rows, started);

    let source = inputs.file("big.ndjson", ndjson);
    let started = Instant::now();
    let data = read(&source, &table).unwrap();
    rate("ndjson", data.rows, started);

    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("sensor", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
        Field::new("status", DataType::Utf8, true),
    ]));
    let path = inputs.path("big.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), None).unwrap();
    for start in (0..ROWS).step_by(65_536) {
        let end = (start + 65_536).min(ROWS);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    (start..end).map(|i| (i % 1000) as i64),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    (start..end).map(|i| 1_700_000_000_000 + i as i64),
                )),
                Arc::new(StringArray::from_iter_values((start..end).map(|_| "temp"))),
                Arc::new(Float64Array::from_iter_values(
                    (start..end).map(|i| i as f64),
                )),
                Arc::new(StringArray::from_iter_values((start..end).map(|_| "ok"))),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    writer.close().unwrap();
    let started = Instant::now();
    let data = read(&Source::File(path), &table).unwrap();
    rate("parquet", data.rows, started);
}
