//! How long a route change takes to apply with many routes: every feed
//! update copies the current snapshot and compiles a new table (reusing the
//! entries of unchanged routes).
//! Not a test. `cargo run --profile bench-release -p ferry-proxy --example
//! compile_cost -- [ROUTES] [CHANGES]` (defaults 10,000 and 50).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use ferry_proxy::config::{Balance, Route, Snapshot, Target};
use ferry_proxy::metrics::Metrics;
use ferry_proxy::table::Table;

fn route(i: usize, port: u16) -> Route {
    Route {
        id: format!("r{i}"),
        hosts: vec![format!("h{i}.bench")],
        targets: vec![Target {
            path_prefix: "/".into(),
            strip_prefix: false,
            upstreams: vec![format!("web-{}.shop.svc.cluster.local:{port}", i % 500)],
            weights: Vec::new(),
            balance: Balance::RoundRobin,
            protocol: Default::default(),
        }],
        redirect_https: false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let routes: usize = args.next().map_or(10_000, |a| a.parse().expect("ROUTES"));
    let changes: usize = args.next().map_or(50, |a| a.parse().expect("CHANGES"));
    let metrics = Metrics::default();
    let snapshot = Snapshot {
        version: 1,
        routes: (0..routes).map(|i| route(i, 8080)).collect(),
        ..Snapshot::default()
    };
    let started = Instant::now();
    let mut table = Table::compile(snapshot, None, &metrics).unwrap();
    println!("first snapshot, {routes} routes: {:?}", started.elapsed());

    // What the feed client does per update: copy the snapshot in use,
    // change one route, compile the whole thing (unchanged routes reuse
    // their entries), swap it in; the old table is freed afterwards.
    let (mut copy, mut compile, mut free) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..changes {
        let t0 = Instant::now();
        let mut next = (**table.snapshot()).clone();
        let t1 = Instant::now();
        next.version += 1;
        next.routes[n % routes] = route(n % routes, 9000 + (n % 100) as u16);
        let compiled = Table::compile(next, Some(&table), &metrics).unwrap();
        let t2 = Instant::now();
        drop(std::mem::replace(&mut table, compiled));
        let t3 = Instant::now();
        copy.push(t1 - t0);
        compile.push(t2 - t1);
        free.push(t3 - t2);
    }
    for (what, mut took) in [
        ("copy the snapshot", copy),
        ("compile (then the new table is live)", compile),
        ("free the old table", free),
    ] {
        took.sort();
        println!(
            "one route changed, {changes} times, {what}: p50 {:?}, p99 {:?}",
            percentile(&took, 0.5),
            percentile(&took, 0.99)
        );
    }
}
