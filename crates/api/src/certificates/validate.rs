//! Checks an uploaded certificate chain and private key before they are
//! stored. Every refusal is `InvalidArgument` starting with the field
//! (`certificatePem` or `privateKeyPem`) and saying what to change.

use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer as _, GeneralName, SubjectPublicKeyInfo, X509Certificate};

use crate::{Error, Result};

/// The largest chain accepted, in bytes of PEM.
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;
/// The most certificates in one chain.
pub const MAX_CHAIN_CERTS: usize = 10;
/// The largest private key accepted, in bytes of PEM.
pub const MAX_KEY_BYTES: usize = 16 * 1024;
/// The most DNS names kept from a leaf.
pub const MAX_HOSTNAMES: usize = 100;

/// What the api keeps of a valid chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The leaf's DNS names, lower-case.
    pub hostnames: Vec<String>,
    /// The leaf's issuer, as a distinguished name.
    pub issuer: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

fn chain_err(why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("certificatePem: {why}"))
}

fn key_err(why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("privateKeyPem: {why}"))
}

/// Whether the certificate name `pattern` (`a.example.com` or
/// `*.example.com`) matches `host` (one label for a wildcard).
pub fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// Whether `names` cover the domain (`name`, `wildcard`): an apex domain
/// needs its own name (or a wildcard matching it), a wildcard domain needs
/// `*.name`.
pub fn covers_domain(names: &[String], name: &str, wildcard: bool) -> bool {
    if wildcard {
        names.contains(&format!("*.{name}"))
    } else {
        names.iter().any(|n| name_matches(n, name))
    }
}

fn timestamp(t: x509_parser::time::ASN1Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.timestamp(), 0)
}

/// The DNS names of a certificate's subject alternative names.
pub fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Validates `chain_pem` and `key_pem` for the domain (`name`,
/// `wildcard`) at `now`.
pub fn check(
    chain_pem: &str,
    key_pem: &str,
    name: &str,
    wildcard: bool,
    now: DateTime<Utc>,
) -> Result<Checked> {
    if chain_pem.trim().is_empty() {
        return Err(chain_err("required: the PEM chain, leaf first"));
    }
    if chain_pem.len() > MAX_CHAIN_BYTES {
        return Err(chain_err(format!("at most {MAX_CHAIN_BYTES} bytes")));
    }
    if key_pem.trim().is_empty() {
        return Err(key_err("required: the leaf's private key in PEM"));
    }
    if key_pem.len() > MAX_KEY_BYTES {
        return Err(key_err(format!("at most {MAX_KEY_BYTES} bytes")));
    }
    let mut ders = Vec::new();
    for item in CertificateDer::pem_slice_iter(chain_pem.as_bytes()) {
        let der = item.map_err(|e| chain_err(format!("not valid PEM: {e}")))?;
        ders.push(der);
        if ders.len() > MAX_CHAIN_CERTS {
            return Err(chain_err(format!("at most {MAX_CHAIN_CERTS} certificates")));
        }
    }
    if ders.is_empty() {
        return Err(chain_err(
            "no -----BEGIN CERTIFICATE----- block found: paste the PEM chain, leaf first",
        ));
    }
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (rest, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
            chain_err(format!(
                "certificate {} is not a valid X.509 certificate: {e}",
                i + 1
            ))
        })?;
        if !rest.is_empty() {
            return Err(chain_err(format!(
                "certificate {} has trailing bytes after its DER encoding",
                i + 1
            )));
        }
        certs.push(cert);
    }
    for (i, pair) in certs.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject() {
            return Err(chain_err(format!(
                "out of order: certificate {} (issuer \"{}\") was not issued by certificate {} \
                 (subject \"{}\"); list the leaf first, then each issuer",
                i + 1,
                child.issuer(),
                i + 2,
                parent.subject()
            )));
        }
        child.verify_signature(Some(parent.public_key())).map_err(|_| {
            chain_err(format!(
                "the signature of certificate {} does not verify with the key of certificate {}",
                i + 1,
                i + 2
            ))
        })?;
    }
    let leaf = &certs[0];
    if leaf.is_ca() && certs.len() > 1 {
        return Err(chain_err(
            "certificate 1 is a CA certificate: the leaf (the domain's certificate) comes first",
        ));
    }
    let validity = leaf.validity();
    let (Some(not_before), Some(not_after)) = (
        timestamp(validity.not_before),
        timestamp(validity.not_after),
    ) else {
        return Err(chain_err("the leaf's validity dates are out of range"));
    };
    if not_after <= now {
        return Err(chain_err(format!(
            "the leaf certificate expired at {}",
            not_after.to_rfc3339()
        )));
    }
    if not_before > now {
        return Err(chain_err(format!(
            "the leaf certificate is not valid before {}",
            not_before.to_rfc3339()
        )));
    }
    let mut hostnames = dns_names(leaf);
    hostnames.truncate(MAX_HOSTNAMES);
    let display = if wildcard {
        format!("*.{name}")
    } else {
        name.to_owned()
    };
    if !covers_domain(&hostnames, name, wildcard) {
        return Err(chain_err(format!(
            "the leaf certificate names {hostnames:?} and does not cover the domain {display}"
        )));
    }

    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        key_err("no private key found: give a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM block")
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| key_err("not a supported key (RSA, ECDSA P-256/P-384 or Ed25519)"))?;
    let spki = signing
        .public_key()
        .ok_or_else(|| key_err("its public key cannot be derived"))?;
    let (_, from_key) = SubjectPublicKeyInfo::from_der(spki.as_ref())
        .map_err(|_| key_err("its public key cannot be derived"))?;
    if from_key.subject_public_key.data != leaf.public_key().subject_public_key.data {
        return Err(key_err(
            "does not match the leaf certificate's public key (is it the key of another certificate?)",
        ));
    }
    Ok(Checked {
        hostnames,
        issuer: leaf.issuer().to_string(),
        not_before,
        not_after,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_match_one_label_under_a_wildcard() {
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(name_matches("example.com", "example.com"));
        let names = vec!["*.example.com".to_owned()];
        assert!(covers_domain(&names, "example.com", true));
        assert!(covers_domain(&names, "www.example.com", false));
        assert!(!covers_domain(&names, "example.com", false));
        assert!(!covers_domain(
            &["www.example.com".into()],
            "example.com",
            true
        ));
    }
}
