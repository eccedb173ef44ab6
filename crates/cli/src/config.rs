//! `config.toml` (contexts: server, credentials, default organization and
//! project) and the per-directory `ferry.toml` link.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// The file name of the per-directory link.
pub const LINK_FILE: &str = "ferry.toml";

/// One server and what the CLI remembers about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Context {
    /// `https://host:port` or `http://…` (plaintext, local use).
    pub server: String,
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Session or API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who logged in (display only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Trusted-device token from a second-factor login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
    /// Default organization id (`ferry org use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Default project id (`ferry project use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// The whole `config.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// The context used when `--context` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// The configuration directory: `FERRY_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/ferry`, else `~/.config/ferry`.
pub fn config_dir() -> Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("FERRY_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("ferry"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("ferry")),
        None => Err(CliError::usage(
            "cannot find a configuration directory: set FERRY_CONFIG_DIR or HOME",
        )),
    }
}

/// `config.toml` in [`config_dir`].
pub fn config_path() -> Result<PathBuf> {
    Ok(config_dir()?.join("config.toml"))
}

impl Config {
    /// Reads `path`; a missing file is an empty config. A file that group or
    /// others can read is refused (it holds credentials).
    pub fn load(path: &Path) -> Result<Config> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(CliError::msg(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CliError::msg(format!(
                "{} is readable by other users (mode {mode:03o}) and holds credentials; refusing to read it",
                path.display()
            ))
            .hint(format!("chmod 600 {}", path.display())));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::msg(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| CliError::msg(format!("{} is not valid: {e}", path.display())))
    }

    /// Writes `path` with mode 0600 (directory 0700), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self)
            .map_err(|e| CliError::msg(format!("cannot encode the configuration: {e}")))?;
        write_private(path, text.as_bytes())
    }

    /// The context named `name`, or the current one.
    pub fn context(&self, name: Option<&str>) -> Option<(&str, &Context)> {
        let name = name.or(self.current_context.as_deref())?;
        self.contexts
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// Writes `bytes` to `path` through a 0600 temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| CliError::msg(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// `ferry.toml`: links a directory to a project (and a service).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Link {
    /// Organization id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Service id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Link {
    /// The nearest `ferry.toml` in `dir` or its parents.
    pub fn find(dir: &Path) -> Result<Option<(PathBuf, Link)>> {
        for d in dir.ancestors() {
            let path = d.join(LINK_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let link = toml::from_str(&text).map_err(|e| {
                        CliError::msg(format!("{} is not valid: {e}", path.display()))
                    })?;
                    return Ok(Some((path, link)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CliError::msg(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Writes `dir/ferry.toml`.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(LINK_FILE);
        let text = format!(
            "# Links this directory to a Ferry project (written by `ferry link`).\n{}",
            toml::to_string(self).map_err(|e| CliError::msg(e.to_string()))?
        );
        std::fs::write(&path, text)
            .map_err(|e| CliError::msg(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_mode_0600_and_refuses_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let mut config = Config {
            current_context: Some("dev".into()),
            ..Config::default()
        };
        config.contexts.insert(
            "dev".into(),
            Context {
                server: "http://127.0.0.1:50051".into(),
                token: Some("fs_x".into()),
                ..Context::default()
            },
        );
        config.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Config::load(&path).unwrap(), config);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.hint.unwrap().contains("chmod 600"));
    }
}
