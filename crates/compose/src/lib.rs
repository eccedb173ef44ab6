//! Docker Compose parsing for Ferry stacks.
//!
//! [`parse`] turns a `docker-compose.yml` plus the stack's variables into a
//! [`ComposeProject`]: the services Ferry can run on Kubernetes, the named
//! volumes they mount, and warnings for keys that are accepted but not
//! applied. The rule is that nothing is silently ignored: every key is
//! either mapped, reported as a [`Warning`], refused (collected into
//! [`Error::Refused`], e.g. `privileged` or host bind mounts), or rejected as
//! [`Error::Unsupported`]. Only `x-*` extension keys are skipped, as compose
//! does. See the crate README for the full table.

mod bounds;
mod interpolate;
mod mask;
mod order;
mod service;
mod units;
mod words;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

pub use crate::mask::{MASK, mask_environment};
use crate::yaml::join;

/// The work limits of [`parse`]: see the crate README.
pub mod limits {
    pub use crate::bounds::{
        MAX_BYTES, MAX_DEPTH, MAX_INTERPOLATION_DEPTH, MAX_NODES, MAX_TEXT_BYTES,
    };
}

/// Errors of `ferry-compose`. Messages name the compose path at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The file is over a work limit ([`limits`]): too big, too deep, or
    /// expanding (aliases, interpolation) to too much.
    #[error("{0}")]
    Limit(String),
    #[error(
        "{path}: variable `{name}` is not set (set it in the stack's variables or give a default: ${{{name}:-default}})"
    )]
    UnsetVariable { name: String, path: String },
    #[error("{path}: required variable `{name}` is missing: {message}")]
    RequiredVariable {
        name: String,
        path: String,
        message: String,
    },
    /// Malformed `$` syntax.
    #[error("{path}: {message}")]
    Interpolation { path: String, message: String },
    /// A known key with a value Ferry cannot use (wrong type, bad port, ...).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// A key Ferry does not know or does not implement.
    #[error(
        "{path}: unsupported compose key (Ferry does not implement it and never ignores keys silently; remove it)"
    )]
    Unsupported { path: String },
    /// Keys or values Ferry will not run, all of them at once.
    #[error("compose file refused:{}", list_refusals(.0))]
    Refused(Vec<Refusal>),
    #[error("services.{service}.depends_on: service `{dependency}` does not exist")]
    UnknownDependency { service: String, dependency: String },
    /// Names the services of the cycle, the first repeated at the end.
    #[error("depends_on cycle: {}", .0.join(" -> "))]
    DependencyCycle(Vec<String>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn list_refusals(refusals: &[Refusal]) -> String {
    refusals.iter().map(|r| format!("\n  - {r}")).collect()
}

/// One refused key or value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Compose path, e.g. `services.web.privileged` or `services.web.volumes[0]`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// An accepted key that Ferry does not apply (or applies differently).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComposeProject {
    /// Dependencies first (`depends_on`), then by name.
    pub services: Vec<ComposeService>,
    /// Declared named volumes plus one per anonymous volume, by name.
    pub volumes: Vec<NamedVolume>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedVolume {
    /// DNS-1123 label (`_` normalised to `-`).
    pub name: String,
    /// From the `x-ferry-size-gb` extension; `None` lets the api choose.
    pub size_gb: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComposeService {
    /// DNS-1123 label (`_` normalised to `-`).
    pub name: String,
    pub image: String,
    /// Compose `command`: replaces the image's CMD (Kubernetes `args`).
    pub command: Vec<String>,
    /// Compose `entrypoint`: replaces the image's ENTRYPOINT (Kubernetes
    /// `command`).
    pub entrypoint: Vec<String>,
    /// Sorted by key.
    pub environment: Vec<(String, String)>,
    /// From `ports` and `expose` (the latter never published).
    pub ports: Vec<ComposePort>,
    pub mounts: Vec<ComposeMount>,
    /// Normalised names of existing services, sorted.
    pub depends_on: Vec<String>,
    /// `deploy.replicas` or `scale`.
    pub replicas: Option<u32>,
    /// Kubernetes quantities (`500m`, `512Mi`).
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    /// Set when the compose healthcheck is a recognisable HTTP probe of the
    /// container itself (`curl -f http://localhost:3000/health`).
    pub healthcheck_port: Option<u16>,
    pub healthcheck_path: Option<String>,
    /// Kubernetes `workingDir`.
    pub working_dir: Option<String>,
    /// From a numeric `user: "uid[:gid]"` (securityContext).
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComposePort {
    pub container_port: u16,
    /// The host port compose would publish; `None` for `expose` and
    /// container-only `ports` entries.
    pub published: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComposeMount {
    /// A [`NamedVolume::name`] of the same project.
    pub volume: String,
    pub target: String,
    pub read_only: bool,
    /// Long syntax `volume.subpath`.
    pub sub_path: Option<String>,
}

/// Collected while walking the file: warnings and refusals accumulate, and
/// the first hard error is kept so refusals can still all be reported.
pub(crate) struct Ctx<'a> {
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) refusals: Vec<Refusal>,
    pub(crate) error: Option<Error>,
    /// Declared top-level volumes by compose name, and anonymous ones.
    pub(crate) volumes: BTreeMap<String, NamedVolume>,
    /// Their Ferry names, so name collisions are found without a scan.
    pub(crate) volume_names: BTreeSet<String>,
}

impl Ctx<'_> {
    pub(crate) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn refuse(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.refusals.push(Refusal {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn add_volume(&mut self, compose_name: String, volume: NamedVolume) {
        self.volume_names.insert(volume.name.clone());
        self.volumes.insert(compose_name, volume);
    }

    pub(crate) fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    pub(crate) fn check(&mut self, result: Result<()>) {
        if let Err(e) = result {
            self.fail(e);
        }
    }
}

/// Parses a compose file, interpolating `$VAR`s from `env`.
///
/// Errors: [`Error::Limit`] for a file over the work limits ([`limits`]);
/// invalid YAML or interpolation; [`Error::Refused`] with every refused path
/// when any is present; otherwise the first other error.
pub fn parse(yaml: &str, env: &BTreeMap<String, String>) -> Result<ComposeProject> {
    // Bounded: refuses alias blow-up, deep nesting and oversized files
    // before the tree is built.
    let mut root = bounds::load(yaml)?;
    yaml::resolve_merges(&mut root, "")?;
    let mut text_budget = bounds::MAX_TEXT_BYTES;
    yaml::interpolate_tree(&mut root, env, "", &mut text_budget)?;
    let top = match &root {
        Value::Mapping(m) => m,
        Value::Null => return Err(yaml::invalid("", "the compose file is empty")),
        _ => {
            return Err(yaml::invalid(
                "",
                "a compose file must be a mapping with a `services` key",
            ));
        }
    };
    let mut ctx = Ctx {
        env,
        warnings: Vec::new(),
        refusals: Vec::new(),
        error: None,
        volumes: BTreeMap::new(),
        volume_names: BTreeSet::new(),
    };

    // Volumes first: services refer to them.
    if let Some(volumes) = top.get("volumes") {
        let result = top_volumes(&mut ctx, volumes);
        ctx.check(result);
    }
    let mut services = None;
    for (key, value) in top {
        let key = yaml::key(key, "")?;
        match key.as_str() {
            "services" => services = Some(value),
            "volumes" => {}
            "networks" => {
                let result = top_networks(&mut ctx, value);
                ctx.check(result);
            }
            "version" => ctx.warn("version", "`version` is obsolete and ignored"),
            "name" => ctx.warn(
                "name",
                "the project name is ignored: Ferry names the stack and its namespace",
            ),
            "secrets" => ctx.refuse(
                "secrets",
                "secrets are not supported yet; pass values as stack variables",
            ),
            "configs" => ctx.refuse(
                "configs",
                "configs are not supported yet; bake files into the image",
            ),
            "include" => ctx.refuse(
                "include",
                "other compose files are not available to Ferry; inline them",
            ),
            k if k.starts_with("x-") => {}
            _ => ctx.fail(Error::Unsupported { path: key }),
        }
    }

    let services = match services {
        Some(Value::Mapping(m)) if !m.is_empty() => m,
        Some(Value::Mapping(_) | Value::Null) | None => {
            ctx.fail(yaml::invalid(
                "services",
                "the compose file defines no services",
            ));
            &serde_yaml_ng::Mapping::new()
        }
        Some(_) => {
            ctx.fail(yaml::invalid(
                "services",
                "expected a mapping of service names to services",
            ));
            &serde_yaml_ng::Mapping::new()
        }
    };
    let mut parsed: Vec<(String, ComposeService)> = Vec::new();
    // Ferry name -> first compose name with it (a map: thousands of services
    // must not cost a quadratic scan).
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    for (name, value) in services {
        let name = yaml::key(name, "services")?;
        match service::convert(&mut ctx, &name, value) {
            Ok(service::Converted::Service(s)) => {
                if let Some(other) = taken.get(&s.name) {
                    ctx.fail(yaml::invalid(
                        &join("services", &name),
                        &format!("services `{other}` and `{name}` both become `{}`", s.name),
                    ));
                } else {
                    taken.insert(s.name.clone(), name.clone());
                }
                parsed.push((name, *s));
            }
            Ok(service::Converted::Skipped) => {
                skipped.insert(name);
            }
            Err(e) => ctx.fail(e),
        }
    }

    if !ctx.refusals.is_empty() {
        return Err(Error::Refused(ctx.refusals));
    }
    if let Some(e) = ctx.error {
        return Err(e);
    }
    warn_renamed_hosts(&mut ctx.warnings, &parsed);
    let services = order::resolve(parsed, &skipped)?;
    let mut volumes: Vec<NamedVolume> = ctx.volumes.into_values().collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ComposeProject {
        services,
        volumes,
        warnings: ctx.warnings,
    })
}

/// Kubernetes object names: DNS-1123 label. Underscores (common in compose:
/// `db_data`, `my_app`) become `-` with a warning; anything else is an error.
pub(crate) fn dns_label(ctx: &mut Ctx<'_>, name: &str, path: &str, what: &str) -> Result<String> {
    let normalised = name.replace('_', "-");
    let valid = !normalised.is_empty()
        && normalised.len() <= 63
        && normalised
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !normalised.starts_with('-')
        && !normalised.ends_with('-');
    if !valid {
        return Err(yaml::invalid(
            path,
            &format!(
                "{what} name `{name}` is not a DNS-1123 label (lowercase letters, digits and `-`, at most 63, starting and ending alphanumeric)"
            ),
        ));
    }
    if normalised != name {
        ctx.warn(path, format!("{what} `{name}` is named `{normalised}` in Ferry (Kubernetes names cannot contain `_`)"));
    }
    Ok(normalised)
}

fn top_volumes(ctx: &mut Ctx<'_>, value: &Value) -> Result<()> {
    let map = match value {
        Value::Null => return Ok(()),
        other => yaml::mapping(other, "volumes")?,
    };
    let mut seen = BTreeMap::new();
    for (name, def) in map {
        let name = yaml::key(name, "volumes")?;
        let path = join("volumes", &name);
        let normalised = dns_label(ctx, &name, &path, "volume")?;
        if let Some(other) = seen.insert(normalised.clone(), name.clone()) {
            return Err(yaml::invalid(
                &path,
                &format!("volumes `{other}` and `{name}` both become `{normalised}`"),
            ));
        }
        let mut size_gb = None;
        if let Value::Mapping(def) = def {
            for (key, v) in def {
                let key = yaml::key(key, &path)?;
                let p = join(&path, &key);
                match key.as_str() {
                    "driver" => {
                        let driver = yaml::string(v, &p)?;
                        if driver != "local" {
                            ctx.refuse(p, format!("volume driver `{driver}` is not supported; Ferry volumes are Kubernetes persistent volumes"));
                        }
                    }
                    "driver_opts" if !yaml::is_empty(v) => ctx.refuse(
                        p,
                        "driver_opts (bind, NFS or other host mounts) are not allowed; Ferry volumes are Kubernetes persistent volumes",
                    ),
                    "driver_opts" => {}
                    "external" if yaml::boolean(v, &p)? => {
                        ctx.refuse(p, "external volumes are not supported; declare the volume in the stack")
                    }
                    "external" => {}
                    "labels" => ctx.warn(p, "volume labels are not applied"),
                    "name" => ctx.warn(p, format!("the volume's custom name is ignored; Ferry calls it `{normalised}`")),
                    "x-ferry-size-gb" => {
                        let size = yaml::uint(v, &p)?;
                        let size = i32::try_from(size).ok().filter(|s| *s > 0);
                        size_gb = Some(size.ok_or_else(|| yaml::invalid(&p, "expected a size in GB between 1 and 2^31-1"))?);
                    }
                    k if k.starts_with("x-") => {}
                    _ => return Err(Error::Unsupported { path: p }),
                }
            }
        } else if !def.is_null() {
            yaml::mapping(def, &path)?;
        }
        ctx.add_volume(
            name,
            NamedVolume {
                name: normalised,
                size_gb,
            },
        );
    }
    Ok(())
}

fn top_networks(ctx: &mut Ctx<'_>, value: &Value) -> Result<()> {
    let map = match value {
        Value::Null => return Ok(()),
        other => yaml::mapping(other, "networks")?,
    };
    for (name, def) in map {
        let name = yaml::key(name, "networks")?;
        let path = join("networks", &name);
        if let Value::Mapping(def) = def {
            for (key, v) in def {
                let key = yaml::key(key, &path)?;
                let p = join(&path, &key);
                match key.as_str() {
                    "driver" => {
                        let driver = yaml::string(v, &p)?;
                        if !matches!(driver, "bridge" | "overlay") {
                            ctx.refuse(p, format!("network driver `{driver}` is not supported; a stack's services share the project network"));
                        }
                    }
                    "external" if yaml::boolean(v, &p)? => {
                        ctx.refuse(p, "external networks are not supported; a stack's services share the project network")
                    }
                    "internal" if yaml::boolean(v, &p)? => ctx.warn(
                        p,
                        "`internal: true` is not applied: egress is not restricted per network (the project NetworkPolicy governs ingress)",
                    ),
                    "external" | "internal" | "name" | "labels" | "attachable" | "enable_ipv6" | "ipam" | "driver_opts" => {}
                    k if k.starts_with("x-") => {}
                    _ => return Err(Error::Unsupported { path: p }),
                }
            }
        } else if !def.is_null() {
            yaml::mapping(def, &path)?;
        }
        ctx.warn(path, "networks are not created: all services of a stack share the project's namespace network and reach each other by service name");
    }
    Ok(())
}

/// A renamed service (`plausible_db` -> `plausible-db`) is no longer
/// reachable under its compose name; environment values that still use it
/// as a word (`postgres://...@plausible_db:5432`) are pointed out rather than
/// rewritten.
///
/// Compose names that were renamed are made of `[a-z0-9_-]` only (others
/// are refused), so each value is split into runs of `[A-Za-z0-9_-]` looked
/// up in a map: linear in the text, where testing every name against every
/// value would be quadratic in the number of services.
fn warn_renamed_hosts(warnings: &mut Vec<Warning>, services: &[(String, ComposeService)]) {
    // Compose name -> index of the renamed service.
    let renamed: BTreeMap<&str, usize> = services
        .iter()
        .enumerate()
        .filter(|(_, (compose_name, s))| *compose_name != s.name)
        .map(|(i, (compose_name, _))| (compose_name.as_str(), i))
        .collect();
    if renamed.is_empty() {
        return;
    }
    // (renamed service, user service, variable): the order of the warnings.
    let mut found = BTreeSet::new();
    for (user, (_, service)) in services.iter().enumerate() {
        for (var, (_, value)) in service.environment.iter().enumerate() {
            let words = value.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            for word in words {
                if let Some(&i) = renamed.get(word) {
                    found.insert((i, user, var));
                }
            }
        }
    }
    for (i, user, var) in found {
        let (Some((compose_name, renamed)), Some((user_name, service))) =
            (services.get(i), services.get(user))
        else {
            continue;
        };
        let Some((key, _)) = service.environment.get(var) else {
            continue;
        };
        warnings.push(Warning {
            path: format!("services.{user_name}.environment.{key}"),
            message: format!(
                "mentions `{compose_name}`, which is reachable as `{}` in Ferry (host names cannot contain `_`)",
                renamed.name
            ),
        });
    }
}
