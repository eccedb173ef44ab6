//! Tenancy and RBAC: organisations, members, invitations, API tokens and the
//! role/permission catalogue (seed 003) that the organisation roles map onto.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

/// Organisation roles: Meshploy's owner/admin/member plus Dokploy's viewer.
pub(crate) const ORG_ROLES: &[&str] = &["owner", "admin", "member", "viewer"];
/// Roles that can be granted by invitation or to an API token (never owner).
pub(crate) const GRANTABLE_ROLES: &[&str] = &["admin", "member", "viewer"];

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("organizations")
            .col("name", Text)
            .col("slug", Text)
            .def("settings", Json, D::Json("{}"))
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .format("slug", Format::Slug)
            .unique("idx_organizations_slug", "slug"),
        Table::new("organization_members")
            .fk("organization_id", "organizations", Cascade)
            .fk("user_id", "users", Cascade)
            .enum_col("role", "OrgRole", ORG_ROLES, Some("member"))
            .fk_null("invited_by", "users", SetNull)
            .def("joined_at", Timestamp, D::Now)
            .unique("idx_org_members_org_user", "organization_id, user_id")
            .index("idx_org_members_user_id", "user_id")
            .unique_where("idx_one_owner_per_org", "organization_id", "role = 'owner'"),
        Table::new("org_invitations")
            .fk("organization_id", "organizations", Cascade)
            .col("email", Text)
            .enum_col("role", "InviteRole", GRANTABLE_ROLES, Some("member"))
            .col("token_hash", Text)
            .fk_null("invited_by", "users", SetNull)
            .col("expires_at", Timestamp)
            .null("accepted_at", Timestamp)
            .null("revoked_at", Timestamp)
            .created_at()
            .format("email", Format::Email)
            .format("token_hash", Format::Sha256Hex)
            .unique("idx_org_invitations_token_hash", "token_hash")
            .unique_where(
                "idx_org_invitations_pending",
                "organization_id, email",
                "accepted_at IS NULL AND revoked_at IS NULL",
            ),
        Table::new("api_tokens")
            .fk("organization_id", "organizations", Cascade)
            .fk("user_id", "users", Cascade)
            .col("name", Text)
            .col("token_hash", Text)
            .col("token_prefix", Text)
            .enum_col("role", "InviteRole", GRANTABLE_ROLES, Some("member"))
            .null("expires_at", Timestamp)
            .null("last_used_at", Timestamp)
            .null("revoked_at", Timestamp)
            .created_at()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .format("token_hash", Format::Sha256Hex)
            .unique("idx_api_tokens_token_hash", "token_hash")
            .index("idx_api_tokens_organization_id", "organization_id"),
        Table::new("roles")
            .enum_col("name", "OrgRole", ORG_ROLES, None)
            .col("description", Text)
            .col("rank", Int)
            .created_at()
            .check_sql("rank", "rank > 0")
            .unique("idx_roles_name", "name"),
        Table::new("permissions")
            .col("name", Text)
            .col("description", Text)
            .created_at()
            .format("name", Format::PermissionName)
            .unique("idx_permissions_name", "name"),
        Table::new("role_permissions")
            .fk("role_id", "roles", Cascade)
            .fk("permission_id", "permissions", Cascade)
            .created_at()
            .unique(
                "idx_role_permissions_role_permission",
                "role_id, permission_id",
            )
            .index("idx_role_permissions_permission_id", "permission_id"),
    ]
}
