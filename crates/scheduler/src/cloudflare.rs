//! DNS-01 through Cloudflare's v4 API ([`Cloudflare`]): TXT records are
//! created in (and deleted from) the zone that holds the name, found by
//! walking up its labels (`GET /zones?name=`) unless a zone id is set.
//! Authenticates with an API token (`Authorization: Bearer`, needs
//! `Zone:Read` and `DNS:Edit`). Every call is bounded in time and size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::dns01::DnsProvider;
use crate::{Error, Result};

/// Cloudflare's API root.
pub const DEFAULT_API_URL: &str = "https://api.cloudflare.com/client/v4";
/// The largest API answer read (a page of records is a few KiB).
const MAX_BODY: usize = 1 << 20;
/// TTL of the challenge records (Cloudflare's minimum).
const TTL: u32 = 60;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A Cloudflare account's DNS, reached with an API token.
#[derive(Clone)]
pub struct Cloudflare {
    api_url: String,
    token: Arc<str>,
    zone_id: Option<String>,
    timeout: Duration,
    client: HttpClient,
}

impl std::fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloudflare")
            .field("api_url", &self.api_url)
            .field("token", &"[redacted]")
            .field("zone_id", &self.zone_id)
            .finish_non_exhaustive()
    }
}

fn dns_err(why: impl std::fmt::Display) -> Error {
    Error::Dns(why.to_string())
}

/// Plain HTTP only to the local machine (tests, a local relay): the token
/// must not cross a network in clear.
fn check_api_url(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::Config(format!("--acme-cloudflare-api-url {url:?}: {e}")))?;
    let local = matches!(parsed.host(), Some(url::Host::Domain("localhost")))
        || matches!(parsed.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        _ => Err(Error::Config(format!(
            "--acme-cloudflare-api-url {url:?}: must be https (http only to loopback)"
        ))),
    }
}

fn client(timeout: Duration) -> Result<HttpClient> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// `v` percent-encoded for a query string.
fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Cloudflare's `errors` array, in one line (`code message; ...`).
fn api_errors(body: &Value) -> String {
    let errors: Vec<String> = body["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["code"].as_i64().unwrap_or_default(),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        "no error details".into()
    } else {
        errors.join("; ")
    }
}

/// The names a record may sit under, longest first, down to two labels
/// (`_acme-challenge.a.example.com` → `a.example.com`, `example.com`).
fn zone_candidates(name: &str) -> Vec<String> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    (1..labels.len().saturating_sub(1))
        .map(|i| labels[i..].join("."))
        .collect()
}

impl Cloudflare {
    /// A provider for the API at `api_url` (see [`DEFAULT_API_URL`]); with
    /// `zone_id`, no zone lookup is made.
    pub fn new(
        api_url: &str,
        token: &str,
        zone_id: Option<String>,
        timeout: Duration,
    ) -> Result<Self> {
        check_api_url(api_url)?;
        if token.trim().is_empty() {
            return Err(Error::Config("--acme-cloudflare-api-token is empty".into()));
        }
        Ok(Self {
            api_url: api_url.trim_end_matches('/').to_owned(),
            token: Arc::from(token.trim()),
            zone_id,
            timeout,
            client: client(timeout)?,
        })
    }

    /// One API call; the `result` of a successful answer, or Cloudflare's
    /// errors.
    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let what = format!(
            "Cloudflare {method} {}",
            path.split('?').next().unwrap_or(path)
        );
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api_url))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "ferry-scheduler")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| dns_err(format!("{what}: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| dns_err(format!("{what}: {e}")))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| dns_err(format!("{what}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| dns_err(format!("{what}: no answer in {:?}", self.timeout)))??;
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| {
            dns_err(format!(
                "{what}: HTTP {status}, not a Cloudflare API answer"
            ))
        })?;
        if !status.is_success() || body["success"] != Value::Bool(true) {
            return Err(dns_err(format!(
                "{what}: HTTP {status}: {}",
                api_errors(&body)
            )));
        }
        Ok(body["result"].clone())
    }

    /// The id of the zone `name` belongs to.
    async fn zone(&self, name: &str) -> Result<String> {
        if let Some(id) = &self.zone_id {
            return Ok(id.clone());
        }
        let candidates = zone_candidates(name);
        for zone in &candidates {
            let found = self
                .call(
                    http::Method::GET,
                    &format!("/zones?name={}", enc(zone)),
                    None,
                )
                .await?;
            if let Some(id) = found[0]["id"].as_str() {
                return Ok(id.to_owned());
            }
        }
        Err(dns_err(format!(
            "no Cloudflare zone (visible to the token) holds {name}; tried {}",
            candidates.join(", ")
        )))
    }
}

#[tonic::async_trait]
impl DnsProvider for Cloudflare {
    async fn add_txt(&self, name: &str, value: &str) -> Result<()> {
        let zone = self.zone(name).await?;
        let record = json!({ "type": "TXT", "name": name, "content": value, "ttl": TTL });
        self.call(
            http::Method::POST,
            &format!("/zones/{zone}/dns_records"),
            Some(record),
        )
        .await?;
        Ok(())
    }

    /// Lists the name's TXT records and deletes those holding `value`,
    /// compared here without the quotes Cloudflare may store around TXT
    /// content (so no `content=` filter, which would compare them).
    async fn remove_txt(&self, name: &str, value: &str) -> Result<()> {
        let zone = self.zone(name).await?;
        let path = format!(
            "/zones/{zone}/dns_records?type=TXT&name={}&per_page=100",
            enc(name)
        );
        let records = self.call(http::Method::GET, &path, None).await?;
        for record in records.as_array().into_iter().flatten() {
            let content = record["content"].as_str().unwrap_or("");
            let (Some(id), true) = (record["id"].as_str(), content.trim_matches('"') == value)
            else {
                continue;
            };
            self.call(
                http::Method::DELETE,
                &format!("/zones/{zone}/dns_records/{}", enc(id)),
                None,
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_tried_from_the_longest_and_plain_http_only_to_loopback() {
        assert_eq!(
            zone_candidates("_acme-challenge.a.example.com."),
            ["a.example.com", "example.com"]
        );
        assert!(check_api_url(DEFAULT_API_URL).is_ok());
        assert!(check_api_url("http://127.0.0.1:8080/client/v4").is_ok());
        assert!(check_api_url("http://api.example.com/client/v4").is_err());
        let cf =
            Cloudflare::new(DEFAULT_API_URL, "tok-secret", None, Duration::from_secs(1)).unwrap();
        assert!(!format!("{cf:?}").contains("tok-secret"));
        assert!(Cloudflare::new(DEFAULT_API_URL, " ", None, Duration::from_secs(1)).is_err());
    }
}
