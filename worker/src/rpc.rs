//! Conversions between Quarry's wire messages (`quarry_proto::v1`) and the domain types of
//! `quarry-jobs`. A missing or invalid field is an [`Error::InvalidMessage`], never a panic. The
//! driver uses the same conversions for the other direction.

use std::collections::{BTreeMap, HashMap};

use quarry_core::shard_set::ShardSet;
use quarry_jobs::{
    FailureKind, JobId, StageId, TaskFailure, TaskId, TaskMetrics, TaskOutput, TaskRequest,
    TaskShards, TaskState, TaskStatus,
};
use quarry_proto::v1 as pb;
use quarry_wasm::ModuleHash;

use crate::error::{Error, Result};

pub fn task_id_to_proto(id: &TaskId) -> pb::TaskId {
    pb::TaskId {
        job_id: id.job.to_string(),
        stage_id: id.stage.0,
        partition: id.index,
        attempt: id.attempt,
    }
}

pub fn task_id_from_proto(id: Option<&pb::TaskId>) -> Result<TaskId> {
    let id = id.ok_or_else(|| Error::invalid("task id", "it is missing"))?;
    let job = id
        .job_id
        .parse::<JobId>()
        .map_err(|e| Error::invalid("task id", e))?;
    Ok(TaskId {
        job,
        stage: StageId(id.stage_id),
        index: id.partition,
        attempt: id.attempt,
    })
}

/// A worker's local shards, keyspace by keyspace, as shard ranges.
pub fn local_shards_to_proto(local: &BTreeMap<String, ShardSet>) -> Vec<pb::ShardRange> {
    local
        .iter()
        .flat_map(|(keyspace, shards)| {
            shards.ranges().iter().map(|r| pb::ShardRange {
                keyspace: keyspace.clone(),
                first: *r.start(),
                last: *r.end(),
            })
        })
        .collect()
}

/// Shard ranges of any number of keyspaces, grouped by keyspace.
pub fn local_shards_from_proto(ranges: &[pb::ShardRange]) -> Result<BTreeMap<String, ShardSet>> {
    if let Some(bad) = ranges
        .iter()
        .find(|r| r.first > r.last || r.keyspace.is_empty())
    {
        return Err(Error::invalid(
            "local shards",
            format!(
                "range {}-{} of keyspace '{}' is backwards or unnamed",
                bad.first, bad.last, bad.keyspace
            ),
        ));
    }
    let mut by_keyspace: BTreeMap<String, Vec<std::ops::RangeInclusive<u32>>> = BTreeMap::new();
    for r in ranges {
        by_keyspace
            .entry(r.keyspace.clone())
            .or_default()
            .push(r.first..=r.last);
    }
    Ok(by_keyspace
        .into_iter()
        .map(|(keyspace, ranges)| (keyspace, ShardSet::from_ranges(ranges)))
        .collect())
}

pub fn task_request_to_proto(task: &TaskRequest) -> pb::TaskDefinition {
    let shards = match &task.shards {
        Some(s) => s
            .shards
            .ranges()
            .iter()
            .map(|r| pb::ShardRange {
                keyspace: s.keyspace.clone(),
                first: *r.start(),
                last: *r.end(),
            })
            .collect(),
        None => Vec::new(),
    };
    let mut inputs: Vec<pb::StageInput> = task
        .inputs
        .iter()
        .map(|(stage, outputs)| pb::StageInput {
            stage_id: stage.0,
            outputs: outputs
                .iter()
                .map(|o| pb::TaskOutputLocation {
                    task: Some(task_id_to_proto(&o.task)),
                    flight_endpoint: o.endpoint.clone(),
                    partitions: o.partitions,
                })
                .collect(),
        })
        .collect();
    inputs.sort_by_key(|i| i.stage_id);
    pb::TaskDefinition {
        task: Some(task_id_to_proto(&task.id)),
        plan: task.plan.clone(),
        shards,
        session_config: task.session_config.iter().cloned().collect(),
        hash_partitions: task.hash_partitions.clone(),
        inputs,
        modules: task.modules.iter().map(ToString::to_string).collect(),
    }
}

/// The most partitions a task's input or output may have, and the most entries of any list in
/// a task definition: far above what a driver plans, far below what would exhaust memory.
pub const MAX_TASK_FAN: usize = 65_536;

pub fn task_request_from_proto(def: pb::TaskDefinition) -> Result<TaskRequest> {
    let id = task_id_from_proto(def.task.as_ref())?;
    if def.plan.is_empty() {
        return Err(Error::invalid("task definition", "its plan is empty"));
    }
    let too_many = |what: &str, n: usize| {
        (n > MAX_TASK_FAN).then(|| {
            Error::invalid(
                "task definition",
                format!("it has {n} {what}, more than the {MAX_TASK_FAN} a task may have"),
            )
        })
    };
    let outputs = def.inputs.iter().map(|i| i.outputs.len()).sum::<usize>();
    let widest = def
        .inputs
        .iter()
        .flat_map(|i| &i.outputs)
        .map(|o| o.partitions as usize)
        .max()
        .unwrap_or(0);
    let largest_hash = def
        .hash_partitions
        .iter()
        .max()
        .map_or(0, |p| *p as usize + 1);
    for (what, n) in [
        ("shard ranges", def.shards.len()),
        ("hash partitions", def.hash_partitions.len()),
        ("hash partition numbers", largest_hash),
        ("inputs", def.inputs.len()),
        ("input outputs", outputs),
        ("partitions in one input output", widest),
        ("session settings", def.session_config.len()),
        ("modules", def.modules.len()),
    ] {
        if let Some(e) = too_many(what, n) {
            return Err(e);
        }
    }
    let shards = match def.shards.first() {
        None => None,
        Some(first) => {
            let keyspace = first.keyspace.clone();
            if let Some(other) = def.shards.iter().find(|r| r.keyspace != keyspace) {
                return Err(Error::invalid(
                    "task definition",
                    format!(
                        "its shards span keyspaces {keyspace} and {}",
                        other.keyspace
                    ),
                ));
            }
            if let Some(bad) = def.shards.iter().find(|r| r.first > r.last) {
                return Err(Error::invalid(
                    "task definition",
                    format!("shard range {}-{} is backwards", bad.first, bad.last),
                ));
            }
            Some(TaskShards {
                keyspace,
                shards: ShardSet::from_ranges(def.shards.iter().map(|r| r.first..=r.last)),
            })
        }
    };
    let mut inputs = HashMap::new();
    for input in def.inputs {
        let outputs = input
            .outputs
            .iter()
            .map(|o| {
                Ok(TaskOutput {
                    task: task_id_from_proto(o.task.as_ref())?,
                    endpoint: o.flight_endpoint.clone(),
                    partitions: o.partitions,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        inputs.insert(StageId(input.stage_id), outputs);
    }
    let mut session_config: Vec<(String, String)> = def.session_config.into_iter().collect();
    session_config.sort();
    let modules = def
        .modules
        .iter()
        .map(|m| m.parse())
        .collect::<std::result::Result<Vec<ModuleHash>, _>>()
        .map_err(|e| Error::invalid("task definition", format!("a module hash: {e}")))?;
    Ok(TaskRequest {
        id,
        plan: def.plan,
        shards,
        hash_partitions: def.hash_partitions,
        inputs,
        session_config,
        modules,
    })
}

pub fn kind_to_proto(kind: FailureKind) -> pb::ErrorKind {
    match kind {
        FailureKind::User => pb::ErrorKind::User,
        FailureKind::External => pb::ErrorKind::External,
        FailureKind::Internal => pb::ErrorKind::Internal,
    }
}

fn state_to_proto(state: TaskState) -> pb::TaskState {
    match state {
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn metrics_to_proto(m: &TaskMetrics) -> pb::TaskMetrics {
    pb::TaskMetrics {
        rows_in: m.rows_in,
        rows_out: m.rows_out,
        bytes_in: m.bytes_in,
        bytes_out: m.bytes_out,
        elapsed_ms: m.elapsed_ms,
        wasm_cpu_ns: m.wasm_cpu_ns,
        rows_local: m.rows_local,
        rows_remote: m.rows_remote,
        rows_read: m.rows_read.clone().into_iter().collect(),
        rows_written: m.rows_written.clone().into_iter().collect(),
    }
}

pub fn metrics_from_proto(m: Option<&pb::TaskMetrics>) -> TaskMetrics {
    m.map(|m| TaskMetrics {
        rows_in: m.rows_in,
        rows_out: m.rows_out,
        bytes_in: m.bytes_in,
        bytes_out: m.bytes_out,
        elapsed_ms: m.elapsed_ms,
        wasm_cpu_ns: m.wasm_cpu_ns,
        rows_local: m.rows_local,
        rows_remote: m.rows_remote,
        rows_read: m.rows_read.clone().into_iter().collect(),
        rows_written: m.rows_written.clone().into_iter().collect(),
    })
    .unwrap_or_default()
}

pub fn failure_to_proto(f: &TaskFailure) -> pb::TaskError {
    pb::TaskError {
        kind: kind_to_proto(f.kind) as i32,
        retryable: f.retryable,
        message: f.message.clone(),
        unreachable_endpoint: f.unreachable_endpoint.clone().unwrap_or_default(),
    }
}

pub fn failure_from_proto(e: &pb::TaskError) -> TaskFailure {
    let kind = match pb::ErrorKind::try_from(e.kind) {
        Ok(pb::ErrorKind::User) => FailureKind::User,
        Ok(pb::ErrorKind::External) => FailureKind::External,
        _ => FailureKind::Internal,
    };
    TaskFailure {
        kind,
        retryable: e.retryable,
        message: e.message.clone(),
        unreachable_endpoint: (!e.unreachable_endpoint.is_empty())
            .then(|| e.unreachable_endpoint.clone()),
    }
}

pub fn status_to_proto(s: &TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        task: Some(task_id_to_proto(&s.id)),
        state: state_to_proto(s.state) as i32,
        metrics: Some(metrics_to_proto(&s.metrics)),
        error: s.failure.as_ref().map(failure_to_proto),
        output_partitions: s.output_partitions,
    }
}

pub fn status_from_proto(s: &pb::TaskStatus) -> Result<TaskStatus> {
    let state = match pb::TaskState::try_from(s.state) {
        Ok(pb::TaskState::Queued) => TaskState::Queued,
        Ok(pb::TaskState::Running) => TaskState::Running,
        Ok(pb::TaskState::Succeeded) => TaskState::Succeeded,
        Ok(pb::TaskState::Failed) => TaskState::Failed,
        Ok(pb::TaskState::Cancelled) => TaskState::Cancelled,
        _ => {
            return Err(Error::invalid(
                "task status",
                format!("unknown state {}", s.state),
            ));
        }
    };
    Ok(TaskStatus {
        id: task_id_from_proto(s.task.as_ref())?,
        state,
        metrics: metrics_from_proto(s.metrics.as_ref()),
        failure: s.error.as_ref().map(failure_from_proto),
        output_partitions: s.output_partitions,
    })
}

/// Refuses a peer that speaks another protocol version.
/// Which kind of process is at either end of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Driver,
    Worker,
    Client,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::Driver => "driver",
            Peer::Worker => "worker",
            Peer::Client => "client",
        })
    }
}

/// Refuses a message from `there` sent with another protocol version than `here` speaks.
pub fn check_protocol(theirs: u32, here: Peer, there: Peer) -> Result<()> {
    if theirs == quarry_proto::PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Error::ProtocolVersion {
            here,
            ours: quarry_proto::PROTOCOL_VERSION,
            there,
            theirs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: u32) -> TaskId {
        TaskId {
            job: JobId(7),
            stage: StageId(2),
            index,
            attempt: 1,
        }
    }

    #[test]
    fn task_requests_round_trip() {
        let request = TaskRequest {
            id: task(3),
            plan: vec![1, 2, 3],
            shards: Some(TaskShards {
                keyspace: "iot".into(),
                shards: ShardSet::from_ranges([0..=4, 9..=9]),
            }),
            hash_partitions: vec![1, 4],
            inputs: HashMap::from([(
                StageId(1),
                vec![TaskOutput {
                    task: task(0),
                    endpoint: "http://127.0.0.1:1".into(),
                    partitions: 6,
                }],
            )]),
            session_config: vec![("quarry.pushdown".into(), "false".into())],
            modules: vec![ModuleHash::of(b"a module")],
        };
        let back = task_request_from_proto(task_request_to_proto(&request)).unwrap();
        assert_eq!(back.id, request.id);
        assert_eq!(back.plan, request.plan);
        assert_eq!(back.shards, request.shards);
        assert_eq!(back.hash_partitions, request.hash_partitions);
        assert_eq!(back.inputs, request.inputs);
        assert_eq!(back.session_config, request.session_config);
        assert_eq!(back.modules, request.modules);
    }

    #[test]
    fn statuses_round_trip() {
        let status = TaskStatus {
            id: task(0),
            state: TaskState::Failed,
            metrics: TaskMetrics {
                rows_in: 10,
                rows_out: 2,
                bytes_in: 100,
                bytes_out: 20,
                elapsed_ms: 5,
                wasm_cpu_ns: 7,
                rows_local: 5,
                rows_remote: 5,
                rows_read: [("ks.t".to_string(), 10)].into(),
                rows_written: [("ks.u".to_string(), 2)].into(),
            },
            failure: Some(TaskFailure {
                kind: FailureKind::External,
                retryable: true,
                message: "worker gone".into(),
                unreachable_endpoint: Some("http://127.0.0.1:9".into()),
            }),
            output_partitions: 0,
        };
        assert_eq!(
            status_from_proto(&status_to_proto(&status)).unwrap(),
            status
        );
    }

    #[test]
    fn task_definitions_that_would_size_huge_allocations_are_refused() {
        let base = || {
            task_request_to_proto(&TaskRequest {
                id: task(0),
                plan: vec![1],
                shards: None,
                hash_partitions: vec![0],
                inputs: HashMap::from([(
                    StageId(1),
                    vec![TaskOutput {
                        task: task(0),
                        endpoint: "http://127.0.0.1:1".into(),
                        partitions: 4,
                    }],
                )]),
                session_config: Vec::new(),
                modules: Vec::new(),
            })
        };
        task_request_from_proto(base()).unwrap();
        let mut wide = base();
        wide.inputs[0].outputs[0].partitions = u32::MAX;
        let mut far = base();
        far.hash_partitions = vec![u32::MAX];
        let mut many = base();
        many.hash_partitions = vec![0; MAX_TASK_FAN + 1];
        for (def, expected) in [
            (wide, "partitions in one input output"),
            (far, "hash partition numbers"),
            (many, "hash partitions"),
        ] {
            let err = task_request_from_proto(def).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("65536"), "{err}");
        }
    }

    #[test]
    fn invalid_messages_are_errors_not_panics() {
        let missing = task_request_from_proto(pb::TaskDefinition::default()).unwrap_err();
        assert!(missing.to_string().contains("task id"), "{missing}");
        let mut def = task_request_to_proto(&TaskRequest {
            id: task(0),
            plan: vec![1],
            shards: None,
            hash_partitions: Vec::new(),
            inputs: HashMap::new(),
            session_config: Vec::new(),
            modules: Vec::new(),
        });
        def.shards.push(pb::ShardRange {
            keyspace: "iot".into(),
            first: 9,
            last: 2,
        });
        let backwards = task_request_from_proto(def).unwrap_err();
        assert!(backwards.to_string().contains("backwards"), "{backwards}");
        let bad_job = task_id_from_proto(Some(&pb::TaskId {
            job_id: "nope".into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(bad_job.to_string().contains("not a job id"), "{bad_job}");
        let err = check_protocol(
            quarry_proto::PROTOCOL_VERSION + 1,
            Peer::Driver,
            Peer::Worker,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "this driver speaks protocol version {} and the worker at the other end {}; \
                 run the same Quarry version on both",
                quarry_proto::PROTOCOL_VERSION,
                quarry_proto::PROTOCOL_VERSION + 1
            )
        );
    }

    #[test]
    fn local_shards_round_trip_and_bad_ranges_are_refused() {
        let local = BTreeMap::from([
            ("iot".to_string(), ShardSet::from_ranges([0..=3, 7..=7])),
            ("synth".to_string(), ShardSet::from_ranges([2..=5])),
        ]);
        let wire = local_shards_to_proto(&local);
        assert_eq!(wire.len(), 3);
        assert_eq!(local_shards_from_proto(&wire).unwrap(), local);
        let backwards = [pb::ShardRange {
            keyspace: "iot".into(),
            first: 4,
            last: 1,
        }];
        let err = local_shards_from_proto(&backwards).unwrap_err();
        assert!(err.to_string().contains("backwards"), "{err}");
    }
}
