//! Generic helpers on `serde_yaml_ng::Value`: merge keys, interpolation over
//! the tree, typed accessors whose errors name the path.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Sequence, Value};

use crate::{Error, Result, interpolate::interpolate};

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Applies YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`) bottom-up, so a
/// merged anchor that itself merges another is fully resolved (serde_yaml_ng's
/// own `apply_merge` leaves such chained `<<` keys behind). Keys written in
/// the mapping win over merged ones; among merged mappings the first wins.
pub(crate) fn resolve_merges(value: &mut Value, path: &str) -> Result<()> {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?");
                resolve_merges(child, &join(path, key))?;
            }
            if let Some(merge) = map.shift_remove("<<") {
                let sources = match merge {
                    Value::Mapping(m) => vec![m],
                    Value::Sequence(seq) => seq
                        .into_iter()
                        .map(|v| match v {
                            Value::Mapping(m) => Ok(m),
                            _ => Err(invalid(
                                &join(path, "<<"),
                                "a merge key (`<<`) list must contain only mappings",
                            )),
                        })
                        .collect::<Result<_>>()?,
                    _ => {
                        return Err(invalid(
                            &join(path, "<<"),
                            "a merge key (`<<`) must be a mapping or a list of mappings",
                        ));
                    }
                };
                for source in sources {
                    for (k, v) in source {
                        if !map.contains_key(&k) {
                            map.insert(k, v);
                        }
                    }
                }
            }
            Ok(())
        }
        Value::Sequence(seq) => {
            for (i, child) in seq.iter_mut().enumerate() {
                resolve_merges(child, &index(path, i))?;
            }
            Ok(())
        }
        // Compose-specific tags (`!reset`, `!override`) only make sense when
        // merging several files, which Ferry does not do.
        Value::Tagged(tagged) => Err(invalid(
            path,
            &format!("YAML tag `{}` is not supported", tagged.tag),
        )),
        _ => Ok(()),
    }
}

/// Interpolates every string scalar. `x-*` extension subtrees (except
/// `x-ferry-*`) are skipped:
/// they are ignored anyway, and anchors defined there were already copied to
/// where they are used.
///
/// `budget` is the number of bytes interpolated strings may still produce,
/// shared by the whole tree.
pub(crate) fn interpolate_tree(
    value: &mut Value,
    env: &BTreeMap<String, String>,
    path: &str,
    budget: &mut usize,
) -> Result<()> {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = interpolate(s, env, path, *budget)?;
            *budget = budget.saturating_sub(s.len());
        }
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                let key = scalar_key(key);
                // `x-ferry-*` are Ferry's own settings and are interpolated.
                if !key.starts_with("x-") || key.starts_with("x-ferry-") {
                    interpolate_tree(child, env, &join(path, &key), budget)?;
                }
            }
        }
        Value::Sequence(seq) => {
            for (i, child) in seq.iter_mut().enumerate() {
                interpolate_tree(child, env, &index(path, i), budget)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn scalar_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".to_owned(),
    }
}

pub(crate) fn invalid(path: &str, message: &str) -> Error {
    Error::Invalid {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn expected(path: &str, what: &str, value: &Value) -> Error {
    invalid(path, &format!("expected {what}, found {}", kind(value)))
}

/// A mapping key as a string (compose keys are strings; numbers are
/// accepted, e.g. environment maps with numeric keys are rejected later).
pub(crate) fn key(key: &Value, path: &str) -> Result<String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(scalar_key(key)),
        other => Err(expected(path, "a string key", other)),
    }
}

/// A string, number or boolean, as text.
pub(crate) fn scalar(value: &Value, path: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(expected(path, "a string or number", other)),
    }
}

pub(crate) fn string<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(expected(path, "a string", other)),
    }
}

/// A boolean; strings are accepted because interpolated values are strings.
pub(crate) fn boolean(value: &Value, path: &str) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err(invalid(path, &format!("expected a boolean, found `{s}`"))),
        },
        other => Err(expected(path, "a boolean", other)),
    }
}

/// A non-negative integer; numeric strings are accepted (interpolation).
pub(crate) fn uint(value: &Value, path: &str) -> Result<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid(path, &format!("expected a non-negative integer, found {n}"))),
        Value::String(s) => s.trim().parse().map_err(|_| {
            invalid(
                path,
                &format!("expected a non-negative integer, found `{s}`"),
            )
        }),
        other => Err(expected(path, "a non-negative integer", other)),
    }
}

pub(crate) fn mapping<'a>(value: &'a Value, path: &str) -> Result<&'a Mapping> {
    match value {
        Value::Mapping(m) => Ok(m),
        other => Err(expected(path, "a mapping", other)),
    }
}

pub(crate) fn sequence<'a>(value: &'a Value, path: &str) -> Result<&'a Sequence> {
    match value {
        Value::Sequence(s) => Ok(s),
        other => Err(expected(path, "a list", other)),
    }
}

/// A list of scalars, or a single scalar as a one-item list.
pub(crate) fn string_list(value: &Value, path: &str) -> Result<Vec<String>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(seq) => seq
            .iter()
            .enumerate()
            .map(|(i, v)| scalar(v, &index(path, i)))
            .collect(),
        other => Ok(vec![scalar(other, path)?]),
    }
}

/// Whether a value is "empty" (null, `""`, `[]`, `{}`, `false`): setting a
/// refused key to its empty default is harmless and accepted.
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty() || s.eq_ignore_ascii_case("false"),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn merged(yaml: &str) -> Value {
        let mut v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        resolve_merges(&mut v, "").unwrap();
        v
    }

    #[test]
    fn merge_keys_local_wins_and_chains_resolve() {
        let v = merged(
            "base: &base {a: 1, b: 1}\nmid: &mid {<<: *base, b: 2, c: 2}\nleaf: {<<: *mid, c: 3}\nmulti: {<<: [*mid, {d: 4, a: 9}]}\n",
        );
        assert_eq!(v["leaf"]["a"], Value::from(1));
        assert_eq!(v["leaf"]["b"], Value::from(2));
        assert_eq!(v["leaf"]["c"], Value::from(3));
        assert!(v["leaf"].get("<<").is_none());
        assert_eq!(v["multi"]["a"], Value::from(1));
        assert_eq!(v["multi"]["d"], Value::from(4));
    }

    #[test]
    fn bad_merge_values() {
        let mut v: Value = serde_yaml_ng::from_str("a: {<<: 1}").unwrap();
        assert!(resolve_merges(&mut v, "").is_err());
        let mut v: Value = serde_yaml_ng::from_str("a: !reset null").unwrap();
        assert!(resolve_merges(&mut v, "").is_err());
    }
}
