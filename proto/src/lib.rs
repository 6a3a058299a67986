//! Quarry's wire protocol: the gRPC services and messages between the driver, its workers and
//! clients.
//!
//! ```text
//!   worker ──RegisterWorker / Heartbeat──▶ driver ◀──GetJob / ListJobs / CancelJob── quarry CLI
//!                                           driver ◀──Flight DoGet(QueryTicket)──── quarry CLI
//!   worker ◀──Flight DoGet(ExchangeTicket)── other workers, the driver
//!   driver ──LaunchTask / CancelTask / GetTask──▶ worker
//!   quarry CLI ──PutModule / PlanRustJob──▶ driver ◀──GetModule── worker (Rust job modules)
//! ```
//!
//! The `.proto` files live in `proto/proto/`; the Rust code in `src/generated/` is generated from
//! them by `cargo run -p quarry-proto-gen` and committed, so nobody needs `protoc` to build, and a
//! test in `quarry-proto-gen` fails when the two drift apart. This crate holds no domain logic:
//! the framework crates never see these types, and the driver and worker convert at their edges.

/// The version of this protocol. Sent at registration and on every heartbeat; peers that differ
/// refuse each other with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest gRPC or Flight message a Quarry process sends or accepts (senders split batches
/// well below it; a job module may be nearly this large).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Flight schema metadata key of a statement's message ("created table iot.readings"), on a
/// result that has no rows.
pub const MESSAGE_KEY: &str = "quarry.message";

/// Flight schema metadata key of a client's session settings after a statement: a JSON object of
/// strings, which the client sends back with its next statement.
pub const SESSION_KEY: &str = "quarry.session";

/// Generated messages, clients and servers of package `quarry.v1`.
// Generated code: it is checked against the .proto files, not held to the project's lints.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!("generated/quarry.v1.rs");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::v1::*;

    #[test]
    fn messages_round_trip_through_their_encoding() {
        let status = TaskStatus {
            task: Some(TaskId {
                job_id: "job-1".into(),
                stage_id: 2,
                partition: 3,
                attempt: 1,
            }),
            state: TaskState::Failed as i32,
            metrics: Some(TaskMetrics {
                rows_in: 10,
                rows_out: 4,
                bytes_in: 100,
                bytes_out: 40,
                elapsed_ms: 7,
                wasm_cpu_ns: 9,
                rows_local: 6,
                rows_remote: 4,
                rows_read: [("ks.t".to_string(), 10)].into(),
                rows_written: [("ks.u".to_string(), 4)].into(),
            }),
            error: Some(TaskError {
                kind: ErrorKind::External as i32,
                retryable: true,
                message: "store node 3 unreachable".into(),
                unreachable_endpoint: "http://127.0.0.1:7071".into(),
            }),
            output_partitions: 0,
        };
        let response = LaunchTaskResponse {
            status: Some(status),
        };
        let bytes = response.encode_to_vec();
        assert_eq!(
            LaunchTaskResponse::decode(bytes.as_slice()).unwrap(),
            response
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let request = LaunchTaskRequest {
            protocol_version: super::PROTOCOL_VERSION,
            task: Some(TaskDefinition {
                task: None,
                plan: vec![7; 64],
                shards: vec![ShardRange {
                    keyspace: "iot".into(),
                    first: 0,
                    last: 99,
                }],
                session_config: Default::default(),
                hash_partitions: vec![1],
                inputs: Vec::new(),
                modules: vec!["ab".repeat(32)],
            }),
        };
        let bytes = request.encode_to_vec();
        assert!(LaunchTaskRequest::decode(&bytes[..bytes.len() / 2]).is_err());
    }
}
