//! DNS-01 for wildcard domains: the TXT records `_acme-challenge.<name>`
//! are published through a [`DnsProvider`]. [`Rfc2136`] sends DNS UPDATE
//! messages (RFC 2136) signed with TSIG HMAC-SHA256 (RFC 8945) over UDP to
//! the zone's primary server (BIND, Knot, PowerDNS, ...).

use std::net::SocketAddr;
use std::time::Duration;

use crate::{Error, Result};

/// Publishes and removes ACME DNS-01 TXT records.
#[tonic::async_trait]
pub trait DnsProvider: Send + Sync + std::fmt::Debug {
    /// Adds `value` to the TXT records of `name` (other values stay).
    async fn add_txt(&self, name: &str, value: &str) -> Result<()>;
    /// Removes `value` from the TXT records of `name`.
    async fn remove_txt(&self, name: &str, value: &str) -> Result<()>;
}

/// A TSIG key (HMAC-SHA256).
#[derive(Clone)]
pub struct TsigKey {
    /// The key's name, as the server knows it.
    pub name: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// RFC 2136 dynamic updates to `server` for `zone`.
#[derive(Debug, Clone)]
pub struct Rfc2136 {
    pub server: SocketAddr,
    /// The zone the records live in (e.g. `example.com`).
    pub zone: String,
    pub key: Option<TsigKey>,
    pub timeout: Duration,
}

const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_TSIG: u16 = 250;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5 << 11;
const FUDGE: u16 = 300;

fn dns_err(why: impl std::fmt::Display) -> Error {
    Error::Dns(why.to_string())
}

/// `name` in wire form (lower-case labels, root last).
fn wire_name(name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| dns_err(format!("bad DNS name {name:?}")))?;
        out.push(len);
        out.extend(label.to_ascii_lowercase().bytes());
    }
    out.push(0);
    Ok(out)
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend(v.to_be_bytes());
}

impl Rfc2136 {
    /// The UPDATE message adding (`class IN`) or removing (`class NONE`)
    /// one TXT value, signed when a key is set.
    fn message(&self, id: u16, name: &str, value: &str, add: bool, now: u64) -> Result<Vec<u8>> {
        let value = value.as_bytes();
        let value_len = u8::try_from(value.len()).map_err(|_| dns_err("TXT value too long"))?;
        let mut msg = Vec::with_capacity(256);
        push_u16(&mut msg, id);
        push_u16(&mut msg, OPCODE_UPDATE);
        for count in [1, 0, 1, 0] {
            push_u16(&mut msg, count);
        }
        // Zone section.
        msg.extend(wire_name(&self.zone)?);
        push_u16(&mut msg, TYPE_SOA);
        push_u16(&mut msg, CLASS_IN);
        // Update section: the TXT record.
        msg.extend(wire_name(name)?);
        push_u16(&mut msg, TYPE_TXT);
        push_u16(&mut msg, if add { CLASS_IN } else { CLASS_NONE });
        msg.extend((if add { 60u32 } else { 0u32 }).to_be_bytes());
        push_u16(&mut msg, u16::from(value_len) + 1);
        msg.push(value_len);
        msg.extend(value);
        if let Some(key) = &self.key {
            self.sign(&mut msg, key, id, now)?;
        }
        Ok(msg)
    }

    /// Appends a TSIG record (RFC 8945 §4) and counts it.
    fn sign(&self, msg: &mut Vec<u8>, key: &TsigKey, id: u16, now: u64) -> Result<()> {
        let key_name = wire_name(&key.name)?;
        let algorithm = wire_name("hmac-sha256")?;
        let time = now.to_be_bytes();
        let time = &time[2..8];
        let mut signed = msg.clone();
        signed.extend(&key_name);
        push_u16(&mut signed, CLASS_ANY);
        signed.extend(0u32.to_be_bytes());
        signed.extend(&algorithm);
        signed.extend(time);
        push_u16(&mut signed, FUDGE);
        push_u16(&mut signed, 0); // error
        push_u16(&mut signed, 0); // other len
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret),
            &signed,
        );
        let mac = mac.as_ref();
        let mut rdata = algorithm;
        rdata.extend(time);
        push_u16(&mut rdata, FUDGE);
        push_u16(&mut rdata, 32);
        rdata.extend(mac);
        push_u16(&mut rdata, id);
        push_u16(&mut rdata, 0);
        push_u16(&mut rdata, 0);
        msg.extend(key_name);
        push_u16(msg, TYPE_TSIG);
        push_u16(msg, CLASS_ANY);
        msg.extend(0u32.to_be_bytes());
        push_u16(
            msg,
            u16::try_from(rdata.len()).map_err(|_| dns_err("TSIG too long"))?,
        );
        msg.extend(rdata);
        // ARCOUNT = 1.
        msg[10..12].copy_from_slice(&1u16.to_be_bytes());
        Ok(())
    }

    async fn update(&self, name: &str, value: &str, add: bool) -> Result<()> {
        let id: u16 = rand::random();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let msg = self.message(id, name, value, add, now)?;
        let bind = if self.server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| dns_err(format!("UDP socket: {e}")))?;
        socket
            .send_to(&msg, self.server)
            .await
            .map_err(|e| dns_err(format!("sending the update to {}: {e}", self.server)))?;
        let mut buf = [0u8; 1500];
        let n = loop {
            let (n, from) = tokio::time::timeout(self.timeout, socket.recv_from(&mut buf))
                .await
                .map_err(|_| dns_err(format!("{} did not answer the update", self.server)))?
                .map_err(|e| dns_err(format!("reading the answer: {e}")))?;
            if from == self.server && n >= 12 && buf[..2] == id.to_be_bytes() {
                break n;
            }
        };
        let rcode = buf[3] & 0x0f;
        if rcode != 0 {
            let what = match rcode {
                2 => "SERVFAIL",
                5 => "REFUSED",
                9 => "NOTAUTH (wrong key or zone)",
                10 => "NOTZONE",
                _ => "error",
            };
            return Err(dns_err(format!(
                "{} refused the update of {name} in {}: rcode {rcode} {what} ({n} bytes)",
                self.server, self.zone
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl DnsProvider for Rfc2136 {
    async fn add_txt(&self, name: &str, value: &str) -> Result<()> {
        self.update(name, value, true).await
    }
    async fn remove_txt(&self, name: &str, value: &str) -> Result<()> {
        self.update(name, value, false).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_update_names_the_zone_and_the_record() {
        let p = Rfc2136 {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "example.com".into(),
            key: None,
            timeout: Duration::from_secs(1),
        };
        let msg = p
            .message(7, "_acme-challenge.example.com", "abc", true, 0)
            .unwrap();
        assert_eq!(&msg[..12], &[0, 7, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
        assert!(msg.ends_with(&[0, 16, 0, 1, 0, 0, 0, 60, 0, 4, 3, b'a', b'b', b'c']));
        assert!(wire_name("a..b").is_err());
    }
}
