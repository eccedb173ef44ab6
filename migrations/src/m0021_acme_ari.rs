//! ACME Renewal Information (RFC 9773) and expiry notices. An order keeps
//! the renewal window its CA last suggested for the current certificate
//! (`ari_window_start`/`_end`) and when it may ask again (the answer's
//! Retry-After, `ari_next_check_at`). A certificate remembers when its
//! `certificate.expiring` notification was recorded, so it is sent once.

use crate::schema::{Alter, Ty::*};

pub(crate) fn alters() -> Vec<Alter> {
    vec![
        Alter::table("certificate_orders")
            .add_null("ari_window_start", Timestamp)
            .add_null("ari_window_end", Timestamp)
            .add_null("ari_next_check_at", Timestamp),
        Alter::table("certificates").add_null("expiring_notified_at", Timestamp),
    ]
}
