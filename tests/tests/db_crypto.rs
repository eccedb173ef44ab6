//! Encrypted columns on PostgreSQL and SQLite: what is stored, column binding,
//! and key rotation over the real schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_db::crypto::{Encrypted, Keyring};
use ferry_db::encrypted_columns::ENCRYPTED_COLUMNS;
use ferry_db::entities::enums::{GitAuthType, GitProvider, RegistryProvider};
use ferry_db::entities::{git_integrations, organizations, registry_integrations};
use ferry_db::{Error, rotate};
use ferry_tests::{TestDb, test_key, test_key_b};
use sea_orm::prelude::Uuid;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, Set, Statement};

/// More rows than one rotation batch, so batching is exercised.
const REGISTRIES: usize = 230;

async fn org(conn: &DatabaseConnection, slug: &str) -> Uuid {
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
        let org = org(conn, "acme").await;
        let token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        let mut row = git(org, "github");
        row.access_token = Set(Some(
            keys.encrypt("git_integrations", "access_token", token)
                .unwrap(),
        ));
        row.client_secret = Set(Some(
            keys.encrypt("git_integrations", "client_secret", "cs-123")
                .unwrap(),
        ));
        let row = row.insert(conn).await.unwrap();

        let stored = raw_values(conn, "git_integrations", "access_token").await;
        assert_eq!(stored.len(), 1, "{b}");
        assert!(!stored[0].contains(token), "{b}: plaintext stored");
        assert!(!stored[0].contains("ghp_"), "{b}: plaintext prefix stored");
        assert!(
            stored[0].starts_with(&format!("v1:{}:", keys.current_key_id())),
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
            keys.decrypt("git_integrations", "access_token", &access)
                .unwrap()
                .expose(),
            token,
            "{b}"
        );

        // Moving the ciphertext to another column (same table, then another table) breaks it.
        conn.execute_unprepared("UPDATE git_integrations SET client_secret = access_token")
            .await
            .unwrap();
        let moved = git_integrations::Entity::find_by_id(row.id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        let moved = moved.client_secret.unwrap();
        assert_eq!(moved, access, "{b}: the copy is byte-identical");
        let err = keys
            .decrypt("git_integrations", "client_secret", &moved)
            .unwrap_err();
        match &err {
            Error::Decrypt { table, column, .. } => {
                assert_eq!(
                    (table.as_str(), column.as_str()),
                    ("git_integrations", "client_secret")
                );
            }
            other => panic!("{b}: expected a decrypt error, got {other}"),
        }
        assert!(
            !err.to_string().contains(token),
            "{b}: error leaks the secret"
        );
        registry(org, "copied", Some(access.clone()))
            .insert(conn)
            .await
            .unwrap();
        let copied = raw_values(conn, "registry_integrations", "password").await;
        assert!(
            keys.decrypt(
                "registry_integrations",
                "password",
                &Encrypted(copied[0].clone())
            )
            .is_err(),
            "{b}: a value moved to another table must not decrypt"
        );
        // A different key cannot read it either.
        let other = Keyring::new(test_key_b(), &[]).unwrap();
        assert!(
            other
                .decrypt("git_integrations", "access_token", &access)
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
        for (table, column, i, value) in values {
            let expect = &expected[&(table, column, i)];
            assert_eq!(
                b_with_a.decrypt(table, column, &value).unwrap().expose(),
                expect,
                "{b}"
            );
            assert!(b_only.decrypt(table, column, &value).is_err(), "{b}");
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
            report.updated("git_integrations", "client_secret"),
            2,
            "{b}"
        );
        assert_eq!(
            report.updated("git_integrations", "webhook_secret"),
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
        for (table, column, i, value) in read_all(conn, &ids).await {
            let expect = &expected[&(table, column, i)];
            assert_eq!(
                b_only.decrypt(table, column, &value).unwrap().expose(),
                expect,
                "{b}"
            );
            assert!(!b_only.needs_rotation(&value), "{b}");
        }
        for col in ENCRYPTED_COLUMNS {
            for v in raw_values(conn, col.table, col.column).await {
                assert!(
                    v.starts_with(&format!("v1:{}:", b_only.current_key_id())),
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
                "SELECT COUNT(*) FROM git_integrations WHERE webhook_secret IS NULL",
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
        let org = org(conn, "stray").await;
        registry(
            org,
            "stray",
            Some(
                stray
                    .encrypt("registry_integrations", "password", "x")
                    .unwrap(),
            ),
        )
        .insert(conn)
        .await
        .unwrap();
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
    let org = org(conn, "rotation").await;
    let mut expected = Expected::new();
    let mut ids = Ids {
        git: Vec::new(),
        registries: Vec::new(),
    };
    for i in 0..2 {
        let mut row = git(org, &format!("git-{i}"));
        let token = format!("token-{i}");
        let secret = format!("secret-{i}");
        row.access_token = Set(Some(
            key_a
                .encrypt("git_integrations", "access_token", &token)
                .unwrap(),
        ));
        row.client_secret = Set(Some(
            key_a
                .encrypt("git_integrations", "client_secret", &secret)
                .unwrap(),
        ));
        expected.insert(("git_integrations", "access_token", i), token);
        expected.insert(("git_integrations", "client_secret", i), secret);
        if i == 0 {
            row.webhook_secret = Set(Some(
                key_a
                    .encrypt("git_integrations", "webhook_secret", "hook-0")
                    .unwrap(),
            ));
            expected.insert(
                ("git_integrations", "webhook_secret", 0),
                "hook-0".to_owned(),
            );
        }
        ids.git.push(row.insert(conn).await.unwrap().id);
    }
    for i in 0..REGISTRIES {
        let pw = format!("registry-password-{i}");
        let enc = key_a
            .encrypt("registry_integrations", "password", &pw)
            .unwrap();
        let row = registry(org, &format!("reg-{i:03}"), Some(enc))
            .insert(conn)
            .await
            .unwrap();
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
) -> Vec<(&'static str, &'static str, usize, Encrypted)> {
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
            row.access_token.unwrap(),
        ));
        out.push((
            "git_integrations",
            "client_secret",
            i,
            row.client_secret.unwrap(),
        ));
        if let Some(w) = row.webhook_secret {
            out.push(("git_integrations", "webhook_secret", i, w));
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
            row.password.unwrap(),
        ));
    }
    out
}
