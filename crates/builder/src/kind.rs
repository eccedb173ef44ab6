//! From what was asked for (or detected) to the [`BuildKind`] the Job runs,
//! and the words that tell the user why.

use std::path::Path;

use ferry_git::{BuildType, Detection};
use ferry_k8s::build::BuildKind;

/// The build type's API name: `dockerfile`, `railpack`, `buildpacks`,
/// `static`.
pub fn type_name(kind: &BuildKind) -> &'static str {
    match kind {
        BuildKind::Dockerfile { .. } => "dockerfile",
        BuildKind::Railpack { .. } => "railpack",
        BuildKind::Buildpacks { .. } => "buildpacks",
        BuildKind::Static { .. } => "static",
    }
}

/// The kind `auto` builds. ferry-git names a Dockerfile relative to the
/// repository root, the Job relative to the root directory; `target` is
/// the request's stage for a detected Dockerfile.
pub fn from_detection(
    detection: &Detection,
    root_dir: &str,
    target: Option<String>,
    buildpacks_builder: &str,
) -> BuildKind {
    match &detection.build_type {
        BuildType::Dockerfile { path } => {
            let relative = Path::new(path)
                .strip_prefix(root_dir)
                .ok()
                .and_then(Path::to_str)
                .unwrap_or(path);
            BuildKind::Dockerfile {
                path: relative.to_owned(),
                target,
            }
        }
        BuildType::Railpack => BuildKind::railpack(),
        BuildType::Buildpacks => BuildKind::buildpacks(buildpacks_builder),
        BuildType::Static => BuildKind::static_site(None),
    }
}

/// The detection lines of an explicitly chosen build type.
pub fn explicit_lines(kind: &BuildKind) -> Vec<String> {
    let line = match kind {
        BuildKind::Dockerfile { path, target } => match target {
            Some(target) => {
                format!("build type dockerfile chosen for the service: {path}, stage {target}")
            }
            None => format!("build type dockerfile chosen for the service: {path}"),
        },
        BuildKind::Buildpacks { builder_image, .. } => {
            format!("build type buildpacks chosen for the service: builder {builder_image}")
        }
        other => format!("build type {} chosen for the service", type_name(other)),
    };
    vec![line]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn detected(build_type: BuildType) -> Detection {
        Detection {
            build_type,
            language: None,
            framework: None,
            package_manager: None,
            reasons: vec!["found".into()],
        }
    }

    #[test]
    fn a_detected_dockerfile_is_relative_to_the_root_dir() {
        let d = detected(BuildType::Dockerfile {
            path: "apps/web/Containerfile".into(),
        });
        assert_eq!(
            from_detection(&d, "apps/web", Some("prod".into()), "b"),
            BuildKind::Dockerfile {
                path: "Containerfile".into(),
                target: Some("prod".into())
            }
        );
        let d = detected(BuildType::Dockerfile {
            path: "Dockerfile".into(),
        });
        assert_eq!(from_detection(&d, "", None, "b"), BuildKind::dockerfile());
        assert_eq!(
            type_name(&from_detection(
                &detected(BuildType::Railpack),
                "",
                None,
                "b"
            )),
            "railpack"
        );
        assert_eq!(
            from_detection(&detected(BuildType::Static), "", None, "b"),
            BuildKind::static_site(None)
        );
    }

    #[test]
    fn explicit_types_say_so() {
        assert_eq!(
            explicit_lines(&BuildKind::Dockerfile {
                path: "docker/Dockerfile".into(),
                target: Some("runtime".into())
            }),
            ["build type dockerfile chosen for the service: docker/Dockerfile, stage runtime"]
        );
        assert_eq!(
            explicit_lines(&BuildKind::railpack()),
            ["build type railpack chosen for the service"]
        );
    }
}
