//! The `ferry-builder` binary boots, answers health, reflection and
//! `GetServerInfo` over TCP, and exits 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_common::testing::{boot, free_addr, stop_cleanly};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-builder");

#[tokio::test]
async fn builder_boots_and_stops_on_sigterm() {
    let addr = free_addr();
    let listen = addr.to_string();
    let (process, info) = boot(
        BIN,
        &[],
        &[
            ("FERRY_BUILDER_LISTEN", listen.as_str()),
            ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
        ],
        addr,
        "ferry-builder",
    )
    .await;
    assert_eq!(info.database_backend, "", "the builder has no database");
    assert!(!info.kubernetes_configured);
    let output = stop_cleanly(process, Duration::from_secs(8)).await;
    assert!(output.contains("shutdown requested"), "{output}");
    assert!(output.contains("gRPC server stopped"), "{output}");
}

#[tokio::test]
async fn builder_reports_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let mut process =
        ferry_common::testing::ServiceProcess::spawn(BIN, &["--listen", listen.as_str()], &[]);
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(!status.success());
    assert!(
        process
            .stderr()
            .contains(&format!("could not listen on {listen}")),
        "{}",
        process.output()
    );
}
