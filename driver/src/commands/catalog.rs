//! `quarry tables`, `quarry describe` and `quarry compact`.

use std::path::Path;

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::DataType;
use quarry_core::schema::TableName;

use crate::backend::Backend;
use crate::cli::{CompactArgs, DescribeArgs, DriverConnection, StoreArgs, TablesArgs};
use crate::output::write_result;
use crate::store::Access;

pub async fn tables(
    data_dir: &Path,
    driver: &DriverConnection,
    store: &StoreArgs,
    args: TablesArgs,
) -> anyhow::Result<()> {
    let mut backend = super::backend(data_dir, driver, store).await?;
    let verbose = if args.verbose { " VERBOSE" } else { "" };
    let sql = match &args.keyspace {
        Some(ks) => format!("SHOW TABLES{verbose} IN {ks}"),
        None => format!("SHOW TABLES{verbose}"),
    };
    let output = backend.execute(&sql).await?;
    write_result(
        args.format,
        &output.schema,
        &output.batches,
        &mut std::io::stdout().lock(),
    )
}

pub async fn compact(
    data_dir: &Path,
    driver: &DriverConnection,
    store: &StoreArgs,
    args: CompactArgs,
) -> anyhow::Result<()> {
    let mut backend = super::backend(data_dir, driver, store).await?;
    let tables = match args.target.as_deref() {
        Some(name) if name.contains('.') => vec![TableName::parse(name)?],
        keyspace => tables_of(&mut backend, keyspace).await?,
    };
    let mut schema = None;
    let mut batches = Vec::new();
    for (i, name) in tables.iter().enumerate() {
        let spinner = crate::progress::spinner(&format!(
            "compacting {name} ({} of {})",
            i + 1,
            tables.len()
        ));
        let output = backend.execute(&format!("OPTIMIZE {name}")).await;
        spinner.finish_and_clear();
        let output = output?;
        schema.get_or_insert(output.schema);
        batches.extend(output.batches);
    }
    let Some(schema) = schema else {
        eprintln!("no tables to compact");
        return Ok(());
    };
    write_result(
        args.format,
        &schema,
        &batches,
        &mut std::io::stdout().lock(),
    )
}

/// The tables (not views) of `keyspace`, or of every keyspace, as `SHOW TABLES` lists them.
async fn tables_of(
    backend: &mut Backend,
    keyspace: Option<&str>,
) -> anyhow::Result<Vec<TableName>> {
    let sql = match keyspace {
        Some(ks) => format!("SHOW TABLES IN {ks}"),
        None => "SHOW TABLES".to_string(),
    };
    let output = backend.execute(&sql).await?;
    let mut tables = Vec::new();
    for batch in &output.batches {
        let column = |name: &str| -> anyhow::Result<ArrayRef> {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| anyhow::anyhow!("SHOW TABLES returned no {name} column"))?;
            Ok(arrow::compute::cast(column, &DataType::Utf8)?)
        };
        let (keyspaces, names, kinds) = (column("keyspace")?, column("table")?, column("kind")?);
        let (keyspaces, names, kinds) = (
            keyspaces.as_string::<i32>(),
            names.as_string::<i32>(),
            kinds.as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            if kinds.value(row) == "table" {
                tables.push(TableName::new(keyspaces.value(row), names.value(row)));
            }
        }
    }
    Ok(tables)
}

pub async fn describe(
    data_dir: &Path,
    store: &StoreArgs,
    args: DescribeArgs,
) -> anyhow::Result<()> {
    let (opened, session) = super::open_store(data_dir, store, Access::Any).await?;
    let store = opened.store();
    let name = TableName::parse(&args.table)?;
    if let Ok(view) = quarry_store::Store::view(store.as_ref(), &name) {
        println!("{};\n", view.to_sql());
        let output = session.execute(&format!("DESCRIBE {name}")).await?;
        return write_result(
            crate::output::OutputFormat::Table,
            &output.schema,
            &output.batches,
            &mut std::io::stdout().lock(),
        );
    }
    let def = quarry_store::Store::table(store.as_ref(), &name)?;
    let keyspace = quarry_store::Store::keyspace(store.as_ref(), &name.keyspace)?;
    let stats = quarry_store::Store::storage(store.as_ref(), &name)?;
    println!("{};\n", def.to_cql());
    let output = session.execute(&format!("DESCRIBE {name}")).await?;
    write_result(
        crate::output::OutputFormat::Table,
        &output.schema,
        &output.batches,
        &mut std::io::stdout().lock(),
    )?;
    println!(
        "\nkeyspace {}: {} shards, replication factor {}{}",
        keyspace.name,
        keyspace.shards,
        keyspace.replication_factor,
        keyspace
            .nodes
            .map(|n| format!(", placed on {n} node(s)"))
            .unwrap_or_default()
    );
    match stats {
        Some(stats) => println!("{}", storage_report(&stats)),
        None => println!("stored on the {} cluster", store.kind()),
    }
    Ok(())
}

/// What the store holds for a table, as `quarry describe` prints it.
fn storage_report(stats: &quarry_store::TableStats) -> String {
    let compacted = stats.last_compaction.map_or("never".to_string(), |c| {
        let at = arrow::temporal_conversions::timestamp_ms_to_datetime(c.at_ms)
            .map_or("at an unknown time".to_string(), |t| {
                format!("{}", t.format("%Y-%m-%d %H:%M:%S UTC"))
            });
        format!(
            "{at}, {} run(s) into one, {} rows in {} window(s) of at most {} rows, {:.1} s",
            c.runs,
            c.rows,
            c.windows,
            c.largest_window_rows,
            c.millis as f64 / 1000.0
        )
    });
    format!(
        "storage: {} run(s) (at most {} over any shard), {} file(s), {} row group(s), {:.1} MiB\n\
         rows: {} live in runs ({} superseded by newer writes, dropped at the next compaction), \
         {} in the memtable\n\
         last compaction: {compacted}",
        stats.runs,
        stats.overlap_depth,
        stats.files,
        stats.row_groups,
        stats.bytes as f64 / (1024.0 * 1024.0),
        stats.run_rows - stats.deleted_rows,
        stats.deleted_rows,
        stats.memtable_rows,
    )
}
