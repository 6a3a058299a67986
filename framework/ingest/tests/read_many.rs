//! Several files read on several threads come back in the order given, and a bad file decides
//! the error.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{Inputs, readings};
use quarry_ingest::{ReadOptions, read_sources};

fn csv(first_id: u64, rows: u64) -> String {
    let mut text = String::from("device_id,ts,sensor,value\n");
    for i in 0..rows {
        text.push_str(&format!("{},2024-01-01T00:00:00Z,s,{i}.5\n", first_id + i));
    }
    text
}

#[test]
fn results_keep_the_order_of_the_sources() {
    let inputs = Inputs::new();
    let sources: Vec<_> = (0..5u64)
        .map(|i| inputs.file(&format!("part-{i}.csv"), csv(i * 1000, 10 + i)))
        .collect();
    let seen = AtomicU64::new(0);
    let data = read_sources(&sources, &readings(), &ReadOptions::default(), 3, &|rows| {
        seen.fetch_max(rows, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(data.len(), 5);
    for (i, d) in data.iter().enumerate() {
        assert!(d.source.ends_with(&format!("part-{i}.csv")), "{}", d.source);
        assert_eq!(d.rows, 10 + i as u64);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 10 + 11 + 12 + 13 + 14);
}

#[test]
fn the_first_bad_source_is_the_error() {
    let inputs = Inputs::new();
    let sources = vec![
        inputs.file("good.csv", csv(1, 3)),
        inputs.file(
            "bad.csv",
            "device_id,ts,sensor,value\n7,2024-01-01T00:00:00Z,s,oops\n",
        ),
        inputs.file("later.csv", csv(100, 3)),
    ];
    let err = read_sources(&sources, &readings(), &ReadOptions::default(), 2, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.csv") && err.contains("oops"), "{err}");
}
