//! Ferry's own build-type detection on a checkout, so the api can tell the
//! user what it will build (and why) before a builder runs.
//!
//! Rules, first match wins:
//!
//! 1. `Dockerfile` or `Containerfile` in the root directory: build it.
//! 2. A language manifest: [`BuildType::Railpack`]. Languages are tried in
//!    Railpack's own order (PHP, Go, Java, Rust, Ruby, Elixir, Python, Deno,
//!    .NET, Node.js), so what Ferry reports is what Railpack will build: a
//!    Django app with a `package.json` for its assets is Python.
//! 3. `index.html` (or `public/index.html`) and nothing else: a static site.
//!
//! Java and .NET go to Railpack too, not Buildpacks: Railpack builds Maven,
//! Gradle (Spring Boot included) and .NET projects, and one builder path is
//! simpler to run and cache. [`BuildType::Buildpacks`] is only ever chosen
//! by the user.
//!
//! Bounded: only the root directory's top level is listed (plus
//! `public/index.html`), manifests are read up to 1 MiB, and nothing that
//! resolves outside the checkout (a symlink) is read.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// The most of a manifest that is read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// The longest root directory accepted, in bytes.
pub const MAX_ROOT_DIR_LEN: usize = 1024;
/// Top-level entries listed when looking for `*.csproj`.
const MAX_DIR_ENTRIES: usize = 10_000;

/// What [`detect`] looked for, for the error when it finds nothing.
const LOOKED_FOR: &str = "Dockerfile, Containerfile, composer.json, index.php, go.mod, pom.xml, \
     build.gradle(.kts), Cargo.toml, Gemfile, mix.exs, requirements.txt, pyproject.toml, Pipfile, \
     deno.json(c), *.csproj, package.json, index.html";

/// How to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildType {
    /// The repository's own Dockerfile; `path` is relative to the
    /// repository root.
    Dockerfile {
        path: String,
    },
    Railpack,
    Buildpacks,
    Static,
}

/// What [`detect`] found, and why, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub build_type: BuildType,
    pub language: Option<String>,
    pub framework: Option<String>,
    pub package_manager: Option<String>,
    pub reasons: Vec<String>,
}

/// Checks a service's root directory (`apps/web`, `""` or `"."` for the
/// repository root) and returns it normalised. Relative, no `..`.
pub fn validate_root_dir(root_dir: &str) -> Result<PathBuf> {
    let refuse = |reason: &str| Err(Error::invalid("rootDir", reason));
    if root_dir.len() > MAX_ROOT_DIR_LEN {
        return refuse("is longer than 1024 bytes");
    }
    if root_dir.chars().any(char::is_control) {
        return refuse("must not contain control characters");
    }
    let mut normal = PathBuf::new();
    for component in Path::new(root_dir).components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir => return refuse("must not contain '..'"),
            Component::RootDir | Component::Prefix(_) => {
                return refuse("must be relative to the repository root, e.g. apps/web");
            }
        }
    }
    Ok(normal)
}

/// Detects how to build `root_dir` of the checkout in `checkout`. Blocking
/// file I/O: call it from `spawn_blocking` in async code.
pub fn detect(checkout: &Path, root_dir: &str) -> Result<Detection> {
    let dir = Dir::open(checkout, root_dir)?;
    for name in ["Dockerfile", "Containerfile"] {
        if dir.find(name)?.is_some() {
            let path = dir.shown(name);
            return Ok(Detection {
                reasons: vec![format!("{name} found at {path}")],
                build_type: BuildType::Dockerfile { path },
                language: None,
                framework: None,
                package_manager: None,
            });
        }
    }
    let mut found = Vec::new();
    for detector in DETECTORS {
        if let Some(f) = detector(&dir)? {
            found.push(f);
        }
    }
    let mut rest = found.into_iter();
    if let Some(first) = rest.next() {
        let mut reasons = vec![first.reason(&dir)];
        reasons.extend(first.notes.iter().cloned());
        reasons.extend(rest.map(|other| {
            format!(
                "also found {} ({}); {} is used, as Railpack checks it first",
                dir.shown(&other.manifest),
                other.language,
                first.language
            )
        }));
        return Ok(Detection {
            build_type: BuildType::Railpack,
            language: Some(first.language.to_owned()),
            framework: first.framework.map(|(name, _)| name.to_owned()),
            package_manager: first.package_manager.map(|(name, _)| name),
            reasons,
        });
    }
    for index in ["index.html", "public/index.html"] {
        if dir.find(index)?.is_some() {
            return Ok(Detection {
                build_type: BuildType::Static,
                language: None,
                framework: None,
                package_manager: None,
                reasons: vec![format!(
                    "{} found and no language manifest: static site",
                    dir.shown(index)
                )],
            });
        }
    }
    Err(Error::NotDetected {
        root_dir: if root_dir.is_empty() {
            "the repository root".into()
        } else {
            root_dir.to_owned()
        },
        looked_for: LOOKED_FOR,
    })
}

/// One language's evidence.
struct Found {
    /// The file that showed the language, relative to the root directory.
    manifest: String,
    language: &'static str,
    /// The framework, and the dependency that showed it.
    framework: Option<(&'static str, String)>,
    /// The package manager, and the file that showed it when that is not
    /// the manifest.
    package_manager: Option<(String, Option<String>)>,
    /// Anything odd worth telling (an unparsable manifest).
    notes: Vec<String>,
}

impl Found {
    fn new(manifest: &str, language: &'static str) -> Found {
        Found {
            manifest: manifest.to_owned(),
            language,
            framework: None,
            package_manager: None,
            notes: Vec::new(),
        }
    }

    fn framework(mut self, framework: Option<(&'static str, String)>) -> Found {
        self.framework = framework;
        self
    }

    fn package_manager(mut self, name: &str, evidence: Option<&str>) -> Found {
        self.package_manager = Some((name.to_owned(), evidence.map(str::to_owned)));
        self
    }

    /// "package.json with next dependency: Node.js (Next.js), pnpm
    /// (pnpm-lock.yaml)".
    fn reason(&self, dir: &Dir) -> String {
        let mut reason = dir.shown(&self.manifest);
        match &self.framework {
            Some((_, dependency)) => reason.push_str(&format!(" with {dependency} dependency: ")),
            None => reason.push_str(" found: "),
        }
        reason.push_str(self.language);
        if let Some((framework, _)) = &self.framework {
            reason.push_str(&format!(" ({framework})"));
        }
        match &self.package_manager {
            Some((name, Some(evidence))) => reason.push_str(&format!(", {name} ({evidence})")),
            Some((name, None)) => reason.push_str(&format!(", {name}")),
            None => {}
        }
        reason
    }
}

type Detector = fn(&Dir) -> Result<Option<Found>>;

/// Railpack's provider order.
const DETECTORS: [Detector; 10] = [
    php, go, java, rust, ruby, elixir, python, deno, dotnet, node,
];

fn php(dir: &Dir) -> Result<Option<Found>> {
    if let Some(text) = dir.read("composer.json")? {
        let (deps, notes) = json_deps(&text, "composer.json", &["require", "require-dev"]);
        let framework = first_dep(&deps, &[("Laravel", "laravel/framework")]);
        let mut found = Found::new("composer.json", "PHP")
            .framework(framework)
            .package_manager("composer", None);
        found.notes = notes;
        return Ok(Some(found));
    }
    Ok(dir
        .find("index.php")?
        .map(|_| Found::new("index.php", "PHP")))
}

fn go(dir: &Dir) -> Result<Option<Found>> {
    Ok(dir
        .first_of(&["go.mod", "go.work"])?
        .map(|manifest| Found::new(manifest, "Go")))
}

fn java(dir: &Dir) -> Result<Option<Found>> {
    let Some(manifest) = dir.first_of(&["pom.xml", "build.gradle", "build.gradle.kts"])? else {
        return Ok(None);
    };
    let text = dir.read(manifest)?.unwrap_or_default();
    let framework = ["spring-boot", "org.springframework.boot"]
        .into_iter()
        .find(|needle| text.contains(needle))
        .map(|needle| ("Spring Boot", needle.to_owned()));
    let tool = if manifest == "pom.xml" {
        "maven"
    } else {
        "gradle"
    };
    Ok(Some(
        Found::new(manifest, "Java")
            .framework(framework)
            .package_manager(tool, None),
    ))
}

fn rust(dir: &Dir) -> Result<Option<Found>> {
    Ok(dir
        .find("Cargo.toml")?
        .map(|_| Found::new("Cargo.toml", "Rust").package_manager("cargo", None)))
}

fn ruby(dir: &Dir) -> Result<Option<Found>> {
    let Some(text) = dir.read("Gemfile")? else {
        return Ok(None);
    };
    let deps: Vec<String> = text.lines().filter_map(gem_name).collect();
    Ok(Some(
        Found::new("Gemfile", "Ruby")
            .framework(first_dep(&deps, &[("Rails", "rails")]))
            .package_manager("bundler", None),
    ))
}

fn elixir(dir: &Dir) -> Result<Option<Found>> {
    let Some(text) = dir.read("mix.exs")? else {
        return Ok(None);
    };
    let framework = text
        .contains("{:phoenix,")
        .then(|| ("Phoenix", "phoenix".to_owned()));
    Ok(Some(
        Found::new("mix.exs", "Elixir")
            .framework(framework)
            .package_manager("mix", None),
    ))
}

fn python(dir: &Dir) -> Result<Option<Found>> {
    let Some(manifest) = dir.first_of(&["requirements.txt", "pyproject.toml", "Pipfile"])? else {
        return Ok(None);
    };
    let mut deps = Vec::new();
    let mut notes = Vec::new();
    if let Some(text) = dir.read("requirements.txt")? {
        deps.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty() && !l.starts_with('-'))
                .filter_map(python_name),
        );
    }
    for (file, tables) in [
        ("pyproject.toml", &["tool.poetry.dependencies"][..]),
        ("Pipfile", &["packages", "dev-packages"][..]),
    ] {
        if let Some(text) = dir.read(file)? {
            match text.parse::<toml::Table>() {
                Ok(doc) => deps.extend(toml_deps(&doc, tables)),
                Err(e) => notes.push(format!("{file} could not be parsed ({})", e.message())),
            }
        }
    }
    let framework = first_dep(
        &deps,
        &[
            ("Django", "django"),
            ("FastAPI", "fastapi"),
            ("Flask", "flask"),
        ],
    );
    let (manager, evidence) = match dir.first_of(&["uv.lock", "poetry.lock", "pdm.lock"])? {
        Some("uv.lock") => ("uv", Some("uv.lock")),
        Some("poetry.lock") => ("poetry", Some("poetry.lock")),
        Some(_) => ("pdm", Some("pdm.lock")),
        None if manifest == "Pipfile" => ("pipenv", None),
        None => ("pip", None),
    };
    let mut found = Found::new(manifest, "Python")
        .framework(framework)
        .package_manager(manager, evidence);
    found.notes = notes;
    Ok(Some(found))
}

fn deno(dir: &Dir) -> Result<Option<Found>> {
    Ok(dir
        .first_of(&["deno.json", "deno.jsonc"])?
        .map(|manifest| Found::new(manifest, "Deno")))
}

fn dotnet(dir: &Dir) -> Result<Option<Found>> {
    let Some(project) = dir.top_level_file_ending(&[".csproj", ".fsproj"])? else {
        return Ok(None);
    };
    let text = dir.read(&project)?.unwrap_or_default();
    let framework = text
        .contains("Microsoft.NET.Sdk.Web")
        .then(|| ("ASP.NET Core", "Microsoft.NET.Sdk.Web".to_owned()));
    Ok(Some(Found::new(&project, ".NET").framework(framework)))
}

fn node(dir: &Dir) -> Result<Option<Found>> {
    let Some(text) = dir.read("package.json")? else {
        return Ok(None);
    };
    let (deps, notes) = json_deps(&text, "package.json", &["dependencies", "devDependencies"]);
    // Meta-frameworks before the tools they are built on (Remix and Astro
    // use Vite, Nest uses Express).
    let framework = first_dep(
        &deps,
        &[
            ("Next.js", "next"),
            ("Nuxt", "nuxt"),
            ("Remix", "@remix-run/"),
            ("Astro", "astro"),
            ("NestJS", "@nestjs/core"),
            ("Express", "express"),
            ("Vite", "vite"),
        ],
    );
    let lockfiles = [
        ("pnpm-lock.yaml", "pnpm"),
        ("bun.lock", "bun"),
        ("bun.lockb", "bun"),
        ("yarn.lock", "yarn"),
        ("package-lock.json", "npm"),
        ("npm-shrinkwrap.json", "npm"),
    ];
    let mut found = Found::new("package.json", "Node.js").framework(framework);
    found = match dir.first_of(&lockfiles.map(|(file, _)| file))? {
        Some(lockfile) => {
            let manager = lockfiles
                .iter()
                .find(|(file, _)| *file == lockfile)
                .map_or("npm", |(_, manager)| manager);
            found.package_manager(manager, Some(lockfile))
        }
        None => match package_manager_field(&text) {
            Some(manager) => found.package_manager(&manager, Some("packageManager field")),
            None => found.package_manager("npm", Some("no lockfile, npm assumed")),
        },
    };
    found.notes = notes;
    Ok(Some(found))
}

/// The `packageManager` field's tool (`"pnpm@9.1.0"` is pnpm).
fn package_manager_field(package_json: &str) -> Option<String> {
    let doc: Value = serde_json::from_str(package_json).ok()?;
    let field = doc.get("packageManager")?.as_str()?;
    let name = field.split('@').next()?;
    ["npm", "pnpm", "yarn", "bun"]
        .contains(&name)
        .then(|| name.to_owned())
}

/// The keys of the given objects of a JSON manifest.
fn json_deps(text: &str, file: &str, sections: &[&str]) -> (Vec<String>, Vec<String>) {
    match serde_json::from_str::<Value>(text) {
        Ok(doc) => {
            let deps = sections
                .iter()
                .filter_map(|s| doc.get(s).and_then(Value::as_object))
                .flat_map(|deps| deps.keys().cloned())
                .collect();
            (deps, Vec::new())
        }
        Err(e) => (
            Vec::new(),
            vec![format!(
                "{file} could not be parsed ({e}); no framework detected"
            )],
        ),
    }
}

/// Dependency names of a Python TOML manifest: PEP 621
/// `[project].dependencies` plus the given tables' keys.
fn toml_deps(doc: &toml::Table, tables: &[&str]) -> Vec<String> {
    let mut deps: Vec<String> = doc
        .get("project")
        .and_then(|p| p.get("dependencies"))
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
        .filter_map(python_name)
        .collect();
    for path in tables {
        let table = path
            .split('.')
            .try_fold(doc, |t, key| t.get(key).and_then(toml::Value::as_table));
        deps.extend(
            table
                .into_iter()
                .flat_map(|t| t.keys().filter_map(|k| python_name(k))),
        );
    }
    deps
}

/// A PEP 508 requirement's normalised name (`Django>=4` is `django`).
fn python_name(requirement: &str) -> Option<String> {
    let name: String = requirement
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    (!name.is_empty()).then(|| name.to_ascii_lowercase().replace(['_', '.'], "-"))
}

/// `gem "rails", "~> 7.1"` is `rails`.
fn gem_name(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("gem")?;
    let rest = rest.strip_prefix(['(', ' ', '\t'])?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let name = rest[1..].split(quote).next()?;
    Some(name.to_owned())
}

/// The first framework whose dependency is present, with that dependency.
/// A wanted name ending in `/` is a scope: `@remix-run/` matches
/// `@remix-run/node`.
fn first_dep(
    deps: &[String],
    frameworks: &[(&'static str, &str)],
) -> Option<(&'static str, String)> {
    frameworks.iter().find_map(|(name, wanted)| {
        deps.iter()
            .find(|dep| {
                if wanted.ends_with('/') {
                    dep.starts_with(wanted)
                } else {
                    dep == wanted
                }
            })
            .map(|dep| (*name, dep.clone()))
    })
}

/// The root directory inside a checkout, with reads that stay inside it.
struct Dir {
    checkout: PathBuf,
    root: PathBuf,
    /// The root directory as given, normalised; empty for the repo root.
    rel: PathBuf,
}

impl Dir {
    fn open(checkout: &Path, root_dir: &str) -> Result<Dir> {
        let rel = validate_root_dir(root_dir)?;
        let checkout = fs::canonicalize(checkout)
            .map_err(|e| Error::io(format!("reading the checkout {}", checkout.display()), e))?;
        let shown = rel.display();
        let root = match fs::canonicalize(checkout.join(&rel)) {
            Ok(root) => root,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid(
                    "rootDir",
                    format!("{shown} does not exist in the repository"),
                ));
            }
            Err(e) => return Err(Error::io(format!("reading {shown}"), e)),
        };
        // A symlinked directory may point anywhere; only inside counts.
        if !root.starts_with(&checkout) {
            return Err(Error::invalid(
                "rootDir",
                format!("{shown} leads outside the repository (through a symlink)"),
            ));
        }
        if !root.is_dir() {
            return Err(Error::invalid(
                "rootDir",
                format!("{shown} is not a directory"),
            ));
        }
        Ok(Dir {
            checkout,
            root,
            rel,
        })
    }

    /// `name` as the user sees it: relative to the repository root.
    fn shown(&self, name: &str) -> String {
        self.rel.join(name).to_string_lossy().into_owned()
    }

    /// The regular file `name` in the root directory, if there is one.
    /// Symlinks are followed only while they stay inside the checkout;
    /// one leading out is an error, not silently skipped.
    fn find(&self, name: &str) -> Result<Option<PathBuf>> {
        let real = match fs::canonicalize(self.root.join(name)) {
            Ok(real) => real,
            // Missing, or a dangling symlink.
            Err(_) => return Ok(None),
        };
        if !real.starts_with(&self.checkout) {
            return Err(Error::invalid(
                "repository",
                format!(
                    "{} is a symlink to outside the repository; Ferry does not follow it",
                    self.shown(name)
                ),
            ));
        }
        // Only regular files: opening a FIFO would block forever.
        Ok(real.is_file().then_some(real))
    }

    /// The first of `names` present.
    fn first_of<'n>(&self, names: &[&'n str]) -> Result<Option<&'n str>> {
        for name in names {
            if self.find(name)?.is_some() {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Up to [`MAX_MANIFEST_BYTES`] of `name`, if it is there.
    fn read(&self, name: &str) -> Result<Option<String>> {
        let Some(path) = self.find(name)? else {
            return Ok(None);
        };
        let context = || format!("reading {}", self.shown(name));
        let file = fs::File::open(&path).map_err(|e| Error::io(context(), e))?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(context(), e))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The alphabetically first top-level file ending in one of `suffixes`.
    fn top_level_file_ending(&self, suffixes: &[&str]) -> Result<Option<String>> {
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("listing {}", self.rel.display()), e))?;
        let mut names: Vec<String> = entries
            .take(MAX_DIR_ENTRIES)
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| suffixes.iter().any(|s| name.ends_with(s)))
            .collect();
        names.sort();
        for name in names {
            if self.find(&name)?.is_some() {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn root_dir_must_be_relative_without_dotdot() {
        assert_eq!(validate_root_dir("").unwrap(), PathBuf::new());
        assert_eq!(validate_root_dir(".").unwrap(), PathBuf::new());
        assert_eq!(
            validate_root_dir("./apps//web/").unwrap(),
            PathBuf::from("apps/web")
        );
        let err = |v: &str| validate_root_dir(v).unwrap_err().to_string();
        assert_eq!(err("../x"), "rootDir: must not contain '..'");
        assert_eq!(err("apps/../../x"), "rootDir: must not contain '..'");
        assert!(err("/etc").starts_with("rootDir: must be relative"));
        assert!(err("a\nb").contains("control"));
        assert!(err(&"a".repeat(2000)).contains("longer"));
    }

    #[test]
    fn python_and_gem_names() {
        assert_eq!(python_name("Django>=4.2").as_deref(), Some("django"));
        assert_eq!(
            python_name("fastapi[all]==0.110").as_deref(),
            Some("fastapi")
        );
        assert_eq!(
            python_name("zope.interface").as_deref(),
            Some("zope-interface")
        );
        assert_eq!(python_name(">=1"), None);
        assert_eq!(gem_name("gem 'rails', '~> 7.1'").as_deref(), Some("rails"));
        assert_eq!(gem_name("  gem(\"puma\")").as_deref(), Some("puma"));
        assert_eq!(gem_name("gemspec"), None);
        assert_eq!(gem_name("# gem 'rails'"), None);
    }

    #[test]
    fn pyproject_and_pipfile_deps() {
        let doc: toml::Table = r#"
            [project]
            dependencies = ["FastAPI>=0.110", "uvicorn"]
            [tool.poetry.dependencies]
            Flask = "^3"
        "#
        .parse()
        .unwrap();
        let deps = toml_deps(&doc, &["tool.poetry.dependencies"]);
        assert_eq!(deps, ["fastapi", "uvicorn", "flask"]);
    }

    #[test]
    fn package_manager_field_names_the_tool() {
        let field = |v| package_manager_field(&format!(r#"{{"packageManager": "{v}"}}"#));
        assert_eq!(field("pnpm@9.1.0").as_deref(), Some("pnpm"));
        assert_eq!(field("yarn@4.0.0+sha256.abc").as_deref(), Some("yarn"));
        assert_eq!(field("evil@1"), None);
    }
}
