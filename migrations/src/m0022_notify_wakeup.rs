//! On PostgreSQL every committed insert into `notification_outbox`
//! announces itself (`pg_notify('ferry_notifications', '')`, delivered at
//! commit, dropped on rollback, one per transaction): the scheduler holding
//! the `notifications` lease wakes and delivers at once instead of at its
//! next poll. SQLite keeps polling.

use crate::schema::Alter;

/// The channel ferry-scheduler's delivery loop listens on.
pub const CHANNEL: &str = "ferry_notifications";

pub(crate) fn alters() -> Vec<Alter> {
    crate::notify::statement_triggers(CHANNEL, "", &[("notification_outbox", "INSERT")])
}
