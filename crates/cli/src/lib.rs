//! `ferry`: the command-line client of the Ferry API (gRPC, package
//! `ferry.v1`). `main.rs` only calls [`main`].

pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod output;
pub mod resources;
pub mod session;

use clap::{CommandFactory as _, Parser as _};

use crate::cli::{Cli, Command};
use crate::error::{Result, exit};
use crate::output::Out;
use crate::session::{Globals, Session};

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let result = match cli.command {
        // No runtime, no config for what needs neither.
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(Into::into),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(run(cli))),
    };
    match result {
        Ok(()) => exit::OK,
        Err(err) => {
            eprintln!("{err}");
            err.code
        }
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    let out = Out {
        format: cli.output,
        quiet: cli.quiet,
        color: output::color_enabled(),
    };
    let globals = Globals {
        server: cli.server,
        token: cli.token,
        ca_file: cli.ca_file,
        context: cli.context,
        org: cli.org,
        project: cli.project,
    };
    let mut s = Session::load(out, globals)?;
    let s = &mut s;
    use cmd::{auth, deploy, logs, org, project};
    match cli.command {
        Command::Login(args) => auth::login(s, args).await,
        Command::Logout => auth::logout(s).await,
        Command::Whoami => auth::whoami(s).await,
        Command::Context(c) => auth::context(s, c),
        Command::Org(c) => org::org_use(s, c).await,
        Command::Project(c) => org::project_use(s, c).await,
        Command::Orgs(c) => org::orgs(s, c).await,
        Command::Projects(c) => org::projects(s, c).await,
        Command::Members(c) => org::members(s, c).await,
        Command::Invitations(c) => org::invitations(s, c).await,
        Command::Tokens(c) => org::tokens(s, c).await,
        Command::Registries(c) => org::registries(s, c).await,
        Command::Builds(c) => cmd::builds::builds(s, c).await,
        Command::Git(c) => cmd::builds::git(s, c).await,
        Command::Jobs(c) => cmd::jobs::jobs(s, c).await,
        Command::Domains(c) => cmd::domains::domains(s, c).await,
        Command::Audit(c) => org::audit(s, c).await,
        Command::Link(a) => org::link(s, a).await,
        Command::Services(c) => project::services(s, c).await,
        Command::Env(c) => project::env(s, c).await,
        Command::Volumes(c) => project::volumes(s, c).await,
        Command::Groups(c) => project::groups(s, c).await,
        Command::Routes(c) => project::routes(s, c).await,
        Command::Deploy(a) => deploy::deploy(s, a).await,
        Command::Plan(a) => deploy::plan(s, a).await,
        Command::Rollback(a) => deploy::rollback(s, a).await,
        Command::Scale(a) => deploy::scale(s, a).await,
        Command::Restart(a) => deploy::restart_or_stop(s, a, false).await,
        Command::Stop(a) => deploy::restart_or_stop(s, a, true).await,
        Command::Deployments(a) => deploy::deployments(s, a).await,
        Command::Up(a) => deploy::up(s, a).await,
        Command::Down(a) => deploy::down(s, a).await,
        Command::Logs(a) => logs::logs(s, a).await,
        Command::Events(a) => logs::events(s, a).await,
        Command::Completion { .. } | Command::Man => Ok(()),
    }
}
