//! The HTTP domain challenge, checked from the outside: the name's IPv4
//! addresses come from the configured resolver ([`crate::dns`]), and
//! `GET http://<name>/.well-known/ferry-challenge/<token>` must answer 200
//! with the token as its body (ferry-proxy answers it for a pending domain
//! once the name points at the installation).
//!
//! Bounded on purpose: one address tried after another (at most four), one
//! request each, no redirects followed, 1 KiB of body read, one timeout
//! per attempt. The body is compared, never returned to the caller.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::dns::{self, Proof};

/// The path prefix ferry-proxy answers domain challenges under.
pub const PATH_PREFIX: &str = "/.well-known/ferry-challenge/";

const MAX_BODY: usize = 1024;
const MAX_ADDRESSES: usize = 4;

/// Whether `http://<name>:<port>/.well-known/ferry-challenge/<token>`
/// answers the token.
pub async fn http_proof(
    resolver: SocketAddr,
    name: &str,
    port: u16,
    token: &str,
    timeout: Duration,
) -> Proof {
    let addrs = match dns::a_records(resolver, name, timeout).await {
        Ok(addrs) if addrs.is_empty() => {
            return Proof::Missing(format!(
                "{name} has no A record; point it at this installation's ingress and retry"
            ));
        }
        Ok(addrs) => addrs,
        Err(err) => return Proof::Unknown(format!("looking up {name} failed: {err}")),
    };
    let url = format!("http://{name}{PATH_PREFIX}{token}");
    let mut last = Proof::Unknown(format!("{name} has no address to fetch {url} from"));
    for ip in addrs.into_iter().take(MAX_ADDRESSES) {
        let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
        let hint = format!("point {name} at this installation's ingress and retry");
        // An answer without the token is a definite "no"; no answer at all
        // (refused, reset, timeout) says nothing either way.
        last = match tokio::time::timeout(timeout, fetch(addr, name, token)).await {
            Ok(Ok((200, body))) if body.trim_ascii() == token.as_bytes() => return Proof::Present,
            Ok(Ok((200, _))) => Proof::Missing(format!(
                "{url} (at {addr}) answered 200 without the token; {hint}"
            )),
            Ok(Ok((status, _))) => {
                Proof::Missing(format!("{url} (at {addr}) answered {status}; {hint}"))
            }
            Ok(Err(err)) => {
                Proof::Unknown(format!("fetching {url} at {addr} failed: {err}; {hint}"))
            }
            Err(_) => Proof::Unknown(format!(
                "{url} (at {addr}) did not answer within {timeout:?}; {hint}"
            )),
        };
    }
    last
}

type FetchError = Box<dyn std::error::Error + Send + Sync>;

async fn fetch(addr: SocketAddr, host: &str, token: &str) -> Result<(u16, Bytes), FetchError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(format!("{PATH_PREFIX}{token}"))
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "ferry-domain-check")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}
