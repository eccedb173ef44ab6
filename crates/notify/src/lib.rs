//! `ferry-notify`: what the api (`TestChannel`) and the scheduler's
//! delivery worker share to tell people about events.
//!
//! - [`target`]: which webhook URLs are accepted (http(s) only, bounded,
//!   no private or loopback targets unless the operator allows them) and
//!   how they are shown (redacted).
//! - [`format`]: the message body per channel kind (Slack, Discord,
//!   Microsoft Teams, Google Chat, the signed generic webhook, e-mail).
//! - [`sign`]: the generic webhook's `Ferry-Signature` header.
//! - [`send`]: one delivery attempt (HTTP with a per-request timeout over a
//!   resolver that refuses private addresses; e-mail through the
//!   organization's SMTP settings).
//! - [`smtp`]: the one SMTP client (also the api's invitation e-mails).
//! - [`worker`]: the outbox fan-out and the retried deliveries.

pub mod error;
pub mod format;
pub mod send;
pub mod sign;
pub mod smtp;
pub mod target;
pub mod worker;

pub use error::{Error, Result};
pub use format::Notification;
pub use send::{Outcome, SendConfig, Sender};
pub use worker::{Worker, WorkerConfig};
