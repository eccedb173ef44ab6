//! Projects get a generated namespace (`ferry-<slug>-<12 hex of the id>`)
//! instead of using the user's slug as the namespace: a tenant could name a
//! project after a namespace Ferry does not own. The slug becomes a display
//! and URL name, unique within its organization only.

use crate::schema::{Alter, ColumnDefault as D, Ty::*};

pub(crate) fn alters() -> Vec<Alter> {
    vec![
        Alter::table("projects")
            .add_def("namespace", Text, D::Text(""))
            // The same derivation as the api's `project_namespace`: the id's
            // last 12 hex digits are random bits of the UUIDv7.
            .backfill(
                "UPDATE projects SET namespace = 'ferry-' || rtrim(left(slug, 40), '-') \
                 || '-' || right(replace(id::text, '-', ''), 12)",
                "UPDATE projects SET namespace = 'ferry-' || rtrim(substr(slug, 1, 40), '-') \
                 || '-' || lower(hex(substr(id, 11, 6)))",
            )
            .unique("idx_projects_namespace", "namespace")
            .drop_unique("idx_projects_slug", "slug")
            .unique("idx_projects_org_slug", "organization_id, slug"),
    ]
}
