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

pub(crate) fn alters() -> Vec<Alter> {
    let sources = FEED_TABLES.map(|table| (table, "INSERT OR UPDATE OR DELETE OR TRUNCATE"));
    crate::notify::statement_triggers("ferry_route_feed", "db", &sources)
}
