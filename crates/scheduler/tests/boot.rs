//! The `ferry-scheduler` binary, run as a process against real databases:
//! it needs the key, never migrates (it waits, `NOT_SERVING`, for the api to
//! do so, or fails clearly), answers health, reflection and `GetServerInfo`
//! over TCP, runs retention, and exits 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_common::testing::{
    ServiceProcess, ServingStatus, boot, free_addr, health_status, stop_cleanly, wait_until_serving,
};
use ferry_tests::{TestDb, test_key};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-scheduler");

#[tokio::test]
async fn scheduler_boots_on_each_migrated_backend_and_stops() {
    for db in ferry_tests::migrated_dbs().await {
        let addr = free_addr();
        let listen = addr.to_string();
        let (process, info) = boot(
            BIN,
            &[],
            &[
                ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
                ("DATABASE_URL", db.url.as_str()),
                ("ENCRYPTION_KEY", test_key()),
                ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
            ],
            addr,
            "ferry-scheduler",
        )
        .await;
        assert_eq!(info.database_backend, db.backend.to_string());
        // The first retention run starts right away.
        assert!(
            process
                .wait_for_stdout("retention cleanup finished", Duration::from_secs(20))
                .await,
            "{}: no retention run\n{}",
            db.backend,
            process.output()
        );
        stop_cleanly(process, Duration::from_secs(8)).await;
    }
}

#[tokio::test]
async fn scheduler_waits_not_serving_until_the_schema_exists() {
    let db = TestDb::sqlite().await;
    let addr = free_addr();
    let listen = addr.to_string();
    let mut process = ServiceProcess::spawn(
        BIN,
        &[],
        &[
            ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", test_key()),
            ("FERRY_SCHEDULER_SCHEMA_WAIT_SECS", "60"),
        ],
    );
    // Health answers, but NOT_SERVING, while the schema is missing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match health_status(addr, "").await {
            Ok(status) => {
                assert_eq!(status, ServingStatus::NotServing, "{}", process.output());
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no health answer: {err}\n{}", process.output()),
        }
    }
    assert!(
        process
            .wait_for_stdout("waiting for ferry-api", Duration::from_secs(10))
            .await,
        "{}",
        process.output()
    );
    // The scheduler itself never migrates.
    let pending = ferry_db::migrate::status(&db.conn).await.unwrap();
    assert!(pending.iter().all(|m| !m.applied));

    db.migrate().await;
    wait_until_serving(&mut process, addr, Duration::from_secs(20)).await;
    stop_cleanly(process, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn scheduler_fails_clearly_without_schema_or_key() {
    let db = TestDb::sqlite().await;
    let listen = free_addr().to_string();
    let mut process = ServiceProcess::spawn(
        BIN,
        &[],
        &[
            ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", test_key()),
            ("FERRY_SCHEDULER_SCHEMA_WAIT_SECS", "0"),
        ],
    );
    let status = process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert!(!status.success());
    let stderr = process.stderr();
    assert!(stderr.contains("not migrated"), "{stderr}");
    assert!(stderr.contains("ferry-api migrate up"), "{stderr}");

    let mut process = ServiceProcess::spawn(
        BIN,
        &[],
        &[
            ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
            ("DATABASE_URL", db.url.as_str()),
        ],
    );
    let status = process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert!(!status.success());
    assert!(
        process.stderr().contains("ENCRYPTION_KEY is not set"),
        "{}",
        process.output()
    );
}

#[tokio::test]
async fn scheduler_refuses_to_start_with_a_bad_dns01_setting() {
    let db = TestDb::sqlite().await;
    let listen = free_addr().to_string();
    let mut process = ServiceProcess::spawn(
        BIN,
        &[],
        &[
            ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
            ("DATABASE_URL", db.url.as_str()),
            ("ENCRYPTION_KEY", test_key()),
            ("FERRY_ACME_DIRECTORY", "https://127.0.0.1:1/dir"),
            ("FERRY_ACME_DNS_SERVER", "127.0.0.1:53"),
            ("FERRY_ACME_DNS_ZONE", "example.test"),
            ("FERRY_ACME_DNS_TSIG_NAME", "ferry"),
            ("FERRY_ACME_DNS_TSIG_SECRET", "not*base64*secret"),
        ],
    );
    let status = process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits instead of running without DNS-01");
    assert!(!status.success());
    let stderr = process.stderr();
    assert!(stderr.contains("--acme-dns-tsig-secret"), "{stderr}");
    assert!(!stderr.contains("not*base64*secret"), "{stderr}");
}
