//! Identity: users, sessions, 2FA devices and recovery codes, login throttling.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("users")
            .col("username", Text)
            .col("email", Text)
            .null("password_hash", Text)
            .null("display_name", Text)
            .null("avatar_url", Text)
            .flag("is_super_admin", false)
            .null("totp_secret", Encrypted)
            .flag("totp_enabled", false)
            .def("preferences", Json, D::Json("{}"))
            .null("last_login_at", Timestamp)
            .timestamps()
            .format("username", Format::Username)
            .format("email", Format::Email)
            .check_sql("totp", "NOT totp_enabled OR totp_secret IS NOT NULL")
            .unique("idx_users_username", "username")
            .unique("idx_users_email", "email"),
        Table::new("sessions")
            .fk("user_id", "users", Cascade)
            .col("token_hash", Text)
            .col("expires_at", Timestamp)
            .null("ip_address", Inet)
            .null("user_agent", Text)
            .created_at()
            .def("last_active_at", Timestamp, D::Now)
            .format("token_hash", Format::Sha256Hex)
            .format("ip_address", Format::Ip)
            .index("idx_sessions_user_id", "user_id")
            .unique("idx_sessions_token_hash", "token_hash")
            .index("idx_sessions_expires_at", "expires_at"),
        Table::new("trusted_devices")
            .fk("user_id", "users", Cascade)
            .col("token_hash", Text)
            .null("name", Text)
            .null("user_agent", Text)
            .col("expires_at", Timestamp)
            .null("last_used_at", Timestamp)
            .created_at()
            .format("token_hash", Format::Sha256Hex)
            .index("idx_trusted_devices_user_id", "user_id")
            .unique("idx_trusted_devices_token_hash", "token_hash"),
        Table::new("recovery_codes")
            .fk("user_id", "users", Cascade)
            .col("code_hash", Text)
            .null("used_at", Timestamp)
            .created_at()
            .format("code_hash", Format::Sha256Hex)
            .unique("idx_recovery_codes_user_code", "user_id, code_hash"),
        Table::new("auth_throttle")
            .col("key", Text)
            .def("failures", Int, D::Int(0))
            .def("window_start", Timestamp, D::Now)
            .null("locked_until", Timestamp)
            .def("updated_at", Timestamp, D::Now)
            .check_sql(
                "key",
                "(substr(key, 1, 8) = 'account:' AND length(key) > 8) \
                 OR (substr(key, 1, 3) = 'ip:' AND length(key) > 3)",
            )
            .check_sql("failures", "failures >= 0")
            .unique("idx_auth_throttle_key", "key")
            .index("idx_auth_throttle_locked_until", "locked_until"),
    ]
}
