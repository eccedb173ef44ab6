//! Notifications: channels, subscriptions, the outbox and deliveries.
//!
//! `notification_channels` was drafted in m0004 and never written: its kind
//! list lacked Microsoft Teams and Google Chat (SQLite cannot widen a CHECK
//! in place) and its `events` JSON could not carry a per-project filter nor
//! be constrained. This migration recreates it (refusing if it holds a row)
//! without `events`, with `target_hint` (the redacted webhook URL shown to
//! users, so listing never decrypts) and `created_by`.
//!
//! - `notification_subscriptions`: one row per channel × event kind ×
//!   optional project (NULL: every project of the organization). Two unique
//!   indexes, because NULLs are distinct in a unique index: one for the
//!   organization-wide row, one for per-project rows.
//! - `notification_outbox`: one row per event, written by the producer in
//!   the same transaction as the state change it reports (a deployment
//!   finishing, a job run failing, ...). `dispatched_at` is set when the
//!   delivery worker has fanned it out to the subscribed channels.
//! - `notification_deliveries`: one row per event × channel, unique, so
//!   each channel gets each event exactly once however many workers race.
//!   A sender claims an attempt with a conditional UPDATE (attempts and
//!   `next_attempt_at` move forward) before it sends.
//!
//! Event kinds are plain text (checked by length, validated by
//! `ferry_db::outbox::EventKind`) rather than a CHECK list: the outbox
//! holds rows, and a later kind must not need a table rebuild.

use crate::schema::{ColumnDefault as D, OnDelete::*, Table, Ty::*};

/// The tables this migration drops and recreates.
pub(crate) const REPLACES: &[&str] = &["notification_channels"];

/// Channel kinds, in the order the api documents them.
pub const CHANNEL_KINDS: &[&str] = &[
    "slack",
    "discord",
    "teams",
    "google_chat",
    "webhook",
    "email",
];

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("notification_channels")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .enum_col("kind", "NotificationKind", CHANNEL_KINDS, None)
            // Non-secret settings: `{"recipients": [...]}` for e-mail.
            .def("config", Json, D::Json("{}"))
            // Webhook URLs carry their token: encrypted, never returned.
            .null("webhook_url", Encrypted)
            // The generic webhook's HMAC key.
            .null("signing_secret", Encrypted)
            // What users see of the URL: `https://hooks.slack.com/…/XXXX`.
            .null("target_hint", Text)
            .flag("enabled", true)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .check_sql(
                "target_hint",
                "target_hint IS NULL OR length(target_hint) <= 300",
            )
            .unique(
                "idx_notification_channels_org_name",
                "organization_id, name",
            ),
        Table::new("notification_subscriptions")
            .fk("channel_id", "notification_channels", Cascade)
            .fk("organization_id", "organizations", Cascade)
            .col("event", Text)
            // NULL: every project of the organization.
            .fk_null("project_id", "projects", Cascade)
            .fk_null("created_by", "users", SetNull)
            .created_at()
            .check_sql("event", "length(event) BETWEEN 1 AND 64")
            .unique(
                "idx_notification_subscriptions_project",
                "channel_id, event, project_id",
            )
            .unique_where(
                "idx_notification_subscriptions_org_wide",
                "channel_id, event",
                "project_id IS NULL",
            )
            .index(
                "idx_notification_subscriptions_org_event",
                "organization_id, event",
            ),
        Table::new("notification_outbox")
            .fk("organization_id", "organizations", Cascade)
            // Not a foreign key: the event outlives a deleted project.
            .null("project_id", Uuid)
            .col("event", Text)
            .def("payload", Json, D::Json("{}"))
            .created_at()
            // Fanned out to the subscribed channels' deliveries.
            .null("dispatched_at", Timestamp)
            .check_sql("event", "length(event) BETWEEN 1 AND 64")
            .index(
                "idx_notification_outbox_pending",
                "dispatched_at, created_at",
            )
            .index("idx_notification_outbox_org", "organization_id, created_at"),
        Table::new("notification_deliveries")
            .fk("event_id", "notification_outbox", Cascade)
            .fk("channel_id", "notification_channels", Cascade)
            .fk("organization_id", "organizations", Cascade)
            .enum_col(
                "status",
                "NotificationDeliveryStatus",
                &["pending", "delivered", "failed"],
                Some("pending"),
            )
            .def("attempts", Int, D::Int(0))
            // When the next attempt may start (also a claim's expiry).
            .null("next_attempt_at", Timestamp)
            .null("last_response_code", Int)
            .null("last_error", Text)
            .null("last_attempt_at", Timestamp)
            .null("delivered_at", Timestamp)
            .timestamps()
            .check_sql("attempts", "attempts >= 0")
            .check_sql(
                "last_error",
                "last_error IS NULL OR length(last_error) <= 2048",
            )
            .unique(
                "idx_notification_deliveries_event_channel",
                "event_id, channel_id",
            )
            .index("idx_notification_deliveries_due", "status, next_attempt_at")
            .index(
                "idx_notification_deliveries_channel",
                "channel_id, created_at",
            ),
    ]
}
