//! Writing a generated table as Parquet files, for `quarry load` and for plain DataFusion.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};
use crate::table::Table;

/// Writes `table` at `scale_factor` as `files` Parquet files `dir/<table>/part-<n>.parquet`
/// (one per generated part, so together exactly the table), generating and writing up to
/// `threads` parts at once. Returns the files' paths in part order; `region` and `nation` are
/// always one file.
pub fn write_parquet(
    table: Table,
    scale_factor: f64,
    dir: &Path,
    files: u32,
    threads: usize,
) -> Result<Vec<PathBuf>> {
    let files = match table {
        Table::Region | Table::Nation => 1,
        _ => files.max(1),
    };
    let table_dir = dir.join(table.name());
    std::fs::create_dir_all(&table_dir).map_err(|source| Error::Io {
        action: "creating",
        path: table_dir.clone(),
        source,
    })?;
    let paths: Vec<PathBuf> = (1..=files)
        .map(|part| table_dir.join(format!("part-{part}.parquet")))
        .collect();
    let next = AtomicU32::new(1);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, files as usize))
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let part = next.fetch_add(1, Ordering::SeqCst);
                        if part > files {
                            break;
                        }
                        let path = &paths[part as usize - 1];
                        if let Err(e) = write_part(table, scale_factor, part, files, path) {
                            next.store(files + 1, Ordering::SeqCst);
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            if worker.join().is_err()
                && let Ok(mut slot) = first_error.lock()
            {
                slot.get_or_insert(Error::Panicked {
                    table: table.name(),
                });
            }
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(paths),
    }
}

fn write_part(table: Table, scale_factor: f64, part: u32, parts: u32, path: &Path) -> Result<()> {
    let parquet_error = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(|source| Error::Io {
        action: "creating",
        path: path.to_path_buf(),
        source,
    })?;
    let mut writer = ArrowWriter::try_new(file, table.schema(), None).map_err(parquet_error)?;
    for batch in table.generate(scale_factor, part, parts) {
        writer.write(&batch?).map_err(parquet_error)?;
    }
    writer.close().map_err(parquet_error)?;
    Ok(())
}
