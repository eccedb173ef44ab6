//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong talking to git or reading a checkout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input (repository URL, credentials, branch, commit, watch path,
    /// root directory) is not acceptable: `field` names it as the API does,
    /// `reason` says what to change. The api maps this to InvalidArgument.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The branch does not exist on the remote.
    #[error("branch {branch:?} not found in the repository; check the branch name")]
    BranchNotFound { branch: String },
    /// git ran and failed. `stderr` is git's own reason, redacted (no
    /// credentials) and cut to a few hundred bytes.
    #[error("git {action} failed ({status}): {stderr}{}", hint.map(|h| format!("; {h}")).unwrap_or_default())]
    Git {
        action: &'static str,
        status: String,
        stderr: String,
        hint: Option<&'static str>,
    },
    /// git did not finish in time; it was killed with its helpers.
    #[error(
        "git {action} did not finish within {}s; check that the repository URL answers, or raise the timeout",
        after.as_secs_f32()
    )]
    Timeout {
        action: &'static str,
        after: Duration,
    },
    /// The `git` binary could not be started.
    #[error("could not run git ({0}); install git and put it on PATH")]
    Spawn(std::io::Error),
    /// Reading or writing local files (temp dirs, the checkout).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// [`crate::detect::detect`] recognised nothing in the directory.
    #[error(
        "could not detect how to build {root_dir}: found none of {looked_for}; \
         add a Dockerfile or choose the build type explicitly"
    )]
    NotDetected {
        root_dir: String,
        looked_for: &'static str,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the caller's input is at fault (the api answers
    /// InvalidArgument rather than Internal or FailedPrecondition).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::Invalid { .. } | Error::NotDetected { .. })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
