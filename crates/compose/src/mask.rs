//! A copy of a compose file for people who may not read its environment
//! values: [`mask_environment`].

use serde_yaml_ng::{Mapping, Value};

use crate::{Error, Result, bounds, yaml};

/// What hidden values read as.
pub const MASK: &str = "***";

/// `yaml` re-serialised with its environment values hidden:
///
/// - under `services.*.environment`, the value of every key `is_secret`
///   says is secret becomes `***` (mapping form, and `KEY=VALUE` in the
///   list form);
/// - the value of every `x-*` extension key (except `x-ferry-*`) becomes
///   `***`: Ferry ignores them, and anchors defined there may hold the
///   literal values services reuse.
///
/// Merge keys are resolved and aliases expanded first, so a value reached
/// through an anchor is hidden where it is used too. Comments and layout
/// are not kept. Fails like [`crate::parse`] on a file it refuses to load.
pub fn mask_environment(yaml: &str, is_secret: impl Fn(&str) -> bool) -> Result<String> {
    let mut root = bounds::load(yaml)?;
    yaml::resolve_merges(&mut root, "")?;
    mask_extensions(&mut root);
    if let Some(Value::Mapping(services)) = root.get_mut("services") {
        for service in services.values_mut() {
            if let Some(env) = service.get_mut("environment") {
                mask_env(env, &is_secret);
            }
        }
    }
    serde_yaml_ng::to_string(&root).map_err(|e| Error::Yaml(e.to_string()))
}

/// Replaces the value of every `x-*` key (but `x-ferry-*`) at any depth.
fn mask_extensions(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                let key = key.as_str().unwrap_or_default();
                if key.starts_with("x-") && !key.starts_with("x-ferry-") {
                    *child = Value::String(MASK.into());
                } else {
                    mask_extensions(child);
                }
            }
        }
        Value::Sequence(seq) => seq.iter_mut().for_each(mask_extensions),
        _ => {}
    }
}

/// Hides secret values of one `environment` (mapping or list form).
fn mask_env(env: &mut Value, is_secret: &impl Fn(&str) -> bool) {
    match env {
        Value::Mapping(map) => mask_env_map(map, is_secret),
        Value::Sequence(items) => {
            for item in items {
                let Value::String(entry) = item else {
                    continue;
                };
                if let Some((key, _)) = entry.split_once('=')
                    && is_secret(key)
                {
                    *entry = format!("{key}={MASK}");
                }
            }
        }
        _ => {}
    }
}

fn mask_env_map(map: &mut Mapping, is_secret: &impl Fn(&str) -> bool) {
    for (key, value) in map.iter_mut() {
        // `KEY:` with no value passes a stack variable through: nothing to hide.
        if value.is_null() {
            continue;
        }
        let secret = match key {
            Value::String(k) => is_secret(k),
            // A non-string key is not a valid name; hide its value anyway.
            _ => true,
        };
        if secret {
            *value = Value::String(MASK.into());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn password_only(key: &str) -> bool {
        key.contains("PASSWORD")
    }

    #[test]
    fn secret_values_are_hidden_in_both_forms() {
        let file = "services:\n  a:\n    image: x\n    environment:\n      DB_PASSWORD: hunter2\n      TZ: UTC\n      PASSED_PASSWORD:\n  b:\n    image: y\n    environment:\n      - ADMIN_PASSWORD=swordfish\n      - LOG_LEVEL=info\n      - ONLY_KEY\n";
        let masked = mask_environment(file, password_only).unwrap();
        assert!(
            !masked.contains("hunter2") && !masked.contains("swordfish"),
            "{masked}"
        );
        assert!(masked.contains("DB_PASSWORD: '***'"), "{masked}");
        assert!(masked.contains("ADMIN_PASSWORD=***"), "{masked}");
        assert!(
            masked.contains("TZ: UTC") && masked.contains("LOG_LEVEL=info"),
            "{masked}"
        );
        assert!(
            masked.contains("ONLY_KEY") && masked.contains("PASSED_PASSWORD"),
            "{masked}"
        );
        assert!(masked.contains("image: x"), "{masked}");
    }

    #[test]
    fn anchors_and_extensions_are_hidden_where_defined_and_used() {
        let file = "x-env: &env\n  DB_PASSWORD: hunter2\nx-ferry-size-gb: 3\nservices:\n  a:\n    image: x\n    environment: *env\n  b:\n    image: y\n    environment:\n      <<: *env\n      TZ: UTC\n";
        let masked = mask_environment(file, password_only).unwrap();
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(masked.contains("x-env: '***'"), "{masked}");
        assert!(masked.contains("x-ferry-size-gb: 3"), "{masked}");
        assert!(masked.contains("TZ: UTC"), "{masked}");
    }

    #[test]
    fn files_it_cannot_load_are_errors() {
        assert!(mask_environment("services: [", password_only).is_err());
        assert!(mask_environment("a: !reset {}", password_only).is_err());
    }
}
