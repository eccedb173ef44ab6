//! Image builds as Kubernetes Jobs: the cluster side of ferry-builder.
//!
//! [`render_build`] turns one [`BuildSpec`] into one batch/v1 `Job` in the
//! dedicated builds namespace ([`builds_namespace`]); [`render_build_secret`]
//! renders the per-build `Secret` it reads its credentials from. The Job
//! never retries (`backoffLimit: 0`), stops at the build's timeout
//! (`activeDeadlineSeconds`) and is deleted `ttlSecondsAfterFinished` after
//! it ends, taking its pod and (through its owner reference) its Secret.
//!
//! The pod, in order:
//!
//! | container | image | does |
//! |---|---|---|
//! | `clone-init` | git | `git init /workspace/src` |
//! | `clone-fetch` | git | `git fetch --depth 1 <url> <sha>` (the only container that sees the git credential) |
//! | `clone-checkout` | git | `git checkout --detach FETCH_HEAD` |
//! | `prepare-tools` | railpack frontend | copies its `/railpack` binary out (Railpack and Static only) |
//! | `prepare-plan` | railpack builder | `railpack prepare` writes the build plan (Railpack and Static only) |
//! | `build` | rootless BuildKit, or the CNB builder | builds and pushes; its termination message carries the digest |
//!
//! Every container gets argv only, never a shell line: user input (URL,
//! commit, paths, build args) travels as separate argv elements and is
//! validated first. Credentials are files from the Secret, mounted only
//! into the container that needs them; they never appear in an env value
//! or an argument. Secret build args are BuildKit secrets (files), never
//! `--opt build-arg:`.
//!
//! Static sites are built by Railpack (its `staticfile` provider serves
//! them with Caddy), with `RAILPACK_STATIC_FILE_ROOT` set when the spec
//! names the directory to publish: one builder less to pin and patch.

mod namespace;
pub(crate) mod outcome;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::render::{
    check_label, docker_config_json, labels, non_empty, ownership_labels, resource_requirements,
    runtime_default,
};
use crate::spec::{RegistryAuth, Resources, SecretValue};
use crate::validate;

pub use namespace::{BuildsNamespace, EgressPolicy, builds_namespace};
pub use outcome::{BuildOutcome, BuildStep, FailureReason, parse_digest};

/// The dedicated namespace builds run in by default.
pub const BUILDS_NAMESPACE: &str = "ferry-builds";
/// git for the clone steps (pinned; argv `git ...`).
pub const DEFAULT_GIT_IMAGE: &str = "alpine/git:v2.47.2";
/// Rootless BuildKit, run daemonless (`buildctl-daemonless.sh`).
pub const DEFAULT_BUILDKIT_IMAGE: &str = "moby/buildkit:v0.23.2-rootless";
/// Railpack's BuildKit frontend; its image also holds the `railpack` CLI.
pub const DEFAULT_RAILPACK_FRONTEND_IMAGE: &str = "ghcr.io/railwayapp/railpack-frontend:v0.40.0";
/// Where `railpack prepare` runs: it downloads a glibc `mise` to resolve
/// versions, which cannot run in the (Alpine) frontend image. Must be the
/// builder image of the same Railpack release as the frontend.
pub const DEFAULT_RAILPACK_BUILDER_IMAGE: &str =
    "ghcr.io/railwayapp/railpack-builder:mise-2026.6.10";
/// uid/gid of the CNB builder's user when the spec does not say otherwise.
pub const DEFAULT_CNB_USER_ID: i64 = 1000;
pub const DEFAULT_CNB_GROUP_ID: i64 = 1000;

/// The user the rootless BuildKit image is built for (its `user`, whose
/// subordinate id range rootlesskit maps): it cannot run as anyone else.
pub const BUILDKIT_USER_ID: i64 = 1000;

/// Container names, in the order they run.
pub mod containers {
    pub const CLONE_INIT: &str = "clone-init";
    pub const CLONE_FETCH: &str = "clone-fetch";
    pub const CLONE_CHECKOUT: &str = "clone-checkout";
    pub const PREPARE_TOOLS: &str = "prepare-tools";
    pub const PREPARE_PLAN: &str = "prepare-plan";
    pub const BUILD: &str = "build";
}

/// Keys of the per-build Secret.
pub mod secret_keys {
    /// git-credential-store file: `https://user:token@host`.
    pub const GIT_CREDENTIALS: &str = "git-credentials";
    pub const SSH_PRIVATE_KEY: &str = "ssh-privatekey";
    pub const KNOWN_HOSTS: &str = "known_hosts";
    /// A one-line `/etc/passwd` for the clone-fetch container: ssh refuses
    /// to run for a uid the image does not know.
    pub const PASSWD: &str = "passwd";
    /// Docker config the build pushes with.
    pub const REGISTRY_CONFIG: &str = "config.json";
    /// Prefix of one build arg's value (`build-arg.NAME`).
    pub const BUILD_ARG_PREFIX: &str = "build-arg.";
}

/// Paths inside the build pod.
pub mod paths {
    pub const WORKSPACE: &str = "/workspace";
    /// The checkout: a directory git creates (and so owns) inside the
    /// workspace volume, whose root belongs to the kubelet.
    pub const SOURCE: &str = "/workspace/src";
    pub const TMP: &str = "/tmp";
    pub const GIT_SECRET: &str = "/run/ferry/git";
    pub const REGISTRY: &str = "/run/ferry/registry";
    pub const SECRETS: &str = "/run/ferry/secrets";
    pub const TOOLS: &str = "/ferry/tools";
    pub const PLAN: &str = "/ferry/plan";
    pub const PLAN_FILE: &str = "railpack-plan.json";
    pub const BUILDKIT_STATE: &str = "/home/user/.local/share/buildkit";
    pub const LAYERS: &str = "/layers";
    pub const PLATFORM: &str = "/platform";
    pub const TERMINATION_LOG: &str = "/dev/termination-log";
}

/// At most this many build args (plain and secret together).
pub const MAX_BUILD_ARGS: usize = 100;
pub const MAX_BUILD_ARG_NAME: usize = 128;
pub const MAX_BUILD_ARG_VALUE: usize = 4096;
/// The longest build Ferry lets run.
pub const MAX_TIMEOUT_SECONDS: i64 = 24 * 60 * 60;
/// Build Job annotations are Ferry's own: keys start with this.
pub const ANNOTATION_PREFIX: &str = "ferry.dev/";
/// Keys and values of a build's annotations together, at most.
pub const MAX_ANNOTATION_BYTES: usize = 32 * 1024;

/// One image build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    pub build_id: Uuid,
    pub organization_id: Uuid,
    pub project_id: Uuid,
    /// DNS-1123 label (`app.kubernetes.io/part-of`).
    pub project_name: String,
    pub service_id: Uuid,
    /// DNS-1123 label (`app.kubernetes.io/name`).
    pub service_name: String,
    /// The builds namespace (e.g. [`BUILDS_NAMESPACE`]).
    pub namespace: String,
    /// `https://host/path` or ssh (`ssh://user@host/path`, `user@host:path`);
    /// `http://host/path` only with [`BuildSpec::allow_http`].
    pub repository_url: String,
    /// Accept a plain `http://` repository URL (an in-cluster Gitea, tests):
    /// code and a token credential then travel unencrypted, so it is off
    /// unless the builder is started with `--allow-http-git`.
    pub allow_http: bool,
    /// The exact commit: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    pub commit_sha: String,
    /// Build context inside the repository, relative; `""` is its root.
    pub root_dir: String,
    pub kind: BuildKind,
    /// Where the image is pushed: `<registry>/<project>/<service>:<sha>`
    /// (see [`image_ref`]).
    pub destination: String,
    /// Registry cache (see [`cache_ref`]).
    pub cache_ref: String,
    /// Plain build args (name, value): visible in the Job.
    pub build_args: Vec<(String, String)>,
    /// Names of the secret build args; their values are files from the
    /// per-build Secret ([`BuildCredentials::secret_build_args`]).
    pub secret_build_args: Vec<String>,
    /// Which git credential the per-build Secret holds.
    pub git_auth: GitAuth,
    /// `activeDeadlineSeconds`: the Job is failed (`DeadlineExceeded`) and
    /// its pod killed after this long.
    pub timeout_seconds: i64,
    pub ttl_seconds_after_finished: i32,
    /// Requests and limits of every container.
    pub resources: Resources,
    /// `sizeLimit` of the workspace and build state volumes (e.g. `20Gi`):
    /// a build that fills more is evicted rather than the node's disk.
    pub scratch_size_limit: Option<String>,
    pub images: BuildImages,
    /// Annotations of the Job (keys under `ferry.dev/`): what the builder
    /// resolved (commit, build type, detection), so a restarted builder
    /// re-attaching to the Job can report it without resolving again.
    pub annotations: BTreeMap<String, String>,
}

/// How the image is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildKind {
    /// BuildKit's Dockerfile frontend. `path` is relative to the root dir.
    Dockerfile {
        path: String,
        target: Option<String>,
    },
    /// `railpack prepare` then Railpack's BuildKit frontend (`gateway.v0`).
    Railpack { frontend_image: String },
    /// Cloud Native Buildpacks: the lifecycle's `creator`, run as the
    /// builder image's CNB user (`user_id`/`group_id`, its `CNB_USER_ID`
    /// and `CNB_GROUP_ID`).
    Buildpacks {
        builder_image: String,
        user_id: i64,
        group_id: i64,
    },
    /// A static site, built by Railpack (served by Caddy). `publish_dir`
    /// (relative to the root dir) is the directory served.
    Static {
        frontend_image: String,
        publish_dir: Option<String>,
    },
}

impl BuildKind {
    /// `Dockerfile` at the root dir, last stage.
    pub fn dockerfile() -> Self {
        BuildKind::Dockerfile {
            path: "Dockerfile".into(),
            target: None,
        }
    }

    /// Railpack with the pinned frontend.
    pub fn railpack() -> Self {
        BuildKind::Railpack {
            frontend_image: DEFAULT_RAILPACK_FRONTEND_IMAGE.into(),
        }
    }

    /// Buildpacks with `builder_image`, whose CNB user is 1000:1000.
    pub fn buildpacks(builder_image: impl Into<String>) -> Self {
        BuildKind::Buildpacks {
            builder_image: builder_image.into(),
            user_id: DEFAULT_CNB_USER_ID,
            group_id: DEFAULT_CNB_GROUP_ID,
        }
    }

    /// A static site with the pinned Railpack frontend.
    pub fn static_site(publish_dir: Option<String>) -> Self {
        BuildKind::Static {
            frontend_image: DEFAULT_RAILPACK_FRONTEND_IMAGE.into(),
            publish_dir,
        }
    }

    fn is_railpack(&self) -> bool {
        matches!(self, BuildKind::Railpack { .. } | BuildKind::Static { .. })
    }

    /// uid and gid every container of the pod runs as.
    fn user(&self) -> (i64, i64) {
        match self {
            BuildKind::Buildpacks {
                user_id, group_id, ..
            } => (*user_id, *group_id),
            _ => (BUILDKIT_USER_ID, BUILDKIT_USER_ID),
        }
    }
}

/// The git credential a build clones with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GitAuth {
    /// A public repository.
    #[default]
    None,
    /// HTTPS with a token (git-credential-store file).
    Token,
    /// SSH with a private key and the host's known_hosts entries.
    SshKey,
}

/// Pinned images of the steps that do not depend on the build kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildImages {
    pub git: String,
    pub buildkit: String,
    pub railpack_builder: String,
}

impl Default for BuildImages {
    fn default() -> Self {
        BuildImages {
            git: DEFAULT_GIT_IMAGE.into(),
            buildkit: DEFAULT_BUILDKIT_IMAGE.into(),
            railpack_builder: DEFAULT_RAILPACK_BUILDER_IMAGE.into(),
        }
    }
}

/// What the per-build Secret holds. `Debug` shows no secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCredentials {
    pub git: GitCredential,
    /// Credentials for pushing to (and reading the cache from) the
    /// destination registry; `None` for a registry without auth.
    pub registry: Option<RegistryAuth>,
    /// Values of the spec's secret build args, by name.
    pub secret_build_args: Vec<(String, SecretValue)>,
}

/// The git credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitCredential {
    None,
    Token {
        username: String,
        token: SecretValue,
    },
    SshKey {
        private_key: SecretValue,
        /// `known_hosts` lines for the repository's host: ssh checks the
        /// host key strictly.
        known_hosts: String,
    },
}

impl GitCredential {
    pub fn auth(&self) -> GitAuth {
        match self {
            GitCredential::None => GitAuth::None,
            GitCredential::Token { .. } => GitAuth::Token,
            GitCredential::SshKey { .. } => GitAuth::SshKey,
        }
    }
}

/// `<registry>/<project>/<service>:<sha>`: where a build pushes.
pub fn image_ref(registry: &str, project: &str, service: &str, commit_sha: &str) -> String {
    format!(
        "{}/{project}/{service}:{commit_sha}",
        registry.trim_end_matches('/')
    )
}

/// `<registry>/<project>/<service>:buildcache`: the service's build cache.
pub fn cache_ref(registry: &str, project: &str, service: &str) -> String {
    format!(
        "{}/{project}/{service}:buildcache",
        registry.trim_end_matches('/')
    )
}

/// The Job's (and Secret's) name: `ferry-build-<last 12 hex digits of the
/// build id>`. Deterministic, so applying a build twice finds the first
/// Job. The last digits, because they are random in both v4 and v7 ids
/// (a v7 id starts with its millisecond: builds queued together would
/// share a prefix); a collision is still refused by the ownership check,
/// which also compares the full build id label.
pub fn job_name(build_id: Uuid) -> String {
    let hex = build_id.simple().to_string();
    format!("ferry-build-{}", &hex[hex.len() - 12..])
}

/// Label selector of one build's Job and pod.
pub fn build_selector(build_id: Uuid) -> String {
    format!(
        "{}={},{}={build_id}",
        labels::MANAGED_BY,
        labels::FERRY,
        labels::BUILD_ID
    )
}

/// Label selector of every Ferry build.
pub fn builds_selector() -> String {
    format!(
        "{}={},{}",
        labels::MANAGED_BY,
        labels::FERRY,
        labels::BUILD_ID
    )
}

/// The labels of a build's Job, pod and Secret.
pub fn build_labels(spec: &BuildSpec) -> BTreeMap<String, String> {
    let mut l = ownership_labels(spec.organization_id, spec.project_id, &spec.project_name);
    l.extend([
        (labels::NAME.to_owned(), spec.service_name.clone()),
        (labels::INSTANCE.to_owned(), job_name(spec.build_id)),
        (labels::COMPONENT.to_owned(), "build".to_owned()),
        (labels::SERVICE_ID.to_owned(), spec.service_id.to_string()),
        (labels::BUILD_ID.to_owned(), spec.build_id.to_string()),
    ]);
    l
}

fn meta(spec: &BuildSpec) -> ObjectMeta {
    ObjectMeta {
        name: Some(job_name(spec.build_id)),
        namespace: Some(spec.namespace.clone()),
        labels: Some(build_labels(spec)),
        ..ObjectMeta::default()
    }
}

/// Renders the build's Job. Refuses specs that cannot build safely with
/// [`Error::Invalid`] naming the field.
pub fn render_build(spec: &BuildSpec) -> Result<Job> {
    validate_spec(spec)?;
    let (user, group) = spec.kind.user();
    let source = source_dir(&spec.root_dir);

    let mut init = clone_containers(spec);
    if spec.kind.is_railpack() {
        init.extend(railpack_prepare_containers(spec, &source));
    }
    let build = match &spec.kind {
        BuildKind::Buildpacks { builder_image, .. } => {
            buildpacks_container(spec, builder_image, &source)
        }
        _ => buildkit_container(spec),
    };
    let resources = resource_requirements(&spec.resources);
    let with_resources = |mut c: Container| {
        c.resources.clone_from(&resources);
        c
    };
    let init: Vec<Container> = init.into_iter().map(with_resources).collect();
    let build = with_resources(build);

    let mut metadata = meta(spec);
    metadata.annotations = (!spec.annotations.is_empty()).then(|| spec.annotations.clone());
    Ok(Job {
        metadata,
        spec: Some(JobSpec {
            // A build is not retried behind the user's back: a failure is
            // reported as it happened, and a retry is a new build.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(spec.timeout_seconds),
            ttl_seconds_after_finished: Some(spec.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(build_labels(spec)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(init),
                    containers: vec![build],
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(user),
                        run_as_group: Some(group),
                        // Secret files (mode 0440) and emptyDirs belong to
                        // this group, so every step can read them.
                        fs_group: Some(group),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(volumes(spec)),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// Renders the per-build Secret (`type: Opaque`, the build's labels, same
/// name as the Job). [`crate::Cluster::start_build`] points its owner
/// reference at the Job, so it goes when the Job goes.
pub fn render_build_secret(spec: &BuildSpec, credentials: &BuildCredentials) -> Result<Secret> {
    validate_spec(spec)?;
    validate_credentials(spec, credentials)?;
    let mut data = BTreeMap::new();
    let mut put = |key: String, value: Vec<u8>| data.insert(key, ByteString(value));
    match &credentials.git {
        GitCredential::None => {}
        GitCredential::Token { username, token } => {
            let (scheme, host) = http_origin(&spec.repository_url).unwrap_or(("https", ""));
            let line = format!(
                "{scheme}://{}:{}@{host}\n",
                percent_encode(username),
                percent_encode(token.expose())
            );
            put(secret_keys::GIT_CREDENTIALS.into(), line.into_bytes());
        }
        GitCredential::SshKey {
            private_key,
            known_hosts,
        } => {
            let mut key = private_key.expose().to_owned();
            // ssh rejects a key file without its final newline.
            if !key.ends_with('\n') {
                key.push('\n');
            }
            put(secret_keys::SSH_PRIVATE_KEY.into(), key.into_bytes());
            put(
                secret_keys::KNOWN_HOSTS.into(),
                known_hosts.clone().into_bytes(),
            );
            let (user, group) = spec.kind.user();
            put(
                secret_keys::PASSWD.into(),
                format!(
                    "ferry:x:{user}:{group}:ferry:{}:/sbin/nologin\n",
                    paths::TMP
                )
                .into_bytes(),
            );
        }
    }
    put(
        secret_keys::REGISTRY_CONFIG.into(),
        docker_config_json(credentials.registry.as_ref()),
    );
    for (name, value) in &credentials.secret_build_args {
        put(build_arg_key(name), value.expose().as_bytes().to_vec());
    }
    // Buildpacks read build-time env from files only: the plain args go
    // into the Secret too (BuildKit gets them on its command line).
    if matches!(spec.kind, BuildKind::Buildpacks { .. }) {
        for (name, value) in &spec.build_args {
            put(build_arg_key(name), value.as_bytes().to_vec());
        }
    }
    Ok(Secret {
        metadata: meta(spec),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The owner reference that ties a build's Secret to its Job.
/// `blockOwnerDeletion` stays unset: setting it needs `update` on
/// `jobs/finalizers`, and nothing waits for the Secret anyway.
pub fn owned_by_job(secret: &mut Secret, job_name: &str, job_uid: &str) {
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job_name.to_owned(),
        uid: job_uid.to_owned(),
        controller: None,
        block_owner_deletion: None,
    }]);
}

fn build_arg_key(name: &str) -> String {
    format!("{}{name}", secret_keys::BUILD_ARG_PREFIX)
}

/// `/workspace/src` joined with a validated relative directory.
fn source_dir(root: &str) -> String {
    join(paths::SOURCE, root)
}

fn join(base: &str, rel: &str) -> String {
    let rel = rel.trim_matches('/');
    let rel = rel.strip_prefix("./").unwrap_or(rel);
    if rel.is_empty() || rel == "." {
        base.to_owned()
    } else {
        format!("{base}/{rel}")
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Volume names.
mod volume {
    pub const WORKSPACE: &str = "workspace";
    pub const TMP: &str = "tmp";
    pub const GIT: &str = "git-credentials";
    pub const REGISTRY: &str = "registry";
    pub const SECRETS: &str = "build-secrets";
    pub const BUILDKIT: &str = "buildkit-state";
    pub const TOOLS: &str = "tools";
    pub const PLAN: &str = "plan";
    pub const LAYERS: &str = "layers";
    pub const PLATFORM: &str = "platform";
}

/// The hardened context of every step but rootless BuildKit: no
/// capabilities, no privilege escalation, read-only root filesystem
/// (writes go to the workspace and `/tmp` volumes).
fn restricted(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn step(name: &str, image: &str, command: Vec<String>, env: Vec<EnvVar>) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        env: non_empty(&env),
        // A failed step's last log lines become its termination message:
        // the reason a user sees without opening the logs.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(restricted(true)),
        ..Container::default()
    }
}

/// git's environment: no prompts, no system config, and only the https and
/// ssh transports (so no `ext::` or `file://` trick in a URL or a
/// submodule runs anything).
fn git_env(spec: &BuildSpec) -> Vec<EnvVar> {
    vec![
        env("HOME", paths::TMP),
        env("GIT_TERMINAL_PROMPT", "0"),
        env("GIT_CONFIG_NOSYSTEM", "1"),
        env(
            "GIT_ALLOW_PROTOCOL",
            if spec.allow_http {
                "https:ssh:http"
            } else {
                "https:ssh"
            },
        ),
    ]
}

fn clone_containers(spec: &BuildSpec) -> Vec<Container> {
    let git = spec.images.git.as_str();
    let mounts = || {
        vec![
            mount(volume::WORKSPACE, paths::WORKSPACE, false),
            mount(volume::TMP, paths::TMP, false),
        ]
    };
    let mut init = step(
        containers::CLONE_INIT,
        git,
        strings(&["git", "init", "--quiet", paths::SOURCE]),
        git_env(spec),
    );
    init.volume_mounts = Some(mounts());

    let mut fetch_env = git_env(spec);
    let mut fetch_mounts = mounts();
    // git reads the credential from the mounted file; the env only says
    // where the file is (GIT_CONFIG_* is git's command-line config scope).
    let credential_config = match spec.git_auth {
        GitAuth::None => None,
        GitAuth::Token => Some((
            "credential.helper",
            format!(
                "store --file={}/{}",
                paths::GIT_SECRET,
                secret_keys::GIT_CREDENTIALS
            ),
        )),
        GitAuth::SshKey => Some((
            // git runs this through a shell: it holds only Ferry's own
            // constant paths, never user input.
            "core.sshCommand",
            format!(
                "ssh -i {dir}/{key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
                 -o UserKnownHostsFile={dir}/{hosts}",
                dir = paths::GIT_SECRET,
                key = secret_keys::SSH_PRIVATE_KEY,
                hosts = secret_keys::KNOWN_HOSTS,
            ),
        )),
    };
    if let Some((key, value)) = credential_config {
        fetch_env.extend([
            env("GIT_CONFIG_COUNT", "1"),
            env("GIT_CONFIG_KEY_0", key),
            env("GIT_CONFIG_VALUE_0", value),
        ]);
        fetch_mounts.push(mount(volume::GIT, paths::GIT_SECRET, true));
    }
    if spec.git_auth == GitAuth::SshKey {
        fetch_mounts.push(VolumeMount {
            name: volume::GIT.into(),
            mount_path: "/etc/passwd".into(),
            sub_path: Some(secret_keys::PASSWD.into()),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let mut fetch = step(
        containers::CLONE_FETCH,
        git,
        vec![
            "git".into(),
            "-C".into(),
            paths::SOURCE.into(),
            "fetch".into(),
            "--quiet".into(),
            "--depth=1".into(),
            "--no-tags".into(),
            // Validated: https/ssh, never starting with '-'.
            spec.repository_url.clone(),
            // Validated: 40 or 64 hex digits.
            spec.commit_sha.clone(),
        ],
        fetch_env,
    );
    fetch.volume_mounts = Some(fetch_mounts);

    let mut checkout = step(
        containers::CLONE_CHECKOUT,
        git,
        vec![
            "git".into(),
            "-C".into(),
            paths::SOURCE.into(),
            "-c".into(),
            "advice.detachedHead=false".into(),
            "checkout".into(),
            "--quiet".into(),
            "--detach".into(),
            "FETCH_HEAD".into(),
        ],
        git_env(spec),
    );
    checkout.volume_mounts = Some(mounts());
    vec![init, fetch, checkout]
}

/// Railpack's plan step: copy the `railpack` binary out of the frontend
/// image (the same release reads the plan later), then run `prepare` in
/// the glibc builder image.
fn railpack_prepare_containers(spec: &BuildSpec, source: &str) -> Vec<Container> {
    let frontend = match &spec.kind {
        BuildKind::Railpack { frontend_image } | BuildKind::Static { frontend_image, .. } => {
            frontend_image.as_str()
        }
        _ => return Vec::new(),
    };
    let tool = format!("{}/railpack", paths::TOOLS);
    let mut copy = step(
        containers::PREPARE_TOOLS,
        frontend,
        vec!["cp".into(), "/railpack".into(), tool.clone()],
        Vec::new(),
    );
    copy.volume_mounts = Some(vec![mount(volume::TOOLS, paths::TOOLS, false)]);

    let mut args = vec![
        tool,
        "prepare".into(),
        "--plan-out".into(),
        format!("{}/{}", paths::PLAN, paths::PLAN_FILE),
        "--info-out".into(),
        format!("{}/railpack-info.json", paths::PLAN),
    ];
    // One argv element each: `--env=NAME=value`.
    args.extend(
        spec.build_args
            .iter()
            .map(|(name, value)| format!("--env={name}={value}")),
    );
    if let BuildKind::Static {
        publish_dir: Some(dir),
        ..
    } = &spec.kind
    {
        args.push(format!("--env=RAILPACK_STATIC_FILE_ROOT={dir}"));
    }
    args.push(source.to_owned());
    let mut prepare = step(
        containers::PREPARE_PLAN,
        &spec.images.railpack_builder,
        args,
        // mise and railpack cache under HOME: the /tmp volume.
        vec![env("HOME", paths::TMP)],
    );
    prepare.volume_mounts = Some(vec![
        mount(volume::WORKSPACE, paths::WORKSPACE, true),
        mount(volume::TMP, paths::TMP, false),
        mount(volume::TOOLS, paths::TOOLS, true),
        mount(volume::PLAN, paths::PLAN, false),
    ]);
    vec![copy, prepare]
}

/// The `buildctl build` arguments (after `buildctl-daemonless.sh`).
pub fn buildctl_args(spec: &BuildSpec) -> Vec<String> {
    let source = source_dir(&spec.root_dir);
    let mut args: Vec<String> = strings(&["build", "--progress=plain"]);
    let opt = |args: &mut Vec<String>, flag: &str, value: String| {
        args.push(flag.to_owned());
        args.push(value);
    };
    match &spec.kind {
        BuildKind::Dockerfile { path, target } => {
            let file = join(&source, path);
            let (dir, name) = file.rsplit_once('/').unwrap_or((&source, path));
            opt(&mut args, "--frontend", "dockerfile.v0".into());
            opt(&mut args, "--local", format!("context={source}"));
            opt(&mut args, "--local", format!("dockerfile={dir}"));
            opt(&mut args, "--opt", format!("filename={name}"));
            if let Some(target) = target {
                opt(&mut args, "--opt", format!("target={target}"));
            }
        }
        BuildKind::Railpack { frontend_image } | BuildKind::Static { frontend_image, .. } => {
            opt(&mut args, "--frontend", "gateway.v0".into());
            opt(&mut args, "--opt", format!("source={frontend_image}"));
            opt(&mut args, "--local", format!("context={source}"));
            opt(&mut args, "--local", format!("dockerfile={}", paths::PLAN));
            opt(&mut args, "--opt", format!("filename={}", paths::PLAN_FILE));
        }
        BuildKind::Buildpacks { .. } => return Vec::new(),
    }
    for (name, value) in &spec.build_args {
        opt(&mut args, "--opt", format!("build-arg:{name}={value}"));
    }
    for name in &spec.secret_build_args {
        opt(
            &mut args,
            "--secret",
            format!("id={name},src={}/{name}", paths::SECRETS),
        );
    }
    opt(
        &mut args,
        "--output",
        format!("type=image,name={},push=true", spec.destination),
    );
    opt(
        &mut args,
        "--export-cache",
        format!("type=registry,ref={},mode=max", spec.cache_ref),
    );
    opt(
        &mut args,
        "--import-cache",
        format!("type=registry,ref={}", spec.cache_ref),
    );
    // buildctl writes `containerimage.digest` (and more) here; the kubelet
    // hands it back as the container's termination message.
    opt(&mut args, "--metadata-file", paths::TERMINATION_LOG.into());
    args
}

fn buildkit_container(spec: &BuildSpec) -> Container {
    let mut mounts = vec![
        mount(volume::WORKSPACE, paths::WORKSPACE, true),
        mount(volume::REGISTRY, paths::REGISTRY, true),
        mount(volume::BUILDKIT, paths::BUILDKIT_STATE, false),
    ];
    if !spec.secret_build_args.is_empty() {
        mounts.push(mount(volume::SECRETS, paths::SECRETS, true));
    }
    if spec.kind.is_railpack() {
        mounts.push(mount(volume::PLAN, paths::PLAN, true));
    }
    Container {
        name: containers::BUILD.into(),
        image: Some(spec.images.buildkit.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["buildctl-daemonless.sh".into()]),
        args: Some(buildctl_args(spec)),
        env: Some(vec![
            // No nested sandbox per RUN step: the pod is the sandbox.
            env("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox"),
            env("DOCKER_CONFIG", paths::REGISTRY),
        ]),
        volume_mounts: Some(mounts),
        termination_message_path: Some(paths::TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(rootless_buildkit()),
        ..Container::default()
    }
}

/// Rootless BuildKit's needs, on this container only: rootlesskit creates
/// user and mount namespaces, which the runtime's default seccomp and
/// AppArmor profiles forbid (so both are `Unconfined`), and maps the
/// subordinate id range through the setuid `newuidmap`/`newgidmap`, which
/// needs privilege escalation and the default capability set (dropping
/// them fails with "newuidmap: Could not set caps"). It still runs as uid
/// 1000, never privileged; the builds namespace confines this exception.
fn rootless_buildkit() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(BUILDKIT_USER_ID),
        run_as_group: Some(BUILDKIT_USER_ID),
        run_as_non_root: Some(true),
        privileged: Some(false),
        allow_privilege_escalation: Some(true),
        // rootlesskit writes under /run, /tmp and $HOME outside the volumes.
        read_only_root_filesystem: Some(false),
        seccomp_profile: Some(SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        app_armor_profile: Some(AppArmorProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The CNB lifecycle's `creator` (detect, analyze, restore, build, export
/// in one), unprivileged, as the builder's CNB user. Build args are files
/// in `/platform/env` (how buildpacks receive build-time env); the report
/// with the pushed digest is written as the termination message.
fn buildpacks_container(spec: &BuildSpec, builder_image: &str, source: &str) -> Container {
    let mut mounts = vec![
        mount(volume::WORKSPACE, paths::WORKSPACE, false),
        mount(volume::LAYERS, paths::LAYERS, false),
        mount(volume::REGISTRY, paths::REGISTRY, true),
    ];
    if has_platform_env(spec) {
        mounts.push(mount(volume::PLATFORM, paths::PLATFORM, true));
    }
    let (user, group) = spec.kind.user();
    let mut security = restricted(false);
    security.run_as_user = Some(user);
    security.run_as_group = Some(group);
    Container {
        name: containers::BUILD.into(),
        image: Some(builder_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/cnb/lifecycle/creator".into(),
            format!("-app={source}"),
            format!("-layers={}", paths::LAYERS),
            format!("-platform={}", paths::PLATFORM),
            format!("-cache-image={}", spec.cache_ref),
            format!("-report={}", paths::TERMINATION_LOG),
            spec.destination.clone(),
        ]),
        // The lifecycle finds registry credentials through DOCKER_CONFIG.
        env: Some(vec![env("DOCKER_CONFIG", paths::REGISTRY)]),
        volume_mounts: Some(mounts),
        termination_message_path: Some(paths::TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security),
        ..Container::default()
    }
}

fn has_platform_env(spec: &BuildSpec) -> bool {
    !spec.build_args.is_empty() || !spec.secret_build_args.is_empty()
}

fn volumes(spec: &BuildSpec) -> Vec<Volume> {
    let size = spec.scratch_size_limit.clone().map(Quantity);
    let empty = |name: &str, size_limit: Option<Quantity>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit,
        }),
        ..Volume::default()
    };
    let secret_name = job_name(spec.build_id);
    let secret = |name: &str, items: Vec<KeyToPath>| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.clone()),
            items: Some(items),
            // Read-only for the owner and the pod's fsGroup.
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let item = |key: &str, path: &str| KeyToPath {
        key: key.into(),
        path: path.into(),
        mode: None,
    };
    let mut out = vec![
        empty(volume::WORKSPACE, size.clone()),
        empty(volume::TMP, None),
    ];
    let git_items = match spec.git_auth {
        GitAuth::None => Vec::new(),
        GitAuth::Token => vec![item(
            secret_keys::GIT_CREDENTIALS,
            secret_keys::GIT_CREDENTIALS,
        )],
        GitAuth::SshKey => vec![
            item(secret_keys::SSH_PRIVATE_KEY, secret_keys::SSH_PRIVATE_KEY),
            item(secret_keys::KNOWN_HOSTS, secret_keys::KNOWN_HOSTS),
            item(secret_keys::PASSWD, secret_keys::PASSWD),
        ],
    };
    if !git_items.is_empty() {
        out.push(secret(volume::GIT, git_items));
    }
    out.push(secret(
        volume::REGISTRY,
        vec![item(
            secret_keys::REGISTRY_CONFIG,
            secret_keys::REGISTRY_CONFIG,
        )],
    ));
    match &spec.kind {
        BuildKind::Buildpacks { .. } => {
            out.push(empty(volume::LAYERS, size));
            if has_platform_env(spec) {
                let names = spec
                    .build_args
                    .iter()
                    .map(|(n, _)| n)
                    .chain(&spec.secret_build_args);
                let items = names
                    .map(|n| item(&build_arg_key(n), &format!("env/{n}")))
                    .collect();
                out.push(secret(volume::PLATFORM, items));
            }
        }
        kind => {
            out.push(empty(volume::BUILDKIT, size));
            if !spec.secret_build_args.is_empty() {
                let items = spec
                    .secret_build_args
                    .iter()
                    .map(|n| item(&build_arg_key(n), n))
                    .collect();
                out.push(secret(volume::SECRETS, items));
            }
            if kind.is_railpack() {
                out.push(empty(volume::TOOLS, None));
                out.push(empty(volume::PLAN, None));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- validation

fn validate_spec(spec: &BuildSpec) -> Result<()> {
    check_label("projectName", &spec.project_name)?;
    check_label("serviceName", &spec.service_name)?;
    check_label("namespace", &spec.namespace)?;
    check_repository_url(
        "repositoryUrl",
        &spec.repository_url,
        spec.git_auth,
        spec.allow_http,
    )?;
    check_commit("commitSha", &spec.commit_sha)?;
    check_relative_path("rootDir", &spec.root_dir, true)?;
    match &spec.kind {
        BuildKind::Dockerfile { path, target } => {
            check_relative_path("kind.path", path, false)?;
            if let Some(target) = target {
                check_target("kind.target", target)?;
            }
        }
        BuildKind::Railpack { frontend_image } => {
            check_image_ref("kind.frontendImage", frontend_image)?;
        }
        BuildKind::Static {
            frontend_image,
            publish_dir,
        } => {
            check_image_ref("kind.frontendImage", frontend_image)?;
            if let Some(dir) = publish_dir {
                check_relative_path("kind.publishDir", dir, false)?;
            }
        }
        BuildKind::Buildpacks {
            builder_image,
            user_id,
            group_id,
        } => {
            check_image_ref("kind.builderImage", builder_image)?;
            for (field, id) in [("kind.userId", user_id), ("kind.groupId", group_id)] {
                if !(1..=i64::from(u32::MAX)).contains(id) {
                    return Err(Error::invalid(
                        field,
                        "must be a non-root uid/gid (1 or more)",
                    ));
                }
            }
        }
    }
    check_image_ref("destination", &spec.destination)?;
    if !has_tag(&spec.destination) {
        return Err(Error::invalid(
            "destination",
            "must end with a tag (`:<commit sha>`)",
        ));
    }
    check_image_ref("cacheRef", &spec.cache_ref)?;
    check_image_ref("images.git", &spec.images.git)?;
    check_image_ref("images.buildkit", &spec.images.buildkit)?;
    check_image_ref("images.railpackBuilder", &spec.images.railpack_builder)?;
    check_build_args(spec)?;
    check_annotations(&spec.annotations)?;
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&spec.timeout_seconds) {
        return Err(Error::invalid(
            "timeoutSeconds",
            format!("must be 1 to {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    if spec.ttl_seconds_after_finished < 0 {
        return Err(Error::invalid(
            "ttlSecondsAfterFinished",
            "must not be negative",
        ));
    }
    check_resources(&spec.resources)?;
    if let Some(size) = &spec.scratch_size_limit
        && !validate::is_memory(size)
    {
        return Err(Error::invalid(
            "scratchSizeLimit",
            "must be a quantity like 20Gi",
        ));
    }
    Ok(())
}

fn check_build_args(spec: &BuildSpec) -> Result<()> {
    let total = spec.build_args.len() + spec.secret_build_args.len();
    if total > MAX_BUILD_ARGS {
        return Err(Error::invalid(
            "buildArgs",
            format!("{total} build args (plain and secret); at most {MAX_BUILD_ARGS}"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, (name, value)) in spec.build_args.iter().enumerate() {
        check_build_arg_name(&format!("buildArgs[{i}].name"), name, &mut seen)?;
        check_build_arg_value(&format!("buildArgs[{i}].value"), value)?;
    }
    for (i, name) in spec.secret_build_args.iter().enumerate() {
        check_build_arg_name(&format!("secretBuildArgs[{i}]"), name, &mut seen)?;
    }
    Ok(())
}

/// Ferry's own annotations only (`ferry.dev/<name>`), small enough to
/// leave the API server's 256 KiB metadata limit far away.
fn check_annotations(annotations: &BTreeMap<String, String>) -> Result<()> {
    let mut total = 0;
    for (key, value) in annotations {
        let field = format!("annotations[{key:?}]");
        let name = key.strip_prefix(ANNOTATION_PREFIX).unwrap_or_default();
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(Error::invalid(
                field,
                format!("must be {ANNOTATION_PREFIX}<name> (letters, digits, '-', '_', '.')"),
            ));
        }
        if value.contains('\0') {
            return Err(Error::invalid(field, "must not contain a NUL character"));
        }
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATION_BYTES {
        return Err(Error::invalid(
            "annotations",
            format!("are {total} bytes; at most {MAX_ANNOTATION_BYTES}"),
        ));
    }
    Ok(())
}

fn check_build_arg_name<'a>(
    field: &str,
    name: &'a str,
    seen: &mut BTreeSet<&'a str>,
) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_BUILD_ARG_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Error::invalid(
            field,
            format!(
                "{name:?} is not a build arg name (a letter or '_', then letters, digits or '_'; at most {MAX_BUILD_ARG_NAME})"
            ),
        ));
    }
    if !seen.insert(name) {
        return Err(Error::invalid(
            field,
            format!("{name:?} is given twice (plain and secret build args share one set of names)"),
        ));
    }
    Ok(())
}

fn check_build_arg_value(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain a NUL character"));
    }
    if value.len() > MAX_BUILD_ARG_VALUE {
        return Err(Error::invalid(
            field,
            format!("is {} bytes; at most {MAX_BUILD_ARG_VALUE}", value.len()),
        ));
    }
    Ok(())
}

fn check_resources(r: &Resources) -> Result<()> {
    for (field, value) in [
        ("resources.cpuRequest", &r.cpu_request),
        ("resources.cpuLimit", &r.cpu_limit),
    ] {
        if let Some(v) = value
            && !validate::is_cpu(v)
        {
            return Err(Error::invalid(
                field,
                "must be a CPU quantity like 500m or 2",
            ));
        }
    }
    for (field, value) in [
        ("resources.memoryRequest", &r.memory_request),
        ("resources.memoryLimit", &r.memory_limit),
    ] {
        if let Some(v) = value
            && !validate::is_memory(v)
        {
            return Err(Error::invalid(field, "must be a quantity like 4Gi"));
        }
    }
    Ok(())
}

fn validate_credentials(spec: &BuildSpec, credentials: &BuildCredentials) -> Result<()> {
    if credentials.git.auth() != spec.git_auth {
        return Err(Error::invalid(
            "credentials.git",
            format!(
                "is {:?} but the build spec says {:?}",
                credentials.git.auth(),
                spec.git_auth
            ),
        ));
    }
    match &credentials.git {
        GitCredential::None => {}
        GitCredential::Token { username, token } => {
            if username.is_empty() || token.expose().is_empty() {
                return Err(Error::invalid(
                    "credentials.git",
                    "a token credential needs a username and a token",
                ));
            }
            if token
                .expose()
                .chars()
                .chain(username.chars())
                .any(char::is_control)
            {
                return Err(Error::invalid(
                    "credentials.git",
                    "username and token must not contain control characters",
                ));
            }
        }
        GitCredential::SshKey {
            private_key,
            known_hosts,
        } => {
            if !private_key.expose().contains("PRIVATE KEY-----") {
                return Err(Error::invalid(
                    "credentials.git.privateKey",
                    "is not a PEM/OpenSSH private key",
                ));
            }
            if known_hosts.trim().is_empty() {
                return Err(Error::invalid(
                    "credentials.git.knownHosts",
                    "must list the repository host's keys (host keys are checked strictly)",
                ));
            }
        }
    }
    if let Some(registry) = &credentials.registry
        && registry.server.trim().is_empty()
    {
        return Err(Error::invalid(
            "credentials.registry.server",
            "must not be empty",
        ));
    }
    let wanted: BTreeSet<&str> = spec.secret_build_args.iter().map(String::as_str).collect();
    let mut given = BTreeSet::new();
    for (i, (name, value)) in credentials.secret_build_args.iter().enumerate() {
        if !wanted.contains(name.as_str()) {
            return Err(Error::invalid(
                format!("credentials.secretBuildArgs[{i}].name"),
                format!("{name:?} is not one of the spec's secret build args"),
            ));
        }
        given.insert(name.as_str());
        check_build_arg_value(
            &format!("credentials.secretBuildArgs[{i}].value"),
            value.expose(),
        )?;
    }
    if let Some(missing) = wanted.difference(&given).next() {
        return Err(Error::invalid(
            "credentials.secretBuildArgs",
            format!("no value for the secret build arg {missing:?}"),
        ));
    }
    Ok(())
}

fn check_commit(field: &str, sha: &str) -> Result<()> {
    let hex = sha
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex && (sha.len() == 40 || sha.len() == 64) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{sha:?} is not a full commit id (40 or 64 lowercase hex digits)"),
        ))
    }
}

/// A path inside the repository: relative, no `..`, no component starting
/// with `-`, nothing buildctl or a shell could read as syntax.
fn check_relative_path(field: &str, path: &str, allow_root: bool) -> Result<()> {
    let fail = |reason: &str| Err(Error::invalid(field, reason));
    if path.is_empty() || path == "." {
        return if allow_root {
            Ok(())
        } else {
            fail("must not be empty")
        };
    }
    if path.len() > 1024 {
        return fail("must be at most 1024 characters");
    }
    if path.starts_with('/') {
        return fail("must be relative to the repository");
    }
    if path
        .chars()
        .any(|c| c.is_control() || matches!(c, '\\' | ',' | '"' | '\'' | '='))
    {
        return fail("must not contain control characters, '\\', ',', quotes or '='");
    }
    for part in path.split('/') {
        if part == ".." {
            return fail("must not contain '..'");
        }
        if part.starts_with('-') {
            return fail("no path component may start with '-'");
        }
        if part.len() > 255 {
            return fail("a path component is longer than 255 characters");
        }
    }
    if !allow_root && path.ends_with('/') {
        return fail("must name a file or directory, not end with '/'");
    }
    Ok(())
}

fn check_target(field: &str, target: &str) -> Result<()> {
    let valid = !target.is_empty()
        && target.len() <= 128
        && target.starts_with(|c: char| c.is_ascii_alphanumeric())
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{target:?} is not a build stage name (letters, digits, '_', '-', '.')"),
        ))
    }
}

/// A repository URL git may fetch from with the given credential.
fn check_repository_url(field: &str, url: &str, auth: GitAuth, allow_http: bool) -> Result<()> {
    let fail = |reason: String| Err(Error::invalid(field, reason));
    if url.is_empty() || url.len() > 2048 {
        return fail("must be 1 to 2048 characters".into());
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail("must not start with '-' or contain spaces or control characters".into());
    }
    let http = if allow_http {
        url.strip_prefix("http://")
    } else {
        None
    };
    let scheme = if let Some(rest) = url.strip_prefix("https://").or(http) {
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return fail(
                "must not carry credentials: they would be visible in the Job; use a token credential"
                    .into(),
            );
        }
        if authority.is_empty() || !rest.contains('/') {
            return fail("must be https://host/path".into());
        }
        GitAuth::Token
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        if rest.split('/').next().unwrap_or_default().is_empty() {
            return fail("must be ssh://[user@]host/path".into());
        }
        GitAuth::SshKey
    } else if is_scp_like(url) {
        GitAuth::SshKey
    } else {
        return fail(format!(
            "{url:?} is not an https:// or ssh repository URL (http, git:// and local paths are refused)"
        ));
    };
    match (auth, scheme) {
        (GitAuth::None, _)
        | (GitAuth::Token, GitAuth::Token)
        | (GitAuth::SshKey, GitAuth::SshKey) => Ok(()),
        (GitAuth::Token, _) => fail("a token credential needs an https:// URL".into()),
        _ => fail("an SSH key credential needs an ssh URL".into()),
    }
}

/// `user@host:path` (git's scp-like ssh syntax).
fn is_scp_like(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    let Some((host, path)) = url.split_once(':') else {
        return false;
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    !host.is_empty() && !host.contains('/') && !path.is_empty()
}

/// The scheme and `host[:port]` of an https (or http) URL.
fn http_origin(url: &str) -> Option<(&'static str, &str)> {
    let (scheme, rest) = match url.strip_prefix("https://") {
        Some(rest) => ("https", rest),
        None => ("http", url.strip_prefix("http://")?),
    };
    Some((scheme, rest.split('/').next()?))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for the
/// userinfo of a git-credential-store line).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn has_tag(reference: &str) -> bool {
    let name = reference.split('@').next().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or_default();
    !reference.contains('@') && last.contains(':')
}

/// An image reference: `[host[:port]/]path[:tag][@sha256:<hex>]`. Refuses
/// anything that would change the meaning of buildctl's comma-separated
/// `--output`/`--export-cache` values (commas, quotes, `=`, spaces).
pub(crate) fn check_image_ref(field: &str, reference: &str) -> Result<()> {
    let fail = |reason: &str| {
        Err(Error::invalid(
            field,
            format!("{reference:?} is not an image reference: {reason}"),
        ))
    };
    if reference.is_empty() || reference.len() > 512 {
        return fail("must be 1 to 512 characters");
    }
    if reference.starts_with('-') {
        return fail("must not start with '-'");
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest
        && !is_digest(digest)
    {
        return fail("the digest must be sha256:<64 hex digits>");
    }
    let (repository, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (name, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return fail("the tag must be letters, digits, '_', '.', '-' (at most 128)");
        }
    }
    let parts: Vec<&str> = repository.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let is_host = i == 0
            && parts.len() > 1
            && (part.contains('.') || part.contains(':') || *part == "localhost");
        let valid = if is_host {
            let (host, port) = part.split_once(':').unwrap_or((part, "1"));
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                && !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
        } else {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        };
        if !valid {
            return fail("path components are lowercase letters, digits, '.', '_', '-'");
        }
    }
    Ok(())
}

/// `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        for ok in [
            "registry.example.com:5000/shop/web:0123abc",
            "ghcr.io/railwayapp/railpack-frontend:v0.40.0",
            "moby/buildkit:v0.23.2-rootless",
            "localhost/x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "alpine",
        ] {
            assert!(check_image_ref("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "reg.io/a/b:t,push=false",
            "reg.io/A/b:t",
            "reg.io/a b",
            "reg.io/a/b:t@sha256:12",
            "reg.io/a//b",
            "reg.io/a/b:\"t\"",
        ] {
            assert!(check_image_ref("f", bad).is_err(), "{bad}");
        }
        assert!(has_tag("reg.io:5000/a/b:t") && !has_tag("reg.io:5000/a/b"));
    }

    #[test]
    fn repository_urls() {
        let ok = |url, auth| check_repository_url("f", url, auth, false).is_ok();
        assert!(ok("https://github.com/acme/web.git", GitAuth::Token));
        assert!(ok("https://github.com/acme/web.git", GitAuth::None));
        assert!(ok("ssh://git@github.com/acme/web.git", GitAuth::SshKey));
        assert!(ok("git@github.com:acme/web.git", GitAuth::SshKey));
        assert!(!ok("git@github.com:acme/web.git", GitAuth::Token));
        assert!(!ok("https://user:tok@github.com/acme/web", GitAuth::None));
        assert!(!ok("http://github.com/acme/web", GitAuth::None));
        assert!(!ok("ext::sh -c touch% /tmp/x", GitAuth::None));
        assert!(!ok("--upload-pack=touch", GitAuth::None));
        assert!(!ok("/srv/repo", GitAuth::None));
        assert!(!ok("file:///srv/repo", GitAuth::None));
        // Plain http only when the spec allows it, and never file:// or git://.
        let http = |url, auth| check_repository_url("f", url, auth, true).is_ok();
        assert!(http("http://gitea.ferry:3000/acme/web.git", GitAuth::Token));
        assert!(http("http://gitea.ferry:3000/acme/web.git", GitAuth::None));
        assert!(!http("http://user:tok@gitea/acme/web", GitAuth::None));
        assert!(!http("http://gitea.ferry/acme/web", GitAuth::SshKey));
        assert!(!http("git://gitea.ferry/acme/web", GitAuth::None));
        assert!(!http("file:///srv/repo", GitAuth::None));
    }

    #[test]
    fn paths_and_names() {
        assert!(check_relative_path("f", "", true).is_ok());
        assert!(check_relative_path("f", "apps/web", true).is_ok());
        for bad in ["/etc", "a/../..", "-rf", "a/-x", "a,b", "a\nb"] {
            assert!(check_relative_path("f", bad, true).is_err(), "{bad}");
        }
        assert_eq!(
            job_name(Uuid::from_u128(0xabcdef0123456789_u128)),
            "ferry-build-ef0123456789"
        );
        // v7 ids of one millisecond share their first 48 bits, not their names.
        let same_ms =
            |random: u128| Uuid::from_u128((0x0190_0000_0000_u128 << 80) | 0x7000 << 64 | random);
        assert_ne!(job_name(same_ms(1)), job_name(same_ms(2)));
        assert_eq!(join("/w/src", "./apps/web/"), "/w/src/apps/web");
        assert_eq!(join("/w/src", "."), "/w/src");
        assert_eq!(percent_encode("a b@c:d"), "a%20b%40c%3Ad");
    }
}
