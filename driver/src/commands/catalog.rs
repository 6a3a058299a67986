//! `quarry tables` and `quarry describe`.

use std::path::Path;

use quarry_core::schema::TableName;

use crate::cli::{DescribeArgs, DriverConnection, TablesArgs};
use crate::output::write_result;

pub async fn tables(
    data_dir: &Path,
    driver: &DriverConnection,
    args: TablesArgs,
) -> anyhow::Result<()> {
    let mut backend = super::backend(data_dir, driver).await?;
    let sql = match &args.keyspace {
        Some(ks) => format!("SHOW TABLES IN {ks}"),
        None => "SHOW TABLES".to_string(),
    };
    let output = backend.execute(&sql).await?;
    write_result(
        args.format,
        &output.schema,
        &output.batches,
        &mut std::io::stdout().lock(),
    )
}

pub async fn describe(data_dir: &Path, args: DescribeArgs) -> anyhow::Result<()> {
    let (store, session) = super::open(data_dir)?;
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
    let stats = store.table_stats(&name)?;
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
    println!(
        "storage: {} run(s), {} file(s), {} row group(s), {} row versions in runs, {} in the memtable",
        stats.runs, stats.files, stats.row_groups, stats.run_rows, stats.memtable_rows
    );
    Ok(())
}
