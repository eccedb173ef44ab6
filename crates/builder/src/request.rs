//! A RunBuild request, checked field by field before any work starts.
//!
//! The git-facing fields go through ferry-git's own validators (the ones
//! its operations apply again), the rest through ferry-k8s's render (see
//! [`crate::plan::check`]); every refusal names the request field in
//! lowerCamelCase, as the api shows it.

use std::collections::BTreeMap;

use ferry_git::watch::Matcher;
use ferry_git::{Auth, CommitSha, Provider, Remote, RepoUrl, UrlOptions, validate_branch};
use ferry_k8s::build::BuildKind;
use ferry_k8s::spec::{Resources, SecretValue};
use ferry_proto::ferry::internal::v1 as pb;
use pb::git_credential::Kind;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{Error, Result};

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub build_id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    pub project_name: String,
    pub service_id: Uuid,
    pub service_name: String,
    /// With the credential's `known_hosts` lines, which both the
    /// builder's own git work (resolve, watch-path diff, detect) and the
    /// Job check ssh host keys strictly against.
    pub remote: Remote,
    /// Empty only when `commit` is set.
    pub branch: String,
    pub commit: Option<CommitSha>,
    pub before: Option<CommitSha>,
    pub watch: Option<WatchPaths>,
    /// Normalised: relative, `/`-separated, `""` for the repository root.
    pub root_dir: String,
    pub build_type: Requested,
    /// Sorted by name (ferry-k8s's errors index into this order).
    pub build_args: Vec<(String, String)>,
    /// Sorted by name.
    pub secret_build_args: Vec<(String, SecretValue)>,
    pub timeout_seconds: i64,
    pub resources: Resources,
}

/// The service's watch paths, compiled, and as written (for messages).
#[derive(Debug, Clone)]
pub struct WatchPaths {
    pub matcher: Matcher,
    pub patterns: Vec<String>,
}

/// The build type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// Detect it on a checkout; a detected Dockerfile builds `target`.
    Auto {
        dockerfile_target: Option<String>,
    },
    Explicit(BuildKind),
}

impl BuildRequest {
    /// Checks every field that needs no render; the first bad one is named.
    pub fn parse(request: pb::RunBuildRequest, config: &Config) -> Result<BuildRequest> {
        let uuid = |field: &str, value: &str| {
            Uuid::parse_str(value).map_err(|_| Error::invalid(field, "must be a UUID"))
        };
        let build_id = uuid("buildId", &request.build_id)?;
        let organization_id = uuid("organizationId", &request.organization_id)?;
        let project_id = uuid("projectId", &request.project_id)?;
        let service_id = uuid("serviceId", &request.service_id)?;

        let options = UrlOptions {
            allow_http: config.allow_http_git,
        };
        let url = RepoUrl::parse_with(&request.repository_url, options).map_err(from_git)?;
        let (auth, known_hosts) = credential(request.credential, &url)?;
        let remote = Remote::new(url, auth).with_known_hosts(known_hosts);
        remote.validate().map_err(from_git)?;

        let commit = parse_commit("commitSha", &request.commit_sha)?;
        if request.branch.is_empty() {
            if commit.is_none() {
                return Err(Error::invalid(
                    "branch",
                    "is empty; give the branch to build (or a commitSha)",
                ));
            }
        } else {
            validate_branch(&request.branch).map_err(from_git)?;
        }
        let before = parse_commit("beforeSha", &request.before_sha)?;
        let watch = if request.watch_paths.is_empty() {
            None
        } else {
            Some(WatchPaths {
                matcher: Matcher::new(&request.watch_paths).map_err(from_git)?,
                patterns: request.watch_paths,
            })
        };
        let root_dir = ferry_git::detect::validate_root_dir(&request.root_dir).map_err(from_git)?;
        let root_dir = root_dir
            .to_str()
            .ok_or_else(|| Error::invalid("rootDir", "must be UTF-8"))?
            .to_owned();
        let build_type = requested(
            &request.build_type,
            &request.dockerfile_path,
            &request.dockerfile_target,
            config,
        )?;
        let timeout_seconds = match request.timeout_seconds {
            0 => config.default_timeout_secs,
            t if t > config.max_timeout_secs => {
                return Err(Error::invalid(
                    "timeoutSeconds",
                    format!("is {t}; at most {} seconds", config.max_timeout_secs),
                ));
            }
            t => t,
        };
        let or_default = |value: String, default: &Option<String>| {
            if value.is_empty() {
                default.clone()
            } else {
                Some(value)
            }
        };
        let defaults = &config.resources;
        let resources = Resources {
            cpu_request: or_default(request.cpu_request, &defaults.cpu_request),
            cpu_limit: or_default(request.cpu_limit, &defaults.cpu_limit),
            memory_request: or_default(request.memory_request, &defaults.memory_request),
            memory_limit: or_default(request.memory_limit, &defaults.memory_limit),
        };
        // Sorted, so a render error's index names the same argument.
        let build_args: BTreeMap<String, String> = request.build_args.into_iter().collect();
        let secret_build_args: BTreeMap<String, String> =
            request.secret_build_args.into_iter().collect();
        Ok(BuildRequest {
            build_id,
            organization_id,
            project_id,
            project_name: request.project_name,
            service_id,
            service_name: request.service_name,
            remote,
            branch: request.branch,
            commit,
            before,
            watch,
            root_dir,
            build_type,
            build_args: build_args.into_iter().collect(),
            secret_build_args: secret_build_args
                .into_iter()
                .map(|(name, value)| (name, SecretValue(value)))
                .collect(),
            timeout_seconds: i64::from(timeout_seconds),
            resources,
        })
    }
}

fn parse_commit(field: &str, value: &str) -> Result<Option<CommitSha>> {
    if value.is_empty() {
        return Ok(None);
    }
    CommitSha::parse(value)
        .map(Some)
        .map_err(|e| rename(from_git(e), field))
}

/// The git credential, with the user name the provider expects when the
/// request gives none.
fn credential(credential: Option<pb::GitCredential>, url: &RepoUrl) -> Result<(Auth, String)> {
    let Some(credential) = credential else {
        return Ok((Auth::None, String::new()));
    };
    let auth = match credential.kind {
        None => Auth::None,
        Some(Kind::Token(pb::TokenCredential { username, token })) => Auth::Token {
            username: if username.is_empty() {
                Provider::guess(url).token_username().to_owned()
            } else {
                username
            },
            token,
        },
        Some(Kind::SshPrivateKey(key)) => Auth::SshKey {
            private_key_openssh: key,
        },
    };
    if !credential.ssh_known_hosts.is_empty() && !matches!(auth, Auth::SshKey { .. }) {
        return Err(Error::invalid(
            "credential.sshKnownHosts",
            "applies only to an SSH key credential",
        ));
    }
    Ok((auth, credential.ssh_known_hosts))
}

fn requested(
    build_type: &str,
    dockerfile_path: &str,
    dockerfile_target: &str,
    config: &Config,
) -> Result<Requested> {
    let target = (!dockerfile_target.is_empty()).then(|| dockerfile_target.to_owned());
    let kind = match build_type {
        "" | "auto" => {
            if !dockerfile_path.is_empty() {
                return Err(Error::invalid(
                    "dockerfilePath",
                    "applies only to buildType dockerfile (auto builds the Dockerfile it finds)",
                ));
            }
            return Ok(Requested::Auto {
                dockerfile_target: target,
            });
        }
        "dockerfile" => {
            return Ok(Requested::Explicit(BuildKind::Dockerfile {
                path: if dockerfile_path.is_empty() {
                    "Dockerfile".into()
                } else {
                    dockerfile_path.to_owned()
                },
                target,
            }));
        }
        "railpack" => BuildKind::railpack(),
        "buildpacks" => BuildKind::buildpacks(config.buildpacks_builder.clone()),
        "static" => BuildKind::static_site(None),
        _ => {
            return Err(Error::invalid(
                "buildType",
                "must be auto, dockerfile, railpack, buildpacks or static",
            ));
        }
    };
    for (field, value) in [
        ("dockerfilePath", dockerfile_path),
        ("dockerfileTarget", dockerfile_target),
    ] {
        if !value.is_empty() {
            return Err(Error::invalid(
                field,
                format!("applies only to buildType dockerfile or auto, not {build_type}"),
            ));
        }
    }
    Ok(Requested::Explicit(kind))
}

/// ferry-git's refusal, with its field renamed to the request's.
fn from_git(err: ferry_git::Error) -> Error {
    match err {
        ferry_git::Error::Invalid { field, reason } => {
            let field = match field.as_str() {
                "repository" => "repositoryUrl",
                "auth" => "credential",
                "auth.username" => "credential.token.username",
                "auth.token" => "credential.token.token",
                "auth.sshKey" => "credential.sshPrivateKey",
                "knownHosts" => "credential.sshKnownHosts",
                other => other,
            };
            Error::invalid(field, reason)
        }
        // The validators only ever answer Invalid.
        other => Error::invalid("request", other.to_string()),
    }
}

fn rename(err: Error, field: &str) -> Error {
    match err {
        Error::Invalid { reason, .. } => Error::invalid(field, reason),
        other => other,
    }
}

/// `buildArgs[NODE_ENV]`; a name that is not a plain identifier is quoted
/// and cut, so no field name grows with the input.
pub fn arg_field(list: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("{list}[{name}]")
    } else {
        let shown: String = name.chars().take(64).collect();
        format!("{list}[{shown:?}]")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A valid request (`auto`, a public https repository), for the unit
    /// tests of this crate.
    pub(crate) fn request() -> pb::RunBuildRequest {
        pb::RunBuildRequest {
            build_id: Uuid::from_u128(1).to_string(),
            organization_id: Uuid::from_u128(2).to_string(),
            project_id: Uuid::from_u128(3).to_string(),
            project_name: "shop".into(),
            service_id: Uuid::from_u128(4).to_string(),
            service_name: "web".into(),
            repository_url: "https://github.com/acme/shop.git".into(),
            branch: "main".into(),
            build_type: "auto".into(),
            ..Default::default()
        }
    }

    fn refusal(mutate: impl FnOnce(&mut pb::RunBuildRequest)) -> String {
        let mut r = request();
        mutate(&mut r);
        BuildRequest::parse(r, &Config::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_plain_request_gets_the_defaults() {
        let r = BuildRequest::parse(request(), &Config::default()).unwrap();
        assert_eq!(r.timeout_seconds, 1800);
        assert_eq!(r.resources.memory_limit.as_deref(), Some("4Gi"));
        assert_eq!(
            r.build_type,
            Requested::Auto {
                dockerfile_target: None
            }
        );
        assert_eq!(r.root_dir, "");
        let mut with_token = request();
        with_token.credential = Some(pb::GitCredential {
            kind: Some(Kind::Token(pb::TokenCredential {
                username: String::new(),
                token: "ghp_x".into(),
            })),
            ssh_known_hosts: String::new(),
        });
        with_token.root_dir = "./apps/web/".into();
        let r = BuildRequest::parse(with_token, &Config::default()).unwrap();
        assert!(
            matches!(&r.remote.auth, Auth::Token { username, .. } if username == "x-access-token")
        );
        assert_eq!(r.root_dir, "apps/web");
    }

    #[test]
    fn the_apis_resources_replace_the_defaults() {
        // The api sends the organization's build resources; the builder's
        // flags only fill what a request leaves empty.
        let mut given = request();
        given.cpu_request = "750m".into();
        given.cpu_limit = "3".into();
        given.memory_request = "2Gi".into();
        given.memory_limit = "8Gi".into();
        let r = BuildRequest::parse(given, &Config::default()).unwrap();
        assert_eq!(
            r.resources,
            Resources {
                cpu_request: Some("750m".into()),
                cpu_limit: Some("3".into()),
                memory_request: Some("2Gi".into()),
                memory_limit: Some("8Gi".into()),
            }
        );
        let mut partial = request();
        partial.cpu_limit = "1".into();
        let r = BuildRequest::parse(partial, &Config::default()).unwrap();
        assert_eq!(r.resources.cpu_limit.as_deref(), Some("1"));
        assert_eq!(r.resources.cpu_request.as_deref(), Some("500m"));
    }

    #[test]
    fn refusals_name_the_request_field() {
        type Mutation = fn(&mut pb::RunBuildRequest);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.build_id = "x".into(), "buildId: "),
            (|r| r.service_id = String::new(), "serviceId: "),
            (
                |r| r.repository_url = "file:///etc".into(),
                "repositoryUrl: ",
            ),
            (
                |r| r.repository_url = "http://git.local/a".into(),
                "repositoryUrl: http:// URLs are not allowed",
            ),
            (|r| r.branch = "-x".into(), "branch: "),
            (|r| r.branch = String::new(), "branch: is empty"),
            (|r| r.commit_sha = "abc".into(), "commitSha: "),
            (|r| r.before_sha = "abc".into(), "beforeSha: "),
            (
                |r| r.watch_paths = vec!["a".into(), "b".into(), "../c".into()],
                "watchPaths[2]: ",
            ),
            (|r| r.root_dir = "../x".into(), "rootDir: "),
            (|r| r.build_type = "nix".into(), "buildType: "),
            (|r| r.dockerfile_path = "D".into(), "dockerfilePath: "),
            (
                |r| {
                    r.build_type = "railpack".into();
                    r.dockerfile_target = "x".into();
                },
                "dockerfileTarget: ",
            ),
            (
                |r| r.timeout_seconds = 7201,
                "timeoutSeconds: is 7201; at most 7200",
            ),
            (
                |r| {
                    r.credential = Some(pb::GitCredential {
                        kind: Some(Kind::SshPrivateKey("not a key".into())),
                        ssh_known_hosts: String::new(),
                    })
                },
                "credential: an SSH key works only with ssh://",
            ),
            (
                |r| {
                    r.credential = Some(pb::GitCredential {
                        kind: Some(Kind::Token(pb::TokenCredential {
                            username: "u".into(),
                            token: "t\nX: y".into(),
                        })),
                        ssh_known_hosts: String::new(),
                    })
                },
                "credential.token.token: ",
            ),
            (
                |r| {
                    r.credential = Some(pb::GitCredential {
                        kind: None,
                        ssh_known_hosts: "h ssh-ed25519 AAAA".into(),
                    })
                },
                "credential.sshKnownHosts: ",
            ),
        ];
        for (mutate, prefix) in cases {
            let err = refusal(mutate);
            assert!(err.starts_with(prefix), "{prefix}: {err}");
        }
        // A commit alone needs no branch.
        let mut r = request();
        r.branch = String::new();
        r.commit_sha = SHA.to_uppercase();
        let parsed = BuildRequest::parse(r, &Config::default()).unwrap();
        assert_eq!(parsed.commit.unwrap().as_str(), SHA);
    }

    #[test]
    fn known_hosts_reach_the_remote() {
        const HOSTS: &str = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let ssh = |known_hosts: &str| {
            let mut r = request();
            r.repository_url = "git@git.example.com:team/app.git".into();
            r.credential = Some(pb::GitCredential {
                kind: Some(Kind::SshPrivateKey(
                    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
                        .into(),
                )),
                ssh_known_hosts: known_hosts.into(),
            });
            BuildRequest::parse(r, &Config::default())
        };
        // ferry-git checks the builder's own ls-remote and fetches against them.
        let parsed = ssh(HOSTS).unwrap();
        assert_eq!(parsed.remote.known_hosts.as_deref(), Some(HOSTS));
        // None given: ferry-git alone would accept the key shown, but the
        // Job refuses to render without them (plan::check, before any git).
        assert_eq!(ssh("").unwrap().remote.known_hosts, None);
        let err = ssh(&format!("{HOSTS}\0")).unwrap_err().to_string();
        assert!(err.starts_with("credential.sshKnownHosts: "), "{err}");
    }

    #[test]
    fn arg_fields_stay_short() {
        assert_eq!(arg_field("buildArgs", "NODE_ENV"), "buildArgs[NODE_ENV]");
        assert_eq!(arg_field("buildArgs", "A B"), "buildArgs[\"A B\"]");
        assert!(arg_field("buildArgs", &"x-".repeat(10_000)).len() < 80);
    }
}
