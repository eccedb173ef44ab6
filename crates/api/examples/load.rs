//! Fixed-rate gRPC load generator for the api's authenticated reads
//! (`make bench-api`, crates/api/bench/run.sh).
//!
//! Against a running `ferry-api` it registers a user, logs in, creates an
//! organization and a project, then sends `GetOrganization` and
//! `GetProject` (one RPC per phase) at a FIXED rate over several HTTP/2
//! connections, with the session token as `authorization: Bearer`.
//!
//! Open loop: request `i` is due at `start + i / rate`, a scheduler thread
//! (`std::thread::sleep`, sub-millisecond precision) hands it to the
//! runtime when due whatever the earlier requests are doing, and its
//! latency is measured from that scheduled time, not from when it was
//! actually sent, so a stalled server is charged for the whole queue it
//! builds up (no coordinated omission).
//!
//! With `--pid` the api's CPU time (utime + stime of `/proc/<pid>/stat`,
//! every thread) is read before and after each measured phase and divided
//! by the requests answered in it.
//!
//! `cargo run --release -p ferry-api --example load -- --addr http://127.0.0.1:50051 --pid <api pid>`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ferry_proto::ferry::v1 as pb;
use pb::auth_service_client::AuthServiceClient;
use pb::organization_service_client::OrganizationServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::system_service_client::SystemServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
struct Args {
    /// The api's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Requests per second (all connections together).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds measured per RPC.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before each measured phase (not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// HTTP/2 connections, used round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The api's process id: its CPU time per request is reported.
    #[arg(long)]
    pid: Option<u32>,
    /// The database server's process id (the PostgreSQL postmaster): the
    /// CPU time of it and its children (the backends) per request is
    /// reported too.
    #[arg(long)]
    db_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Runtime threads of the generator itself.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Label of the result lines (the backend).
    #[arg(long, default_value = "api")]
    label: String,
    /// Which RPCs to drive, comma-separated: org (GetOrganization),
    /// project (GetProject), info (SystemService.GetServerInfo: no
    /// authentication and no database, the gRPC floor).
    #[arg(long, default_value = "org,project")]
    rpcs: String,
}

/// What every request needs.
#[derive(Clone)]
struct Target {
    token: MetadataValue<tonic::metadata::Ascii>,
    org_id: String,
    project_id: String,
}

#[derive(Clone, Copy, Debug)]
#[allow(clippy::enum_variant_names)] // named after the RPCs
enum Rpc {
    GetOrganization,
    GetProject,
    GetServerInfo,
}

/// Per-process CPU ticks (pid, ticks) before and after the measured phase.
type ProcessTicks = (Vec<(u32, u64)>, Vec<(u32, u64)>);

/// One worker-side outcome: latency from the scheduled time, and success.
type Samples = Arc<Mutex<Vec<(u32, bool)>>>;

fn main() {
    let args = Args::parse();
    // Few runtime threads: the generator shares the machine with the api,
    // and every cross-thread wake-up costs CPU.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    let (channels, target) = rt.block_on(setup(&args));
    let rpcs: Vec<Rpc> = args
        .rpcs
        .split(',')
        .map(|r| match r.trim() {
            "org" => Rpc::GetOrganization,
            "project" => Rpc::GetProject,
            "info" => Rpc::GetServerInfo,
            other => panic!("unknown rpc {other:?}: org, project or info"),
        })
        .collect();
    for rpc in rpcs {
        if args.warmup > 0 {
            run_phase(&rt, &channels, &target, rpc, args.rate, args.warmup);
        }
        let db_before = args.db_pid.map(tree_ticks);
        let api_before = args.pid.map(cpu_ticks);
        let self_before = cpu_ticks_of("/proc/self/stat");
        let started = Instant::now();
        let samples = run_phase(&rt, &channels, &target, rpc, args.rate, args.duration);
        let elapsed = started.elapsed().as_secs_f64();
        let api_after = args.pid.map(cpu_ticks);
        let db_after = args.db_pid.map(tree_ticks);
        let self_after = cpu_ticks_of("/proc/self/stat");
        report(
            &args,
            rpc,
            &samples,
            elapsed,
            api_before.zip(api_after),
            db_before.zip(db_after),
            (self_before, self_after),
        );
    }
}

async fn setup(args: &Args) -> (Vec<Channel>, Target) {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Endpoint::from_shared(args.addr.clone())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to the api");
        channels.push(channel);
    }
    let mut auth = AuthServiceClient::new(channels[0].clone());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let username = format!("bench-{}", &suffix[..12]);
    let password = "bench-password-123".to_owned();
    auth.register(pb::RegisterRequest {
        email: format!("{username}@bench.example.com"),
        username: username.clone(),
        password: password.clone(),
    })
    .await
    .expect("register");
    let login = auth
        .login(pb::LoginRequest {
            login: username,
            password,
            device_token: String::new(),
        })
        .await
        .expect("login")
        .into_inner();
    let token: MetadataValue<_> = format!("Bearer {}", login.token).parse().unwrap();
    let authed = |msg| {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", token.clone());
        r
    };
    let org = OrganizationServiceClient::new(channels[0].clone())
        .create_organization(authed(pb::CreateOrganizationRequest {
            name: format!("Bench {}", &suffix[..8]),
        }))
        .await
        .expect("create organization")
        .into_inner();
    let mut req = Request::new(pb::CreateProjectRequest {
        organization_id: org.id.clone(),
        name: "Bench project".into(),
        ..Default::default()
    });
    req.metadata_mut().insert("authorization", token.clone());
    let project = ProjectServiceClient::new(channels[0].clone())
        .create_project(req)
        .await
        .expect("create project")
        .into_inner();
    (
        channels,
        Target {
            token,
            org_id: org.id,
            project_id: project.id,
        },
    )
}

/// Sends `rate` requests per second for `secs` seconds; returns the samples.
fn run_phase(
    rt: &tokio::runtime::Runtime,
    channels: &[Channel],
    target: &Target,
    rpc: Rpc,
    rate: u32,
    secs: u64,
) -> Vec<(u32, bool)> {
    let total = u64::from(rate) * secs;
    let samples: Samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let interval = Duration::from_secs(1).as_nanos() as f64 / f64::from(rate);
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos((i as f64 * interval) as u64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let channel = channels[i as usize % channels.len()].clone();
        let target = target.clone();
        let samples = samples.clone();
        tasks.push(rt.spawn(async move {
            let ok = call(channel, &target, rpc).await;
            let micros = u32::try_from(due.elapsed().as_micros()).unwrap_or(u32::MAX);
            samples.lock().unwrap().push((micros, ok));
        }));
    }
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    Arc::try_unwrap(samples).unwrap().into_inner().unwrap()
}

async fn call(channel: Channel, target: &Target, rpc: Rpc) -> bool {
    match rpc {
        Rpc::GetOrganization => {
            let mut r = Request::new(pb::GetOrganizationRequest {
                id: target.org_id.clone(),
            });
            r.metadata_mut()
                .insert("authorization", target.token.clone());
            OrganizationServiceClient::new(channel)
                .get_organization(r)
                .await
                .is_ok()
        }
        Rpc::GetProject => {
            let mut r = Request::new(pb::GetProjectRequest {
                id: target.project_id.clone(),
            });
            r.metadata_mut()
                .insert("authorization", target.token.clone());
            ProjectServiceClient::new(channel)
                .get_project(r)
                .await
                .is_ok()
        }
        Rpc::GetServerInfo => SystemServiceClient::new(channel)
            .get_server_info(pb::GetServerInfoRequest {})
            .await
            .is_ok(),
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    cpu_ticks_of(&format!("/proc/{pid}/stat"))
}

/// CPU ticks of `pid` and its children, per child (a backend that
/// appears later counts from zero; one that exits in between is lost).
fn tree_ticks(pid: u32) -> Vec<(u32, u64)> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .filter_map(|p| {
            std::fs::metadata(format!("/proc/{p}/stat")).ok()?;
            Some((p, cpu_ticks(p)))
        })
        .collect()
}

fn tree_delta(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    after
        .iter()
        .map(|(p, t)| {
            let b = before.iter().find(|(q, _)| q == p).map_or(0, |(_, t)| *t);
            t.saturating_sub(b)
        })
        .sum()
}

/// utime + stime (fields 14 and 15) of a /proc stat file.
fn cpu_ticks_of(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).expect("read /proc stat");
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn report(
    args: &Args,
    rpc: Rpc,
    samples: &[(u32, bool)],
    elapsed: f64,
    api: Option<(u64, u64)>,
    db: Option<ProcessTicks>,
    own: (u64, u64),
) {
    let mut ok: Vec<u32> = samples.iter().filter(|s| s.1).map(|s| s.0).collect();
    let errors = samples.len() - ok.len();
    ok.sort_unstable();
    let pct = |p: f64| -> f64 {
        if ok.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * ok.len() as f64).ceil() as usize;
        f64::from(ok[i.clamp(1, ok.len()) - 1]) / 1000.0
    };
    let per_req = |(a, b): (u64, u64)| {
        (b - a) as f64 / args.clk_tck as f64 * 1e6 / samples.len().max(1) as f64
    };
    let api_cpu = api.map_or(f64::NAN, per_req);
    let db_cpu = db.map_or(f64::NAN, |(b, a)| per_req((0, tree_delta(&b, &a))));
    let api_cores = api.map_or(f64::NAN, |(a, b)| {
        (b - a) as f64 / args.clk_tck as f64 / elapsed
    });
    println!(
        "RESULT label={} rpc={:?} rate={} connections={} seconds={:.1} requests={} errors={} \
         achieved_rps={:.0} api_cpu_us={:.1} api_cores={:.2} db_cpu_us={:.1} loadgen_cpu_us={:.1} \
         p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        args.label,
        rpc,
        args.rate,
        args.connections,
        elapsed,
        samples.len(),
        errors,
        samples.len() as f64 / elapsed,
        api_cpu,
        api_cores,
        db_cpu,
        per_req(own),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        pct(100.0),
    );
}
