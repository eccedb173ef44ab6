//! The `ferry-api` binary, run as a process against real databases:
//! it refuses to start without a key, migrates on start (SQLite and
//! PostgreSQL), answers health, reflection and `GetServerInfo` over TCP,
//! exits 0 on SIGTERM, and its `migrate`/`generate-key`/`rotate-key`
//! commands work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_common::testing::{ServiceProcess, boot, free_addr, stop_cleanly};
use ferry_db::sea_orm::{ConnectionTrait, Statement};
use ferry_tests::{TestDb, test_key, test_key_b};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-api");

/// Runs a `ferry-api` command to completion; returns (success, stdout, stderr).
async fn command(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut process = ServiceProcess::spawn(BIN, args, env);
    let status = process
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("ferry-api {args:?} did not finish\n{}", process.output()));
    (status.success(), process.stdout(), process.stderr())
}

async fn count_users(db: &TestDb) -> i64 {
    let backend = db.conn.get_database_backend();
    let row = db
        .conn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM users",
        ))
        .await
        .unwrap_or_else(|e| panic!("{}: users table missing after start: {e}", db.backend))
        .expect("one row");
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::test]
async fn api_migrates_on_start_serves_and_stops_on_each_backend() {
    for db in ferry_tests::test_dbs().await {
        let addr = free_addr();
        let listen = addr.to_string();
        let (process, info) = boot(
            BIN,
            &[],
            &[
                ("FERRY_API_LISTEN", listen.as_str()),
                // Parallel tests must not share the default webhook port.
                ("FERRY_API_HTTP_LISTEN", "127.0.0.1:0"),
                ("DATABASE_URL", db.url.as_str()),
                ("ENCRYPTION_KEY", test_key()),
                ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
            ],
            addr,
            "ferry-api",
        )
        .await;
        assert_eq!(info.database_backend, db.backend.to_string());
        assert!(!info.kubernetes_configured, "{}", db.backend);
        assert_eq!(count_users(&db).await, 0, "{}", db.backend);

        let output = stop_cleanly(process, Duration::from_secs(8)).await;
        assert!(
            output.contains("no Kubernetes cluster configured"),
            "{}: {output}",
            db.backend
        );
        assert!(
            !output.contains(test_key()),
            "{}: key leaked into logs",
            db.backend
        );
    }
}

#[tokio::test]
async fn api_refuses_to_start_without_a_valid_key() {
    let db = TestDb::sqlite().await;
    let listen = free_addr().to_string();
    let base = [
        ("FERRY_API_LISTEN", listen.as_str()),
        // Parallel tests must not share the default webhook port.
        ("FERRY_API_HTTP_LISTEN", "127.0.0.1:0"),
        ("DATABASE_URL", db.url.as_str()),
    ];

    let (ok, _, stderr) = command(&[], &base).await;
    assert!(!ok, "started without ENCRYPTION_KEY");
    assert!(stderr.contains("ENCRYPTION_KEY is not set"), "{stderr}");
    assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");

    let bad = "not-a-32-byte-key-but-a-secret";
    let mut env = base.to_vec();
    env.push(("ENCRYPTION_KEY", bad));
    let (ok, stdout, stderr) = command(&[], &env).await;
    assert!(!ok, "started with a malformed key");
    assert!(stderr.contains("ENCRYPTION_KEY"), "{stderr}");
    assert!(
        !stderr.contains(bad) && !stdout.contains(bad),
        "the key was echoed"
    );
}

#[tokio::test]
async fn migrate_commands_on_each_backend() {
    for db in ferry_tests::test_dbs().await {
        let env = [("DATABASE_URL", db.url.as_str())];
        let names: Vec<String> = ferry_db::migrate::status(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(!names.is_empty());

        let (ok, stdout, stderr) = command(&["migrate", "status"], &env).await;
        assert!(ok, "{}: {stderr}", db.backend);
        for name in &names {
            assert!(
                stdout.contains(&format!("pending  {name}")),
                "{}: {stdout}",
                db.backend
            );
        }
        assert!(
            stdout.contains(&format!("0 of {} migrations applied", names.len())),
            "{stdout}"
        );

        let (ok, stdout, stderr) = command(&["migrate", "up"], &env).await;
        assert!(
            ok && stdout.contains("migrations applied"),
            "{}: {stdout}{stderr}",
            db.backend
        );
        assert_eq!(count_users(&db).await, 0);

        let (ok, stdout, _) = command(&["migrate", "status"], &env).await;
        assert!(ok);
        for name in &names {
            assert!(
                stdout.contains(&format!("applied  {name}")),
                "{}: {stdout}",
                db.backend
            );
        }

        let (ok, stdout, stderr) = command(&["migrate", "down", "--all"], &env).await;
        assert!(
            ok && stdout.contains("rolled back"),
            "{}: {stdout}{stderr}",
            db.backend
        );
        let (_, stdout, _) = command(&["migrate", "status"], &env).await;
        assert!(
            stdout.contains(&format!("0 of {} migrations applied", names.len())),
            "{stdout}"
        );

        let (ok, stdout, stderr) = command(&["migrate", "fresh"], &env).await;
        assert!(
            ok && stdout.contains("database recreated"),
            "{}: {stdout}{stderr}",
            db.backend
        );
        assert_eq!(count_users(&db).await, 0);
    }
}

#[tokio::test]
async fn generate_key_and_rotate_key_commands() {
    let (ok, stdout, _) = command(&["generate-key"], &[]).await;
    assert!(ok);
    let key = stdout.trim();
    assert_eq!(key.len(), 64, "{stdout}");
    ferry_db::crypto::Keyring::new(key, &[]).unwrap();

    let db = TestDb::sqlite().await;
    db.migrate().await;
    let rotated = ferry_db::crypto::Keyring::new(test_key_b(), &[]).unwrap();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("ENCRYPTION_KEY", test_key_b()),
        ("ENCRYPTION_KEY_PREVIOUS", test_key()),
    ];
    let (ok, stdout, stderr) = command(&["rotate-key"], &env).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "re-encrypted 0 values under key {}",
            rotated.current_key_id()
        )),
        "{stdout}"
    );
    for column in ferry_db::encrypted_columns::ENCRYPTED_COLUMNS {
        assert!(
            stdout.contains(&format!("{}.{}", column.table, column.column)),
            "{stdout}"
        );
    }

    let (ok, _, stderr) = command(&["rotate-key"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert!(!ok && stderr.contains("ENCRYPTION_KEY"), "{stderr}");
}
