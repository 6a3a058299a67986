//! The interactive SQL shell: history, multi-line statements (end with ';'), `\timing`.

use std::path::Path;
use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use crate::backend::Backend;
use crate::output::{OutputFormat, write_result};

const HELP: &str = "Statements end with ';' and may span lines.
  \\timing        toggle printing each statement's elapsed time
  \\d             list tables            \\d ks.t   describe a table
  \\format F      output format: table, csv, json, ndjson
  \\q             quit (or Ctrl-D)
SQL is DataFusion's dialect plus Quarry DDL (CREATE KEYSPACE/TABLE/VIEW, SHOW, DESCRIBE) and token().
USE ks makes ks the keyspace of names written without one (the prompt shows it).";

pub async fn run(
    backend: &mut Backend,
    data_dir: &Path,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = data_dir.join(".quarry_history");
    let _ = editor.load_history(&history);
    let mut format = if format == OutputFormat::Parquet {
        OutputFormat::Table
    } else {
        format
    };
    let mut timing = false;
    let mut buffer = String::new();
    println!(
        "Quarry SQL shell on {} — \\help for help, \\q to quit.",
        backend.describe(data_dir)
    );
    loop {
        let prompt = match (buffer.is_empty(), backend.keyspace()) {
            (true, Some(keyspace)) => format!("quarry:{keyspace}> "),
            (true, None) => "quarry> ".to_string(),
            (false, _) => "    ..> ".to_string(),
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let mut words = trimmed.split_whitespace();
            match (words.next(), words.next()) {
                (Some("\\q" | "\\quit"), _) => break,
                (Some("\\timing"), _) => {
                    timing = !timing;
                    println!("Timing is {}.", if timing { "on" } else { "off" });
                }
                (Some("\\d"), None) => execute(backend, "SHOW TABLES", format, timing).await,
                (Some("\\d"), Some(table)) => {
                    execute(backend, &format!("DESCRIBE {table}"), format, timing).await
                }
                (Some("\\format"), Some(name)) => match name {
                    "table" => format = OutputFormat::Table,
                    "csv" => format = OutputFormat::Csv,
                    "json" => format = OutputFormat::Json,
                    "ndjson" => format = OutputFormat::Ndjson,
                    other => eprintln!("unknown format '{other}'; use table, csv, json or ndjson"),
                },
                (Some("\\help" | "\\h" | "\\?"), _) => println!("{HELP}"),
                (Some(other), _) => eprintln!("unknown command {other}; \\help lists them"),
                (None, _) => {}
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !buffer.trim_end().ends_with(';') {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(text.trim());
        for statement in quarry_core::ddl::split_statements(&text) {
            execute(backend, &statement, format, timing).await;
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

async fn execute(backend: &mut Backend, sql: &str, format: OutputFormat, timing: bool) {
    let started = Instant::now();
    match backend.execute(sql).await {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let printed = match &output.message {
                Some(message) => {
                    println!("{message}");
                    Ok(())
                }
                None => write_result(format, &output.schema, &output.batches, &mut stdout),
            };
            if let Err(e) = printed {
                eprintln!("error: {}", crate::error_report::describe(&e));
            }
        }
        Err(e) => eprintln!("error: {}", crate::error_report::describe(&e)),
    }
    if timing {
        println!("Time: {:.3} s", started.elapsed().as_secs_f64());
    }
}
