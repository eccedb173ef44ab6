//! Encrypted columns on PostgreSQL and SQLite: what is stored, column and row
//! binding, key rotation, and the upgrade of legacy v1 values over the real schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_db::crypto::{Encrypted, Keyring};
use ferry_db::encrypted_columns::ENCRYPTED_COLUMNS;
use ferry_db::entities::enums::{GitAuthType, GitProvider, RegistryProvider, SmtpTlsMode};
use ferry_db::entities::{
    git_integrations, org_email_configs, organizations, registry_integrations, service_env_vars,
};
use ferry_db::{Error, rotate};
use ferry_tests::{TestDb, test_key, test_key_b};
use sea_orm::prelude::Uuid;
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Query};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, Set, Statement};

/// More rows than one rotation batch, so batching is exercised.
const REGISTRIES: usize = 230;

async fn org_row(conn: &DatabaseConnection, slug: &str) -> Uuid {
    let id = Uuid::now_v7();
    organizations::ActiveModel {
        id: Set(id),
        name: Set(format!("Org {slug}")),
        slug: Set(slug.to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await
    .unwrap();
    id
}

fn git(org: Uuid, name: &str) -> git_integrations::ActiveModel {
    git_integrations::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        name: Set(name.to_owned()),
        provider: Set(GitProvider::Github),
        auth_type: Set(GitAuthType::Token),
        // Required; the tests that read it write a real value.
        webhook_secret: Set(Encrypted("v2:unset:AAAA".to_owned())),
        ..Default::default()
    }
}

fn registry(
    org: Uuid,
    name: &str,
    password: Option<Encrypted>,
) -> registry_integrations::ActiveModel {
    registry_integrations::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        name: Set(name.to_owned()),
        provider: Set(RegistryProvider::Generic),
        url: Set("https://registry.example.com".to_owned()),
        username: Set(Some("robot".to_owned())),
        password: Set(password),
        ..Default::default()
    }
}

/// Every non-null stored value of `table.column`, read with plain SQL.
async fn raw_values(conn: &DatabaseConnection, table: &str, column: &str) -> Vec<String> {
    let backend = conn.get_database_backend();
    conn.query_all_raw(Statement::from_string(
        backend,
        format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL"),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get_by_index::<String>(0).unwrap())
    .collect()
}

#[tokio::test]
async fn stored_value_is_ciphertext_bound_to_its_column() {
    let keys = ferry_tests::test_keyring();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = &db.conn;
        let org = org_row(conn, "acme").await;
        let token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        let mut row = git(org, "github");
        let id = row.id.clone().unwrap();
        row.access_token = Set(Some(
            keys.encrypt("git_integrations", "access_token", id, token)
                .unwrap(),
        ));
        row.webhook_secret = Set(keys
            .encrypt("git_integrations", "webhook_secret", id, "cs-123")
            .unwrap());
        let row = row.insert(conn).await.unwrap();

        let stored = raw_values(conn, "git_integrations", "access_token").await;
        assert_eq!(stored.len(), 1, "{b}");
        assert!(!stored[0].contains(token), "{b}: plaintext stored");
        assert!(!stored[0].contains("ghp_"), "{b}: plaintext prefix stored");
        assert!(
            stored[0].starts_with(&format!("v2:{}:", keys.current_key_id())),
            "{b}"
        );

        let read = git_integrations::Entity::find_by_id(row.id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        let access = read.access_token.clone().unwrap();
        assert_eq!(access.0, stored[0], "{b}: entity reads the stored form");
        assert_eq!(
            keys.decrypt("git_integrations", "access_token", id, &access)
                .unwrap()
                .expose(),
            token,
            "{b}"
        );

        // Moving the ciphertext to another column (same table, then another table) breaks it.
        conn.execute_unprepared("UPDATE git_integrations SET webhook_secret = access_token")
            .await
            .unwrap();
        let moved = git_integrations::Entity::find_by_id(row.id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        let moved = moved.webhook_secret;
        assert_eq!(moved, access, "{b}: the copy is byte-identical");
        let err = keys
            .decrypt("git_integrations", "webhook_secret", id, &moved)
            .unwrap_err();
        match &err {
            Error::Decrypt { table, column, .. } => {
                assert_eq!(
                    (table.as_str(), column.as_str()),
                    ("git_integrations", "webhook_secret")
                );
            }
            other => panic!("{b}: expected a decrypt error, got {other}"),
        }
        assert!(
            !err.to_string().contains(token),
            "{b}: error leaks the secret"
        );
        let copied = registry(org, "copied", Some(access.clone()))
            .insert(conn)
            .await
            .unwrap();
        assert!(
            keys.decrypt("registry_integrations", "password", copied.id, &access)
                .is_err(),
            "{b}: a value moved to another table must not decrypt"
        );
        // Another tenant's row of the same column: the row id is bound too.
        let other_org = org_row(conn, "other").await;
        let mut theirs = git(other_org, "github");
        theirs.access_token = Set(Some(access.clone()));
        let theirs = theirs.insert(conn).await.unwrap();
        let err = keys
            .decrypt("git_integrations", "access_token", theirs.id, &access)
            .unwrap_err();
        assert!(matches!(err, Error::Decrypt { .. }), "{b}: {err}");
        assert!(
            !err.to_string().contains(token),
            "{b}: error leaks the secret"
        );
        // A different key cannot read it either.
        let other = Keyring::new(test_key_b(), &[]).unwrap();
        assert!(
            other
                .decrypt("git_integrations", "access_token", id, &access)
                .is_err(),
            "{b}"
        );
    }
}

#[tokio::test]
async fn rotation_reencrypts_every_column_and_old_values_read_until_then() {
    let key_a = Keyring::new(test_key(), &[]).unwrap();
    let b_only = Keyring::new(test_key_b(), &[]).unwrap();
    let b_with_a = Keyring::new(test_key_b(), &[test_key()]).unwrap();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = &db.conn;
        let (expected, ids) = write_under_key_a(&db, &key_a).await;

        // Before rotation: old-key values read with (B, previous A), not with B alone.
        let values = read_all(conn, &ids).await;
        assert_eq!(values.len(), expected.len(), "{b}");
        for (table, column, i, row, value) in values {
            let expect = &expected[&(table, column, i)];
            assert_eq!(
                b_with_a
                    .decrypt(table, column, row, &value)
                    .unwrap()
                    .expose(),
                expect,
                "{b}"
            );
            assert!(b_only.decrypt(table, column, row, &value).is_err(), "{b}");
            assert!(b_with_a.needs_rotation(&value), "{b}");
        }

        let before: Vec<String> = raw_values(conn, "registry_integrations", "password").await;
        let report = rotate::reencrypt_all(conn, &b_with_a).await.unwrap();
        assert_eq!(
            report.columns.len(),
            ENCRYPTED_COLUMNS.len(),
            "{b}: every column visited"
        );
        assert_eq!(
            report.updated("registry_integrations", "password"),
            REGISTRIES as u64,
            "{b}"
        );
        assert_eq!(report.updated("git_integrations", "access_token"), 2, "{b}");
        assert_eq!(
            report.updated("git_integrations", "webhook_secret"),
            2,
            "{b}"
        );
        assert_eq!(
            report.updated("git_integrations", "ssh_private_key"),
            1,
            "{b}"
        );
        assert_eq!(
            report.total_updated(),
            REGISTRIES as u64 + 5,
            "{b}: {report:?}"
        );

        let after = raw_values(conn, "registry_integrations", "password").await;
        assert_eq!(after.len(), before.len(), "{b}");
        assert!(
            after.iter().all(|v| !before.contains(v)),
            "{b}: every value rewritten"
        );

        // After rotation the new key alone reads everything, with the same plaintexts.
        for (table, column, i, row, value) in read_all(conn, &ids).await {
            let expect = &expected[&(table, column, i)];
            assert_eq!(
                b_only.decrypt(table, column, row, &value).unwrap().expose(),
                expect,
                "{b}"
            );
            assert!(!b_only.needs_rotation(&value), "{b}");
        }
        for col in ENCRYPTED_COLUMNS {
            for v in raw_values(conn, col.table, col.column).await {
                assert!(
                    v.starts_with(&format!("v2:{}:", b_only.current_key_id())),
                    "{b}: {}.{}",
                    col.table,
                    col.column
                );
            }
        }
        // NULLs stay NULL.
        let nulls = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT COUNT(*) FROM git_integrations WHERE ssh_private_key IS NULL",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        assert_eq!(nulls, 1, "{b}");

        let again = rotate::reencrypt_all(conn, &b_only).await.unwrap();
        assert_eq!(again.total_updated(), 0, "{b}: second rotation is a no-op");

        // A value under an unknown key makes rotation fail loudly instead of skipping it.
        let stray = Keyring::new(&Keyring::generate_key_hex(), &[]).unwrap();
        let org = org_row(conn, "stray").await;
        let mut row = registry(org, "stray", None);
        let id = row.id.clone().unwrap();
        row.password = Set(Some(
            stray
                .encrypt("registry_integrations", "password", id, "x")
                .unwrap(),
        ));
        row.insert(conn).await.unwrap();
        let err = rotate::reencrypt_all(conn, &b_only).await.unwrap_err();
        assert!(matches!(err, Error::Decrypt { .. }), "{b}: {err}");
    }
}

/// Row ids written by [`write_under_key_a`], used to tell rows apart.
struct Ids {
    git: Vec<Uuid>,
    registries: Vec<Uuid>,
}

type Expected = std::collections::HashMap<(&'static str, &'static str, usize), String>;

/// Writes encrypted values under key A: 2 git integrations (access token and
/// client secret each, one webhook secret) and many registries.
async fn write_under_key_a(db: &TestDb, key_a: &Keyring) -> (Expected, Ids) {
    let conn = &db.conn;
    let org = org_row(conn, "rotation").await;
    let mut expected = Expected::new();
    let mut ids = Ids {
        git: Vec::new(),
        registries: Vec::new(),
    };
    for i in 0..2 {
        let mut row = git(org, &format!("git-{i}"));
        let id = row.id.clone().unwrap();
        let token = format!("token-{i}");
        let secret = format!("secret-{i}");
        row.access_token = Set(Some(
            key_a
                .encrypt("git_integrations", "access_token", id, &token)
                .unwrap(),
        ));
        row.webhook_secret = Set(key_a
            .encrypt("git_integrations", "webhook_secret", id, &secret)
            .unwrap());
        expected.insert(("git_integrations", "access_token", i), token);
        expected.insert(("git_integrations", "webhook_secret", i), secret);
        if i == 0 {
            row.ssh_private_key = Set(Some(
                key_a
                    .encrypt("git_integrations", "ssh_private_key", id, "ssh-key-0")
                    .unwrap(),
            ));
            expected.insert(
                ("git_integrations", "ssh_private_key", 0),
                "ssh-key-0".to_owned(),
            );
        }
        ids.git.push(row.insert(conn).await.unwrap().id);
    }
    for i in 0..REGISTRIES {
        let pw = format!("registry-password-{i}");
        let mut row = registry(org, &format!("reg-{i:03}"), None);
        let id = row.id.clone().unwrap();
        row.password = Set(Some(
            key_a
                .encrypt("registry_integrations", "password", id, &pw)
                .unwrap(),
        ));
        let row = row.insert(conn).await.unwrap();
        expected.insert(("registry_integrations", "password", i), pw);
        ids.registries.push(row.id);
    }
    (expected, ids)
}

/// Every encrypted value written by [`write_under_key_a`], read through the entities,
/// tagged with the index of its row.
async fn read_all(
    conn: &DatabaseConnection,
    ids: &Ids,
) -> Vec<(&'static str, &'static str, usize, Uuid, Encrypted)> {
    let mut out = Vec::new();
    for (i, id) in ids.git.iter().enumerate() {
        let row = git_integrations::Entity::find_by_id(*id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        out.push((
            "git_integrations",
            "access_token",
            i,
            row.id,
            row.access_token.unwrap(),
        ));
        out.push((
            "git_integrations",
            "webhook_secret",
            i,
            row.id,
            row.webhook_secret,
        ));
        if let Some(w) = row.ssh_private_key {
            out.push(("git_integrations", "ssh_private_key", i, row.id, w));
        }
    }
    for (i, id) in ids.registries.iter().enumerate() {
        let row = registry_integrations::Entity::find_by_id(*id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        out.push((
            "registry_integrations",
            "password",
            i,
            row.id,
            row.password.unwrap(),
        ));
    }
    out
}

/// The stored text of `table.column` in row `id`.
async fn stored(conn: &DatabaseConnection, table: &str, column: &str, id: Uuid) -> String {
    let select = Query::select()
        .column(Alias::new(column))
        .from(Alias::new(table))
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    conn.query_one(&select)
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

/// One value written for the upgrade test: where, and what it must decrypt to.
struct Written {
    table: &'static str,
    column: &'static str,
    row: Uuid,
    plain: String,
}

/// Legacy v1 values (as Ferry wrote them before row binding) in several
/// encrypted columns, more registries than one batch.
async fn write_legacy(
    conn: &DatabaseConnection,
    tag: &str,
    registries: usize,
) -> (Uuid, Vec<Written>) {
    let v1 = |table, column, plain: &str| ferry_tests::legacy_v1(test_key(), table, column, plain);
    let org = org_row(conn, &format!("legacy-{tag}")).await;
    let mut out = Vec::new();
    let mut row = git(org, &format!("git-{tag}"));
    let id = row.id.clone().unwrap();
    for (column, plain) in [("access_token", "tok"), ("webhook_secret", "cs")] {
        let plain = format!("{plain}-{tag}");
        let value = v1("git_integrations", column, &plain);
        match column {
            "access_token" => row.access_token = Set(Some(value)),
            _ => row.webhook_secret = Set(value),
        }
        out.push(Written {
            table: "git_integrations",
            column,
            row: id,
            plain,
        });
    }
    row.insert(conn).await.unwrap();
    for i in 0..registries {
        let plain = format!("pw-{tag}-{i}");
        let row = registry(
            org,
            &format!("reg-{tag}-{i:03}"),
            Some(v1("registry_integrations", "password", &plain)),
        )
        .insert(conn)
        .await
        .unwrap();
        out.push(Written {
            table: "registry_integrations",
            column: "password",
            row: row.id,
            plain,
        });
    }
    let project =
        ferry_tests::fixtures::project(conn, org, &format!("P {tag}"), &format!("p-{tag}")).await;
    let service = ferry_tests::fixtures::service(conn, project, "web", 8080).await;
    let now = chrono_now();
    let plain = format!("env-{tag}");
    let env = service_env_vars::ActiveModel {
        id: Set(Uuid::now_v7()),
        service_id: Set(service),
        key: Set("SECRET".into()),
        value: Set(None),
        value_encrypted: Set(Some(v1("service_env_vars", "value_encrypted", &plain))),
        is_secret: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await
    .unwrap();
    out.push(Written {
        table: "service_env_vars",
        column: "value_encrypted",
        row: env.id,
        plain,
    });
    let plain = format!("smtp-{tag}");
    let mail = org_email_configs::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        smtp_host: Set("smtp.example.com".into()),
        smtp_port: Set(587),
        username: Set(Some("mailer".into())),
        password: Set(Some(v1("org_email_configs", "password", &plain))),
        from_address: Set("ferry@example.com".into()),
        from_name: Set(None),
        tls_mode: Set(SmtpTlsMode::Starttls),
        enabled: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await
    .unwrap();
    out.push(Written {
        table: "org_email_configs",
        column: "password",
        row: mail.id,
        plain,
    });
    (org, out)
}

fn chrono_now() -> sea_orm::prelude::DateTimeUtc {
    sea_orm::prelude::DateTimeUtc::from(std::time::SystemTime::now())
}

#[tokio::test]
async fn legacy_values_are_bound_to_their_rows_once() {
    let keys = ferry_tests::test_keyring();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = &db.conn;
        let (org, legacy) = write_legacy(conn, "a", REGISTRIES).await;
        // Already row-bound: left alone.
        let mut fresh = registry(org, "fresh", None);
        let fresh_id = fresh.id.clone().unwrap();
        fresh.password = Set(Some(
            keys.encrypt("registry_integrations", "password", fresh_id, "new")
                .unwrap(),
        ));
        fresh.insert(conn).await.unwrap();
        let fresh_before = stored(conn, "registry_integrations", "password", fresh_id).await;
        // A v1 value under a key nobody configured: skipped, not fatal.
        let lost = ferry_tests::legacy_v1(
            &Keyring::generate_key_hex(),
            "git_integrations",
            "ssh_private_key",
            "lost",
        );
        let mut stray = git(org, "stray");
        stray.access_token = Set(Some(Encrypted("v2:unset:AAAA".to_owned())));
        stray.ssh_private_key = Set(Some(lost.clone()));
        let stray = stray.insert(conn).await.unwrap();

        for w in &legacy {
            let v = Encrypted(stored(conn, w.table, w.column, w.row).await);
            assert!(v.0.starts_with("v1:"), "{b}: {}.{}", w.table, w.column);
            let err = keys.decrypt(w.table, w.column, w.row, &v).unwrap_err();
            assert!(err.to_string().contains("legacy v1"), "{b}: {err}");
        }
        let n = legacy.len() as u64;
        assert_eq!(rotate::unbound_count(conn).await.unwrap(), n + 1, "{b}");

        let report = rotate::bind_rows(conn, &keys).await.unwrap();
        assert_eq!(report.columns.len(), ENCRYPTED_COLUMNS.len(), "{b}");
        assert_eq!(report.total_updated(), n, "{b}: {report:?}");
        assert_eq!(report.total_skipped(), 1, "{b}: the stray value");
        assert_eq!(
            report.updated("registry_integrations", "password"),
            REGISTRIES as u64,
            "{b}: every batch"
        );
        assert_eq!(rotate::unbound_count(conn).await.unwrap(), 1, "{b}");

        for w in &legacy {
            let v = Encrypted(stored(conn, w.table, w.column, w.row).await);
            assert!(
                v.0.starts_with(&keys.current_prefix()),
                "{b}: {}.{} upgraded",
                w.table,
                w.column
            );
            assert_eq!(
                keys.decrypt(w.table, w.column, w.row, &v).unwrap().expose(),
                w.plain,
                "{b}: {}.{}",
                w.table,
                w.column
            );
            assert!(
                keys.decrypt(w.table, w.column, Uuid::now_v7(), &v).is_err(),
                "{b}: bound to its row"
            );
        }
        assert_eq!(
            stored(conn, "registry_integrations", "password", fresh_id).await,
            fresh_before,
            "{b}: a v2 value is not rewritten"
        );
        assert_eq!(
            stored(conn, "git_integrations", "ssh_private_key", stray.id).await,
            lost.0,
            "{b}: an unreadable value is left as it was"
        );

        let again = rotate::bind_rows(conn, &keys).await.unwrap();
        assert_eq!(
            again.total_updated(),
            0,
            "{b}: the second run updates nothing"
        );

        // Replicas starting together: the work is done once (PostgreSQL: under the lock).
        let (_, more) = write_legacy(conn, "b", 30).await;
        let other = db.connect_again().await;
        let (one, two) = tokio::join!(
            rotate::bind_rows(conn, &keys),
            rotate::bind_rows(&other, &keys)
        );
        assert_eq!(
            one.unwrap().total_updated() + two.unwrap().total_updated(),
            more.len() as u64,
            "{b}"
        );
        assert_eq!(rotate::unbound_count(conn).await.unwrap(), 1, "{b}");

        // Rotation upgrades legacy values too (it walks every value not v2 under the current key).
        let rotated_keys = Keyring::new(test_key_b(), &[test_key()]).unwrap();
        conn.execute_unprepared("DELETE FROM git_integrations WHERE ssh_private_key IS NOT NULL")
            .await
            .unwrap();
        let (_, last) = write_legacy(conn, "c", 1).await;
        rotate::reencrypt_all(conn, &rotated_keys).await.unwrap();
        assert_eq!(rotate::unbound_count(conn).await.unwrap(), 0, "{b}");
        for w in legacy.iter().chain(&more).chain(&last) {
            let v = Encrypted(stored(conn, w.table, w.column, w.row).await);
            assert_eq!(
                rotated_keys
                    .decrypt(w.table, w.column, w.row, &v)
                    .unwrap()
                    .expose(),
                w.plain,
                "{b}"
            );
        }
    }
}
