//! Rust jobs through a driver: a module uploaded once (the driver checks it and keeps it by
//! content hash), asked for its results with the job's arguments, and each result run as a job
//! of the cluster, its rows streamed back like a query's.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use arrow_array::{Array, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::SchemaRef;
use quarry_proto::PROTOCOL_VERSION;
use quarry_proto::v1 as pb;

use crate::client::{Client, QueryStream, ended};
use crate::error::{Error, Result};

/// A module the driver keeps, and the results its job makes with the arguments given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedJob {
    /// The module's content hash (hex), which names it on the cluster.
    pub hash: String,
    /// `--arg name=value` pairs.
    pub args: Vec<(String, String)>,
    /// The job's results, in the order its function made them.
    pub results: Vec<JobResult>,
}

/// What one result of a job does with its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// Upserts them into `table` (`write_to`); the result is the number of rows written.
    Write { table: String },
    /// Every row back to the client (`collect`).
    Collect,
    /// Their number (`count`).
    Count,
    /// Some `n` rows (`take`).
    Take { n: u64 },
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobResult::Write { table } => write!(f, "write {table}"),
            JobResult::Collect => f.write_str("collect"),
            JobResult::Count => f.write_str("count"),
            JobResult::Take { n } => write!(f, "take {n}"),
        }
    }
}

impl JobResult {
    fn from_wire(result: &pb::JobResult) -> Result<Self> {
        Ok(match pb::JobResultKind::try_from(result.kind) {
            Ok(pb::JobResultKind::Write) => JobResult::Write {
                table: result.table.clone(),
            },
            Ok(pb::JobResultKind::Collect) => JobResult::Collect,
            Ok(pb::JobResultKind::Count) => JobResult::Count,
            Ok(pb::JobResultKind::Take) => JobResult::Take { n: result.limit },
            Ok(pb::JobResultKind::Unspecified) | Err(_) => {
                return Err(Error::Protocol {
                    message: format!("a job result of unknown kind {}", result.kind),
                });
            }
        })
    }
}

/// What one result of a job gave.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub result: JobResult,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The cluster job that made it, as the driver recorded it.
    pub report: Option<JobReport>,
}

impl JobOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The single number of a `count` or `write_to` result (rows counted, rows written).
    pub fn number(&self) -> Option<u64> {
        number(&self.batches)
    }
}

/// The single number in the first column of the first row.
pub(crate) fn number(batches: &[RecordBatch]) -> Option<u64> {
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let column = batch.column(0).as_any();
    if let Some(a) = column.downcast_ref::<Int64Array>() {
        return (!a.is_null(0)).then(|| a.value(0) as u64);
    }
    let a = column.downcast_ref::<UInt64Array>()?;
    (!a.is_null(0)).then(|| a.value(0))
}

/// A cluster job as the driver recorded it: how it ended and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub job_id: String,
    pub state: pb::JobState,
    pub elapsed_ms: u64,
    /// CPU time its closures took (the calls into the job module on every worker): the job's
    /// CPU cost. Zero for a SQL job.
    pub wasm_cpu: Duration,
    /// Rows read per source table.
    pub rows_read: BTreeMap<String, u64>,
    /// Rows written per table.
    pub rows_written: BTreeMap<String, u64>,
}

impl JobReport {
    fn of(job: &pb::GetJobResponse) -> Result<Self> {
        let summary = job.job.as_ref().ok_or_else(|| Error::Protocol {
            message: "a job without its summary".into(),
        })?;
        let mut report = JobReport {
            job_id: summary.job_id.clone(),
            state: pb::JobState::try_from(summary.state).unwrap_or(pb::JobState::Unspecified),
            elapsed_ms: summary.elapsed_ms,
            wasm_cpu: Duration::ZERO,
            rows_read: BTreeMap::new(),
            rows_written: BTreeMap::new(),
        };
        for metrics in job.stages.iter().filter_map(|s| s.metrics.as_ref()) {
            report.wasm_cpu += Duration::from_nanos(metrics.wasm_cpu_ns);
            for (into, from) in [
                (&mut report.rows_read, &metrics.rows_read),
                (&mut report.rows_written, &metrics.rows_written),
            ] {
                for (table, rows) in from {
                    *into.entry(table.clone()).or_default() += rows;
                }
            }
        }
        Ok(report)
    }
}

/// A job started with no client attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// The job of its first result, running.
    pub job_id: String,
    /// Its results; each after the first starts as the one before ends.
    pub results: u32,
    /// The label all its results' jobs carry.
    pub label: String,
}

fn job_arguments(args: &[(String, String)]) -> Vec<pb::JobArgument> {
    args.iter()
        .map(|(name, value)| pb::JobArgument {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

impl Client {
    /// Sends a job's module (a `wasm32-unknown-unknown` file built with `quarry-sdk`) to the
    /// driver, which checks it (a file that is not such a module is refused here, saying why)
    /// and asks it for its results with `args`.
    pub async fn upload_job(
        &self,
        module: Vec<u8>,
        args: &[(String, String)],
    ) -> Result<UploadedJob> {
        // The driver judges a module's size, and says its limit when one is too large.
        let hash = self
            .rpc()
            .max_encoding_message_size(usize::MAX)
            .put_module(pb::PutModuleRequest {
                protocol_version: PROTOCOL_VERSION,
                module,
            })
            .await?
            .into_inner()
            .hash;
        self.plan_job(&hash, args).await
    }

    /// The results of the job of a module the driver already keeps, with `args`.
    pub async fn plan_job(&self, hash: &str, args: &[(String, String)]) -> Result<UploadedJob> {
        let response = self
            .rpc()
            .plan_rust_job(pb::PlanRustJobRequest {
                protocol_version: PROTOCOL_VERSION,
                module_hash: hash.to_string(),
                args: job_arguments(args),
            })
            .await?
            .into_inner();
        Ok(UploadedJob {
            hash: hash.to_string(),
            args: args.to_vec(),
            results: response
                .results
                .iter()
                .map(JobResult::from_wire)
                .collect::<Result<_>>()?,
        })
    }

    /// Runs result `index` of `job` on the cluster and streams its rows (a written result
    /// streams one row: the rows written).
    pub async fn run_job_result(&mut self, job: &UploadedJob, index: usize) -> Result<QueryStream> {
        let sink = u32::try_from(index).map_err(|_| Error::Protocol {
            message: format!("no job has a result numbered {index}"),
        })?;
        let ticket = pb::QueryTicket {
            protocol_version: PROTOCOL_VERSION,
            sql: String::new(),
            session_config: Default::default(),
            label: self.label().to_string(),
            rust_job: Some(pb::RustJobSink {
                module_hash: job.hash.clone(),
                args: job_arguments(&job.args),
                sink,
            }),
        };
        self.start(ticket).await
    }

    /// Runs every result of `job` in order, each to its end, with what the driver recorded of
    /// the cluster job that made it.
    pub async fn run_job(&mut self, job: &UploadedJob) -> Result<Vec<JobOutput>> {
        let mut outputs = Vec::with_capacity(job.results.len());
        for (i, result) in job.results.iter().enumerate() {
            let output = self.run_job_result(job, i).await?.collect().await?;
            outputs.push(JobOutput {
                result: result.clone(),
                schema: output.schema,
                batches: output.batches,
                report: self.last_job_report().await?,
            });
        }
        Ok(outputs)
    }

    /// What the driver recorded of this client's latest job that has ended.
    pub async fn last_job_report(&self) -> Result<Option<JobReport>> {
        let latest = self
            .jobs()
            .await?
            .into_iter()
            .filter(|j| j.label == self.label() && ended(j))
            .max_by_key(|j| j.submitted_at_ms);
        match latest {
            Some(job) => Ok(Some(self.job_report(&job.job_id).await?)),
            None => Ok(None),
        }
    }

    /// Job `id`'s state and what it cost, summed over its stages.
    pub async fn job_report(&self, id: &str) -> Result<JobReport> {
        JobReport::of(&self.job(id).await?)
    }

    /// Starts `job` with no client attached and returns once its first result runs; every
    /// result must write to a table (the driver refuses one that returns rows, naming it).
    /// Follow it with [`Client::wait_for_job`].
    pub async fn submit_detached(&self, job: &UploadedJob) -> Result<Detached> {
        let response = self
            .rpc()
            .submit_rust_job(pb::SubmitRustJobRequest {
                protocol_version: PROTOCOL_VERSION,
                module_hash: job.hash.clone(),
                args: job_arguments(&job.args),
                label: self.label().to_string(),
            })
            .await?
            .into_inner();
        Ok(Detached {
            job_id: response.job_id,
            results: response.results,
            label: response.label,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn results_read_from_the_wire_and_print_as_the_cli_names_them() {
        let wire = |kind: pb::JobResultKind, table: &str, limit| pb::JobResult {
            kind: kind as i32,
            table: table.into(),
            limit,
        };
        let read = |r: pb::JobResult| JobResult::from_wire(&r).map(|r| r.to_string());
        assert_eq!(
            read(wire(pb::JobResultKind::Write, "synth.daily", 0)).unwrap(),
            "write synth.daily"
        );
        assert_eq!(
            read(wire(pb::JobResultKind::Take, "", 10)).unwrap(),
            "take 10"
        );
        assert_eq!(
            read(wire(pb::JobResultKind::Count, "", 0)).unwrap(),
            "count"
        );
        let unknown = pb::JobResult {
            kind: 99,
            ..Default::default()
        };
        assert!(
            read(unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown kind 99"),
            "an unknown kind is an error, not a guess"
        );
    }

    #[test]
    fn a_count_reads_as_its_number_and_a_null_as_none() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::Int64,
            true,
        )]));
        let batch = |values: Vec<Option<i64>>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap()
        };
        assert_eq!(number(&[batch(vec![]), batch(vec![Some(42)])]), Some(42));
        assert_eq!(number(&[batch(vec![None])]), None);
        assert_eq!(number(&[]), None);
    }
}
