//! Repository addresses users may give Ferry, and the many they may not.
//!
//! git itself understands local paths, `file://`, `ext::` (which runs a
//! command) and other remote helpers; a PaaS that clones user-supplied URLs
//! must refuse all of them, so only `https://`, `ssh://` and scp-like
//! `user@host:path` addresses get through (`http://` on request).

use std::fmt;

use crate::error::{Error, Result};

/// The longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The API field the errors name.
const FIELD: &str = "repository";

/// How [`RepoUrl::parse_with`] treats plain HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlOptions {
    /// Accept `http://` (tests, an in-cluster Gitea). Credentials and code
    /// travel unencrypted, so it is off unless asked for.
    pub allow_http: bool,
}

/// How git reaches the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Https,
    Http,
    Ssh,
}

/// A validated repository address: `https://host/path`,
/// `ssh://user@host[:port]/path`, `user@host:path`, or `http://host/path`
/// when allowed. Never holds credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl {
    url: String,
    transport: Transport,
    host: String,
}

impl RepoUrl {
    /// Parses an address with the default options (no `http://`).
    pub fn parse(value: &str) -> Result<RepoUrl> {
        RepoUrl::parse_with(value, UrlOptions::default())
    }

    /// Parses an address; the error names what is wrong (never echoing the
    /// value, which may hold a password).
    pub fn parse_with(value: &str, options: UrlOptions) -> Result<RepoUrl> {
        let refuse = |reason: &str| Err(Error::invalid(FIELD, reason));
        if value.is_empty() {
            return refuse("is empty; use https://host/owner/repo or git@host:owner/repo");
        }
        if value.len() > MAX_URL_LEN {
            return refuse("is longer than 2048 bytes");
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return refuse("must not contain whitespace or control characters");
        }
        if value.starts_with('-') {
            return refuse("must not start with '-'");
        }
        if let Some((scheme, _)) = value.split_once("://")
            && is_scheme(scheme)
        {
            return parse_url(value, &scheme.to_ascii_lowercase(), options);
        }
        if let Some((helper, _)) = value.split_once("::")
            && is_scheme(helper)
        {
            return refuse(if helper.eq_ignore_ascii_case("ext") {
                "ext:: addresses run commands and are not allowed; use https:// or ssh://"
            } else {
                "remote-helper addresses (<transport>::<address>) are not allowed; use https:// or ssh://"
            });
        }
        if !value.starts_with(['/', '.', '~'])
            && let Some((before, _)) = value.split_once(':')
            && !before.contains('/')
        {
            return parse_scp(value);
        }
        refuse("local paths are not allowed; use https:// or ssh://")
    }

    /// The address as git is given it.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The host name, lower case (for guessing the provider).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoUrl({})", self.url)
    }
}

/// RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

fn parse_url(value: &str, scheme: &str, options: UrlOptions) -> Result<RepoUrl> {
    let refuse = |reason: String| Err(Error::invalid(FIELD, reason));
    let transport = match scheme {
        "https" => Transport::Https,
        "ssh" => Transport::Ssh,
        "http" if options.allow_http => Transport::Http,
        "http" => {
            return refuse(
                "http:// URLs are not allowed (code and credentials would travel unencrypted); \
                 use https://"
                    .into(),
            );
        }
        other => {
            return refuse(format!(
                "{other}:// URLs are not allowed; use https:// or ssh://"
            ));
        }
    };
    let url = match url::Url::parse(value) {
        Ok(url) => url,
        Err(e) => return refuse(format!("is not a valid URL ({e})")),
    };
    if url.password().is_some() || (transport != Transport::Ssh && !url.username().is_empty()) {
        return refuse(
            "credentials in the URL are not allowed; remove them and give a token or SSH key instead"
                .into(),
        );
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if host.is_empty() {
        return refuse("has no host".into());
    }
    check_host(&host)?;
    check_user(url.username())?;
    if url.path().trim_matches('/').is_empty() {
        return refuse("has no repository path, e.g. https://host/owner/repo".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return refuse("must not have a query (?...) or fragment (#...)".into());
    }
    Ok(RepoUrl {
        url: url.as_str().to_owned(),
        transport,
        host,
    })
}

/// `user@host:path`, the scp-like form ssh remotes are usually given in.
fn parse_scp(value: &str) -> Result<RepoUrl> {
    let Some((user, rest)) = value.split_once('@') else {
        return Err(Error::invalid(
            FIELD,
            "scp-like addresses need a user, e.g. git@host:owner/repo.git",
        ));
    };
    if user.is_empty() {
        return Err(Error::invalid(FIELD, "has an empty user before '@'"));
    }
    check_user(user)?;
    // `[::1]:path`: the host's own colons are inside the brackets.
    let (host, path) = match rest.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once("]:") {
            Some((ip, path)) => (format!("[{ip}]"), path),
            None => return Err(Error::invalid(FIELD, "has an unclosed '[' in the host")),
        },
        None => match rest.split_once(':') {
            Some((host, path)) => (host.to_owned(), path),
            None => return Err(Error::invalid(FIELD, "needs ':' between host and path")),
        },
    };
    let host = host.to_ascii_lowercase();
    check_host(&host)?;
    if path.trim_matches('/').is_empty() {
        return Err(Error::invalid(
            FIELD,
            "has no repository path, e.g. git@host:owner/repo.git",
        ));
    }
    if path.starts_with('-') {
        return Err(Error::invalid(FIELD, "path must not start with '-'"));
    }
    Ok(RepoUrl {
        url: value.to_owned(),
        transport: Transport::Ssh,
        host,
    })
}

/// Host names and bracketed IPv6 literals; never an ssh option (`-o...`).
fn check_host(host: &str) -> Result<()> {
    let ok = if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !ip.is_empty()
            && ip
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
    } else {
        host.len() <= 253
            && host.starts_with(|c: char| c.is_ascii_alphanumeric())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(FIELD, "has an invalid host name"))
    }
}

/// ssh user names: letters, digits, `.`, `_`, `-`, not starting with `-`.
fn check_user(user: &str) -> Result<()> {
    let ok = !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(FIELD, "has an invalid user name"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn reason(value: &str) -> String {
        match RepoUrl::parse(value) {
            Ok(url) => panic!("{value} was accepted as {url}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_the_three_forms() {
        let https = RepoUrl::parse("https://GitHub.com/ferry/app.git").unwrap();
        assert_eq!(https.as_str(), "https://github.com/ferry/app.git");
        assert_eq!(https.transport(), Transport::Https);
        assert_eq!(https.host(), "github.com");

        let ssh = RepoUrl::parse("ssh://git@gitlab.example:2222/group/app.git").unwrap();
        assert_eq!(ssh.transport(), Transport::Ssh);
        assert_eq!(ssh.host(), "gitlab.example");

        let scp = RepoUrl::parse("git@github.com:ferry/app.git").unwrap();
        assert_eq!(scp.as_str(), "git@github.com:ferry/app.git");
        assert_eq!(scp.transport(), Transport::Ssh);
        assert_eq!(scp.host(), "github.com");

        let v6 = RepoUrl::parse("git@[::1]:app.git").unwrap();
        assert_eq!(v6.host(), "[::1]");
    }

    #[test]
    fn http_only_when_allowed() {
        assert!(reason("http://gitea.internal/app.git").contains("http:// URLs are not allowed"));
        let url = RepoUrl::parse_with(
            "http://gitea.internal:3000/app.git",
            UrlOptions { allow_http: true },
        )
        .unwrap();
        assert_eq!(url.transport(), Transport::Http);
    }

    #[test]
    fn refuses_what_git_would_run_or_read_locally() {
        assert_eq!(
            reason("file:///etc/repo"),
            "repository: file:// URLs are not allowed; use https:// or ssh://"
        );
        assert_eq!(
            reason("FILE:///etc/repo"),
            "repository: file:// URLs are not allowed; use https:// or ssh://"
        );
        assert!(reason("ext::sh -c touch% /tmp/pwned").contains("whitespace"));
        assert!(reason("ext::sh%20-c").contains("ext:: addresses run commands"));
        assert!(reason("fd::17").contains("remote-helper addresses"));
        assert!(reason("git://github.com/a/b").contains("git:// URLs are not allowed"));
        for local in ["/srv/repo", "./repo", "../repo", "~/repo", "repo", "a/b:c"] {
            assert!(reason(local).contains("local paths"), "{local}");
        }
    }

    #[test]
    fn refuses_credentials_without_echoing_them() {
        for value in [
            "https://user:hunter2@github.com/a/b",
            "https://ghp_hunter2@github.com/a/b",
            "ssh://git:hunter2@github.com/a/b",
        ] {
            let reason = reason(value);
            assert!(reason.contains("credentials in the URL"), "{reason}");
            assert!(!reason.contains("hunter2"), "{reason}");
        }
    }

    #[test]
    fn refuses_option_injection_and_junk() {
        assert!(reason("--upload-pack=touch /tmp/x").contains("whitespace"));
        assert!(reason("-oProxyCommand=x").contains("must not start with '-'"));
        assert!(reason("ssh://-oProxyCommand=x/a").contains("host"));
        assert!(reason("git@-oProxyCommand=x:a").contains("host"));
        assert!(reason("-x@host:a").contains("must not start with '-'"));
        assert!(reason("git@host:-a").contains("path must not start with '-'"));
        assert!(reason("https://github.com/a b").contains("whitespace"));
        assert!(reason("https://github.com/a\u{7}b").contains("control"));
        assert!(reason("https://github.com/").contains("no repository path"));
        assert!(reason("https://github.com/a?b=c").contains("query"));
        assert!(reason("host:a").contains("need a user"));
        assert!(reason("").contains("is empty"));
        let long = format!("https://github.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(reason(&long).contains("longer than 2048"));
    }
}
