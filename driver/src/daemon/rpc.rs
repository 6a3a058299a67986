//! Conversions of the driver's records to wire messages (task messages convert in
//! `quarry_worker::rpc`).

use std::time::UNIX_EPOCH;

use quarry_jobs::Failure;
use quarry_proto::v1 as pb;
use quarry_worker::rpc::{kind_to_proto, metrics_to_proto};

use super::job_tracker::{JobRecord, JobState};
use super::registry::WorkerView;

fn state_to_proto(state: JobState) -> pb::JobState {
    match state {
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn job_summary(job: &JobRecord) -> pb::JobSummary {
    let (done, total) = job.tasks();
    pb::JobSummary {
        job_id: job.id.to_string(),
        state: state_to_proto(job.state) as i32,
        sql: job.sql.clone(),
        submitted_at_ms: job
            .submitted_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        elapsed_ms: job.elapsed().as_millis() as u64,
        error: job.error.as_ref().map(|message| {
            let failure = job.failure.unwrap_or(Failure::INTERNAL);
            pb::TaskError {
                kind: kind_to_proto(failure.kind) as i32,
                retryable: failure.retryable,
                message: message.clone(),
                unreachable_endpoint: String::new(),
            }
        }),
        label: job.label.clone(),
        tasks_total: total,
        tasks_done: done,
    }
}

pub fn stage_summaries(job: &JobRecord) -> Vec<pb::StageSummary> {
    job.stages
        .iter()
        .map(|s| pb::StageSummary {
            stage_id: s.id.0,
            inputs: s.inputs.iter().map(|i| i.0).collect(),
            tasks_total: s.tasks_total,
            tasks_done: s.tasks_done,
            tasks_remote: s.tasks_remote,
            tasks_retried: s.tasks_retried,
            tasks: s
                .tasks
                .iter()
                .map(|t| pb::TaskSummary {
                    partition: t.index,
                    attempt: t.attempt,
                    worker_id: t.worker.clone(),
                    outcome: t.outcome.clone(),
                    remote: t.remote,
                    metrics: Some(metrics_to_proto(&t.metrics)),
                })
                .collect(),
            metrics: Some(metrics_to_proto(&s.metrics)),
            description: s.description.clone(),
            runs_on: s.runs_on.to_string(),
        })
        .collect()
}

pub fn worker_summary(w: &WorkerView) -> pb::WorkerSummary {
    pb::WorkerSummary {
        worker: Some(pb::WorkerInfo {
            worker_id: w.handle.id.0.clone(),
            node_id: w.handle.node.0.clone(),
            rpc_endpoint: w.handle.endpoint.clone(),
            flight_endpoint: w.handle.endpoint.clone(),
            local_shards: quarry_worker::rpc::local_shards_to_proto(&w.handle.local_shards),
            task_slots: w.handle.task_slots,
        }),
        alive: w.alive,
        last_seen_ms_ago: w.last_seen.as_millis() as u64,
        running_tasks: w.running_tasks,
    }
}
