//! Jobs: how a query becomes stages that run where the data is.
//!
//! ```text
//!   DataFusion physical plan ──DistributedPlanner──▶ JobGraph (petgraph DAG of Stages)
//!        stage plan ──QuarryCodec (datafusion-proto)──▶ bytes ──▶ worker: decode, bound to the
//!                                                                 task's shards and inputs
//!        ExchangeReaderExec ◀── ExchangeClient (Arrow Flight) ◀── outputs kept by producer tasks
//! ```
//!
//! [`planner`] cuts a plan at exchange points; [`job_graph`] holds the stages; [`codec`] moves
//! plan fragments over the wire, with Quarry's store scan and exchange reader as extension
//! nodes; [`exchange`] reads a stage's output from the workers that keep it; [`write`] turns an
//! `INSERT ... SELECT` into writes from the workers that own the target shards; [`rust_job`]
//! lowers a Rust job's DAG into the same plans, with its module's operators as [`WasmExec`]s. Scheduling (which
//! task runs where) belongs to the driver, running tasks to the worker.

pub mod allow_list;
pub mod codec;
pub mod error;
pub mod exchange;
pub mod ids;
pub mod job_graph;
pub mod planner;
pub mod rust_job;
pub mod scalar_subquery;
pub mod task;
pub mod wasm_exec;
pub mod write;

pub use codec::{QuarryCodec, TaskBinding};
pub use error::{Error, Result};
pub use exchange::{
    ExchangeClient, ExchangeFetchError, ExchangeKind, ExchangeReaderExec, PartitionLocation,
    TaskOutput,
};
pub use ids::{JobId, StageId, TaskId, WorkerId};
pub use job_graph::{JobGraph, Stage, StageKind};
pub use planner::{DistributedPlanner, WriteGroups};
pub use rust_job::{SinkPlan, lower};
pub use scalar_subquery::{
    RunPlan, SplitSubqueries, SubqueryValues, run_scalar_subqueries, split_scalar_subqueries,
};
pub use task::{
    Failure, FailureKind, TaskFailure, TaskMetrics, TaskRequest, TaskShards, TaskState, TaskStatus,
};
pub use wasm_exec::WasmExec;
