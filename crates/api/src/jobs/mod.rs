//! Scheduled jobs (`ferry.v1.JobService`): the api half.
//!
//! The api validates and stores job definitions ([`definitions`]) and
//! queues manual runs ([`runs`]); ferry-scheduler does the rest. The two
//! meet in the database:
//!
//! - `jobs.next_run_at` is the next slot to fire. The api sets it to the
//!   schedule's first fire time after now whenever a job is created or its
//!   schedule, time zone or enabled flag changes (NULL without a schedule
//!   or when disabled); the scheduler fires jobs whose `next_run_at <= now`
//!   and advances it.
//! - `job_runs` rows in `pending` are the scheduler's to dispatch (it
//!   applies the REPLACE policy); RunJobNow inserts them, refusing under
//!   FORBID while a run is active (`ferry_migration::ACTIVE_RUN`).
//! - Deleting a job deletes its runs (cascade); the scheduler removes the
//!   Kubernetes Jobs whose run row is gone.
//!
//! Schedules are parsed by `ferry-cron`, as the scheduler parses them, so
//! both agree on every fire time.

pub mod definitions;
pub mod runs;

use ferry_common::GrpcServices;
use ferry_proto::ferry::v1 as pb;
use pb::job_service_server::JobService;
use tonic::{Request, Response, Status};

use crate::workloads::Workloads;

/// The `JobService` implementation.
#[derive(Debug, Clone)]
pub struct JobApi(pub Workloads);

/// Adds `JobService` to `services`.
pub fn add_job_service(services: GrpcServices, workloads: &Workloads) -> GrpcServices {
    services.add_service(pb::job_service_server::JobServiceServer::new(JobApi(
        workloads.clone(),
    )))
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(self.update(request).await?))
    }
    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteJobResponse {}))
    }
    async fn run_job_now(
        &self,
        request: Request<pb::RunJobNowRequest>,
    ) -> Result<Response<pb::JobRun>, Status> {
        Ok(Response::new(self.run_now(request).await?))
    }
    async fn list_job_runs(
        &self,
        request: Request<pb::ListJobRunsRequest>,
    ) -> Result<Response<pb::ListJobRunsResponse>, Status> {
        Ok(Response::new(self.list_runs(request).await?))
    }
    async fn get_job_run(
        &self,
        request: Request<pb::GetJobRunRequest>,
    ) -> Result<Response<pb::JobRun>, Status> {
        Ok(Response::new(self.get_run(request).await?))
    }
    async fn get_job_run_logs(
        &self,
        request: Request<pb::GetJobRunLogsRequest>,
    ) -> Result<Response<pb::JobRunLogs>, Status> {
        Ok(Response::new(self.run_logs(request).await?))
    }
}
