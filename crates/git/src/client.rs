//! The three things Ferry asks of a remote: which commit a branch is at,
//! that exact commit's files, and which paths a push changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::Remote;
use crate::error::{Error, Result};
use crate::refs::{CommitSha, validate_branch};
use crate::run::{self, Invocation, Output, Session};

/// Default deadline of one git command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default cap on the paths [`Git::changed_paths`] returns.
pub const DEFAULT_MAX_PATHS: usize = 100_000;
/// stdout kept from `git diff-tree` (100,000 paths of ~100 bytes, and some).
const DIFF_OUTPUT_CAP: usize = 16 * 1024 * 1024;

/// A git client: the binary to run and its limits. Cheap to clone; every
/// call runs in a fresh private temp dir.
#[derive(Debug, Clone)]
pub struct Git {
    binary: PathBuf,
    timeout: Duration,
    max_paths: usize,
}

impl Default for Git {
    fn default() -> Self {
        Git {
            binary: run::default_binary(),
            timeout: DEFAULT_TIMEOUT,
            max_paths: DEFAULT_MAX_PATHS,
        }
    }
}

/// Which paths a push changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// From the real diff between the two commits. Paths are relative to
    /// the repository root, `/`-separated (non-UTF-8 bytes replaced).
    /// `capped`: there were more than the limit and only the first ones are
    /// listed; treat the push as touching everything.
    Known { paths: Vec<String>, capped: bool },
    /// The diff cannot be known (a new branch, a force push that dropped
    /// the old commit): callers build anyway.
    Unknown { reason: String },
}

impl Git {
    pub fn new() -> Git {
        Git::default()
    }

    /// The deadline of each git command (default 120 s). A command still
    /// running then is killed with its helpers.
    pub fn with_timeout(mut self, timeout: Duration) -> Git {
        self.timeout = timeout;
        self
    }

    /// The git binary (default `git` from `PATH`).
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Git {
        self.binary = binary.into();
        self
    }

    /// The most paths [`Git::changed_paths`] lists (default 100,000).
    pub fn with_max_paths(mut self, max_paths: usize) -> Git {
        self.max_paths = max_paths;
        self
    }

    /// The commit `branch` is at, from `git ls-remote`.
    pub async fn resolve(&self, remote: &Remote, branch: &str) -> Result<CommitSha> {
        validate_branch(branch)?;
        let session = Session::new(remote, self.timeout)?;
        let refname = format!("refs/heads/{branch}");
        let url = remote.url.as_str();
        let args = ["ls-remote", "--exit-code", "--", url, &refname];
        let output = self
            .run(&session, Invocation::new("ls-remote", session.dir(), args))
            .await?;
        // --exit-code: 2 means the remote answered without that ref.
        if output.status.code() == Some(2) {
            return Err(Error::BranchNotFound {
                branch: branch.to_owned(),
            });
        }
        let output = success(&session, "ls-remote", output)?;
        // ls-remote patterns match ref-name tails; keep the exact ref.
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, name)| *name == refname)
            .map(|(sha, _)| CommitSha::parse(sha))
            .unwrap_or_else(|| {
                Err(Error::BranchNotFound {
                    branch: branch.to_owned(),
                })
            })
    }

    /// Checks out exactly `sha` into `dest` (missing or empty), shallowly:
    /// `git init`, `git fetch --depth 1 origin <sha>`, `git checkout
    /// --detach`. The server must allow fetching by commit id (protocol v2
    /// servers and GitHub/GitLab/Gitea do). Submodules and LFS objects are
    /// not fetched. On error `dest` is left as it is.
    pub async fn checkout(&self, remote: &Remote, sha: &CommitSha, dest: &Path) -> Result<()> {
        let session = Session::new(remote, self.timeout)?;
        // `git init` runs in the session dir: a relative path would land there.
        let dest = &std::path::absolute(dest)
            .map_err(|e| Error::io(format!("checkout destination {}", dest.display()), e))?;
        prepare_dest(dest)?;
        self.init(&session, remote, dest, false, sha).await?;
        self.fetch(&session, dest, &["--depth", "1", "--no-tags"], sha)
            .await?;
        let args = ["checkout", "--quiet", "--detach", "FETCH_HEAD", "--"];
        self.run_ok(&session, Invocation::new("checkout", dest, args))
            .await?;
        let args = ["rev-parse", "--verify", "HEAD^{commit}"];
        let head = self
            .run_ok(&session, Invocation::new("rev-parse", dest, args))
            .await?;
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        if head != sha.as_str() {
            return Err(Error::Git {
                action: "checkout",
                status: "wrong commit".into(),
                stderr: format!("HEAD is {head}, expected {sha}"),
                hint: None,
            });
        }
        Ok(())
    }

    /// The paths that differ between `before` and `after`, from the real
    /// diff (a webhook's file list is capped and can be forged): both
    /// commits are fetched shallowly without file contents into a scratch
    /// bare repo and their trees compared. `before` all zeros (a new
    /// branch) or gone from the server (a force push) gives
    /// [`Changes::Unknown`].
    pub async fn changed_paths(
        &self,
        remote: &Remote,
        before: &CommitSha,
        after: &CommitSha,
    ) -> Result<Changes> {
        if after.is_zero() {
            return Err(Error::invalid(
                "after",
                "is all zeros (the branch was deleted); there is nothing to compare",
            ));
        }
        if before.is_zero() {
            return Ok(Changes::Unknown {
                reason: "new branch: there is no previous commit to compare with".into(),
            });
        }
        if before == after {
            return Ok(Changes::Known {
                paths: Vec::new(),
                capped: false,
            });
        }
        let session = Session::new(remote, self.timeout)?;
        let repo = session.dir().join("diff.git");
        self.init(&session, remote, &repo, true, after).await?;
        let shallow_treeless = ["--depth", "1", "--no-tags", "--filter=blob:none"];
        self.fetch(&session, &repo, &shallow_treeless, after)
            .await?;
        // `after` was there, so a failure now is about `before`.
        if let Err(e) = self.fetch(&session, &repo, &shallow_treeless, before).await {
            let reason = match e {
                Error::Git { stderr, .. } => stderr,
                other => other.to_string(),
            };
            return Ok(Changes::Unknown {
                reason: format!(
                    "the previous commit {before} could not be fetched (force push?): {reason}"
                ),
            });
        }
        let args = [
            "diff-tree",
            "-r",
            "-z",
            "--name-only",
            "--no-renames",
            before.as_str(),
            after.as_str(),
        ];
        let output = self
            .run_ok(
                &session,
                Invocation::new("diff", &repo, args).stdout_cap(DIFF_OUTPUT_CAP),
            )
            .await?;
        let mut entries: Vec<&[u8]> = output
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .collect();
        if output.stdout_truncated {
            // The last entry may be cut in the middle.
            entries.pop();
        }
        let capped = output.stdout_truncated || entries.len() > self.max_paths;
        let paths = entries
            .into_iter()
            .take(self.max_paths)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        Ok(Changes::Known { paths, capped })
    }

    /// `git init` with the object format the commit id implies, and the
    /// remote as `origin`.
    async fn init(
        &self,
        session: &Session,
        remote: &Remote,
        dir: &Path,
        bare: bool,
        sha: &CommitSha,
    ) -> Result<()> {
        let format = if sha.is_sha256() {
            "--object-format=sha256"
        } else {
            "--object-format=sha1"
        };
        let mut args = vec!["init", "--quiet", format];
        if bare {
            args.push("--bare");
        }
        args.push("--");
        let init = Invocation::new("init", session.dir(), args).arg_path(dir);
        self.run_ok(session, init).await?;
        let args = ["remote", "add", "--", "origin", remote.url.as_str()];
        self.run_ok(session, Invocation::new("remote add", dir, args))
            .await
            .map(drop)
    }

    async fn fetch(
        &self,
        session: &Session,
        repo: &Path,
        options: &[&str],
        sha: &CommitSha,
    ) -> Result<()> {
        let mut args = vec!["fetch", "--quiet"];
        args.extend_from_slice(options);
        args.extend(["--", "origin", sha.as_str()]);
        self.run_ok(session, Invocation::new("fetch", repo, args))
            .await
            .map(drop)
    }

    async fn run(&self, session: &Session, invocation: Invocation<'_>) -> Result<Output> {
        run::run(&self.binary, self.timeout, session, invocation).await
    }

    /// Runs and turns a non-zero exit into [`Error::Git`].
    async fn run_ok(&self, session: &Session, invocation: Invocation<'_>) -> Result<Output> {
        let action = invocation.action;
        let output = self.run(session, invocation).await?;
        success(session, action, output)
    }
}

fn success(session: &Session, action: &'static str, output: Output) -> Result<Output> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(session.failure(action, &output))
    }
}

/// The checkout goes into a new or empty directory, never over files.
fn prepare_dest(dest: &Path) -> Result<()> {
    let context = || format!("checkout destination {}", dest.display());
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::invalid(
                    "checkout destination",
                    format!("{} is not empty", dest.display()),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dest).map_err(|e| Error::io(context(), e))
        }
        Err(e) => Err(Error::io(context(), e)),
    }
}
