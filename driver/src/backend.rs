//! Where the CLI's statements run: in this process on the embedded store, or on a driver.

use std::io::Write;

use quarry_sql::{QuarrySession, QueryOutput};

use crate::output::{OutputFormat, ResultWriter};
use quarry_client::Client;

/// A place to run SQL.
#[derive(Debug)]
pub enum Backend {
    /// In this process, over the embedded store in `--data-dir`.
    Local(QuarrySession),
    /// On the driver at `--driver`, as distributed jobs.
    Remote(Client),
}

impl Backend {
    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<QueryOutput> {
        match self {
            Backend::Local(session) => Ok(session.execute(sql).await?),
            Backend::Remote(client) => crate::remote::sql(client, sql).await,
        }
    }

    /// Runs a statement and prints what it returns: rows on `out` in `format` (from a driver,
    /// as they arrive), a message on stderr (so that piped output holds only data).
    pub async fn execute_and_print(
        &mut self,
        sql: &str,
        format: OutputFormat,
        out: &mut dyn Write,
    ) -> anyhow::Result<()> {
        let mut result = match self {
            Backend::Local(session) => {
                let output = session.execute(sql).await?;
                return crate::commands::sql::print_output(&output, format, out);
            }
            Backend::Remote(client) => crate::remote::sql_stream(client, sql).await?,
        };
        if let Some(message) = &result.message {
            eprintln!("{message}");
            return Ok(());
        }
        let mut writer = ResultWriter::new(format, &result.schema.clone(), out)?;
        while let Some(batch) = result.next().await? {
            writer.write(&batch)?;
        }
        writer.finish()
    }

    /// The session's keyspace (`USE`), if it has one.
    pub fn keyspace(&self) -> Option<String> {
        match self {
            Backend::Local(session) => session.keyspace(),
            Backend::Remote(driver) => driver.keyspace().map(str::to_string),
        }
    }

    /// What the shell's banner says it is connected to.
    pub fn describe(&self, data_dir: &std::path::Path) -> String {
        match self {
            Backend::Local(_) => data_dir.display().to_string(),
            Backend::Remote(driver) => format!("the driver at {}", driver.url()),
        }
    }
}
