//! On PostgreSQL every committed change to a table the route feed is built
//! from announces itself (`pg_notify('ferry_route_feed', 'db')`, delivered
//! at commit, dropped on rollback, one per transaction): every api replica,
//! the writer included, reloads the feed, so no handler can forget to tell
//! the proxies. SQLite is one process: there the handlers' explicit
//! `FeedHub::notify_committed` and the periodic reload remain.

use crate::schema::Alter;

/// The tables `feed::load` reads.
const FEED_TABLES: [&str; 8] = [
    "routes",
    "route_targets",
    "domains",
    "certificates",
    "services",
    "service_ports",
    "projects",
    "organizations",
];

/// PostgreSQL only: `[pg up, sqlite up, pg down, sqlite down]`.
fn pg_only(up: String, down: String) -> [String; 4] {
    [up, String::new(), down, String::new()]
}

pub(crate) fn alters() -> Vec<Alter> {
    // `OR REPLACE`: `migrate fresh` drops tables, not functions.
    let function = Alter::table("routes").sql(pg_only(
        "CREATE OR REPLACE FUNCTION ferry_route_feed_notify() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('ferry_route_feed', 'db'); \
         RETURN NULL; END $$"
            .into(),
        "DROP FUNCTION ferry_route_feed_notify()".into(),
    ));
    let triggers = FEED_TABLES.iter().map(|table| {
        Alter::table(table).sql(pg_only(
            format!(
                "CREATE TRIGGER ferry_route_feed_{table} \
                 AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} \
                 FOR EACH STATEMENT EXECUTE FUNCTION ferry_route_feed_notify()"
            ),
            format!("DROP TRIGGER ferry_route_feed_{table} ON {table}"),
        ))
    });
    std::iter::once(function).chain(triggers).collect()
}
