//! What every store checks before it writes: the batches have the table's columns and types,
//! key columns hold no NULLs, values of text-held CQL types (uuid, timeuuid, inet, ascii) are
//! valid and in canonical form, and sets and maps are in CQL's form (elements or keys sorted and
//! distinct, a map keeping the last value written for a key, an empty collection NULL), so every
//! store refuses the same rows with the same message and holds a collection the way a CQL cluster
//! returns it.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, MapArray, RecordBatch, StringArray,
    StructArray, UInt32Array,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::compute::{nullif, take};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use quarry_core::cql_type::{CqlType, canonical_text};
use quarry_core::schema::TableDef;

use crate::error::{Error, Result};

/// Checks that `batches` have the table's columns and types and that key columns hold no NULLs,
/// puts values of text-held CQL types (uuid, timeuuid, inet, ascii) in canonical form, and sorts
/// sets and maps.
pub fn conform_batches(table: &TableDef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    check_batches(table, &batches)?;
    let to_conform: Vec<(usize, CqlType)> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| needs_conforming(c.cql_type))
        .map(|(i, c)| (i, c.cql_type))
        .collect();
    if to_conform.is_empty() {
        return Ok(batches);
    }
    batches
        .into_iter()
        .map(|batch| {
            let mut columns = batch.columns().to_vec();
            for &(i, cql_type) in &to_conform {
                let conformed = conform_column(cql_type, &columns[i]).map_err(|problem| {
                    Error::SchemaMismatch {
                        table: table.table_name().to_string(),
                        problem: format!(
                            "column '{}' ({cql_type}) {problem}",
                            table.columns[i].name
                        ),
                    }
                })?;
                if let Some(conformed) = conformed {
                    columns[i] = conformed;
                }
            }
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

fn is_text_held(t: CqlType) -> bool {
    matches!(
        t,
        CqlType::Uuid | CqlType::TimeUuid | CqlType::Inet | CqlType::Ascii
    )
}

fn needs_conforming(t: CqlType) -> bool {
    is_text_held(t) || t.is_collection()
}

/// `values` in the form every store holds, or `None` when they already are; the error names the
/// first bad value.
fn conform_column(
    cql_type: CqlType,
    values: &ArrayRef,
) -> std::result::Result<Option<ArrayRef>, String> {
    let conformed = conform_values(cql_type, values)?;
    if !cql_type.is_collection() {
        return Ok(conformed);
    }
    let collections = conformed.as_ref().unwrap_or(values);
    Ok(empty_as_null(collections)?.or(conformed))
}

/// A list or map column with its empty collections as NULL (a CQL cluster keeps no empty
/// collection: writing one deletes the column's value), or `None` when it has none.
fn empty_as_null(collections: &ArrayRef) -> std::result::Result<Option<ArrayRef>, String> {
    let offsets: &[i32] = match collections.data_type() {
        DataType::Map(..) => collections.as_map().value_offsets(),
        _ => collections.as_list::<i32>().value_offsets(),
    };
    let empty: Vec<bool> = offsets.windows(2).map(|w| w[0] == w[1]).collect();
    if !empty
        .iter()
        .enumerate()
        .any(|(row, &e)| e && collections.is_valid(row))
    {
        return Ok(None);
    }
    nullif(collections, &BooleanArray::from(empty))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `values` with text-held values canonical and sets and maps sorted, or `None` when they
/// already are.
fn conform_values(
    cql_type: CqlType,
    values: &ArrayRef,
) -> std::result::Result<Option<ArrayRef>, String> {
    match cql_type {
        t if is_text_held(t) => canonical_column(t, values.as_string::<i32>()),
        CqlType::List(element) => {
            let list = values.as_list::<i32>();
            no_null_elements(list, list.values(), list.value_offsets())?;
            Ok(conform_column(*element, list.values())?.map(|elements| {
                let DataType::List(field) = list.data_type() else {
                    unreachable!("a list column holds a list")
                };
                Arc::new(ListArray::new(
                    Arc::clone(field),
                    list.offsets().clone(),
                    elements,
                    list.nulls().cloned(),
                )) as ArrayRef
            }))
        }
        CqlType::Set(element) => {
            let list = values.as_list::<i32>();
            no_null_elements(list, list.values(), list.value_offsets())?;
            let elements = conform_column(*element, list.values())?;
            let changed = elements.is_some();
            let elements = elements.unwrap_or_else(|| Arc::clone(list.values()));
            let sorted = sorted_distinct(&elements, list.value_offsets(), Duplicates::KeepFirst)
                .map_err(|e| e.to_string())?;
            if sorted.is_none() && !changed {
                return Ok(None);
            }
            let (elements, offsets) = match sorted {
                Some((indices, offsets)) => (
                    take(&elements, &indices, None).map_err(|e| e.to_string())?,
                    offsets,
                ),
                None => (elements, list.offsets().clone()),
            };
            let DataType::List(field) = list.data_type() else {
                unreachable!("a set column holds a list")
            };
            Ok(Some(Arc::new(ListArray::new(
                Arc::clone(field),
                offsets,
                elements,
                list.nulls().cloned(),
            ))))
        }
        CqlType::Map(key, value) => {
            let map = values.as_map();
            no_null_elements(map, map.values(), map.value_offsets())?;
            let keys = conform_column(*key, map.keys())?;
            let entry_values = conform_column(*value, map.values())?;
            let changed = keys.is_some() || entry_values.is_some();
            let keys = keys.unwrap_or_else(|| Arc::clone(map.keys()));
            let entry_values = entry_values.unwrap_or_else(|| Arc::clone(map.values()));
            let sorted = sorted_distinct(&keys, map.value_offsets(), Duplicates::KeepLast)
                .map_err(|e| e.to_string())?;
            if sorted.is_none() && !changed {
                return Ok(None);
            }
            let (keys, entry_values, offsets) = match sorted {
                Some((indices, offsets)) => (
                    take(&keys, &indices, None).map_err(|e| e.to_string())?,
                    take(&entry_values, &indices, None).map_err(|e| e.to_string())?,
                    offsets,
                ),
                None => (keys, entry_values, map.offsets().clone()),
            };
            let DataType::Map(entries, sorted_keys) = map.data_type() else {
                unreachable!("a map column holds a map")
            };
            let DataType::Struct(fields) = entries.data_type() else {
                unreachable!("a map's entries are a struct")
            };
            let entries_array = StructArray::new(fields.clone(), vec![keys, entry_values], None);
            Ok(Some(Arc::new(MapArray::new(
                Arc::clone(entries),
                offsets,
                entries_array,
                map.nulls().cloned(),
                *sorted_keys,
            ))))
        }
        _ => Ok(None),
    }
}

/// An error naming the first row of `collections` that holds a NULL in `elements` (CQL
/// collections cannot hold one).
fn no_null_elements(
    collections: &dyn Array,
    elements: &ArrayRef,
    offsets: &[i32],
) -> std::result::Result<(), String> {
    if elements.null_count() == 0 {
        return Ok(());
    }
    let bad_row = offsets.windows(2).enumerate().find(|(row, w)| {
        collections.is_valid(*row) && (w[0] as usize..w[1] as usize).any(|i| elements.is_null(i))
    });
    match bad_row {
        Some((row, _)) => Err(format!(
            "holds a NULL inside the collection at row {row}; CQL collections cannot hold \
             NULLs: leave the element out"
        )),
        None => Ok(()),
    }
}

/// Text-held values in canonical form, or `None` when they all are.
fn canonical_column(
    cql_type: CqlType,
    values: &StringArray,
) -> std::result::Result<Option<ArrayRef>, String> {
    let mut changed = false;
    let mut out = Vec::with_capacity(values.len());
    for (row, value) in values.iter().enumerate() {
        out.push(match value {
            None => None,
            Some(text) => match canonical_text(cql_type, text) {
                Ok(Cow::Borrowed(t)) => Some(t.to_string()),
                Ok(Cow::Owned(t)) => {
                    changed = true;
                    Some(t)
                }
                Err(problem) => return Err(format!("at row {row}: '{text}' {problem}")),
            },
        });
    }
    Ok(changed.then(|| Arc::new(StringArray::from(out)) as ArrayRef))
}

/// Which of equal elements a set or map keeps: a set any one, a map the value written last.
#[derive(Clone, Copy, PartialEq)]
enum Duplicates {
    KeepFirst,
    KeepLast,
}

/// For a list-like column whose rows are `offsets` into `elements`: the positions of each row's
/// elements sorted by value with duplicates removed, and the new offsets; `None` when every row is
/// already sorted and distinct.
fn sorted_distinct(
    elements: &ArrayRef,
    offsets: &[i32],
    duplicates: Duplicates,
) -> std::result::Result<Option<(UInt32Array, OffsetBuffer<i32>)>, arrow::error::ArrowError> {
    let converter = RowConverter::new(vec![SortField::new(elements.data_type().clone())])?;
    let rows = converter.convert_columns(&[Arc::clone(elements)])?;
    let in_order = offsets
        .windows(2)
        .all(|w| (w[0] as usize + 1..w[1] as usize).all(|i| rows.row(i - 1) < rows.row(i)));
    if in_order {
        return Ok(None);
    }
    let mut indices: Vec<u32> = Vec::with_capacity(elements.len());
    let mut new_offsets: Vec<i32> = Vec::with_capacity(offsets.len());
    new_offsets.push(0);
    let mut row_indices: Vec<u32> = Vec::new();
    for w in offsets.windows(2) {
        row_indices.clear();
        row_indices.extend(w[0] as u32..w[1] as u32);
        // A stable sort keeps equal elements in the order they were written.
        row_indices.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
        for (n, &i) in row_indices.iter().enumerate() {
            let next_equal = row_indices
                .get(n + 1)
                .is_some_and(|&j| rows.row(j as usize) == rows.row(i as usize));
            let previous_equal =
                n > 0 && rows.row(row_indices[n - 1] as usize) == rows.row(i as usize);
            let keep = match duplicates {
                Duplicates::KeepFirst => !previous_equal,
                Duplicates::KeepLast => !next_equal,
            };
            if keep {
                indices.push(i);
            }
        }
        new_offsets.push(indices.len() as i32);
    }
    Ok(Some((
        UInt32Array::from(indices),
        OffsetBuffer::new(ScalarBuffer::from(new_offsets)),
    )))
}

/// Checks that `batches` have the table's columns and types, and that key columns hold no NULLs.
pub fn check_batches(table: &TableDef, batches: &[RecordBatch]) -> Result<()> {
    let expected = table.arrow_schema();
    let mismatch = |problem: String| Error::SchemaMismatch {
        table: table.table_name().to_string(),
        problem,
    };
    for batch in batches {
        let schema = batch.schema();
        if schema.fields().len() != expected.fields().len() {
            return Err(mismatch(format!(
                "expected {} columns ({}), got {}",
                expected.fields().len(),
                table.column_names().join(", "),
                schema.fields().len()
            )));
        }
        for (got, want) in schema.fields().iter().zip(expected.fields()) {
            if got.name() != want.name() || got.data_type() != want.data_type() {
                return Err(mismatch(format!(
                    "expected column '{}' of type {}, got '{}' of type {}",
                    want.name(),
                    want.data_type(),
                    got.name(),
                    got.data_type()
                )));
            }
        }
        for i in table.primary_key_indices() {
            let column = batch.column(i);
            if column.null_count() > 0 {
                let row = (0..column.len()).find(|&r| column.is_null(r)).unwrap_or(0);
                return Err(mismatch(format!(
                    "primary-key column '{}' is NULL at row {row}; every row needs its full primary key",
                    table.columns[i].name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Builder, ListBuilder, MapBuilder, StringBuilder};
    use quarry_core::schema::ColumnDef;

    fn table() -> TableDef {
        let columns = vec![
            ColumnDef::new("k", CqlType::Int),
            ColumnDef::new("s", CqlType::set(CqlType::Int).unwrap()),
            ColumnDef::new("m", CqlType::map(CqlType::Uuid, CqlType::Int).unwrap()),
            ColumnDef::new("l", CqlType::list(CqlType::Int).unwrap()),
        ];
        TableDef::new("ks", "t", columns, vec!["k".into()], vec![]).unwrap()
    }

    #[test]
    fn sets_and_maps_are_sorted_and_distinct_lists_keep_their_order() {
        let t = table();
        let mut sets = ListBuilder::new(Int32Builder::new());
        sets.append_value([Some(3), Some(1), Some(3), Some(2)]);
        sets.append_null();
        sets.append_value([Some(5)]);
        let mut maps = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        for (k, v) in [
            ("B0000000-0000-4000-8000-000000000000", 1),
            ("a0000000-0000-4000-8000-000000000000", 2),
            ("b0000000-0000-4000-8000-000000000000", 3),
        ] {
            maps.keys().append_value(k);
            maps.values().append_value(v);
        }
        maps.append(true).unwrap();
        maps.append(true).unwrap();
        maps.append(false).unwrap();
        let mut lists = ListBuilder::new(Int32Builder::new());
        for _ in 0..3 {
            lists.append_value([Some(2), Some(1), Some(2)]);
        }
        let batch = RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                Arc::new(arrow::array::Int32Array::from(vec![1, 2, 3])),
                Arc::new(sets.finish()),
                Arc::new(maps.finish()),
                Arc::new(lists.finish()),
            ],
        )
        .unwrap();
        let out = conform_batches(&t, vec![batch.clone()]).unwrap().remove(0);

        let sets = out.column(1).as_list::<i32>();
        let set0 = sets.value(0);
        assert_eq!(
            set0.as_primitive::<arrow::datatypes::Int32Type>().values(),
            &[1, 2, 3]
        );
        assert!(sets.is_null(1));
        assert_eq!(sets.value(2).len(), 1);

        let maps = out.column(2).as_map();
        assert_eq!(maps.value_offsets(), &[0, 2, 2, 2]);
        // An empty map is NULL, as a CQL cluster keeps it.
        assert!(maps.is_valid(0) && maps.is_null(1) && maps.is_null(2));
        let keys = maps.keys().as_string::<i32>();
        // The upper-case uuid is the same key as the last one: one entry, the value written last.
        assert_eq!(keys.value(0), "a0000000-0000-4000-8000-000000000000");
        assert_eq!(keys.value(1), "b0000000-0000-4000-8000-000000000000");
        let values = maps.values().as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(values.values(), &[2, 3]);

        assert_eq!(out.column(3).as_ref(), batch.column(3).as_ref());

        // Already in CQL's form: the same arrays come back.
        let again = conform_batches(&t, vec![out.clone()]).unwrap().remove(0);
        assert_eq!(again, out);
    }

    #[test]
    fn a_bad_uuid_inside_a_map_names_the_column() {
        let t = table();
        let mut maps = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        maps.keys().append_value("not-a-uuid");
        maps.values().append_value(1);
        maps.append(true).unwrap();
        let mut sets = ListBuilder::new(Int32Builder::new());
        sets.append_null();
        let mut lists = ListBuilder::new(Int32Builder::new());
        lists.append_null();
        let batch = RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                Arc::new(arrow::array::Int32Array::from(vec![1])),
                Arc::new(sets.finish()),
                Arc::new(maps.finish()),
                Arc::new(lists.finish()),
            ],
        )
        .unwrap();
        let err = conform_batches(&t, vec![batch]).unwrap_err().to_string();
        assert!(err.contains("column 'm' (map<uuid, int>)"), "{err}");
        assert!(err.contains("'not-a-uuid' is not a uuid"), "{err}");
    }

    #[test]
    fn a_null_inside_a_collection_is_refused() {
        let t = table();
        let mut sets = ListBuilder::new(Int32Builder::new());
        sets.append_value([Some(1)]);
        sets.append_value([Some(2), None]);
        let mut maps = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        maps.append(false).unwrap();
        maps.append(false).unwrap();
        let mut lists = ListBuilder::new(Int32Builder::new());
        lists.append_null();
        lists.append_null();
        let batch = RecordBatch::try_new(
            t.arrow_schema(),
            vec![
                Arc::new(arrow::array::Int32Array::from(vec![1, 2])),
                Arc::new(sets.finish()),
                Arc::new(maps.finish()),
                Arc::new(lists.finish()),
            ],
        )
        .unwrap();
        let err = conform_batches(&t, vec![batch]).unwrap_err().to_string();
        assert!(err.contains("column 's' (set<int>) holds a NULL"), "{err}");
        assert!(err.contains("at row 1"), "{err}");
    }
}
