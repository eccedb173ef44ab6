//! A small DNS client for two questions: the TXT records of a name (the
//! domain challenge) and its IPv4 addresses (where the HTTP challenge is
//! fetched from).
//!
//! One UDP query (with recursion desired) to the configured resolver,
//! retried once on timeout, and over TCP when the answer comes back
//! truncated. Enough for the domain challenge (the api's VerifyDomain, the
//! scheduler's re-checks); not a general resolver (no caching, no DNSSEC,
//! no search domains).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

/// The label a domain's TXT challenge is published under.
pub const CHALLENGE_LABEL: &str = "_ferry-challenge";

const TXT: u16 = 16;
const A: u16 = 1;
const IN: u16 = 1;

/// Why a lookup gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the resolver {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("the resolver answered {0}")]
    Rcode(&'static str),
    #[error("malformed DNS answer: {0}")]
    Malformed(&'static str),
    #[error("DNS query failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The resolver in `/etc/resolv.conf` (its first `nameserver`), port 53;
/// 127.0.0.1:53 when there is none.
pub fn system_resolver() -> SocketAddr {
    let ip = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|conf| {
            conf.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("nameserver"))
                    .then(|| words.next()?.split('%').next()?.parse::<IpAddr>().ok())
                    .flatten()
            })
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, 53)
}

/// The TXT records of `name` (each record's strings joined); empty when
/// the name does not exist or has none.
pub async fn txt_records(
    resolver: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>, DnsError> {
    let rdatas = lookup(resolver, name, TXT, timeout).await?;
    rdatas.iter().map(|d| txt_string(d)).collect()
}

/// The IPv4 addresses of `name` (after the resolver followed CNAMEs);
/// empty when the name does not exist or has none.
pub async fn a_records(
    resolver: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>, DnsError> {
    let rdatas = lookup(resolver, name, A, timeout).await?;
    Ok(rdatas
        .iter()
        .filter_map(|d| <[u8; 4]>::try_from(d.as_slice()).ok())
        .map(Ipv4Addr::from)
        .collect())
}

/// The RDATA of every `qtype` answer for `name`.
async fn lookup(
    resolver: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, DnsError> {
    let id: u16 = rand::random();
    let query = encode_question(id, name, qtype)?;
    let bind: SocketAddr = if resolver.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(resolver).await?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        socket.send(&query).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok(got) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await else {
                break;
            };
            let n = got?;
            // Stray datagrams (another id, not an answer) are ignored.
            match decode_answer(id, qtype, &buf[..n]) {
                Ok(Answer::Records(records)) => return Ok(records),
                Ok(Answer::Truncated) => {
                    return over_tcp(resolver, &query, id, qtype, timeout).await;
                }
                Err(DnsError::Malformed("another query's id")) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Err(DnsError::Timeout(resolver))
}

async fn over_tcp(
    resolver: SocketAddr,
    query: &[u8],
    id: u16,
    qtype: u16,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, DnsError> {
    let exchange = async {
        let mut stream = TcpStream::connect(resolver).await?;
        let len = u16::try_from(query.len()).map_err(|_| DnsError::Malformed("query too long"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let n = usize::from(stream.read_u16().await?);
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf).await?;
        match decode_answer(id, qtype, &buf)? {
            Answer::Records(records) => Ok(records),
            Answer::Truncated => Err(DnsError::Malformed("truncated over TCP")),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DnsError::Timeout(resolver))?
}

/// A TXT record's character-strings, joined.
fn txt_string(data: &[u8]) -> Result<String, DnsError> {
    let mut value = Vec::new();
    let mut d = Reader { buf: data, pos: 0 };
    while d.pos < data.len() {
        let n = usize::from(d.take(1)?[0]);
        value.extend_from_slice(d.take(n)?);
    }
    Ok(String::from_utf8_lossy(&value).into_owned())
}

/// What a lookup says about a published token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A TXT record holds the token.
    Present,
    /// The resolver answered, and no record holds the token (in words).
    Missing(String),
    /// No answer to judge by (timeout, SERVFAIL...): says nothing either way.
    Unknown(String),
}

/// Whether a TXT record of `record` holds `token`.
pub async fn txt_proof(
    resolver: SocketAddr,
    record: &str,
    token: &str,
    timeout: Duration,
) -> Proof {
    match txt_records(resolver, record, timeout).await {
        Ok(found) if found.iter().any(|v| v.trim() == token) => Proof::Present,
        Ok(found) if found.is_empty() => Proof::Missing(format!(
            "no TXT record {record} was found; publish one with the value {token} and retry \
             (DNS changes can take a while to show)"
        )),
        Ok(found) => Proof::Missing(format!(
            "the TXT record {record} holds {found:?}, not {token}; publish that value and retry"
        )),
        Err(err) => Proof::Unknown(format!("looking up the TXT record {record} failed: {err}")),
    }
}

/// A query for the TXT records of `name` with id `id`.
pub fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    encode_question(id, name, TXT)
}

/// A query for the `qtype` records of `name` with id `id`.
fn encode_question(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(name.len() + 18);
    out.extend_from_slice(&id.to_be_bytes());
    // Standard query, recursion desired; one question.
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(&mut out, name)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&IN.to_be_bytes());
    Ok(out)
}

fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or(DnsError::Malformed("a label of 1 to 63 bytes"))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

enum Answer {
    /// The RDATA of the answers of the asked type.
    Records(Vec<Vec<u8>>),
    Truncated,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DnsError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or(DnsError::Malformed("answer ends early"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Skips a (possibly compressed) name.
    fn skip_name(&mut self) -> Result<(), DnsError> {
        loop {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                l if l & 0xC0 == 0xC0 => {
                    self.take(1)?;
                    return Ok(());
                }
                l if l & 0xC0 == 0 => {
                    self.take(usize::from(l))?;
                }
                _ => return Err(DnsError::Malformed("bad label")),
            }
        }
    }
}

fn decode_answer(id: u16, qtype: u16, buf: &[u8]) -> Result<Answer, DnsError> {
    let mut r = Reader { buf, pos: 0 };
    if r.u16()? != id {
        return Err(DnsError::Malformed("another query's id"));
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("another query's id"));
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match flags & 0x000F {
        0 => {}
        // NXDOMAIN: no such name, so no record.
        3 => return Ok(Answer::Records(Vec::new())),
        2 => return Err(DnsError::Rcode("SERVFAIL")),
        5 => return Err(DnsError::Rcode("REFUSED")),
        _ => return Err(DnsError::Rcode("an error")),
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    r.take(4)?;
    for _ in 0..questions {
        r.skip_name()?;
        r.take(4)?;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        r.skip_name()?;
        let ty = r.u16()?;
        let class = r.u16()?;
        r.take(4)?;
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        // CNAMEs on the way are followed by the resolver; only the
        // answers of the asked type count.
        if ty != qtype || class != IN {
            continue;
        }
        records.push(data.to_vec());
    }
    Ok(Answer::Records(records))
}

/// An answer to `query` (as [`encode_query`] writes it) holding `records`
/// as TXT records of the question's name; `None` when it is no TXT query.
/// An empty `records` answers NXDOMAIN. For test DNS servers.
pub fn encode_txt_answer(query: &[u8], records: &[String]) -> Option<Vec<u8>> {
    let mut rdatas = Vec::with_capacity(records.len());
    for record in records {
        let mut data = Vec::new();
        for chunk in record.as_bytes().chunks(255) {
            data.push(u8::try_from(chunk.len()).ok()?);
            data.extend_from_slice(chunk);
        }
        rdatas.push(data);
    }
    encode_answer(query, TXT, &rdatas)
}

/// An answer to an A question with `addrs` (NXDOMAIN when empty); `None`
/// when it is no A query. For test DNS servers.
pub fn encode_a_answer(query: &[u8], addrs: &[Ipv4Addr]) -> Option<Vec<u8>> {
    let rdatas: Vec<Vec<u8>> = addrs.iter().map(|a| a.octets().to_vec()).collect();
    encode_answer(query, A, &rdatas)
}

/// The type a query asks for.
pub fn query_type(query: &[u8]) -> Option<u16> {
    let mut r = Reader {
        buf: query,
        pos: 12,
    };
    r.skip_name().ok()?;
    r.u16().ok()
}

fn encode_answer(query: &[u8], want: u16, rdatas: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut r = Reader { buf: query, pos: 0 };
    let id = r.u16().ok()?;
    r.take(10).ok()?;
    let start = r.pos;
    r.skip_name().ok()?;
    let ty = r.u16().ok()?;
    r.u16().ok()?;
    if ty != want {
        return None;
    }
    let question = &query[start..r.pos];
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    let rcode = if rdatas.is_empty() { 3 } else { 0 };
    out.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    out.extend_from_slice(&u16::try_from(rdatas.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for data in rdatas {
        // The question's name, by pointer (offset 12).
        out.extend_from_slice(&[0xC0, 12]);
        out.extend_from_slice(&want.to_be_bytes());
        out.extend_from_slice(&IN.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
        out.extend_from_slice(data);
    }
    Some(out)
}

/// The name a query (as [`encode_query`] writes it) asks about.
pub fn query_name(query: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut pos = 12;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            return Some(labels.join("."));
        }
        labels.push(String::from_utf8_lossy(query.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
}

/// A DNS server on a loopback UDP port that answers TXT and A questions
/// from a table the test edits (NXDOMAIN for names it lacks; SERVFAIL for
/// all while failing): the resolver the domain checks ask in tests.
#[cfg(feature = "testing")]
#[derive(Debug, Clone)]
pub struct TxtServer {
    /// Where it listens (`127.0.0.1:<ephemeral>`).
    pub addr: SocketAddr,
    records: std::sync::Arc<std::sync::Mutex<TxtTable>>,
}

#[cfg(feature = "testing")]
#[derive(Debug, Default)]
struct TxtTable {
    records: std::collections::HashMap<String, Vec<String>>,
    addrs: std::collections::HashMap<String, Vec<Ipv4Addr>>,
    servfail: bool,
}

#[cfg(feature = "testing")]
#[allow(clippy::expect_used)]
impl TxtServer {
    /// Starts answering; it stops when the runtime does.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS socket");
        let addr = socket.local_addr().expect("DNS address");
        let records = std::sync::Arc::<std::sync::Mutex<TxtTable>>::default();
        let table = records.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let query = &buf[..n];
                let Some(name) = query_name(query) else {
                    continue;
                };
                let name = name.to_ascii_lowercase();
                let (txt, addrs, servfail) = {
                    let t = table.lock().expect("records");
                    let txt = t.records.get(&name).cloned().unwrap_or_default();
                    let addrs = t.addrs.get(&name).cloned().unwrap_or_default();
                    (txt, addrs, t.servfail)
                };
                let answer = if servfail {
                    servfail_answer(query)
                } else if query_type(query) == Some(A) {
                    encode_a_answer(query, &addrs)
                } else {
                    encode_txt_answer(query, &txt)
                };
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        Self { addr, records }
    }

    /// Publishes (or, with no values, removes) the TXT records of `name`.
    pub fn set(&self, name: &str, values: &[&str]) {
        let mut table = self.records.lock().expect("records");
        if values.is_empty() {
            table.records.remove(name);
        } else {
            table.records.insert(
                name.to_owned(),
                values.iter().map(|v| (*v).to_owned()).collect(),
            );
        }
    }

    /// Points (or, with no addresses, un-points) `name` at `addrs`.
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        let mut table = self.records.lock().expect("records");
        if addrs.is_empty() {
            table.addrs.remove(name);
        } else {
            table.addrs.insert(name.to_owned(), addrs.to_vec());
        }
    }

    /// Answers every question SERVFAIL (a broken resolver) while `on`.
    pub fn fail(&self, on: bool) {
        self.records.lock().expect("records").servfail = on;
    }
}

/// A SERVFAIL answer to `query` (its header and question, no records).
#[cfg(feature = "testing")]
fn servfail_answer(query: &[u8]) -> Option<Vec<u8>> {
    let ty = query_type(query)?;
    let mut answer = encode_answer(query, ty, &[])?;
    // QR, opcode and RD kept from the answer; RCODE 2 (SERVFAIL).
    answer[3] = (answer[3] & 0xF0) | 2;
    Some(answer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips_with_long_records() {
        let query = encode_query(7, "_ferry-challenge.example.com").unwrap();
        assert_eq!(
            query_name(&query).as_deref(),
            Some("_ferry-challenge.example.com")
        );
        let long = "x".repeat(300);
        let answer = encode_txt_answer(&query, &["abc".into(), long.clone()]).unwrap();
        let Answer::Records(records) = decode_answer(7, TXT, &answer).unwrap() else {
            panic!("truncated")
        };
        let records: Vec<String> = records.iter().map(|d| txt_string(d).unwrap()).collect();
        assert_eq!(records, vec!["abc".to_owned(), long]);
        // Another id is not our answer; NXDOMAIN is no record.
        assert!(decode_answer(8, TXT, &answer).is_err());
        let none = encode_txt_answer(&query, &[]).unwrap();
        let Answer::Records(records) = decode_answer(7, TXT, &none).unwrap() else {
            panic!("truncated")
        };
        assert!(records.is_empty());
    }

    #[test]
    fn bad_names_and_short_answers_are_errors() {
        assert!(encode_query(1, "a..b").is_err());
        assert!(encode_query(1, &format!("{}.com", "a".repeat(64))).is_err());
        let query = encode_query(7, "example.com").unwrap();
        let answer = encode_txt_answer(&query, &["abc".into()]).unwrap();
        assert!(decode_answer(7, TXT, &answer[..answer.len() - 2]).is_err());
    }

    #[test]
    fn an_a_answer_round_trips() {
        let query = encode_question(9, "shop.example.com", A).unwrap();
        assert_eq!(query_type(&query), Some(A));
        assert!(encode_txt_answer(&query, &["x".into()]).is_none());
        let ip = Ipv4Addr::new(203, 0, 113, 7);
        let answer = encode_a_answer(&query, &[ip]).unwrap();
        let Answer::Records(records) = decode_answer(9, A, &answer).unwrap() else {
            panic!("truncated")
        };
        assert_eq!(records, vec![ip.octets().to_vec()]);
        // TXT answers in an A reply are not addresses.
        let Answer::Records(records) = decode_answer(9, TXT, &answer).unwrap() else {
            panic!("truncated")
        };
        assert!(records.is_empty());
    }
}
