//! One service: every compose key is mapped, warned about, refused, or
//! rejected as unsupported.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::{Mapping, Value};

use crate::yaml::{self, index, invalid, join};
use crate::{
    ComposeMount, ComposePort, ComposeService, Ctx, Error, NamedVolume, Protocol, Result,
    dns_label, units, words,
};

/// More ports than this in one range is almost certainly a mistake (and one
/// Service port each).
const MAX_PORT_RANGE: u32 = 32;

const DOCKER_SOCKET: &str =
    "mounting the Docker socket gives the container control of the host; it is never allowed";
const BIND_MOUNT: &str = "host bind mounts are not allowed (the host is a shared Kubernetes node); use a named volume and copy data in";

pub(crate) enum Converted {
    Service(Box<ComposeService>),
    /// Has `profiles`: compose does not start it by default, neither do we.
    Skipped,
}

/// Keys accepted but not applied, with what the user should know.
fn ignored(key: &str) -> Option<&'static str> {
    Some(match key {
        "container_name" => "container_name is ignored: Ferry names the workload after the service",
        "restart" => "restart is ignored: Kubernetes always restarts failed containers",
        "labels" => "container labels are not applied",
        "annotations" => "annotations are not applied",
        "logging" => "logging options are ignored: Ferry collects container stdout/stderr",
        "hostname" | "domainname" => {
            "the container hostname is not set: reach the service by its service name"
        }
        "stop_grace_period" => {
            "stop_grace_period is not applied: Kubernetes' 30 s termination grace period is used"
        }
        "stop_signal" => {
            "stop_signal is not applied: Kubernetes sends SIGTERM (or the image's STOPSIGNAL)"
        }
        "networks" => {
            "service networks are ignored: all services of a stack share the project namespace and reach each other by service name (network aliases are not created)"
        }
        "links" => {
            "links are not needed: services already reach each other by service name via Kubernetes DNS (link aliases are not created)"
        }
        "platform" => "platform is ignored: the image is pulled for the node's architecture",
        "init" => {
            "init is not applied: no init process is injected; use an image with tini if the app needs one"
        }
        "stdin_open" | "tty" => "stdin_open/tty are not applied: containers run without a terminal",
        "ulimits" => "ulimits are not applied: the node's defaults are used",
        "dns" | "dns_search" | "dns_opt" => {
            "custom DNS settings are not applied: the cluster DNS is used"
        }
        "read_only" => "read_only is not applied: the root filesystem stays writable",
        "shm_size" => "shm_size is not applied: /dev/shm keeps the 64 MiB default",
        "cap_drop" => "cap_drop is not applied: the cluster's default capability set is used",
        "tmpfs" => {
            "tmpfs mounts are not created: the path stays on the container's writable layer (not memory-backed, not size-limited)"
        }
        "mem_swappiness" | "memswap_limit" => "swap settings are not applied",
        "cpu_shares" | "cpu_count" | "cpu_percent" | "cpu_period" | "cpu_quota" | "cpuset"
        | "cpu_rt_runtime" | "cpu_rt_period" => {
            "low-level CPU settings are not applied; use `cpus` or deploy.resources"
        }
        "pids_limit" => "pids_limit is not applied",
        "oom_score_adj" | "oom_kill_disable" => "OOM settings are not applied",
        "pull_policy" => {
            "pull_policy is ignored: Ferry pulls the image when a deployment changes it"
        }
        "mac_address" => "mac_address is ignored",
        "attach" => "attach is ignored: logs are always collected",
        "develop" => "develop (compose watch) is ignored",
        _ => return None,
    })
}

/// Keys refused whenever they are set to something other than their empty
/// default, with the reason.
fn refused(key: &str) -> Option<&'static str> {
    Some(match key {
        "privileged" => {
            "privileged containers have full access to the host; they are never allowed"
        }
        "cap_add" => "adding Linux capabilities is not allowed",
        "devices" | "device_cgroup_rules" => "host devices are not available to stack services",
        "gpus" => "GPUs are not supported",
        "sysctls" => "sysctls are not allowed (they change the shared node's kernel settings)",
        "volumes_from" => {
            "volumes_from is not supported: mount the same named volume in both services"
        }
        "build" => {
            "building images is not supported in stacks: build and push the image to a registry, then reference it with `image:`"
        }
        "extends" => {
            "extends is not supported: Ferry only sees this one file; inline the service (YAML anchors work)"
        }
        "env_file" => {
            "env files are not available to Ferry: inline the variables under `environment:` (use ${VAR} for secrets set as stack variables)"
        }
        "secrets" => {
            "secrets are not supported yet: set the values as stack variables and use `environment:`"
        }
        "configs" => "configs are not supported yet: bake the files into the image",
        "external_links" => {
            "external_links point at containers outside the stack, which do not exist on Kubernetes"
        }
        "extra_hosts" => {
            "extra_hosts is not supported (host-gateway access to the node is not allowed)"
        }
        "use_api_socket" => DOCKER_SOCKET,
        "runtime" => "custom container runtimes are not allowed",
        "cgroup_parent" => "cgroup_parent is not allowed",
        "pid" => "sharing a PID namespace (pid) is not allowed",
        "userns_mode" => "changing the user namespace (userns_mode) is not allowed",
        "uts" => "sharing the host UTS namespace is not allowed",
        "isolation" => "isolation is not supported",
        "storage_opt" => "storage_opt is not supported",
        "group_add" => "group_add is not supported (supplementary groups are not mapped)",
        _ => return None,
    })
}

#[derive(Default)]
struct Builder {
    image: Option<String>,
    has_build: bool,
    command: Vec<String>,
    entrypoint: Vec<String>,
    environment: BTreeMap<String, String>,
    ports: Vec<ComposePort>,
    mounts: Vec<ComposeMount>,
    depends_on: Vec<String>,
    replicas: Option<(u32, String)>,
    cpu_limit: Option<(Option<String>, String)>,
    memory_limit: Option<(String, String)>,
    cpu_request: Option<(Option<String>, String)>,
    memory_request: Option<(String, String)>,
    healthcheck: Option<(u16, String)>,
    working_dir: Option<String>,
    user: Option<(i64, Option<i64>)>,
    profiled: bool,
}

/// Sets a value that two compose keys can both give (`scale` and
/// `deploy.replicas`, `mem_limit` and `deploy.resources.limits.memory`):
/// equal values are fine, different ones are an error like in compose.
fn set_once<T: PartialEq>(slot: &mut Option<(T, String)>, value: T, path: &str) -> Result<()> {
    if let Some((old, old_path)) = slot
        && *old != value
    {
        return Err(invalid(path, &format!("conflicts with `{old_path}`")));
    }
    *slot = Some((value, path.to_owned()));
    Ok(())
}

pub(crate) fn convert(ctx: &mut Ctx<'_>, compose_name: &str, value: &Value) -> Result<Converted> {
    let path = join("services", compose_name);
    let name = dns_label(ctx, compose_name, &path, "service")?;
    let map = match value {
        // `web:` with nothing under it: compose rejects it too (no image).
        Value::Null => &Mapping::new(),
        other => yaml::mapping(other, &path)?,
    };
    let mut b = Builder::default();
    for (key, v) in map {
        let key = yaml::key(key, &path)?;
        let p = join(&path, &key);
        let result = one_key(ctx, &mut b, &name, &key, v, &p);
        ctx.check(result);
    }
    if b.profiled {
        ctx.warn(
            join(&path, "profiles"),
            "services with profiles are not deployed (Ferry does not activate profiles)",
        );
        return Ok(Converted::Skipped);
    }
    let image = match b.image {
        Some(image) => image,
        // `build` without `image` is already refused with its explanation.
        None if b.has_build => String::new(),
        None => {
            return Err(invalid(
                &path,
                "`image:` is required: Ferry stacks deploy images from a registry",
            ));
        }
    };
    dedupe_ports(&mut b.ports);
    let (run_as_user, run_as_group) = match b.user {
        Some((u, g)) => (Some(u), g),
        None => (None, None),
    };
    Ok(Converted::Service(Box::new(ComposeService {
        name,
        image,
        command: b.command,
        entrypoint: b.entrypoint,
        environment: b.environment.into_iter().collect(),
        ports: b.ports,
        mounts: b.mounts,
        depends_on: b.depends_on,
        replicas: b.replicas.map(|(r, _)| r),
        cpu_limit: b.cpu_limit.and_then(|(c, _)| c),
        memory_limit: b.memory_limit.map(|(m, _)| m),
        cpu_request: b.cpu_request.and_then(|(c, _)| c),
        memory_request: b.memory_request.map(|(m, _)| m),
        healthcheck_port: b.healthcheck.as_ref().map(|(port, _)| *port),
        healthcheck_path: b.healthcheck.map(|(_, path)| path),
        working_dir: b.working_dir,
        run_as_user,
        run_as_group,
    })))
}

fn one_key(
    ctx: &mut Ctx<'_>,
    b: &mut Builder,
    service: &str,
    key: &str,
    v: &Value,
    p: &str,
) -> Result<()> {
    match key {
        "image" => {
            let image = yaml::string(v, p)?.trim();
            if image.is_empty() || image.contains(char::is_whitespace) {
                return Err(invalid(p, "expected an image reference such as `nginx:1.27`"));
            }
            b.image = Some(image.to_owned());
        }
        "command" => b.command = command(v, p)?,
        "entrypoint" => {
            b.entrypoint = command(v, p)?;
            if b.entrypoint.is_empty() && !v.is_null() {
                ctx.warn(p, "an empty entrypoint cannot clear the image's ENTRYPOINT on Kubernetes; the image's entrypoint is used");
            }
        }
        "environment" => environment(ctx, &mut b.environment, v, p)?,
        "ports" => {
            for (i, item) in yaml::sequence(v, p)?.iter().enumerate() {
                let p = index(p, i);
                let ports = match item {
                    Value::Mapping(m) => vec![port_long(ctx, m, &p)?],
                    other => port_short(ctx, &yaml::scalar(other, &p)?, &p)?,
                };
                b.ports.extend(ports);
            }
        }
        "expose" => {
            for (i, item) in yaml::sequence(v, p)?.iter().enumerate() {
                let p = index(p, i);
                let text = yaml::scalar(item, &p)?;
                let (body, protocol) = split_protocol(&text, &p)?;
                for port in port_range(body, &p)? {
                    b.ports.push(ComposePort { container_port: port, published: None, protocol });
                }
            }
        }
        "volumes" => {
            for (i, item) in yaml::sequence(v, p)?.iter().enumerate() {
                let p = index(p, i);
                let mount = match item {
                    Value::Mapping(m) => volume_long(ctx, service, m, &p)?,
                    other => volume_short(ctx, service, yaml::string(other, &p)?, &p)?,
                };
                b.mounts.extend(mount);
            }
        }
        "depends_on" => b.depends_on = depends_on(ctx, v, p)?,
        "deploy" => deploy(ctx, b, v, p)?,
        "scale" => set_once(&mut b.replicas, replicas(v, p)?, p)?,
        "cpus" => set_once(&mut b.cpu_limit, units::cpus(&yaml::scalar(v, p)?, p)?, p)?,
        "mem_limit" => set_once(&mut b.memory_limit, units::memory(&yaml::scalar(v, p)?, p)?, p)?,
        "mem_reservation" => set_once(&mut b.memory_request, units::memory(&yaml::scalar(v, p)?, p)?, p)?,
        "healthcheck" => b.healthcheck = healthcheck(ctx, v, p)?,
        "working_dir" => {
            let dir = yaml::string(v, p)?;
            if !dir.starts_with('/') {
                return Err(invalid(p, "working_dir must be an absolute path"));
            }
            b.working_dir = Some(dir.to_owned());
        }
        "user" => b.user = user(ctx, v, p)?,
        "profiles" => b.profiled = !yaml::string_list(v, p)?.is_empty(),
        "network_mode" => match yaml::string(v, p)? {
            "bridge" | "default" => ctx.warn(p, "network_mode is ignored: services share the project network"),
            mode => ctx.refuse(p, format!("network_mode `{mode}` is not allowed: services share the project network (no host or shared container networking)")),
        },
        "ipc" => match yaml::string(v, p)? {
            "private" | "shareable" | "" => ctx.warn(p, "ipc is ignored: each pod has its own IPC namespace"),
            mode => ctx.refuse(p, format!("ipc `{mode}` is not allowed: sharing an IPC namespace with the host or another container")),
        },
        "cgroup" => match yaml::string(v, p)? {
            "private" => ctx.warn(p, "cgroup is ignored: containers always get a private cgroup namespace"),
            mode => ctx.refuse(p, format!("cgroup `{mode}` is not allowed")),
        },
        "security_opt" => {
            for (i, opt) in yaml::string_list(v, p)?.iter().enumerate() {
                let p = index(p, i);
                let opt = opt.replace('=', ":");
                if opt == "no-new-privileges" || opt == "no-new-privileges:true" {
                    ctx.warn(p, "no-new-privileges is not applied (it is hardening only; the cluster's pod security settings apply)");
                } else {
                    ctx.refuse(p, format!("security option `{opt}` is not allowed (seccomp, AppArmor and SELinux profiles are set by the cluster)"));
                }
            }
        }
        k if k.starts_with("x-") => {}
        k => {
            if let Some(reason) = refused(k) {
                if k == "build" {
                    b.has_build = true;
                }
                if !yaml::is_empty(v) || k == "pid" || k == "userns_mode" || k == "uts" {
                    ctx.refuse(p, reason);
                }
            } else if let Some(message) = ignored(k) {
                // `init: false`, `tty: false`, `labels: {}`... are the
                // defaults: nothing is being dropped.
                if !yaml::is_empty(v) {
                    ctx.warn(p, message);
                }
            } else {
                return Err(Error::Unsupported { path: p.to_owned() });
            }
        }
    }
    Ok(())
}

/// `command:` / `entrypoint:` as a list, or a string split like compose
/// (shell words; never run through a shell).
fn command(v: &Value, p: &str) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => words::split(s, p),
        Value::Sequence(_) => yaml::string_list(v, p),
        other => yaml::sequence(other, p).map(|_| Vec::new()),
    }
}

fn environment(
    ctx: &mut Ctx<'_>,
    out: &mut BTreeMap<String, String>,
    v: &Value,
    p: &str,
) -> Result<()> {
    let mut entries: Vec<(String, Option<String>, String)> = Vec::new();
    match v {
        Value::Null => {}
        Value::Mapping(map) => {
            for (key, value) in map {
                let key = yaml::key(key, p)?;
                let kp = join(p, &key);
                let value = if value.is_null() {
                    None
                } else {
                    Some(yaml::scalar(value, &kp)?)
                };
                entries.push((key, value, kp));
            }
        }
        Value::Sequence(seq) => {
            for (i, item) in seq.iter().enumerate() {
                let ip = index(p, i);
                let item = yaml::scalar(item, &ip)?;
                match item.split_once('=') {
                    Some((k, val)) => entries.push((k.to_owned(), Some(val.to_owned()), ip)),
                    None => entries.push((item, None, ip)),
                }
            }
        }
        other => {
            yaml::mapping(other, p)?;
        }
    }
    for (key, value, kp) in entries {
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(invalid(
                &kp,
                &format!("invalid environment variable name `{key}`"),
            ));
        }
        // `- KEY` / `KEY:` pass the variable through from the environment.
        let value = match value {
            Some(v) => v,
            None => match ctx.env.get(&key) {
                Some(v) => v.clone(),
                None => {
                    ctx.warn(
                        kp,
                        format!("`{key}` has no value and is not a stack variable, so it is not set in the container"),
                    );
                    continue;
                }
            },
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(invalid(
                &kp,
                &format!("environment variable `{key}` is set twice"),
            ));
        }
    }
    Ok(())
}

fn split_protocol<'a>(text: &'a str, p: &str) -> Result<(&'a str, Protocol)> {
    match text.rsplit_once('/') {
        Some((body, proto)) => Ok((body, protocol(proto, p)?)),
        None => Ok((text, Protocol::Tcp)),
    }
}

fn protocol(text: &str, p: &str) -> Result<Protocol> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(invalid(
            p,
            &format!("protocol `{other}` is not supported (tcp or udp)"),
        )),
    }
}

fn port_number(text: &str, p: &str) -> Result<u16> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(invalid(p, &format!("invalid port `{text}` (1-65535)"))),
    }
}

/// `80` or `8000-8010`, expanded.
fn port_range(text: &str, p: &str) -> Result<Vec<u16>> {
    let Some((start, end)) = text.split_once('-') else {
        return Ok(vec![port_number(text, p)?]);
    };
    let (start, end) = (port_number(start, p)?, port_number(end, p)?);
    if end < start {
        return Err(invalid(p, &format!("port range `{text}` is reversed")));
    }
    if u32::from(end - start) >= MAX_PORT_RANGE {
        return Err(invalid(
            p,
            &format!(
                "port range `{text}` is too large (at most {MAX_PORT_RANGE} ports); list the ports the app needs"
            ),
        ));
    }
    Ok((start..=end).collect())
}

/// Short syntax: `80`, `8080:80`, `127.0.0.1:8080:80/udp`, `[::1]::80`,
/// `8000-8001:8000-8001`.
fn port_short(ctx: &mut Ctx<'_>, text: &str, p: &str) -> Result<Vec<ComposePort>> {
    let (body, protocol) = split_protocol(text.trim(), p)?;
    let (host_ip, rest) = if let Some(v6) = body.strip_prefix('[') {
        let (ip, rest) = v6
            .split_once("]:")
            .ok_or_else(|| invalid(p, &format!("invalid port `{text}`")))?;
        (Some(ip), rest)
    } else {
        match body.matches(':').count() {
            0 | 1 => (None, body),
            2 => body
                .split_once(':')
                .map(|(ip, rest)| (Some(ip), rest))
                .unwrap_or((None, body)),
            _ => return Err(invalid(p, &format!("invalid port `{text}`"))),
        }
    };
    let (published, container) = match rest.split_once(':') {
        Some((published, container)) => (Some(published).filter(|s| !s.is_empty()), container),
        None => (None, rest),
    };
    if let Some(ip) = host_ip.filter(|ip| !ip.is_empty()) {
        ctx.warn(p, format!("the host IP `{ip}` is ignored: Ferry exposes ports through its proxy, not on node interfaces"));
    }
    let containers = port_range(container, p)?;
    let published: Vec<Option<u16>> = match published {
        None => vec![None; containers.len()],
        Some(published) => {
            let published = port_range(published, p)?;
            if published.len() != containers.len() {
                return Err(invalid(
                    p,
                    &format!(
                        "`{text}`: published and container port ranges must have the same length"
                    ),
                ));
            }
            published.into_iter().map(Some).collect()
        }
    };
    Ok(containers
        .into_iter()
        .zip(published)
        .map(|(container_port, published)| ComposePort {
            container_port,
            published,
            protocol,
        })
        .collect())
}

fn port_long(ctx: &mut Ctx<'_>, map: &Mapping, p: &str) -> Result<ComposePort> {
    let mut port = ComposePort {
        container_port: 0,
        published: None,
        protocol: Protocol::Tcp,
    };
    for (key, v) in map {
        let key = yaml::key(key, p)?;
        let kp = join(p, &key);
        match key.as_str() {
            "target" => port.container_port = port_number(&yaml::scalar(v, &kp)?, &kp)?,
            "published" => {
                let text = yaml::scalar(v, &kp)?;
                if !text.is_empty() {
                    port.published = Some(port_number(&text, &kp)?);
                }
            }
            "protocol" => port.protocol = protocol(yaml::string(v, &kp)?, &kp)?,
            "host_ip" => ctx.warn(kp, "the host IP is ignored: Ferry exposes ports through its proxy, not on node interfaces"),
            "mode" => match yaml::string(v, &kp)? {
                "ingress" => {}
                "host" => ctx.warn(kp, "`mode: host` is ignored: ports are exposed through a Kubernetes Service"),
                other => return Err(invalid(&kp, &format!("unknown port mode `{other}`"))),
            },
            "name" | "app_protocol" => ctx.warn(kp, "port names and app_protocol are not applied"),
            k if k.starts_with("x-") => {}
            _ => return Err(Error::Unsupported { path: kp }),
        }
    }
    if port.container_port == 0 {
        return Err(invalid(p, "`target` (the container port) is required"));
    }
    Ok(port)
}

/// Drops exact duplicates and unpublished entries that a published entry of
/// the same port already covers (`expose: [80]` + `ports: ["8080:80"]`).
fn dedupe_ports(ports: &mut Vec<ComposePort>) {
    // Sets, not scans: port ranges expand, so a service can list many ports.
    let key = |p: &ComposePort| (p.container_port, p.protocol == Protocol::Udp);
    let published: BTreeSet<(u16, bool)> = ports
        .iter()
        .filter(|p| p.published.is_some())
        .map(key)
        .collect();
    let mut seen = BTreeSet::new();
    ports.retain(|port| {
        let covered = port.published.is_none() && published.contains(&key(port));
        !covered && seen.insert((key(port), port.published))
    });
}

fn is_host_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with('.')
        || source.starts_with('~')
        || source.contains('\\')
}

fn named_volume(ctx: &mut Ctx<'_>, source: &str, p: &str) -> Result<String> {
    ctx.volumes
        .get(source)
        .map(|v| v.name.clone())
        .ok_or_else(|| {
            invalid(
                p,
                &format!("volume `{source}` is not declared under the top-level `volumes:`"),
            )
        })
}

/// A persistent volume standing in for an anonymous one (`- /data`).
fn anonymous_volume(ctx: &mut Ctx<'_>, service: &str, target: &str, p: &str) -> Result<String> {
    let mut slug = String::new();
    for c in target.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let mut name = format!("{service}-{}", slug.trim_matches('-'));
    name.truncate(63);
    let name = name.trim_end_matches('-').to_owned();
    if ctx.volumes.contains_key(&name) || ctx.volume_names.contains(&name) {
        return Err(invalid(
            p,
            &format!(
                "the anonymous volume at `{target}` would be named `{name}`, which already exists; use a named volume"
            ),
        ));
    }
    ctx.warn(
        p,
        format!("the anonymous volume at `{target}` becomes the persistent volume `{name}`"),
    );
    ctx.add_volume(
        name.clone(),
        NamedVolume {
            name: name.clone(),
            size_gb: None,
        },
    );
    Ok(name)
}

fn check_target(target: &str, p: &str) -> Result<()> {
    if !target.starts_with('/') {
        return Err(invalid(
            p,
            &format!("the mount target `{target}` must be an absolute container path"),
        ));
    }
    Ok(())
}

/// Short syntax: `name:/path[:ro]`, `/path` (anonymous). Host paths are refused.
fn volume_short(
    ctx: &mut Ctx<'_>,
    service: &str,
    text: &str,
    p: &str,
) -> Result<Option<ComposeMount>> {
    let parts: Vec<&str> = text.split(':').collect();
    if text.contains("docker.sock") {
        ctx.refuse(p, DOCKER_SOCKET);
        return Ok(None);
    }
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => {
            return Err(invalid(
                p,
                &format!("invalid volume `{text}` (expected name:/path[:ro])"),
            ));
        }
    };
    if source.is_some_and(is_host_path) {
        ctx.refuse(p, BIND_MOUNT);
        return Ok(None);
    }
    check_target(target, p)?;
    let mut read_only = false;
    for opt in mode.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" | "readonly" => read_only = true,
            "rw" | "nocopy" => {}
            "z" | "Z" => ctx.warn(p, "SELinux relabelling (z/Z) is ignored"),
            other => return Err(invalid(p, &format!("unknown volume option `{other}`"))),
        }
    }
    let volume = match source {
        Some(source) => named_volume(ctx, source, p)?,
        None => anonymous_volume(ctx, service, target, p)?,
    };
    Ok(Some(ComposeMount {
        volume,
        target: target.to_owned(),
        read_only,
        sub_path: None,
    }))
}

fn volume_long(
    ctx: &mut Ctx<'_>,
    service: &str,
    map: &Mapping,
    p: &str,
) -> Result<Option<ComposeMount>> {
    let get = |key: &str| {
        map.get(key)
            .map(|v| yaml::scalar(v, &join(p, key)))
            .transpose()
    };
    let kind = get("type")?.unwrap_or_else(|| "volume".to_owned());
    let source = get("source")?.filter(|s| !s.is_empty());
    let target = get("target")?.ok_or_else(|| invalid(p, "`target` is required"))?;
    if source
        .iter()
        .chain([&target])
        .any(|s| s.contains("docker.sock"))
    {
        ctx.refuse(p, DOCKER_SOCKET);
        return Ok(None);
    }
    match kind.as_str() {
        "volume" => {}
        "bind" => {
            ctx.refuse(join(p, "type"), BIND_MOUNT);
            return Ok(None);
        }
        "tmpfs" => {
            ctx.warn(p, ignored("tmpfs").unwrap_or_default());
            return Ok(None);
        }
        other => {
            ctx.refuse(
                join(p, "type"),
                format!("mount type `{other}` is not supported (only named volumes)"),
            );
            return Ok(None);
        }
    }
    check_target(&target, p)?;
    let mut read_only = false;
    let mut sub_path = None;
    for (key, v) in map {
        let key = yaml::key(key, p)?;
        let kp = join(p, &key);
        match key.as_str() {
            "type" | "source" | "target" => {}
            "read_only" => read_only = yaml::boolean(v, &kp)?,
            "consistency" => {}
            "volume" => {
                for (vk, vv) in yaml::mapping(v, &kp)? {
                    let vk = yaml::key(vk, &kp)?;
                    let vkp = join(&kp, &vk);
                    match vk.as_str() {
                        // Kubernetes never copies image content into volumes.
                        "nocopy" => {}
                        "subpath" => {
                            let sub = yaml::string(vv, &vkp)?;
                            if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                                return Err(invalid(
                                    &vkp,
                                    "subpath must be relative and stay inside the volume",
                                ));
                            }
                            sub_path = Some(sub.to_owned());
                        }
                        _ => return Err(Error::Unsupported { path: vkp }),
                    }
                }
            }
            k if k.starts_with("x-") => {}
            _ => return Err(Error::Unsupported { path: kp }),
        }
    }
    let volume = match source {
        Some(source) if is_host_path(&source) => {
            ctx.refuse(join(p, "source"), BIND_MOUNT);
            return Ok(None);
        }
        Some(source) => named_volume(ctx, &source, p)?,
        None => anonymous_volume(ctx, service, &target, p)?,
    };
    Ok(Some(ComposeMount {
        volume,
        target,
        read_only,
        sub_path,
    }))
}

fn depends_on(ctx: &mut Ctx<'_>, v: &Value, p: &str) -> Result<Vec<String>> {
    let map = match v {
        Value::Mapping(m) => m,
        other => return yaml::string_list(other, p),
    };
    let mut deps = Vec::new();
    for (dep, def) in map {
        let dep = yaml::key(dep, p)?;
        let dp = join(p, &dep);
        if let Value::Mapping(def) = def {
            for (key, value) in def {
                let key = yaml::key(key, &dp)?;
                let kp = join(&dp, &key);
                match key.as_str() {
                    "condition" => match yaml::string(value, &kp)? {
                        "service_started" => {}
                        c @ ("service_healthy" | "service_completed_successfully") => ctx.warn(
                            kp,
                            format!("condition `{c}` is not enforced: Ferry deploys `{dep}` first but does not wait for it; the service must retry until it is reachable"),
                        ),
                        other => return Err(invalid(&kp, &format!("unknown condition `{other}`"))),
                    },
                    "restart" if yaml::boolean(value, &kp)? => {
                        ctx.warn(kp, "`restart: true` is not applied: dependents are not restarted with their dependency")
                    }
                    "restart" => {}
                    // An optional dependency still orders the deployment.
                    "required" => {
                        yaml::boolean(value, &kp)?;
                    }
                    _ => return Err(Error::Unsupported { path: kp }),
                }
            }
        } else if !def.is_null() {
            yaml::mapping(def, &dp)?;
        }
        deps.push(dep);
    }
    Ok(deps)
}

fn replicas(v: &Value, p: &str) -> Result<u32> {
    u32::try_from(yaml::uint(v, p)?).map_err(|_| invalid(p, "too many replicas"))
}

fn deploy(ctx: &mut Ctx<'_>, b: &mut Builder, v: &Value, p: &str) -> Result<()> {
    for (key, value) in yaml::mapping(v, p)? {
        let key = yaml::key(key, p)?;
        let kp = join(p, &key);
        match key.as_str() {
            "replicas" => set_once(&mut b.replicas, replicas(value, &kp)?, &kp)?,
            "mode" => match yaml::string(value, &kp)? {
                "replicated" => {}
                other => ctx.refuse(
                    kp,
                    format!("deploy mode `{other}` is not supported (only replicated services)"),
                ),
            },
            "resources" => resources(ctx, b, value, &kp)?,
            "restart_policy" => ctx.warn(
                kp,
                "restart_policy is ignored: Kubernetes always restarts failed containers",
            ),
            "placement" => ctx.warn(
                kp,
                "placement constraints are ignored: Ferry schedules pods",
            ),
            "update_config" | "rollback_config" => ctx.warn(
                kp,
                "update/rollback settings are ignored: Ferry uses rolling updates",
            ),
            "labels" => ctx.warn(kp, "deploy labels are not applied"),
            "endpoint_mode" => ctx.warn(
                kp,
                "endpoint_mode is ignored: services get a Kubernetes Service",
            ),
            k if k.starts_with("x-") => {}
            _ => return Err(Error::Unsupported { path: kp }),
        }
    }
    Ok(())
}

fn resources(ctx: &mut Ctx<'_>, b: &mut Builder, v: &Value, p: &str) -> Result<()> {
    for (key, value) in yaml::mapping(v, p)? {
        let key = yaml::key(key, p)?;
        let kp = join(p, &key);
        let limits = match key.as_str() {
            "limits" => true,
            "reservations" => false,
            k if k.starts_with("x-") => continue,
            _ => return Err(Error::Unsupported { path: kp }),
        };
        for (rk, rv) in yaml::mapping(value, &kp)? {
            let rk = yaml::key(rk, &kp)?;
            let rp = join(&kp, &rk);
            match rk.as_str() {
                "cpus" => {
                    let cpus = units::cpus(&yaml::scalar(rv, &rp)?, &rp)?;
                    set_once(
                        if limits {
                            &mut b.cpu_limit
                        } else {
                            &mut b.cpu_request
                        },
                        cpus,
                        &rp,
                    )?;
                }
                "memory" => {
                    let memory = units::memory(&yaml::scalar(rv, &rp)?, &rp)?;
                    set_once(
                        if limits {
                            &mut b.memory_limit
                        } else {
                            &mut b.memory_request
                        },
                        memory,
                        &rp,
                    )?;
                }
                "pids" => ctx.warn(rp, "pids limits are not applied"),
                "devices" | "generic_resources" if !yaml::is_empty(rv) => ctx.refuse(
                    rp,
                    "device reservations (GPUs, generic resources) are not supported",
                ),
                "devices" | "generic_resources" => {}
                k if k.starts_with("x-") => {}
                _ => return Err(Error::Unsupported { path: rp }),
            }
        }
    }
    Ok(())
}

/// Maps an HTTP self-check (`curl -f http://localhost:3000/health`,
/// `wget --spider http://127.0.0.1/`) to Ferry's HTTP probe; anything else
/// is reported as not mapped.
fn healthcheck(ctx: &mut Ctx<'_>, v: &Value, p: &str) -> Result<Option<(u16, String)>> {
    let mut test = None;
    let mut disabled = false;
    for (key, value) in yaml::mapping(v, p)? {
        let key = yaml::key(key, p)?;
        let kp = join(p, &key);
        match key.as_str() {
            "test" => test = Some(health_test(value, &kp)?),
            "disable" => disabled = yaml::boolean(value, &kp)?,
            "interval" | "timeout" | "retries" | "start_period" | "start_interval" => {}
            k if k.starts_with("x-") => {}
            _ => return Err(Error::Unsupported { path: kp }),
        }
    }
    let Some(test) = test.filter(|t| !disabled && t.first().map(String::as_str) != Some("NONE"))
    else {
        // Disabled: Ferry adds no probe either.
        return Ok(None);
    };
    if let Some((port, path)) = http_probe(&test) {
        ctx.warn(
            p,
            format!("the healthcheck is mapped to an HTTP GET probe on port {port}, path {path}; interval/timeout/retries use Ferry's defaults"),
        );
        return Ok(Some((port, path)));
    }
    ctx.warn(p, "healthcheck test commands are not mapped: Ferry only runs HTTP/TCP checks (configure one on the service)");
    Ok(None)
}

fn health_test(v: &Value, p: &str) -> Result<Vec<String>> {
    match v {
        Value::String(s) => words::split(s, p),
        _ => {
            let list = yaml::string_list(v, p)?;
            match list.first().map(String::as_str) {
                Some("CMD-SHELL") => words::split(&list[1..].join(" "), p),
                Some("CMD") => Ok(list[1..].to_vec()),
                Some("NONE") => Ok(list),
                _ => Err(invalid(
                    p,
                    "a healthcheck test list must start with CMD, CMD-SHELL or NONE",
                )),
            }
        }
    }
}

fn http_probe(words: &[String]) -> Option<(u16, String)> {
    let end = words
        .iter()
        .position(|w| matches!(w.as_str(), "||" | "&&" | ";" | "|"))
        .unwrap_or(words.len());
    let words = &words[..end];
    let tool = words.first()?.rsplit('/').next()?;
    if tool != "curl" && tool != "wget" {
        return None;
    }
    let urls: Vec<&String> = words.iter().filter(|w| w.starts_with("http://")).collect();
    let [url] = urls.as_slice() else { return None };
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, port.parse().ok().filter(|p| *p > 0)?),
        _ => (authority, 80),
    };
    if !matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0" | "[::1]") {
        return None;
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Some((port, path))
}

/// Numeric `uid[:gid]` maps to the securityContext; user names cannot be
/// resolved by Kubernetes, and silently running as the image's default user
/// instead could be root, so they are refused.
fn user(ctx: &mut Ctx<'_>, v: &Value, p: &str) -> Result<Option<(i64, Option<i64>)>> {
    let text = yaml::scalar(v, p)?;
    let (u, g) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text.as_str(), None),
    };
    let uid = u.parse::<i64>().ok().filter(|n| *n >= 0);
    let gid = g.map(|g| g.parse::<i64>().ok().filter(|n| *n >= 0));
    match (uid, gid) {
        (Some(uid), None) => Ok(Some((uid, None))),
        (Some(uid), Some(Some(gid))) => Ok(Some((uid, Some(gid)))),
        _ => {
            ctx.refuse(p, format!("user `{text}`: Kubernetes needs a numeric UID[:GID] (e.g. \"1000:1000\"); look the name up in the image's /etc/passwd"));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ctx(env: &BTreeMap<String, String>) -> Ctx<'_> {
        Ctx {
            env,
            warnings: Vec::new(),
            refusals: Vec::new(),
            error: None,
            volumes: BTreeMap::new(),
            volume_names: BTreeSet::new(),
        }
    }

    fn short(text: &str) -> Result<Vec<ComposePort>> {
        let env = BTreeMap::new();
        port_short(&mut ctx(&env), text, "p")
    }

    fn port(container_port: u16, published: Option<u16>, protocol: Protocol) -> ComposePort {
        ComposePort {
            container_port,
            published,
            protocol,
        }
    }

    #[test]
    fn short_ports() {
        use Protocol::{Tcp, Udp};
        assert_eq!(short("80").unwrap(), [port(80, None, Tcp)]);
        assert_eq!(short("8080:80").unwrap(), [port(80, Some(8080), Tcp)]);
        assert_eq!(short("53:53/udp").unwrap(), [port(53, Some(53), Udp)]);
        assert_eq!(
            short("127.0.0.1:8080:80/udp").unwrap(),
            [port(80, Some(8080), Udp)]
        );
        assert_eq!(short("127.0.0.1::80").unwrap(), [port(80, None, Tcp)]);
        assert_eq!(short("[::1]:8080:80").unwrap(), [port(80, Some(8080), Tcp)]);
        assert_eq!(
            short("3000-3002").unwrap(),
            [
                port(3000, None, Tcp),
                port(3001, None, Tcp),
                port(3002, None, Tcp)
            ]
        );
        assert_eq!(
            short("9000-9001:8000-8001/tcp").unwrap(),
            [port(8000, Some(9000), Tcp), port(8001, Some(9001), Tcp)]
        );
    }

    #[test]
    fn short_port_errors() {
        for bad in [
            "",
            "0",
            "70000",
            "80/sctp",
            "x:80",
            "8000-9000",
            "8000-8002:80",
            "80:8000-8001",
            "1:2:3:4",
            "90-80",
            "[::1]80",
        ] {
            assert!(short(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn host_ip_is_warned() {
        let env = BTreeMap::new();
        let mut c = ctx(&env);
        port_short(&mut c, "127.0.0.1:8080:80", "services.a.ports[0]").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].path, "services.a.ports[0]");
    }

    #[test]
    fn dedupe() {
        let mut ports = vec![
            port(80, None, Protocol::Tcp),
            port(80, Some(8080), Protocol::Tcp),
            port(80, Some(8080), Protocol::Tcp),
            port(80, None, Protocol::Udp),
            port(80, Some(8081), Protocol::Tcp),
        ];
        dedupe_ports(&mut ports);
        assert_eq!(
            ports,
            [
                port(80, Some(8080), Protocol::Tcp),
                port(80, None, Protocol::Udp),
                port(80, Some(8081), Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn http_probes() {
        let w = |s: &str| words::split(s, "p").unwrap();
        assert_eq!(
            http_probe(&w("curl -f http://localhost:3000/health || exit 1")),
            Some((3000, "/health".into()))
        );
        assert_eq!(
            http_probe(&w("/usr/bin/wget --spider -q http://127.0.0.1")),
            Some((80, "/".into()))
        );
        assert_eq!(
            http_probe(&w("curl -fsS http://localhost:8080?ready=1")),
            Some((8080, "/?ready=1".into()))
        );
        assert_eq!(http_probe(&w("curl -f https://localhost:8443/")), None);
        assert_eq!(http_probe(&w("curl -f http://example.com/")), None);
        assert_eq!(http_probe(&w("pg_isready -U postgres")), None);
        assert_eq!(http_probe(&w("extra-tool && curl http://localhost/")), None);
    }
}
