//! Docker Compose variable interpolation (`$VAR`, `${VAR:-default}`, ...).
//!
//! Applied to string scalars after YAML parsing, like compose-go does; keys
//! are never interpolated.

use std::collections::BTreeMap;

use crate::bounds::{MAX_INTERPOLATION_DEPTH, MAX_TEXT_BYTES};
use crate::{Error, Result};

/// Interpolates one string found at `path`, producing at most `limit` bytes.
///
/// Unlike `docker compose` (which warns and substitutes an empty string), an
/// unset variable without a default is an error: a stack silently deployed
/// with an empty password or URL is worse than a failed parse.
///
/// Work is bounded: variables come from the tenant too, so `$BIG$BIG...`
/// could otherwise produce gigabytes, and nested defaults recurse.
pub(crate) fn interpolate(
    input: &str,
    env: &BTreeMap<String, String>,
    path: &str,
    limit: usize,
) -> Result<String> {
    Interpolation { env, path, limit }.run(input, 0)
}

struct Interpolation<'a> {
    env: &'a BTreeMap<String, String>,
    path: &'a str,
    /// Most bytes the result (and each nested default) may have.
    limit: usize,
}

impl Interpolation<'_> {
    fn push(&self, out: &mut String, text: &str) -> Result<()> {
        if out.len().saturating_add(text.len()) > self.limit {
            return Err(Error::Limit(format!(
                "{}: variable interpolation produces more than {} MiB of text in the compose file",
                self.path,
                MAX_TEXT_BYTES / (1024 * 1024)
            )));
        }
        out.push_str(text);
        Ok(())
    }

    /// `depth` counts the `${...:-...}` operands being interpolated.
    fn run(&self, input: &str, depth: usize) -> Result<String> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(Error::Limit(format!(
                "{}: `${{VAR:-default}}` defaults nest more than {MAX_INTERPOLATION_DEPTH} levels",
                self.path
            )));
        }
        let path = self.path;
        let mut out = String::with_capacity(input.len().min(self.limit));
        let mut rest = input;
        while let Some(pos) = rest.find('$') {
            self.push(&mut out, &rest[..pos])?;
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                self.push(&mut out, "$")?;
                rest = tail;
            } else if let Some(body_and_tail) = after.strip_prefix('{') {
                let end = matching_brace(body_and_tail).ok_or_else(|| Error::Interpolation {
                    path: path.to_owned(),
                    message: format!("unterminated `${{` in `{input}`"),
                })?;
                let value = self.braced(&body_and_tail[..end], depth)?;
                self.push(&mut out, &value)?;
                rest = &body_and_tail[end + 1..];
            } else {
                let len = name_len(after);
                if len == 0 {
                    return Err(Error::Interpolation {
                        path: path.to_owned(),
                        message: format!(
                            "invalid `$` in `{input}` (write `$$` for a literal dollar sign)"
                        ),
                    });
                }
                let name = &after[..len];
                self.push(&mut out, lookup(name, self.env, path)?)?;
                rest = &after[len..];
            }
        }
        self.push(&mut out, rest)?;
        Ok(out)
    }
}
/// Length of the variable name at the start of `s` (0 when there is none).
fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Byte index of the `}` closing a `${` whose body starts `s`; nested `${...}`
/// in defaults are skipped over.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn lookup<'a>(name: &str, env: &'a BTreeMap<String, String>, path: &str) -> Result<&'a str> {
    env.get(name)
        .map(String::as_str)
        .ok_or_else(|| Error::UnsetVariable {
            name: name.to_owned(),
            path: path.to_owned(),
        })
}

impl Interpolation<'_> {
    fn braced(&self, body: &str, depth: usize) -> Result<String> {
        let (env, path) = (self.env, self.path);
        let len = name_len(body);
        let name = &body[..len];
        let op = &body[len..];
        if name.is_empty() {
            return Err(Error::Interpolation {
                path: path.to_owned(),
                message: format!("invalid variable name in `${{{body}}}`"),
            });
        }
        let value = env.get(name);
        let set = value.is_some();
        let non_empty = value.is_some_and(|v| !v.is_empty());
        // Operands are interpolated lazily: a default that is not used may name
        // an unset variable without failing, as in compose.
        let operand = |text: &str| self.run(text, depth + 1);
        let required = |text: &str| -> Result<String> {
            let message = operand(text)?;
            Err(Error::RequiredVariable {
                name: name.to_owned(),
                path: path.to_owned(),
                message: if message.is_empty() {
                    "required variable is not set".to_owned()
                } else {
                    message
                },
            })
        };
        let current = || value.cloned().unwrap_or_default();
        if op.is_empty() {
            return lookup(name, env, path).map(str::to_owned);
        }
        if let Some(default) = op.strip_prefix(":-") {
            return if non_empty {
                Ok(current())
            } else {
                operand(default)
            };
        }
        if let Some(default) = op.strip_prefix('-') {
            return if set { Ok(current()) } else { operand(default) };
        }
        if let Some(message) = op.strip_prefix(":?") {
            return if non_empty {
                Ok(current())
            } else {
                required(message)
            };
        }
        if let Some(message) = op.strip_prefix('?') {
            return if set {
                Ok(current())
            } else {
                required(message)
            };
        }
        if let Some(alt) = op.strip_prefix(":+") {
            return if non_empty {
                operand(alt)
            } else {
                Ok(String::new())
            };
        }
        if let Some(alt) = op.strip_prefix('+') {
            return if set { operand(alt) } else { Ok(String::new()) };
        }
        Err(Error::Interpolation {
            path: path.to_owned(),
            message: format!("invalid interpolation `${{{body}}}`"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("HOST", "example.com"),
            ("EMPTY", ""),
            ("PORT", "8080"),
            ("_X1", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn ok(s: &str) -> String {
        interpolate(s, &env(), "p", MAX_TEXT_BYTES).unwrap()
    }

    fn err(s: &str) -> Error {
        interpolate(s, &env(), "p", MAX_TEXT_BYTES).unwrap_err()
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(ok("no vars"), "no vars");
        assert_eq!(ok("$HOST"), "example.com");
        assert_eq!(ok("http://${HOST}:$PORT/x"), "http://example.com:8080/x");
        assert_eq!(ok("$HOST.org"), "example.com.org");
        assert_eq!(ok("${_X1}$_X1"), "xx");
        assert_eq!(ok("${EMPTY}"), "");
    }

    #[test]
    fn dollar_escape() {
        assert_eq!(ok("$$HOST"), "$HOST");
        assert_eq!(ok("a$$b$$$$"), "a$b$$");
        assert_eq!(ok("echo $${HOST}"), "echo ${HOST}");
    }

    #[test]
    fn defaults() {
        assert_eq!(ok("${MISSING:-fallback}"), "fallback");
        assert_eq!(ok("${MISSING-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY-fallback}"), "");
        assert_eq!(ok("${HOST:-fallback}"), "example.com");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${MISSING:-a b:c}"), "a b:c");
        assert_eq!(ok("${MISSING:-${HOST}}"), "example.com");
        assert_eq!(ok("${MISSING:-${ALSO:-deep}}"), "deep");
        // An unused default may reference an unset variable.
        assert_eq!(ok("${HOST:-$NOPE}"), "example.com");
    }

    #[test]
    fn alternatives() {
        assert_eq!(ok("${HOST:+set}"), "set");
        assert_eq!(ok("${EMPTY:+set}"), "");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("${MISSING+set}"), "");
    }

    #[test]
    fn required() {
        assert_eq!(ok("${HOST:?need it}"), "example.com");
        match err("${DB_PASSWORD:?set a password}") {
            Error::RequiredVariable {
                name,
                path,
                message,
            } => {
                assert_eq!(
                    (name.as_str(), path.as_str(), message.as_str()),
                    ("DB_PASSWORD", "p", "set a password")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(err("${EMPTY:?x}"), Error::RequiredVariable { .. }));
        assert_eq!(ok("${EMPTY?x}"), "");
        assert!(
            matches!(err("${MISSING?}"), Error::RequiredVariable { message, .. } if message == "required variable is not set")
        );
    }

    #[test]
    fn unset_is_an_error_naming_variable_and_path() {
        let e = interpolate(
            "postgres://${DB_USER}@db",
            &env(),
            "services.app.environment.DATABASE_URL",
            MAX_TEXT_BYTES,
        )
        .unwrap_err();
        assert_eq!(
            e,
            Error::UnsetVariable {
                name: "DB_USER".into(),
                path: "services.app.environment.DATABASE_URL".into()
            }
        );
        assert!(e.to_string().contains("DB_USER"));
        assert!(
            e.to_string()
                .contains("services.app.environment.DATABASE_URL")
        );
        assert!(matches!(err("$MISSING"), Error::UnsetVariable { name, .. } if name == "MISSING"));
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(err("${HOST"), Error::Interpolation { .. }));
        assert!(matches!(err("cost: 5$"), Error::Interpolation { .. }));
        assert!(matches!(err("$1"), Error::Interpolation { .. }));
        assert!(matches!(err("${}"), Error::Interpolation { .. }));
        assert!(matches!(err("${HOST!x}"), Error::Interpolation { .. }));
        assert!(matches!(err("${1ABC}"), Error::Interpolation { .. }));
    }

    #[test]
    fn non_ascii_is_preserved() {
        assert_eq!(ok("héllo ${HOST} ✓"), "héllo example.com ✓");
    }
}
