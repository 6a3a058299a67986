//! The driver's record of jobs: state, stages, tasks and counters, for `quarry jobs`, `quarry job
//! ID` and progress bars; and the handle that cancels a running job.
//!
//! Each job's start and end are also appended to a journal (`driver/jobs.ndjson` in the data
//! directory, one JSON object per line), so the job history outlives the driver. A job the
//! journal shows started but never ended was running when the driver stopped: a restarted driver
//! reports it failed. Stages and tasks are kept in memory only. The journal is appended without
//! fsync (a lost line costs history, never data) and rewritten, smaller, once it is long.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use quarry_jobs::{Failure, FailureKind, JobId, StageId, TaskMetrics};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// How the error is classified (whose fault, retryable), for a failed job.
    pub failure: Option<Failure>,
    pub stages: Vec<StageRecord>,
    /// Tasks done and in all, for a job read back from the journal (its stages are not kept).
    journalled_tasks: (u32, u32),
}

impl JobRecord {
    pub fn elapsed(&self) -> Duration {
        self.elapsed.unwrap_or_else(|| self.started.elapsed())
    }

    pub fn tasks(&self) -> (u32, u32) {
        if self.stages.is_empty() {
            return self.journalled_tasks;
        }
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
    journal: Option<Mutex<Journal>>,
}

const KEEP: usize = 1000;

/// The outcome of a task run that succeeded (and whose output is still there).
pub const SUCCEEDED: &str = "succeeded";

/// What a restarted driver says about a job that was running when it stopped.
pub const INTERRUPTED: &str = "the driver stopped while the job ran; run it again";

/// One line of the journal: a job as it started or ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: u64,
    sql: String,
    label: String,
    state: JobState,
    /// Milliseconds since the Unix epoch.
    submitted_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `user`, `external` or `internal`, with whether a retry could help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<(String, bool)>,
    #[serde(default)]
    tasks_done: u32,
    #[serde(default)]
    tasks_total: u32,
}

impl Entry {
    fn of(job: &JobRecord) -> Entry {
        Entry {
            id: job.id.0,
            sql: job.sql.clone(),
            label: job.label.clone(),
            state: job.state,
            submitted_at_ms: job
                .submitted_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            elapsed_ms: job.elapsed.map(|d| d.as_millis() as u64),
            error: job.error.clone(),
            failure: job.failure.map(|f| (f.kind.to_string(), f.retryable)),
            tasks_done: job.tasks().0,
            tasks_total: job.tasks().1,
        }
    }

    fn record(self) -> JobRecord {
        JobRecord {
            id: JobId(self.id),
            sql: self.sql,
            label: self.label,
            state: self.state,
            submitted_at: SystemTime::UNIX_EPOCH + Duration::from_millis(self.submitted_at_ms),
            started: Instant::now(),
            elapsed: Some(Duration::from_millis(self.elapsed_ms.unwrap_or(0))),
            error: self.error,
            failure: self.failure.map(|(kind, retryable)| Failure {
                kind: match kind.as_str() {
                    "user" => FailureKind::User,
                    "external" => FailureKind::External,
                    _ => FailureKind::Internal,
                },
                retryable,
            }),
            stages: Vec::new(),
            journalled_tasks: (self.tasks_done, self.tasks_total),
        }
    }
}

/// The append-only job journal.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
}

impl Journal {
    /// Opens the journal at `path` and returns the jobs it holds, last entry per job winning.
    fn open(path: &Path) -> std::io::Result<(Journal, BTreeMap<u64, Entry>)> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut jobs = BTreeMap::new();
        let mut lines = 0;
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            // A torn last line (a crash mid-append) is skipped, as is anything unreadable.
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => {
                    jobs.insert(entry.id, entry);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a job journal line")
                }
            }
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            // End the torn line so that the next entry starts on its own.
            file.write_all(b"\n")?;
        }
        let journal = Journal {
            path: path.to_path_buf(),
            file,
            lines,
        };
        Ok((journal, jobs))
    }

    fn append(&mut self, entry: &Entry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "could not describe a job for the journal");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not append to the job journal");
        }
        self.lines += 1;
    }

    /// Replaces the journal with one line per job in `jobs` (atomically: a new file renamed over
    /// the old one).
    fn rewrite<'a>(&mut self, jobs: impl Iterator<Item = &'a JobRecord>) -> std::io::Result<()> {
        let tmp = self.path.with_extension("ndjson.tmp");
        let mut out = Vec::new();
        let mut lines = 0;
        for job in jobs {
            serde_json::to_writer(&mut out, &Entry::of(job))?;
            out.push(b'\n');
            lines += 1;
        }
        fs::write(&tmp, &out)?;
        fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines = lines;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for JobTracker {
    /// A tracker without a journal: the history ends with the process.
    fn default() -> Self {
        // Start from the clock so that a restarted driver does not reuse ids.
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64 % 1_000_000_000);
        JobTracker {
            jobs: Mutex::new(BTreeMap::new()),
            next: Mutex::new(start * 10),
            journal: None,
        }
    }
}

impl JobTracker {
    /// A tracker that keeps its history in the journal at `path`, starting from what the journal
    /// holds; jobs it shows running are recorded as failed ([`INTERRUPTED`]).
    pub fn with_journal(path: &Path) -> std::io::Result<JobTracker> {
        let (mut journal, entries) = Journal::open(path)?;
        let tracker = JobTracker::default();
        let mut interrupted = Vec::new();
        {
            let mut jobs = lock(&tracker.jobs);
            let mut next = lock(&tracker.next);
            for (_, mut entry) in entries.into_iter().rev().take(KEEP) {
                *next = (*next).max(entry.id);
                if entry.state == JobState::Running {
                    entry.state = JobState::Failed;
                    entry.error = Some(INTERRUPTED.to_string());
                    entry.failure = Some((FailureKind::External.to_string(), true));
                    interrupted.push(entry.clone());
                }
                let (cancel, _) = watch::channel(false);
                jobs.insert(JobId(entry.id), (entry.record(), cancel));
            }
            if journal.lines > 2 * KEEP {
                journal.rewrite(jobs.values().map(|(j, _)| j))?;
            } else {
                for entry in &interrupted {
                    journal.append(entry);
                }
            }
        }
        if !interrupted.is_empty() {
            tracing::warn!(
                jobs = interrupted.len(),
                "jobs were running when the driver stopped; they are recorded as failed"
            );
        }
        Ok(JobTracker {
            journal: Some(Mutex::new(journal)),
            ..tracker
        })
    }

    /// Appends a job's current state to the journal, compacting it when it has grown long.
    fn journal(&self, jobs: &BTreeMap<JobId, (JobRecord, watch::Sender<bool>)>, id: JobId) {
        let (Some(journal), Some((job, _))) = (&self.journal, jobs.get(&id)) else {
            return;
        };
        let mut journal = lock(journal);
        if journal.lines >= 2 * KEEP {
            if let Err(e) = journal.rewrite(jobs.values().map(|(j, _)| j)) {
                tracing::warn!(error = %e, "could not rewrite the job journal");
            }
        } else {
            journal.append(&Entry::of(job));
        }
    }

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
            failure: None,
            stages: Vec::new(),
            journalled_tasks: (0, 0),
        };
        let mut jobs = lock(&self.jobs);
        jobs.insert(id, (record, cancel));
        while jobs.len() > KEEP {
            jobs.pop_first();
        }
        self.journal(&jobs, id);
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
            if record.outcome == SUCCEEDED {
                s.tasks_done = (s.tasks_done + 1).min(s.tasks_total.max(s.tasks_done + 1));
                s.metrics.add(&record.metrics);
                if record.remote {
                    s.tasks_remote += 1;
                }
            }
            s.tasks.push(record);
        }
    }

    /// Task `index`'s earlier result was lost (its worker died): it has to run again. Its run
    /// no longer counts in the stage's metrics (rows read and written by table among them), so
    /// the run that replaces it is not counted twice.
    pub fn task_undone(&self, id: JobId, stage: StageId, index: u32) {
        if let Some((job, _)) = lock(&self.jobs).get_mut(&id)
            && let Some(s) = job.stages.iter_mut().find(|s| s.id == stage)
        {
            s.tasks_done = s.tasks_done.saturating_sub(1);
            s.tasks_retried += 1;
            if let Some(lost) = s
                .tasks
                .iter_mut()
                .rev()
                .find(|t| t.index == index && t.outcome == SUCCEEDED)
            {
                lost.outcome = "succeeded; its output was lost with its worker".into();
                if lost.remote {
                    s.tasks_remote = s.tasks_remote.saturating_sub(1);
                }
                let mut metrics = TaskMetrics::default();
                for t in s.tasks.iter().filter(|t| t.outcome == SUCCEEDED) {
                    metrics.add(&t.metrics);
                }
                s.metrics = metrics;
            }
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

    /// Records how job `id` ended; a failed one with its error's message and classification.
    pub fn finish(&self, id: JobId, state: JobState, error: Option<(String, Failure)>) {
        let mut jobs = lock(&self.jobs);
        if let Some((job, _)) = jobs.get_mut(&id) {
            job.state = state;
            job.failure = error.as_ref().map(|(_, failure)| *failure);
            job.error = error.map(|(message, _)| message);
            job.elapsed = Some(job.started.elapsed());
            self.journal(&jobs, id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_history_and_fails_jobs_a_stopped_driver_was_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("driver").join("jobs.ndjson");
        let (done, running) = {
            let tracker = JobTracker::with_journal(&path).unwrap();
            let (done, _) = tracker.start("SELECT 1", "cli-1");
            tracker.set_stages(
                done,
                vec![StageRecord {
                    id: StageId(1),
                    description: "scan k.t".into(),
                    runs_on: "workers",
                    inputs: Vec::new(),
                    tasks_total: 6,
                    tasks_done: 6,
                    tasks_remote: 0,
                    tasks_retried: 0,
                    metrics: TaskMetrics::default(),
                    tasks: Vec::new(),
                }],
            );
            tracker.finish(done, JobState::Succeeded, None);
            let (failed, _) = tracker.start("SELECT x", "cli-1");
            tracker.finish(
                failed,
                JobState::Failed,
                Some(("no column x".into(), Failure::USER)),
            );
            let (running, _) = tracker.start("SELECT count(*) FROM k.t", "cli-2");
            (done, running)
            // Dropped without finishing `running`: the driver stopped.
        };
        // A torn last line, as a crash mid-append leaves it.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\": 12, \"sql\": \"SEL").unwrap();
        drop(file);

        let tracker = JobTracker::with_journal(&path).unwrap();
        let jobs = tracker.list();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].id, running);
        assert_eq!(jobs[0].state, JobState::Failed);
        assert_eq!(jobs[0].error.as_deref(), Some(INTERRUPTED));
        assert_eq!(jobs[1].error.as_deref(), Some("no column x"));
        assert_eq!(
            jobs[1].failure,
            Some(Failure::USER),
            "kept across a restart"
        );
        assert_eq!(jobs[0].failure.map(|f| f.kind), Some(FailureKind::External));
        let first = tracker.get(done).unwrap();
        assert_eq!(
            (first.state, first.sql.as_str()),
            (JobState::Succeeded, "SELECT 1")
        );
        // New ids follow the old ones, and the interruption itself was journalled.
        let (next, _) = tracker.start("SELECT 2", "cli-3");
        assert!(next.0 > running.0);
        drop(tracker);
        let again = JobTracker::with_journal(&path).unwrap();
        assert_eq!(again.get(running).unwrap().state, JobState::Failed);
        assert_eq!(again.get(next).unwrap().error.as_deref(), Some(INTERRUPTED));
    }

    #[test]
    fn a_long_journal_is_rewritten_with_the_jobs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.ndjson");
        let tracker = JobTracker::with_journal(&path).unwrap();
        for i in 0..KEEP + 200 {
            let (id, _) = tracker.start(&format!("SELECT {i}"), "bench");
            tracker.finish(id, JobState::Succeeded, None);
        }
        drop(tracker);
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * KEEP + 1, "{lines} lines");
        let tracker = JobTracker::with_journal(&path).unwrap();
        let jobs = tracker.list();
        assert_eq!(jobs.len(), KEEP);
        assert_eq!(jobs[0].sql, format!("SELECT {}", KEEP + 199));
    }
}
