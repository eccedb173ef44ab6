//! What every command shares: the configuration, the selected context, the
//! connection to the api, and name → id resolution.

use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::ferry::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

use crate::config::{Config, Context, Link};
use crate::error::{CliError, Result, chain, exit};
use crate::output::Out;

/// Pages through a `List*` RPC: `list_all!(api.client(), method, request, field)`.
#[macro_export]
macro_rules! list_all {
    ($api:expr, $client:ident, $method:ident, $req:expr, $field:ident) => {{
        let mut req = std::convert::identity($req);
        req.page_size = 500;
        let mut all = Vec::new();
        loop {
            let resp = $api
                .$client()
                .$method($api.req(req.clone()))
                .await?
                .into_inner();
            all.extend(resp.$field);
            if resp.next_page_token.is_empty() {
                break all;
            }
            req.page_token = resp.next_page_token;
        }
    }};
}

/// The global flags that select the server, credentials and scope.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// `--server` / `FERRY_SERVER`.
    pub server: Option<String>,
    /// `--token` / `FERRY_TOKEN`.
    pub token: Option<String>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `--org`.
    pub org: Option<String>,
    /// `--project`.
    pub project: Option<String>,
}

/// A connection to the api with the caller's credentials.
#[derive(Debug, Clone)]
pub struct Api {
    channel: Channel,
    bearer: Option<MetadataValue<Ascii>>,
}

use pb::api_token_service_client::ApiTokenServiceClient;
use pb::audit_service_client::AuditServiceClient;
use pb::auth_service_client::AuthServiceClient;
use pb::deployment_service_client::DeploymentServiceClient;
use pb::domain_service_client::DomainServiceClient;
use pb::git_service_client::GitServiceClient;
use pb::invitation_service_client::InvitationServiceClient;
use pb::job_service_client::JobServiceClient;
use pb::organization_service_client::OrganizationServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::registry_service_client::RegistryServiceClient;
use pb::route_service_client::RouteServiceClient;
use pb::service_service_client::ServiceServiceClient;
use pb::stack_service_client::StackServiceClient;
use pb::variable_group_service_client::VariableGroupServiceClient;
use pb::volume_service_client::VolumeServiceClient;

macro_rules! typed_clients {
    ($($name:ident => $client:ident),* $(,)?) => {
        impl Api {
            $(
                #[doc = concat!("A `", stringify!($client), "`.")]
                pub fn $name(&self) -> $client<Channel> {
                    $client::new(self.channel.clone())
                }
            )*
        }
    };
}

typed_clients! {
    auth => AuthServiceClient,
    orgs => OrganizationServiceClient,
    invitations => InvitationServiceClient,
    tokens => ApiTokenServiceClient,
    audit => AuditServiceClient,
    projects => ProjectServiceClient,
    services => ServiceServiceClient,
    volumes => VolumeServiceClient,
    groups => VariableGroupServiceClient,
    stacks => StackServiceClient,
    deployments => DeploymentServiceClient,
    routes => RouteServiceClient,
    registries => RegistryServiceClient,
    git => GitServiceClient,
    jobs => JobServiceClient,
    domains => DomainServiceClient,
}

impl Api {
    /// `message` with the bearer token attached.
    pub fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        request
    }
}

/// Normalises a server address: no scheme means https.
pub fn server_url(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") {
        server.to_string()
    } else {
        format!("https://{server}")
    }
}

/// Opens a channel to `server` (TLS with the system roots, plus `ca_file`).
pub async fn connect(server: &str, ca_file: Option<&PathBuf>) -> Result<Channel> {
    let url = server_url(server);
    let bad = |e: &dyn std::error::Error| {
        CliError::usage(format!("invalid server address `{server}`: {}", chain(e)))
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| bad(&e))?
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("ferry-cli/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| bad(&e))?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                CliError::usage(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
    }
    endpoint.connect().await.map_err(|e| {
        CliError::msg(format!("cannot reach the api at {url}: {}", chain(&e)))
            .hint("check the address and that ferry-api is running (`ferry context list`)")
    })
}

/// The state of one invocation.
#[derive(Debug)]
pub struct Session {
    /// Output settings.
    pub out: Out,
    /// Global flags.
    pub globals: Globals,
    /// Where `config.toml` lives.
    pub config_path: PathBuf,
    /// Its contents.
    pub config: Config,
    /// The nearest `ferry.toml`.
    pub link: Option<Link>,
    api: Option<Api>,
}

/// True when `s` looks like a UUID (the api's ids).
pub fn looks_like_id(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        })
}

/// The one item whose id, or else one of whose names, is `key`.
pub fn pick<T>(
    what: &str,
    key: &str,
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    names: impl Fn(&T) -> Vec<&str>,
) -> Result<T> {
    let mut by_name = Vec::new();
    for item in items {
        if id(&item) == key {
            return Ok(item);
        }
        if names(&item).contains(&key) {
            by_name.push(item);
        }
    }
    match by_name.len() {
        1 => Ok(by_name.remove(0)),
        0 => Err(CliError::new(
            exit::NOT_FOUND,
            format!("no {what} named `{key}`"),
        )),
        n => Err(CliError::usage(format!(
            "{n} {what}s are named `{key}`; use the id"
        ))),
    }
}

impl Session {
    /// Loads the configuration and the nearest `ferry.toml`.
    pub fn load(out: Out, globals: Globals) -> Result<Session> {
        let config_path = crate::config::config_path()?;
        let config = Config::load(&config_path)?;
        let cwd = std::env::current_dir()?;
        let link = Link::find(&cwd)?.map(|(_, link)| link);
        Ok(Session {
            out,
            globals,
            config_path,
            config,
            link,
            api: None,
        })
    }

    /// Saves the configuration.
    pub fn save(&self) -> Result<()> {
        self.config.save(&self.config_path)
    }

    /// The selected context's name (`--context`, else the current one).
    pub fn context_name(&self) -> Option<String> {
        self.globals
            .context
            .clone()
            .or_else(|| self.config.current_context.clone())
    }

    /// The selected context.
    pub fn context(&self) -> Option<&Context> {
        self.config
            .context(self.globals.context.as_deref())
            .map(|(_, c)| c)
    }

    /// The selected context, for changing (it must exist).
    pub fn context_mut(&mut self) -> Result<&mut Context> {
        let name = self.context_name().ok_or_else(no_context)?;
        self.config.contexts.get_mut(&name).ok_or_else(no_context)
    }

    /// The server and CA file in effect.
    pub fn server(&self) -> Result<(String, Option<PathBuf>)> {
        let ctx = self.context();
        let server = self
            .globals
            .server
            .clone()
            .or_else(|| ctx.map(|c| c.server.clone()))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                CliError::usage("no server selected")
                    .hint("run `ferry login --server URL` or set FERRY_SERVER")
            })?;
        let ca = self
            .globals
            .ca_file
            .clone()
            .or_else(|| ctx.and_then(|c| c.ca_file.clone()));
        Ok((server, ca))
    }

    /// The connection, with `--token`/`FERRY_TOKEN` or the saved session.
    pub async fn api(&mut self) -> Result<Api> {
        if let Some(api) = &self.api {
            return Ok(api.clone());
        }
        let token = self
            .globals
            .token
            .clone()
            .or_else(|| self.context().and_then(|c| c.token.clone()))
            .ok_or_else(|| {
                CliError::new(exit::UNAUTHENTICATED, "not logged in")
                    .hint("run `ferry login` (or set FERRY_TOKEN)")
            })?;
        let bearer = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| CliError::usage("the token contains invalid characters"))?;
        let (server, ca) = self.server()?;
        let channel = connect(&server, ca.as_ref()).await?;
        let api = Api {
            channel,
            bearer: Some(bearer),
        };
        self.api = Some(api.clone());
        Ok(api)
    }

    /// The organization in effect: `--org`, `ferry.toml`, `ferry org use`,
    /// else your only organization.
    pub async fn org_id(&mut self) -> Result<String> {
        if let Some(key) = self.globals.org.clone() {
            return Ok(self.find_org(&key).await?.id);
        }
        let saved = self
            .link
            .as_ref()
            .and_then(|l| l.org.clone())
            .or_else(|| self.context().and_then(|c| c.org.clone()));
        if let Some(id) = saved {
            return Ok(id);
        }
        match <[pb::Organization; 1]>::try_from(self.all_orgs().await?) {
            Ok([org]) => Ok(org.id),
            Err(_) => Err(CliError::usage("no organization selected")
                .hint("run `ferry org use NAME` or pass --org")),
        }
    }

    /// Every organization you belong to.
    pub async fn all_orgs(&mut self) -> Result<Vec<pb::Organization>> {
        let api = self.api().await?;
        Ok(list_all!(
            api,
            orgs,
            list_organizations,
            pb::ListOrganizationsRequest::default(),
            organizations
        ))
    }

    /// The organization named (or with the id) `key`.
    pub async fn find_org(&mut self, key: &str) -> Result<pb::Organization> {
        let orgs = self.all_orgs().await?;
        pick(
            "organization",
            key,
            orgs,
            |o| &o.id,
            |o| vec![&o.name, &o.slug],
        )
    }

    /// The project in effect: `--project`, `ferry.toml`, `ferry project use`.
    pub async fn project_id(&mut self) -> Result<String> {
        if let Some(key) = self.globals.project.clone() {
            return Ok(self.find_project(&key).await?.id);
        }
        self.link
            .as_ref()
            .and_then(|l| l.project.clone())
            .or_else(|| self.context().and_then(|c| c.project.clone()))
            .ok_or_else(|| {
                CliError::usage("no project selected")
                    .hint("run `ferry project use NAME`, `ferry link`, or pass --project")
            })
    }

    /// Every project of the organization.
    pub async fn all_projects(&mut self) -> Result<Vec<pb::Project>> {
        let api = self.api().await?;
        let organization_id = self.org_id().await?;
        Ok(list_all!(
            api,
            projects,
            list_projects,
            pb::ListProjectsRequest {
                organization_id,
                ..Default::default()
            },
            projects
        ))
    }

    /// The project named (or with the id) `key` in the organization.
    pub async fn find_project(&mut self, key: &str) -> Result<pb::Project> {
        let api = self.api().await?;
        if looks_like_id(key) {
            let got = api
                .projects()
                .get_project(api.req(pb::GetProjectRequest { id: key.into() }))
                .await;
            if let Some(project) = found(got)? {
                return Ok(project);
            }
        }
        let projects = self.all_projects().await?;
        pick(
            "project",
            key,
            projects,
            |p| &p.id,
            |p| vec![&p.name, &p.slug],
        )
    }

    /// The service `key` (name or id), else the linked one.
    pub async fn service_id(&mut self, key: Option<&str>) -> Result<String> {
        match key {
            Some(key) => Ok(self.find_service(key).await?.id),
            None => self
                .link
                .as_ref()
                .and_then(|l| l.service.clone())
                .ok_or_else(|| {
                    CliError::usage("no service given")
                        .hint("name one, or run `ferry link --service NAME` here")
                }),
        }
    }

    /// Every service of the project.
    pub async fn all_services(&mut self) -> Result<Vec<pb::Service>> {
        let api = self.api().await?;
        let project_id = self.project_id().await?;
        Ok(list_all!(
            api,
            services,
            list_services,
            pb::ListServicesRequest {
                project_id,
                ..Default::default()
            },
            services
        ))
    }

    /// The service named (or with the id) `key` in the project.
    pub async fn find_service(&mut self, key: &str) -> Result<pb::Service> {
        let api = self.api().await?;
        if looks_like_id(key) {
            let got = api
                .services()
                .get_service(api.req(pb::GetServiceRequest { id: key.into() }))
                .await;
            if let Some(service) = found(got)? {
                return Ok(service);
            }
        }
        let services = self.all_services().await?;
        pick("service", key, services, |s| &s.id, |s| vec![&s.name])
    }
}

/// A Get* answer: the message, `None` for NotFound, or the error.
fn found<T>(got: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<Option<T>> {
    match got {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status.into()),
    }
}

fn no_context() -> CliError {
    CliError::usage("no context selected").hint("run `ferry login --server URL` first")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_urls() {
        assert!(looks_like_id("0190a7c2-3b4d-7e8f-9a0b-1c2d3e4f5a6b"));
        assert!(!looks_like_id("web"));
        assert_eq!(
            server_url("api.example.com:443"),
            "https://api.example.com:443"
        );
        assert_eq!(
            server_url("http://127.0.0.1:50051/"),
            "http://127.0.0.1:50051"
        );
    }
}
