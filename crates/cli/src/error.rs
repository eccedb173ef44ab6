//! Errors as the user sees them: one line saying what went wrong in words
//! (never a Rust debug dump), an optional hint, and a documented exit code.

use std::fmt;

/// Exit codes (documented in `ferry --help` and the crate README).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other error (server unreachable, precondition, conflict...).
    pub const ERROR: i32 = 1;
    /// Usage: bad flags or arguments, no server/org/project selected.
    pub const USAGE: i32 = 2;
    /// Not logged in, or the session/token expired or was revoked.
    pub const UNAUTHENTICATED: i32 = 3;
    /// Not found, or not allowed.
    pub const NOT_FOUND: i32 = 4;
    /// The server refused a field of the request.
    pub const INVALID_ARGUMENT: i32 = 5;
    /// A deployment (rollout) failed.
    pub const ROLLOUT_FAILED: i32 = 6;
    /// A followed build failed, timed out or was cancelled.
    pub const BUILD_FAILED: i32 = 7;
}

/// The exit-code table shown at the end of `ferry --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (server unreachable, failed precondition, conflict, ...)
  2  usage (bad arguments; no server, organization, project or service selected)
  3  unauthenticated (run `ferry login`)
  4  not found or permission denied
  5  invalid argument (the server names the field)
  6  deployment failed
  7  build failed, timed out or was cancelled (`--follow`)";

/// A user-facing error.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code, one of [`exit`].
    pub code: i32,
    /// What went wrong, one line.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

/// Result alias for the CLI.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// An error with `code` and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A general error (exit 1).
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(exit::ERROR, message)
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    /// Adds a hint line.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

/// The meaning of a gRPC code in words.
pub fn code_words(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "timed out",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "too many requests",
        Code::FailedPrecondition => "not possible now",
        Code::Aborted => "aborted (conflict), try again",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not supported by this server",
        Code::Internal => "internal server error",
        Code::Unavailable => "server unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "not logged in or the session expired",
    }
}

/// The field an `InvalidArgument` message names: the server's messages
/// start with `field: reason` (dotted or indexed paths allowed).
pub fn invalid_field(message: &str) -> Option<(&str, &str)> {
    let (field, reason) = message.split_once(": ")?;
    let ok = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'));
    ok.then_some((field, reason))
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let words = code_words(status.code());
        let message = status.message().trim();
        let code = match status.code() {
            Code::Unauthenticated => exit::UNAUTHENTICATED,
            Code::NotFound | Code::PermissionDenied => exit::NOT_FOUND,
            Code::InvalidArgument => exit::INVALID_ARGUMENT,
            _ => exit::ERROR,
        };
        let text = match (status.code(), invalid_field(message)) {
            (Code::InvalidArgument, Some((field, reason))) => {
                format!("{words}: field `{field}`: {reason}")
            }
            _ if message.is_empty() => words.to_string(),
            _ => format!("{words}: {message}"),
        };
        let err = CliError::new(code, text);
        match status.code() {
            Code::Unauthenticated => err.hint("run `ferry login` (or set FERRY_TOKEN)"),
            Code::Unavailable => err.hint("check the server address (`ferry context list`)"),
            Code::ResourceExhausted => match status.metadata().get("retry-after") {
                Some(after) => err.hint(format!(
                    "retry after {} s",
                    after.to_str().unwrap_or("a few")
                )),
                None => err,
            },
            _ => err,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError::msg(err.to_string())
    }
}

/// `err` and its sources, joined by `: ` (transport errors hide the cause).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field() {
        let err = CliError::from(tonic::Status::invalid_argument("name: must not be empty"));
        assert_eq!(err.code, exit::INVALID_ARGUMENT);
        assert_eq!(
            err.message,
            "invalid argument: field `name`: must not be empty"
        );
        let err = CliError::from(tonic::Status::invalid_argument("bad thing happened: x"));
        assert_eq!(err.message, "invalid argument: bad thing happened: x");
    }

    #[test]
    fn codes_map_to_exit_codes() {
        assert_eq!(
            CliError::from(tonic::Status::unauthenticated("")).code,
            exit::UNAUTHENTICATED
        );
        assert_eq!(
            CliError::from(tonic::Status::permission_denied("no")).code,
            exit::NOT_FOUND
        );
        assert_eq!(
            CliError::from(tonic::Status::internal("x")).code,
            exit::ERROR
        );
    }
}
