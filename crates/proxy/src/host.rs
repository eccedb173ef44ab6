//! The host a request is routed by, checked once, and the same host sent
//! upstream (`Host`, `X-Forwarded-Host`, the h2c `:authority`): the proxy
//! and the upstream never disagree about which site was asked for.
//!
//! A request names its host in the `Host` header, in an absolute-form
//! target (`GET http://a.test/ HTTP/1.1`) or in HTTP/2's `:authority`. When
//! it names it twice, both must be the same host and port (an absent port
//! is the listener scheme's default); otherwise routing would follow one and
//! the upstream could read the other. The target wins when both agree
//! (RFC 9112 §3.2.2).
//!
//! A host is a DNS-style name (letters, digits, `-`, `_`, non-empty labels)
//! or a bracketed IPv6 literal, optionally followed by `:port` (1–65535).
//! Anything else (userinfo, an empty or second port, other characters) is
//! refused rather than guessed at.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv6Addr;

use hyper::Request;
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::Scheme;

/// Longest host name (RFC 1035), without the port.
const MAX_NAME: usize = 253;
/// Longest label of a host name (RFC 1035).
const MAX_LABEL: usize = 63;

/// Why a request's host is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("no Host header")]
    Missing,
    /// RFC 9112 §3.2.
    #[error("more than one Host header")]
    Repeated,
    #[error("the request target and the Host header name different hosts")]
    Conflict,
    #[error("malformed host (expected name[:port])")]
    Malformed,
}

/// A checked host: a name and an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host<'a> {
    /// The text as received.
    raw: &'a str,
    /// Lowercase, without the port or a trailing dot: the routing key.
    name: Cow<'a, str>,
    port: Option<u16>,
    /// `raw` is already `name[:port]`, so it can be forwarded as is.
    canonical: bool,
}

impl<'a> Host<'a> {
    /// Checks and normalises `raw`; borrows when it is already normal (the
    /// common case).
    pub fn parse(raw: &'a str) -> Result<Self, HostError> {
        // Byte scans rather than `split_once`: on a per-request path, the
        // generic string searcher costs more than the whole check.
        let (name, uppercase, end) = if raw.starts_with('[') {
            let end = raw
                .bytes()
                .position(|b| b == b']')
                .ok_or(HostError::Malformed)?
                + 1;
            (&raw[..end], check_ipv6(&raw[..end])?, end)
        } else {
            scan_dns_name(raw)?
        };
        let port_text = match &raw[end..] {
            "" => None,
            rest => Some(rest.strip_prefix(':').ok_or(HostError::Malformed)?),
        };
        let port = port_text.map(parse_port).transpose()?;
        // Canonical: nothing lowercased, no dot stripped, no leading zero.
        let canonical = !uppercase
            && name.len() + port_text.map_or(0, |p| p.len() + 1) == raw.len()
            && !port_text.is_some_and(|p| p.starts_with('0'));
        let name = if uppercase {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        Ok(Self {
            raw,
            name,
            port,
            canonical,
        })
    }

    /// The routing key: lowercase, no port, no trailing dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Same name and port, an absent port being `default_port`.
    fn same_as(&self, other: &Host<'_>, default_port: u16) -> bool {
        self.name == other.name
            && self.port.unwrap_or(default_port) == other.port.unwrap_or(default_port)
    }
}

impl fmt::Display for Host<'_> {
    /// `name[:port]`, normalised.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// The host of one request: from its target when it has one, else from its
/// `Host` header (see the module docs).
#[derive(Debug)]
pub struct RequestHost<'a> {
    host: Host<'a>,
    /// The `Host` header `host` came from, forwarded without a copy when
    /// canonical.
    header: Option<&'a HeaderValue>,
}

impl<'a> RequestHost<'a> {
    /// The checked host of `req`, received over `scheme`.
    pub fn of<B>(req: &'a Request<B>, scheme: &Scheme) -> Result<Self, HostError> {
        let mut headers = req.headers().get_all(HOST).iter();
        let header = headers.next();
        if headers.next().is_some() {
            return Err(HostError::Repeated);
        }
        let from_header = match header {
            Some(value) => Some(Host::parse(
                value.to_str().map_err(|_| HostError::Malformed)?,
            )?),
            None => None,
        };
        match (req.uri().authority(), from_header) {
            (Some(authority), from_header) => {
                let host = Host::parse(authority.as_str())?;
                let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
                if from_header.is_some_and(|h| !host.same_as(&h, default_port)) {
                    return Err(HostError::Conflict);
                }
                Ok(Self { host, header: None })
            }
            (None, Some(host)) => Ok(Self { host, header }),
            (None, None) => Err(HostError::Missing),
        }
    }

    /// The routing key (see [`Host::name`]).
    pub fn name(&self) -> &str {
        self.host.name()
    }

    /// `name[:port]` as sent upstream in `Host` and `X-Forwarded-Host`:
    /// the received header itself when it is already normal.
    pub fn forwarded(&self) -> Option<HeaderValue> {
        match (self.host.canonical, self.header) {
            (true, Some(value)) => Some(value.clone()),
            (true, None) => HeaderValue::from_str(self.host.raw).ok(),
            (false, _) => HeaderValue::try_from(self.host.to_string()).ok(),
        }
    }
}

/// 1–65535 in at most five digits.
fn parse_port(text: &str) -> Result<u16, HostError> {
    if text.is_empty() || text.len() > 5 {
        return Err(HostError::Malformed);
    }
    let mut port = 0u32;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return Err(HostError::Malformed);
        }
        port = port * 10 + u32::from(b - b'0');
    }
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(HostError::Malformed),
    }
}

/// Checks the DNS-style name at the start of `raw`, up to a `:` or the
/// end, in one pass. Returns the name without its trailing dot (one is
/// allowed), whether it has uppercase, and where it ends in `raw`.
fn scan_dns_name(raw: &str) -> Result<(&str, bool, usize), HostError> {
    let bytes = raw.as_bytes();
    let mut uppercase = false;
    let mut label_start = 0;
    let mut end = bytes.len();
    // A table lookup per byte; a lowercase letter or digit, nearly every
    // byte, costs a load and a branch.
    for (i, b) in bytes.iter().enumerate() {
        let class = HOST_BYTES[usize::from(*b)];
        if class == NAME {
            continue;
        }
        match class {
            UPPER => uppercase = true,
            // Empty (a leading dot, `..`) or overlong label.
            DOT if !(1..=MAX_LABEL).contains(&(i - label_start)) => {
                return Err(HostError::Malformed);
            }
            DOT => label_start = i + 1,
            COLON => {
                end = i;
                break;
            }
            _ => return Err(HostError::Malformed),
        }
    }
    let text = &raw[..end];
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > MAX_NAME || end - label_start > MAX_LABEL {
        return Err(HostError::Malformed);
    }
    Ok((name, uppercase, end))
}

const INVALID: u8 = 0;
const NAME: u8 = 1;
const UPPER: u8 = 2;
const DOT: u8 = 3;
const COLON: u8 = 4;

/// What each byte is in a host name.
static HOST_BYTES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => NAME,
            b'A'..=b'Z' => UPPER,
            b'.' => DOT,
            b':' => COLON,
            _ => INVALID,
        };
        b += 1;
    }
    table
};

/// Checks `[v6]`; returns whether it has uppercase hex digits.
fn check_ipv6(bracketed: &str) -> Result<bool, HostError> {
    let inner = bracketed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(HostError::Malformed)?;
    inner
        .parse::<Ipv6Addr>()
        .map_err(|_| HostError::Malformed)?;
    Ok(inner.bytes().any(|b| b.is_ascii_uppercase()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> (String, Option<u16>, bool) {
        let h = Host::parse(raw).unwrap();
        (h.name().to_owned(), h.port(), h.canonical)
    }

    #[test]
    fn hosts_are_lowercased_without_a_trailing_dot_and_keep_their_port() {
        assert_eq!(parsed("app.test"), ("app.test".into(), None, true));
        assert_eq!(
            parsed("app.test:8080"),
            ("app.test".into(), Some(8080), true)
        );
        assert_eq!(parsed("APP.Test.:80"), ("app.test".into(), Some(80), false));
        assert_eq!(parsed("app.test."), ("app.test".into(), None, false));
        assert_eq!(parsed("app.test:080"), ("app.test".into(), Some(80), false));
        assert_eq!(parsed("127.0.0.1:1"), ("127.0.0.1".into(), Some(1), true));
        assert_eq!(parsed("[::1]:80"), ("[::1]".into(), Some(80), true));
        assert_eq!(parsed("[FE80::1]"), ("[fe80::1]".into(), None, false));
        assert_eq!(parsed("my_svc.test"), ("my_svc.test".into(), None, true));
        assert_eq!(
            Host::parse("APP.test.:080").unwrap().to_string(),
            "app.test:80"
        );
        // Borrowed when already normal: no allocation on the common path.
        assert!(matches!(
            Host::parse("a.test:80").unwrap().name,
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let long_label = format!("{}.test", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for bad in [
            "",
            ":80",
            ".",
            "a:@b",
            "user@app.test",
            "user:pw@app.test",
            "app.test:",
            "app.test:80:80",
            "app.test:8x",
            "app.test:0",
            "app.test:65536",
            "app.test:123456",
            "app.test: 80",
            "app test",
            "app.test/x",
            "app.test\\x",
            "*.app.test",
            "a..test",
            ".a.test",
            "a.test..",
            "a%2e.test",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[not-v6]",
            "[::1].",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert_eq!(Host::parse(bad), Err(HostError::Malformed), "{bad:?}");
        }
    }

    fn request(target: &str, hosts: &[&str]) -> Request<()> {
        let mut req = Request::get(target);
        for h in hosts {
            req = req.header(HOST, *h);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn the_target_and_the_host_header_must_agree() {
        let http = Scheme::HTTP;
        let of = |target, hosts: &[&str]| {
            RequestHost::of(&request(target, hosts), &http).map(|h| h.name().to_owned())
        };
        assert_eq!(of("/", &["A.test"]).unwrap(), "a.test");
        assert_eq!(of("http://a.test/", &[]).unwrap(), "a.test");
        assert_eq!(of("http://A.test/", &["a.test."]).unwrap(), "a.test");
        // An absent port is the listener's default.
        assert_eq!(of("http://a.test:80/", &["a.test"]).unwrap(), "a.test");
        assert_eq!(of("http://a.test/", &["b.test"]), Err(HostError::Conflict));
        assert_eq!(
            of("http://a.test/", &["a.test:81"]),
            Err(HostError::Conflict)
        );
        assert_eq!(of("http://a.test/", &["a:@b"]), Err(HostError::Malformed));
        assert_eq!(
            of("http://u@a.test/", &["a.test"]),
            Err(HostError::Malformed)
        );
        assert_eq!(of("/", &[]), Err(HostError::Missing));
        assert_eq!(of("/", &["a.test", "a.test"]), Err(HostError::Repeated));
        let req = request("https://a.test:443/", &["a.test"]);
        assert_eq!(
            RequestHost::of(&req, &Scheme::HTTPS).unwrap().name(),
            "a.test"
        );
    }

    #[test]
    fn the_forwarded_host_is_the_normal_form() {
        let req = request("/", &["a.test:8080"]);
        let host = RequestHost::of(&req, &Scheme::HTTP).unwrap();
        assert_eq!(host.forwarded().unwrap(), "a.test:8080");
        let req = request("/", &["A.Test.:8080"]);
        let host = RequestHost::of(&req, &Scheme::HTTP).unwrap();
        assert_eq!(host.forwarded().unwrap(), "a.test:8080");
        // The target's host, not the header's spelling of it.
        let req = request("http://a.test/", &["A.TEST:80"]);
        let host = RequestHost::of(&req, &Scheme::HTTP).unwrap();
        assert_eq!(host.forwarded().unwrap(), "a.test");
    }
}
