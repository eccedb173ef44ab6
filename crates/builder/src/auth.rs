//! The service credential the api presents on every BuilderService call.
//!
//! Only the api calls the builder, with `authorization: Bearer <token>`
//! (`FERRY_BUILDER_TOKEN` on both sides). Requests carry decrypted git
//! credentials and secret build args, so a builder without a token serves
//! nothing, and the presented token is compared in constant time (through
//! SHA-256, so neither its length nor a prefix leaks through timing).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Shortest accepted token: it guards git credentials and build secrets.
pub const MIN_TOKEN_LEN: usize = 16;

/// The builder's service credential. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(String);

impl ServiceToken {
    /// The token itself: for the client side (tests, the api) only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Bearer <token>`, the `authorization` value clients send.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken([redacted])")
    }
}

impl FromStr for ServiceToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let token = s.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the builder token must have at least {MIN_TOKEN_LEN} characters \
                 (generate one with `openssl rand -hex 32`)"
            ));
        }
        Ok(ServiceToken(token.to_owned()))
    }
}

/// How callers are authenticated.
#[derive(Clone)]
pub enum TokenCheck {
    /// No token configured: every call is refused.
    Disabled,
    /// SHA-256 of the token callers must present.
    Sha256([u8; 32]),
}

impl fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenCheck::Disabled => "TokenCheck::Disabled",
            TokenCheck::Sha256(_) => "TokenCheck::Sha256([redacted])",
        })
    }
}

impl TokenCheck {
    pub fn new(token: Option<&ServiceToken>) -> TokenCheck {
        token.map_or(TokenCheck::Disabled, |t| {
            TokenCheck::Sha256(Sha256::digest(t.expose().as_bytes()).into())
        })
    }

    /// Checks the request's `authorization: Bearer <token>`.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let TokenCheck::Sha256(expected) = self else {
            return Err(Status::failed_precondition(
                "the builder has no service token: set FERRY_BUILDER_TOKEN",
            ));
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        let matches = presented.is_some_and(|token| {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            bool::from(digest.ct_eq(expected))
        });
        if matches {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or invalid builder credential",
            ))
        }
    }
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn metadata(value: Option<&str>) -> MetadataMap {
        let mut map = MetadataMap::new();
        if let Some(value) = value {
            map.insert("authorization", value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token: ServiceToken = " 0123456789abcdef-secret ".parse().unwrap();
        let check = TokenCheck::new(Some(&token));
        check
            .check(&metadata(Some("Bearer 0123456789abcdef-secret")))
            .unwrap();
        check
            .check(&metadata(Some("bearer  0123456789abcdef-secret")))
            .unwrap();
        for wrong in [
            None,
            Some("Bearer 0123456789abcdef-secreT"),
            Some("Bearer 0123456789abcdef-secret0"),
            Some("Bearer "),
            Some("Basic 0123456789abcdef-secret"),
            Some("0123456789abcdef-secret"),
        ] {
            let err = check.check(&metadata(wrong)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{wrong:?}");
        }
        let err = TokenCheck::Disabled
            .check(&metadata(Some("Bearer 0123456789abcdef-secret")))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("FERRY_BUILDER_TOKEN"));
    }

    #[test]
    fn tokens_are_long_and_never_printed() {
        assert!("short".parse::<ServiceToken>().is_err());
        let token: ServiceToken = "0123456789abcdef-secret".parse().unwrap();
        assert!(!format!("{token:?}").contains("secret"));
        assert!(!format!("{:?}", TokenCheck::new(Some(&token))).contains("secret"));
    }
}
