//! A checked request as ferry-k8s's [`BuildSpec`] and [`BuildCredentials`],
//! and ferry-k8s's refusals as the request's field names.

use std::collections::BTreeMap;

use ferry_git::Auth;
use ferry_k8s::build::{
    BuildCredentials, BuildImages, BuildKind, BuildSpec, GitAuth, GitCredential, cache_ref,
    image_ref, render_build, render_build_secret,
};
use ferry_k8s::spec::SecretValue;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::request::{BuildRequest, Requested, arg_field};

/// Why a plan was only rendered.
pub const PLANNED_REASON: &str =
    "no Kubernetes cluster configured: the build was resolved and rendered, not run";

/// The Job's spec for `commit_sha` built as `kind`.
pub fn spec(
    request: &BuildRequest,
    config: &Config,
    registry: &str,
    commit_sha: &str,
    kind: BuildKind,
    annotations: BTreeMap<String, String>,
) -> BuildSpec {
    let (project, service) = (&request.project_name, &request.service_name);
    BuildSpec {
        build_id: request.build_id,
        organization_id: request.organization_id,
        project_id: request.project_id,
        project_name: project.clone(),
        service_id: request.service_id,
        service_name: service.clone(),
        namespace: config.namespace.clone(),
        repository_url: request.remote.url.as_str().to_owned(),
        allow_http: config.allow_http_git,
        commit_sha: commit_sha.to_owned(),
        root_dir: request.root_dir.clone(),
        kind,
        destination: image_ref(registry, project, service, commit_sha),
        cache_ref: cache_ref(registry, project, service),
        build_args: request.build_args.clone(),
        secret_build_args: request
            .secret_build_args
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        git_auth: match request.remote.auth {
            Auth::None => GitAuth::None,
            Auth::Token { .. } => GitAuth::Token,
            Auth::SshKey { .. } => GitAuth::SshKey,
        },
        timeout_seconds: request.timeout_seconds,
        // Checked to fit at start-up.
        ttl_seconds_after_finished: i32::try_from(config.job_ttl_secs).unwrap_or(i32::MAX),
        resources: request.resources.clone(),
        scratch_size_limit: config.scratch_size.clone(),
        images: BuildImages::default(),
        annotations,
    }
}

/// What the per-build Secret holds.
pub fn credentials(request: &BuildRequest, config: &Config) -> BuildCredentials {
    BuildCredentials {
        git: match &request.remote.auth {
            Auth::None => GitCredential::None,
            Auth::Token { username, token } => GitCredential::Token {
                username: username.clone(),
                token: SecretValue(token.clone()),
            },
            Auth::SshKey {
                private_key_openssh,
            } => GitCredential::SshKey {
                private_key: SecretValue(private_key_openssh.clone()),
                known_hosts: request.remote.known_hosts.clone().unwrap_or_default(),
            },
        },
        registry: config.registry_auth.clone(),
        secret_build_args: request.secret_build_args.clone(),
    }
}

/// Renders the Job and Secret once with what is known before any git work
/// (a placeholder commit; Railpack for `auto`), so every field ferry-k8s
/// checks is refused up front and nothing is started for a bad request.
pub fn check(request: &BuildRequest, config: &Config, registry: &str) -> Result<()> {
    let placeholder = "0".repeat(40);
    let commit = request
        .commit
        .as_ref()
        .map_or(placeholder.as_str(), |c| c.as_str());
    let kind = match &request.build_type {
        Requested::Explicit(kind) => kind.clone(),
        Requested::Auto {
            dockerfile_target: Some(target),
        } => BuildKind::Dockerfile {
            path: "Dockerfile".into(),
            target: Some(target.clone()),
        },
        Requested::Auto { .. } => BuildKind::railpack(),
    };
    let spec = spec(request, config, registry, commit, kind, BTreeMap::new());
    render_build(&spec).map_err(|e| from_render(request, e))?;
    render_build_secret(&spec, &credentials(request, config))
        .map_err(|e| from_render(request, e))?;
    Ok(())
}

/// The rendered Job as YAML. It holds no secret value: credentials and
/// secret build args live in the per-build Secret, which is not shown.
pub fn job_yaml(spec: &BuildSpec, request: &BuildRequest) -> Result<String> {
    let job = render_build(spec).map_err(|e| from_render(request, e))?;
    serde_yaml_ng::to_string(&job)
        .map_err(|e| Error::Kube(ferry_k8s::Error::Encoding(e.to_string())))
}

/// A render refusal: the request's field when the request is at fault
/// (INVALID_ARGUMENT), otherwise the builder's configuration.
pub fn from_render(request: &BuildRequest, err: ferry_k8s::Error) -> Error {
    let ferry_k8s::Error::Invalid { field, reason } = err else {
        return Error::Kube(err);
    };
    match request_field(request, &field) {
        Some(field) => Error::invalid(field, reason),
        None => Error::Config(format!(
            "the builder's configuration cannot be rendered ({field}: {reason}); check its flags"
        )),
    }
}

fn request_field(request: &BuildRequest, field: &str) -> Option<String> {
    let same = [
        "projectName",
        "serviceName",
        "repositoryUrl",
        "commitSha",
        "rootDir",
        "timeoutSeconds",
        "buildArgs",
        "secretBuildArgs",
    ];
    if same.contains(&field) {
        return Some(field.to_owned());
    }
    let renamed = match field {
        "kind.path" => Some("dockerfilePath"),
        "kind.target" => Some("dockerfileTarget"),
        "resources.cpuRequest" => Some("cpuRequest"),
        "resources.cpuLimit" => Some("cpuLimit"),
        "resources.memoryRequest" => Some("memoryRequest"),
        "resources.memoryLimit" => Some("memoryLimit"),
        "credentials.git" => Some("credential"),
        "credentials.git.privateKey" => Some("credential.sshPrivateKey"),
        "credentials.git.knownHosts" => Some("credential.sshKnownHosts"),
        _ => None,
    };
    if let Some(name) = renamed {
        return Some(name.to_owned());
    }
    // `buildArgs[3].name`, `secretBuildArgs[0]`,
    // `credentials.secretBuildArgs[0].value`: by name, not position.
    let (list, rest) = field.split_once('[')?;
    let index: usize = rest.split_once(']')?.0.parse().ok()?;
    match list {
        "buildArgs" => request
            .build_args
            .get(index)
            .map(|(name, _)| arg_field("buildArgs", name)),
        "secretBuildArgs" | "credentials.secretBuildArgs" => request
            .secret_build_args
            .get(index)
            .map(|(name, _)| arg_field("secretBuildArgs", name)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use ferry_proto::ferry::internal::v1 as pb;

    use super::*;

    fn request(mutate: impl FnOnce(&mut pb::RunBuildRequest)) -> BuildRequest {
        let mut r = crate::request::tests::request();
        mutate(&mut r);
        BuildRequest::parse(r, &Config::default()).unwrap()
    }

    fn refusal(mutate: impl FnOnce(&mut pb::RunBuildRequest)) -> String {
        check(&request(mutate), &Config::default(), "r.example.com/ferry")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn render_refusals_name_the_request_field() {
        check(&request(|_| {}), &Config::default(), "r.example.com/ferry").unwrap();
        type Mutation = fn(&mut pb::RunBuildRequest);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.project_name = "Shop".into(), "projectName: "),
            (|r| r.service_name = "web_1".into(), "serviceName: "),
            (
                |r| {
                    r.build_args.insert("A".into(), "1".into());
                    r.build_args.insert("B C".into(), "2".into());
                },
                "buildArgs[\"B C\"]: ",
            ),
            (
                |r| {
                    r.build_args.insert("BIG".into(), "x".repeat(5000));
                },
                "buildArgs[BIG]: is 5000 bytes",
            ),
            (
                |r| {
                    r.build_args.insert("TOKEN".into(), "1".into());
                    r.secret_build_args.insert("TOKEN".into(), "s".into());
                },
                "secretBuildArgs[TOKEN]: ",
            ),
            (
                |r| r.build_args = (0..101).map(|i| (format!("A{i}"), String::new())).collect(),
                "buildArgs: 101 build args",
            ),
            (
                |r| {
                    r.build_type = "dockerfile".into();
                    r.dockerfile_path = "../Dockerfile".into();
                },
                "dockerfilePath: ",
            ),
            (|r| r.dockerfile_target = "a b".into(), "dockerfileTarget: "),
            (|r| r.memory_limit = "lots".into(), "memoryLimit: "),
            (
                |r| {
                    r.repository_url = "git@github.com:acme/shop.git".into();
                    r.credential = Some(pb::GitCredential {
                        kind: Some(pb::git_credential::Kind::SshPrivateKey(
                            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n".into(),
                        )),
                        ssh_known_hosts: String::new(),
                    });
                },
                "credential.sshKnownHosts: ",
            ),
        ];
        for (mutate, prefix) in cases {
            let err = refusal(mutate);
            assert!(err.starts_with(prefix), "{prefix}: {err}");
        }
    }

    #[test]
    fn configuration_faults_are_not_the_callers() {
        let err = check(&request(|_| {}), &Config::default(), "r.io/Up").unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}
