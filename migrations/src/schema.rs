//! A small, declarative description of Ferry's tables and the renderer that
//! turns it into DDL for PostgreSQL or SQLite.
//!
//! Every table is written once (see the `m00xx_*` modules); the per-backend
//! differences live only here and in [`Format`]: column types, the
//! `created_at` default and the regular-expression checks (SQLite has no
//! `REGEXP`, so those are rendered with `GLOB` and `length`). The same
//! description drives `down()` (drop in reverse order), the entity generator
//! ([`crate::codegen`]) and the schema tests.

use sea_orm_migration::sea_orm::DbBackend;

/// The SQL dialects Ferry supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL 15+.
    Postgres,
    /// SQLite 3.38+ (bundled by sqlx).
    Sqlite,
}

impl Dialect {
    /// The dialect of a sea-orm backend; MySQL is not supported.
    pub fn of(backend: DbBackend) -> Option<Self> {
        match backend {
            DbBackend::Postgres => Some(Self::Postgres),
            DbBackend::Sqlite => Some(Self::Sqlite),
            _ => None,
        }
    }
}

/// Logical column types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// UUID (the application generates UUIDv7). SQLite: 16-byte BLOB, as sqlx binds it.
    Uuid,
    /// Free text.
    Text,
    /// Text holding `ferry_db::crypto::Encrypted` ciphertext.
    Encrypted,
    /// Text restricted to `values` by a CHECK; a `DeriveActiveEnum` named `rust` in Rust.
    Enum {
        rust: &'static str,
        values: &'static [&'static str],
    },
    Bool,
    /// 32-bit integer.
    Int,
    /// 64-bit integer.
    BigInt,
    /// Double precision float.
    Real,
    /// Timestamp with time zone. SQLite: RFC 3339 text in UTC, which sorts chronologically.
    Timestamp,
    /// JSONB on PostgreSQL, JSON text on SQLite.
    Json,
    /// A host IP address: INET on PostgreSQL, text on SQLite. Written through
    /// `CAST(? AS inet_text)`, see [`PG_IP_DOMAINS`].
    Inet,
}

/// Column defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColumnDefault {
    /// The current time, in the same text format sqlx writes on SQLite.
    Now,
    Bool(bool),
    Int(i64),
    Text(&'static str),
    /// A JSON literal such as `{}` or `[]`.
    Json(&'static str),
}

/// What happens to a child row when its parent is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    Cascade,
    SetNull,
    /// Refuse to delete a parent that still has children. Rendered as
    /// `NO ACTION` (checked at the end of the statement) so that a cascade
    /// that removes both the child and the parent in one statement works.
    Restrict,
}

/// Value formats enforced by CHECK constraints, rendered per dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `^[a-z0-9_-]{3,50}$` (seed 002).
    Username,
    /// `^[^@]+@[^@]+\.[^@]+$` (seed 002), stored lower-cased.
    Email,
    /// `^[A-Z_][A-Z0-9_]*$` (seed 002).
    EnvKey,
    /// A DNS-1123 label (Kubernetes names): `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63.
    Slug,
    /// A lower-case host name with at least two labels, at most 253 characters.
    Hostname,
    /// A lower-case hex SHA-256 digest (64 characters).
    Sha256Hex,
    /// A lower-case hex git commit id, 7 to 64 characters.
    CommitSha,
    /// A permission name `resource.action`: `^[a-z_]+\.[a-z_]+$`.
    PermissionName,
    /// A host address without mask (INET validates the syntax on PostgreSQL; a
    /// character and length check on SQLite).
    Ip,
}

impl Format {
    /// The CHECK expression for `col` in `dialect`.
    pub fn render(self, col: &str, dialect: Dialect) -> String {
        use Dialect::{Postgres as Pg, Sqlite as Lite};
        match (self, dialect) {
            (Self::Username, Pg) => format!("{col} ~ '^[a-z0-9_-]{{3,50}}$'"),
            (Self::Username, Lite) => {
                format!("length({col}) BETWEEN 3 AND 50 AND {col} NOT GLOB '*[^a-z0-9_-]*'")
            }
            (Self::Email, Pg) => {
                format!("{col} ~ '^[^@]+@[^@]+\\.[^@]+$' AND {col} = lower({col})")
            }
            (Self::Email, Lite) => {
                format!("{col} GLOB '?*@?*.?*' AND {col} NOT GLOB '*@*@*' AND {col} = lower({col})")
            }
            (Self::EnvKey, Pg) => format!("{col} ~ '^[A-Z_][A-Z0-9_]*$'"),
            (Self::EnvKey, Lite) => {
                format!("{col} GLOB '[A-Z_]*' AND {col} NOT GLOB '*[^A-Z0-9_]*'")
            }
            (Self::Slug, Pg) => {
                format!("length({col}) <= 63 AND {col} ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'")
            }
            (Self::Slug, Lite) => format!(
                "length({col}) BETWEEN 1 AND 63 AND {col} NOT GLOB '*[^a-z0-9-]*' \
                 AND {col} NOT GLOB '-*' AND {col} NOT GLOB '*-'"
            ),
            (Self::Hostname, Pg) => format!(
                "length({col}) <= 253 AND \
                 {col} ~ '^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"
            ),
            (Self::Hostname, Lite) => format!(
                "length({col}) BETWEEN 3 AND 253 AND {col} NOT GLOB '*[^a-z0-9.-]*' \
                 AND {col} GLOB '*?.?*' AND {col} NOT GLOB '[.-]*' AND {col} NOT GLOB '*[.-]' \
                 AND {col} NOT GLOB '*..*' AND {col} NOT GLOB '*.-*' AND {col} NOT GLOB '*-.*'"
            ),
            (Self::Sha256Hex, Pg) => format!("{col} ~ '^[0-9a-f]{{64}}$'"),
            (Self::Sha256Hex, Lite) => {
                format!("length({col}) = 64 AND {col} NOT GLOB '*[^0-9a-f]*'")
            }
            (Self::CommitSha, Pg) => format!("{col} ~ '^[0-9a-f]{{7,64}}$'"),
            (Self::CommitSha, Lite) => {
                format!("length({col}) BETWEEN 7 AND 64 AND {col} NOT GLOB '*[^0-9a-f]*'")
            }
            (Self::PermissionName, Pg) => format!("{col} ~ '^[a-z_]+\\.[a-z_]+$'"),
            (Self::PermissionName, Lite) => format!(
                "{col} GLOB '?*.?*' AND {col} NOT GLOB '*.*.*' AND {col} NOT GLOB '*[^a-z_.]*'"
            ),
            (Self::Ip, Pg) => {
                format!("masklen({col}) = CASE family({col}) WHEN 4 THEN 32 ELSE 128 END")
            }
            (Self::Ip, Lite) => format!(
                "length({col}) BETWEEN 2 AND 45 AND {col} NOT GLOB '*[^0-9A-Fa-f.:]*' \
                 AND {col} GLOB '*[.:]*'"
            ),
        }
    }
}

/// A CHECK constraint body.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckExpr {
    /// `column IN (values)`; generated for [`Ty::Enum`] columns.
    In {
        column: &'static str,
        values: &'static [&'static str],
    },
    /// A [`Format`] applied to a column.
    Format {
        column: &'static str,
        format: Format,
    },
    /// Portable SQL, identical on both backends.
    Sql(String),
}

impl CheckExpr {
    /// The expression in `dialect`.
    pub fn render(&self, dialect: Dialect) -> String {
        match self {
            Self::In { column, values } => {
                let list: Vec<String> = values.iter().map(|v| quote_str(v)).collect();
                format!("{column} IN ({})", list.join(", "))
            }
            Self::Format { column, format } => format.render(column, dialect),
            Self::Sql(sql) => sql.clone(),
        }
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: &'static str,
    pub ty: Ty,
    pub nullable: bool,
    pub default: Option<ColumnDefault>,
    pub primary_key: bool,
}

/// A foreign key `column -> references(id)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub column: &'static str,
    pub references: &'static str,
    pub on_delete: OnDelete,
}

impl ForeignKey {
    /// The constraint as a table element of `table` (named `fk_<table>_<column>`).
    pub fn constraint_sql(&self, table: &str) -> String {
        let action = match self.on_delete {
            OnDelete::Cascade => "CASCADE",
            OnDelete::SetNull => "SET NULL",
            OnDelete::Restrict => "NO ACTION",
        };
        format!(
            "CONSTRAINT fk_{table}_{c} FOREIGN KEY (\"{c}\") REFERENCES \"{r}\" (id) ON DELETE {action}",
            c = self.column,
            r = self.references,
        )
    }
}

/// A named CHECK constraint.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub expr: CheckExpr,
}

/// A (possibly unique, possibly partial) index. `columns` is portable SQL
/// (column names, `DESC`, or expressions such as `lower(name)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub name: &'static str,
    pub unique: bool,
    pub columns: &'static str,
    pub predicate: Option<&'static str>,
}

/// A table: columns, foreign keys, checks and indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub foreign_keys: Vec<ForeignKey>,
    pub checks: Vec<Check>,
    pub indexes: Vec<Index>,
}

impl Table {
    /// A table with a UUID primary key named `id`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            columns: vec![Column {
                name: "id",
                ty: Ty::Uuid,
                nullable: false,
                default: None,
                primary_key: true,
            }],
            foreign_keys: Vec::new(),
            checks: Vec::new(),
            indexes: Vec::new(),
        }
    }

    fn push(
        mut self,
        name: &'static str,
        ty: Ty,
        nullable: bool,
        default: Option<ColumnDefault>,
    ) -> Self {
        self.columns.push(Column {
            name,
            ty,
            nullable,
            default,
            primary_key: false,
        });
        if let Ty::Enum { values, .. } = ty {
            self = self.check(
                name,
                CheckExpr::In {
                    column: name,
                    values,
                },
            );
        }
        self
    }

    /// A NOT NULL column without default.
    pub fn col(self, name: &'static str, ty: Ty) -> Self {
        self.push(name, ty, false, None)
    }

    /// A nullable column.
    pub fn null(self, name: &'static str, ty: Ty) -> Self {
        self.push(name, ty, true, None)
    }

    /// A NOT NULL column with a default.
    pub fn def(self, name: &'static str, ty: Ty, default: ColumnDefault) -> Self {
        self.push(name, ty, false, Some(default))
    }

    /// A NOT NULL text column restricted to `values`, mapped to the Rust enum `rust`.
    pub fn enum_col(
        self,
        name: &'static str,
        rust: &'static str,
        values: &'static [&'static str],
        default: Option<&'static str>,
    ) -> Self {
        self.push(
            name,
            Ty::Enum { rust, values },
            false,
            default.map(ColumnDefault::Text),
        )
    }

    /// A nullable enum column.
    pub fn enum_null(
        self,
        name: &'static str,
        rust: &'static str,
        values: &'static [&'static str],
    ) -> Self {
        self.push(name, Ty::Enum { rust, values }, true, None)
    }

    /// A NOT NULL boolean with a default.
    pub fn flag(self, name: &'static str, default: bool) -> Self {
        self.def(name, Ty::Bool, ColumnDefault::Bool(default))
    }

    /// `created_at`, defaulting to now.
    pub fn created_at(self) -> Self {
        self.def("created_at", Ty::Timestamp, ColumnDefault::Now)
    }

    /// `created_at` and `updated_at`, defaulting to now.
    pub fn timestamps(self) -> Self {
        self.created_at()
            .def("updated_at", Ty::Timestamp, ColumnDefault::Now)
    }

    /// A NOT NULL UUID column referencing `references(id)`.
    pub fn fk(self, name: &'static str, references: &'static str, on_delete: OnDelete) -> Self {
        self.push(name, Ty::Uuid, false, None)
            .foreign_key(name, references, on_delete)
    }

    /// A nullable UUID column referencing `references(id)`.
    pub fn fk_null(
        self,
        name: &'static str,
        references: &'static str,
        on_delete: OnDelete,
    ) -> Self {
        self.push(name, Ty::Uuid, true, None)
            .foreign_key(name, references, on_delete)
    }

    fn foreign_key(
        mut self,
        column: &'static str,
        references: &'static str,
        on_delete: OnDelete,
    ) -> Self {
        self.foreign_keys.push(ForeignKey {
            column,
            references,
            on_delete,
        });
        self
    }

    /// A CHECK named `ck_<table>_<what>`.
    pub fn check(mut self, what: &str, expr: CheckExpr) -> Self {
        self.checks.push(Check {
            name: format!("ck_{}_{what}", self.name),
            expr,
        });
        self
    }

    /// A portable CHECK named `ck_<table>_<what>`.
    pub fn check_sql(self, what: &str, sql: impl Into<String>) -> Self {
        self.check(what, CheckExpr::Sql(sql.into()))
    }

    /// A format CHECK named `ck_<table>_<column>`.
    pub fn format(self, column: &'static str, format: Format) -> Self {
        self.check(column, CheckExpr::Format { column, format })
    }

    /// A plain index.
    pub fn index(mut self, name: &'static str, columns: &'static str) -> Self {
        self.indexes.push(Index {
            name,
            unique: false,
            columns,
            predicate: None,
        });
        self
    }

    /// A unique index.
    pub fn unique(mut self, name: &'static str, columns: &'static str) -> Self {
        self.indexes.push(Index {
            name,
            unique: true,
            columns,
            predicate: None,
        });
        self
    }

    /// A partial unique index (`WHERE predicate`).
    pub fn unique_where(
        mut self,
        name: &'static str,
        columns: &'static str,
        predicate: &'static str,
    ) -> Self {
        self.indexes.push(Index {
            name,
            unique: true,
            columns,
            predicate: Some(predicate),
        });
        self
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `CREATE TABLE` followed by its `CREATE INDEX` statements.
    pub fn create_sql(&self, dialect: Dialect) -> Vec<String> {
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .map(|c| column_sql(c, dialect))
            .collect();
        parts.extend(
            self.foreign_keys
                .iter()
                .map(|fk| fk.constraint_sql(self.name)),
        );
        for ck in &self.checks {
            parts.push(format!(
                "CONSTRAINT {} CHECK ({})",
                ck.name,
                ck.expr.render(dialect)
            ));
        }
        let mut out = vec![format!(
            "CREATE TABLE \"{}\" (\n    {}\n)",
            self.name,
            parts.join(",\n    ")
        )];
        out.extend(self.indexes.iter().map(|ix| index_sql(self.name, ix)));
        out
    }

    /// `DROP TABLE` (indexes go with it).
    pub fn drop_sql(&self) -> String {
        format!("DROP TABLE \"{}\"", self.name)
    }
}

/// A PostgreSQL domain used only as a cast target for INET columns, so one
/// entity definition works on both backends: values are bound as text and
/// written through `CAST(? AS inet_text)`, which yields an INET on PostgreSQL
/// and is a plain text cast on SQLite (the name contains "TEXT" and not
/// "INT", so SQLite gives it TEXT affinity).
pub const PG_IP_DOMAINS: &[(&str, &str)] =
    &[("CREATE DOMAIN inet_text AS inet", "DROP DOMAIN inet_text")];

fn column_sql(c: &Column, dialect: Dialect) -> String {
    let pg = dialect == Dialect::Postgres;
    let ty = match c.ty {
        Ty::Uuid if pg => "UUID",
        Ty::Uuid => "BLOB",
        Ty::Text | Ty::Encrypted | Ty::Enum { .. } => "TEXT",
        Ty::Bool => "BOOLEAN",
        Ty::Int => "INTEGER",
        Ty::BigInt => "BIGINT",
        Ty::Real if pg => "DOUBLE PRECISION",
        Ty::Real => "REAL",
        Ty::Timestamp if pg => "TIMESTAMPTZ",
        Ty::Timestamp => "TEXT",
        Ty::Json if pg => "JSONB",
        Ty::Json => "TEXT",
        Ty::Inet if pg => "INET",
        Ty::Inet => "TEXT",
    };
    let mut sql = format!("\"{}\" {ty}", c.name);
    if c.primary_key {
        sql.push_str(" PRIMARY KEY");
    }
    if !c.nullable {
        sql.push_str(" NOT NULL");
    }
    if let Some(d) = c.default {
        let value = match d {
            ColumnDefault::Now if pg => "now()".to_owned(),
            // The format sqlx uses for DateTime<Utc>, so text comparisons stay chronological.
            ColumnDefault::Now => "(strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))".to_owned(),
            ColumnDefault::Bool(b) => if b { "TRUE" } else { "FALSE" }.to_owned(),
            ColumnDefault::Int(i) => i.to_string(),
            ColumnDefault::Text(s) | ColumnDefault::Json(s) => quote_str(s),
        };
        sql.push_str(" DEFAULT ");
        sql.push_str(&value);
    }
    sql
}

/// A single-quoted SQL string literal.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A change to a table created by an earlier migration: columns added
/// (with a per-dialect backfill) and indexes replaced. Released migrations
/// are never edited; later changes are alterations, and
/// [`crate::all_tables`] folds them into the table descriptions so the
/// entities and schema tests see the final shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Alter {
    pub table: &'static str,
    pub add_columns: Vec<Column>,
    /// `(postgres, sqlite)` UPDATE statements run after the columns exist.
    pub backfill: Vec<(&'static str, &'static str)>,
    /// Indexes dropped; `down()` recreates them.
    pub drop_indexes: Vec<Index>,
    pub add_indexes: Vec<Index>,
    /// References of added columns (a constraint in the column's
    /// definition: both backends accept one in ADD COLUMN).
    pub add_foreign_keys: Vec<ForeignKey>,
    /// Other statements run last on `up()` and first on `down()`:
    /// `(postgres up, sqlite up, postgres down, sqlite down)`; an empty
    /// string runs nothing on that backend.
    pub statements: Vec<[String; 4]>,
}

impl Alter {
    pub fn table(table: &'static str) -> Self {
        Self {
            table,
            add_columns: Vec::new(),
            backfill: Vec::new(),
            drop_indexes: Vec::new(),
            add_indexes: Vec::new(),
            add_foreign_keys: Vec::new(),
            statements: Vec::new(),
        }
    }

    /// Statements per backend, and what undoes them.
    pub fn sql(mut self, statements: [String; 4]) -> Self {
        self.statements.push(statements);
        self
    }

    /// A NOT NULL column with a default (SQLite can add no other kind of
    /// NOT NULL column); the backfill gives existing rows their real value.
    pub fn add_def(mut self, name: &'static str, ty: Ty, default: ColumnDefault) -> Self {
        self.add_columns.push(Column {
            name,
            ty,
            nullable: false,
            default: Some(default),
            primary_key: false,
        });
        self
    }

    /// A nullable column.
    pub fn add_null(mut self, name: &'static str, ty: Ty) -> Self {
        self.add_columns.push(Column {
            name,
            ty,
            nullable: true,
            default: None,
            primary_key: false,
        });
        self
    }

    pub fn backfill(mut self, postgres: &'static str, sqlite: &'static str) -> Self {
        self.backfill.push((postgres, sqlite));
        self
    }

    /// Drops a unique index `name` on `columns` (recreated by `down()`).
    pub fn drop_unique(mut self, name: &'static str, columns: &'static str) -> Self {
        self.drop_indexes.push(Index {
            name,
            unique: true,
            columns,
            predicate: None,
        });
        self
    }

    pub fn unique(mut self, name: &'static str, columns: &'static str) -> Self {
        self.add_indexes.push(Index {
            name,
            unique: true,
            columns,
            predicate: None,
        });
        self
    }

    /// A nullable UUID column referencing `references(id)`.
    pub fn add_fk_null(
        mut self,
        column: &'static str,
        references: &'static str,
        on_delete: OnDelete,
    ) -> Self {
        self = self.add_null(column, Ty::Uuid);
        self.add_foreign_keys.push(ForeignKey {
            column,
            references,
            on_delete,
        });
        self
    }

    /// A plain (non-unique) index.
    pub fn index(mut self, name: &'static str, columns: &'static str) -> Self {
        self.add_indexes.push(Index {
            name,
            unique: false,
            columns,
            predicate: None,
        });
        self
    }

    /// A partial unique index (`WHERE predicate`).
    pub fn unique_where(
        mut self,
        name: &'static str,
        columns: &'static str,
        predicate: &'static str,
    ) -> Self {
        self.add_indexes.push(Index {
            name,
            unique: true,
            columns,
            predicate: Some(predicate),
        });
        self
    }

    /// Applies the change to the table's description.
    pub fn apply_to(&self, table: &mut Table) {
        table.columns.extend(self.add_columns.iter().cloned());
        table
            .indexes
            .retain(|ix| !self.drop_indexes.iter().any(|d| d.name == ix.name));
        table.indexes.extend(self.add_indexes.iter().cloned());
        table
            .foreign_keys
            .extend(self.add_foreign_keys.iter().cloned());
    }

    pub fn up_sql(&self, dialect: Dialect) -> Vec<String> {
        let mut out: Vec<String> = self
            .add_columns
            .iter()
            .map(|c| {
                let reference = self
                    .add_foreign_keys
                    .iter()
                    .find(|fk| fk.column == c.name)
                    .map(|fk| {
                        let action = match fk.on_delete {
                            OnDelete::Cascade => "CASCADE",
                            OnDelete::SetNull => "SET NULL",
                            OnDelete::Restrict => "NO ACTION",
                        };
                        format!(
                            " CONSTRAINT fk_{}_{} REFERENCES \"{}\" (id) ON DELETE {action}",
                            self.table, fk.column, fk.references
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "ALTER TABLE \"{}\" ADD COLUMN {}{reference}",
                    self.table,
                    column_sql(c, dialect)
                )
            })
            .collect();
        out.extend(self.backfill.iter().map(|(pg, lite)| {
            match dialect {
                Dialect::Postgres => pg,
                Dialect::Sqlite => lite,
            }
            .to_string()
        }));
        out.extend(
            self.drop_indexes
                .iter()
                .map(|ix| format!("DROP INDEX {}", ix.name)),
        );
        out.extend(self.add_indexes.iter().map(|ix| index_sql(self.table, ix)));
        let up = if dialect == Dialect::Postgres { 0 } else { 1 };
        out.extend(
            self.statements
                .iter()
                .map(|s| s[up].clone())
                .filter(|s| !s.is_empty()),
        );
        out
    }

    pub fn down_sql(&self, dialect: Dialect) -> Vec<String> {
        let down = if dialect == Dialect::Postgres { 2 } else { 3 };
        let mut out: Vec<String> = self
            .statements
            .iter()
            .rev()
            .map(|s| s[down].clone())
            .filter(|s| !s.is_empty())
            .collect();
        out.extend(
            self.add_indexes
                .iter()
                .map(|ix| format!("DROP INDEX {}", ix.name)),
        );
        out.extend(self.drop_indexes.iter().map(|ix| index_sql(self.table, ix)));
        out.extend(
            self.add_columns
                .iter()
                .map(|c| format!("ALTER TABLE \"{}\" DROP COLUMN \"{}\"", self.table, c.name)),
        );
        out
    }
}

fn index_sql(table: &str, ix: &Index) -> String {
    format!(
        "CREATE {}INDEX {} ON \"{table}\" ({}){}",
        if ix.unique { "UNIQUE " } else { "" },
        ix.name,
        ix.columns,
        ix.predicate
            .map(|p| format!(" WHERE {p}"))
            .unwrap_or_default(),
    )
}
