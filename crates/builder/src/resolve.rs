//! The builder's own git work: resolve a branch, diff a push, check out a
//! commit to detect its build type. Each operation holds one of
//! `--max-concurrent-resolves` permits, so a burst of pushes queues here
//! instead of forking hundreds of gits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_git::{Changes, CommitSha, Detection, Git, Remote};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::Result;

/// Runs git operations with bounded concurrency.
#[derive(Debug)]
pub struct Resolver {
    git: Git,
    permits: Arc<Semaphore>,
    work_dir: WorkDir,
}

/// Where detection checkouts go.
#[derive(Debug)]
enum WorkDir {
    /// Private, removed with the builder.
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Resolver {
    pub fn new(config: &Config) -> Result<Resolver> {
        let work_dir = match &config.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                WorkDir::Given(dir.clone())
            }
            None => WorkDir::Temp(
                tempfile::Builder::new()
                    .prefix("ferry-builder-")
                    .tempdir()?,
            ),
        };
        Ok(Resolver {
            git: Git::new().with_timeout(config.git_timeout),
            permits: Arc::new(Semaphore::new(config.max_concurrent_resolves)),
            work_dir,
        })
    }

    fn dir(&self) -> &Path {
        match &self.work_dir {
            WorkDir::Temp(dir) => dir.path(),
            WorkDir::Given(dir) => dir,
        }
    }

    /// The commit `branch` is at.
    pub async fn resolve(&self, remote: &Remote, branch: &str) -> ferry_git::Result<CommitSha> {
        // The permit (or the closed-semaphore error, which cannot happen:
        // nothing closes it) is held until the operation ends.
        let _permit = self.permits.acquire().await;
        self.git.resolve(remote, branch).await
    }

    /// The paths a push changed.
    pub async fn changes(
        &self,
        remote: &Remote,
        before: &CommitSha,
        after: &CommitSha,
    ) -> ferry_git::Result<Changes> {
        let _permit = self.permits.acquire().await;
        self.git.changed_paths(remote, before, after).await
    }

    /// Checks `sha` out shallowly into a fresh directory, detects how to
    /// build `root_dir` of it, and removes the checkout (on error and on
    /// cancellation too).
    pub async fn detect(
        &self,
        remote: &Remote,
        sha: &CommitSha,
        root_dir: &str,
    ) -> ferry_git::Result<Detection> {
        let _permit = self.permits.acquire().await;
        let scratch = Scratch::new(self.dir())?;
        self.git.checkout(remote, sha, scratch.path()).await?;
        let root_dir = root_dir.to_owned();
        tokio::task::spawn_blocking(move || ferry_git::detect::detect(scratch.path(), &root_dir))
            .await
            .map_err(|e| ferry_git::Error::Io {
                context: "build type detection".into(),
                source: std::io::Error::other(e),
            })?
    }
}

/// A checkout directory that is removed when dropped, off the async
/// threads (a checkout can be large).
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new(parent: &Path) -> ferry_git::Result<Scratch> {
        tempfile::Builder::new()
            .prefix("checkout-")
            .tempdir_in(parent)
            .map(|dir| Scratch(Some(dir)))
            .map_err(|source| ferry_git::Error::Io {
                context: format!("creating a checkout directory in {}", parent.display()),
                source,
            })
    }

    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(dir))),
            Err(_) => drop(dir),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use ferry_git::testing::GitServer;
    use ferry_git::{RepoUrl, UrlOptions};

    use super::*;

    #[tokio::test]
    async fn git_work_waits_for_a_permit_and_leaves_no_checkout() {
        let server = GitServer::start().await.unwrap();
        let repo = server.create_repo("app").await.unwrap();
        let sha = repo
            .commit("main", &[("index.html", "<h1>hi</h1>")])
            .await
            .unwrap();
        let work = tempfile::tempdir().unwrap();
        let config = Config {
            max_concurrent_resolves: 1,
            work_dir: Some(work.path().to_owned()),
            ..Config::default()
        };
        let resolver = Resolver::new(&config).unwrap();
        let url = RepoUrl::parse_with(repo.url(), UrlOptions { allow_http: true }).unwrap();
        let remote = Remote::public(url);

        // The only permit is taken: the resolve waits, touching nothing.
        let held = resolver.permits.clone().acquire_owned().await.unwrap();
        let waiting = resolver.resolve(&remote, "main");
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut waiting)
                .await
                .is_err()
        );
        assert_eq!(server.requests(), 0);
        drop(held);
        assert_eq!(waiting.await.unwrap(), sha);

        let detection = resolver.detect(&remote, &sha, "").await.unwrap();
        assert_eq!(detection.build_type, ferry_git::BuildType::Static);
        // The checkout is removed (off the async threads, so give it a moment).
        for _ in 0..100 {
            if std::fs::read_dir(work.path()).unwrap().next().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the checkout was left in {}", work.path().display());
    }
}
