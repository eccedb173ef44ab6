//! Credentials for a repository, and the remote they go with.
//!
//! Credentials never reach git's argv (world-readable in `/proc`), its
//! error output or Ferry's logs: a token goes to git as an
//! `http.extraHeader` through the environment, a key as a 0600 file in a
//! private temp dir, and both are redacted from git's stderr.

use std::fmt;

use crate::error::{Error, Result};
use crate::repo_url::{RepoUrl, Transport};

/// A repository and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: RepoUrl,
    pub auth: Auth,
    /// `known_hosts` lines (`ssh-keyscan` output) for an ssh remote's host.
    /// Given, ssh checks the server's host key strictly against these lines
    /// alone (`StrictHostKeyChecking=yes`). `None` (or only blank and
    /// comment lines): the key the server shows is trusted
    /// (`accept-new`; every operation starts from an empty file, so that is
    /// trust on every use, not only the first). See [`Remote::with_known_hosts`].
    pub known_hosts: Option<String>,
}

impl Remote {
    pub fn new(url: RepoUrl, auth: Auth) -> Remote {
        Remote {
            url,
            auth,
            known_hosts: None,
        }
    }

    /// A public repository.
    pub fn public(url: RepoUrl) -> Remote {
        Remote::new(url, Auth::None)
    }

    /// Pins the ssh host keys to `lines` (known_hosts format; `[host]:port`
    /// for a port other than 22). Blank `lines` pin nothing.
    pub fn with_known_hosts(mut self, lines: impl Into<String>) -> Remote {
        let lines = lines.into();
        self.known_hosts = (!lines.trim().is_empty()).then_some(lines);
        self
    }

    /// The pinned known_hosts lines, when there is at least one entry.
    pub(crate) fn pinned_hosts(&self) -> Option<&str> {
        self.known_hosts.as_deref().filter(|text| {
            text.lines()
                .map(str::trim)
                .any(|l| !l.is_empty() && !l.starts_with('#'))
        })
    }

    /// Checks that the credentials fit the transport (a token needs HTTP,
    /// a key needs ssh) and are well formed, and that pinned host keys go
    /// with an ssh remote. Every operation calls it.
    pub fn validate(&self) -> Result<()> {
        if let Some(lines) = self.pinned_hosts() {
            if self.url.transport() != Transport::Ssh {
                return Err(Error::invalid(
                    "knownHosts",
                    "applies only to ssh:// and user@host: addresses",
                ));
            }
            // Written to a file ssh reads line by line: no other control
            // characters (a NUL would cut the file short).
            if lines
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                return Err(Error::invalid(
                    "knownHosts",
                    "must be known_hosts lines without control characters",
                ));
            }
        }
        match (&self.auth, self.url.transport()) {
            (Auth::None, _) => Ok(()),
            (Auth::Token { username, token }, Transport::Https | Transport::Http) => {
                if username.is_empty() || username.contains(':') || has_control(username) {
                    return Err(Error::invalid(
                        "auth.username",
                        "must be non-empty, without ':' or control characters",
                    ));
                }
                if token.is_empty() || has_control(token) {
                    return Err(Error::invalid(
                        "auth.token",
                        "must be non-empty, without control characters",
                    ));
                }
                Ok(())
            }
            (Auth::Token { .. }, Transport::Ssh) => Err(Error::invalid(
                "auth",
                "a token works only with https:// URLs; give an SSH key for ssh:// and user@host: addresses",
            )),
            (
                Auth::SshKey {
                    private_key_openssh,
                },
                Transport::Ssh,
            ) => {
                let key = private_key_openssh.trim();
                if !(key.starts_with("-----BEGIN ") && key.contains("PRIVATE KEY-----")) {
                    return Err(Error::invalid(
                        "auth.sshKey",
                        "is not a PEM/OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)",
                    ));
                }
                Ok(())
            }
            (Auth::SshKey { .. }, _) => Err(Error::invalid(
                "auth",
                "an SSH key works only with ssh:// and user@host: addresses; give a token for https://",
            )),
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// How to authenticate. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A public repository.
    None,
    /// HTTP basic auth with an access token as the password. See
    /// [`Auth::token_for`] for the user names providers expect.
    Token { username: String, token: String },
    /// An SSH private key in OpenSSH (or PEM) format, without passphrase
    /// (git runs with `BatchMode=yes`; nothing can ask for one).
    SshKey { private_key_openssh: String },
}

impl Auth {
    /// A token with the user name its provider expects.
    pub fn token_for(provider: Provider, token: impl Into<String>) -> Auth {
        Auth::Token {
            username: provider.token_username().to_owned(),
            token: token.into(),
        }
    }

    /// The strings that must never show in output: the token, and the
    /// `user:token` pair (git could echo either). The base64 header value
    /// is added by the caller that builds it.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            Auth::None => Vec::new(),
            Auth::Token { username, token } => vec![format!("{username}:{token}"), token.clone()],
            Auth::SshKey {
                private_key_openssh,
            } => private_key_openssh
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token { username, .. } => f
                .debug_struct("Token")
                .field("username", username)
                .field("token", &"<redacted>")
                .finish(),
            Auth::SshKey { .. } => f
                .debug_struct("SshKey")
                .field("private_key_openssh", &"<redacted>")
                .finish(),
        }
    }
}

/// The git host, for the token user name it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Bitbucket,
    Gitea,
    Forgejo,
    Other,
}

impl Provider {
    /// From a hint such as `"github"` (case-insensitive); unknown names are
    /// [`Provider::Other`].
    pub fn from_hint(hint: &str) -> Provider {
        match hint.trim().to_ascii_lowercase().as_str() {
            "github" => Provider::GitHub,
            "gitlab" => Provider::GitLab,
            "bitbucket" => Provider::Bitbucket,
            "gitea" => Provider::Gitea,
            "forgejo" | "codeberg" => Provider::Forgejo,
            _ => Provider::Other,
        }
    }

    /// From the well-known hosted services' host names; self-hosted
    /// instances are [`Provider::Other`] unless hinted.
    pub fn guess(url: &RepoUrl) -> Provider {
        match url.host() {
            "github.com" => Provider::GitHub,
            "gitlab.com" => Provider::GitLab,
            "bitbucket.org" => Provider::Bitbucket,
            "codeberg.org" => Provider::Forgejo,
            _ => Provider::Other,
        }
    }

    /// The basic-auth user name sent with a token:
    ///
    /// - GitHub: `x-access-token`. GitHub App installation tokens require
    ///   it; personal access tokens accept any non-empty name.
    /// - GitLab: `oauth2`. OAuth tokens require it; personal, project and
    ///   group access tokens accept any name. Deploy tokens are the
    ///   exception: give [`Auth::Token`] the deploy token's own user name.
    /// - Bitbucket Cloud: `x-token-auth`, for repository, project and
    ///   workspace access tokens and OAuth tokens. App passwords need the
    ///   account's user name instead.
    /// - Gitea, Forgejo and anything else: `git`. Gitea and Forgejo check
    ///   the token given as the password and ignore the name.
    pub fn token_username(self) -> &'static str {
        match self {
            Provider::GitHub => "x-access-token",
            Provider::GitLab => "oauth2",
            Provider::Bitbucket => "x-token-auth",
            Provider::Gitea | Provider::Forgejo | Provider::Other => "git",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::repo_url::UrlOptions;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
        -----END OPENSSH PRIVATE KEY-----\n";

    fn https() -> RepoUrl {
        RepoUrl::parse("https://github.com/ferry/app").unwrap()
    }

    fn ssh() -> RepoUrl {
        RepoUrl::parse("git@github.com:ferry/app").unwrap()
    }

    #[test]
    fn token_usernames_per_provider() {
        let user = |hint| match Auth::token_for(Provider::from_hint(hint), "t") {
            Auth::Token { username, .. } => username,
            other => panic!("{other:?}"),
        };
        assert_eq!(user("GitHub"), "x-access-token");
        assert_eq!(user("gitlab"), "oauth2");
        assert_eq!(user("bitbucket"), "x-token-auth");
        assert_eq!(user("gitea"), "git");
        assert_eq!(user("forgejo"), "git");
        assert_eq!(user("sourcehut"), "git");
        assert_eq!(Provider::guess(&https()), Provider::GitHub);
        let gitea =
            RepoUrl::parse_with("http://gitea:3000/a/b", UrlOptions { allow_http: true }).unwrap();
        assert_eq!(Provider::guess(&gitea), Provider::Other);
    }

    #[test]
    fn credentials_must_fit_the_transport() {
        let token = Auth::token_for(Provider::GitHub, "ghp_secret");
        let key = Auth::SshKey {
            private_key_openssh: KEY.into(),
        };
        assert!(Remote::new(https(), token.clone()).validate().is_ok());
        assert!(Remote::new(ssh(), key.clone()).validate().is_ok());
        assert!(Remote::public(ssh()).validate().is_ok());
        let err = Remote::new(ssh(), token).validate().unwrap_err();
        assert!(err.to_string().contains("a token works only with https://"));
        let err = Remote::new(https(), key).validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("an SSH key works only with ssh://")
        );
        let not_a_key = Auth::SshKey {
            private_key_openssh: "ssh-ed25519 AAAA... me@host".into(),
        };
        let err = Remote::new(ssh(), not_a_key).validate().unwrap_err();
        assert!(err.to_string().starts_with("auth.sshKey: "));
        let bad_user = Auth::Token {
            username: "a:b".into(),
            token: "t".into(),
        };
        assert!(Remote::new(https(), bad_user).validate().is_err());
        let newline = Auth::token_for(Provider::Other, "t\nX-Evil: 1");
        assert!(Remote::new(https(), newline).validate().is_err());
    }

    const HOSTS: &str = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn known_hosts_go_with_ssh_remotes() {
        let pinned = Remote::public(ssh()).with_known_hosts(HOSTS);
        assert_eq!(pinned.pinned_hosts(), Some(HOSTS));
        assert!(pinned.validate().is_ok());
        // Blank or comments only: nothing is pinned.
        assert_eq!(
            Remote::public(ssh()).with_known_hosts("  \n").known_hosts,
            None
        );
        let comments = Remote {
            known_hosts: Some("# none yet\n".into()),
            ..Remote::public(https())
        };
        assert_eq!(comments.pinned_hosts(), None);
        assert!(comments.validate().is_ok());

        let err = Remote::public(https())
            .with_known_hosts(HOSTS)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("knownHosts: applies only to ssh://")
        );
        let nul = Remote::public(ssh()).with_known_hosts(format!("{HOSTS}\0evil"));
        assert!(
            nul.validate()
                .unwrap_err()
                .to_string()
                .starts_with("knownHosts: ")
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let token = format!("{:?}", Auth::token_for(Provider::GitHub, "ghp_secret"));
        assert!(!token.contains("ghp_secret"), "{token}");
        let key = format!(
            "{:?}",
            Auth::SshKey {
                private_key_openssh: KEY.into()
            }
        );
        assert!(!key.contains("b3Blbn"), "{key}");
    }
}
