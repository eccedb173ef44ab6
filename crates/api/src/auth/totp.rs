//! TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, ±1 step of skew) and
//! recovery codes. Pure functions; storage lives in [`super::second_factor`].

use rand::RngCore as _;
use totp_rs::{Builder, Secret, Totp};

use crate::{Error, Result};

/// The issuer shown by authenticator apps.
pub const ISSUER: &str = "Ferry";
/// Recovery codes handed out at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// 32 symbols (no i, l, o, u): 5 bits per character, read back easily.
const RECOVERY_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Characters per recovery code (3 groups of 4: 60 random bits).
const RECOVERY_CHARS: usize = 12;

fn totp_error(err: totp_rs::TotpError) -> Error {
    Error::Internal(format!("TOTP: {err}"))
}

fn build(secret_base32: &str, account: Option<&str>) -> Result<Totp> {
    let secret = Secret::try_from_base32(secret_base32)
        .map_err(|_| Error::Internal("stored TOTP secret is not base32".into()))?;
    let mut builder = Builder::new()
        .with_secret(secret)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1);
    if let Some(account) = account {
        // ':' separates issuer and account in the otpauth label.
        builder = builder
            .with_account_name(account.replace(':', "_"))
            .with_issuer(Some(ISSUER));
    }
    builder.build().map_err(totp_error)
}

/// A new random 160-bit secret, base32.
pub fn new_secret() -> String {
    Secret::generate().to_base32()
}

/// The `otpauth://totp/...` URI for `account` (the user's email).
pub fn otpauth_uri(secret_base32: &str, account: &str) -> Result<String> {
    build(secret_base32, Some(account))?
        .to_url()
        .map_err(totp_error)
}

/// The step `code` is valid for at `unix_time` (±1 step), if any.
pub fn check(secret_base32: &str, code: &str, unix_time: u64) -> Result<Option<u64>> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    Ok(build(secret_base32, None)?.check(&code, unix_time))
}

/// Ten fresh recovery codes, `xxxx-xxxx-xxxx`, from the OS CSPRNG.
pub fn generate_recovery_codes() -> Vec<String> {
    let mut rng = rand::rng();
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let mut bytes = [0u8; RECOVERY_CHARS];
            rng.fill_bytes(&mut bytes);
            let mut code = String::with_capacity(RECOVERY_CHARS + 2);
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 && i % 4 == 0 {
                    code.push('-');
                }
                // 256 is a multiple of 32: unbiased.
                code.push(char::from(RECOVERY_ALPHABET[usize::from(b % 32)]));
            }
            code
        })
        .collect()
}

/// The stored form of a recovery code: SHA-256 hex of its characters
/// without separators, lower-cased (so `ABCD-efgh-…` and `abcdefgh…` match).
pub fn hash_recovery_code(code: &str) -> String {
    let canonical: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ferry_db::token::hash_token(&canonical)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn codes_check_within_one_step_only() {
        let secret = new_secret();
        let totp = build(&secret, None).unwrap();
        let t = 1_800_000_000;
        let code = totp.generate(t).to_string();
        assert_eq!(check(&secret, &code, t).unwrap(), Some(t / 30));
        assert_eq!(check(&secret, &code, t + 30).unwrap(), Some(t / 30));
        assert_eq!(check(&secret, &code, t + 90).unwrap(), None);
        assert_eq!(check(&secret, "12345", t).unwrap(), None);
        assert_eq!(check(&secret, "abcdef", t).unwrap(), None);
    }

    #[test]
    fn uri_names_issuer_and_account() {
        let secret = new_secret();
        let uri = otpauth_uri(&secret, "a@example.com").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Ferry:a%40example.com?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        assert!(uri.contains("issuer=Ferry"), "{uri}");
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalised() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        for c in &codes {
            assert_eq!(c.len(), 14);
            assert_eq!(c.matches('-').count(), 2);
        }
        let c = &codes[0];
        assert_eq!(
            hash_recovery_code(c),
            hash_recovery_code(&c.replace('-', "").to_uppercase())
        );
        assert_ne!(hash_recovery_code(c), hash_recovery_code(&codes[1]));
    }
}
