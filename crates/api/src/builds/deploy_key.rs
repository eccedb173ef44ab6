//! Ed25519 deploy keys for generic git servers, in OpenSSH's formats: the
//! public key line users paste into their server, and the unencrypted
//! `openssh-key-v1` private key ssh reads (stored encrypted by Ferry).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::{Error, Result};

const KEY_TYPE: &[u8] = b"ssh-ed25519";

/// A generated key pair.
pub struct DeployKey {
    /// `ssh-ed25519 AAAA... comment`.
    pub public: String,
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` ... (secret).
    pub private: String,
}

impl std::fmt::Debug for DeployKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// SSH wire `string`: u32 length, bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A new ed25519 key; `comment` ends the public line (e.g. the integration).
pub fn generate(comment: &str) -> Result<DeployKey> {
    let rng = SystemRandom::new();
    let mut seed = [0u8; 32];
    rng.fill(&mut seed)
        .map_err(|_| Error::Internal("the system random source failed".into()))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|_| Error::Internal("ed25519 key from seed".into()))?;
    let public_raw = pair.public_key().as_ref();

    let mut public_blob = Vec::new();
    put_string(&mut public_blob, KEY_TYPE);
    put_string(&mut public_blob, public_raw);

    let mut check = [0u8; 4];
    rng.fill(&mut check)
        .map_err(|_| Error::Internal("the system random source failed".into()))?;
    let mut private = Vec::new();
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    put_string(&mut private, KEY_TYPE);
    put_string(&mut private, public_raw);
    let mut secret = Vec::with_capacity(64);
    secret.extend_from_slice(&seed);
    secret.extend_from_slice(public_raw);
    put_string(&mut private, &secret);
    put_string(&mut private, comment.as_bytes());
    // Padded to the cipher block size (8 for "none") with 1, 2, 3, ...
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }

    let mut blob = b"openssh-key-v1\0".to_vec();
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"");
    blob.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut blob, &public_blob);
    put_string(&mut blob, &private);

    let encoded = STANDARD.encode(&blob);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in encoded.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    Ok(DeployKey {
        public: format!("ssh-ed25519 {} {comment}", STANDARD.encode(&public_blob)),
        private: pem,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// ssh-keygen (OpenSSH) reads the private key and derives the same
    /// public key.
    #[test]
    fn openssh_reads_the_key_and_derives_the_same_public_key() {
        let Ok(out) = std::process::Command::new("ssh-keygen").arg("-?").output() else {
            eprintln!("ssh-keygen not installed: format checked structurally only");
            return;
        };
        drop(out);
        let key = generate("ferry-test").unwrap();
        let dir = std::env::temp_dir().join(format!("ferry-key-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("id");
        std::fs::write(&path, &key.private).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8(out.stdout).unwrap();
        let mine: Vec<&str> = key.public.split(' ').take(2).collect();
        let theirs: Vec<&str> = derived.trim().split(' ').take(2).collect();
        assert_eq!(mine, theirs);
    }

    #[test]
    fn every_key_is_new_and_debug_hides_the_private_half() {
        let (a, b) = (generate("a").unwrap(), generate("b").unwrap());
        assert_ne!(a.public, b.public);
        assert!(a.public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }
}
