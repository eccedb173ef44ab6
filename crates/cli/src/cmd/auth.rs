//! `login`, `logout`, `whoami`, `context`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use ferry_proto::ferry::v1 as pb;

use crate::cli::{ContextCmd, LoginArgs};
use crate::config::Context;
use crate::error::{CliError, Result, exit};
use crate::session::{Session, connect};
use pb::auth_service_client::AuthServiceClient;

/// `ferry login`.
pub async fn login(s: &mut Session, args: LoginArgs) -> Result<()> {
    let name = s.context_name().unwrap_or_else(|| "default".into());
    let (server, ca_file) = s.server()?;
    let mut stdin_lines = if args.password_stdin {
        let mut lines = Vec::new();
        for line in std::io::stdin().lock().lines() {
            lines.push(line?);
        }
        lines.into_iter()
    } else {
        Vec::new().into_iter()
    };
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => {
            return Err(CliError::usage("--password-stdin needs --username"));
        }
        None => prompt_line("Username: ")?,
    };
    let password = if args.password_stdin {
        stdin_lines
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| CliError::usage("no password on stdin"))?
    } else {
        rpassword::prompt_password("Password: ")
            .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?
    };
    let device_token = s
        .config
        .contexts
        .get(&name)
        .filter(|c| c.server == server)
        .and_then(|c| c.device_token.clone());

    let channel = connect(&server, ca_file.as_ref()).await?;
    let mut auth = AuthServiceClient::new(channel);
    let first = auth
        .login(pb::LoginRequest {
            login: username.clone(),
            password,
            device_token: device_token.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    let (token, user, device_token) = if first.second_factor_required {
        let code = match args.otp.or_else(|| stdin_lines.next()) {
            Some(code) => code,
            None if std::io::stdin().is_terminal() => {
                rpassword::prompt_password("Authentication code (or recovery code): ")
                    .map_err(|e| CliError::usage(format!("cannot read the code: {e}")))?
            }
            None => {
                return Err(CliError::new(
                    exit::UNAUTHENTICATED,
                    "this account needs a second factor",
                )
                .hint("pass --otp CODE (or FERRY_OTP), or a second stdin line"));
            }
        };
        let code = code.trim().replace(' ', "");
        let is_totp = code.len() == 6 && code.chars().all(|c| c.is_ascii_digit());
        let done = auth
            .complete_second_factor(pb::CompleteSecondFactorRequest {
                challenge_token: first.challenge_token,
                code: if is_totp { code.clone() } else { String::new() },
                recovery_code: if is_totp { String::new() } else { code },
                remember_device: args.remember_device,
                device_name: args
                    .remember_device
                    .then(|| format!("ferry-cli {}", std::env::consts::OS)),
            })
            .await?
            .into_inner();
        let device = Some(done.device_token)
            .filter(|d| !d.is_empty())
            .or(device_token);
        (done.token, done.user, device)
    } else {
        (first.token, first.user, device_token)
    };

    let user = user.unwrap_or_default();
    let ctx = s.config.contexts.entry(name.clone()).or_default();
    if ctx.server != server {
        // A different server: the old defaults mean nothing there.
        *ctx = Context::default();
    }
    ctx.server = server.clone();
    ctx.ca_file = ca_file;
    ctx.token = Some(token);
    ctx.username = Some(user.username.clone());
    ctx.device_token = device_token;
    s.config.current_context = Some(name.clone());
    s.save()?;
    s.out.note(format!(
        "Logged in to {server} as {} (context `{name}`).",
        user.username
    ))?;
    if s.out.structured() {
        s.out.one(&user)?;
    }
    Ok(())
}

fn prompt_line(prompt: &str) -> Result<String> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// `ferry logout`.
pub async fn logout(s: &mut Session) -> Result<()> {
    if s.context().and_then(|c| c.token.as_ref()).is_none() {
        return s.out.note("Not logged in.");
    }
    let api = s.api().await?;
    match api.auth().logout(api.req(pb::LogoutRequest {})).await {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::Unauthenticated => {}
        Err(status) => return Err(status.into()),
    }
    let ctx = s.context_mut()?;
    ctx.token = None;
    s.save()?;
    s.out.note("Logged out.")
}

/// `ferry whoami`.
pub async fn whoami(s: &mut Session) -> Result<()> {
    let api = s.api().await?;
    let me = api.auth().me(api.req(pb::MeRequest {})).await?.into_inner();
    let user = me.user.unwrap_or_default();
    if s.out.structured() || s.out.quiet {
        return s.out.one(&user);
    }
    let (server, _) = s.server()?;
    let context = s.context_name().unwrap_or_else(|| "-".into());
    s.out.note(format!(
        "{} <{}> on {server} (context `{context}`)",
        user.username, user.email
    ))
}

/// `ferry context ...`.
pub fn context(s: &mut Session, cmd: ContextCmd) -> Result<()> {
    match cmd {
        ContextCmd::Add { name, url, ca } => {
            let ctx = s.config.contexts.entry(name.clone()).or_default();
            if ctx.server != url {
                *ctx = Context::default();
            }
            ctx.server = url;
            ctx.ca_file = ca;
            s.config.current_context = Some(name.clone());
            s.save()?;
            s.out.note(format!(
                "Context `{name}` added and selected; run `ferry login` next."
            ))
        }
        ContextCmd::Use { name } => {
            if !s.config.contexts.contains_key(&name) {
                return Err(
                    CliError::new(exit::NOT_FOUND, format!("no context named `{name}`"))
                        .hint("`ferry context list` shows them"),
                );
            }
            s.config.current_context = Some(name.clone());
            s.save()?;
            s.out.note(format!("Switched to context `{name}`."))
        }
        ContextCmd::Remove { name } => {
            if s.config.contexts.remove(&name).is_none() {
                return Err(CliError::new(
                    exit::NOT_FOUND,
                    format!("no context named `{name}`"),
                ));
            }
            if s.config.current_context.as_deref() == Some(name.as_str()) {
                s.config.current_context = None;
            }
            s.save()?;
            s.out.note(format!("Context `{name}` removed."))
        }
        ContextCmd::List => {
            let current = s.config.current_context.clone();
            if s.out.structured() {
                let list: Vec<serde_json::Value> = s
                    .config
                    .contexts
                    .iter()
                    .map(|(name, c)| {
                        serde_json::json!({
                            "name": name,
                            "server": c.server,
                            "username": c.username,
                            "loggedIn": c.token.is_some(),
                            "current": current.as_deref() == Some(name.as_str()),
                        })
                    })
                    .collect();
                return s.out.value(&serde_json::Value::Array(list));
            }
            if s.out.quiet {
                let names: Vec<&str> = s.config.contexts.keys().map(String::as_str).collect();
                return crate::output::write_out(&format!("{}\n", names.join("\n")));
            }
            let rows: Vec<Vec<String>> = s
                .config
                .contexts
                .iter()
                .map(|(name, c)| {
                    vec![
                        if current.as_deref() == Some(name.as_str()) {
                            "*"
                        } else {
                            ""
                        }
                        .into(),
                        name.clone(),
                        c.server.clone(),
                        c.username
                            .clone()
                            .filter(|_| c.token.is_some())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            s.out.table(&["CURRENT", "NAME", "SERVER", "USER"], &rows)
        }
    }
}
