//! Request paths as routing sees them, normalised once so that a prefix
//! route and the upstream behind it agree on which resource was asked for:
//! `/public/../admin` is `/admin`, not something under `/public`. The
//! upstream receives this same path (the query is left as sent).
//!
//! Normalised:
//! - percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2:
//!   `%2e` is `.`, `%61` is `a`); other escapes are kept, in uppercase;
//! - dot segments are resolved (RFC 3986 §5.2.4); `..` stops at `/`;
//! - empty segments are merged (`//admin` is `/admin`), as nginx does.
//!
//! Refused (400), because servers disagree about what they mean:
//! - `%2f` and `%5c` (encoded `/` and `\`): decoding them would move
//!   segment boundaries, keeping them lets a server that decodes first
//!   climb out of a prefix;
//! - a raw `\`, which some servers read as `/`;
//! - `.;x` and `..;x` segments, which servers that strip `;` parameters
//!   (Tomcat) read as dot segments;
//! - malformed escapes, and targets that are not a path (`*`, CONNECT's
//!   `host:port`).
//!
//! A path without `%`, `\`, `//` or dot segments, the common case, is
//! already normal and is borrowed as is.

use std::borrow::Cow;

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Why a request's path is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAPath,
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    #[error("encoded / or \\ (%2F, %5C) in the path")]
    EncodedSeparator,
    #[error("backslash in the path")]
    Backslash,
    #[error("dot segment with parameters (.; or ..;) in the path")]
    DotWithParameters,
}

/// The normal form of `path` (see the module docs); borrowed when `path`
/// already is.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_slow(path).map(Cow::Owned)
}

/// One pass over the bytes, no allocation: nothing to decode, merge or
/// resolve. (A byte loop with a table: `split` and chained comparisons cost
/// several times more on short paths.)
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if !PATH_SPECIAL[usize::from(*b)] {
            continue;
        }
        match b {
            b'/' => match bytes.get(i + 1) {
                Some(b'/') => return false,
                Some(b'.') => {
                    let rest = &path[i + 1..];
                    let segment = rest.split('/').next().unwrap_or(rest);
                    if !matches!(classify(segment), Segment::Name) {
                        return false;
                    }
                }
                _ => {}
            },
            // `%` or `\`.
            _ => return false,
        }
    }
    true
}

/// The bytes [`is_normal`] looks at: `/`, `%`, `\`.
static PATH_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b'/' as usize] = true;
    table[b'%' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

fn normalize_slow(path: &str) -> Result<String, PathError> {
    let decoded = decode_unreserved(path)?;
    let mut kept: Vec<&str> = Vec::new();
    // Whether the path ends in a directory: `/a/`, `/a/.`, `/a/b/..`.
    let mut directory = false;
    let mut segments = decoded[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let named = match classify(segment) {
            Segment::DotWithParameters => return Err(PathError::DotWithParameters),
            Segment::Current => false,
            Segment::Parent => {
                kept.pop();
                false
            }
            Segment::Name if segment.is_empty() => false,
            Segment::Name => {
                kept.push(segment);
                true
            }
        };
        directory = !named && segments.peek().is_none();
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if directory || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// What a segment is to a server resolving dot segments.
enum Segment {
    Name,
    Current,
    Parent,
    DotWithParameters,
}

fn classify(segment: &str) -> Segment {
    if !segment.starts_with('.') {
        return Segment::Name;
    }
    match segment.split_once(';') {
        None if segment == "." => Segment::Current,
        None if segment == ".." => Segment::Parent,
        Some(("." | "..", _)) => Segment::DotWithParameters,
        _ => Segment::Name,
    }
}

/// Decodes escaped unreserved characters, uppercases the other escapes
/// and refuses encoded separators, raw backslashes and broken escapes.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let digit = |at: usize| bytes.get(at).and_then(|b| hex_value(*b));
                let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
                    return Err(PathError::BadEscape);
                };
                match (hi << 4) | lo {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b if is_unreserved(b) => out.push(b),
                    _ => out.extend_from_slice(&[
                        b'%',
                        HEX_UPPER[usize::from(hi)],
                        HEX_UPPER[usize::from(lo)],
                    ]),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII was decoded; the rest is copied from a `str`.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/index.html",
            "/a/b/",
            "/.well-known/acme-challenge/x",
            "/a/...",
            "/a/.b/c..d",
            "/a;b=c/d",
            "/caf\u{e9}",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_are_resolved_and_slashes_merged() {
        for (path, normal) in [
            ("/public/../admin", "/admin"),
            ("/public/./x", "/public/x"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/.", "/"),
            ("//admin", "/admin"),
            ("/a//b///c/", "/a/b/c/"),
            ("/a/./../b/./c", "/b/c"),
        ] {
            assert_eq!(normalize(path).unwrap(), normal, "{path}");
        }
    }

    #[test]
    fn escaped_unreserved_characters_are_decoded_before_dots_resolve() {
        for (path, normal) in [
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/%2e/x", "/public/x"),
            ("/%61dmin", "/admin"),
            ("/%7Euser/a%2Db", "/~user/a-b"),
            // Reserved and non-ASCII escapes stay, uppercased.
            ("/a%3fb/caf%c3%a9", "/a%3Fb/caf%C3%A9"),
            ("/a%2ab", "/a%2Ab"),
            // Decoded once: %25 (the `%`) is not unreserved.
            ("/%252e%252e/x", "/%252e%252e/x"),
        ] {
            assert_eq!(normalize(path).unwrap(), normal, "{path}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, err) in [
            ("", PathError::NotAPath),
            ("*", PathError::NotAPath),
            ("a.test:443", PathError::NotAPath),
            ("/public/%2fadmin", PathError::EncodedSeparator),
            ("/public/%2F..%2Fadmin", PathError::EncodedSeparator),
            ("/public/%5c..%5cadmin", PathError::EncodedSeparator),
            ("/public/%5C", PathError::EncodedSeparator),
            ("/public\\..\\admin", PathError::Backslash),
            ("/public/..;/admin", PathError::DotWithParameters),
            ("/public/.;x/admin", PathError::DotWithParameters),
            ("/public/%2e%2e;/admin", PathError::DotWithParameters),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
        ] {
            assert_eq!(normalize(path), Err(err), "{path}");
        }
    }

    #[test]
    fn normal_forms_are_fixed_points() {
        for path in ["/public/%2e%2e/admin", "/a//b/../c/", "/x%c3%a9/%7e"] {
            let once = normalize(path).unwrap().into_owned();
            assert_eq!(normalize(&once).unwrap(), once, "{path}");
        }
    }
}
