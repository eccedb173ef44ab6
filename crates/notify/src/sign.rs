//! The generic webhook's signature.
//!
//! Every request carries `Ferry-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex>` is the lower-case hex HMAC-SHA256, under the channel's signing
//! secret, of `<t>.<body>` (the timestamp, a dot, the raw body bytes): the
//! HMAC-SHA256 hex scheme Ferry verifies on incoming git webhooks
//! (`X-Hub-Signature-256`), with the timestamp signed too so a receiver can
//! refuse replays (Ferry's [`verify`] allows five minutes of skew).

use ring::hmac;

/// The request header.
pub const HEADER: &str = "ferry-signature";

/// How far a receiver should let `t` drift from its clock.
pub const TOLERANCE_SECS: i64 = 300;

/// The hex HMAC-SHA256 of `<t>.<body>` under `secret`.
pub fn mac_hex(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex::encode(ctx.sign().as_ref())
}

/// The header value for `body` sent at `t`.
pub fn header_value(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac_hex(secret, t, body))
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the Ferry-Signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is too far from now (a replay?)")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a `Ferry-Signature` value against `body` at `now` (unix
/// seconds), in constant time; what a receiver does.
pub fn verify(secret: &[u8], value: &str, body: &[u8], now: i64) -> Result<(), Refused> {
    let mut t = None;
    let mut v1 = None;
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(Refused::Malformed);
    };
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = t.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    hmac::verify(&key, &signed, &v1).map_err(|_| Refused::Mismatch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            mac_hex(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        let v = header_value(b"secret", 1_700_000_000, b"{}");
        assert!(v.starts_with("t=1700000000,v1="));
        assert_eq!(verify(b"secret", &v, b"{}", 1_700_000_100), Ok(()));
        assert_eq!(
            verify(b"secret", &v, b"{ }", 1_700_000_100),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(b"other", &v, b"{}", 1_700_000_100),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &v, b"{}", 1_700_000_000 + 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(b"secret", "v1=00", b"{}", 0),
            Err(Refused::Malformed)
        );
    }
}
