//! One deployment in progress per service, enforced by the database (two
//! concurrent `Deploy` calls cannot both proceed, on any backend), and a
//! lease on each in-progress rollout so that with several api replicas
//! exactly one of them drives (or resumes) it.

use crate::schema::{Alter, Ty::*};

pub(crate) fn alters() -> Vec<Alter> {
    vec![
        Alter::table("deployments")
            // Which api replica drives the rollout, and until when; another
            // replica may take it over once the lease has expired.
            .add_null("lease_owner", Text)
            .add_null("lease_expires_at", Timestamp)
            // Older duplicates (possible before this index) lose.
            .backfill(
                "UPDATE deployments SET status = 'failed', \
                 error_message = 'superseded by a later deployment of the same service' \
                 WHERE status IN ('pending', 'deploying') AND EXISTS (\
                 SELECT 1 FROM deployments d2 WHERE d2.service_id = deployments.service_id \
                 AND d2.status IN ('pending', 'deploying') AND d2.created_at > deployments.created_at)",
                "UPDATE deployments SET status = 'failed', \
                 error_message = 'superseded by a later deployment of the same service' \
                 WHERE status IN ('pending', 'deploying') AND EXISTS (\
                 SELECT 1 FROM deployments d2 WHERE d2.service_id = deployments.service_id \
                 AND d2.status IN ('pending', 'deploying') AND d2.created_at > deployments.created_at)",
            )
            .unique_where(
                "idx_deployments_one_in_progress",
                "service_id",
                "status IN ('pending', 'deploying')",
            ),
    ]
}
