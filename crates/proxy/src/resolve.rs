//! `--resolve NAME:PORT=ADDR`: connect to a fixed address instead of
//! resolving an upstream name, like curl's `--resolve`. A debugging and
//! benchmark aid: it lets a proxy outside the cluster reach upstreams named
//! `<svc>.<namespace>.svc.cluster.local:<port>` (the names the api's feed
//! sends) by pointing them at local servers.
//!
//! Applied when a new upstream connection is opened; pooled connections,
//! health state and the `Host` sent upstream still use the upstream's name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One `NAME:PORT=ADDR` override. `ADDR` is an IP (the port stays `PORT`) or
/// an `IP:PORT` (IPv6 as `[::1]:8080`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveOverride {
    /// The upstream as the routes name it, lowercase: `name:port`.
    pub upstream: String,
    pub addr: SocketAddr,
}

impl FromStr for ResolveOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("--resolve {s:?}: {why} (expected NAME:PORT=ADDR)");
        let (upstream, addr) = s.trim().split_once('=').ok_or_else(|| bad("no '='"))?;
        let upstream = upstream.trim().to_ascii_lowercase();
        let (name, port) = upstream
            .rsplit_once(':')
            .ok_or_else(|| bad("NAME:PORT has no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("PORT is not a port"))?;
        if name.is_empty() {
            return Err(bad("NAME is empty"));
        }
        let addr = addr.trim();
        let addr = match addr.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                let ip = addr
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| bad("ADDR is neither an IP nor IP:PORT"))?;
                SocketAddr::new(ip, port)
            }
        };
        Ok(Self { upstream, addr })
    }
}

/// The overrides by upstream (`name:port`, lowercase).
#[derive(Clone, Debug, Default)]
pub struct ResolveTable {
    by_upstream: HashMap<Box<str>, SocketAddr>,
}

impl ResolveTable {
    /// The table of `overrides`; a later one for the same upstream wins.
    pub fn new(overrides: &[ResolveOverride]) -> Self {
        Self {
            by_upstream: overrides
                .iter()
                .map(|o| (o.upstream.as_str().into(), o.addr))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_upstream.is_empty()
    }

    /// The address to connect to instead of resolving `upstream`.
    pub fn get(&self, upstream: &str) -> Option<SocketAddr> {
        if let Some(addr) = self.by_upstream.get(upstream) {
            return Some(*addr);
        }
        if upstream.bytes().any(|b| b.is_ascii_uppercase()) {
            return self
                .by_upstream
                .get(upstream.to_ascii_lowercase().as_str())
                .copied();
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ResolveOverride, String> {
        s.parse()
    }

    #[test]
    fn parses_ip_and_socket_addresses() {
        let o = parse("Web.NS.svc.cluster.local:8080=127.0.0.1").unwrap();
        assert_eq!(o.upstream, "web.ns.svc.cluster.local:8080");
        assert_eq!(o.addr, "127.0.0.1:8080".parse().unwrap());
        let o = parse("web.ns.svc.cluster.local:8080=127.0.0.1:41000").unwrap();
        assert_eq!(o.addr, "127.0.0.1:41000".parse().unwrap());
        let o = parse("a:80=::1").unwrap();
        assert_eq!(o.addr, "[::1]:80".parse().unwrap());
        let o = parse("a:80=[::1]").unwrap();
        assert_eq!(o.addr, "[::1]:80".parse().unwrap());
        let o = parse("a:80=[::1]:9000").unwrap();
        assert_eq!(o.addr, "[::1]:9000".parse().unwrap());
        for bad in [
            "a:80",
            "a=127.0.0.1",
            ":80=127.0.0.1",
            "a:x=1.2.3.4",
            "a:80=host",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookup_ignores_case_and_later_wins() {
        let table = ResolveTable::new(&[
            parse("a.test:80=127.0.0.1:1").unwrap(),
            parse("a.test:80=127.0.0.1:2").unwrap(),
        ]);
        assert_eq!(table.get("a.test:80"), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(table.get("A.Test:80"), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(table.get("a.test:81"), None);
        assert!(ResolveTable::new(&[]).is_empty());
    }
}
