//! Domains a project proves it owns (DNS TXT challenge).
//!
//! `domains` was drafted in m0003 and never written: it had no project, no
//! wildcard flag and no record of who verified it how. The columns are
//! added (the table keeps its references from `routes` and `certificates`
//! and its feed trigger). `name` stays the bare host name: a wildcard
//! `*.example.com` is `name = 'example.com', wildcard = true`, so the
//! per-organization unique name means one entry per name (apex or
//! wildcard). `project_id` references `projects` (CASCADE; the constraint
//! is part of the added column's definition, which SQLite accepts).

use crate::schema::{Alter, ColumnDefault as D, OnDelete, Ty::*};

pub(crate) fn alters() -> Vec<Alter> {
    vec![
        Alter::table("domains")
            .add_fk_null("project_id", "projects", OnDelete::Cascade)
            .add_def("wildcard", Bool, D::Bool(false))
            // `dns` or `operator`.
            .add_null("verification_method", Text)
            .add_null("verified_by", Uuid)
            .add_null("last_checked_at", Timestamp)
            .add_null("last_check_error", Text)
            .index("idx_domains_project_id", "project_id"),
    ]
}
