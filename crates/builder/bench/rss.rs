//! Memory of the builder, idle and with 50 RunBuild streams in flight
//! against the in-memory cluster. A measurement, not a test:
//!
//! ```text
//! cargo test -p ferry-builder --test bench_rss -- --ignored --nocapture
//! ```
//!
//! Everything runs in this one process (the builder, the fake API server
//! and the 50 gRPC clients), so the numbers are an upper bound for the
//! builder itself; the process's RSS before the builder starts is printed
//! as the baseline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry_k8s::fake::{FakeCluster, FakeContainerState};
use ferry_proto::ferry::internal::v1 as pb;
use pb::build_event::Event;

const STREAMS: usize = 50;
const LINES_PER_BUILD: usize = 200;

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn rss_idle_and_with_50_streams() {
    let baseline = rss_kib();
    let fake = FakeCluster::new();
    let builder = builder(Some(&fake)).await;
    // One call through every layer, so lazily built state is counted idle.
    let cancel = pb::CancelBuildRequest {
        build_id: build_id(999).to_string(),
    };
    builder
        .client()
        .cancel_build(builder.request(cancel))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_kib();

    let started = Instant::now();
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let mut req = request("https://git.example.com/acme/shop.git", build_id(i as u128));
        // An exact commit and an explicit type: no git work, only the Job.
        req.commit_sha = "0123456789abcdef0123456789abcdef01234567".into();
        req.build_type = "dockerfile".into();
        streams.push(tokio::spawn({
            let client = builder.client();
            let req = builder.request(req);
            async move {
                let mut client = client;
                client.run_build(req).await.unwrap().into_inner()
            }
        }));
    }
    let mut open = Vec::new();
    for stream in streams {
        let mut stream = stream.await.unwrap();
        let job = resolved(next(&mut stream).await).job_name;
        open.push((stream, job));
    }
    for (stream, job) in &mut open {
        until(
            stream,
            |e| matches!(e, Event::Progress(p) if p.step == "queued"),
        )
        .await;
        let pod = Pod {
            fake: &fake,
            name: pod_of(&fake, job).await,
        };
        pod.set("clone-init", FakeContainerState::Running);
        for n in 0..LINES_PER_BUILD {
            pod.log(
                "clone-init",
                &format!("{job}: fetching object {n} of {LINES_PER_BUILD}"),
            );
        }
    }
    let mut lines = 0;
    for (stream, _) in &mut open {
        while lines < LINES_PER_BUILD * STREAMS {
            if let Event::Logs(l) = next(stream).await {
                lines += l.lines.len();
                if l.lines.last().is_some_and(|l| {
                    l.line
                        .ends_with(&format!("{} of {LINES_PER_BUILD}", LINES_PER_BUILD - 1))
                }) {
                    break;
                }
            }
        }
    }
    let busy = rss_kib();
    let open_watches = fake.open_watches();
    let open_logs = fake.open_log_streams();
    println!(
        "ferry-builder RSS (KiB): baseline {baseline}, idle {idle}, with {STREAMS} streams {busy} \
         (+{} over idle, ~{} per stream); {lines} log lines relayed in {:.2}s; \
         {open_watches} watches and {open_logs} log streams open",
        busy.saturating_sub(idle),
        busy.saturating_sub(idle) / STREAMS as u64,
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(lines, LINES_PER_BUILD * STREAMS);
    // The clients go away: the builder lets go of every watch and stream
    // (the fake keeps its Jobs and logs).
    drop(open);
    eventually("watches closed", || fake.open_watches() == 0).await;
    eventually("log streams closed", || fake.open_log_streams() == 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "after the clients went away: {} KiB (allocator pages are not all returned)",
        rss_kib()
    );
    builder.stop().await.unwrap();
}
