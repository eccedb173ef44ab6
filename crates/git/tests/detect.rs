//! Build-type detection on small real directory trees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ferry_git::Error;
use ferry_git::detect::{BuildType, Detection, detect};

/// A temp dir holding `files` (path, content).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn detected(files: &[(&str, &str)], root_dir: &str) -> Detection {
    let dir = tree(files);
    detect(dir.path(), root_dir).unwrap()
}

/// (language, framework, package manager) of a Railpack detection.
fn summary(d: &Detection) -> (Option<&str>, Option<&str>, Option<&str>) {
    assert_eq!(d.build_type, BuildType::Railpack, "{d:?}");
    (
        d.language.as_deref(),
        d.framework.as_deref(),
        d.package_manager.as_deref(),
    )
}

/// Files, and the expected (language, framework, package manager).
type Case = (
    &'static [(&'static str, &'static str)],
    (&'static str, Option<&'static str>, Option<&'static str>),
);

fn check(cases: &[Case]) {
    for (files, (language, framework, manager)) in cases {
        let d = detected(files, "");
        assert_eq!(
            summary(&d),
            (Some(*language), *framework, *manager),
            "{files:?}"
        );
    }
}

fn refused(dir: &Path, root_dir: &str) -> String {
    detect(dir, root_dir).unwrap_err().to_string()
}

#[test]
fn dockerfile_in_the_root_dir_wins() {
    let d = detected(
        &[
            ("apps/web/Dockerfile", "FROM scratch\n"),
            ("apps/web/package.json", "{}"),
            ("Dockerfile", "FROM scratch\n"),
        ],
        "apps/web",
    );
    assert_eq!(
        d.build_type,
        BuildType::Dockerfile {
            path: "apps/web/Dockerfile".into()
        }
    );
    assert_eq!(d.reasons, ["Dockerfile found at apps/web/Dockerfile"]);

    let d = detected(&[("Containerfile", "FROM scratch\n")], "");
    assert_eq!(
        d.build_type,
        BuildType::Dockerfile {
            path: "Containerfile".into()
        }
    );
}

#[test]
fn node_with_pnpm_and_next() {
    let d = detected(
        &[
            (
                "package.json",
                r#"{"dependencies":{"next":"15.0.0","react":"19.0.0"},"devDependencies":{"vite":"5"}}"#,
            ),
            ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
        ],
        ".",
    );
    assert_eq!(
        summary(&d),
        (Some("Node.js"), Some("Next.js"), Some("pnpm"))
    );
    assert_eq!(
        d.reasons,
        ["package.json with next dependency: Node.js (Next.js), pnpm (pnpm-lock.yaml)"]
    );
}

#[test]
fn node_frameworks_and_package_managers() {
    let cases: [Case; 7] = [
        (
            &[
                ("package.json", r#"{"dependencies":{"nuxt":"3"}}"#),
                ("yarn.lock", ""),
            ],
            ("Node.js", Some("Nuxt"), Some("yarn")),
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"dependencies":{"@remix-run/serve":"2","vite":"5"}}"#,
                ),
                ("bun.lockb", ""),
            ],
            ("Node.js", Some("Remix"), Some("bun")),
        ),
        (
            &[(
                "package.json",
                r#"{"dependencies":{"astro":"4","vite":"5"}}"#,
            )],
            ("Node.js", Some("Astro"), Some("npm")),
        ),
        (
            &[
                (
                    "package.json",
                    r#"{"dependencies":{"@nestjs/core":"10","express":"4"}}"#,
                ),
                ("package-lock.json", "{}"),
            ],
            ("Node.js", Some("NestJS"), Some("npm")),
        ),
        (
            &[("package.json", r#"{"dependencies":{"express":"4"}}"#)],
            ("Node.js", Some("Express"), Some("npm")),
        ),
        (
            &[(
                "package.json",
                r#"{"devDependencies":{"vite":"5"},"packageManager":"pnpm@9.1.0"}"#,
            )],
            ("Node.js", Some("Vite"), Some("pnpm")),
        ),
        (
            &[("package.json", r#"{"dependencies":{"left-pad":"1"}}"#)],
            ("Node.js", None, Some("npm")),
        ),
    ];
    check(&cases);
    let d = detected(&[("package.json", "{}")], "");
    assert_eq!(
        d.reasons,
        ["package.json found: Node.js, npm (no lockfile, npm assumed)"]
    );
}

#[test]
fn python_with_fastapi_and_friends() {
    let d = detected(
        &[(
            "requirements.txt",
            "# web\nFastAPI[all]==0.110 # api\nuvicorn\n-r dev.txt\n",
        )],
        "",
    );
    assert_eq!(summary(&d), (Some("Python"), Some("FastAPI"), Some("pip")));
    assert_eq!(
        d.reasons,
        ["requirements.txt with fastapi dependency: Python (FastAPI), pip"]
    );

    let d = detected(
        &[
            (
                "pyproject.toml",
                "[project]\nname = \"x\"\ndependencies = [\"Django>=5\"]\n",
            ),
            ("uv.lock", ""),
        ],
        "",
    );
    assert_eq!(summary(&d), (Some("Python"), Some("Django"), Some("uv")));

    let d = detected(&[("Pipfile", "[packages]\nflask = \"*\"\n")], "");
    assert_eq!(summary(&d), (Some("Python"), Some("Flask"), Some("pipenv")));

    let d = detected(&[("pyproject.toml", "not = [toml")], "");
    assert_eq!(summary(&d), (Some("Python"), None, Some("pip")));
    assert!(
        d.reasons[1].starts_with("pyproject.toml could not be parsed"),
        "{d:?}"
    );
}

#[test]
fn other_languages() {
    let cases: [Case; 9] = [
        (&[("go.mod", "module x\n")], ("Go", None, None)),
        (
            &[("Cargo.toml", "[package]\nname = \"x\"\n")],
            ("Rust", None, Some("cargo")),
        ),
        (
            &[(
                "Gemfile",
                "source 'https://rubygems.org'\ngem 'rails', '~> 7.1'\n",
            )],
            ("Ruby", Some("Rails"), Some("bundler")),
        ),
        (
            &[(
                "composer.json",
                r#"{"require":{"laravel/framework":"^11"}}"#,
            )],
            ("PHP", Some("Laravel"), Some("composer")),
        ),
        (
            &[(
                "pom.xml",
                "<artifactId>spring-boot-starter-web</artifactId>",
            )],
            ("Java", Some("Spring Boot"), Some("maven")),
        ),
        (
            &[("build.gradle.kts", "id(\"org.springframework.boot\")")],
            ("Java", Some("Spring Boot"), Some("gradle")),
        ),
        (
            &[("mix.exs", "{:phoenix, \"~> 1.7\"}")],
            ("Elixir", Some("Phoenix"), Some("mix")),
        ),
        (&[("deno.json", "{}")], ("Deno", None, None)),
        (
            &[("Api.csproj", "<Project Sdk=\"Microsoft.NET.Sdk.Web\">")],
            (".NET", Some("ASP.NET Core"), None),
        ),
    ];
    check(&cases);
}

#[test]
fn railpack_order_decides_between_languages() {
    let d = detected(
        &[
            ("requirements.txt", "django\n"),
            ("package.json", r#"{"devDependencies":{"vite":"5"}}"#),
        ],
        "",
    );
    assert_eq!(summary(&d), (Some("Python"), Some("Django"), Some("pip")));
    assert_eq!(
        d.reasons[1],
        "also found package.json (Node.js); Python is used, as Railpack checks it first"
    );
}

#[test]
fn static_site_and_nothing() {
    let d = detected(&[("index.html", "<h1>hi</h1>")], "");
    assert_eq!(d.build_type, BuildType::Static);
    assert_eq!(
        d.reasons,
        ["index.html found and no language manifest: static site"]
    );
    let d = detected(&[("site/public/index.html", "<h1>hi</h1>")], "site");
    assert_eq!(d.build_type, BuildType::Static);

    let dir = tree(&[("README.md", "# hi"), ("src/main.c", "int main;")]);
    let err = detect(dir.path(), "").unwrap_err();
    assert!(matches!(err, Error::NotDetected { .. }));
    assert!(err.is_invalid_input());
    let message = err.to_string();
    assert!(
        message.starts_with("could not detect how to build the repository root: found none of Dockerfile, Containerfile,"),
        "{message}"
    );
    assert!(message.contains("package.json"), "{message}");
    assert!(message.ends_with("add a Dockerfile or choose the build type explicitly"));
}

#[test]
fn root_dir_cannot_leave_the_checkout() {
    let outside = tree(&[("package.json", "{}"), ("Dockerfile", "FROM scratch")]);
    let repo = tree(&[("apps/web/package.json", "{}")]);
    assert_eq!(
        refused(repo.path(), "../x"),
        "rootDir: must not contain '..'"
    );
    assert!(refused(repo.path(), "/etc").starts_with("rootDir: must be relative"));
    assert_eq!(
        refused(repo.path(), "apps/nope"),
        "rootDir: apps/nope does not exist in the repository"
    );
    assert_eq!(
        refused(repo.path(), "apps/web/package.json"),
        "rootDir: apps/web/package.json is not a directory"
    );

    std::os::unix::fs::symlink(outside.path(), repo.path().join("apps/evil")).unwrap();
    assert_eq!(
        refused(repo.path(), "apps/evil"),
        "rootDir: apps/evil leads outside the repository (through a symlink)"
    );
    // A symlink that stays inside is fine.
    std::os::unix::fs::symlink("web", repo.path().join("apps/alias")).unwrap();
    assert_eq!(
        detect(repo.path(), "apps/alias")
            .unwrap()
            .language
            .as_deref(),
        Some("Node.js")
    );
}

#[test]
fn manifests_that_point_outside_are_refused() {
    let outside = tree(&[("secret.json", r#"{"dependencies":{"next":"1"}}"#)]);
    let repo = tree(&[]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.json"),
        repo.path().join("package.json"),
    )
    .unwrap();
    assert_eq!(
        refused(repo.path(), ""),
        "repository: package.json is a symlink to outside the repository; Ferry does not follow it"
    );

    let dockerfile = tree(&[]);
    std::os::unix::fs::symlink("/etc/hostname", dockerfile.path().join("Dockerfile")).unwrap();
    assert!(refused(dockerfile.path(), "").contains("Dockerfile is a symlink to outside"));
}

#[test]
fn manifests_are_read_boundedly() {
    // A FIFO named like a manifest would block a naive read forever.
    let repo = tree(&[("go.mod", "module x\n")]);
    let status = std::process::Command::new("mkfifo")
        .arg(repo.path().join("composer.json"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        detect(repo.path(), "").unwrap().language.as_deref(),
        Some("Go")
    );

    // Over 1 MiB: only the start is read, so it no longer parses.
    let huge = format!(
        r#"{{"dependencies":{{"next":"1"}},"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let d = detected(&[("package.json", &huge)], "");
    assert_eq!(summary(&d), (Some("Node.js"), None, Some("npm")));
    assert!(
        d.reasons[1].starts_with("package.json could not be parsed"),
        "{d:?}"
    );
}
