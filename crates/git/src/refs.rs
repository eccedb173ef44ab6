//! Commit ids and branch names, validated before they reach git's argv.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The longest branch name accepted, in bytes.
pub const MAX_BRANCH_LEN: usize = 255;

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hex digits, kept in lower
/// case. Abbreviated ids are refused: servers only hand out commits by
/// their full id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitSha(String);

impl CommitSha {
    /// Parses a full commit id (either case; stored lower case).
    pub fn parse(value: &str) -> Result<CommitSha> {
        if !(value.len() == 40 || value.len() == 64) {
            return Err(Error::invalid(
                "commit",
                "must be a full commit id of 40 (SHA-1) or 64 (SHA-256) hex digits",
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("commit", "must be hex digits (0-9, a-f)"));
        }
        Ok(CommitSha(value.to_ascii_lowercase()))
    }

    /// All zeros: what webhooks send as `before` for a new branch.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }

    /// True for a SHA-256 repository's id.
    pub fn is_sha256(&self) -> bool {
        self.0.len() == 64
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CommitSha {
    type Err = Error;

    fn from_str(s: &str) -> Result<CommitSha> {
        CommitSha::parse(s)
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitSha({})", self.0)
    }
}

/// Checks a branch name (`main`, `release/1.2`) against git's
/// `check-ref-format` rules for `refs/heads/<branch>`, plus: no leading
/// `-` (it would read as an option) and at most 255 bytes.
pub fn validate_branch(branch: &str) -> Result<()> {
    let refuse = |reason: &str| Err(Error::invalid("branch", reason));
    if branch.is_empty() {
        return refuse("is empty");
    }
    if branch.len() > MAX_BRANCH_LEN {
        return refuse("is longer than 255 bytes");
    }
    if branch.starts_with('-') {
        return refuse("must not start with '-'");
    }
    if branch == "@" {
        return refuse("must not be '@'");
    }
    if let Some(c) = branch
        .chars()
        .find(|c| c.is_control() || " ~^:?*[\\".contains(*c))
    {
        return refuse(&format!(
            "must not contain {c:?} (no spaces, control characters or ~ ^ : ? * [ \\)"
        ));
    }
    if branch.contains("..") || branch.contains("@{") {
        return refuse("must not contain '..' or '@{'");
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.contains("//") {
        return refuse("must not start or end with '/' or contain '//'");
    }
    if branch.ends_with('.') {
        return refuse("must not end with '.'");
    }
    if branch
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return refuse("no part between slashes may start with '.' or end with '.lock'");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids() {
        let sha = CommitSha::parse(&"AB".repeat(20)).unwrap();
        assert_eq!(sha.as_str(), "ab".repeat(20));
        assert!(!sha.is_sha256());
        assert!(CommitSha::parse(&"0".repeat(40)).unwrap().is_zero());
        assert!(CommitSha::parse(&"a".repeat(64)).unwrap().is_sha256());
        for bad in [
            "",
            "abc1234",
            &"g".repeat(40),
            &"a".repeat(41),
            "-".repeat(40).as_str(),
        ] {
            let err = CommitSha::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("commit: "), "{bad}: {err}");
        }
    }

    #[test]
    fn branch_names_follow_check_ref_format() {
        for ok in [
            "main",
            "release/1.2",
            "feature/x-y_z",
            "v1.0",
            "a@b",
            "ünïcode",
        ] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=x",
            "@",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "a\u{1}",
            "a..b",
            "a@{1}",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a.lock/b",
        ] {
            let err = validate_branch(bad).unwrap_err().to_string();
            assert!(err.starts_with("branch: "), "{bad:?}: {err}");
        }
        assert!(validate_branch(&"a".repeat(256)).is_err());
    }
}
