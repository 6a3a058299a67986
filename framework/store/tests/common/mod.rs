//! Fixtures shared by the embedded store's tests: one table, rows to write, and ways to read a
//! scan back as a map from primary key to value.

#![allow(dead_code)] // Each test binary uses a different part of the fixtures.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use futures::TryStreamExt;
use quarry_core::cql_type::CqlType;
use quarry_core::schema::{ColumnDef, KeyspaceDef, TableDef, TableName};
use quarry_core::token::Token;
use quarry_store::{EmbeddedOptions, EmbeddedStore, ScanPlan, ScanRequest, Store};

/// `iot.r`: partition key `device`, clustering `seq`.
pub fn table() -> TableDef {
    TableDef::new(
        "iot",
        "r",
        vec![
            ColumnDef::new("device", CqlType::BigInt),
            ColumnDef::new("seq", CqlType::BigInt),
            ColumnDef::new("sensor", CqlType::Text),
            ColumnDef::new("value", CqlType::Double),
        ],
        vec!["device".into()],
        vec!["seq".into()],
    )
    .unwrap()
}

pub fn name() -> TableName {
    TableName::new("iot", "r")
}

/// Small runs, row groups and splits, so that a few thousand rows exercise every path; work runs
/// inline so that tests are deterministic.
pub fn small_options() -> EmbeddedOptions {
    EmbeddedOptions {
        memtable_flush_rows: 500,
        bulk_write_rows: 1_000,
        rows_per_group: 200,
        rows_per_file: 1_000,
        max_runs: 3,
        max_dead_fraction: 0.1,
        background: false,
        compaction_threads: 1,
        raise_compaction_depth: 32,
        idle_step_patience: std::time::Duration::from_secs(30),
    }
}

/// Rows for devices × seqs with value = f(device, seq, version).
pub fn rows(
    devices: std::ops::Range<i64>,
    seqs: std::ops::Range<i64>,
    version: f64,
) -> RecordBatch {
    let mut d = Vec::new();
    let mut s = Vec::new();
    let mut sensor = Vec::new();
    let mut v = Vec::new();
    for device in devices {
        for seq in seqs.clone() {
            d.push(device);
            s.push(seq);
            sensor.push(if seq % 2 == 0 { "temp" } else { "hum" });
            v.push(version * 1000.0 + (device * 10 + seq) as f64);
        }
    }
    RecordBatch::try_new(
        table().arrow_schema(),
        vec![
            Arc::new(Int64Array::from(d)),
            Arc::new(Int64Array::from(s)),
            Arc::new(StringArray::from(sensor)),
            Arc::new(Float64Array::from(v)),
        ],
    )
    .unwrap()
}

/// A writer on `dir` with keyspace `iot` of `shards` shards and table `iot.r`.
pub async fn new_store_with_shards(dir: &std::path::Path, shards: u32) -> EmbeddedStore {
    new_store_with_options(dir, shards, small_options()).await
}

/// [`new_store_with_shards`] with the store's options given.
pub async fn new_store_with_options(
    dir: &std::path::Path,
    shards: u32,
    options: EmbeddedOptions,
) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir, options).unwrap();
    let mut ks = KeyspaceDef::new("iot");
    ks.shards = shards;
    store.create_keyspace(ks, false).await.unwrap();
    store.create_table(table(), false).await.unwrap();
    store
}

/// Every batch of every split, or the first error (from opening a split or from its stream).
pub async fn try_read(plan: ScanPlan) -> quarry_store::Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for split in plan.splits {
        let batches: Vec<RecordBatch> = split.source.open()?.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

pub async fn read(plan: ScanPlan) -> Vec<RecordBatch> {
    try_read(plan).await.unwrap()
}

/// (device, seq) -> value over every returned row; panics on a duplicate key.
pub fn by_key(batches: &[RecordBatch]) -> BTreeMap<(i64, i64), f64> {
    let mut out = BTreeMap::new();
    for b in batches {
        let d = b.column(0).as_primitive::<Int64Type>();
        let s = b.column(1).as_primitive::<Int64Type>();
        let v = b.column(3).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            assert!(
                out.insert((d.value(i), s.value(i)), v.value(i)).is_none(),
                "key ({}, {}) returned twice",
                d.value(i),
                s.value(i)
            );
        }
    }
    out
}

/// Every live row of `iot.r`, by key.
pub async fn scan_all(store: &EmbeddedStore) -> BTreeMap<(i64, i64), f64> {
    by_key(&read(store.plan_scan(&ScanRequest::full(name())).unwrap()).await)
}

/// The token of a device (the partition key), as the store computes it.
pub fn token_of(device: i64) -> Token {
    let values: arrow::array::ArrayRef = Arc::new(Int64Array::from(vec![device]));
    quarry_core::partition_key::tokens(
        &[quarry_core::partition_key::KeyColumn {
            name: "device",
            cql_type: CqlType::BigInt,
            values: &values,
        }],
        1,
    )
    .unwrap()
    .value(0)
}
