//! Writes rendered build objects as YAML into a directory, for schema
//! checks (`make chart-check` validates every file with
//! kubernetes-validate):
//!
//! ```text
//! cargo run -q -p ferry-k8s --example render_build -- DIR
//! ```
//!
//! One file per build kind (its Job and per-build Secret, with sample
//! credentials) and one for the builds namespace.

use std::error::Error;
use std::path::PathBuf;

use ferry_k8s::build::{
    BuildKind, EgressPolicy, builds_namespace, render_build, render_build_secret,
};
use serde_json::Value;

#[path = "../tests/common/build.rs"]
mod sample;

fn yaml(objects: &[Value]) -> Result<String, Box<dyn Error>> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(object)?);
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: render_build DIR")?
        .into();
    std::fs::create_dir_all(&dir)?;

    let mut railpack = sample::build_spec(BuildKind::railpack());
    railpack.git_auth = ferry_k8s::GitAuth::None;
    let mut railpack_credentials = sample::credentials();
    railpack_credentials.git = ferry_k8s::GitCredential::None;
    let builds = [
        (
            "dockerfile",
            sample::dockerfile_spec(),
            sample::credentials(),
        ),
        ("railpack", railpack, railpack_credentials),
        (
            "buildpacks",
            sample::buildpacks_spec(),
            sample::ssh_credentials(),
        ),
        (
            "static",
            sample::build_spec(BuildKind::static_site(Some("dist".into()))),
            sample::credentials(),
        ),
    ];
    for (name, spec, credentials) in builds {
        let objects = [
            serde_json::to_value(render_build(&spec)?)?,
            serde_json::to_value(render_build_secret(&spec, &credentials)?)?,
        ];
        let path = dir.join(format!("build-{name}.yaml"));
        std::fs::write(&path, yaml(&objects)?)?;
        println!("{}", path.display());
    }

    let egress = EgressPolicy {
        pod_cidrs: vec!["10.244.0.0/16".into(), "fd00:10:244::/56".into()],
        service_cidrs: vec!["10.96.0.0/12".into()],
        node_cidrs: vec!["192.168.10.0/24".into()],
        api_server: vec!["192.168.10.2".into()],
    };
    let namespace = builds_namespace("ferry-builds", &egress)?;
    let path = dir.join("builds-namespace.yaml");
    std::fs::write(&path, yaml(&namespace.values())?)?;
    println!("{}", path.display());
    Ok(())
}
