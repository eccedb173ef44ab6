//! Field validation at the API edge: every error names the field.

use ferry_k8s::validate::is_label;
use ferry_proto::ferry::v1 as pb;

use crate::{Error, Result};

fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("{field}: {why}"))
}

/// A lower-case DNS name of at least two labels (route host names).
pub fn hostname(field: &str, value: &str) -> Result<String> {
    let v = value.trim().trim_end_matches('.');
    if v.len() <= 253 && v.split('.').count() >= 2 && v.split('.').all(|l| is_label(l, 63)) {
        Ok(v.to_owned())
    } else {
        Err(invalid(
            field,
            "must be a lower-case host name like shop.example.com",
        ))
    }
}

/// A DNS-1123 label (namespace, object and port names).
pub fn dns_label(field: &str, value: &str, max: usize) -> Result<()> {
    if is_label(value, max) {
        Ok(())
    } else {
        Err(invalid(
            field,
            &format!(
                "must be 1 to {max} lower-case letters, digits or '-', starting and ending with a letter or digit"
            ),
        ))
    }
}

/// A display name: 1 to 100 characters, no control characters.
pub fn display_name(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err(invalid(field, "must be 1 to 100 characters"));
    }
    Ok(v.to_owned())
}

/// A slug derived from a display name (`My App` → `my-app`).
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    out.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// An image reference: `[registry/]repo[:tag][@digest]`, no whitespace.
pub fn image(field: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 512
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':' | b'@')
        })
        && !value.starts_with(['/', ':', '@', '-', '.'])
        && !value.ends_with([':', '/', '@']);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be an image reference like ghcr.io/acme/web:1.4",
        ))
    }
}

/// Argv entries (command/args): at most 256, each at most 4 KiB, no NUL.
pub fn argv(field: &str, values: &[String]) -> Result<()> {
    if values.len() > 256 {
        return Err(invalid(field, "at most 256 entries"));
    }
    if values.iter().any(|v| v.len() > 4096 || v.contains('\0')) {
        return Err(invalid(
            field,
            "entries must be at most 4096 bytes, without NUL",
        ));
    }
    Ok(())
}

/// A CPU quantity: `250m`, `1`, `1.5`.
pub fn cpu(field: &str, value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if ferry_k8s::validate::is_cpu(v) {
        Ok(Some(v.to_owned()))
    } else {
        Err(invalid(field, "must be a CPU quantity like 250m or 1.5"))
    }
}

/// A memory quantity: `512Mi`, `1Gi`, `1G`, `1048576`.
pub fn memory(field: &str, value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if ferry_k8s::validate::is_memory(v) {
        Ok(Some(v.to_owned()))
    } else {
        Err(invalid(
            field,
            "must be a memory quantity like 512Mi or 1Gi",
        ))
    }
}

/// Validated resources (each quantity optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quantities {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

pub fn resources(r: Option<&pb::Resources>) -> Result<Quantities> {
    let Some(r) = r else {
        return Ok(Quantities::default());
    };
    Ok(Quantities {
        cpu_request: cpu("resources.cpuRequest", &r.cpu_request)?,
        cpu_limit: cpu("resources.cpuLimit", &r.cpu_limit)?,
        memory_request: memory("resources.memoryRequest", &r.memory_request)?,
        memory_limit: memory("resources.memoryLimit", &r.memory_limit)?,
    })
}

pub fn replicas(field: &str, value: i32) -> Result<i32> {
    if (0..=100).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, "must be between 0 and 100"))
    }
}

/// An environment variable name.
pub fn env_key(field: &str, key: &str) -> Result<()> {
    let mut bytes = key.bytes();
    let ok = key.len() <= 255
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must match ^[A-Za-z_][A-Za-z0-9_]*$ (at most 255)",
        ))
    }
}

pub fn env_value(field: &str, value: &str) -> Result<()> {
    if value.len() > 64 * 1024 || value.contains('\0') {
        return Err(invalid(field, "must be at most 64 KiB, without NUL"));
    }
    Ok(())
}

/// An absolute container path without `..` segments.
pub fn mount_path(field: &str, path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && path.len() <= 1024
        && !path.split('/').any(|s| s == "..")
        && !path.contains('\0')
        && path != "/";
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must be an absolute path (not /, no '..')"))
    }
}

/// A relative sub-path inside a volume.
pub fn sub_path(field: &str, path: &str) -> Result<Option<String>> {
    if path.is_empty() {
        return Ok(None);
    }
    if path.starts_with('/') || path.split('/').any(|s| s == "..") || path.len() > 1024 {
        return Err(invalid(field, "must be a relative path without '..'"));
    }
    Ok(Some(path.to_owned()))
}

pub fn port_number(field: &str, port: u32) -> Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid(field, "must be between 1 and 65535"))
}

/// A validated port list: unique (port, protocol) and unique names.
pub fn ports(ports: &[pb::Port]) -> Result<Vec<(Option<String>, u16, pb::Protocol)>> {
    if ports.len() > 64 {
        return Err(invalid("ports", "at most 64"));
    }
    let mut out: Vec<(Option<String>, u16, pb::Protocol)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let port = port_number(&format!("ports[{i}].containerPort"), p.container_port)?;
        let protocol = match pb::Protocol::try_from(p.protocol) {
            Ok(pb::Protocol::Udp) => pb::Protocol::Udp,
            Ok(pb::Protocol::Tcp | pb::Protocol::Unspecified) => pb::Protocol::Tcp,
            Err(_) => {
                return Err(invalid(
                    &format!("ports[{i}].protocol"),
                    "must be TCP or UDP",
                ));
            }
        };
        let name = if p.name.is_empty() {
            None
        } else {
            dns_label(&format!("ports[{i}].name"), &p.name, 15)?;
            Some(p.name.clone())
        };
        if out
            .iter()
            .any(|(n, c, pr)| (*c == port && *pr == protocol) || (name.is_some() && *n == name))
        {
            return Err(invalid(&format!("ports[{i}]"), "duplicate port or name"));
        }
        out.push((name, port, protocol));
    }
    Ok(out)
}

/// A health check, or `None` when absent/empty.
pub fn health_check(h: Option<&pb::HealthCheck>) -> Result<Option<(Option<String>, u16, i32)>> {
    let Some(h) = h else { return Ok(None) };
    if h.path.is_empty() && h.port == 0 {
        return Ok(None);
    }
    let port = port_number("healthCheck.port", h.port)?;
    let path = if h.path.is_empty() {
        None
    } else if h.path.starts_with('/')
        && h.path.len() <= 1024
        && !h.path.contains(char::is_whitespace)
    {
        Some(h.path.clone())
    } else {
        return Err(invalid(
            "healthCheck.path",
            "must start with '/' and contain no spaces",
        ));
    };
    let interval = if h.interval_seconds == 0 {
        30
    } else {
        h.interval_seconds
    };
    if !(1..=3600).contains(&interval) {
        return Err(invalid(
            "healthCheck.intervalSeconds",
            "must be between 1 and 3600",
        ));
    }
    Ok(Some((path, port, interval)))
}

pub fn size_gb(field: &str, value: i32) -> Result<i32> {
    if (1..=16384).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, "must be between 1 and 16384"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_slugs() {
        assert!(dns_label("n", "web-1", 63).is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(dns_label("n", bad, 63).is_err(), "{bad}");
        }
        assert_eq!(slugify("My  App!"), "my-app");
        assert_eq!(slugify("  --Ümlaut 2 "), "mlaut-2");
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu("c", "250m").unwrap().as_deref(), Some("250m"));
        assert!(cpu("c", "1.5").is_ok());
        assert!(cpu("c", "1.").is_err());
        assert!(cpu("c", "abc").is_err());
        assert!(memory("m", "512Mi").is_ok());
        assert!(memory("m", "1G").is_ok());
        assert!(memory("m", "1Gb").is_err());
        assert_eq!(memory("m", "").unwrap(), None);
    }

    #[test]
    fn paths_images_keys() {
        assert!(mount_path("p", "/data").is_ok());
        for bad in ["data", "/", "/a/../etc"] {
            assert!(mount_path("p", bad).is_err(), "{bad}");
        }
        assert!(image("i", "ghcr.io/acme/web:1.4").is_ok());
        assert!(image("i", "nginx@sha256:abc").is_ok());
        for bad in ["", "nginx latest", "; rm -rf /", "$(x)"] {
            assert!(image("i", bad).is_err(), "{bad}");
        }
        assert!(env_key("k", "DATABASE_URL").is_ok());
        assert!(env_key("k", "1X").is_err());
        assert!(env_key("k", "A-B").is_err());
    }
}
