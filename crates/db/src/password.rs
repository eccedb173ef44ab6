//! Password hashing with argon2id and OWASP's recommended parameters
//! (m = 19 MiB, t = 2, p = 1), stored as PHC strings.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};

use crate::{Error, Result};

/// Memory cost in KiB (OWASP: 19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Iterations (OWASP: 2).
pub const T_COST: u32 = 2;
/// Parallelism (OWASP: 1).
pub const P_COST: u32 = 1;

fn hasher() -> Result<Argon2<'static>> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| Error::Password(format!("invalid argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with a fresh random salt; returns a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash_password(password: &str) -> Result<String> {
    let hash = hasher()?
        .hash_password(password.as_bytes())
        .map_err(|e| Error::Password(format!("hashing failed: {e}")))?;
    Ok(hash.to_string())
}

/// Checks a password against a stored PHC string. A wrong password is
/// `Ok(false)`; a malformed or unsupported hash is an error.
pub fn verify_password(password: &str, stored_hash: &str) -> Result<bool> {
    let parsed = PasswordHash::new(stored_hash)
        .map_err(|e| Error::Password(format!("stored hash is malformed: {e}")))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(Error::Password(
            "stored hash is malformed: salt or hash missing".into(),
        ));
    }
    // Parameters come from the stored hash, so older hashes keep verifying.
    match hasher()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(Error::Password(format!("verification failed: {e}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_uses_argon2id_owasp_params_and_verifies() {
        let hash = hash_password("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse", &hash).unwrap());
        assert!(!verify_password("correct horse!", &hash).unwrap());
        assert!(!verify_password("", &hash).unwrap());
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password("pw").unwrap(), hash_password("pw").unwrap());
    }

    #[test]
    fn malformed_hash_is_an_error() {
        for bad in ["", "plain", "$argon2id$v=19$m=19456", "$md5$abc$def"] {
            assert!(
                matches!(verify_password("pw", bad), Err(Error::Password(_))),
                "{bad:?}"
            );
        }
    }
}
