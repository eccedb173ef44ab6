//! An SMTP sink on loopback speaking just enough SMTP for lettre: AUTH
//! PLAIN accepted, and plain, STARTTLS or implicit TLS with a certificate
//! for 127.0.0.1 / localhost issued by this test binary's own CA
//! ([`test_ca_pem`]; trust it with `SmtpTrust::from_pem`).

use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How the sink talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// No TLS at all (no STARTTLS offered).
    Plain,
    /// Plain greeting, STARTTLS offered and required before MAIL.
    StartTls,
    /// TLS from the first byte.
    Tls,
}

/// A message the sink received.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Every command line, in order (both sides of a STARTTLS).
    pub commands: Vec<String>,
    pub data: String,
    /// Whether the message itself went over TLS.
    pub tls: bool,
}

/// The running sink.
#[derive(Debug, Clone)]
pub struct SmtpSink {
    pub port: u16,
    inbox: Arc<Mutex<Vec<Received>>>,
}

struct TestCa {
    pem: String,
    acceptor: TlsAcceptor,
}

/// This binary's CA and a TLS acceptor with a leaf it issued.
fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let root_key = rcgen::KeyPair::generate().unwrap();
        let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root.distinguished_name
            .push(rcgen::DnType::CommonName, "ferry smtp test CA");
        let root_cert = root.self_signed(&root_key).unwrap();
        let issuer = rcgen::Issuer::new(root, root_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        TestCa {
            pem: root_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    })
}

/// The PEM of the CA that issued the sink's certificate.
pub fn test_ca_pem() -> &'static str {
    &ca().pem
}

/// What one session step came to.
enum Next<S> {
    Done,
    /// The client asked for STARTTLS and was told to go ahead.
    Upgrade(S),
}

impl SmtpSink {
    /// Starts a sink on 127.0.0.1 talking `mode`.
    pub async fn start(mode: SmtpMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = SmtpSink {
            port: listener.local_addr().unwrap().port(),
            inbox: Arc::default(),
        };
        let inbox = sink.inbox.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let mut got = Received::default();
                    serve(stream, mode, &mut got).await;
                    inbox.lock().unwrap().push(got);
                });
            }
        });
        sink
    }

    /// What every finished connection sent.
    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().clone()
    }

    /// The connections that delivered a message.
    pub fn messages(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|m| !m.data.is_empty())
            .collect()
    }
}

async fn serve(stream: tokio::net::TcpStream, mode: SmtpMode, got: &mut Received) {
    let acceptor = &ca().acceptor;
    match mode {
        SmtpMode::Plain => {
            session(stream, false, got).await;
        }
        SmtpMode::StartTls => {
            if let Next::Upgrade(stream) = session(stream, true, got).await {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                got.tls = true;
                session(tls, false, got).await;
            }
        }
        SmtpMode::Tls => {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            got.tls = true;
            session(tls, false, got).await;
        }
    }
}

/// Writes `reply` and flushes it (a TLS stream holds records until then).
async fn say<S: AsyncWrite + Unpin>(io: &mut S, reply: &[u8]) -> bool {
    io.write_all(reply).await.is_ok() && io.flush().await.is_ok()
}

/// Talks SMTP on `stream` until QUIT, EOF or (when `offer_starttls`) a
/// STARTTLS, which hands the stream back for the handshake. A greeting is
/// sent unless this is the TLS half of a STARTTLS session.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    offer_starttls: bool,
    got: &mut Received,
) -> Next<S> {
    let mut io = BufReader::new(stream);
    let upgraded = got.tls && !got.commands.is_empty();
    if !upgraded && !say(io.get_mut(), b"220 sink ESMTP\r\n").await {
        return Next::Done;
    }
    let mut in_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        match io.read_line(&mut line).await {
            Ok(0) | Err(_) => return Next::Done,
            Ok(_) => {}
        }
        let text = line.trim_end_matches(['\r', '\n']).to_owned();
        if in_data {
            if text == "." {
                in_data = false;
                say(io.get_mut(), b"250 queued\r\n").await;
            } else {
                got.data.push_str(&text);
                got.data.push('\n');
            }
            continue;
        }
        got.commands.push(text.clone());
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if offer_starttls => b"250-sink\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n",
            "EHLO" => b"250-sink\r\n250 AUTH PLAIN LOGIN\r\n",
            "HELO" => b"250 sink\r\n",
            "STARTTLS" if offer_starttls => {
                say(io.get_mut(), b"220 go ahead\r\n").await;
                return Next::Upgrade(io.into_inner());
            }
            "AUTH" => b"235 ok\r\n",
            // A STARTTLS sink takes no mail in the clear.
            "MAIL" if offer_starttls => b"530 must issue STARTTLS first\r\n",
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
            "DATA" => {
                in_data = true;
                b"354 go on\r\n"
            }
            "QUIT" => {
                say(io.get_mut(), b"221 bye\r\n").await;
                return Next::Done;
            }
            _ => b"502 no\r\n",
        };
        if !say(io.get_mut(), reply).await {
            return Next::Done;
        }
    }
}
