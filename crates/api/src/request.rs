//! What the api knows about a request before authenticating it: the peer
//! address and user agent, for sessions, throttling and the audit log.

use std::net::IpAddr;

use tonic::Request;

/// Longest accepted user agent; longer ones are cut.
const MAX_USER_AGENT: usize = 512;

/// Where a request came from, for sessions, throttling and the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The TCP peer address. `X-Forwarded-For` and the like are not read:
    /// they are the client's to forge, and no trusted proxy is configured.
    pub ip: Option<IpAddr>,
    /// The `user-agent` metadata, cut to 512 characters.
    pub user_agent: Option<String>,
}

impl RequestMeta {
    /// Reads the peer address and user agent of `request`.
    pub fn of<T>(request: &Request<T>) -> Self {
        let user_agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect::<String>())
            .filter(|ua| !ua.is_empty());
        Self {
            ip: request.remote_addr().map(|a| a.ip().to_canonical()),
            user_agent,
        }
    }
}
