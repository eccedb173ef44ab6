//! Certificates: uploaded ones and ACME issuance (ferry-scheduler).
//!
//! `certificates` gains `source` (`uploaded` or `acme`) and `hostnames`
//! (the leaf's DNS names, a JSON array) so the api can list what a
//! certificate covers without parsing PEM, and the feed can hand a proxy
//! only the hosts it really covers.
//!
//! `acme_accounts`: one ACME account per directory URL (per installation),
//! its credentials (the account key included) encrypted.
//!
//! `certificate_orders`: the ACME state of one domain: the host names it
//! should cover (every TLS route under it), where the last attempt got
//! (`status`, the CA's error text in `last_error`, `attempts`), when to try
//! again (`next_attempt_at`: backoff after failures, or the renewal time
//! once valid) and the certificate it last produced.
//!
//! `acme_challenges`: HTTP-01 answers the scheduler publishes for the
//! proxies (the api's feed reads them; a statement trigger on PostgreSQL
//! tells every api replica at commit, like the m0011 feed tables).

use crate::schema::{Alter, ColumnDefault as D, OnDelete::*, Table, Ty::*};

/// Order states, in the order they are reached.
pub const ORDER_STATES: &[&str] = &["pending", "valid", "failed"];

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("acme_accounts")
            .col("directory_url", Text)
            .null("contact", Text)
            // instant-acme's AccountCredentials (JSON, with the private key).
            .col("credentials", Encrypted)
            .timestamps()
            .check_sql("directory_url", "length(directory_url) BETWEEN 1 AND 2048")
            .unique("idx_acme_accounts_directory_url", "directory_url"),
        Table::new("certificate_orders")
            .fk("domain_id", "domains", Cascade)
            .def("hostnames", Json, D::Json("[]"))
            .enum_col(
                "status",
                "CertificateOrderStatus",
                ORDER_STATES,
                Some("pending"),
            )
            .fk_null("certificate_id", "certificates", SetNull)
            .def("attempts", Int, D::Int(0))
            .null("last_error", Text)
            .null("last_attempt_at", Timestamp)
            .col("next_attempt_at", Timestamp)
            .null("order_url", Text)
            .timestamps()
            .check_sql("attempts", "attempts >= 0")
            .check_sql(
                "last_error",
                "last_error IS NULL OR length(last_error) <= 4096",
            )
            .unique("idx_certificate_orders_domain_id", "domain_id")
            .index("idx_certificate_orders_next_attempt_at", "next_attempt_at")
            .index("idx_certificate_orders_certificate_id", "certificate_id"),
        Table::new("acme_challenges")
            .fk("order_id", "certificate_orders", Cascade)
            .col("token", Text)
            .col("key_authorization", Text)
            .col("expires_at", Timestamp)
            .created_at()
            .check_sql("token", "length(token) BETWEEN 1 AND 256")
            .check_sql(
                "key_authorization",
                "length(key_authorization) BETWEEN 1 AND 512",
            )
            .unique("idx_acme_challenges_token", "token")
            .index("idx_acme_challenges_order_id", "order_id"),
    ]
}

pub(crate) fn alters() -> Vec<Alter> {
    let mut out = vec![
        Alter::table("certificates")
            // `uploaded` or `acme` (checked by the writers).
            .add_def("source", Text, D::Text("uploaded"))
            .add_def("hostnames", Json, D::Json("[]")),
    ];
    // The feed's function exists since m0011; only the trigger is new.
    out.push(
        Alter::table("acme_challenges").sql([
            "CREATE TRIGGER ferry_route_feed_acme_challenges AFTER INSERT OR UPDATE OR DELETE \
         OR TRUNCATE ON acme_challenges FOR EACH STATEMENT EXECUTE FUNCTION \
         ferry_route_feed_notify()"
                .into(),
            String::new(),
            "DROP TRIGGER ferry_route_feed_acme_challenges ON acme_challenges".into(),
            String::new(),
        ]),
    );
    out
}
