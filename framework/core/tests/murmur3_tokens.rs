//! Every row of the Cassandra reference vectors (`tests/data/murmur3_tokens.csv`, a copy of
//! `shared/testdata/murmur3_tokens.csv`, computed by the Cassandra Python driver) must hash to the
//! same token through Quarry's partition-key encoding.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use quarry_core::cql_type::CqlType;
use quarry_core::partition_key::{KeyColumn, tokens};

struct Vector {
    cql_type: String,
    key: String,
    token: i64,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/murmur3_tokens.csv");
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (cql_type, rest) = if let Some(rest) = line.strip_prefix("\"(bigint,text)\",") {
                ("(bigint,text)".to_string(), rest)
            } else {
                let (t, rest) = line.split_once(',').expect("a type column");
                (t.to_string(), rest)
            };
            let (key, token) = rest.rsplit_once(',').expect("a token column");
            Vector {
                cql_type,
                key: key.to_string(),
                token: token.parse().expect("a decimal token"),
            }
        })
        .collect()
}

fn token_for(columns: Vec<(CqlType, ArrayRef)>) -> i64 {
    let key: Vec<KeyColumn<'_>> = columns
        .iter()
        .map(|(t, values)| KeyColumn {
            name: "k",
            cql_type: *t,
            values,
        })
        .collect();
    tokens(&key, 1).expect("a token").value(0)
}

#[test]
fn every_reference_token_matches() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 818, "the reference file has 818 vectors");
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for v in &vectors {
        let columns: Vec<(CqlType, ArrayRef)> = match v.cql_type.as_str() {
            "bigint" => vec![(
                CqlType::BigInt,
                Arc::new(Int64Array::from(vec![v.key.parse::<i64>().unwrap()])),
            )],
            "int" => vec![(
                CqlType::Int,
                Arc::new(Int32Array::from(vec![v.key.parse::<i32>().unwrap()])),
            )],
            "text" => vec![(
                CqlType::Text,
                Arc::new(StringArray::from(vec![v.key.as_str()])),
            )],
            "uuid" => vec![(
                CqlType::Uuid,
                Arc::new(StringArray::from(vec![v.key.as_str()])),
            )],
            "(bigint,text)" => {
                let (id, name) = v.key.split_once('|').expect("bigint|text");
                vec![
                    (
                        CqlType::BigInt,
                        Arc::new(Int64Array::from(vec![id.parse::<i64>().unwrap()])),
                    ),
                    (CqlType::Text, Arc::new(StringArray::from(vec![name]))),
                ]
            }
            other => panic!("unexpected type {other} in the reference file"),
        };
        assert_eq!(
            token_for(columns),
            v.token,
            "{} key {:?} should hash to {}",
            v.cql_type,
            v.key,
            v.token
        );
        *checked.entry(v.cql_type.clone()).or_default() += 1;
    }
    // All five kinds of key were exercised.
    assert_eq!(checked.len(), 5, "{checked:?}");
}

#[test]
fn batch_tokens_match_row_by_row_tokens() {
    let ids: Vec<i64> = (0..1000).map(|i| i * 7919 - 500_000).collect();
    let names: Vec<String> = (0..1000).map(|i| format!("sensor-{i}")).collect();
    let id_array: ArrayRef = Arc::new(Int64Array::from(ids.clone()));
    let name_array: ArrayRef = Arc::new(StringArray::from(names.clone()));
    let batch = tokens(
        &[
            KeyColumn {
                name: "id",
                cql_type: CqlType::BigInt,
                values: &id_array,
            },
            KeyColumn {
                name: "name",
                cql_type: CqlType::Text,
                values: &name_array,
            },
        ],
        1000,
    )
    .unwrap();
    for i in [0usize, 1, 500, 999] {
        let one = token_for(vec![
            (CqlType::BigInt, Arc::new(Int64Array::from(vec![ids[i]]))),
            (
                CqlType::Text,
                Arc::new(StringArray::from(vec![names[i].as_str()])),
            ),
        ]);
        assert_eq!(batch.value(i), one);
    }
}
