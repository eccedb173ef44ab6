//! Ferry's git layer, used by the builder and the api: it drives the system
//! `git` binary (never a shell, never a string built from user input).
//!
//! - [`RepoUrl`] and [`Remote`]: which repositories may be reached (only
//!   `https://`, `ssh://`, `user@host:path`; `http://` on request) and with
//!   which credentials ([`Auth`]).
//! - [`Git`]: [`Git::resolve`] a branch to a commit, [`Git::checkout`] an
//!   exact commit shallowly, [`Git::changed_paths`] of a push from the real
//!   diff.
//! - [`watch::Matcher`]: monorepo watch paths over those changes.
//! - [`detect::detect`]: what a checkout is and how Ferry would build it.
//!
//! Every git command runs with a scrubbed environment, a private `HOME`,
//! `GIT_ALLOW_PROTOCOL`, no terminal prompts, a deadline and capped output;
//! credentials go through the environment and a 0600 temp file, never argv,
//! and are redacted from errors.
//!
//! With the `testing` feature, [`testing::GitServer`] is a real smart-HTTP
//! git server on 127.0.0.1 (`git http-backend` behind hyper) for tests, and
//! [`testing::SshServer`] serves its repositories over ssh (OpenSSH's sshd,
//! where installed).

pub mod auth;
pub mod client;
pub mod detect;
pub mod error;
pub mod refs;
pub mod repo_url;
mod run;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

pub use auth::{Auth, Provider, Remote};
pub use client::{Changes, DEFAULT_MAX_PATHS, DEFAULT_TIMEOUT, Git};
pub use detect::{BuildType, Detection};
pub use error::{Error, Result};
pub use refs::{CommitSha, validate_branch};
pub use repo_url::{RepoUrl, Transport, UrlOptions};
