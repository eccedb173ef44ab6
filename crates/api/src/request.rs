//! What the api knows about a request before authenticating it: the client
//! address and user agent, for sessions, throttling and the audit log.
//!
//! The client address is the TCP peer's, unless the peer is a trusted
//! proxy (`--trusted-proxies`): then it is the right-most `X-Forwarded-For`
//! entry that is not itself a trusted proxy. Entries left of that one are
//! the client's to forge and are never read.

use std::net::IpAddr;
use std::str::FromStr;

use tonic::Request;

/// Longest accepted user agent; longer ones are cut.
const MAX_USER_AGENT: usize = 512;

/// Where a request came from, for sessions, throttling and the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The client address: the TCP peer's, or what a trusted proxy in
    /// front of the api forwarded ([`TrustedProxies::client`]).
    pub ip: Option<IpAddr>,
    /// The `user-agent` metadata, cut to 512 characters.
    pub user_agent: Option<String>,
}

impl RequestMeta {
    /// Reads the client address and user agent of `request`.
    pub fn of<T>(request: &Request<T>, proxies: &TrustedProxies) -> Self {
        let user_agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect::<String>())
            .filter(|ua| !ua.is_empty());
        Self {
            ip: proxies.client(
                request.remote_addr().map(|a| a.ip()),
                request
                    .metadata()
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            ),
            user_agent,
        }
    }
}

/// An IP network: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a CIDR like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside the network (IPv4-mapped IPv6 as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip.to_canonical() {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u32),
            IpAddr::V6(v6) => (u128::from(v6), 128u32),
        };
        let ((net, width), (host, host_width)) = (bits(self.addr), bits(ip));
        if width != host_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= width || (net >> shift) == (host >> shift)
    }
}

/// Proxies whose `X-Forwarded-For` the api believes (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request from `peer` carrying the
    /// `X-Forwarded-For` values `forwarded` (in header order): the peer,
    /// unless it is trusted; then the right-most forwarded address that is
    /// not trusted. A malformed entry on the way, or only trusted ones,
    /// leave the peer.
    pub fn client<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded: impl Iterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        let peer = peer.map(|p| p.to_canonical())?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let entries: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
        for entry in entries.iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return Some(peer);
            };
            let ip = ip.to_canonical();
            if !self.trusts(ip) {
                return Some(ip);
            }
        }
        Some(peer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn proxies(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies(cidrs.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn client(p: &TrustedProxies, peer: &str, xff: &[&str]) -> String {
        p.client(Some(peer.parse().unwrap()), xff.iter().copied())
            .unwrap()
            .to_string()
    }

    #[test]
    fn cidrs_parse_strictly_and_match() {
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let one: Cidr = "2001:db8::1".parse().unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let none = TrustedProxies::default();
        assert_eq!(client(&none, "10.0.0.5", &["203.0.113.9"]), "10.0.0.5");
        let p = proxies(&["10.0.0.0/8"]);
        // Untrusted peer: the header is the client's to forge.
        assert_eq!(client(&p, "198.51.100.1", &["203.0.113.9"]), "198.51.100.1");
        // The right-most untrusted entry; what a client prepends is ignored.
        assert_eq!(
            client(&p, "10.0.0.5", &["1.2.3.4, 203.0.113.9", "10.0.0.7"]),
            "203.0.113.9"
        );
        // Malformed, absent or only trusted entries: the peer.
        assert_eq!(client(&p, "10.0.0.5", &["1.2.3.4, junk"]), "10.0.0.5");
        assert_eq!(client(&p, "10.0.0.5", &[]), "10.0.0.5");
        assert_eq!(client(&p, "10.0.0.5", &["10.9.9.9"]), "10.0.0.5");
    }
}
