//! What a webhook delivery says, per provider: which event, which
//! repository, which branch moved from which commit to which.

use ferry_db::entities::enums::GitProvider;
use http::HeaderMap;
use serde_json::Value;

/// A delivery, parsed far enough to decide what to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The provider's delivery id; a SHA-256 of the body when it sends none
    /// (a redelivery of the same body is then still recognised).
    pub delivery_id: String,
    /// `push`, `ping`, or the provider's own event name.
    pub event: String,
    /// Set for pushes to a branch.
    pub push: Option<Push>,
}

/// A push to a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Names the repository goes by in the payload (full name and clone
    /// URLs), compared with build configs through [`repo_key`].
    pub repositories: Vec<String>,
    pub branch: String,
    /// All zeros for a new branch.
    pub before: String,
    /// All zeros when the branch was deleted.
    pub after: String,
    pub message: Option<String>,
    pub author: Option<String>,
}

impl Push {
    /// Whether the push deleted its branch.
    pub fn deleted(&self) -> bool {
        self.after.bytes().all(|b| b == b'0')
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The short, printable form of a header value we store.
fn bounded(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// Parses a delivery whose signature was verified.
pub fn parse(
    provider: GitProvider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, PayloadError> {
    let delivery_id = header(
        headers,
        &[
            "x-github-delivery",
            "x-gitea-delivery",
            "x-forgejo-delivery",
            "x-gitlab-event-uuid",
            "x-request-uuid",
        ],
    )
    .map(|v| bounded(v, 200))
    .filter(|v| !v.is_empty())
    .unwrap_or_else(|| {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
    });
    let event_header = header(
        headers,
        &[
            "x-github-event",
            "x-gitea-event",
            "x-forgejo-event",
            "x-gitlab-event",
            "x-event-key",
        ],
    )
    .unwrap_or("push");
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("the body is not JSON: {e}")))?;
    let push = match provider {
        GitProvider::Gitlab if event_header.eq_ignore_ascii_case("Push Hook") => gitlab(&json)?,
        GitProvider::Bitbucket if event_header == "repo:push" => bitbucket(&json)?,
        GitProvider::Github | GitProvider::Gitea | GitProvider::Forgejo | GitProvider::Generic
            if event_header == "push" =>
        {
            github_like(&json)?
        }
        _ => None,
    };
    let event = if push.is_some() {
        "push".to_owned()
    } else {
        bounded(event_header, 64)
    };
    Ok(Delivery {
        delivery_id,
        event,
        push,
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn branch_of(git_ref: &str) -> Option<String> {
    git_ref.strip_prefix("refs/heads/").map(str::to_owned)
}

fn required<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, PayloadError> {
    str_at(v, path).ok_or_else(|| PayloadError(format!("the push has no {}", path.join("."))))
}

/// GitHub, and Gitea/Forgejo, which send the same shape.
fn github_like(v: &Value) -> Result<Option<Push>, PayloadError> {
    let Some(branch) = branch_of(required(v, &["ref"])?) else {
        return Ok(None); // a tag
    };
    let repositories = ["full_name", "clone_url", "ssh_url", "html_url"]
        .iter()
        .filter_map(|k| str_at(v, &["repository", k]))
        .map(str::to_owned)
        .collect();
    Ok(Some(Push {
        repositories,
        branch,
        before: required(v, &["before"])?.to_owned(),
        after: required(v, &["after"])?.to_owned(),
        message: str_at(v, &["head_commit", "message"]).map(|m| bounded(m, 1000)),
        author: str_at(v, &["head_commit", "author", "name"]).map(|m| bounded(m, 200)),
    }))
}

fn gitlab(v: &Value) -> Result<Option<Push>, PayloadError> {
    let Some(branch) = branch_of(required(v, &["ref"])?) else {
        return Ok(None);
    };
    let repositories = [
        &["project", "path_with_namespace"][..],
        &["project", "git_http_url"],
        &["project", "git_ssh_url"],
        &["project", "web_url"],
    ]
    .iter()
    .filter_map(|p| str_at(v, p))
    .map(str::to_owned)
    .collect();
    let after = required(v, &["after"])?.to_owned();
    let head = v.get("commits").and_then(Value::as_array).and_then(|c| {
        c.iter()
            .find(|c| str_at(c, &["id"]) == Some(after.as_str()))
    });
    Ok(Some(Push {
        repositories,
        branch,
        before: required(v, &["before"])?.to_owned(),
        after,
        message: head
            .and_then(|c| str_at(c, &["message"]))
            .map(|m| bounded(m, 1000)),
        author: str_at(v, &["user_name"]).map(|m| bounded(m, 200)),
    }))
}

/// Bitbucket Cloud: `push.changes[]`; the first branch change counts.
fn bitbucket(v: &Value) -> Result<Option<Push>, PayloadError> {
    let changes = v
        .get("push")
        .and_then(|p| p.get("changes"))
        .and_then(Value::as_array)
        .ok_or_else(|| PayloadError("the push has no push.changes".into()))?;
    let Some(change) = changes.iter().find(|c| {
        str_at(c, &["new", "type"]) == Some("branch")
            || str_at(c, &["old", "type"]) == Some("branch")
    }) else {
        return Ok(None);
    };
    let zeros = "0".repeat(40);
    let branch = str_at(change, &["new", "name"])
        .or_else(|| str_at(change, &["old", "name"]))
        .ok_or_else(|| PayloadError("the push has no branch name".into()))?;
    let repositories = [
        &["repository", "full_name"][..],
        &["repository", "links", "html", "href"],
    ]
    .iter()
    .filter_map(|p| str_at(v, p))
    .map(str::to_owned)
    .collect();
    Ok(Some(Push {
        repositories,
        branch: branch.to_owned(),
        before: str_at(change, &["old", "target", "hash"])
            .unwrap_or(&zeros)
            .to_owned(),
        after: str_at(change, &["new", "target", "hash"])
            .unwrap_or(&zeros)
            .to_owned(),
        message: str_at(change, &["new", "target", "message"]).map(|m| bounded(m, 1000)),
        author: str_at(change, &["new", "target", "author", "raw"]).map(|m| bounded(m, 200)),
    }))
}

/// The comparable form of a repository name or URL: `owner/name`, lower
/// case, without scheme, host, credentials or `.git`. GitLab subgroups keep
/// every path segment.
pub fn repo_key(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    let path = if let Some((_, rest)) = v.split_once("://") {
        rest.split_once('/').map_or("", |(_, p)| p).to_owned()
    } else if let Some((host, path)) = v.split_once(':').filter(|(h, _)| h.contains('@')) {
        let _ = host;
        path.to_owned()
    } else {
        v
    };
    path.trim_matches('/')
        .trim_end_matches(".git")
        .trim_matches('/')
        .to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn repository_names_and_urls_compare_equal() {
        for v in [
            "Acme/Web",
            "https://github.com/acme/web.git",
            "https://github.com/acme/web",
            "git@github.com:acme/web.git",
            "ssh://git@github.com/acme/web.git",
            "http://127.0.0.1:3000/acme/web/",
        ] {
            assert_eq!(repo_key(v), "acme/web", "{v}");
        }
        assert_eq!(repo_key("https://gitlab.com/g/sub/p.git"), "g/sub/p");
    }

    #[test]
    fn github_push_and_ping() {
        let body = json!({
            "ref": "refs/heads/main", "before": "a".repeat(40), "after": "b".repeat(40),
            "repository": {"full_name": "acme/web", "clone_url": "https://github.com/acme/web.git"},
            "head_commit": {"message": "fix", "author": {"name": "Ada"}}
        })
        .to_string();
        let h = headers(&[("x-github-event", "push"), ("x-github-delivery", "d-1")]);
        let d = parse(GitProvider::Github, &h, body.as_bytes()).unwrap();
        assert_eq!(d.delivery_id, "d-1");
        let p = d.push.unwrap();
        assert_eq!(
            (p.branch.as_str(), p.message.as_deref()),
            ("main", Some("fix"))
        );
        assert!(p.repositories.contains(&"acme/web".to_owned()));

        let h = headers(&[("x-github-event", "ping")]);
        let d = parse(GitProvider::Github, &h, b"{\"zen\":\"x\"}").unwrap();
        assert_eq!((d.event.as_str(), d.push.is_none()), ("ping", true));
        assert!(d.delivery_id.starts_with("sha256:"));
    }

    #[test]
    fn tags_are_not_branch_pushes() {
        let body = json!({"ref": "refs/tags/v1", "before": "0", "after": "1"}).to_string();
        let h = headers(&[("x-gitea-event", "push")]);
        assert_eq!(
            parse(GitProvider::Gitea, &h, body.as_bytes()).unwrap().push,
            None
        );
    }

    #[test]
    fn gitlab_and_bitbucket_pushes() {
        let after = "c".repeat(40);
        let body = json!({
            "object_kind": "push", "ref": "refs/heads/dev", "before": "d".repeat(40), "after": after,
            "user_name": "Lin", "project": {"path_with_namespace": "g/p"},
            "commits": [{"id": after, "message": "feat"}]
        })
        .to_string();
        let h = headers(&[
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-event-uuid", "u-1"),
        ]);
        let p = parse(GitProvider::Gitlab, &h, body.as_bytes())
            .unwrap()
            .push
            .unwrap();
        assert_eq!(
            (p.branch.as_str(), p.message.as_deref()),
            ("dev", Some("feat"))
        );

        let body = json!({
            "repository": {"full_name": "team/app"},
            "push": {"changes": [{
                "old": {"type": "branch", "name": "main", "target": {"hash": "e".repeat(40)}},
                "new": {"type": "branch", "name": "main", "target": {"hash": "f".repeat(40), "message": "m"}}
            }]}
        })
        .to_string();
        let h = headers(&[("x-event-key", "repo:push"), ("x-request-uuid", "r-1")]);
        let d = parse(GitProvider::Bitbucket, &h, body.as_bytes()).unwrap();
        assert_eq!(d.delivery_id, "r-1");
        assert_eq!(d.push.unwrap().after, "f".repeat(40));
    }

    #[test]
    fn a_push_without_its_fields_is_an_error_naming_them() {
        let h = headers(&[("x-github-event", "push")]);
        let err = parse(GitProvider::Github, &h, b"{\"ref\":\"refs/heads/x\"}").unwrap_err();
        assert!(err.0.contains("before"), "{err}");
        assert!(parse(GitProvider::Github, &h, b"not json").is_err());
    }
}
