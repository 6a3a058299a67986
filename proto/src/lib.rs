//! Quarry's wire protocol.
//!
//! This crate will hold the `.proto` files of the driver and worker services (registration,
//! heartbeats, task launch, status, cancellation, job submission) and the tonic/prost code
//! generated from them, committed so that nobody needs `protoc` to build, with a test that
//! regenerates the code and fails on a diff. It holds no domain logic: the framework crates never
//! see these types; `driver` and `worker` convert at their edges.
//!
//! Nothing is defined yet: the distributed runtime (driver and worker daemons) is the next
//! milestone after the single-process foundation.
