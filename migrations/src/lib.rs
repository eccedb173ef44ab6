//! Ferry's schema migrations (sea-orm-migration), one per area, for
//! PostgreSQL and SQLite.
//!
//! Tables are described once with the small DSL in [`schema`]; each
//! migration creates its tables (and indexes) in order and `down()` drops
//! exactly those tables in reverse order. [`codegen`] renders the SeaORM
//! entities of `ferry-db` from the same description.

pub mod codegen;
pub mod schema;

mod m0001_identity;
mod m0002_tenancy;
mod m0003_infrastructure;
mod m0004_integrations;
mod m0005_workloads;
mod m0006_deployments;
mod m0007_operations;
mod m0008_access_audit;
mod m0009_project_namespaces;
mod m0010_deployment_leases;
mod m0011_route_feed_triggers;
mod m0012_credential_triggers;
mod m0013_builds;
mod m0014_jobs;
mod m0015_audit_checkpoints;
mod m0016_status_sync;
mod m0017_domains;
mod m0018_acme;
mod m0019_notifications;
mod m0020_domain_recheck;
mod m0021_acme_ari;
mod m0022_notify_wakeup;
mod notify;

pub use m0013_builds::ACTIVE_BUILD;
pub use m0014_jobs::ACTIVE_RUN;
pub use m0018_acme::ORDER_STATES;
pub use m0019_notifications::CHANNEL_KINDS;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbErr;

use schema::{Alter, Dialect, PG_IP_DOMAINS, Table};

/// Lists the tables of one migration, in creation order.
type Tables = fn() -> Vec<Table>;

/// One migration per area, with the function listing its tables.
const AREAS: &[(&str, Tables)] = &[
    ("m0001_identity", m0001_identity::tables),
    ("m0002_tenancy", m0002_tenancy::tables),
    ("m0003_infrastructure", m0003_infrastructure::tables),
    ("m0004_integrations", m0004_integrations::tables),
    ("m0005_workloads", m0005_workloads::tables),
    ("m0006_deployments", m0006_deployments::tables),
    ("m0007_operations", m0007_operations::tables),
    ("m0008_access_audit", m0008_access_audit::tables),
];

/// Lists the changes of one migration to tables created earlier.
type Alters = fn() -> Vec<Alter>;

/// A migration after the first release (a released migration is never
/// edited).
#[derive(Clone, Copy)]
enum Later {
    /// Changes to existing tables.
    Alter(Alters),
    /// Drops the (empty) tables `replaces`, then creates `tables`: those
    /// named in `replaces` in their new shape, and new ones.
    Rebuild {
        replaces: &'static [&'static str],
        tables: Tables,
    },
    /// Creates new `tables`, then applies `alters` (to earlier tables or
    /// the new ones).
    Extend { tables: Tables, alters: Alters },
}

/// Migrations after the first release, applied after [`AREAS`] in order.
const ALTERATIONS: &[(&str, Later)] = &[
    (
        "m0009_project_namespaces",
        Later::Alter(m0009_project_namespaces::alters),
    ),
    (
        "m0010_deployment_leases",
        Later::Alter(m0010_deployment_leases::alters),
    ),
    (
        "m0011_route_feed_triggers",
        Later::Alter(m0011_route_feed_triggers::alters),
    ),
    (
        "m0012_credential_triggers",
        Later::Alter(m0012_credential_triggers::alters),
    ),
    (
        "m0013_builds",
        Later::Rebuild {
            replaces: m0013_builds::REPLACES,
            tables: m0013_builds::tables,
        },
    ),
    (
        "m0014_jobs",
        Later::Rebuild {
            replaces: m0014_jobs::REPLACES,
            tables: m0014_jobs::tables,
        },
    ),
    (
        "m0015_audit_checkpoints",
        Later::Rebuild {
            replaces: &[],
            tables: m0015_audit_checkpoints::tables,
        },
    ),
    (
        "m0016_status_sync",
        Later::Rebuild {
            replaces: m0016_status_sync::REPLACES,
            tables: m0016_status_sync::tables,
        },
    ),
    ("m0017_domains", Later::Alter(m0017_domains::alters)),
    (
        "m0018_acme",
        Later::Extend {
            tables: m0018_acme::tables,
            alters: m0018_acme::alters,
        },
    ),
    (
        "m0019_notifications",
        Later::Rebuild {
            replaces: m0019_notifications::REPLACES,
            tables: m0019_notifications::tables,
        },
    ),
    (
        "m0020_domain_recheck",
        Later::Alter(m0020_domain_recheck::alters),
    ),
    ("m0021_acme_ari", Later::Alter(m0021_acme_ari::alters)),
    (
        "m0022_notify_wakeup",
        Later::Alter(m0022_notify_wakeup::alters),
    ),
];

/// Every migration, in the order they apply.
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    let alterations = ALTERATIONS.iter().map(|&(name, later)| match later {
        Later::Alter(alters) => {
            Box::new(AlterMigration { name, alters }) as Box<dyn MigrationTrait>
        }
        Later::Rebuild { replaces, tables } => Box::new(RebuildMigration {
            name,
            replaces,
            tables,
        }),
        Later::Extend { tables, alters } => Box::new(ExtendMigration {
            name,
            tables,
            alters,
        }),
    });
    AREAS
        .iter()
        .map(|&(name, tables)| {
            Box::new(SchemaMigration {
                name,
                tables,
                // The INET cast domains are created with the first tables.
                pg_setup: if name == "m0001_identity" {
                    PG_IP_DOMAINS
                } else {
                    &[]
                },
            }) as Box<dyn MigrationTrait>
        })
        .chain(alterations)
        .collect()
}

/// Every table of every migration, in creation order, with its migration's
/// name, as the alterations left it.
pub fn all_tables() -> Vec<(&'static str, Table)> {
    let mut tables: Vec<(&'static str, Table)> = AREAS
        .iter()
        .flat_map(|&(name, tables)| tables().into_iter().map(move |t| (name, t)))
        .collect();
    for &(name, later) in ALTERATIONS {
        match later {
            Later::Alter(alters) => {
                for alter in alters() {
                    if let Some((_, table)) = tables.iter_mut().find(|(_, t)| t.name == alter.table)
                    {
                        alter.apply_to(table);
                    }
                }
            }
            Later::Rebuild { tables: new, .. } => {
                for table in new() {
                    match tables.iter_mut().find(|(_, t)| t.name == table.name) {
                        Some(slot) => *slot = (name, table),
                        None => tables.push((name, table)),
                    }
                }
            }
            Later::Extend {
                tables: new,
                alters,
            } => {
                tables.extend(new().into_iter().map(|t| (name, t)));
                for alter in alters() {
                    if let Some((_, table)) = tables.iter_mut().find(|(_, t)| t.name == alter.table)
                    {
                        alter.apply_to(table);
                    }
                }
            }
        }
    }
    tables
}

/// The description a table had when `migration` ran, before any later
/// change (what `down()` of a rebuild restores).
fn table_before(migration: &str, name: &str) -> Option<Table> {
    let mut found = AREAS
        .iter()
        .flat_map(|&(_, tables)| tables())
        .find(|t| t.name == name)?;
    for &(later_name, later) in ALTERATIONS {
        if later_name == migration {
            break;
        }
        match later {
            Later::Alter(alters) => alters()
                .iter()
                .filter(|a| a.table == name)
                .for_each(|a| a.apply_to(&mut found)),
            Later::Rebuild { tables, .. } => {
                if let Some(t) = tables().into_iter().find(|t| t.name == name) {
                    found = t;
                }
            }
            Later::Extend { alters, .. } => alters()
                .iter()
                .filter(|a| a.table == name)
                .for_each(|a| a.apply_to(&mut found)),
        }
    }
    Some(found)
}

/// The Ferry migrator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }
}

/// A migration that creates a list of tables.
struct SchemaMigration {
    name: &'static str,
    tables: Tables,
    /// PostgreSQL-only `(up, down)` statements run before the tables (down: after).
    pg_setup: &'static [(&'static str, &'static str)],
}

impl MigrationName for SchemaMigration {
    fn name(&self) -> &str {
        self.name
    }
}

fn dialect(manager: &SchemaManager) -> Result<Dialect, DbErr> {
    Dialect::of(manager.get_database_backend())
        .ok_or_else(|| DbErr::Migration("Ferry supports PostgreSQL and SQLite only".to_owned()))
}

#[async_trait::async_trait]
impl MigrationTrait for SchemaMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        if dialect == Dialect::Postgres {
            for (up, _) in self.pg_setup {
                db.execute_unprepared(up).await?;
            }
        }
        for table in (self.tables)() {
            for sql in table.create_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        for table in (self.tables)().iter().rev() {
            db.execute_unprepared(&table.drop_sql()).await?;
        }
        if dialect == Dialect::Postgres {
            for (_, down) in self.pg_setup.iter().rev() {
                db.execute_unprepared(down).await?;
            }
        }
        Ok(())
    }

    // Atomic on SQLite too: a failed migration leaves nothing behind.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// A migration that alters tables created by earlier ones.
struct AlterMigration {
    name: &'static str,
    alters: Alters,
}

impl MigrationName for AlterMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AlterMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        for alter in (self.alters)() {
            for sql in alter.up_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        for alter in (self.alters)().iter().rev() {
            for sql in alter.down_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// A migration that recreates tables nothing has written yet in a new shape
/// (SQLite cannot change a CHECK in place), and creates new ones.
struct RebuildMigration {
    name: &'static str,
    replaces: &'static [&'static str],
    tables: Tables,
}

impl MigrationName for RebuildMigration {
    fn name(&self) -> &str {
        self.name
    }
}

impl RebuildMigration {
    /// Foreign keys of other tables that reference a replaced table. SQLite
    /// binds them by name to the new table; PostgreSQL drops them with the
    /// old table (`CASCADE`), so they are added back afterwards.
    fn dependents(&self) -> Vec<(&'static str, schema::ForeignKey)> {
        let own: Vec<&str> = (self.tables)().iter().map(|t| t.name).collect();
        all_tables()
            .into_iter()
            // Tables that exist before this migration and that it leaves
            // alone (migration names sort in order).
            .filter(|(created, t)| *created < self.name && !own.contains(&t.name))
            .flat_map(|(_, t)| {
                t.foreign_keys
                    .into_iter()
                    .filter(|fk| self.replaces.contains(&fk.references))
                    .map(move |fk| (t.name, fk))
            })
            .collect()
    }

    /// Drops `tables` (children first), then recreates `new` (parents
    /// first) and the references to them from other tables.
    async fn swap(
        &self,
        manager: &SchemaManager<'_>,
        tables: &[Table],
        new: &[Table],
    ) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        let dependents = self.dependents();
        let cascade = dialect == Dialect::Postgres && !dependents.is_empty();
        for table in tables.iter().rev() {
            let sql = table.drop_sql();
            db.execute_unprepared(&if cascade {
                format!("{sql} CASCADE")
            } else {
                sql
            })
            .await?;
        }
        for table in new {
            for sql in table.create_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        if cascade {
            for (table, fk) in dependents {
                db.execute_unprepared(&format!(
                    "ALTER TABLE \"{table}\" ADD {}",
                    fk.constraint_sql(table)
                ))
                .await?;
            }
        }
        Ok(())
    }

    fn old_tables(&self) -> Result<Vec<Table>, DbErr> {
        self.replaces
            .iter()
            .map(|name| {
                table_before(self.name, name).ok_or_else(|| {
                    DbErr::Migration(format!("{}: no earlier table {name}", self.name))
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl MigrationTrait for RebuildMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for name in self.replaces {
            let rows = db
                .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                    manager.get_database_backend(),
                    format!("SELECT 1 AS one FROM \"{name}\" LIMIT 1"),
                ))
                .await?;
            if rows.is_some() {
                return Err(DbErr::Migration(format!(
                    "{}: table {name} holds rows written outside Ferry; \
                     move them aside (they cannot be converted) and migrate again",
                    self.name
                )));
            }
        }
        self.swap(manager, &self.old_tables()?, &(self.tables)())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.swap(manager, &(self.tables)(), &self.old_tables()?)
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// A migration that creates new tables and alters earlier ones.
struct ExtendMigration {
    name: &'static str,
    tables: Tables,
    alters: Alters,
}

impl MigrationName for ExtendMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ExtendMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        for table in (self.tables)() {
            for sql in table.create_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        for alter in (self.alters)() {
            for sql in alter.up_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let dialect = dialect(manager)?;
        let db = manager.get_connection();
        for alter in (self.alters)().iter().rev() {
            for sql in alter.down_sql(dialect) {
                db.execute_unprepared(&sql).await?;
            }
        }
        for table in (self.tables)().iter().rev() {
            db.execute_unprepared(&table.drop_sql()).await?;
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
