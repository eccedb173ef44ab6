//! Audit retention that keeps chains verifiable: when retention deletes
//! the oldest rows of an audit chain, it records in the same transaction
//! where the chain now starts (the hash of the last deleted row, its time
//! and id, and how many rows were cut in all), sealed with the
//! installation's encryption key so that a database writer without the key
//! cannot forge a later starting point. `VerifyAuditChain` starts from it.

use crate::schema::{Table, Ty::*};

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("audit_checkpoints")
            // `global` or an organization id (as in `details.chain`).
            .col("chain", Text)
            .col("last_hash", Text)
            .col("through_created_at", Timestamp)
            .col("through_id", Uuid)
            .col("deleted_count", BigInt)
            // The fields above, encrypted (AES-GCM authenticates them).
            .col("seal", Encrypted)
            .timestamps()
            .check_sql("chain", "length(chain) BETWEEN 1 AND 64")
            .check_sql("deleted_count", "deleted_count > 0")
            .unique("idx_audit_checkpoints_chain", "chain"),
    ]
}
