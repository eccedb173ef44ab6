//! Host key checking over a real ssh connection ([`SshServer`]: OpenSSH on
//! 127.0.0.1 with its own host key) with the real git and ssh clients:
//! pinned known_hosts lines are checked strictly; without them the key the
//! server shows is taken (accept-new). Where the machine cannot run sshd
//! the test says why and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_git::testing::{GitServer, SshServer};
use ferry_git::{Auth, Error, Git, Remote, RepoUrl};

#[tokio::test]
async fn pinned_host_keys_are_checked_strictly() {
    if let Some(why) = SshServer::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let sshd = SshServer::start().await.unwrap();
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("app").await.unwrap();
    let head = repo.commit("main", &[("README.md", "hi")]).await.unwrap();
    let remote = Remote::new(
        RepoUrl::parse(&sshd.url(&repo).unwrap()).unwrap(),
        Auth::SshKey {
            private_key_openssh: sshd.client_key().to_owned(),
        },
    );
    let git = Git::new().with_timeout(Duration::from_secs(30));

    // The server's own key, pinned (as ssh-keyscan prints it): resolve and
    // check out.
    let pinned = remote
        .clone()
        .with_known_hosts(format!("# ssh-keyscan\n{}\n", sshd.known_hosts()));
    let resolved = git.resolve(&pinned, "main").await;
    assert_eq!(
        resolved.unwrap_or_else(|e| panic!("{e}\n{}", sshd.log())),
        head
    );
    let checkout = tempfile::tempdir().unwrap();
    git.checkout(&pinned, &head, checkout.path()).await.unwrap();
    assert!(checkout.path().join("README.md").exists());

    // Another key for the host, or its key for another host: refused.
    let host_key = sshd
        .known_hosts()
        .split_once(' ')
        .map(|(_, key)| key.to_owned())
        .unwrap();
    for lines in [
        sshd.wrong_known_hosts(),
        format!("git.example.com {host_key}"),
    ] {
        let wrong = remote.clone().with_known_hosts(lines.clone());
        let err = git.resolve(&wrong, "main").await.unwrap_err();
        assert!(matches!(err, Error::Git { .. }), "{lines}: {err:?}");
        let message = err.to_string();
        assert!(
            message.contains("Host key verification failed"),
            "{lines}: {message}"
        );
        assert!(message.contains("known hosts"), "the hint: {message}");
    }

    // Nothing pinned: whatever key the server shows is taken.
    assert_eq!(git.resolve(&remote, "main").await.unwrap(), head);
}
