//! The clap command tree (also the source of completions and the man page).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::EXIT_CODES_HELP;
use crate::output::Format;

/// Ferry on the command line: log in, create projects and services, deploy,
/// read logs.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_help = EXIT_CODES_HELP, propagate_version = true)]
pub struct Cli {
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// Print ids only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The api's URL (https://host:port; http:// for a local plaintext api).
    #[arg(long, global = true, env = "FERRY_SERVER")]
    pub server: Option<String>,
    /// A session or API token instead of the saved login (for CI).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the api's certificate (default: system roots).
    #[arg(long, global = true, env = "FERRY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The context to use instead of the current one.
    #[arg(long, global = true, env = "FERRY_CONTEXT")]
    pub context: Option<String>,
    /// Organization (name, slug or id).
    #[arg(long, global = true, env = "FERRY_ORG")]
    pub org: Option<String>,
    /// Project (name, slug or id).
    #[arg(long, global = true, env = "FERRY_PROJECT")]
    pub project: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and save the session in the current context.
    Login(LoginArgs),
    /// End the session and forget its token.
    Logout,
    /// Who the saved credentials belong to.
    Whoami,
    /// Servers and their credentials, like kubectl contexts.
    #[command(subcommand)]
    Context(ContextCmd),
    /// Select the default organization.
    #[command(subcommand)]
    Org(UseCmd),
    /// Select the default project.
    #[command(subcommand)]
    Project(UseCmd),
    /// Organizations.
    #[command(subcommand)]
    Orgs(OrgsCmd),
    /// Projects of the organization.
    #[command(subcommand)]
    Projects(ProjectsCmd),
    /// Services of the project.
    #[command(subcommand)]
    Services(ServicesCmd),
    /// Environment variables of a service.
    #[command(subcommand)]
    Env(EnvCmd),
    /// Volumes of the project.
    #[command(subcommand)]
    Volumes(VolumesCmd),
    /// Variable groups of the project.
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// HTTP routes of the project.
    #[command(subcommand)]
    Routes(RoutesCmd),
    /// Image registries of the organization.
    #[command(subcommand)]
    Registries(RegistriesCmd),
    /// API tokens of the organization.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Members of the organization.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Invitations to the organization.
    #[command(subcommand)]
    Invitations(InvitationsCmd),
    /// The organization's audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Link this directory to a project (and service): writes ./ferry.toml.
    Link(LinkArgs),
    /// Deploy a service and follow the rollout.
    Deploy(DeployArgs),
    /// Show what a deploy would apply: the manifests and the diff.
    Plan(ServiceArg),
    /// Redeploy an earlier deployment (default: the one before the latest).
    Rollback(RollbackArgs),
    /// Set a service's replica count.
    Scale(ScaleArgs),
    /// Restart a service's pods.
    Restart(ServiceArg),
    /// Stop a service (scale to zero).
    Stop(ServiceArg),
    /// Deployment history of a service.
    Deployments(ServiceArg),
    /// Image builds from git of a service (push-to-deploy).
    #[command(subcommand)]
    Builds(BuildsCmd),
    /// Git providers of the organization (push webhooks, repository access).
    #[command(subcommand)]
    Git(GitCmd),
    /// Scheduled jobs of the project (cron, or on demand) and their runs.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Custom domains of the project: add one, prove you own it, list, remove.
    #[command(subcommand)]
    Domains(DomainsCmd),
    /// Create or update a stack from a Compose file and deploy it.
    Up(UpArgs),
    /// Delete a stack created by `ferry up`.
    Down(DownArgs),
    /// Stream a service's logs (all replicas, prefixed by pod).
    Logs(LogsArgs),
    /// Kubernetes events of a service's objects.
    Events(EventsArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `ferry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name or e-mail.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from stdin (a second line, if any, is the 2FA code).
    #[arg(long)]
    pub password_stdin: bool,
    /// The second-factor code (TOTP or a recovery code) when one is asked for.
    #[arg(long, env = "FERRY_OTP", hide_env_values = true)]
    pub otp: Option<String>,
    /// Remember this device for the second factor.
    #[arg(long)]
    pub remember_device: bool,
}

/// `ferry context ...`.
#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Add (or change) a context and make it current.
    Add {
        /// Context name.
        name: String,
        /// The api's URL.
        #[arg(long = "url", alias = "api")]
        url: String,
        /// CA file for this server.
        #[arg(long = "ca")]
        ca: Option<PathBuf>,
    },
    /// Make a context current.
    Use {
        /// Context name.
        name: String,
    },
    /// List contexts.
    List,
    /// Remove a context.
    Remove {
        /// Context name.
        name: String,
    },
}

/// `ferry org use` / `ferry project use`.
#[derive(Debug, Subcommand)]
pub enum UseCmd {
    /// Make it the default for this context.
    Use {
        /// Name, slug or id.
        name: String,
    },
}

/// `ferry orgs ...`.
#[derive(Debug, Subcommand)]
pub enum OrgsCmd {
    /// List your organizations.
    List,
    /// Create an organization (and make it the default if none is set).
    Create {
        /// Name.
        name: String,
    },
    /// Rename an organization.
    Rename {
        /// Name, slug or id.
        org: String,
        /// New name.
        name: String,
    },
    /// Delete an organization and everything in it.
    Delete {
        /// Name, slug or id.
        org: String,
    },
}

/// `ferry projects ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectsCmd {
    /// List projects.
    List,
    /// Create a project.
    Create {
        /// Name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a project (its namespace goes with it).
    Delete {
        /// Name, slug or id.
        project: String,
    },
}

/// `ferry services ...`.
#[derive(Debug, Subcommand)]
pub enum ServicesCmd {
    /// List services.
    List,
    /// Show one service.
    Get {
        /// Name or id.
        service: String,
    },
    /// Create an application service (or a database with --database).
    Create(CreateServiceArgs),
    /// Change a service's image or replicas.
    Update {
        /// Name or id.
        service: String,
        /// New image.
        #[arg(long)]
        image: Option<String>,
        /// Replicas.
        #[arg(long)]
        replicas: Option<i32>,
    },
    /// Delete a service.
    Delete {
        /// Name or id.
        service: String,
    },
}

/// `ferry services create`.
#[derive(Debug, Args)]
pub struct CreateServiceArgs {
    /// Name.
    pub name: String,
    /// Container image (applications).
    #[arg(long, required_unless_present = "database")]
    pub image: Option<String>,
    /// Container port (repeatable).
    #[arg(long)]
    pub port: Vec<u32>,
    /// Replicas.
    #[arg(long)]
    pub replicas: Option<i32>,
    /// A managed database instead: postgres, mysql, mongodb or redis.
    #[arg(long, conflicts_with = "image")]
    pub database: Option<String>,
    /// Database version.
    #[arg(long, requires = "database", default_value = "")]
    pub db_version: String,
    /// Database storage in GB.
    #[arg(long, requires = "database", default_value_t = 0)]
    pub storage_gb: i32,
}

/// `ferry env ...`.
#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// List a service's variables (secret values are not shown).
    List {
        /// Service name or id.
        service: String,
    },
    /// Set variables: `ferry env set web KEY=VALUE ...`.
    Set {
        /// Service name or id.
        service: String,
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Store as secrets (write-only).
        #[arg(long)]
        secret: bool,
    },
    /// Remove a variable.
    Unset {
        /// Service name or id.
        service: String,
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `ferry volumes ...`.
#[derive(Debug, Subcommand)]
pub enum VolumesCmd {
    /// List volumes.
    List,
    /// Create a volume.
    Create {
        /// Name.
        name: String,
        /// Size in GB.
        #[arg(long, default_value_t = 1)]
        size: i32,
        /// Storage class.
        #[arg(long, default_value = "")]
        storage_class: String,
    },
    /// Delete a volume (refused while mounted).
    Delete {
        /// Name or id.
        volume: String,
    },
    /// Mount a volume into a service.
    Mount {
        /// Service name or id.
        service: String,
        /// Volume name or id.
        volume: String,
        /// Mount path.
        path: String,
        /// Read-only.
        #[arg(long)]
        read_only: bool,
    },
    /// Unmount a path from a service.
    Unmount {
        /// Service name or id.
        service: String,
        /// Mount path.
        path: String,
    },
}

/// `ferry groups ...`.
#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    /// List variable groups.
    List,
    /// Create a variable group.
    Create {
        /// Name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a variable group.
    Delete {
        /// Name or id.
        group: String,
    },
    /// Set variables in a group.
    Set {
        /// Group name or id.
        group: String,
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Store as secrets.
        #[arg(long)]
        secret: bool,
    },
    /// Remove variables from a group.
    Unset {
        /// Group name or id.
        group: String,
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Attach a group to a service.
    Attach {
        /// Group name or id.
        group: String,
        /// Service name or id.
        service: String,
    },
    /// Detach a group from a service.
    Detach {
        /// Group name or id.
        group: String,
        /// Service name or id.
        service: String,
    },
}

/// `ferry routes ...`.
#[derive(Debug, Subcommand)]
pub enum RoutesCmd {
    /// List routes.
    List,
    /// Route a hostname (and path prefix) to a service.
    Create {
        /// Hostname.
        hostname: String,
        /// Target service name or id.
        #[arg(long)]
        service: String,
        /// Target port.
        #[arg(long)]
        port: u32,
        /// Path prefix.
        #[arg(long, default_value = "")]
        path: String,
        /// Serve over TLS.
        #[arg(long)]
        tls: bool,
    },
    /// Delete a route.
    Delete {
        /// Route id or hostname.
        route: String,
    },
}

/// `ferry registries ...`.
#[derive(Debug, Subcommand)]
pub enum BuildsCmd {
    /// Build a service from a repository of a git integration.
    Config {
        /// Service name or id.
        service: String,
        /// The git integration (name or id).
        #[arg(long)]
        git: String,
        /// owner/name (a clone URL for generic integrations).
        #[arg(long)]
        repo: String,
        /// The branch whose pushes build.
        #[arg(long, default_value = "main")]
        branch: String,
        /// auto, dockerfile, railpack, buildpacks or static.
        #[arg(long = "type", default_value = "auto")]
        build_type: String,
        /// The build context inside the repository.
        #[arg(long, default_value = "")]
        root_dir: String,
        /// Dockerfile builds: the Dockerfile, relative to the root dir.
        #[arg(long)]
        dockerfile: Option<String>,
        /// Build only pushes that change a matching file (repeatable glob).
        #[arg(long = "watch")]
        watch_paths: Vec<String>,
        /// Do not build on pushes (only `ferry builds trigger`).
        #[arg(long)]
        no_auto_deploy: bool,
    },
    /// Builds of a service, newest first.
    List {
        /// Service name or id (default: the linked service).
        service: Option<String>,
    },
    /// Build the head of the service's branch (or one commit) and deploy it.
    Trigger {
        /// Service name or id (default: the linked service).
        service: Option<String>,
        /// A full commit id instead of the branch's head.
        #[arg(long)]
        commit: Option<String>,
        /// Then follow the build's log until it finishes (as `builds logs -f`).
        #[arg(short, long)]
        follow: bool,
    },
    /// A build's log lines so far (`-f`: and new ones until it finishes).
    Logs {
        /// The build's id.
        build: String,
        /// Keep streaming until the build finishes; exit 7 if it fails, times
        /// out or is cancelled.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a queued or running build.
    Cancel {
        /// The build's id.
        build: String,
    },
    /// Push webhooks received for a service and what Ferry did with each.
    Deliveries {
        /// Service name or id (default: the linked service).
        service: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List the project's jobs.
    List,
    /// Show one job: its schedule in words and its next fire times.
    Get {
        /// Job name or id.
        job: String,
    },
    /// Create a job: an image (or a service's image) run to completion.
    Create(CreateJobArgs),
    /// Run a job now (whatever its schedule; its concurrency policy applies).
    Run {
        /// Job name or id.
        job: String,
    },
    /// Runs of a job, newest first.
    Runs {
        /// Job name or id.
        job: String,
    },
    /// A run's output (default: the job's newest run).
    Logs {
        /// Job name or id.
        job: String,
        /// A run's id instead of the newest.
        #[arg(long)]
        run: Option<String>,
    },
    /// Delete a job and its run history.
    Rm {
        /// Job name or id.
        job: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainsCmd {
    /// List the project's domains and whether they are verified.
    List,
    /// Add a domain (`example.com` or `*.example.com`) and print how to
    /// prove it: a TXT record, or (apex domains) the HTTP challenge.
    Add {
        /// The domain.
        domain: String,
    },
    /// Check the proof now: the TXT record, or with --http the HTTP
    /// challenge ferry-proxy answers once the name points at it.
    Verify {
        /// The domain (as added) or its id.
        domain: String,
        /// Prove it over HTTP instead of the TXT record (apex only).
        #[arg(long)]
        http: bool,
    },
    /// Remove a domain (routes already made under it stay).
    Rm {
        /// The domain (as added) or its id.
        domain: String,
    },
}

/// `ferry jobs create`.
#[derive(Debug, Args)]
pub struct CreateJobArgs {
    /// Name (a DNS label: lower-case letters, digits, -).
    pub name: String,
    /// Container image to run.
    #[arg(long, required_unless_present = "service", conflicts_with = "service")]
    pub image: Option<String>,
    /// Run this service's current image, with its environment (name or id).
    #[arg(long)]
    pub service: Option<String>,
    /// Cron schedule (5 fields, or @hourly, @daily, ...); none: on demand only.
    #[arg(long, default_value = "")]
    pub schedule: String,
    /// IANA time zone the schedule is read in (default UTC).
    #[arg(long = "tz", default_value = "")]
    pub timezone: String,
    /// Give up after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub timeout: i32,
    /// Extra attempts after a failure (0 to 10).
    #[arg(long, default_value_t = 0)]
    pub retries: i32,
    /// allow, forbid or replace: what a run does while another is active.
    #[arg(long, default_value = "forbid")]
    pub concurrency: String,
    /// Create it disabled (its schedule does not fire).
    #[arg(long)]
    pub disabled: bool,
    /// The command to run instead of the image's (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum GitCmd {
    /// List git integrations.
    List,
    /// Connect a git provider; prints the webhook URL and secret (once).
    Connect {
        /// Name.
        name: String,
        /// github, gitlab, gitea, forgejo, bitbucket or generic.
        #[arg(long)]
        provider: String,
        /// Self-hosted server (https://...): GitLab, Gitea, Forgejo.
        #[arg(long, default_value = "")]
        base_url: String,
        /// Read the access token from stdin (otherwise prompted; none for generic).
        #[arg(long)]
        token_stdin: bool,
        /// Generic: a known_hosts file for the server (`ssh-keyscan host`);
        /// builds over ssh need it (host keys are checked strictly).
        #[arg(long)]
        known_hosts: Option<std::path::PathBuf>,
    },
    /// Delete a git integration.
    Rm {
        /// Name or id.
        integration: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistriesCmd {
    /// List registries.
    List,
    /// Add a registry (password from stdin).
    Create {
        /// Name.
        name: String,
        /// Registry URL.
        #[arg(long)]
        url: String,
        /// User name.
        #[arg(long)]
        username: String,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a registry.
    Delete {
        /// Name or id.
        registry: String,
    },
}

/// `ferry tokens ...`.
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// List API tokens.
    List,
    /// Create an API token (printed once).
    Create {
        /// Name.
        name: String,
        /// Role: viewer, member, admin.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Revoke a token.
    Revoke {
        /// Name or id.
        token: String,
    },
}

/// `ferry members ...`.
#[derive(Debug, Subcommand)]
pub enum MembersCmd {
    /// List members.
    List,
    /// Change a member's role.
    SetRole {
        /// User name, e-mail or user id.
        user: String,
        /// viewer, member, admin or owner.
        role: String,
    },
    /// Remove a member.
    Remove {
        /// User name, e-mail or user id.
        user: String,
    },
}

/// `ferry invitations ...`.
#[derive(Debug, Subcommand)]
pub enum InvitationsCmd {
    /// List open invitations.
    List,
    /// Invite someone by e-mail.
    Create {
        /// E-mail address.
        email: String,
        /// Role: viewer, member, admin.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Revoke an invitation.
    Revoke {
        /// Invitation id or e-mail.
        invitation: String,
    },
    /// Accept an invitation by its token.
    Accept {
        /// The token from the invitation link.
        token: String,
    },
}

/// `ferry audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit entries, newest first.
    List {
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Verify the organization's audit hash chain.
    Verify,
}

/// `ferry link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Service to link too (name or id).
    #[arg(long)]
    pub service: Option<String>,
}

/// A service argument that `ferry.toml` may supply.
#[derive(Debug, Args)]
pub struct ServiceArg {
    /// Service name or id (default: the linked service).
    pub service: Option<String>,
}

/// `ferry deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Service name or id (default: the linked service).
    pub service: Option<String>,
    /// Set this image first.
    #[arg(long)]
    pub image: Option<String>,
    /// Do not follow the rollout.
    #[arg(short, long)]
    pub detach: bool,
}

/// `ferry rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Service name or id (default: the linked service).
    pub service: Option<String>,
    /// The deployment to go back to (default: the one before the latest).
    #[arg(long = "to")]
    pub deployment: Option<String>,
    /// Do not follow the rollout.
    #[arg(short, long)]
    pub detach: bool,
}

/// `ferry scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Service name or id.
    pub service: String,
    /// Replicas.
    pub replicas: i32,
}

/// `ferry up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The Compose file.
    #[arg(short, long, default_value = "compose.yaml")]
    pub file: PathBuf,
    /// Stack name (default: the file's directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Create or update only, do not deploy.
    #[arg(long)]
    pub no_deploy: bool,
    /// Do not follow the rollouts.
    #[arg(short, long)]
    pub detach: bool,
}

/// `ferry down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The Compose file (names the stack by its directory).
    #[arg(short, long, default_value = "compose.yaml")]
    pub file: PathBuf,
    /// Stack name or id.
    #[arg(long)]
    pub name: Option<String>,
}

/// `ferry logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Service name or id (default: the linked service).
    pub service: Option<String>,
    /// Keep streaming new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines newer than this (30s, 10m, 2h, 1d).
    #[arg(long)]
    pub since: Option<String>,
    /// The last N lines of each container.
    #[arg(long)]
    pub tail: Option<u32>,
    /// The previous (crashed) container's logs.
    #[arg(long)]
    pub previous: bool,
    /// Only this pod.
    #[arg(long)]
    pub pod: Option<String>,
    /// Only this container.
    #[arg(long)]
    pub container: Option<String>,
}

/// `ferry events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Service name or id (default: the linked service).
    pub service: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn clap_definitions_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
