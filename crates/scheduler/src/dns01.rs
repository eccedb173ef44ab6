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

/// The TSIG variables (RFC 8945 §4.3.3) after the key name.
fn tsig_variables(out: &mut Vec<u8>, algorithm: &[u8], time: &[u8], error: u16, other: &[u8]) {
    push_u16(out, CLASS_ANY);
    out.extend(0u32.to_be_bytes());
    out.extend(algorithm);
    out.extend(time);
    push_u16(out, FUDGE);
    push_u16(out, error);
    push_u16(out, u16::try_from(other.len()).unwrap_or(u16::MAX));
    out.extend(other);
}

/// The HMAC-SHA256 key.
fn hmac_key(key: &TsigKey) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret)
}

/// Appends a TSIG record (RFC 8945 §4) to `msg` and counts it; returns
/// its MAC. `prior_mac`: the request's MAC when signing a reply (tests).
fn sign(msg: &mut Vec<u8>, key: &TsigKey, id: u16, now: u64, prior_mac: &[u8]) -> Result<Vec<u8>> {
    let key_name = wire_name(&key.name)?;
    let algorithm = wire_name("hmac-sha256")?;
    let time = now.to_be_bytes();
    let time = &time[2..8];
    let mut signed = Vec::with_capacity(msg.len() + 128);
    if !prior_mac.is_empty() {
        push_u16(
            &mut signed,
            u16::try_from(prior_mac.len()).unwrap_or(u16::MAX),
        );
        signed.extend(prior_mac);
    }
    signed.extend(msg.iter());
    signed.extend(&key_name);
    tsig_variables(&mut signed, &algorithm, time, 0, &[]);
    let mac = ring::hmac::sign(&hmac_key(key), &signed).as_ref().to_vec();
    let mut rdata = algorithm;
    rdata.extend(time);
    push_u16(&mut rdata, FUDGE);
    push_u16(&mut rdata, 32);
    rdata.extend(&mac);
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
    let count = u16::from_be_bytes([msg[10], msg[11]]).saturating_add(1);
    msg[10..12].copy_from_slice(&count.to_be_bytes());
    Ok(mac)
}

/// A cursor over a DNS message.
struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.msg.len());
        let end = end.ok_or_else(|| dns_err("the reply is truncated"))?;
        let out = &self.msg[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A name, decompressed, in lower-case wire form.
    fn name(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let (mut pos, mut jumps, mut end) = (self.at, 0, None);
        loop {
            let len = *self
                .msg
                .get(pos)
                .ok_or_else(|| dns_err("bad name in the reply"))?;
            if len & 0xc0 == 0xc0 {
                let low = *self
                    .msg
                    .get(pos + 1)
                    .ok_or_else(|| dns_err("bad name in the reply"))?;
                end.get_or_insert(pos + 2);
                pos = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                jumps += 1;
                if jumps > 32 {
                    return Err(dns_err("name compression loop in the reply"));
                }
                continue;
            }
            let label = self
                .msg
                .get(pos..pos + 1 + usize::from(len))
                .ok_or_else(|| dns_err("bad name in the reply"))?;
            out.extend(label.iter().map(u8::to_ascii_lowercase));
            pos += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        self.at = end.unwrap_or(pos);
        Ok(out)
    }
}

/// Where the reply's last additional record starts, if it is a TSIG.
fn find_tsig(msg: &[u8]) -> Result<Option<usize>> {
    let mut r = Reader { msg, at: 12 };
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (zones, records) = (
        count(4),
        u32::from(count(6)) + u32::from(count(8)) + u32::from(count(10)),
    );
    for _ in 0..zones {
        r.name()?;
        r.take(4)?;
    }
    let mut last = None;
    for _ in 0..records {
        last = Some(r.at);
        r.name()?;
        r.take(8)?;
        let len = r.u16()?;
        r.take(usize::from(len))?;
    }
    let Some(start) = last.filter(|_| count(10) > 0) else {
        return Ok(None);
    };
    let mut t = Reader { msg, at: start };
    t.name()?;
    Ok((t.u16()? == TYPE_TSIG).then_some(start))
}

/// Checks the reply's TSIG (RFC 8945 §5.3): signed with `key`, no TSIG
/// error, time within the fudge of `now`, and the MAC over the request's
/// MAC, the reply without its TSIG and the TSIG variables.
fn verify_reply(reply: &[u8], key: &TsigKey, request_mac: &[u8], now: u64) -> Result<()> {
    if reply.len() < 12 {
        return Err(dns_err("the reply is truncated"));
    }
    let start = find_tsig(reply)?.ok_or_else(|| dns_err("the reply is not signed (no TSIG)"))?;
    let mut r = Reader {
        msg: reply,
        at: start,
    };
    let key_name = r.name()?;
    r.take(8)?; // type, class, TTL
    r.u16()?; // rdlength
    let algorithm = r.name()?;
    let time = r.take(6)?.to_vec();
    let fudge = r.u16()?;
    let mac_len = r.u16()?;
    let mac = r.take(usize::from(mac_len))?.to_vec();
    let original_id = r.u16()?;
    let error = r.u16()?;
    let other_len = r.u16()?;
    let other = r.take(usize::from(other_len))?.to_vec();
    if key_name != wire_name(&key.name)? || algorithm != wire_name("hmac-sha256")? {
        return Err(dns_err("the reply is signed with another key"));
    }
    if error != 0 {
        return Err(dns_err(format!("the reply's TSIG carries error {error}")));
    }
    let mut signed_at = [0u8; 8];
    signed_at[2..].copy_from_slice(&time);
    if u64::from_be_bytes(signed_at).abs_diff(now) > u64::from(fudge) {
        return Err(dns_err("the reply's TSIG time is outside its fudge"));
    }
    let mut signed = Vec::with_capacity(reply.len() + request_mac.len() + 2);
    push_u16(
        &mut signed,
        u16::try_from(request_mac.len()).unwrap_or(u16::MAX),
    );
    signed.extend(request_mac);
    signed.extend(&reply[..start]);
    signed[2 + request_mac.len()..][..2].copy_from_slice(&original_id.to_be_bytes());
    let ar = 2 + request_mac.len() + 10;
    let count = u16::from_be_bytes([signed[ar], signed[ar + 1]]).saturating_sub(1);
    signed[ar..ar + 2].copy_from_slice(&count.to_be_bytes());
    signed.extend(&key_name);
    push_u16(&mut signed, CLASS_ANY);
    signed.extend(0u32.to_be_bytes());
    signed.extend(&algorithm);
    signed.extend(&time);
    push_u16(&mut signed, fudge);
    push_u16(&mut signed, error);
    push_u16(&mut signed, other_len);
    signed.extend(&other);
    ring::hmac::verify(&hmac_key(key), &signed, &mac)
        .map_err(|_| dns_err("the reply's TSIG MAC is wrong (forged or another key)"))
}

impl Rfc2136 {
    /// The UPDATE message adding (`class IN`) or removing (`class NONE`)
    /// one TXT value, signed when a key is set (then with its MAC, which
    /// the reply's MAC covers).
    fn message(
        &self,
        id: u16,
        name: &str,
        value: &str,
        add: bool,
        now: u64,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
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
        let mac = match &self.key {
            Some(key) => Some(sign(&mut msg, key, id, now, &[])?),
            None => None,
        };
        Ok((msg, mac))
    }

    async fn update(&self, name: &str, value: &str, add: bool) -> Result<()> {
        let id: u16 = rand::random();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (msg, request_mac) = self.message(id, name, value, add, now)?;
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
        // A success only counts when the server signed it (anyone on the
        // path could forge an unsigned NOERROR).
        if let (Some(key), Some(mac)) = (&self.key, &request_mac) {
            verify_reply(&buf[..n], key, mac, now)
                .map_err(|e| dns_err(format!("{}: update of {name}: {e}", self.server)))?;
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
        let (msg, mac) = p
            .message(7, "_acme-challenge.example.com", "abc", true, 0)
            .unwrap();
        assert!(mac.is_none());
        assert_eq!(&msg[..12], &[0, 7, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
        assert!(msg.ends_with(&[0, 16, 0, 1, 0, 0, 0, 60, 0, 4, 3, b'a', b'b', b'c']));
        assert!(wire_name("a..b").is_err());
    }

    /// A NOERROR reply to `request` as a server holding `key` signs it.
    fn signed_reply(request: &[u8], request_mac: &[u8], key: &TsigKey, now: u64) -> Vec<u8> {
        // Header (QR set, NOERROR) and the zone section, echoed.
        let zone_end = 12 + wire_name("example.com").unwrap().len() + 4;
        let mut reply = request[..zone_end].to_vec();
        reply[2] |= 0x80;
        reply[6..12].copy_from_slice(&[0; 6]);
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        sign(&mut reply, key, id, now, request_mac).unwrap();
        reply
    }

    #[test]
    fn a_reply_counts_only_with_the_servers_mac_over_the_request_mac() {
        let key = TsigKey {
            name: "ferry".into(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        };
        let p = Rfc2136 {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "example.com".into(),
            key: Some(key.clone()),
            timeout: Duration::from_secs(1),
        };
        let now = 1_700_000_000;
        let (request, mac) = p
            .message(9, "_acme-challenge.example.com", "abc", true, now)
            .unwrap();
        let mac = mac.unwrap();
        let reply = signed_reply(&request, &mac, &key, now);
        verify_reply(&reply, &key, &mac, now + 5).unwrap();
        // Tampered: a flipped header bit, a flipped MAC byte.
        let mut bad = reply.clone();
        bad[3] ^= 0x01;
        assert!(verify_reply(&bad, &key, &mac, now).is_err());
        let mut bad = reply.clone();
        let last = bad.len() - 10;
        bad[last] ^= 0xff;
        assert!(verify_reply(&bad, &key, &mac, now).is_err());
        // Signed over another request, with another key, unsigned, stale.
        assert!(verify_reply(&reply, &key, &[0u8; 32], now).is_err());
        let other = TsigKey {
            secret: b"another-key".to_vec(),
            ..key.clone()
        };
        assert!(verify_reply(&reply, &other, &mac, now).is_err());
        let zone_end = 12 + wire_name("example.com").unwrap().len() + 4;
        let mut unsigned = reply[..zone_end].to_vec();
        unsigned[10..12].copy_from_slice(&[0, 0]);
        let err = verify_reply(&unsigned, &key, &mac, now).unwrap_err();
        assert!(err.to_string().contains("not signed"), "{err}");
        assert!(verify_reply(&reply, &key, &mac, now + 3600).is_err());
    }
}
