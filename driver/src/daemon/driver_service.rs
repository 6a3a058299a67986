//! The driver's gRPC service: worker registration and heartbeats, job inspection and
//! cancellation, and the modules of Rust jobs (kept from clients, served to workers).

use std::sync::Arc;

use quarry_client::auth::require_cluster;
use quarry_core::ids::NodeId;
use quarry_jobs::{JobId, WorkerId};
use quarry_proto::v1 as pb;
use quarry_proto::v1::driver_service_server::DriverService;
use quarry_sdk::dag::Sink;
use quarry_worker::rpc::{Peer, check_protocol, local_shards_from_proto};
use tonic::{Request, Response, Status};

use super::DriverState;
use super::client_flight::status_of;
use super::rpc::{job_summary, stage_summaries, worker_summary};

/// Longest worker or node name accepted.
const MAX_NAME: usize = 256;

/// The gRPC face of [`DriverState`].
#[derive(Debug, Clone)]
pub struct DriverRpc(pub Arc<DriverState>);

fn job_id(text: &str) -> Result<JobId, Status> {
    text.parse()
        .map_err(|e: String| Status::invalid_argument(e))
}

#[tonic::async_trait]
impl DriverService for DriverRpc {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        require_cluster(&request, "RegisterWorker")?;
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Driver, Peer::Worker)?;
        let worker = request
            .worker
            .ok_or_else(|| Status::invalid_argument("a registration needs the worker's info"))?;
        if worker.worker_id.trim().is_empty() || worker.node_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a registering worker needs a worker_id and a node_id",
            ));
        }
        if worker.worker_id.len() > MAX_NAME || worker.node_id.len() > MAX_NAME {
            return Err(Status::invalid_argument(format!(
                "worker and node names are at most {MAX_NAME} bytes"
            )));
        }
        let local_shards = local_shards_from_proto(&worker.local_shards)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.0
            .registry
            .register(
                WorkerId(worker.worker_id),
                NodeId(worker.node_id),
                worker.flight_endpoint,
                worker.task_slots,
                local_shards,
            )
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            protocol_version: quarry_proto::PROTOCOL_VERSION,
            driver_id: self.0.driver_id.clone(),
            heartbeat_interval_ms: self.0.config.heartbeat_interval.as_millis() as u64,
            lost_after_ms: self.0.config.lost_after.as_millis() as u64,
            peers: self.0.registry.endpoints(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        require_cluster(&request, "Heartbeat")?;
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Driver, Peer::Worker)?;
        let local_shards = local_shards_from_proto(&request.local_shards)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let known = self.0.registry.heartbeat(
            &WorkerId(request.worker_id),
            request.running_tasks,
            local_shards,
        );
        Ok(Response::new(pb::HeartbeatResponse {
            reregister: !known,
            peers: if known {
                self.0.registry.endpoints()
            } else {
                Vec::new()
            },
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Ok(Response::new(pb::ListWorkersResponse {
            workers: self.0.registry.all().iter().map(worker_summary).collect(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let id = job_id(&request.into_inner().job_id)?;
        let job = self.0.jobs.get(id).ok_or_else(|| {
            Status::not_found(format!("no job {id}; `quarry jobs` lists the known ones"))
        })?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_summary(&job)),
            stages: stage_summaries(&job),
        }))
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(pb::ListJobsResponse {
            jobs: self.0.jobs.list().iter().map(job_summary).collect(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = job_id(&request.into_inner().job_id)?;
        let was_running = self.0.jobs.cancel(id).ok_or_else(|| {
            Status::not_found(format!("no job {id}; `quarry jobs` lists the known ones"))
        })?;
        Ok(Response::new(pb::CancelJobResponse { was_running }))
    }

    async fn put_module(
        &self,
        request: Request<pb::PutModuleRequest>,
    ) -> Result<Response<pb::PutModuleResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Driver, Peer::Client)?;
        let module = self
            .0
            .modules
            .put(request.module)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::PutModuleResponse {
            hash: module.hash().to_string(),
        }))
    }

    async fn get_module(
        &self,
        request: Request<pb::GetModuleRequest>,
    ) -> Result<Response<pb::GetModuleResponse>, Status> {
        require_cluster(&request, "GetModule")?;
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Driver, Peer::Worker)?;
        let hash = module_hash(&request.hash)?;
        let module = self.0.modules.bytes(&hash).map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::GetModuleResponse { module }))
    }

    async fn plan_rust_job(
        &self,
        request: Request<pb::PlanRustJobRequest>,
    ) -> Result<Response<pb::PlanRustJobResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Driver, Peer::Client)?;
        let hash = module_hash(&request.module_hash)?;
        let sinks = self
            .0
            .plan_rust_job(&hash, &job_args(&request.args))
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::PlanRustJobResponse {
            results: sinks.iter().map(job_result).collect(),
        }))
    }

    async fn submit_rust_job(
        &self,
        request: Request<pb::SubmitRustJobRequest>,
    ) -> Result<Response<pb::SubmitRustJobResponse>, Status> {
        let request = request.into_inner();
        check_protocol(request.protocol_version, Peer::Driver, Peer::Client)?;
        let hash = module_hash(&request.module_hash)?;
        let submitted = self
            .0
            .submit_rust_job(hash, job_args(&request.args), &request.label)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::SubmitRustJobResponse {
            job_id: submitted.first_job.to_string(),
            results: submitted.results as u32,
            label: submitted.label,
        }))
    }
}

/// A module hash from a request.
pub fn module_hash(text: &str) -> Result<quarry_wasm::ModuleHash, Status> {
    text.parse()
        .map_err(|e| Status::invalid_argument(format!("a job module hash: {e}")))
}

/// A job's arguments from a request.
pub fn job_args(args: &[pb::JobArgument]) -> quarry_sdk::dag::JobArgs {
    quarry_sdk::dag::JobArgs::new(args.iter().map(|a| (a.name.clone(), a.value.clone())))
}

/// A Rust job's result as the wire names it.
fn job_result(sink: &Sink) -> pb::JobResult {
    let (kind, table, limit) = match sink {
        Sink::Write { table } => (pb::JobResultKind::Write, table.clone(), 0),
        Sink::Collect => (pb::JobResultKind::Collect, String::new(), 0),
        Sink::Count => (pb::JobResultKind::Count, String::new(), 0),
        Sink::Take { n } => (pb::JobResultKind::Take, String::new(), *n),
    };
    pb::JobResult {
        kind: kind as i32,
        table,
        limit,
    }
}
