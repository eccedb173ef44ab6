//! Constraints bite on PostgreSQL and SQLite: partial unique indexes, CHECKs
//! on enums, formats and ranges, and the foreign keys' cascade / set null /
//! restrict rules. Rows are written with raw SQL so invalid values reach the
//! database (the Rust types could not express them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_tests::{Backend, TestDb};
use sea_orm::sea_query::prelude::chrono::{Duration, Utc};
use sea_orm::{ConnectionTrait, DbErr, Statement, Value};
use uuid::Uuid;

type Row = Vec<(&'static str, Value)>;

async fn insert(db: &TestDb, table: &str, row: &[(&str, Value)]) -> Result<(), DbErr> {
    let cols: Vec<String> = row.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let marks: Vec<String> = (1..=row.len())
        .map(|i| match db.backend {
            Backend::Postgres => format!("${i}"),
            Backend::Sqlite => "?".to_owned(),
        })
        .collect();
    let sql = format!(
        "INSERT INTO \"{table}\" ({}) VALUES ({})",
        cols.join(", "),
        marks.join(", ")
    );
    let values: Vec<Value> = row.iter().map(|(_, v)| v.clone()).collect();
    db.conn
        .execute_raw(Statement::from_sql_and_values(
            db.conn.get_database_backend(),
            sql,
            values,
        ))
        .await
        .map(|_| ())
}

async fn exec(db: &TestDb, sql: &str, id: Uuid) -> Result<u64, DbErr> {
    let sql = match db.backend {
        Backend::Postgres => sql.to_owned(),
        Backend::Sqlite => sql.replace("$1", "?"),
    };
    db.conn
        .execute_raw(Statement::from_sql_and_values(
            db.conn.get_database_backend(),
            sql,
            [id.into()],
        ))
        .await
        .map(|r| r.rows_affected())
}

async fn count(db: &TestDb, table: &str, filter: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE {filter}");
    let row = db
        .conn
        .query_one_raw(Statement::from_string(db.conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

fn id() -> Uuid {
    Uuid::now_v7()
}

async fn add(db: &TestDb, table: &str, row: Row) -> Uuid {
    let id = match row.iter().find(|(c, _)| *c == "id") {
        Some((_, Value::Uuid(Some(id)))) => *id,
        _ => panic!("row for {table} has no id"),
    };
    insert(db, table, &row)
        .await
        .unwrap_or_else(|e| panic!("{}: insert into {table}: {e}", db.backend));
    id
}

async fn user(db: &TestDb, name: &str) -> Uuid {
    let email = format!("{name}@example.com");
    add(
        db,
        "users",
        vec![
            ("id", id().into()),
            ("username", name.into()),
            ("email", email.into()),
        ],
    )
    .await
}

async fn org(db: &TestDb, slug: &str) -> Uuid {
    add(
        db,
        "organizations",
        vec![
            ("id", id().into()),
            ("name", slug.into()),
            ("slug", slug.into()),
        ],
    )
    .await
}

async fn project(db: &TestDb, org: Uuid, slug: &str) -> Uuid {
    add(
        db,
        "projects",
        vec![
            ("id", id().into()),
            ("organization_id", org.into()),
            ("name", slug.into()),
            ("slug", slug.into()),
        ],
    )
    .await
}

fn service_row(project: Uuid, name: &str) -> Row {
    vec![
        ("id", id().into()),
        ("project_id", project.into()),
        ("name", name.into()),
        ("image", "nginx:1.27".into()),
    ]
}

fn with(mut row: Row, col: &'static str, value: Value) -> Row {
    row.retain(|(c, _)| *c != col);
    row.push((col, value));
    row
}

/// Every `good` value is accepted and every `bad` one rejected in `column`
/// of rows built by `row(n)` (n keeps unique columns unique).
async fn check_column(
    db: &TestDb,
    table: &str,
    column: &'static str,
    row: impl Fn(usize) -> Row,
    good: &[Value],
    bad: &[Value],
) {
    let b = db.backend;
    for (n, v) in good.iter().enumerate() {
        insert(db, table, &with(row(n), column, v.clone()))
            .await
            .unwrap_or_else(|e| panic!("{b}: {table}.{column} = {v:?} rejected: {e}"));
    }
    for (n, v) in bad.iter().enumerate() {
        let res = insert(db, table, &with(row(1000 + n), column, v.clone())).await;
        assert!(res.is_err(), "{b}: {table}.{column} = {v:?} accepted");
    }
}

fn s(v: &str) -> Value {
    v.into()
}

#[tokio::test]
async fn an_organisation_has_at_most_one_owner() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (alice, bob, carol) = (
            user(&db, "alice").await,
            user(&db, "bob").await,
            user(&db, "carol").await,
        );
        let (acme, other) = (org(&db, "acme").await, org(&db, "other").await);
        let member = |org: Uuid, user: Uuid, role: &str| -> Row {
            vec![
                ("id", id().into()),
                ("organization_id", org.into()),
                ("user_id", user.into()),
                ("role", role.into()),
            ]
        };
        insert(&db, "organization_members", &member(acme, alice, "owner"))
            .await
            .unwrap();
        let second = insert(&db, "organization_members", &member(acme, bob, "owner")).await;
        assert!(second.is_err(), "{b}: a second owner was accepted");
        // Other roles in the same org, and an owner of another org, are fine.
        insert(&db, "organization_members", &member(acme, bob, "admin"))
            .await
            .unwrap();
        insert(&db, "organization_members", &member(acme, carol, "viewer"))
            .await
            .unwrap();
        insert(&db, "organization_members", &member(other, bob, "owner"))
            .await
            .unwrap();
        // A user joins an org once.
        let twice = insert(&db, "organization_members", &member(acme, carol, "member")).await;
        assert!(twice.is_err(), "{b}: duplicate membership accepted");
        assert_eq!(
            count(&db, "organization_members", "role = 'owner'").await,
            2,
            "{b}"
        );
    }
}

#[tokio::test]
async fn a_domain_is_unique_within_an_organisation_only() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (acme, other) = (org(&db, "acme").await, org(&db, "other").await);
        let domain = |org: Uuid, name: &str| -> Row {
            vec![
                ("id", id().into()),
                ("organization_id", org.into()),
                ("name", name.into()),
            ]
        };
        let first = add(&db, "domains", domain(acme, "app.example.com")).await;
        let dup = insert(&db, "domains", &domain(acme, "app.example.com")).await;
        assert!(dup.is_err(), "{b}: duplicate domain in one org accepted");
        insert(&db, "domains", &domain(other, "app.example.com"))
            .await
            .unwrap_or_else(|e| panic!("{b}: same domain in another org rejected: {e}"));
        // Names are stored lower-case, so case variants cannot dodge the index.
        let upper = insert(&db, "domains", &domain(acme, "APP.example.com")).await;
        assert!(upper.is_err(), "{b}: upper-case domain accepted");
        // After a soft delete the name can be added again.
        exec(
            &db,
            "UPDATE domains SET deleted_at = CURRENT_TIMESTAMP WHERE id = $1",
            first,
        )
        .await
        .unwrap();
        insert(&db, "domains", &domain(acme, "app.example.com"))
            .await
            .unwrap_or_else(|e| panic!("{b}: re-adding a soft-deleted domain rejected: {e}"));
        for bad in [
            "localhost",
            "-a.example.com",
            "a..b.com",
            "a_b.example.com",
            "a.example.com.",
        ] {
            let res = insert(&db, "domains", &domain(other, bad)).await;
            assert!(res.is_err(), "{b}: malformed domain {bad:?} accepted");
        }
    }
}

#[tokio::test]
async fn unknown_enum_values_are_rejected() {
    for db in ferry_tests::migrated_dbs().await {
        let u = user(&db, "alice").await;
        let o = org(&db, "acme").await;
        let p = project(&db, o, "web").await;
        let svc = add(&db, "services", service_row(p, "api")).await;
        let dep = add(
            &db,
            "deployments",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("triggered_by", u.into()),
            ],
        )
        .await;

        let users: Vec<Uuid> = vec![user(&db, "bob").await, user(&db, "carol").await];
        check_column(
            &db,
            "organization_members",
            "role",
            |n| {
                vec![
                    ("id", id().into()),
                    ("organization_id", o.into()),
                    ("user_id", users[n % 2].into()),
                ]
            },
            &[s("viewer")],
            &[s("superuser"), s("Owner"), s("")],
        )
        .await;
        check_column(
            &db,
            "services",
            "status",
            |n| service_row(p, &format!("svc-{n}")),
            &[s("running"), s("scaling")],
            &[s("done"), s("RUNNING")],
        )
        .await;
        check_column(
            &db,
            "services",
            "kind",
            |n| service_row(p, &format!("kind-{n}")),
            &[s("database")],
            &[s("worker")],
        )
        .await;
        check_column(
            &db,
            "deployments",
            "status",
            |_| vec![("id", id().into()), ("service_id", svc.into())],
            &[s("rolled_back"), s("cloning"), s("success")],
            &[s("done"), s("archived")],
        )
        .await;
        check_column(
            &db,
            "deployment_logs",
            "level",
            |_| {
                vec![
                    ("id", id().into()),
                    ("deployment_id", dep.into()),
                    ("message", s("hi")),
                ]
            },
            &[s("warn")],
            &[s("fatal"), s("warning")],
        )
        .await;
        check_column(
            &db,
            "nodes",
            "status",
            |n| vec![("id", id().into()), ("name", format!("node-{n}").into())],
            &[s("online"), s("draining")],
            &[s("up")],
        )
        .await;
        let storage = add(
            &db,
            "storage_integrations",
            vec![
                ("id", id().into()),
                ("organization_id", o.into()),
                ("name", s("s3")),
                ("bucket", s("b")),
                ("access_key_id", s("k1:x")),
                ("secret_access_key", s("k1:y")),
            ],
        )
        .await;
        let config = add(
            &db,
            "backup_configs",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("storage_integration_id", storage.into()),
                ("schedule", s("0 3 * * *")),
            ],
        )
        .await;
        check_column(
            &db,
            "backup_runs",
            "backup_type",
            |_| vec![("id", id().into()), ("backup_config_id", config.into())],
            &[s("incremental"), s("snapshot")],
            &[s("differential")],
        )
        .await;
        check_column(
            &db,
            "backup_runs",
            "status",
            |_| vec![("id", id().into()), ("backup_config_id", config.into())],
            &[s("success")],
            &[s("succeeded")],
        )
        .await;
    }
}

#[tokio::test]
async fn env_var_keys_and_secret_storage_are_checked() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let o = org(&db, "acme").await;
        let p = project(&db, o, "web").await;
        let svc = add(&db, "services", service_row(p, "api")).await;
        let group = add(
            &db,
            "variable_groups",
            vec![
                ("id", id().into()),
                ("project_id", p.into()),
                ("name", s("shared")),
            ],
        )
        .await;
        let good = [s("DATABASE_URL"), s("_PRIVATE"), s("A1"), s("X")];
        let bad = [
            s("database_url"),
            s("1ABC"),
            s("A-B"),
            s(""),
            s("A B"),
            s("ÄB"),
        ];
        check_column(
            &db,
            "service_env_vars",
            "key",
            |_| {
                vec![
                    ("id", id().into()),
                    ("service_id", svc.into()),
                    ("value", s("v")),
                ]
            },
            &good,
            &bad,
        )
        .await;
        check_column(
            &db,
            "variable_group_items",
            "key",
            |_| {
                vec![
                    ("id", id().into()),
                    ("variable_group_id", group.into()),
                    ("value", s("v")),
                ]
            },
            &good,
            &bad,
        )
        .await;
        // A key appears once per service.
        let dup = vec![
            ("id", id().into()),
            ("service_id", svc.into()),
            ("key", s("X")),
            ("value", s("v")),
        ];
        assert!(
            insert(&db, "service_env_vars", &dup).await.is_err(),
            "{b}: duplicate key"
        );
        // A secret lives only in value_encrypted; a plain value only in value.
        let var = |key: &str, secret: bool, value: Option<&str>, enc: Option<&str>| -> Row {
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("key", key.into()),
                ("is_secret", secret.into()),
                ("value", Value::String(value.map(str::to_owned))),
                ("value_encrypted", Value::String(enc.map(str::to_owned))),
            ]
        };
        insert(
            &db,
            "service_env_vars",
            &var("S1", true, None, Some("k1:ct")),
        )
        .await
        .unwrap();
        for (key, secret, value, enc) in [
            ("S2", true, Some("plain"), None),
            ("S3", true, Some("plain"), Some("k1:ct")),
            ("S4", false, None, Some("k1:ct")),
            ("S5", false, None, None),
        ] {
            let res = insert(&db, "service_env_vars", &var(key, secret, value, enc)).await;
            assert!(
                res.is_err(),
                "{b}: env var {key} with secret={secret} accepted"
            );
        }
    }
}

#[tokio::test]
async fn usernames_and_emails_follow_the_seed_formats() {
    for db in ferry_tests::migrated_dbs().await {
        let row = |n: usize| -> Row {
            vec![
                ("id", id().into()),
                ("username", format!("user_{n}").into()),
                ("email", format!("u{n}@example.com").into()),
            ]
        };
        check_column(
            &db,
            "users",
            "username",
            row,
            &[s("abc"), s("john_doe-2"), s(&"a".repeat(50))],
            &[
                s("ab"),
                s("John"),
                s("a b"),
                s("a.b"),
                s(&"a".repeat(51)),
                s("jöhn"),
            ],
        )
        .await;
        check_column(
            &db,
            "users",
            "email",
            row,
            &[s("john@example.com"), s("a.b+c@sub.example.org")],
            &[
                s("no-at.example.com"),
                s("a@b"),
                s("@example.com"),
                s("a@.com"),
                s("a@b.c@d.com"),
                s("John@Example.com"),
                s("a@b."),
            ],
        )
        .await;
        // Case-insensitive uniqueness: emails are stored lower-case.
        let b = db.backend;
        let dup = vec![
            ("id", id().into()),
            ("username", s("other")),
            ("email", s("john@example.com")),
        ];
        assert!(
            insert(&db, "users", &dup).await.is_err(),
            "{b}: duplicate email accepted"
        );
    }
}

#[tokio::test]
async fn numeric_ranges_are_enforced() {
    for db in ferry_tests::migrated_dbs().await {
        let o = org(&db, "acme").await;
        let p = project(&db, o, "web").await;
        check_column(
            &db,
            "services",
            "replicas",
            |n| service_row(p, &format!("svc-{n}")),
            &[0.into(), 1.into(), 50.into()],
            &[(-1).into()],
        )
        .await;
        check_column(
            &db,
            "volumes",
            "size_gb",
            |n| {
                vec![
                    ("id", id().into()),
                    ("project_id", p.into()),
                    ("name", format!("vol-{n}").into()),
                ]
            },
            &[1.into(), 500.into()],
            &[0.into(), (-5).into()],
        )
        .await;
        let svc = add(&db, "services", service_row(p, "api")).await;
        check_column(
            &db,
            "service_ports",
            "container_port",
            |_| vec![("id", id().into()), ("service_id", svc.into())],
            &[1.into(), 8080.into(), 65535.into()],
            &[0.into(), 65536.into()],
        )
        .await;
        let container = add(
            &db,
            "containers",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("namespace", s("web")),
                ("pod_name", s("api-1")),
                ("pod_uid", s("uid-1")),
                ("container_name", s("api")),
                ("image", s("nginx")),
            ],
        )
        .await;
        let metric = |_| vec![("id", id().into()), ("container_id", container.into())];
        check_column(
            &db,
            "container_metrics",
            "memory_percent",
            metric,
            &[0.0.into(), 55.5.into(), 100.0.into()],
            &[100.5.into(), (-1.0).into()],
        )
        .await;
        check_column(
            &db,
            "container_metrics",
            "cpu_percent",
            metric,
            &[250.0.into()],
            &[(-0.1).into()],
        )
        .await;
        check_column(
            &db,
            "container_metrics",
            "network_rx",
            metric,
            &[0i64.into()],
            &[(-1i64).into()],
        )
        .await;
    }
}

#[tokio::test]
async fn foreign_keys_are_enforced_on_both_backends() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let orphan = vec![
            ("id", id().into()),
            ("organization_id", id().into()),
            ("user_id", id().into()),
        ];
        let res = insert(&db, "organization_members", &orphan).await;
        assert!(
            res.is_err(),
            "{b}: a member of a missing organisation was accepted"
        );
    }
}

#[tokio::test]
async fn deletes_cascade_set_null_and_restrict_as_documented() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let later = Utc::now() + Duration::days(90);
        let owner = user(&db, "owner").await;
        let actor = user(&db, "actor").await;
        let o = org(&db, "acme").await;
        for (u, role) in [(owner, "owner"), (actor, "admin")] {
            add(
                &db,
                "organization_members",
                vec![
                    ("id", id().into()),
                    ("organization_id", o.into()),
                    ("user_id", u.into()),
                    ("role", role.into()),
                ],
            )
            .await;
        }
        let p = project(&db, o, "web").await;
        let svc = add(&db, "services", service_row(p, "api")).await;
        let spare = add(&db, "services", service_row(p, "spare")).await;
        add(
            &db,
            "service_env_vars",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("key", s("A")),
                ("value", s("1")),
            ],
        )
        .await;
        add(
            &db,
            "service_ports",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("container_port", 80.into()),
            ],
        )
        .await;
        let dep = add(
            &db,
            "deployments",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("triggered_by", actor.into()),
            ],
        )
        .await;
        add(
            &db,
            "deployment_logs",
            vec![
                ("id", id().into()),
                ("deployment_id", dep.into()),
                ("message", s("built")),
            ],
        )
        .await;
        let container = add(
            &db,
            "containers",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("deployment_id", dep.into()),
                ("namespace", s("web")),
                ("pod_name", s("api-1")),
                ("pod_uid", s("uid-1")),
                ("container_name", s("api")),
                ("image", s("nginx")),
            ],
        )
        .await;
        add(
            &db,
            "container_metrics",
            vec![
                ("id", id().into()),
                ("container_id", container.into()),
                ("cpu_percent", 1.5.into()),
            ],
        )
        .await;
        let volume = |name: &str| -> Row {
            vec![
                ("id", id().into()),
                ("project_id", p.into()),
                ("name", name.into()),
                ("size_gb", 1.into()),
            ]
        };
        let vol = add(&db, "volumes", volume("data")).await;
        let spare_vol = add(&db, "volumes", volume("spare")).await;
        let mount = |v: Uuid, s_: Uuid| -> Row {
            vec![
                ("id", id().into()),
                ("volume_id", v.into()),
                ("service_id", s_.into()),
                ("mount_path", s("/data")),
            ]
        };
        add(&db, "volume_mounts", mount(vol, svc)).await;
        add(&db, "volume_mounts", mount(spare_vol, spare)).await;
        let dom = add(
            &db,
            "domains",
            vec![
                ("id", id().into()),
                ("organization_id", o.into()),
                ("name", s("app.example.com")),
            ],
        )
        .await;
        add(
            &db,
            "certificates",
            vec![
                ("id", id().into()),
                ("domain_id", dom.into()),
                ("issuer", s("Let's Encrypt")),
                ("certificate_pem", s("-----BEGIN CERTIFICATE-----")),
                ("private_key", s("k1:ct")),
                ("expires_at", later.into()),
            ],
        )
        .await;
        let route = add(
            &db,
            "routes",
            vec![
                ("id", id().into()),
                ("project_id", p.into()),
                ("domain_id", dom.into()),
                ("hostname", s("app.example.com")),
            ],
        )
        .await;
        add(
            &db,
            "route_targets",
            vec![
                ("id", id().into()),
                ("route_id", route.into()),
                ("service_id", svc.into()),
                ("port", 80.into()),
            ],
        )
        .await;
        add(
            &db,
            "api_tokens",
            vec![
                ("id", id().into()),
                ("organization_id", o.into()),
                ("user_id", owner.into()),
                ("name", s("ci")),
                ("token_hash", s(&"a".repeat(64))),
                ("token_prefix", s("fy_ab")),
            ],
        )
        .await;
        let storage = add(
            &db,
            "storage_integrations",
            vec![
                ("id", id().into()),
                ("organization_id", o.into()),
                ("name", s("s3")),
                ("bucket", s("b")),
                ("access_key_id", s("k1:x")),
                ("secret_access_key", s("k1:y")),
            ],
        )
        .await;
        let backup = add(
            &db,
            "backup_configs",
            vec![
                ("id", id().into()),
                ("service_id", svc.into()),
                ("storage_integration_id", storage.into()),
                ("schedule", s("@daily")),
            ],
        )
        .await;
        add(
            &db,
            "backup_runs",
            vec![("id", id().into()), ("backup_config_id", backup.into())],
        )
        .await;
        add(
            &db,
            "audit_logs",
            vec![
                ("id", id().into()),
                ("organization_id", o.into()),
                ("user_id", actor.into()),
                ("action", s("service.deploy")),
                ("resource_type", s("service")),
                ("resource_id", svc.into()),
            ],
        )
        .await;

        // RESTRICT: a mounted volume cannot be deleted.
        let res = exec(&db, "DELETE FROM volumes WHERE id = $1", vol).await;
        assert!(res.is_err(), "{b}: a mounted volume was deleted");
        assert_eq!(count(&db, "volumes", "1 = 1").await, 2, "{b}");

        // Deleting a service removes its mounts (and only those); the volume stays.
        assert_eq!(
            exec(&db, "DELETE FROM services WHERE id = $1", spare)
                .await
                .unwrap(),
            1
        );
        assert_eq!(count(&db, "volume_mounts", "1 = 1").await, 1, "{b}");
        assert_eq!(count(&db, "volumes", "1 = 1").await, 2, "{b}");
        // ...and an unmounted volume can be deleted.
        assert_eq!(
            exec(&db, "DELETE FROM volumes WHERE id = $1", spare_vol)
                .await
                .unwrap(),
            1
        );

        // SET NULL: history survives its user; a backup config survives its storage.
        exec(&db, "DELETE FROM users WHERE id = $1", actor)
            .await
            .unwrap();
        assert_eq!(
            count(&db, "deployments", "triggered_by IS NULL").await,
            1,
            "{b}"
        );
        assert_eq!(count(&db, "audit_logs", "user_id IS NULL").await, 1, "{b}");
        assert_eq!(
            count(&db, "organization_members", "1 = 1").await,
            1,
            "{b}: membership cascades"
        );
        exec(
            &db,
            "DELETE FROM storage_integrations WHERE id = $1",
            storage,
        )
        .await
        .unwrap();
        assert_eq!(
            count(&db, "backup_configs", "storage_integration_id IS NULL").await,
            1,
            "{b}"
        );

        // CASCADE: deleting the organisation removes everything it owns,
        // including the mounted volume (its mount goes with the service).
        assert_eq!(
            exec(&db, "DELETE FROM organizations WHERE id = $1", o)
                .await
                .unwrap(),
            1,
            "{b}"
        );
        for table in [
            "organization_members",
            "projects",
            "services",
            "service_env_vars",
            "service_ports",
            "deployments",
            "deployment_logs",
            "containers",
            "container_metrics",
            "volumes",
            "volume_mounts",
            "domains",
            "certificates",
            "routes",
            "route_targets",
            "api_tokens",
            "backup_configs",
            "backup_runs",
        ] {
            assert_eq!(
                count(&db, table, "1 = 1").await,
                0,
                "{b}: {table} not cascaded"
            );
        }
        // The audit trail outlives the organisation; users are not owned by it.
        assert_eq!(
            count(&db, "audit_logs", "organization_id IS NULL").await,
            1,
            "{b}"
        );
        assert_eq!(count(&db, "users", "1 = 1").await, 1, "{b}");
    }
}
