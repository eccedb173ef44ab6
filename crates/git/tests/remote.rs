//! Against a real smart-HTTP git server (`git http-backend`), with the
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! real git client.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use ferry_git::testing::GitServer;
use ferry_git::watch::Matcher;
use ferry_git::{
    Auth, BuildType, Changes, CommitSha, Error, Git, Provider, Remote, RepoUrl, UrlOptions,
};
use tokio::io::AsyncWriteExt;

fn http(url: &str) -> RepoUrl {
    RepoUrl::parse_with(url, UrlOptions { allow_http: true }).unwrap()
}

fn git() -> Git {
    Git::new().with_timeout(Duration::from_secs(30))
}

/// Inspects a checkout with the plain git CLI.
fn inspect(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn sha(hex: &str) -> CommitSha {
    CommitSha::parse(hex).unwrap()
}

#[tokio::test]
async fn resolves_a_branch_to_its_commit() {
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("app").await.unwrap();
    let main = repo.commit("main", &[("README.md", "hi")]).await.unwrap();
    let feature = repo
        .commit("feature/login", &[("login.txt", "x")])
        .await
        .unwrap();
    // ls-remote matches ref tails: `other/main` must not pass for `main`.
    let decoy = repo.commit("other/main", &[("decoy", "x")]).await.unwrap();
    assert_ne!(decoy, main);
    let remote = Remote::public(http(repo.url()));

    assert_eq!(git().resolve(&remote, "main").await.unwrap(), main);
    assert_eq!(
        git().resolve(&remote, "feature/login").await.unwrap(),
        feature
    );

    let err = git().resolve(&remote, "nope").await.unwrap_err();
    assert!(matches!(err, Error::BranchNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "branch \"nope\" not found in the repository; check the branch name"
    );

    let before = server.requests();
    let err = git()
        .resolve(&remote, "--upload-pack=touch")
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert_eq!(server.requests(), before, "refused before reaching git");
}

#[tokio::test]
async fn checks_out_exactly_the_commit_asked_for_shallowly() {
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("app").await.unwrap();
    repo.commit("main", &[("app.txt", "one")]).await.unwrap();
    let second = repo.commit("main", &[("app.txt", "two")]).await.unwrap();
    repo.commit("main", &[("app.txt", "three")]).await.unwrap();
    let remote = Remote::public(http(repo.url()));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("src");

    let before = server.requests();
    git().checkout(&remote, &second, &dest).await.unwrap();
    assert!(
        server.requests() > before,
        "the commit came from the server"
    );

    assert_eq!(inspect(&dest, &["rev-parse", "HEAD"]), second.as_str());
    assert_eq!(
        std::fs::read_to_string(dest.join("app.txt")).unwrap(),
        "two"
    );
    assert!(
        dest.join(".git/shallow").is_file(),
        "fetched with --depth 1"
    );
    assert_eq!(inspect(&dest, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(inspect(&dest, &["remote", "get-url", "origin"]), repo.url());

    let err = git().checkout(&remote, &second, &dest).await.unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");

    let missing = sha(&"1".repeat(40));
    let err = git()
        .checkout(&remote, &missing, &tmp.path().join("missing"))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("git fetch failed"), "{message}");
    assert!(message.contains("not our ref"), "{message}");
    assert!(message.contains("not on the server"), "{message}");
}

#[tokio::test]
async fn private_repo_needs_the_right_token_and_never_shows_it() {
    let server = GitServer::start().await.unwrap();
    let token = "s3cr3t-t0ken-value";
    let repo = server.create_private_repo("private", token).await.unwrap();
    let head = repo.commit("main", &[("a.txt", "a")]).await.unwrap();
    let url = http(repo.url());

    let right = Remote::new(url.clone(), Auth::token_for(Provider::Gitea, token));
    assert_eq!(git().resolve(&right, "main").await.unwrap(), head);
    let tmp = tempfile::tempdir().unwrap();
    git()
        .checkout(&right, &head, &tmp.path().join("src"))
        .await
        .unwrap();
    assert_eq!(
        inspect(&tmp.path().join("src"), &["rev-parse", "HEAD"]),
        head.as_str()
    );

    let wrong_token = "wr0ng-t0ken-value";
    let wrong = Remote::new(url.clone(), Auth::token_for(Provider::GitHub, wrong_token));
    let err = git().resolve(&wrong, "main").await.unwrap_err();
    let shown = format!("{err} {err:?}");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{wrong_token}"));
    assert!(!shown.contains(wrong_token), "{shown}");
    assert!(!shown.contains(&basic), "{shown}");
    assert!(shown.contains("git ls-remote failed"), "{shown}");
    assert!(
        shown.contains("remote: credentials not valid: Basic <redacted>"),
        "git shows what the server said, redacted: {shown}"
    );
    assert!(shown.contains("returned error: 403"), "{shown}");
    assert!(shown.contains("the server refused the token"), "{shown}");

    let err = git()
        .resolve(&Remote::public(url), "main")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs credentials"), "{err}");
}

#[tokio::test]
async fn changed_paths_come_from_the_real_diff() {
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("mono").await.unwrap();
    let first = repo
        .commit(
            "main",
            &[
                ("apps/web/src/x.ts", "1"),
                ("apps/api/main.go", "1"),
                ("README.md", "1"),
                ("docs/guide.md", "1"),
            ],
        )
        .await
        .unwrap();
    let second = repo
        .commit("main", &[("apps/web/src/x.ts", "2"), ("README.md", "2")])
        .await
        .unwrap();
    let third = repo.remove("main", &["docs/guide.md"]).await.unwrap();
    let remote = Remote::public(http(repo.url()));

    let before = server.requests();
    let changes = git().changed_paths(&remote, &first, &second).await.unwrap();
    assert!(server.requests() > before, "both commits were fetched");
    let Changes::Known { paths, capped } = changes else {
        panic!("{changes:?}");
    };
    assert_eq!(paths, ["README.md", "apps/web/src/x.ts"]);
    assert!(!capped);

    let changes = git().changed_paths(&remote, &second, &third).await.unwrap();
    assert_eq!(
        changes,
        Changes::Known {
            paths: vec!["docs/guide.md".into()],
            capped: false
        },
        "deletions count"
    );

    // Watch paths over the real change list.
    let web = Matcher::new(&["apps/web/**".into()]).unwrap();
    let hit = web.matches(&paths).unwrap();
    assert_eq!(hit.to_string(), "apps/web/src/x.ts matched apps/web/**");
    let api = Matcher::new(&["apps/api/**".into(), "!**/*.md".into()]).unwrap();
    assert_eq!(api.matches(&paths), None);

    let capped = git()
        .with_max_paths(1)
        .changed_paths(&remote, &first, &second)
        .await
        .unwrap();
    assert_eq!(
        capped,
        Changes::Known {
            paths: vec!["README.md".into()],
            capped: true
        }
    );

    let zero = sha(&"0".repeat(40));
    let Changes::Unknown { reason } = git().changed_paths(&remote, &zero, &second).await.unwrap()
    else {
        panic!("a new branch has no diff");
    };
    assert!(reason.contains("new branch"), "{reason}");

    let gone = sha(&"1".repeat(40));
    let Changes::Unknown { reason } = git().changed_paths(&remote, &gone, &second).await.unwrap()
    else {
        panic!("a force-pushed-away commit has no diff");
    };
    assert!(
        reason.contains("could not be fetched (force push?)"),
        "{reason}"
    );
    assert!(reason.contains("not our ref"), "{reason}");

    let err = git()
        .changed_paths(&remote, &first, &gone)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Git { .. }),
        "a missing `after` is an error: {err}"
    );
    assert_eq!(
        git()
            .changed_paths(&remote, &second, &second)
            .await
            .unwrap(),
        Changes::Known {
            paths: vec![],
            capped: false
        }
    );
}

#[tokio::test]
async fn detects_the_build_type_of_a_real_checkout() {
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("mono").await.unwrap();
    let head = repo
        .commit(
            "main",
            &[
                (
                    "apps/web/package.json",
                    r#"{"dependencies":{"next":"15.0.0"}}"#,
                ),
                ("apps/web/pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
                ("apps/api/Dockerfile", "FROM scratch\n"),
            ],
        )
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("src");
    git()
        .checkout(&Remote::public(http(repo.url())), &head, &dest)
        .await
        .unwrap();

    let web = ferry_git::detect::detect(&dest, "apps/web").unwrap();
    assert_eq!(web.build_type, BuildType::Railpack);
    assert_eq!(
        web.reasons,
        ["apps/web/package.json with next dependency: Node.js (Next.js), pnpm (pnpm-lock.yaml)"]
    );
    let api = ferry_git::detect::detect(&dest, "apps/api").unwrap();
    assert_eq!(
        api.build_type,
        BuildType::Dockerfile {
            path: "apps/api/Dockerfile".into()
        }
    );
}

#[test]
fn refuses_urls_git_would_run_or_read_locally() {
    let refused = |url: &str| {
        RepoUrl::parse_with(url, UrlOptions { allow_http: true })
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused("file:///srv/git/app.git"),
        "repository: file:// URLs are not allowed; use https:// or ssh://"
    );
    assert_eq!(
        refused("ext::ssh%20-oProxyCommand=x%20h"),
        "repository: ext:: addresses run commands and are not allowed; use https:// or ssh://"
    );
    let creds = refused("https://me:hunter2@github.com/a/b.git");
    assert!(
        creds.contains("credentials in the URL are not allowed"),
        "{creds}"
    );
    assert!(!creds.contains("hunter2"), "{creds}");
    assert!(refused("/srv/git/app.git").contains("local paths are not allowed"));
}

/// Processes whose command line mentions `needle` (git and its helpers).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// A server that accepts connections and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (format!("http://{addr}/app.git"), task)
}

#[tokio::test]
async fn a_silent_server_times_out_and_git_is_killed_with_its_helpers() {
    let (url, task) = black_hole().await;
    let remote = Remote::public(http(&url));
    let started = Instant::now();
    let err = Git::new()
        .with_timeout(Duration::from_secs(1))
        .resolve(&remote, "main")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.to_string().contains("did not finish within 1s"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = url
        .trim_start_matches("http://")
        .trim_end_matches("/app.git");
    assert_eq!(processes_mentioning(port), Vec::<String>::new());
    task.abort();
}

#[tokio::test]
async fn a_cancelled_operation_kills_git_with_its_helpers() {
    let (url, task) = black_hole().await;
    let remote = Remote::public(http(&url));
    let port = url
        .trim_start_matches("http://")
        .trim_end_matches("/app.git")
        .to_owned();
    let operation = tokio::spawn(async move { git().resolve(&remote, "main").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_mentioning(&port).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "git and git-remote-http never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    operation.abort();
    assert!(operation.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(processes_mentioning(&port), Vec::<String>::new());
    task.abort();
}

#[tokio::test]
async fn ssh_transport_runs_ssh_with_our_options_and_key_file() {
    // Not an ssh server: it greets like one and hangs up. That is far
    // enough for ssh to have parsed GIT_SSH_COMMAND's options and found the
    // key file; key exchange, host keys and authentication need a real
    // sshd (tests/ssh_host_keys.rs, where the machine has one).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut connections = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            connections += 1;
            let _ = stream.write_all(b"SSH-2.0-ferry-test\r\n").await;
            if connections == 1 {
                return connections;
            }
        }
        connections
    });
    let tmp = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(tmp.path().join("key"))
        .status()
        .unwrap();
    assert!(status.success());
    let key = std::fs::read_to_string(tmp.path().join("key")).unwrap();
    let url = RepoUrl::parse(&format!("ssh://git@127.0.0.1:{port}/app.git")).unwrap();
    let remote = Remote::new(
        url,
        Auth::SshKey {
            private_key_openssh: key.clone(),
        },
    );

    let err = git().resolve(&remote, "main").await.unwrap_err();
    assert_eq!(server.await.unwrap(), 1, "ssh connected");
    let message = err.to_string();
    assert!(
        message.contains("Could not read from remote repository"),
        "{message}"
    );
    for complaint in [
        "Bad configuration",
        "not accessible",
        "UNPROTECTED",
        "Load key",
    ] {
        assert!(!message.contains(complaint), "{message}");
    }
    let body = key.lines().nth(1).unwrap();
    assert!(!message.contains(body), "{message}");
}
