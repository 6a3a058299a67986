//! Typed ids of jobs, stages, tasks and workers. They cross the wire as plain numbers and strings
//! (see the driver's and worker's `rpc` modules); petgraph's node indices never do.

use std::fmt;
use std::str::FromStr;

/// A job: one SQL statement or job submission, planned into stages. Ids increase within a driver
/// and start from the driver's start time, so a restarted driver does not reuse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse()
            .map(JobId)
            .map_err(|_| format!("'{s}' is not a job id; `quarry jobs` lists them"))
    }
}

/// A stage of a job: a pipeline of operators between exchanges. Numbered from 1 in the order the
/// planner cut them (inputs before the stages that read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StageId(pub u32);

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One attempt of one task: a stage over one group of shards (or hash partitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    pub job: JobId,
    pub stage: StageId,
    /// The task's number within its stage.
    pub index: u32,
    /// 0 for the first run; a retry or a recomputation after a lost worker counts up.
    pub attempt: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}.{}",
            self.job, self.stage, self.index, self.attempt
        )
    }
}

/// A worker daemon, named by its operator (or `quarry up`); unique within a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_compactly_and_parse_back() {
        let task = TaskId {
            job: JobId(17),
            stage: StageId(2),
            index: 5,
            attempt: 1,
        };
        assert_eq!(task.to_string(), "17/2/5.1");
        assert_eq!("17".parse::<JobId>(), Ok(JobId(17)));
        let err = "x7".parse::<JobId>().unwrap_err();
        assert!(err.contains("'x7' is not a job id"), "{err}");
    }
}
