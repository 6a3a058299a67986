//! The driver's record of jobs: state, stages, tasks and counters, for `quarry jobs`, `quarry job
//! ID` and progress bars; and the handle that cancels a running job.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use quarry_jobs::{JobId, StageId, TaskMetrics};
use tokio::sync::watch;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One finished run of one task.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub index: u32,
    pub attempt: u32,
    /// The worker that ran it (`driver` for the driver stage).
    pub worker: String,
    /// `succeeded`, or `failed: ` and the reason.
    pub outcome: String,
    /// It ran away from every replica of its shards.
    pub remote: bool,
    pub metrics: TaskMetrics,
}

impl TaskRecord {
    /// The record of one run of task `id` on `worker`.
    pub fn of(
        id: &quarry_jobs::TaskId,
        worker: &quarry_jobs::WorkerId,
        outcome: &str,
        local: bool,
        metrics: TaskMetrics,
    ) -> Self {
        TaskRecord {
            index: id.index,
            attempt: id.attempt,
            worker: worker.0.clone(),
            outcome: outcome.to_string(),
            remote: !local,
            metrics,
        }
    }
}

/// One stage of a job, as tracked.
#[derive(Debug, Clone)]
pub struct StageRecord {
    pub id: StageId,
    pub description: String,
    pub runs_on: &'static str,
    pub inputs: Vec<StageId>,
    pub tasks_total: u32,
    pub tasks_done: u32,
    /// Tasks that ran on a worker without a replica of their shards.
    pub tasks_remote: u32,
    /// Task runs that had to be repeated: failed attempts and outputs lost with their worker.
    pub tasks_retried: u32,
    pub metrics: TaskMetrics,
    /// Every finished task run, in the order they finished.
    pub tasks: Vec<TaskRecord>,
}

/// One job, as tracked.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub sql: String,
    pub label: String,
    pub state: JobState,
    pub submitted_at: SystemTime,
    started: Instant,
    pub elapsed: Option<Duration>,
    pub error: Option<String>,
    pub stages: Vec<StageRecord>,
}

impl JobRecord {
    pub fn elapsed(&self) -> Duration {
        self.elapsed.unwrap_or_else(|| self.started.elapsed())
    }

    pub fn tasks(&self) -> (u32, u32) {
        self.stages.iter().fold((0, 0), |(done, total), s| {
            (done + s.tasks_done, total + s.tasks_total)
        })
    }
}

/// Keeps the last jobs (at most `KEEP`) and cancellation handles of running ones.
#[derive(Debug)]
pub struct JobTracker {
    jobs: Mutex<BTreeMap<JobId, (JobRecord, watch::Sender<bool>)>>,
    next: Mutex<u64>,
}

const KEEP: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for JobTracker {
    fn default() -> Self {
        // Start from the clock so that a restarted driver does not reuse ids.
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64 % 1_000_000_000);
        JobTracker {
            jobs: Mutex::new(BTreeMap::new()),
            next: Mutex::new(start * 10),
        }
    }
}

impl JobTracker {
    /// Records a new running job; the receiver turns true when someone cancels it.
    pub fn start(&self, sql: &str, label: &str) -> (JobId, watch::Receiver<bool>) {
        let id = {
            let mut next = lock(&self.next);
            *next += 1;
            JobId(*next)
        };
        let (cancel, cancelled) = watch::channel(false);
        let record = JobRecord {
            id,
            sql: sql.to_string(),
            label: label.to_string(),
            state: JobState::Running,
            submitted_at: SystemTime::now(),
            started: Instant::now(),
            elapsed: None,
            error: None,
            stages: Vec::new(),
        };
        let mut jobs = lock(&self.jobs);
        jobs.insert(id, (record, cancel));
        while jobs.len() > KEEP {
            jobs.pop_first();
        }
        (id, cancelled)
    }

    pub fn set_stages(&self, id: JobId, stages: Vec<StageRecord>) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(&id) {
            job.stages = stages;
        }
    }

    /// Records a finished task run of a stage; a successful one counts as done.
    pub fn task_finished(&self, id: JobId, stage: StageId, record: TaskRecord) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(&id)
            && let Some(s) = job.stages.iter_mut().find(|s| s.id == stage)
        {
            if record.outcome == "succeeded" {
                s.tasks_done = (s.tasks_done + 1).min(s.tasks_total.max(s.tasks_done + 1));
                s.metrics.add(&record.metrics);
                if record.remote {
                    s.tasks_remote += 1;
                }
            }
            s.tasks.push(record);
        }
    }

    /// A task's earlier result was lost (its worker died): it has to run again.
    pub fn task_undone(&self, id: JobId, stage: StageId) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(&id)
            && let Some(s) = job.stages.iter_mut().find(|s| s.id == stage)
        {
            s.tasks_done = s.tasks_done.saturating_sub(1);
            s.tasks_retried += 1;
        }
    }

    /// A task attempt failed and the task will run again.
    pub fn task_retried(&self, id: JobId, stage: StageId) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(&id)
            && let Some(s) = job.stages.iter_mut().find(|s| s.id == stage)
        {
            s.tasks_retried += 1;
        }
    }

    pub fn finish(&self, id: JobId, state: JobState, error: Option<String>) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(&id) {
            job.state = state;
            job.error = error;
            job.elapsed = Some(job.started.elapsed());
        }
    }

    /// Asks a running job to stop; false when it is not running.
    pub fn cancel(&self, id: JobId) -> Option<bool> {
        let jobs = lock(&self.jobs);
        let (job, cancel) = jobs.get(&id)?;
        if job.state != JobState::Running {
            return Some(false);
        }
        let _ = cancel.send(true);
        Some(true)
    }

    pub fn get(&self, id: JobId) -> Option<JobRecord> {
        lock(&self.jobs).get(&id).map(|(j, _)| j.clone())
    }

    /// Every kept job, newest first.
    pub fn list(&self) -> Vec<JobRecord> {
        lock(&self.jobs)
            .values()
            .rev()
            .map(|(j, _)| j.clone())
            .collect()
    }
}
