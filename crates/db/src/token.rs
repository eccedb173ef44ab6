//! High-entropy tokens (sessions, API tokens, provisioning tokens, recovery
//! codes, invitations): generated from 32 random bytes, stored only as a
//! SHA-256 hash and compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Random bytes in every token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// A new token: `prefix` followed by 32 random bytes in unpadded base64url.
/// The prefix (for example `ferry_pat_`) makes leaked tokens easy to spot.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::with_capacity(prefix.len() + 43);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// The value to store for a token: lowercase hex SHA-256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` hashes to `stored_hash`, compared in constant time.
pub fn verify_token_hash(token: &str, stored_hash: &str) -> bool {
    let computed = hash_token(token);
    // Length is public (always 64 for a valid hash); the contents are compared in constant time.
    computed
        .as_bytes()
        .ct_eq(stored_hash.to_ascii_lowercase().as_bytes())
        .into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_prefix_and_entropy() {
        let a = generate_token("ferry_pat_");
        let b = generate_token("ferry_pat_");
        assert!(a.starts_with("ferry_pat_"));
        assert_ne!(a, b);
        let body = a.strip_prefix("ferry_pat_").unwrap();
        assert_eq!(body.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), TOKEN_BYTES);
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_matches_only_the_right_token() {
        let t = generate_token("s_");
        let h = hash_token(&t);
        assert!(verify_token_hash(&t, &h));
        assert!(verify_token_hash(&t, &h.to_uppercase()));
        assert!(!verify_token_hash(&generate_token("s_"), &h));
        assert!(!verify_token_hash(&t, &h[..63]));
        assert!(!verify_token_hash(&t, ""));
        assert!(!verify_token_hash(&t, &t), "the raw token is not its hash");
    }
}
