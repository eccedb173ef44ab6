//! The schema on PostgreSQL and SQLite: migrations up/down/up, the tables of
//! `docs/data-model.md`, the encrypted-column registry, the generated
//! entities, and a sea-orm round trip of one row through every entity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};

use ferry_db::encrypted_columns::ENCRYPTED_COLUMNS;
use ferry_migration::schema::{Format, Table, Ty};
use ferry_tests::{Backend, TestDb};
use sea_orm::sea_query::prelude::{chrono, serde_json};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IdenStatic,
    Iterable, ModelTrait, QueryFilter, Statement, Value,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

async fn strings(db: &DatabaseConnection, backend: Backend, pg: &str, sqlite: &str) -> Vec<String> {
    let sql = match backend {
        Backend::Postgres => pg,
        Backend::Sqlite => sqlite,
    };
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{backend}: {sql}: {e}"));
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// Application tables (everything except sea-orm's bookkeeping table).
async fn app_tables(db: &TestDb) -> BTreeSet<String> {
    strings(
        &db.conn,
        db.backend,
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .await
    .into_iter()
    .filter(|t| t != "seaql_migrations")
    .collect()
}

async fn index_names(db: &TestDb) -> BTreeSet<String> {
    strings(
        &db.conn,
        db.backend,
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'",
        "SELECT name FROM sqlite_master WHERE type = 'index'",
    )
    .await
    .into_iter()
    .collect()
}

/// Names of CHECK and FOREIGN KEY constraints. SQLite keeps them only in the
/// table's SQL, so they are read from there.
async fn constraint_names(db: &TestDb) -> BTreeSet<String> {
    match db.backend {
        Backend::Postgres => strings(
            &db.conn,
            db.backend,
            "SELECT conname::text FROM pg_constraint WHERE contype IN ('c', 'f')",
            "",
        )
        .await
        .into_iter()
        .collect(),
        Backend::Sqlite => {
            let sqls = strings(
                &db.conn,
                db.backend,
                "",
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL",
            )
            .await;
            sqls.iter()
                .flat_map(|sql| sql.split("CONSTRAINT ").skip(1))
                .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
                .collect()
        }
    }
}

async fn column_names(db: &TestDb, table: &str) -> BTreeSet<String> {
    strings(
        &db.conn,
        db.backend,
        &format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = '{table}'"
        ),
        &format!("SELECT name FROM pragma_table_info('{table}')"),
    )
    .await
    .into_iter()
    .collect()
}

fn schema_tables() -> Vec<Table> {
    ferry_migration::all_tables()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// The table names in the first column of the table under `## Tables`.
fn doc_tables() -> BTreeSet<String> {
    let path = ferry_tests::workspace_root().join("docs/data-model.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let section = doc
        .split("\n## Tables")
        .nth(1)
        .expect("docs/data-model.md has a '## Tables' section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| {
            let first = l.trim().trim_start_matches('|').split('|').next()?.trim();
            let name = first.strip_prefix('`')?.strip_suffix('`')?;
            Some(name.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again_on_both_backends() {
    let expected: BTreeSet<String> = schema_tables().iter().map(|t| t.name.to_owned()).collect();
    let documented = doc_tables();
    let expected_indexes: BTreeSet<String> = schema_tables()
        .iter()
        .flat_map(|t| t.indexes.iter().map(|i| i.name.to_owned()))
        .collect();
    let expected_constraints: BTreeSet<String> = schema_tables()
        .iter()
        .flat_map(|t| {
            let checks = t.checks.iter().map(|c| c.name.clone());
            let fks = t
                .foreign_keys
                .iter()
                .map(|f| format!("fk_{}_{}", t.name, f.column));
            checks.chain(fks).collect::<Vec<_>>()
        })
        .collect();
    let migrations = ferry_migration::migrations().len();

    for db in ferry_tests::test_dbs().await {
        let b = db.backend;
        ferry_db::migrate::up(&db.conn).await.unwrap();
        let status = ferry_db::migrate::status(&db.conn).await.unwrap();
        assert!(
            status.len() >= migrations && status.iter().all(|s| s.applied),
            "{b}: {status:?}"
        );

        let tables = app_tables(&db).await;
        assert_eq!(
            tables, expected,
            "{b}: migrated tables differ from the schema description"
        );
        let missing: Vec<_> = documented.difference(&tables).collect();
        assert!(
            missing.is_empty(),
            "{b}: documented tables missing after up: {missing:?}"
        );
        // Same columns on both backends: exactly the described ones.
        for t in schema_tables() {
            let want: BTreeSet<String> = t.columns.iter().map(|c| c.name.to_owned()).collect();
            assert_eq!(
                column_names(&db, t.name).await,
                want,
                "{b}: columns of {}",
                t.name
            );
        }
        let indexes = index_names(&db).await;
        let missing: Vec<_> = expected_indexes.difference(&indexes).collect();
        assert!(missing.is_empty(), "{b}: indexes missing: {missing:?}");
        assert!(
            indexes.contains("idx_one_owner_per_org")
                && indexes.contains("idx_unique_domain_per_org")
        );
        let constraints = constraint_names(&db).await;
        let missing: Vec<_> = expected_constraints.difference(&constraints).collect();
        assert!(missing.is_empty(), "{b}: constraints missing: {missing:?}");

        ferry_db::migrate::down(&db.conn, None).await.unwrap();
        let left = app_tables(&db).await;
        assert!(left.is_empty(), "{b}: tables left after down: {left:?}");
        assert!(
            index_names(&db)
                .await
                .iter()
                .all(|i| !i.starts_with("idx_")),
            "{b}: indexes left"
        );
        if b == Backend::Postgres {
            let domains = strings(
                &db.conn,
                b,
                "SELECT typname::text FROM pg_type WHERE typname IN ('inet_text', 'ip_text')",
                "",
            )
            .await;
            assert!(
                domains.is_empty(),
                "{b}: domains left after down: {domains:?}"
            );
        }
        let status = ferry_db::migrate::status(&db.conn).await.unwrap();
        assert!(status.iter().all(|s| !s.applied), "{b}: {status:?}");

        ferry_db::migrate::up(&db.conn).await.unwrap();
        assert_eq!(app_tables(&db).await, expected, "{b}: second up");
    }
}

#[tokio::test]
async fn each_migration_down_drops_exactly_what_its_up_created() {
    for db in ferry_tests::test_dbs().await {
        let b = db.backend;
        let mut before = Vec::new();
        for _ in ferry_migration::migrations() {
            before.push(app_tables(&db).await);
            <ferry_migration::Migrator as MigratorTrait>::up(&db.conn, Some(1))
                .await
                .unwrap();
        }
        // Walk back one step at a time: each down restores the previous table set.
        for expected in before.iter().rev() {
            <ferry_migration::Migrator as MigratorTrait>::down(&db.conn, Some(1))
                .await
                .unwrap();
            assert_eq!(&app_tables(&db).await, expected, "{b}");
        }
    }
}

#[test]
fn documented_tables_are_exactly_the_schema() {
    let documented = doc_tables();
    let schema: BTreeSet<String> = schema_tables().iter().map(|t| t.name.to_owned()).collect();
    assert!(
        documented.len() >= 40,
        "parsed only {} tables from the doc",
        documented.len()
    );
    assert_eq!(
        documented, schema,
        "docs/data-model.md '## Tables' vs migrations"
    );
}

#[test]
fn the_doc_lists_every_check_index_foreign_key_and_encrypted_column() {
    let path = ferry_tests::workspace_root().join("docs/data-model.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut missing = Vec::new();
    for t in schema_tables() {
        let names = t
            .checks
            .iter()
            .map(|c| c.name.clone())
            .chain(t.indexes.iter().map(|i| i.name.to_owned()))
            .chain(
                t.foreign_keys
                    .iter()
                    .map(|f| format!("{}.{}", t.name, f.column)),
            );
        missing.extend(names.filter(|n| !doc.contains(&format!("`{n}`"))));
    }
    missing.extend(
        ENCRYPTED_COLUMNS
            .iter()
            .map(|c| format!("{}.{}", c.table, c.column))
            .filter(|n| !doc.contains(&format!("`{n}`"))),
    );
    assert!(
        missing.is_empty(),
        "docs/data-model.md does not name: {missing:?} \
         (cargo run -p ferry-migration --example schema_doc)"
    );
}

#[tokio::test]
async fn encrypted_column_registry_matches_the_schema() {
    let declared: BTreeSet<(String, String)> = schema_tables()
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|c| c.ty == Ty::Encrypted)
                .map(|c| (t.name.to_owned(), c.name.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    let listed: BTreeSet<(String, String)> = ENCRYPTED_COLUMNS
        .iter()
        .map(|c| (c.table.to_owned(), c.column.to_owned()))
        .collect();
    assert_eq!(
        listed.len(),
        ENCRYPTED_COLUMNS.len(),
        "duplicates in ENCRYPTED_COLUMNS"
    );
    assert_eq!(
        listed, declared,
        "ENCRYPTED_COLUMNS vs Encrypted columns of the migrations"
    );

    for db in ferry_tests::migrated_dbs().await {
        for c in ENCRYPTED_COLUMNS {
            let cols = column_names(&db, c.table).await;
            assert!(
                cols.contains(c.column),
                "{}: {}.{} missing",
                db.backend,
                c.table,
                c.column
            );
            assert!(cols.contains("id"), "{}: {} has no id", db.backend, c.table);
        }
    }
}

#[test]
fn entities_are_up_to_date_with_the_schema() {
    let dir = ferry_tests::workspace_root().join("crates/db/src/entities");
    let generated = ferry_migration::codegen::entity_files();
    for (name, contents) in &generated {
        let on_disk = std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("entities/{name}: {e} (run the gen_entities example)"));
        assert_eq!(
            ferry_migration::codegen::normalize(&on_disk),
            ferry_migration::codegen::normalize(contents),
            "entities/{name} is stale: cargo run -p ferry-migration --example gen_entities \
             && cargo fmt -p ferry-db"
        );
    }
    // Everything but the hand-written `types.rs` is generated.
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        generated.len() + 1,
        "unexpected extra files in entities/"
    );
}

// ---- a sea-orm round trip through every entity ---------------------------

/// A value that passes the column's CHECKs; `None` for typed NULL.
fn sample(table: &Table, col: &str, ty: Ty, n: usize, now: chrono::DateTime<chrono::Utc>) -> Value {
    let fmt = table.checks.iter().find_map(|c| match c.expr {
        ferry_migration::schema::CheckExpr::Format { column, format } if column == col => {
            Some(format)
        }
        _ => None,
    });
    let text = |s: String| Value::String(Some(s));
    match ty {
        Ty::Uuid => Value::Uuid(Some(Uuid::now_v7())),
        Ty::Enum { values, .. } => text(values[0].to_owned()),
        Ty::Bool => Value::Bool(Some(false)),
        Ty::Int => Value::Int(Some(1)),
        Ty::BigInt => Value::BigInt(Some(1)),
        Ty::Real => Value::Double(Some(12.5)),
        Ty::Timestamp => Value::ChronoDateTimeUtc(Some(now)),
        Ty::Json => Value::Json(Some(Box::new(serde_json::json!({"k": [1, "two"], "n": n})))),
        Ty::Inet => text(
            if n.is_multiple_of(2) {
                "10.1.2.3"
            } else {
                "2001:db8::7"
            }
            .to_owned(),
        ),
        Ty::Encrypted => text(format!("k1:ciphertext-{n}")),
        Ty::Text => text(match fmt {
            Some(Format::Username) => format!("user_{n}"),
            Some(Format::Email) => format!("user{n}@example.com"),
            Some(Format::EnvKey) => format!("KEY_{n}"),
            Some(Format::Slug) => format!("name-{n}"),
            Some(Format::Hostname) => format!("app{n}.example.com"),
            Some(Format::Sha256Hex) => format!("{:064x}", n + 1),
            Some(Format::CommitSha) => "0123456789abcdef0123456789abcdef01234567".to_owned(),
            Some(Format::PermissionName) => "service.deploy".to_owned(),
            Some(Format::Ip) => "10.9.9.9".to_owned(),
            None => match col {
                "key" => format!("account:{n}"),
                "mount_path" | "path_prefix" => "/data".to_owned(),
                _ => format!("{col} {n} ünïcode"),
            },
        }),
    }
}

fn typed_null(ty: Ty) -> Value {
    match ty {
        Ty::Uuid => Value::Uuid(None),
        Ty::Bool => Value::Bool(None),
        Ty::Int => Value::Int(None),
        Ty::BigInt => Value::BigInt(None),
        Ty::Real => Value::Double(None),
        Ty::Timestamp => Value::ChronoDateTimeUtc(None),
        Ty::Json => Value::Json(None),
        _ => Value::String(None),
    }
}

/// Columns that must be NULL for the generic row to satisfy a table CHECK.
fn forced_null(table: &str, col: &str) -> bool {
    matches!(
        (table, col),
        ("deployments", "stack_id" | "rollback_of_id")
            | ("resource_permissions", "service_id" | "stack_id" | "job_id")
            | (
                "backup_runs",
                "volume_backup_config_id" | "system_backup_config_id"
            )
            | (
                "service_env_vars" | "variable_group_items",
                "value_encrypted"
            )
            | ("certificates", "not_before")
            | ("templates", "organization_id")
            | ("jobs", "service_id")
    )
}

fn forced_value(table: &str, col: &str) -> Option<Value> {
    match (table, col) {
        // official templates have no organisation
        ("templates", "is_official") => Some(Value::Bool(Some(true))),
        _ => None,
    }
}

async fn round_trip<E>(
    db: &TestDb,
    table: &Table,
    ids: &mut HashMap<&'static str, Uuid>,
    now: chrono::DateTime<chrono::Utc>,
) where
    E: EntityTrait,
    E::Model: ModelTrait<Entity = E> + sea_orm::IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    let b = db.backend;
    let column = |name: &str| {
        E::Column::iter()
            .find(|c| c.as_str() == name)
            .unwrap_or_else(|| panic!("entity of {} has no column {name}", table.name))
    };
    assert_eq!(
        E::Column::iter().count(),
        table.columns.len(),
        "{}: column count",
        table.name
    );
    assert_eq!(E::default().table_name(), table.name);

    let mut am = <E::ActiveModel as ActiveModelTrait>::default();
    let mut expected = Vec::new();
    let id = Uuid::now_v7();
    for c in &table.columns {
        let value = if c.primary_key {
            Value::Uuid(Some(id))
        } else if let Some(v) = forced_value(table.name, c.name) {
            v
        } else if forced_null(table.name, c.name) {
            typed_null(c.ty)
        } else if let Some(fk) = table.foreign_keys.iter().find(|f| f.column == c.name) {
            match ids.get(fk.references) {
                Some(parent) if fk.references != table.name => Value::Uuid(Some(*parent)),
                _ => typed_null(c.ty),
            }
        } else {
            sample(table, c.name, c.ty, ids.len(), now)
        };
        am.set(column(c.name), value.clone());
        expected.push((c.name, value));
    }
    let returned = E::insert(am)
        .exec_with_returning(&db.conn)
        .await
        .unwrap_or_else(|e| panic!("{b}: insert into {}: {e}", table.name));
    let found = E::find()
        .filter(column("id").eq(id))
        .one(&db.conn)
        .await
        .unwrap_or_else(|e| panic!("{b}: select from {}: {e}", table.name))
        .unwrap_or_else(|| panic!("{b}: {} row not found", table.name));
    for (name, value) in &expected {
        assert_eq!(
            &found.get(column(name)),
            value,
            "{b}: {}.{name} after select",
            table.name
        );
        assert_eq!(
            &returned.get(column(name)),
            value,
            "{b}: {}.{name} from RETURNING",
            table.name
        );
    }
    ids.insert(table.name, id);
}

macro_rules! dispatch {
    ($db:expr, $table:expr, $ids:expr, $now:expr; $($t:ident),* $(,)?) => {
        match $table.name {
            $(stringify!($t) => round_trip::<ferry_db::entities::$t::Entity>($db, $table, $ids, $now).await,)*
            other => panic!("no entity listed for table {other}"),
        }
    };
}

#[tokio::test]
async fn every_entity_round_trips_a_row_on_both_backends() {
    let now =
        chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
    for db in ferry_tests::migrated_dbs().await {
        let mut ids = HashMap::new();
        for table in schema_tables() {
            dispatch!(&db, &table, &mut ids, now;
                users, sessions, trusted_devices, recovery_codes, auth_throttle,
                organizations, organization_members, org_invitations, api_tokens, roles,
                permissions, role_permissions,
                projects, nodes, node_registration_tokens, node_provisioning_tokens, domains,
                certificates,
                storage_integrations, registry_integrations, git_integrations,
                notification_channels, org_email_configs,
                stacks, services, service_ports, build_configs, database_configs, volumes,
                volume_mounts, variable_groups, variable_group_items, service_variable_groups,
                service_env_vars, routes, route_targets,
                deployments, deployment_logs, containers, container_metrics,
                jobs, job_runs, backup_configs, volume_backup_configs, system_backup_configs,
                backup_runs, templates,
                resource_permissions, audit_logs, builds, webhook_deliveries, leases, audit_checkpoints, audit_chain_heads,
                service_health, cluster_facts,
                notification_subscriptions, notification_outbox, notification_deliveries,
                acme_accounts, certificate_orders, acme_challenges,
            );
        }
        assert_eq!(ids.len(), schema_tables().len(), "{}", db.backend);
    }
}

#[tokio::test]
async fn inet_columns_are_inet_on_postgres_and_read_back_without_netmask() {
    use ferry_db::entities::sessions;
    use ferry_db::entities::types::IpAddress;
    for db in ferry_tests::migrated_dbs().await {
        if db.backend == Backend::Postgres {
            let ty = strings(
                &db.conn,
                db.backend,
                "SELECT data_type::text FROM information_schema.columns \
                 WHERE table_name = 'audit_logs' AND column_name = 'ip_address'",
                "",
            )
            .await;
            assert_eq!(ty, vec!["inet".to_owned()]);
        }
        let user = ferry_db::entities::users::ActiveModel {
            id: sea_orm::Set(Uuid::now_v7()),
            username: sea_orm::Set("ipuser".into()),
            email: sea_orm::Set("ip@example.com".into()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let session = sessions::ActiveModel {
            id: sea_orm::Set(Uuid::now_v7()),
            user_id: sea_orm::Set(user.id),
            token_hash: sea_orm::Set("ab".repeat(32)),
            expires_at: sea_orm::Set(chrono::Utc::now()),
            ip_address: sea_orm::Set(Some("192.168.1.100".parse().unwrap())),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        assert_eq!(
            session.ip_address.map(|ip| ip.to_string()).as_deref(),
            Some("192.168.1.100"),
            "{}",
            db.backend
        );
        // Filtering by IP goes through the same cast.
        let n = sessions::Entity::find()
            .filter(sessions::Column::IpAddress.eq("192.168.1.100".parse::<IpAddress>().unwrap()))
            .all(&db.conn)
            .await
            .unwrap()
            .len();
        assert_eq!(n, 1, "{}", db.backend);
        // Raw writes go through the same cast: a valid address passes, while
        // malformed ones and networks are refused (INET + CHECK on
        // PostgreSQL, CHECK on SQLite), even bypassing the Rust type.
        let update = |ip: &str| {
            let sql = match db.backend {
                Backend::Postgres => "UPDATE sessions SET ip_address = CAST($1 AS inet_text)",
                Backend::Sqlite => "UPDATE sessions SET ip_address = CAST(? AS inet_text)",
            };
            db.conn.execute_raw(Statement::from_sql_and_values(
                db.conn.get_database_backend(),
                sql,
                [ip.into()],
            ))
        };
        update("10.2.3.4").await.unwrap();
        for bad in ["not an ip", "10.0.0.0/8", "10.0.0.1 ", "12"] {
            assert!(
                update(bad).await.is_err(),
                "{}: bad IP {bad:?} accepted",
                db.backend
            );
        }

        // ferry_db::audit::insert writes INET (v6 here) and reads it back.
        let entry = ferry_db::audit::insert(
            &db.conn,
            ferry_db::audit::NewAuditLog {
                organization_id: None,
                user_id: Some(user.id),
                action: "user.login".into(),
                resource_type: ferry_db::entities::enums::AuditResourceType::Session,
                resource_id: Some(session.id),
                details: serde_json::json!({"method": "password"}),
                ip_address: Some("2001:db8::42".parse().unwrap()),
                user_agent: Some("curl/8".into()),
            },
        )
        .await
        .unwrap();
        let stored = ferry_db::entities::audit_logs::Entity::find_by_id(entry.id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, entry, "{}", db.backend);
        assert_eq!(
            stored.ip_address.unwrap().to_string(),
            "2001:db8::42",
            "{}",
            db.backend
        );
    }
}
