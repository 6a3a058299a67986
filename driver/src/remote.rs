//! The CLI's side of a driver: a [`Client`] of `quarry-client`, with the job's progress drawn
//! on a terminal while a statement or a job's result runs.

use std::time::Duration;

use quarry_client::{Client, QueryStream};
use quarry_worker::cpu_runtime::AbortOnDrop;

/// Runs one statement on the driver and collects its result; a terminal shows the job's tasks
/// done / total while it runs.
pub async fn sql(client: &mut Client, sql: &str) -> anyhow::Result<quarry_sql::QueryOutput> {
    Ok(sql_output(sql_stream(client, sql).await?.collect().await?))
}

/// A client's result as the CLI prints results that ran in this process.
pub fn sql_output(output: quarry_client::QueryOutput) -> quarry_sql::QueryOutput {
    quarry_sql::QueryOutput {
        schema: output.schema,
        batches: output.batches,
        message: output.message,
    }
}

/// Runs one statement on the driver and returns its result as it streams in, with the job's
/// progress on a terminal until the last batch.
pub async fn sql_stream(client: &mut Client, sql: &str) -> anyhow::Result<QueryStream> {
    let progress = watch_progress(client);
    let mut stream = client.sql_stream(sql).await?;
    if let Some(progress) = progress {
        stream.keep_until_end(progress);
    }
    Ok(stream)
}

/// On a terminal, polls the driver for `client`'s running job and draws its tasks done / total
/// from 300 ms on; stops (and clears the bar) when dropped.
pub fn watch_progress(client: &Client) -> Option<AbortOnDrop<()>> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let client = client.clone();
    Some(AbortOnDrop::from(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bar = crate::progress::tasks_bar();
        let _clear = ClearOnDrop(bar.clone());
        loop {
            if let Ok(Some(job)) = client.running_job().await {
                bar.set_length(u64::from(job.tasks_total));
                bar.set_position(u64::from(job.tasks_done));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })))
}

/// Clears a progress bar when the task drawing it is aborted.
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
