//! Audit retention that keeps chains verifiable: when retention deletes
//! the oldest rows of an audit chain, it records in the same transaction
//! where the chain now starts (the hash of the last deleted row, its time
//! and id, and how many rows were cut in all), sealed with the
//! installation's encryption key so that a database writer without the key
//! cannot forge a later starting point. `VerifyAuditChain` starts from it.
//!
//! `audit_chain_heads` keeps each chain's newest hash outside the audited
//! rows, updated with every append: deleting the newest rows of a chain no
//! longer leaves a chain that verifies.

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
        Table::new("audit_chain_heads")
            .col("chain", Text)
            .col("last_hash", Text)
            .col("last_id", Uuid)
            .col("last_created_at", Timestamp)
            .timestamps()
            .check_sql("chain", "length(chain) BETWEEN 1 AND 64")
            .unique("idx_audit_chain_heads_chain", "chain"),
    ]
}
