//! Domains whose proof disappeared: ferry-scheduler re-checks verified
//! domains' TXT records and sets `verification_lost_at` when the record is
//! gone (a definite answer, never a timeout). The domain stays verified for
//! the routes it already has; new routes under it are refused until the
//! owner verifies it again (or the record is back at the next check).
//! The index serves the re-check's "verified, oldest check first" scan.

use crate::schema::{Alter, Ty::*};

pub(crate) fn alters() -> Vec<Alter> {
    vec![
        Alter::table("domains")
            .add_null("verification_lost_at", Timestamp)
            .index("idx_domains_last_checked_at", "last_checked_at"),
    ]
}
