//! Domains a project proves it owns (DNS TXT challenge).
//!
//! `domains` was drafted in m0003 and never written: it had no project, no
//! wildcard flag and no record of who verified it how. The columns are
//! added (the table keeps its references from `routes` and `certificates`
//! and its feed trigger). `name` stays the bare host name: a wildcard
//! `*.example.com` is `name = 'example.com', wildcard = true`, so the
//! per-organization unique name means one entry per name (apex or
//! wildcard). On PostgreSQL `project_id` references `projects` (CASCADE);
//! SQLite cannot add a constraint to an existing table, so there the api
//! removes a project's domains itself.

use crate::schema::{Alter, ColumnDefault as D, Ty::*};

pub(crate) fn alters() -> Vec<Alter> {
    vec![
        Alter::table("domains")
            .add_null("project_id", Uuid)
            .add_def("wildcard", Bool, D::Bool(false))
            // `dns` or `operator`.
            .add_null("verification_method", Text)
            .add_null("verified_by", Uuid)
            .add_null("last_checked_at", Timestamp)
            .add_null("last_check_error", Text)
            .index("idx_domains_project_id", "project_id")
            .sql([
                "ALTER TABLE domains ADD CONSTRAINT fk_domains_project_id FOREIGN KEY (project_id) \
                 REFERENCES projects (id) ON DELETE CASCADE"
                    .into(),
                String::new(),
                "ALTER TABLE domains DROP CONSTRAINT fk_domains_project_id".into(),
                String::new(),
            ]),
    ]
}
