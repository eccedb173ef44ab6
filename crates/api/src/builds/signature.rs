//! Push-webhook signatures, verified over the raw body in constant time,
//! the way each provider signs:
//!
//! | provider | header | scheme |
//! |---|---|---|
//! | GitHub | `X-Hub-Signature-256` | `sha256=` + hex HMAC-SHA256 |
//! | Gitea | `X-Gitea-Signature` | hex HMAC-SHA256 |
//! | Forgejo | `X-Forgejo-Signature` (or Gitea's header, which it also sends) | hex HMAC-SHA256 |
//! | Bitbucket Cloud | `X-Hub-Signature` | `sha256=` + hex HMAC-SHA256 |
//! | GitLab | `X-Gitlab-Token` | the shared secret itself |
//!
//! Generic integrations have no provider to sign: they accept GitHub's
//! scheme, which most git servers can send.

use ferry_db::entities::enums::GitProvider;
use http::HeaderMap;
use ring::hmac;

/// Why a delivery's signature was refused (all answer 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} is not a well-formed signature")]
    Malformed(&'static str),
    #[error("{0} does not match the body")]
    Mismatch(&'static str),
}

/// The HMAC-SHA256 of `body` under `secret`, as lower-case hex (what
/// GitHub-style senders put after `sha256=`).
pub fn sign_hex(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hex::encode(hmac::sign(&key, body).as_ref())
}

/// Checks the delivery's signature headers for `provider` against `body`.
pub fn verify(
    provider: GitProvider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), SignatureError> {
    match provider {
        GitProvider::Github | GitProvider::Generic => hmac_header(
            headers,
            "x-hub-signature-256",
            Some("sha256="),
            body,
            secret,
        ),
        GitProvider::Bitbucket => {
            hmac_header(headers, "x-hub-signature", Some("sha256="), body, secret)
        }
        GitProvider::Gitea => hmac_header(headers, "x-gitea-signature", None, body, secret),
        GitProvider::Forgejo => {
            let name = if headers.contains_key("x-forgejo-signature") {
                "x-forgejo-signature"
            } else {
                "x-gitea-signature"
            };
            hmac_header(headers, name, None, body, secret)
        }
        GitProvider::Gitlab => {
            let name = "x-gitlab-token";
            let token = headers
                .get(name)
                .ok_or(SignatureError::Missing(name))?
                .as_bytes();
            // Compare digests: constant time whatever the lengths.
            let digest = |v: &[u8]| ring::digest::digest(&ring::digest::SHA256, v);
            let (a, b) = (digest(token), digest(secret));
            if subtle::ConstantTimeEq::ct_eq(a.as_ref(), b.as_ref()).into() {
                Ok(())
            } else {
                Err(SignatureError::Mismatch(name))
            }
        }
    }
}

fn hmac_header(
    headers: &HeaderMap,
    name: &'static str,
    prefix: Option<&str>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), SignatureError> {
    let value = headers
        .get(name)
        .ok_or(SignatureError::Missing(name))?
        .to_str()
        .map_err(|_| SignatureError::Malformed(name))?
        .trim();
    let hex_sig = match prefix {
        Some(p) => value
            .strip_prefix(p)
            .ok_or(SignatureError::Malformed(name))?,
        None => value,
    };
    let tag = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed(name))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    // ring compares in constant time.
    hmac::verify(&key, body, &tag).map_err(|_| SignatureError::Mismatch(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    // GitHub's published example ("Validating webhook deliveries").
    const GH_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_published_test_vector_verifies() {
        assert_eq!(sign_hex(GH_SECRET, GH_BODY), GH_SIG);
        let h = headers(&[("x-hub-signature-256", &format!("sha256={GH_SIG}"))]);
        assert_eq!(verify(GitProvider::Github, &h, GH_BODY, GH_SECRET), Ok(()));
        assert_eq!(verify(GitProvider::Generic, &h, GH_BODY, GH_SECRET), Ok(()));
    }

    #[test]
    fn a_changed_body_secret_or_signature_is_refused() {
        let h = headers(&[("x-hub-signature-256", &format!("sha256={GH_SIG}"))]);
        let mismatch = Err(SignatureError::Mismatch("x-hub-signature-256"));
        assert_eq!(
            verify(GitProvider::Github, &h, b"Hello, World?", GH_SECRET),
            mismatch
        );
        assert_eq!(
            verify(GitProvider::Github, &h, GH_BODY, b"another secret"),
            mismatch
        );
        let mut flipped = GH_SIG.to_owned();
        flipped.replace_range(0..1, "8");
        let h = headers(&[("x-hub-signature-256", &format!("sha256={flipped}"))]);
        assert_eq!(
            verify(GitProvider::Github, &h, GH_BODY, GH_SECRET),
            mismatch
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_refused() {
        let none = HeaderMap::new();
        for (p, name) in [
            (GitProvider::Github, "x-hub-signature-256"),
            (GitProvider::Bitbucket, "x-hub-signature"),
            (GitProvider::Gitea, "x-gitea-signature"),
            (GitProvider::Forgejo, "x-gitea-signature"),
            (GitProvider::Gitlab, "x-gitlab-token"),
        ] {
            assert_eq!(
                verify(p, &none, GH_BODY, GH_SECRET),
                Err(SignatureError::Missing(name))
            );
        }
        // No `sha256=` prefix, or not hex.
        for bad in [
            GH_SIG.to_owned(),
            "sha256=zz".to_owned(),
            "sha1=00".to_owned(),
        ] {
            let h = headers(&[("x-hub-signature-256", &bad)]);
            assert_eq!(
                verify(GitProvider::Github, &h, GH_BODY, GH_SECRET),
                Err(SignatureError::Malformed("x-hub-signature-256"))
            );
        }
        // GitHub's SHA-1 header alone is not accepted.
        let h = headers(&[("x-hub-signature", &format!("sha256={GH_SIG}"))]);
        assert_eq!(
            verify(GitProvider::Github, &h, GH_BODY, GH_SECRET),
            Err(SignatureError::Missing("x-hub-signature-256"))
        );
    }

    #[test]
    fn gitea_forgejo_and_bitbucket_schemes() {
        let sig = sign_hex(b"s3cret-s3cret-s3cret", b"{}");
        let gitea = headers(&[("x-gitea-signature", &sig)]);
        assert_eq!(
            verify(GitProvider::Gitea, &gitea, b"{}", b"s3cret-s3cret-s3cret"),
            Ok(())
        );
        // Forgejo sends its own header and Gitea's; either verifies.
        assert_eq!(
            verify(GitProvider::Forgejo, &gitea, b"{}", b"s3cret-s3cret-s3cret"),
            Ok(())
        );
        let forgejo = headers(&[("x-forgejo-signature", &sig)]);
        assert_eq!(
            verify(
                GitProvider::Forgejo,
                &forgejo,
                b"{}",
                b"s3cret-s3cret-s3cret"
            ),
            Ok(())
        );
        // A Forgejo header is not a Gitea signature.
        assert!(verify(GitProvider::Gitea, &forgejo, b"{}", b"s3cret-s3cret-s3cret").is_err());
        let bb = headers(&[("x-hub-signature", &format!("sha256={sig}"))]);
        assert_eq!(
            verify(GitProvider::Bitbucket, &bb, b"{}", b"s3cret-s3cret-s3cret"),
            Ok(())
        );
    }

    #[test]
    fn gitlab_compares_the_shared_token() {
        let ok = headers(&[("x-gitlab-token", "token-token-token")]);
        assert_eq!(
            verify(GitProvider::Gitlab, &ok, b"{}", b"token-token-token"),
            Ok(())
        );
        for wrong in ["token-token-toke", "token-token-tokenX", ""] {
            let h = headers(&[("x-gitlab-token", wrong)]);
            assert_eq!(
                verify(GitProvider::Gitlab, &h, b"{}", b"token-token-token"),
                Err(SignatureError::Mismatch("x-gitlab-token"))
            );
        }
    }
}
