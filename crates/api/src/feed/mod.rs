//! The route feed: the api's live stream of routes, certificates and ACME
//! challenges to the proxies (`ferry.internal.v1.RouteFeed`).
//!
//! - [`FeedHub`] holds the compiled routing state, its version and the recent
//!   updates. [`FeedHub::reload`] rebuilds the state from the database
//!   ([`load`]), diffs it against the current one, bumps the version and
//!   broadcasts the change to every open `Watch` stream.
//! - Mutating RPCs call [`FeedHub::notify_committed`] right after their
//!   transaction commits; the reloader task ([`FeedHub::spawn_reloader`])
//!   coalesces those kicks and also reloads periodically as a safety net. On
//!   PostgreSQL the replicas kick each other: a replica that reloads after a
//!   local commit sends `NOTIFY ferry_route_feed`, and every replica
//!   `LISTEN`s, so proxies attached to any replica see the change at once.
//! - [`RouteFeedService`] serves `Watch` to proxies that present the service
//!   credential (`FERRY_PROXY_FEED_TOKEN`); user tokens are never accepted.

mod hub;
mod load;
mod service;

pub use hub::{FeedHub, HISTORY_LIMIT, NOTIFY_CHANNEL};
pub use load::{load, upstream_address};
pub use service::{FeedAuth, FeedToken, RouteFeedService};
