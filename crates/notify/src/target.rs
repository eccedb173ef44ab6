//! Webhook targets: what is accepted and how it is shown.
//!
//! A webhook URL is a credential (Slack's, Discord's and Teams' carry their
//! token in the path), so it is stored encrypted and only ever shown as
//! [`redact`]ed. Targets must be `http(s)://` and must not reach the
//! installation's own network: loopback, private (RFC 1918, ULA),
//! link-local (cloud metadata at 169.254.169.254), CGNAT, unspecified and
//! multicast addresses are refused, both when a channel is saved
//! ([`check_host`]) and at every send, by the resolver the HTTP client
//! connects through (so a name that later resolves elsewhere is caught).
//! Operators running receivers inside their network allow them
//! (`--notifications-allow-private-targets`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use url::{Host, Url};

/// Longest accepted webhook URL.
pub const MAX_URL: usize = 2048;

/// How long saving a channel waits for its host's addresses.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// `value` as an `http(s)` URL with a host and no credentials, or the
/// reason (prefixed with `field`).
pub fn parse_url(field: &str, value: &str) -> Result<Url, String> {
    let v = value.trim();
    let bad = |why: &str| format!("{field}: {why}");
    if v.is_empty() {
        return Err(bad("required: the webhook URL the service gave you"));
    }
    if v.len() > MAX_URL {
        return Err(bad(&format!("at most {MAX_URL} characters")));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces or control characters"));
    }
    let url = Url::parse(v).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with https:// (or http://)"));
    }
    if url.host().is_none() {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials (user:password@)"));
    }
    Ok(url)
}

/// Whether `ip` is one Ferry refuses to send to by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8, CGNAT 100.64.0.0/10, benchmarking 198.18.0.0/15
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // unique local fc00::/7, link-local fe80::/10
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// Refuses a target whose host is, or resolves to, a private address
/// (unless `allow_private`). A name that does not resolve now is accepted:
/// every send checks again.
pub async fn check_host(field: &str, url: &Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let refuse = |what: String| {
        format!(
            "{field}: {what} is a loopback, private or link-local address; Ferry does not send \
             there unless the operator allows it (--notifications-allow-private-targets)"
        )
    };
    match url.host() {
        Some(Host::Ipv4(ip)) if is_private(IpAddr::V4(ip)) => Err(refuse(ip.to_string())),
        Some(Host::Ipv6(ip)) if is_private(IpAddr::V6(ip)) => Err(refuse(ip.to_string())),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(refuse(name));
            }
            let port = url.port_or_known_default().unwrap_or(443);
            let lookup = tokio::net::lookup_host((name.as_str(), port));
            if let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                for addr in addrs {
                    if is_private(addr.ip()) {
                        return Err(refuse(format!("{name} ({})", addr.ip())));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What users see of a webhook URL: scheme, host, and the last four
/// characters of the path (`https://hooks.slack.com/…/XXXX`); never the
/// query.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    let tail: String = {
        let chars: Vec<char> = path.chars().collect();
        let keep = if chars.len() > 12 { 4 } else { 0 };
        chars[chars.len() - keep..].iter().collect()
    };
    if path.is_empty() {
        format!("{}://{host}{port}/", url.scheme())
    } else {
        format!("{}://{host}{port}/…/{tail}", url.scheme())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_and_no_credentials() {
        assert!(parse_url("webhookUrl", "https://hooks.slack.com/services/T/B/x").is_ok());
        for bad in [
            "",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://user:pw@example.com/x",
            "https://exa mple.com/",
            &format!("https://example.com/{}", "a".repeat(MAX_URL)),
        ] {
            let err = parse_url("webhookUrl", bad).unwrap_err();
            assert!(err.starts_with("webhookUrl: "), "{bad}: {err}");
        }
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "52.1.2.3", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn private_hosts_are_refused_unless_allowed() {
        for u in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/x",
        ] {
            let url = parse_url("webhookUrl", u).unwrap();
            let err = check_host("webhookUrl", &url, false).await.unwrap_err();
            assert!(err.contains("private"), "{u}: {err}");
            assert!(check_host("webhookUrl", &url, true).await.is_ok());
        }
        let public = parse_url("webhookUrl", "https://93.184.215.14/hook").unwrap();
        assert!(check_host("webhookUrl", &public, false).await.is_ok());
    }

    #[test]
    fn urls_are_shown_redacted() {
        let url = parse_url(
            "u",
            "https://hooks.slack.com/services/T000/B000/XXXXsecretZZ9a?x=1",
        )
        .unwrap();
        assert_eq!(redact(&url), "https://hooks.slack.com/…/ZZ9a");
        let short = parse_url("u", "http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(redact(&short), "http://127.0.0.1:9000/…/");
        let bare = parse_url("u", "https://example.com").unwrap();
        assert_eq!(redact(&bare), "https://example.com/");
    }
}
