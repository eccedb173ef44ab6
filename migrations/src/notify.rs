//! PostgreSQL statement triggers that `pg_notify` a channel at commit, the
//! way several migrations announce changes to listening api replicas.
//! Delivered at commit, dropped on rollback, one per transaction and
//! channel. SQLite gets nothing (one process owns the file).

use crate::schema::Alter;

/// PostgreSQL only: `[pg up, sqlite up, pg down, sqlite down]`.
fn pg_only(up: String, down: String) -> [String; 4] {
    [up, String::new(), down, String::new()]
}

/// A function `{channel}_notify()` sending `payload` on `channel`, and per
/// `(table, events)` a trigger `{channel}_{table}` firing it once per
/// statement on those events. The function belongs to the first table's
/// alteration. Names come only from the migrations' own constants.
pub(crate) fn statement_triggers(
    channel: &str,
    payload: &str,
    sources: &[(&'static str, &str)],
) -> Vec<Alter> {
    let Some((first, _)) = sources.first() else {
        return Vec::new();
    };
    // `OR REPLACE`: `migrate fresh` drops tables, not functions.
    let function = Alter::table(first).sql(pg_only(
        format!(
            "CREATE OR REPLACE FUNCTION {channel}_notify() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{channel}', '{payload}'); \
             RETURN NULL; END $$"
        ),
        format!("DROP FUNCTION {channel}_notify()"),
    ));
    let triggers = sources.iter().map(|(table, events)| {
        Alter::table(table).sql(pg_only(
            format!(
                "CREATE TRIGGER {channel}_{table} AFTER {events} ON {table} \
                 FOR EACH STATEMENT EXECUTE FUNCTION {channel}_notify()"
            ),
            format!("DROP TRIGGER {channel}_{table} ON {table}"),
        ))
    });
    std::iter::once(function).chain(triggers).collect()
}
