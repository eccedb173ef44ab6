//! Build specs shared by the build tests and the `render_build` example.
#![allow(dead_code)]

use ferry_k8s::build::{
    BuildCredentials, BuildImages, BuildKind, BuildSpec, GitAuth, GitCredential, cache_ref,
    image_ref,
};
use ferry_k8s::spec::{RegistryAuth, Resources, SecretValue};
use uuid::Uuid;

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
pub const GIT_TOKEN: &str = "ghp_gittoken4567890";
pub const PUSH_PASSWORD: &str = "registry-push-password-123";
pub const SECRET_ARG_VALUE: &str = "npm-secret-value-789";
pub const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAfake\n-----END OPENSSH PRIVATE KEY-----\n";
pub const REGISTRY: &str = "registry.ferry.example:5000";

/// Every secret value the credentials carry.
pub const SECRETS: [&str; 4] = [
    GIT_TOKEN,
    PUSH_PASSWORD,
    SECRET_ARG_VALUE,
    "b3BlbnNzaC1rZXktdjEAAAAfake",
];

pub fn build_id() -> Uuid {
    Uuid::from_u128(0x5f0e_3c2a_9b71_4d8e_a6f4_1234_5678_9abc)
}

pub fn build_spec(kind: BuildKind) -> BuildSpec {
    BuildSpec {
        build_id: build_id(),
        organization_id: Uuid::from_u128(1),
        project_id: Uuid::from_u128(2),
        project_name: "shop".into(),
        service_id: Uuid::from_u128(3),
        service_name: "web".into(),
        namespace: "ferry-builds".into(),
        repository_url: "https://git.example.com/acme/shop.git".into(),
        allow_http: false,
        commit_sha: COMMIT.into(),
        root_dir: "apps/web".into(),
        kind,
        destination: image_ref(REGISTRY, "shop", "web", COMMIT),
        cache_ref: cache_ref(REGISTRY, "shop", "web"),
        build_args: vec![
            ("NODE_ENV".into(), "production".into()),
            ("GREETING".into(), "hello, world; $(not a shell)".into()),
        ],
        secret_build_args: vec!["NPM_TOKEN".into()],
        git_auth: GitAuth::Token,
        timeout_seconds: 1800,
        ttl_seconds_after_finished: 3600,
        resources: Resources {
            cpu_request: Some("500m".into()),
            cpu_limit: Some("2".into()),
            memory_request: Some("1Gi".into()),
            memory_limit: Some("4Gi".into()),
        },
        scratch_size_limit: Some("20Gi".into()),
        images: BuildImages::default(),
        annotations: Default::default(),
    }
}

pub fn dockerfile_spec() -> BuildSpec {
    build_spec(BuildKind::Dockerfile {
        path: "docker/Dockerfile.prod".into(),
        target: Some("runtime".into()),
    })
}

pub fn credentials() -> BuildCredentials {
    BuildCredentials {
        git: GitCredential::Token {
            username: "x-access-token".into(),
            token: SecretValue(GIT_TOKEN.into()),
        },
        registry: Some(RegistryAuth {
            server: REGISTRY.into(),
            username: "ferry-builder".into(),
            password: SecretValue(PUSH_PASSWORD.into()),
        }),
        secret_build_args: vec![("NPM_TOKEN".into(), SecretValue(SECRET_ARG_VALUE.into()))],
    }
}

/// A Buildpacks build cloning over SSH.
pub fn buildpacks_spec() -> BuildSpec {
    let mut spec = build_spec(BuildKind::buildpacks(
        "paketobuildpacks/builder-jammy-base:0.4.552",
    ));
    spec.repository_url = "git@git.example.com:acme/shop.git".into();
    spec.git_auth = GitAuth::SshKey;
    spec
}

pub fn ssh_credentials() -> BuildCredentials {
    BuildCredentials {
        git: GitCredential::SshKey {
            private_key: SecretValue(SSH_KEY.into()),
            known_hosts: "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfakehostkey".into(),
        },
        ..credentials()
    }
}
