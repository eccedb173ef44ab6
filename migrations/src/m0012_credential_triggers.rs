//! On PostgreSQL every committed change that can end a credential
//! announces itself (`pg_notify('ferry_credentials', '')`, delivered at
//! commit, dropped on rollback): every api replica forgets the credentials
//! it cached (`ferry_api::auth::cache`). Only the columns that decide
//! whether a credential is valid fire, so recording activity
//! (`sessions.last_active_at`, `api_tokens.last_used_at`) does not.

use crate::schema::Alter;

/// Tables and the events on them that can end a credential.
const SOURCES: [(&str, &str); 3] = [
    (
        "sessions",
        "DELETE OR TRUNCATE OR UPDATE OF token_hash, expires_at, user_id",
    ),
    (
        "api_tokens",
        "DELETE OR TRUNCATE OR UPDATE OF token_hash, expires_at, revoked_at, role, organization_id, user_id",
    ),
    ("users", "DELETE OR TRUNCATE OR UPDATE OF is_super_admin"),
];

pub(crate) fn alters() -> Vec<Alter> {
    crate::notify::statement_triggers("ferry_credentials", "", &SOURCES)
}
