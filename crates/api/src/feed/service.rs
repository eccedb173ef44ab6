//! `ferry.internal.v1.RouteFeed`: the `Watch` stream and its service
//! credential.

use std::str::FromStr;

use ferry_proto::ferry::internal::v1 as pb;
use pb::route_feed_server::{RouteFeed, RouteFeedServer};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::hub::{FeedHub, Subscription, update_message};

/// Shortest accepted feed token: it guards every private key.
const MIN_TOKEN_LEN: usize = 16;
/// Messages queued per stream on top of the hub's broadcast buffer.
const STREAM_BUFFER: usize = 16;

/// The proxies' shared secret (`FERRY_PROXY_FEED_TOKEN`). Debug never shows it.
#[derive(Clone)]
pub struct FeedToken(String);

impl FeedToken {
    /// The token itself; only for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for FeedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedToken([redacted])")
    }
}

impl FromStr for FeedToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the proxy feed token must have at least {MIN_TOKEN_LEN} characters \
                 (generate one with `openssl rand -hex 32`)"
            ));
        }
        Ok(Self(s.trim().to_owned()))
    }
}

/// How `Watch` callers are authenticated.
#[derive(Clone, Debug)]
pub enum FeedAuth {
    /// No token configured: the feed refuses every call.
    Disabled,
    /// SHA-256 (hex) of the token proxies must present.
    TokenHash(String),
}

impl FeedAuth {
    /// Checks `authorization: Bearer <token>` against `token`, if any.
    pub fn new(token: Option<&FeedToken>) -> Self {
        token.map_or(Self::Disabled, |t| {
            Self::TokenHash(ferry_db::token::hash_token(t.expose()))
        })
    }

    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Self::TokenHash(hash) = self else {
            return Err(Status::failed_precondition(
                "proxy feed disabled: set FERRY_PROXY_FEED_TOKEN",
            ));
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match presented {
            Some(token) if ferry_db::token::verify_token_hash(token, hash) => Ok(()),
            _ => Err(Status::unauthenticated(
                "missing or invalid proxy feed credential",
            )),
        }
    }
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The gRPC service behind `RouteFeed`.
#[derive(Clone, Debug)]
pub struct RouteFeedService {
    hub: FeedHub,
    auth: FeedAuth,
}

impl RouteFeedService {
    pub fn new(hub: FeedHub, auth: FeedAuth) -> Self {
        Self { hub, auth }
    }

    /// The tonic server to mount. Snapshots can be large (every route and
    /// certificate), so no size limit applies to what the api sends.
    pub fn into_server(self) -> RouteFeedServer<Self> {
        RouteFeedServer::new(self).max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl RouteFeed for RouteFeedService {
    type WatchStream = ReceiverStream<Result<pb::FeedMessage, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.auth.check(request.metadata())?;
        let request = request.into_inner();
        let sub = self
            .hub
            .subscribe(request.resume_from_version)
            .ok_or_else(|| Status::unavailable("the route feed is not loaded yet"))?;
        // The id is only for logs: bound it.
        let proxy_id: String = request.proxy_id.chars().take(128).collect();
        tracing::info!(
            proxy_id,
            resume_from = request.resume_from_version,
            version = sub.version,
            messages = sub.initial.len(),
            "proxy watching the route feed"
        );
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(forward(self.hub.clone(), sub, tx, proxy_id));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Sender = mpsc::Sender<Result<pb::FeedMessage, Status>>;

/// Feeds one stream until the client goes away or the api shuts down.
async fn forward(hub: FeedHub, sub: Subscription, tx: Sender, proxy_id: String) {
    let Subscription {
        initial,
        mut version,
        mut updates,
    } = sub;
    let closed = hub.closed();
    tokio::pin!(closed);
    if !send_all(&tx, initial).await {
        return;
    }
    loop {
        let received = tokio::select! {
            () = &mut closed => break,
            () = tx.closed() => break,
            received = updates.recv() => received,
        };
        let resync = match received {
            Ok(update) if update.version <= version => continue,
            Ok(update) if update.base_version == version => {
                version = update.version;
                if tx.send(Ok(update_message(&update))).await.is_err() {
                    break;
                }
                continue;
            }
            // A gap cannot happen with one ordered channel, but a snapshot
            // repairs it anyway.
            Ok(_) => true,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    proxy_id,
                    missed,
                    "slow proxy fell behind; sending a snapshot"
                );
                true
            }
            Err(RecvError::Closed) => break,
        };
        if resync {
            let Some(fresh) = hub.subscribe(0) else { break };
            version = fresh.version;
            updates = fresh.updates;
            if !send_all(&tx, fresh.initial).await {
                break;
            }
        }
    }
    tracing::info!(proxy_id, version, "route feed stream ended");
}

async fn send_all(tx: &Sender, messages: Vec<pb::FeedMessage>) -> bool {
    for message in messages {
        if tx.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn metadata(header: Option<&str>) -> MetadataMap {
        let mut md = MetadataMap::new();
        if let Some(h) = header {
            md.insert("authorization", h.parse().unwrap());
        }
        md
    }

    #[test]
    fn token_rules_and_redaction() {
        assert!("short".parse::<FeedToken>().is_err());
        let token: FeedToken = "0123456789abcdef-secret".parse().unwrap();
        assert!(!format!("{token:?}").contains("secret"));
        let auth = FeedAuth::new(Some(&token));
        assert!(!format!("{auth:?}").contains("secret"));

        auth.check(&metadata(Some("Bearer 0123456789abcdef-secret")))
            .unwrap();
        auth.check(&metadata(Some("bearer  0123456789abcdef-secret ")))
            .unwrap();
        for bad in [
            None,
            Some("0123456789abcdef-secret"),
            Some("Basic 0123456789abcdef-secret"),
            Some("Bearer 0123456789abcdef-secreT"),
            Some("Bearer "),
        ] {
            let err = auth.check(&metadata(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let err = FeedAuth::new(None)
            .check(&metadata(Some("Bearer 0123456789abcdef-secret")))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("FERRY_PROXY_FEED_TOKEN"));
    }
}
