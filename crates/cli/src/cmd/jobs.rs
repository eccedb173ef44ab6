//! `jobs`: the project's scheduled jobs and their runs
//! (`ferry.v1.JobService`).

use ferry_proto::ferry::v1 as pb;

use crate::cli::{CreateJobArgs, JobsCmd};
use crate::error::{CliError, Result};
use crate::list_all;
use crate::output::write_out;
use crate::resources::chrono_time;
use crate::session::{Session, looks_like_id, pick};

fn concurrency(name: &str) -> Result<pb::ConcurrencyPolicy> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "allow" => pb::ConcurrencyPolicy::Allow,
        "forbid" => pb::ConcurrencyPolicy::Forbid,
        "replace" => pb::ConcurrencyPolicy::Replace,
        other => {
            return Err(CliError::usage(format!(
                "`{other}` is not a concurrency policy: allow, forbid or replace"
            )));
        }
    })
}

async fn all_jobs(s: &mut Session) -> Result<Vec<pb::Job>> {
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    Ok(list_all!(
        api,
        jobs,
        list_jobs,
        pb::ListJobsRequest {
            project_id,
            ..Default::default()
        },
        jobs
    ))
}

/// The job named (or with the id) `key` in the project.
async fn find_job(s: &mut Session, key: &str) -> Result<pb::Job> {
    let api = s.api().await?;
    if looks_like_id(key) {
        match api
            .jobs()
            .get_job(api.req(pb::GetJobRequest { id: key.into() }))
            .await
        {
            Ok(job) => return Ok(job.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status.into()),
        }
    }
    let jobs = all_jobs(s).await?;
    pick("job", key, jobs, |j| &j.id, |j| vec![&j.name])
}

/// `ferry jobs ...`.
pub async fn jobs(s: &mut Session, cmd: JobsCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        JobsCmd::List => {
            let all = all_jobs(s).await?;
            s.out.list(&all)
        }
        JobsCmd::Get { job } => {
            let job = find_job(s, &job).await?;
            s.out.one(&job)?;
            if !job.schedule_description.is_empty() {
                s.out.note(format!("\n{}", job.schedule_description))?;
            }
            if !job.next_runs.is_empty() {
                let next: Vec<String> = job.next_runs.iter().map(chrono_time).collect();
                s.out.note(format!("Next runs: {}", next.join(", ")))?;
            }
            Ok(())
        }
        JobsCmd::Create(args) => create(s, args).await,
        JobsCmd::Run { job } => {
            let job = find_job(s, &job).await?;
            let run = api
                .jobs()
                .run_job_now(api.req(pb::RunJobNowRequest { id: job.id }))
                .await?
                .into_inner();
            s.out.one(&run)?;
            s.out.note(format!(
                "Queued; `ferry jobs logs {}` shows its output once it ran.",
                job.name
            ))
        }
        JobsCmd::Runs { job } => {
            let job = find_job(s, &job).await?;
            let all = list_all!(
                api,
                jobs,
                list_job_runs,
                pb::ListJobRunsRequest {
                    job_id: job.id,
                    ..Default::default()
                },
                runs
            );
            s.out.list(&all)
        }
        JobsCmd::Logs { job, run } => {
            let job = find_job(s, &job).await?;
            let run_id = match run {
                Some(run) => run,
                None => job.last_run.map(|r| r.id).ok_or_else(|| {
                    CliError::usage(format!("job `{}` has not run yet", job.name))
                })?,
            };
            let logs = api
                .jobs()
                .get_job_run_logs(api.req(pb::GetJobRunLogsRequest { id: run_id }))
                .await?
                .into_inner();
            if s.out.structured() {
                return s.out.value(&serde_json::json!({
                    "runId": logs.run_id,
                    "lines": logs.lines,
                    "partial": logs.partial,
                }));
            }
            let mut text = logs.lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            write_out(&text)?;
            if logs.partial {
                eprintln!("(the run is still active: more output may follow)");
            }
            Ok(())
        }
        JobsCmd::Rm { job } => {
            let job = find_job(s, &job).await?;
            api.jobs()
                .delete_job(api.req(pb::DeleteJobRequest { id: job.id }))
                .await?;
            s.out
                .note(format!("Deleted job `{}` and its runs.", job.name))
        }
    }
}

async fn create(s: &mut Session, args: CreateJobArgs) -> Result<()> {
    let api = s.api().await?;
    let concurrency_policy = concurrency(&args.concurrency)?;
    let project_id = s.project_id().await?;
    let service_id = match &args.service {
        Some(service) => s.service_id(Some(service)).await?,
        None => String::new(),
    };
    let job = api
        .jobs()
        .create_job(api.req(pb::CreateJobRequest {
            project_id,
            name: args.name,
            schedule: args.schedule,
            timezone: args.timezone,
            image: args.image.unwrap_or_default(),
            command: args.command,
            args: Vec::new(),
            service_id,
            timeout_seconds: args.timeout,
            retries: args.retries,
            concurrency_policy: concurrency_policy.into(),
            starting_deadline_seconds: 0,
            disabled: args.disabled,
        }))
        .await?
        .into_inner();
    s.out.one(&job)?;
    if !job.schedule_description.is_empty() {
        s.out.note(format!("\n{}", job.schedule_description))?;
    }
    Ok(())
}
