//! Running the system `git` safely: argv only, a scrubbed environment, a
//! private `HOME`, credentials through the environment, a deadline, capped
//! output and redacted errors.
//!
//! Why the environment for credentials: a child's argv is readable by every
//! user in `/proc/<pid>/cmdline`, its environment only by the same user.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::auth::{Auth, Remote};
use crate::error::{Error, Result};
use crate::repo_url::Transport;

/// How much of git's stderr is read, and how much of it an error shows.
const STDERR_CAP: usize = 64 * 1024;
const STDERR_SHOWN: usize = 400;

/// Variables kept from Ferry's own environment; everything else (every
/// `GIT_*`, `SSH_AUTH_SOCK`, askpass helpers) is dropped.
const PASSTHROUGH_ENV: [&str; 10] = [
    "PATH",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Configuration given to every git command with `-c`. Hooks and
/// credential helpers are off, and no background gc outlives the command.
const CONFIG: [&str; 8] = [
    "protocol.file.allow=never",
    "core.hooksPath=/dev/null",
    "credential.helper=",
    "gc.auto=0",
    "maintenance.auto=false",
    "init.defaultBranch=main",
    "advice.detachedHead=false",
    "fetch.recurseSubmodules=false",
];

/// One operation's sandbox: a private temp dir (`HOME`, working dir, ssh
/// key, known_hosts, scratch repos), the credential environment and what to
/// redact. Dropping it deletes the dir and the key with it.
pub(crate) struct Session {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    secrets: Vec<String>,
    auth: AuthKind,
}

/// Which credentials were given, for error hints.
#[derive(Clone, Copy)]
enum AuthKind {
    None,
    Token,
    SshKey,
}

impl Session {
    pub(crate) fn new(remote: &Remote, timeout: Duration) -> Result<Session> {
        remote.validate()?;
        // 0700: nobody else may read the key or the scratch repos (the
        // default follows the umask, usually 0755).
        let dir = tempfile::Builder::new()
            .prefix("ferry-git-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io("creating a private temp dir for git", e))?;
        let mut env = vec![
            ("HOME", path_string(dir.path())?),
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
            // Fail instead of fetching blobs behind our back in the
            // blob-less repos of `changed_paths`.
            ("GIT_NO_LAZY_FETCH", "1".into()),
            ("LC_ALL", "C".into()),
        ];
        let transport = remote.url.transport();
        env.push((
            "GIT_ALLOW_PROTOCOL",
            match transport {
                Transport::Http => "https:ssh:http",
                Transport::Https | Transport::Ssh => "https:ssh",
            }
            .into(),
        ));
        let mut secrets = remote.auth.secrets();
        if let Auth::Token { username, token } = &remote.auth {
            let basic = B64.encode(format!("{username}:{token}"));
            env.push(("GIT_CONFIG_COUNT", "1".into()));
            env.push(("GIT_CONFIG_KEY_0", "http.extraHeader".into()));
            env.push((
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            ));
            secrets.push(basic);
        }
        if transport == Transport::Ssh {
            env.push(("GIT_SSH_VARIANT", "ssh".into()));
            env.push(("GIT_SSH_COMMAND", ssh_command(dir.path(), remote, timeout)?));
        }
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let auth = match remote.auth {
            Auth::None => AuthKind::None,
            Auth::Token { .. } => AuthKind::Token,
            Auth::SshKey { .. } => AuthKind::SshKey,
        };
        Ok(Session {
            dir,
            env,
            secrets,
            auth,
        })
    }

    /// The session's private dir: the working dir of commands that need no
    /// repository, and room for scratch repos.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces every credential in `text`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |acc, secret| {
                acc.replace(secret.as_str(), "<redacted>")
            })
    }

    /// The error for a failed command, with a hint where git's reason is a
    /// known one.
    pub(crate) fn failure(&self, action: &'static str, output: &Output) -> Error {
        Error::Git {
            action,
            status: describe(output.status),
            hint: hint(&output.stderr, self.auth),
            stderr: output.stderr.clone(),
        }
    }
}

/// `GIT_SSH_COMMAND` (run by a shell, so only our own quoted temp paths and
/// fixed words go in it; the key and host keys go in files).
///
/// With the remote's known_hosts lines (`Remote::known_hosts`), ssh checks
/// the server's host key strictly against them alone, as the build Job
/// does. Without, `accept-new` trusts whatever key the server shows: the
/// file starts empty in every session, so this is no pinning at all, only
/// encryption. `-F /dev/null` and `GlobalKnownHostsFile=/dev/null` keep the
/// ssh config and host keys of the machine Ferry runs on out of it.
fn ssh_command(dir: &Path, remote: &Remote, timeout: Duration) -> Result<String> {
    let known_hosts_path = dir.join("known_hosts");
    let checking = match remote.pinned_hosts() {
        Some(lines) => {
            let mut text = lines.trim_end().to_owned();
            text.push('\n');
            write_private(&known_hosts_path, &text, "the SSH host keys")?;
            "yes"
        }
        None => "accept-new",
    };
    let known_hosts = shell_quote(&known_hosts_path)?;
    let mut command = format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking={checking} \
         -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null \
         -o ConnectTimeout={}",
        timeout.as_secs().max(1)
    );
    if let Auth::SshKey {
        private_key_openssh,
    } = &remote.auth
    {
        let path = dir.join("id");
        let mut key = private_key_openssh.trim().to_owned();
        // OpenSSH refuses a key without its final newline.
        key.push('\n');
        write_private(&path, &key, "the SSH key")?;
        command.push_str(&format!(
            " -i {} -o IdentitiesOnly=yes",
            shell_quote(&path)?
        ));
    }
    Ok(command)
}

/// Writes `text` to a new 0600 file at `path`.
fn write_private(path: &Path, text: &str, what: &str) -> Result<()> {
    let context = || format!("writing {what} to a private temp file");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(context(), e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(context(), e))
}

fn path_string(path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        Error::io(
            "the temp dir path is not UTF-8; set TMPDIR to a plain path",
            std::io::ErrorKind::InvalidData.into(),
        )
    })
}

fn shell_quote(path: &Path) -> Result<String> {
    let path = path_string(path)?;
    if path.contains('\'') {
        return Err(Error::io(
            "the temp dir path contains a quote; set TMPDIR to a plain path",
            std::io::ErrorKind::InvalidData.into(),
        ));
    }
    Ok(format!("'{path}'"))
}

/// One git command to run.
pub(crate) struct Invocation<'a> {
    /// What it does, for errors: "ls-remote", "fetch", ...
    pub action: &'static str,
    pub args: Vec<OsString>,
    pub cwd: &'a Path,
    /// How much stdout to keep; the rest is read and dropped.
    pub stdout_cap: usize,
}

impl<'a> Invocation<'a> {
    pub(crate) fn new<I, S>(action: &'static str, cwd: &'a Path, args: I) -> Invocation<'a>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Invocation {
            action,
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            cwd,
            stdout_cap: 1024 * 1024,
        }
    }

    /// Appends a path argument (paths need not be UTF-8).
    pub(crate) fn arg_path(mut self, path: &Path) -> Self {
        self.args.push(path.as_os_str().to_owned());
        self
    }

    pub(crate) fn stdout_cap(mut self, cap: usize) -> Self {
        self.stdout_cap = cap;
        self
    }
}

/// What a finished command left.
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    /// Redacted, one line, at most a few hundred bytes (the end, where git
    /// puts its `fatal:` reason).
    pub stderr: String,
}

/// Runs one command in `session`; a non-zero exit is not an error here
/// (callers read some exit codes, see [`Session::failure`]).
pub(crate) async fn run(
    binary: &Path,
    timeout: Duration,
    session: &Session,
    invocation: Invocation<'_>,
) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear();
    for var in PASSTHROUGH_ENV {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    cmd.envs(session.env.iter().map(|(k, v)| (k, v)));
    for config in CONFIG {
        cmd.arg("-c").arg(config);
    }
    cmd.args(&invocation.args)
        .current_dir(invocation.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout also ends the helpers git
        // starts (git-remote-https, ssh), not just git.
        .process_group(0);
    tracing::debug!(action = invocation.action, args = ?invocation.args, "running git");
    let mut child = cmd.spawn().map_err(Error::Spawn)?;
    let mut group = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw),
    );
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = tokio::time::timeout(timeout, async {
        tokio::join!(
            read_capped(stdout, invocation.stdout_cap),
            read_capped(stderr, STDERR_CAP),
            child.wait(),
        )
    })
    .await;
    let Ok((stdout, stderr, status)) = finished else {
        group.kill();
        // Reap it; it was just sent SIGKILL, so this is immediate.
        let _ = child.kill().await;
        tracing::warn!(action = invocation.action, ?timeout, "git timed out");
        return Err(Error::Timeout {
            action: invocation.action,
            after: timeout,
        });
    };
    // git exited and was reaped: its pid (and group id) may be reused.
    group.disarm();
    let status = status.map_err(|e| Error::io("waiting for git", e))?;
    let (stdout, stdout_truncated) = stdout.map_err(|e| Error::io("reading git's output", e))?;
    let (stderr, _) = stderr.map_err(|e| Error::io("reading git's output", e))?;
    let stderr = shorten(&session.redact(&String::from_utf8_lossy(&stderr)));
    if !status.success() {
        tracing::debug!(action = invocation.action, %stderr, "git failed");
    }
    Ok(Output {
        status,
        stdout,
        stdout_truncated,
        stderr,
    })
}

/// SIGKILLs the process group on drop (a cancelled operation) or on
/// [`GroupGuard::kill`] (a timeout), unless disarmed.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH: the group is already gone, which is what we wanted.
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads everything (a full pipe would block git), keeping `cap` bytes.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut truncated = false;
    let Some(mut reader) = reader else {
        return Ok((kept, truncated));
    };
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap - kept.len();
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// git's stderr as one line, its last [`STDERR_SHOWN`] bytes.
fn shorten(stderr: &str) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if line.len() <= STDERR_SHOWN {
        return line;
    }
    let mut start = line.len() - STDERR_SHOWN;
    while !line.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &line[start..])
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".into(),
    }
}

/// A plain-words hint for the git failures users cause.
fn hint(stderr: &str, auth: AuthKind) -> Option<&'static str> {
    let s = stderr.to_ascii_lowercase();
    let has = |needle: &str| s.contains(needle);
    if has("not our ref") || has("couldn't find remote ref") || has("no such remote ref") {
        return Some(
            "the commit is not on the server (force-pushed away?), or the server does not allow fetching by commit id",
        );
    }
    if has("could not read username")
        || has("authentication failed")
        || has("access denied")
        || has("returned error: 401")
        || has("returned error: 403")
    {
        return Some(match auth {
            AuthKind::Token => {
                "the server refused the token; check that it is valid, not expired, and can read this repository"
            }
            AuthKind::None | AuthKind::SshKey => {
                "the repository needs credentials; add an access token"
            }
        });
    }
    if has("permission denied (publickey") {
        return Some(match auth {
            AuthKind::SshKey => {
                "the server refused the SSH key; add its public key to the repository as a deploy key"
            }
            AuthKind::None | AuthKind::Token => "the repository needs an SSH key",
        });
    }
    // ssh's words for a host key missing from, or differing from, the
    // pinned known_hosts lines.
    if has("host key verification failed") {
        return Some(
            "the server's SSH host key is not among the integration's known hosts (or it changed); compare it with `ssh-keyscan HOST` and update them",
        );
    }
    if has("could not resolve host") {
        return Some("check the host name in the repository URL");
    }
    if has("connection refused") || has("failed to connect") || has("connection timed out") {
        return Some("the server did not accept the connection; check the host and port");
    }
    if has("not found") || has("does not appear to be a git repository") {
        return Some("check the repository URL, and that the credentials can read it");
    }
    None
}

/// Where the git binary is looked up by default.
pub(crate) fn default_binary() -> PathBuf {
    PathBuf::from("git")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::auth::Provider;
    use crate::repo_url::RepoUrl;

    fn session(auth: Auth, url: &str) -> Session {
        let url = RepoUrl::parse(url).unwrap();
        Session::new(&Remote::new(url, auth), Duration::from_secs(5)).unwrap()
    }

    fn env<'a>(session: &'a Session, key: &str) -> Option<&'a str> {
        session
            .env
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn token_goes_in_an_extra_header_and_is_redacted() {
        let s = session(
            Auth::token_for(Provider::GitHub, "ghp_s3cret"),
            "https://github.com/a/b",
        );
        let header = env(&s, "GIT_CONFIG_VALUE_0").unwrap();
        let basic = B64.encode("x-access-token:ghp_s3cret");
        assert_eq!(header, format!("Authorization: Basic {basic}"));
        assert_eq!(env(&s, "GIT_CONFIG_KEY_0"), Some("http.extraHeader"));
        assert_eq!(env(&s, "GIT_ALLOW_PROTOCOL"), Some("https:ssh"));
        assert!(env(&s, "GIT_SSH_COMMAND").is_none());
        let text = format!("fatal: {basic} x-access-token:ghp_s3cret ghp_s3cret");
        assert_eq!(s.redact(&text), "fatal: <redacted> <redacted> <redacted>");
    }

    #[test]
    fn ssh_key_goes_in_a_private_file() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAkeymaterial\n-----END OPENSSH PRIVATE KEY-----";
        let s = session(
            Auth::SshKey {
                private_key_openssh: key.into(),
            },
            "git@github.com:a/b.git",
        );
        let command = env(&s, "GIT_SSH_COMMAND").unwrap();
        let path = s.dir().join("id");
        assert!(
            command.contains(&format!("-i '{}'", path.display())),
            "{command}"
        );
        assert!(
            command.contains("-o IdentitiesOnly=yes -o") || command.ends_with("IdentitiesOnly=yes")
        );
        assert!(command.contains("BatchMode=yes"));
        // No known hosts given: whatever key the server shows, from an
        // empty file, and none of the machine's own.
        assert!(command.contains("StrictHostKeyChecking=accept-new"));
        assert!(command.contains("-o GlobalKnownHostsFile=/dev/null"));
        assert!(!s.dir().join("known_hosts").exists());
        assert!(!command.contains("keymaterial"));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{key}\n"));
        let dir_mode = std::fs::metadata(s.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o077, 0, "temp dir must be private");
        let dir = s.dir().to_owned();
        drop(s);
        assert!(!dir.exists(), "the key goes with the session");
    }

    const HOSTS: &str = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n\
        [git.example.com]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=";

    fn pinned(url: &str) -> Session {
        let remote = Remote::public(RepoUrl::parse(url).unwrap()).with_known_hosts(HOSTS);
        Session::new(&remote, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn known_hosts_are_written_and_checked_strictly() {
        let s = pinned("ssh://git@git.example.com:2222/team/app.git");
        let command = env(&s, "GIT_SSH_COMMAND").unwrap();
        let path = s.dir().join("known_hosts");
        assert!(
            command.contains("-o StrictHostKeyChecking=yes "),
            "{command}"
        );
        assert!(!command.contains("accept-new"), "{command}");
        assert!(
            command.contains(&format!("-o UserKnownHostsFile='{}'", path.display())),
            "{command}"
        );
        assert!(
            command.contains("-o GlobalKnownHostsFile=/dev/null"),
            "{command}"
        );
        // The lines go in the file, never in the shell-run command.
        assert!(!command.contains("AAAA"), "{command}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HOSTS}\n")
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn known_hosts_are_refused_for_https() {
        let remote = Remote::public(RepoUrl::parse("https://git.example.com/a/b").unwrap())
            .with_known_hosts(HOSTS);
        let err = Session::new(&remote, Duration::from_secs(5))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("knownHosts: "), "{err}");
    }

    /// The command as the real ssh reads it (`ssh -G` prints the options
    /// it would connect with, without connecting), through `/bin/sh` as git
    /// runs it.
    #[test]
    fn ssh_itself_reads_the_host_key_options() {
        if std::process::Command::new("ssh")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("skipped: no ssh client on PATH");
            return;
        }
        let effective = |s: &Session| {
            let command = env(s, "GIT_SSH_COMMAND").unwrap();
            let output = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("{command} -G -p 2222 git@git.example.com"))
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        let strict = pinned("ssh://git@git.example.com:2222/team/app.git");
        let options = effective(&strict);
        let known = strict.dir().join("known_hosts");
        for line in [
            "stricthostkeychecking true".to_owned(),
            format!("userknownhostsfile {}", known.display()),
            "globalknownhostsfile /dev/null".to_owned(),
            "batchmode yes".to_owned(),
        ] {
            assert!(options.lines().any(|l| l == line), "{line}: {options}");
        }
        let tofu = session(Auth::None, "git@git.example.com:team/app.git");
        let options = effective(&tofu);
        assert!(
            options
                .lines()
                .any(|l| l == "stricthostkeychecking accept-new"),
            "{options}"
        );
    }

    /// Behind [`RepoUrl`]'s checks, git itself is told to refuse local
    /// and command-running transports.
    #[tokio::test]
    async fn git_itself_refuses_file_and_ext_transports() {
        let s = session(Auth::None, "https://example.com/a/b");
        let git = default_binary();
        let timeout = Duration::from_secs(20);
        let repo = s.dir().join("local.git");
        let init = Invocation::new("init", s.dir(), ["init", "--bare", "--quiet"]).arg_path(&repo);
        assert!(run(&git, timeout, &s, init).await.unwrap().status.success());
        let file_url = format!("file://{}", repo.display());
        let marker = s.dir().join("ran");
        let ext = format!("ext::touch {}", marker.display());
        for (target, refusal) in [
            (file_url.as_str(), "transport 'file' not allowed"),
            (repo.to_str().unwrap(), "transport 'file' not allowed"),
            (ext.as_str(), "transport 'ext' not allowed"),
        ] {
            let ls = Invocation::new("ls-remote", s.dir(), ["ls-remote", "--", target]);
            let output = run(&git, timeout, &s, ls).await.unwrap();
            assert!(!output.status.success(), "{target}");
            assert!(
                output.stderr.contains(refusal),
                "{target}: {}",
                output.stderr
            );
        }
        assert!(!marker.exists(), "ext:: ran a command");
    }

    #[test]
    fn stderr_is_one_short_line_ending_in_the_reason() {
        let long = format!("{}\nfatal: repository not found\n", "x".repeat(1000));
        let short = shorten(&long);
        assert!(short.len() <= STDERR_SHOWN + 3);
        assert!(short.ends_with("; fatal: repository not found"));
        assert_eq!(shorten("a\n\n b \n"), "a; b");
        let multibyte = "é".repeat(500);
        assert!(shorten(&multibyte).starts_with("..."));
    }

    #[test]
    fn hints_name_the_cause() {
        let token = hint(
            "fatal: could not read Username for 'https://h': terminal prompts disabled",
            AuthKind::Token,
        );
        assert!(token.unwrap().contains("refused the token"));
        let none = hint("remote: HTTP Basic: Access denied", AuthKind::None);
        assert!(none.unwrap().contains("needs credentials"));
        let sha = hint(
            "fatal: remote error: upload-pack: not our ref 1234",
            AuthKind::None,
        );
        assert!(sha.unwrap().contains("not on the server"));
        let host_key = hint(
            "Host key verification failed.; fatal: Could not read from remote repository.",
            AuthKind::SshKey,
        );
        assert!(host_key.unwrap().contains("known hosts"));
        assert!(hint("fatal: something else", AuthKind::None).is_none());
    }
}
