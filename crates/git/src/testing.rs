//! A real smart-HTTP git server for tests (feature `testing`): hyper on
//! 127.0.0.1, running `git http-backend` as CGI for each request, so the
//! client side talks to the same protocol code GitHub or Gitea would speak.
//!
//! Repositories can be private (basic auth with a token, `401`/`403`
//! otherwise),
//! are filled through [`TestRepo::commit`] (fixed author and dates, so
//! commit ids are stable) and allow fetching any commit by id. The server
//! counts requests, so tests can assert that a fetch happened.
//!
//! [`SshServer`] serves the same repositories over ssh with a real OpenSSH
//! server, where the machine has one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::refs::CommitSha;

/// The fixed author and dates of every test commit.
const AUTHOR_ENV: [(&str, &str); 6] = [
    ("GIT_AUTHOR_NAME", "Ferry Test"),
    ("GIT_AUTHOR_EMAIL", "test@ferry.invalid"),
    ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
    ("GIT_COMMITTER_NAME", "Ferry Test"),
    ("GIT_COMMITTER_EMAIL", "test@ferry.invalid"),
    ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
];

/// The server. Stops accepting when dropped.
pub struct GitServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
    // Last: removed after the accept loop is stopped.
    _root: tempfile::TempDir,
}

struct State {
    root: PathBuf,
    /// Repository directory name (`app.git`) to the token it requires.
    tokens: Mutex<HashMap<String, String>>,
    requests: AtomicUsize,
}

impl GitServer {
    /// Starts a server on 127.0.0.1 with a random port.
    pub async fn start() -> io::Result<GitServer> {
        let root = tempfile::Builder::new()
            .prefix("ferry-git-server-")
            .tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            root: root.path().to_owned(),
            tokens: Mutex::new(HashMap::new()),
            requests: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(GitServer {
            addr,
            state,
            accept,
            _root: root,
        })
    }

    /// `http://127.0.0.1:<port>/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// Requests served so far (401s included).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// A new, empty public repository.
    pub async fn create_repo(&self, name: &str) -> io::Result<TestRepo> {
        let bare = self.state.root.join(format!("{name}.git"));
        let bare_str = utf8(&bare)?;
        git(
            &self.state.root,
            &["init", "--quiet", "--bare", "--", bare_str],
        )
        .await?;
        let work = tempfile::Builder::new()
            .prefix("ferry-git-work-")
            .tempdir()?;
        git(work.path(), &["init", "--quiet"]).await?;
        let repo = TestRepo {
            url: self.url(name),
            bare,
            work,
        };
        repo.set_config("uploadpack.allowAnySHA1InWant", "true")
            .await?;
        repo.set_config("uploadpack.allowFilter", "true").await?;
        Ok(repo)
    }

    /// A new repository that answers only requests with basic auth whose
    /// password is `token` (any user name).
    pub async fn create_private_repo(&self, name: &str, token: &str) -> io::Result<TestRepo> {
        let repo = self.create_repo(name).await?;
        self.state
            .tokens
            .lock()
            .map_err(|_| io::Error::other("token map poisoned"))?
            .insert(format!("{name}.git"), token.to_owned());
        Ok(repo)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A repository on a [`GitServer`], with a work tree to commit from.
pub struct TestRepo {
    url: String,
    bare: PathBuf,
    work: tempfile::TempDir,
}

impl TestRepo {
    /// The URL clients use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bare repository the server serves.
    pub fn bare_path(&self) -> &Path {
        &self.bare
    }

    /// Sets a config value of the served repository.
    pub async fn set_config(&self, key: &str, value: &str) -> io::Result<()> {
        git(&self.bare, &["config", key, value]).await.map(drop)
    }

    /// Writes `files` (path, content) on `branch`, commits and pushes;
    /// returns the new commit.
    pub async fn commit(&self, branch: &str, files: &[(&str, &str)]) -> io::Result<CommitSha> {
        self.switch(branch).await?;
        for (path, content) in files {
            let path = self.work.path().join(path);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::write(path, content).await?;
        }
        self.commit_and_push(branch).await
    }

    /// Deletes `paths` on `branch`, commits and pushes.
    pub async fn remove(&self, branch: &str, paths: &[&str]) -> io::Result<CommitSha> {
        self.switch(branch).await?;
        let mut args = vec!["rm", "--quiet", "--"];
        args.extend_from_slice(paths);
        git(self.work.path(), &args).await?;
        self.commit_and_push(branch).await
    }

    /// Onto `branch`, creating it from the current commit if needed.
    async fn switch(&self, branch: &str) -> io::Result<()> {
        let work = self.work.path();
        let heads = format!("refs/heads/{branch}");
        if git(work, &["rev-parse", "--verify", "--quiet", &heads])
            .await
            .is_ok()
        {
            git(work, &["switch", "--quiet", branch]).await?;
        } else if git(work, &["rev-parse", "--verify", "--quiet", "HEAD"])
            .await
            .is_ok()
        {
            git(work, &["switch", "--quiet", "--create", branch]).await?;
        } else {
            git(work, &["symbolic-ref", "HEAD", &heads]).await?;
        }
        Ok(())
    }

    async fn commit_and_push(&self, branch: &str) -> io::Result<CommitSha> {
        let work = self.work.path();
        git(work, &["add", "--all"]).await?;
        let count = git(work, &["rev-list", "--count", "--all"])
            .await
            .unwrap_or_default();
        let message = format!("commit {}", count.trim().parse::<u32>().unwrap_or(0) + 1);
        git(
            work,
            &["commit", "--quiet", "--allow-empty", "-m", &message],
        )
        .await?;
        let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        git(
            work,
            &["push", "--quiet", "--", utf8(&self.bare)?, &refspec],
        )
        .await?;
        let sha = git(work, &["rev-parse", "HEAD"]).await?;
        CommitSha::parse(sha.trim()).map_err(io::Error::other)
    }
}

/// An OpenSSH server (`/usr/sbin/sshd`) on 127.0.0.1 for tests of the ssh
/// transport and its host key checking: its own ed25519 host key, one
/// client key allowed, logging in as root and serving any repository by
/// absolute path (such as a [`TestRepo`]'s bare one). Stops when dropped.
///
/// It needs the server binary (Debian: openssh-server) and root;
/// [`SshServer::unavailable`] says why a machine cannot run it.
pub struct SshServer {
    port: u16,
    host_key: String,
    other_key: String,
    client_key: String,
    log: PathBuf,
    _child: tokio::process::Child,
    // Last: removed after the server is killed.
    _dir: tempfile::TempDir,
}

const SSHD: &str = "/usr/sbin/sshd";

impl SshServer {
    /// Why this machine cannot run the server, if it cannot.
    pub fn unavailable() -> Option<&'static str> {
        if !Path::new(SSHD).exists() {
            return Some("no /usr/sbin/sshd (install openssh-server)");
        }
        if !rustix::process::geteuid().is_root() {
            return Some("not root (the server logs clients in as root)");
        }
        // sshd's privilege separation directory, which its service unit
        // creates before starting it.
        if std::fs::create_dir_all("/run/sshd").is_err() {
            return Some("cannot create /run/sshd");
        }
        None
    }

    /// Starts a server on a free port and waits until it listens.
    pub async fn start() -> io::Result<SshServer> {
        if let Some(why) = SshServer::unavailable() {
            return Err(io::Error::other(why));
        }
        let dir = tempfile::Builder::new().prefix("ferry-sshd-").tempdir()?;
        let d = utf8(dir.path())?.to_owned();
        let host_key = keygen(dir.path(), "host").await?;
        let other_key = keygen(dir.path(), "other").await?;
        let client_public = keygen(dir.path(), "client").await?;
        tokio::fs::write(
            dir.path().join("authorized_keys"),
            format!("{client_public}\n"),
        )
        .await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPidFile none\n"
        );
        tokio::fs::write(dir.path().join("sshd_config"), config).await?;
        let log = dir.path().join("sshd.log");
        let child = tokio::process::Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let client_key = tokio::fs::read_to_string(dir.path().join("client")).await?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(SshServer {
                    port,
                    host_key,
                    other_key,
                    client_key,
                    log,
                    _child: child,
                    _dir: dir,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(io::Error::other(format!("sshd did not listen: {log}")))
    }

    /// `ssh://root@127.0.0.1:<port>/<repo's bare path>`.
    pub fn url(&self, repo: &TestRepo) -> io::Result<String> {
        Ok(format!(
            "ssh://root@127.0.0.1:{}{}",
            self.port,
            utf8(repo.bare_path())?
        ))
    }

    /// The server's known_hosts line: `[127.0.0.1]:<port> ssh-ed25519 AAAA...`.
    pub fn known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }

    /// A known_hosts line for the server with a key that is not its own.
    pub fn wrong_known_hosts(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.other_key)
    }

    /// The private key (OpenSSH format) the server lets in.
    pub fn client_key(&self) -> &str {
        &self.client_key
    }

    /// What the server logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A new ed25519 key `dir/name`; returns its public `type base64` part.
async fn keygen(dir: &Path, name: &str) -> io::Result<String> {
    let path = dir.join(name);
    let status = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        return Err(io::Error::other(format!("ssh-keygen failed: {status}")));
    }
    let public = tokio::fs::read_to_string(path.with_extension("pub")).await?;
    Ok(public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn utf8(path: &Path) -> io::Result<&str> {
    path.to_str()
        .ok_or_else(|| io::Error::other("temp path is not UTF-8"))
}

/// Runs the local git for test setup (not the code under test).
async fn git(dir: &Path, args: &[&str]) -> io::Result<String> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(AUTHOR_ENV)
        .stdin(Stdio::null())
        .output()
        .await?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            // A client hanging up mid-request is not the server's problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    Ok(match serve(&state, req).await {
        Ok(reply) => reply,
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    })
}

async fn serve(state: &State, req: Request<Incoming>) -> io::Result<Reply> {
    let path = req.uri().path().to_owned();
    let repo = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let required = state
        .tokens
        .lock()
        .map_err(|_| io::Error::other("token map poisoned"))?
        .get(repo)
        .cloned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let authorization = header("authorization");
    let user = match required {
        None => None,
        Some(token) => match basic_auth(&authorization) {
            Some((user, password)) if password == token => Some(user),
            // A wrong token is echoed back as text/plain, which git shows
            // as `remote: ...`: clients must redact what servers repeat.
            Some(_) => {
                let text = format!("credentials not valid: {authorization}\n");
                return Ok(plain(StatusCode::FORBIDDEN, &text));
            }
            None => {
                let mut reply = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
                reply.headers_mut().insert(
                    "www-authenticate",
                    http::HeaderValue::from_static("Basic realm=\"ferry-test\""),
                );
                return Ok(reply);
            }
        },
    };
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &state.root)
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path)
        .env("REQUEST_METHOD", req.method().as_str())
        .env("QUERY_STRING", req.uri().query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", user.unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    cgi.env("CONTENT_LENGTH", body.len().to_string());
    let mut child = cgi.spawn()?;
    // Write while the backend reads; it may answer before reading it all.
    let stdin = child.stdin.take();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&body).await;
        }
    });
    let output = child.wait_with_output().await?;
    let _ = writer.await;
    cgi_response(&output.stdout)
}

/// `Authorization: Basic b64(user:password)`.
fn basic_auth(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A CGI answer: headers (`Status:` among them), a blank line, the body.
fn cgi_response(output: &[u8]) -> io::Result<Reply> {
    let (head, body) = split_head(output)
        .ok_or_else(|| io::Error::other("http-backend answered without headers"))?;
    let head = String::from_utf8_lossy(head);
    let mut builder = Response::builder();
    for line in head.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad CGI header {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("500");
            builder = builder.status(code.parse::<u16>().map_err(io::Error::other)?);
        } else {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(io::Error::other)
}

fn split_head(output: &[u8]) -> Option<(&[u8], &[u8])> {
    for separator in [&b"\r\n\r\n"[..], &b"\n\n"[..]] {
        if let Some(at) = output.windows(separator.len()).position(|w| w == separator) {
            return Some((&output[..at], &output[at + separator.len()..]));
        }
    }
    None
}

fn plain(status: StatusCode, text: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text.to_owned())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
