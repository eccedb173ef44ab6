//! The one privilege order of organization roles.
//!
//! The CHECK lists (and so the generated enums) run from the most
//! privileged role down (`owner, admin, member, viewer`), so the generator
//! derives no `Ord` for them (`ferry_migration::codegen::RANKED_BY_HAND`).
//! [`OrgRole::rank`] is the order; `Ord` and `PartialOrd` delegate to it, so
//! `role >= OrgRole::Admin` means "admin or owner" everywhere.

use std::cmp::Ordering;

use crate::entities::enums::{InviteRole, OrgRole};

impl OrgRole {
    /// Every role, least privileged first.
    pub const ALL: [OrgRole; 4] = [
        OrgRole::Viewer,
        OrgRole::Member,
        OrgRole::Admin,
        OrgRole::Owner,
    ];

    /// Privilege rank, higher is more: viewer 10, member 20, admin 30,
    /// owner 40 (the `roles.rank` values the seed writes).
    pub const fn rank(self) -> u8 {
        match self {
            OrgRole::Viewer => 10,
            OrgRole::Member => 20,
            OrgRole::Admin => 30,
            OrgRole::Owner => 40,
        }
    }
}

impl Ord for OrgRole {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for OrgRole {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl From<InviteRole> for OrgRole {
    /// The organization role an invitation or API token grants.
    fn from(role: InviteRole) -> Self {
        match role {
            InviteRole::Admin => OrgRole::Admin,
            InviteRole::Member => OrgRole::Member,
            InviteRole::Viewer => OrgRole::Viewer,
        }
    }
}

impl InviteRole {
    /// The rank of the organization role this grants ([`OrgRole::rank`]).
    pub const fn rank(self) -> u8 {
        match self {
            InviteRole::Admin => OrgRole::Admin.rank(),
            InviteRole::Member => OrgRole::Member.rank(),
            InviteRole::Viewer => OrgRole::Viewer.rank(),
        }
    }
}

impl Ord for InviteRole {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for InviteRole {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable as _;

    use super::*;

    #[test]
    fn owner_is_highest_and_viewer_lowest() {
        assert!(OrgRole::Viewer < OrgRole::Member);
        assert!(OrgRole::Member < OrgRole::Admin);
        assert!(OrgRole::Admin < OrgRole::Owner);
        assert_eq!(OrgRole::iter().max(), Some(OrgRole::Owner));
        assert_eq!(OrgRole::iter().min(), Some(OrgRole::Viewer));
        let mut sorted: Vec<OrgRole> = OrgRole::iter().collect();
        sorted.sort();
        assert_eq!(sorted, OrgRole::ALL);
        // rank and Ord agree, pairwise.
        for a in OrgRole::ALL {
            for b in OrgRole::ALL {
                assert_eq!(a.cmp(&b), a.rank().cmp(&b.rank()), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn invite_roles_rank_as_the_roles_they_grant() {
        for role in InviteRole::iter() {
            assert_eq!(role.rank(), OrgRole::from(role).rank());
        }
        assert!(InviteRole::Viewer < InviteRole::Member);
        assert!(InviteRole::Member < InviteRole::Admin);
        assert!(OrgRole::from(InviteRole::Admin) < OrgRole::Owner);
    }

    #[test]
    fn the_seeded_roles_table_is_listed_lowest_first() {
        let seeded: Vec<OrgRole> = crate::seed::ROLES.iter().map(|(r, _, _)| *r).collect();
        assert_eq!(seeded, OrgRole::ALL);
        for (role, rank, _) in crate::seed::ROLES {
            assert_eq!(i32::from(role.rank()), *rank, "{role:?}");
        }
    }
}
