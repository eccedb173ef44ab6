//! The builder's checked settings: what [`crate::Args`] says, validated once
//! at start-up so a misconfiguration stops the process instead of failing
//! every build.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_k8s::build::{EgressPolicy, MAX_TIMEOUT_SECONDS, builds_namespace};
use ferry_k8s::spec::{RegistryAuth, Resources, SecretValue};
use ferry_k8s::validate;

use crate::args::Args;
use crate::auth::ServiceToken;
use crate::error::{Error, Result};

/// Settings of one builder process.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: Option<ServiceToken>,
    /// Push destination prefix (`registry.example.com/ferry`); builds are
    /// refused (FAILED_PRECONDITION) without it.
    pub registry: Option<String>,
    pub registry_auth: Option<RegistryAuth>,
    pub namespace: String,
    pub egress: EgressPolicy,
    pub default_timeout_secs: u32,
    pub max_timeout_secs: u32,
    pub git_timeout: Duration,
    /// `None`: a private temp dir, removed when the builder stops.
    pub work_dir: Option<PathBuf>,
    pub allow_http_git: bool,
    pub max_concurrent_resolves: usize,
    /// Per-step requests and limits when a request gives none.
    pub resources: Resources,
    pub scratch_size: Option<String>,
    pub job_ttl_secs: u32,
    pub buildpacks_builder: String,
}

impl Default for Config {
    /// The flags' defaults (no token, no registry).
    fn default() -> Self {
        Config {
            token: None,
            registry: None,
            registry_auth: None,
            namespace: ferry_k8s::build::BUILDS_NAMESPACE.into(),
            egress: EgressPolicy::default(),
            default_timeout_secs: 1800,
            max_timeout_secs: 7200,
            git_timeout: ferry_git::DEFAULT_TIMEOUT,
            work_dir: None,
            allow_http_git: false,
            max_concurrent_resolves: 4,
            resources: Resources {
                cpu_request: Some("500m".into()),
                cpu_limit: Some("2".into()),
                memory_request: Some("1Gi".into()),
                memory_limit: Some("4Gi".into()),
            },
            scratch_size: Some("20Gi".into()),
            job_ttl_secs: 3600,
            buildpacks_builder: "paketobuildpacks/builder-jammy-base:0.4.552".into(),
        }
    }
}

impl Config {
    /// The checked settings of `args` (reads `--registry-auth-file`).
    pub fn from_args(args: &Args) -> Result<Config> {
        let registry = args
            .registry
            .as_deref()
            .map(|r| r.trim().trim_end_matches('/').to_owned());
        let registry_auth = match (&args.registry_auth_file, &registry) {
            (Some(path), Some(registry)) => Some(read_registry_auth(path, registry)?),
            (Some(_), None) => {
                return Err(Error::Config(
                    "--registry-auth-file needs --registry (FERRY_BUILDER_REGISTRY)".into(),
                ));
            }
            (None, _) => None,
        };
        let config = Config {
            token: args.token.clone(),
            registry,
            registry_auth,
            namespace: args.namespace.clone(),
            egress: EgressPolicy {
                pod_cidrs: args.cluster_cidrs.clone(),
                api_server: args.api_server_cidrs.clone(),
                ..EgressPolicy::default()
            },
            default_timeout_secs: args.default_timeout_secs,
            max_timeout_secs: args.max_timeout_secs,
            git_timeout: Duration::from_secs(args.git_timeout_secs),
            work_dir: args.work_dir.clone(),
            allow_http_git: args.allow_http_git,
            max_concurrent_resolves: usize::from(args.max_concurrent_resolves),
            resources: Resources {
                cpu_request: Some(args.cpu_request.clone()),
                cpu_limit: Some(args.cpu_limit.clone()),
                memory_request: Some(args.memory_request.clone()),
                memory_limit: Some(args.memory_limit.clone()),
            },
            scratch_size: Some(args.scratch_size.clone()),
            job_ttl_secs: args.job_ttl_secs,
            buildpacks_builder: args.buildpacks_builder.clone(),
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses settings no build could run with; the error names the flag.
    pub fn check(&self) -> Result<()> {
        let fail = |reason: String| Err(Error::Config(reason));
        if let Some(registry) = &self.registry
            && let Err(reason) = check_registry(registry)
        {
            return fail(format!("--registry {registry:?}: {reason}"));
        }
        if let Err(e) = builds_namespace(&self.namespace, &self.egress) {
            return fail(format!(
                "--namespace/--cluster-cidrs/--api-server-cidrs: {e}"
            ));
        }
        let max = u32::try_from(MAX_TIMEOUT_SECONDS).unwrap_or(u32::MAX);
        if self.max_timeout_secs == 0 || self.max_timeout_secs > max {
            return fail(format!("--max-timeout-secs must be 1 to {max}"));
        }
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return fail("--default-timeout-secs must be 1 to --max-timeout-secs".into());
        }
        if self.git_timeout.is_zero() {
            return fail("--git-timeout-secs must be at least 1".into());
        }
        if self.max_concurrent_resolves == 0 {
            return fail("--max-concurrent-resolves must be at least 1".into());
        }
        let r = &self.resources;
        for (flag, value, ok) in [
            (
                "--cpu-request",
                &r.cpu_request,
                validate::is_cpu as fn(&str) -> bool,
            ),
            ("--cpu-limit", &r.cpu_limit, validate::is_cpu),
            ("--memory-request", &r.memory_request, validate::is_memory),
            ("--memory-limit", &r.memory_limit, validate::is_memory),
            ("--scratch-size", &self.scratch_size, validate::is_memory),
        ] {
            if let Some(value) = value
                && !ok(value)
            {
                return fail(format!("{flag} {value:?} is not a Kubernetes quantity"));
            }
        }
        if i32::try_from(self.job_ttl_secs).is_err() {
            return fail("--job-ttl-secs is too large".into());
        }
        Ok(())
    }

    /// The registry, or the error every build gets without one.
    pub fn registry(&self) -> Result<&str> {
        self.registry.as_deref().ok_or_else(|| {
            Error::Config("no registry to push to: set FERRY_BUILDER_REGISTRY".into())
        })
    }
}

/// `host[:port][/path...]`, lowercase, without scheme, tag or digest: the
/// image references built from it are validated again at render.
fn check_registry(registry: &str) -> Result<(), String> {
    if registry.contains("://") {
        return Err("give the registry without a scheme, e.g. registry.example.com/ferry".into());
    }
    let mut parts = registry.split('/');
    let host = parts.next().unwrap_or_default();
    let (name, port) = host.split_once(':').unwrap_or((host, "1"));
    let host_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
        && !port.is_empty()
        && port.chars().all(|c| c.is_ascii_digit());
    if !host_ok {
        return Err(
            "the host must be lowercase letters, digits, '.', '-' and an optional :port".into(),
        );
    }
    let path_ok = parts.all(|p| {
        !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
    });
    if !path_ok {
        return Err("path components must be lowercase letters, digits, '.', '_', '-'".into());
    }
    Ok(())
}

/// The push credential for `registry`'s host from a docker `config.json`.
fn read_registry_auth(path: &Path, registry: &str) -> Result<RegistryAuth> {
    let fail = |reason: String| {
        Error::Config(format!("--registry-auth-file {}: {reason}", path.display()))
    };
    let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| fail(format!("not JSON ({e})")))?;
    let server = registry.split('/').next().unwrap_or_default();
    let entry = json
        .get("auths")
        .and_then(serde_json::Value::as_object)
        .and_then(|auths| {
            auths
                .iter()
                .find(|(key, _)| config_host(key) == server)
                .map(|(_, entry)| entry)
        })
        .ok_or_else(|| fail(format!("has no auths entry for {server}")))?;
    let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
    let (username, password) = match (field("username"), field("password"), field("auth")) {
        (Some(user), Some(password), _) => (user.to_owned(), password.to_owned()),
        (_, _, Some(auth)) => {
            let decoded = BASE64
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    fail(format!(
                        "the auth of {server} is not base64 of user:password"
                    ))
                })?;
            let (user, password) = decoded.split_once(':').ok_or_else(|| {
                fail(format!(
                    "the auth of {server} is not base64 of user:password"
                ))
            })?;
            (user.to_owned(), password.to_owned())
        }
        _ => {
            return Err(fail(format!(
                "the entry for {server} has neither auth nor username and password"
            )));
        }
    };
    Ok(RegistryAuth {
        server: server.to_owned(),
        username,
        password: SecretValue(password),
    })
}

/// `https://host/v1/` and `host` both name `host`.
fn config_host(key: &str) -> &str {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    key.split('/').next().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["ferry-builder"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_match_the_flags() {
        let from_flags = Config::from_args(&args(&[])).unwrap();
        let default = Config::default();
        assert_eq!(format!("{from_flags:?}"), format!("{default:?}"));
    }

    #[test]
    fn registries_are_checked() {
        for ok in ["registry.example.com/ferry", "localhost:5000", "r.io/a/b-c"] {
            check_registry(ok).unwrap();
        }
        for bad in [
            "https://registry.example.com",
            "Registry.io/x",
            "r.io/A",
            "r.io//x",
            "r.io:port/x",
            "",
            "r.io/x:tag",
        ] {
            assert!(check_registry(bad).is_err(), "{bad}");
        }
        let err = Config::from_args(&args(&["--registry", "https://r.io"])).unwrap_err();
        assert!(err.to_string().contains("--registry"), "{err}");
    }

    #[test]
    fn bad_settings_name_their_flag() {
        for (argv, flag) in [
            (
                &["--default-timeout-secs", "9000"][..],
                "--default-timeout-secs",
            ),
            (&["--max-timeout-secs", "0"][..], "--max-timeout-secs"),
            (&["--cpu-limit", "lots"][..], "--cpu-limit"),
            (&["--cluster-cidrs", "10.0.0.0/33"][..], "--cluster-cidrs"),
            (&["--namespace", "Builds"][..], "--namespace"),
            (&["--registry-auth-file", "/x.json"][..], "--registry"),
        ] {
            let err = Config::from_args(&args(argv)).unwrap_err().to_string();
            assert!(err.contains(flag), "{argv:?}: {err}");
        }
    }

    #[test]
    fn registry_auth_from_a_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = BASE64.encode("pusher:s3cret-pass");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"other.io":{{"auth":"eDp5"}},"https://r.example.com/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let config = Config::from_args(&args(&[
            "--registry",
            "r.example.com/ferry",
            "--registry-auth-file",
            file,
        ]))
        .unwrap();
        let auth = config.registry_auth.clone().unwrap();
        assert_eq!(auth.server, "r.example.com");
        assert_eq!(auth.username, "pusher");
        assert_eq!(auth.password.expose(), "s3cret-pass");
        assert!(!format!("{config:?}").contains("s3cret"));

        std::fs::write(
            &path,
            r#"{"auths":{"r.example.com":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let config = Config::from_args(&args(&[
            "--registry",
            "r.example.com",
            "--registry-auth-file",
            file,
        ]))
        .unwrap();
        assert_eq!(config.registry_auth.unwrap().username, "u");

        let err = Config::from_args(&args(&[
            "--registry",
            "elsewhere.io",
            "--registry-auth-file",
            file,
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("no auths entry for elsewhere.io"), "{err}");
    }
}
