//! AES-256-GCM column encryption with key ids (rotation), bound to its row.
//!
//! Stored format: `v2:<keyid>:<base64(nonce(12) || ciphertext || tag(16))>`,
//! where `keyid` is the first 8 hex characters of SHA-256(key). The key id is
//! derived from the key, so operators only configure keys, never ids. A fresh
//! random 96-bit nonce is drawn for every encryption.
//!
//! The associated data is `v2\0<table>\0<column>\0<row uuid>`: a ciphertext
//! copied into another column, or into another tenant's row of the same
//! column, no longer authenticates. Legacy `v1` values (associated data
//! `<table>.<column>`, no row) are refused by [`Keyring::decrypt`]; only the
//! upgrade in [`crate::rotate`] reads them, to re-encrypt them bound to their row.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rand::RngCore as _;
use sea_orm::DeriveValueType;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize as _, Zeroizing};

use crate::{Error, Result};

/// Environment variable holding the current key.
pub const ENV_KEY: &str = "ENCRYPTION_KEY";
/// Environment variable holding older keys (comma-separated) still accepted for reading.
pub const ENV_KEY_PREVIOUS: &str = "ENCRYPTION_KEY_PREVIOUS";

const FORMAT_VERSION: &str = "v2";
/// Bound only to `table.column`; read by the upgrade, never written.
pub(crate) const LEGACY_VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const KEY_HELP: &str = "generate one with `openssl rand -hex 32`";

/// The stored (encrypted, base64, key-id-prefixed) form of an encrypted column.
/// Entities use this type for every encrypted column so plaintext can never be
/// written to one by mistake. Open it with a [`Keyring`].
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct Encrypted(pub String);

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Encrypted(..)")
    }
}

impl Encrypted {
    /// The key id the value was encrypted under, if the value is well formed.
    pub fn key_id(&self) -> Option<&str> {
        let mut parts = self.0.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(FORMAT_VERSION | LEGACY_VERSION), Some(id), Some(_)) if is_key_id(id) => Some(id),
            _ => None,
        }
    }

    /// The raw stored string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A decrypted value. Debug and Display never show it; use [`Secret::expose`].
/// The memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plaintext.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Keep its use local; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One AES-256 key with its derived id. The cipher zeroizes its key schedule on drop.
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| Error::KeyInvalid(format!("the key must be exactly {KEY_LEN} bytes")))?;
        let digest = Sha256::digest(bytes);
        let id = hex::encode(&digest[..KEY_ID_LEN / 2]);
        Ok(Self { id, cipher })
    }
}

/// The current key (used for every write) plus previous keys accepted for
/// reading, so keys can be rotated without downtime.
pub struct Keyring {
    current: Key,
    previous: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids are derived one-way from the keys; they are safe to show.
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from key material (each: 32 raw characters, 64 hex
    /// characters, or base64 of 32 bytes).
    pub fn new(current: &str, previous: &[&str]) -> Result<Self> {
        let current = parse_key(current).map_err(|e| describe(e, ENV_KEY))?;
        let mut ring = Self {
            current,
            previous: Vec::new(),
        };
        for (i, material) in previous.iter().enumerate() {
            let key = parse_key(material)
                .map_err(|e| describe(e, &format!("{ENV_KEY_PREVIOUS} entry {}", i + 1)))?;
            ring.add_previous(key);
        }
        Ok(ring)
    }

    /// Reads `ENCRYPTION_KEY` (required) and `ENCRYPTION_KEY_PREVIOUS`
    /// (optional, comma-separated) from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Keyring::from_env`] with an injectable variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let current = Zeroizing::new(lookup(ENV_KEY).unwrap_or_default());
        if current.trim().is_empty() {
            return Err(Error::KeyMissing(format!(
                "{ENV_KEY} is not set; {KEY_HELP} and set {ENV_KEY} to it"
            )));
        }
        let previous = Zeroizing::new(lookup(ENV_KEY_PREVIOUS).unwrap_or_default());
        let previous: Vec<&str> = previous
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Self::new(&current, &previous)
    }

    /// A fresh random key as 64 hex characters (for development set-ups).
    pub fn generate_key_hex() -> String {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        hex::encode(bytes.as_ref())
    }

    /// The id of the current key.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` for `table.column` of the row whose primary key
    /// is `row`, under the current key.
    pub fn encrypt(
        &self,
        table: &str,
        column: &str,
        row: Uuid,
        plaintext: &str,
    ) -> Result<Encrypted> {
        let aad = associated_data(table, column, row);
        self.seal(FORMAT_VERSION, &aad, plaintext)
            .ok_or_else(|| Error::Encrypt(format!("AES-GCM failed for {table}.{column}")))
    }

    /// Decrypts a value stored in `table.column` of row `row`, with the
    /// current or any previous key. Legacy v1 values are refused.
    pub fn decrypt(
        &self,
        table: &str,
        column: &str,
        row: Uuid,
        value: &Encrypted,
    ) -> Result<Secret> {
        self.open(table, column, row, value, false)
    }

    /// Like [`Keyring::decrypt`], but also reads legacy v1 values (bound
    /// only to `table.column`). For the upgrade and rotation only.
    pub(crate) fn decrypt_upgrading(
        &self,
        table: &str,
        column: &str,
        row: Uuid,
        value: &Encrypted,
    ) -> Result<Secret> {
        self.open(table, column, row, value, true)
    }

    /// `None` when the system RNG or the cipher fails.
    fn seal(&self, version: &str, aad: &[u8], plaintext: &str) -> Option<Encrypted> {
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_generate().ok()?;
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .ok()?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Some(Encrypted(format!(
            "{version}:{}:{}",
            self.current.id,
            STANDARD.encode(blob)
        )))
    }

    fn open(
        &self,
        table: &str,
        column: &str,
        row: Uuid,
        value: &Encrypted,
        legacy: bool,
    ) -> Result<Secret> {
        let fail = |reason: &str| Error::Decrypt {
            table: table.to_owned(),
            column: column.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = value.0.splitn(3, ':');
        let (Some(version), Some(id), Some(payload)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("not an encrypted value"));
        };
        let aad = match version {
            FORMAT_VERSION => associated_data(table, column, row),
            LEGACY_VERSION if legacy => format!("{table}.{column}").into_bytes(),
            LEGACY_VERSION => {
                return Err(fail(
                    "legacy v1 value not bound to its row; start ferry-api with the key \
                     to upgrade stored values",
                ));
            }
            _ => return Err(fail("unsupported format version")),
        };
        let key = self
            .key_by_id(id)
            .ok_or_else(|| fail(&format!("unknown key id {}", printable_id(id))))?;
        let blob = STANDARD
            .decode(payload)
            .map_err(|_| fail("payload is not valid base64"))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(fail("payload is too short"));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = aes_gcm::aead::Nonce::<Aes256Gcm>::try_from(nonce)
            .map_err(|_| fail("bad nonce length"))?;
        let plain = key
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                fail("authentication failed (wrong key, or value belongs to another row or column)")
            })?;
        String::from_utf8(plain).map(Secret).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            fail("plaintext is not UTF-8")
        })
    }

    /// True when `value` is not a v2 value under the current key (it should be re-encrypted).
    pub fn needs_rotation(&self, value: &Encrypted) -> bool {
        !value.0.starts_with(&self.current_prefix())
    }

    /// The stored prefix of values that need no rotation: `v2:<current id>:`.
    pub fn current_prefix(&self) -> String {
        format!("{FORMAT_VERSION}:{}:", self.current.id)
    }

    fn key_by_id(&self, id: &str) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == id)
    }

    fn add_previous(&mut self, key: Key) {
        // The same key listed twice (or equal to the current one) adds nothing.
        if self.key_by_id(&key.id).is_none() {
            self.previous.push(key);
        }
    }
}

/// NUL-separated so no choice of names makes two rows' data equal.
fn associated_data(table: &str, column: &str, row: Uuid) -> Vec<u8> {
    format!("{FORMAT_VERSION}\0{table}\0{column}\0{}", row.hyphenated()).into_bytes()
}

fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Key ids in error messages come from stored data; only echo well-formed ones.
fn printable_id(id: &str) -> &str {
    if is_key_id(id) { id } else { "(malformed)" }
}

/// Why key material was rejected; never contains the material itself.
struct KeyProblem(String);

fn describe(problem: KeyProblem, what: &str) -> Error {
    Error::KeyInvalid(format!(
        "{what}: {}; expected exactly {KEY_LEN} bytes given as 64 hex characters, \
         base64 of {KEY_LEN} bytes, or a {KEY_LEN}-character string; {KEY_HELP}",
        problem.0
    ))
}

/// Accepts 64 hex chars, base64 (standard or url-safe, padded or not) of 32
/// bytes, or exactly 32 raw bytes, in that order. The forms cannot collide: a
/// 64-char hex string decodes as base64 to 48 bytes, and a 32-char string
/// decodes as base64 to 24 bytes.
fn parse_key(material: &str) -> std::result::Result<Key, KeyProblem> {
    let material = material.trim();
    if material.is_empty() {
        return Err(KeyProblem("the key is empty".into()));
    }
    if material.len() == 2 * KEY_LEN && material.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes =
            Zeroizing::new(hex::decode(material).map_err(|_| KeyProblem("invalid hex".into()))?);
        return Key::from_bytes(&bytes).map_err(|_| KeyProblem("invalid hex key".into()));
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(material) {
            let bytes = Zeroizing::new(bytes);
            if bytes.len() == KEY_LEN {
                return Key::from_bytes(&bytes)
                    .map_err(|_| KeyProblem("invalid base64 key".into()));
            }
        }
    }
    if material.len() == KEY_LEN {
        return Key::from_bytes(material.as_bytes())
            .map_err(|_| KeyProblem("invalid raw key".into()));
    }
    Err(KeyProblem(format!(
        "got {} characters that are neither 64 hex characters nor base64 of {KEY_LEN} bytes",
        material.chars().count()
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    const ROW: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

    fn ring(current: &str, previous: &[&str]) -> Keyring {
        Keyring::new(current, previous).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = ring(KEY_A, &[]);
        let enc = k
            .encrypt("git_providers", "access_token", ROW, "ghp_secret")
            .unwrap();
        assert!(enc.0.starts_with(&format!("v2:{}:", k.current_key_id())));
        assert_eq!(k.current_prefix(), format!("v2:{}:", k.current_key_id()));
        let dec = k
            .decrypt("git_providers", "access_token", ROW, &enc)
            .unwrap();
        assert_eq!(dec.expose(), "ghp_secret");
        let empty = k.encrypt("t", "c", ROW, "").unwrap();
        assert_eq!(k.decrypt("t", "c", ROW, &empty).unwrap().expose(), "");
    }

    #[test]
    fn nonce_is_fresh_every_time() {
        let k = ring(KEY_A, &[]);
        let a = k.encrypt("t", "c", ROW, "same").unwrap();
        let b = k.encrypt("t", "c", ROW, "same").unwrap();
        assert_ne!(a, b);
        let nonce = |e: &Encrypted| {
            STANDARD.decode(e.0.splitn(3, ':').nth(2).unwrap()).unwrap()[..NONCE_LEN].to_vec()
        };
        assert_ne!(nonce(&a), nonce(&b));
    }

    #[test]
    fn stored_value_never_contains_plaintext() {
        let k = ring(KEY_A, &[]);
        let plain = "postgres://user:hunter2@db/prod";
        let enc = k.encrypt("t", "c", ROW, plain).unwrap();
        assert!(!enc.0.contains(plain));
        assert!(!enc.0.contains("hunter2"));
        assert!(
            !STANDARD
                .decode(enc.0.splitn(3, ':').nth(2).unwrap())
                .unwrap()
                .windows(7)
                .any(|w| w == b"hunter2")
        );
    }

    #[test]
    fn wrong_associated_data_fails() {
        let k = ring(KEY_A, &[]);
        let enc = k.encrypt("registries", "password", ROW, "pw").unwrap();
        let err = k
            .decrypt("registries", "username_enc", ROW, &enc)
            .unwrap_err();
        assert!(matches!(err, Error::Decrypt { .. }), "{err}");
        assert!(k.decrypt("other", "password", ROW, &enc).is_err());
        assert!(!err.to_string().contains("pw\""));
    }

    #[test]
    fn tampered_value_fails() {
        let k = ring(KEY_A, &[]);
        let enc = k.encrypt("t", "c", ROW, "value").unwrap();
        let mut blob = STANDARD
            .decode(enc.0.splitn(3, ':').nth(2).unwrap())
            .unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        let bad = Encrypted(format!(
            "v2:{}:{}",
            k.current_key_id(),
            STANDARD.encode(blob)
        ));
        assert!(k.decrypt("t", "c", ROW, &bad).is_err());
        assert!(
            k.decrypt("t", "c", ROW, &Encrypted("plain text".into()))
                .is_err()
        );
        assert!(
            k.decrypt("t", "c", ROW, &Encrypted("v3:abcdef01:AAAA".into()))
                .is_err()
        );
    }

    #[test]
    fn wrong_row_fails() {
        let k = ring(KEY_A, &[]);
        let enc = k
            .encrypt("service_env_vars", "value_encrypted", ROW, "s3cret")
            .unwrap();
        let other = Uuid::from_u128(ROW.as_u128() + 1);
        let err = k
            .decrypt("service_env_vars", "value_encrypted", other, &enc)
            .unwrap_err();
        match &err {
            Error::Decrypt {
                table,
                column,
                reason,
            } => {
                assert_eq!(
                    (table.as_str(), column.as_str()),
                    ("service_env_vars", "value_encrypted")
                );
                assert!(reason.contains("another row"), "{reason}");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(!err.to_string().contains("s3cret"));
        assert!(
            k.decrypt("service_env_vars", "value_encrypted", Uuid::nil(), &enc)
                .is_err()
        );
        assert_eq!(
            k.decrypt("service_env_vars", "value_encrypted", ROW, &enc)
                .unwrap()
                .expose(),
            "s3cret"
        );
    }

    #[test]
    fn associated_data_separates_names() {
        // `a\0b` + `c` and `a` + `b\0c` must not collide; neither may table/column swaps.
        let k = ring(KEY_A, &[]);
        let enc = k.encrypt("a", "bc", ROW, "v").unwrap();
        assert!(k.decrypt("ab", "c", ROW, &enc).is_err());
        assert!(k.decrypt("bc", "a", ROW, &enc).is_err());
        assert_eq!(
            associated_data("t", "c", ROW),
            format!("v2\0t\0c\0{}", ROW.hyphenated()).into_bytes()
        );
    }

    #[test]
    fn v1_is_refused_by_decrypt_and_read_only_by_the_upgrade() {
        let k = ring(KEY_A, &[]);
        let legacy = k.seal(LEGACY_VERSION, b"t.c", "old").unwrap();
        assert!(legacy.0.starts_with(&format!("v1:{}:", k.current_key_id())));
        assert_eq!(legacy.key_id(), Some(k.current_key_id()));
        assert!(
            k.needs_rotation(&legacy),
            "a v1 value under the current key still needs work"
        );
        let err = k.decrypt("t", "c", ROW, &legacy).unwrap_err();
        match &err {
            Error::Decrypt { reason, .. } => assert!(reason.contains("legacy v1"), "{reason}"),
            other => panic!("unexpected {other}"),
        }
        assert_eq!(
            k.decrypt_upgrading("t", "c", ROW, &legacy)
                .unwrap()
                .expose(),
            "old"
        );
        assert!(k.decrypt_upgrading("t", "x", ROW, &legacy).is_err());
        // A v2 value relabelled v1 does not pass as legacy.
        let v2 = k.encrypt("t", "c", ROW, "new").unwrap();
        let relabelled = Encrypted(v2.0.replacen("v2:", "v1:", 1));
        assert!(k.decrypt_upgrading("t", "c", ROW, &relabelled).is_err());
        assert_eq!(
            k.decrypt_upgrading("t", "c", ROW, &v2).unwrap().expose(),
            "new"
        );
    }

    #[test]
    fn previous_key_reads_and_needs_rotation() {
        let old = ring(KEY_A, &[]);
        let enc = old.encrypt("t", "c", ROW, "v").unwrap();
        let rotated = ring(KEY_B, &[KEY_A]);
        assert_eq!(rotated.decrypt("t", "c", ROW, &enc).unwrap().expose(), "v");
        assert!(rotated.needs_rotation(&enc));
        let fresh = rotated.encrypt("t", "c", ROW, "v").unwrap();
        assert!(!rotated.needs_rotation(&fresh));
        assert_eq!(fresh.key_id(), Some(rotated.current_key_id()));
        assert_ne!(old.current_key_id(), rotated.current_key_id());
    }

    #[test]
    fn unknown_key_fails() {
        let enc = ring(KEY_A, &[]).encrypt("t", "c", ROW, "v").unwrap();
        let err = ring(KEY_B, &[]).decrypt("t", "c", ROW, &enc).unwrap_err();
        match err {
            Error::Decrypt {
                table,
                column,
                reason,
            } => {
                assert_eq!((table.as_str(), column.as_str()), ("t", "c"));
                assert!(reason.contains("unknown key id"), "{reason}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn key_forms_are_equivalent() {
        // 0xfb bytes make standard base64 use '+' '/' and url-safe use '-' '_'.
        let bytes = [0xfbu8; 32];
        let id = ring(&hex::encode(bytes), &[]).current_key_id().to_owned();
        assert_eq!(id, hex::encode(&Sha256::digest(bytes)[..4]));
        let forms = [
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            hex::encode_upper(bytes),
        ];
        assert!(forms[0].contains('+') && forms[2].contains('-'));
        for form in &forms {
            assert_eq!(ring(form, &[]).current_key_id(), id, "form {form}");
        }
        let raw = "0123456789abcdefghijklmnopqrstuv";
        assert_eq!(
            ring(raw, &[]).current_key_id(),
            hex::encode(&Sha256::digest(raw.as_bytes())[..4])
        );
        // A value written with one form reads with another.
        let enc = ring(&forms[0], &[]).encrypt("t", "c", ROW, "v").unwrap();
        assert_eq!(
            ring(&forms[3], &[])
                .decrypt("t", "c", ROW, &enc)
                .unwrap()
                .expose(),
            "v"
        );
    }

    #[test]
    fn rejects_wrong_lengths_without_echoing() {
        for bad in [
            "a".repeat(31),
            "a".repeat(33),
            hex::encode([7u8; 31]),
            hex::encode([7u8; 33]),
            STANDARD.encode([7u8; 31]),
            STANDARD.encode([7u8; 33]),
            "zz".repeat(32),
        ] {
            let err = Keyring::new(&bad, &[]).unwrap_err();
            assert!(matches!(err, Error::KeyInvalid(_)), "{bad}: {err}");
            assert!(!err.to_string().contains(&bad), "message echoes the key");
            assert!(err.to_string().contains("openssl rand -hex 32"));
        }
        let err = Keyring::new(KEY_A, &["short"]).unwrap_err();
        assert!(
            err.to_string().contains("ENCRYPTION_KEY_PREVIOUS entry 1"),
            "{err}"
        );
    }

    #[test]
    fn from_lookup_requires_key_and_splits_previous() {
        let err = Keyring::from_lookup(|_| None).unwrap_err();
        assert!(matches!(err, Error::KeyMissing(_)));
        assert!(err.to_string().contains("openssl rand -hex 32"));
        let k = Keyring::from_lookup(|name| match name {
            ENV_KEY => Some(KEY_B.to_owned()),
            ENV_KEY_PREVIOUS => Some(format!(" {KEY_A} , ,{KEY_B}")),
            _ => None,
        })
        .unwrap();
        assert_eq!(k.previous.len(), 1, "current key listed again is ignored");
        let enc = ring(KEY_A, &[]).encrypt("t", "c", ROW, "v").unwrap();
        assert_eq!(k.decrypt("t", "c", ROW, &enc).unwrap().expose(), "v");
    }

    #[test]
    fn generated_key_is_valid_and_random() {
        let a = Keyring::generate_key_hex();
        assert_eq!(a.len(), 64);
        assert_ne!(a, Keyring::generate_key_hex());
        ring(&a, &[]);
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
        let k = ring(KEY_A, &[]);
        assert!(!format!("{k:?}").contains(KEY_A));
        assert_eq!(format!("{:?}", Encrypted("v1:x".into())), "Encrypted(..)");
    }
}
