//! Prints the foreign keys, CHECK constraints and indexes as Markdown tables,
//! for docs/data-model.md (the schema test checks the doc lists them all).

use ferry_migration::schema::{CheckExpr, Dialect, OnDelete};

fn main() {
    let tables = ferry_migration::all_tables();
    println!("### Foreign keys\n\n| Column | References | On delete |\n|---|---|---|");
    for (_, t) in &tables {
        for fk in &t.foreign_keys {
            let rule = match fk.on_delete {
                OnDelete::Cascade => "CASCADE",
                OnDelete::SetNull => "SET NULL",
                OnDelete::Restrict => "RESTRICT (NO ACTION)",
            };
            println!(
                "| `{}.{}` | `{}` | {rule} |",
                t.name, fk.column, fk.references
            );
        }
    }
    println!("\n### CHECK constraints\n\n| Constraint | Rule (PostgreSQL form) |\n|---|---|");
    for (_, t) in &tables {
        for ck in &t.checks {
            let rule = match &ck.expr {
                CheckExpr::In { column, values } => format!("`{column}` in {}", values.join(", ")),
                other => format!("`{}`", other.render(Dialect::Postgres).replace('|', "\\|")),
            };
            println!("| `{}` | {rule} |", ck.name);
        }
    }
    println!("\n### Indexes\n\n| Index | Table | Columns | Kind |\n|---|---|---|---|");
    for (_, t) in &tables {
        for ix in &t.indexes {
            let kind = match (ix.unique, ix.predicate) {
                (true, Some(p)) => format!("unique, partial: `WHERE {p}`"),
                (true, None) => "unique".to_owned(),
                (false, _) => "".to_owned(),
            };
            println!(
                "| `{}` | `{}` | `{}` | {kind} |",
                ix.name,
                t.name,
                ix.columns.replace('"', "")
            );
        }
    }
}
