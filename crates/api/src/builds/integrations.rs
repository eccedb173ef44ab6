//! Git integrations: an organization's connections to git providers.
//! Tokens, deploy keys and webhook secrets are stored encrypted and never
//! returned; the webhook secret appears once, in the create answer.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, GitAuthType, GitProvider};
use ferry_db::entities::git_integrations as integrations;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use ring::rand::SecureRandom as _;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use super::{GitApi, deploy_key};
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::workloads::{unique_as, validate};
use crate::{Error, Result};

pub(crate) fn provider_from_pb(p: i32) -> Result<GitProvider> {
    Ok(match pb::GitProvider::try_from(p) {
        Ok(pb::GitProvider::Github) => GitProvider::Github,
        Ok(pb::GitProvider::Gitlab) => GitProvider::Gitlab,
        Ok(pb::GitProvider::Gitea) => GitProvider::Gitea,
        Ok(pb::GitProvider::Forgejo) => GitProvider::Forgejo,
        Ok(pb::GitProvider::Bitbucket) => GitProvider::Bitbucket,
        Ok(pb::GitProvider::Generic) => GitProvider::Generic,
        _ => {
            return Err(Error::InvalidArgument(
                "provider: one of GITHUB, GITLAB, GITEA, FORGEJO, BITBUCKET, GENERIC".into(),
            ));
        }
    })
}

fn provider_to_pb(p: GitProvider) -> pb::GitProvider {
    match p {
        GitProvider::Github => pb::GitProvider::Github,
        GitProvider::Gitlab => pb::GitProvider::Gitlab,
        GitProvider::Gitea => pb::GitProvider::Gitea,
        GitProvider::Forgejo => pb::GitProvider::Forgejo,
        GitProvider::Bitbucket => pb::GitProvider::Bitbucket,
        GitProvider::Generic => pb::GitProvider::Generic,
    }
}

/// Where providers send pushes for integration `id`.
pub fn webhook_url(public_url: &str, id: Uuid) -> String {
    format!("{}/hooks/git/{id}", public_url.trim_end_matches('/'))
}

pub(crate) fn integration_to_pb(i: &integrations::Model, public_url: &str) -> pb::GitIntegration {
    pb::GitIntegration {
        id: i.id.to_string(),
        organization_id: i.organization_id.to_string(),
        provider: provider_to_pb(i.provider).into(),
        name: i.name.clone(),
        base_url: i.base_url.clone().unwrap_or_default(),
        webhook_url: webhook_url(public_url, i.id),
        webhook_secret: String::new(),
        ssh_public_key: i.ssh_public_key.clone().unwrap_or_default(),
        has_token: i.access_token.is_some(),
        created_at: Some(ts(i.created_at)),
        ssh_known_hosts: i.ssh_known_hosts.clone().unwrap_or_default(),
    }
}

/// A self-hosted server's address: http(s), a host, no credentials, query
/// or fragment.
fn base_url(value: &str) -> Result<String> {
    let v = value.trim().trim_end_matches('/');
    let bad = |why: &str| Error::InvalidArgument(format!("baseUrl: {why}"));
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with https:// (or http:// inside your network)"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || v.len() > 2048 {
        return Err(bad("must name a host, at most 2048 characters"));
    }
    if host.contains('@') {
        return Err(bad("must not carry credentials; pass the token in `token`"));
    }
    if v.contains(['?', '#']) || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no query, fragment, spaces or control characters"));
    }
    Ok(v.to_owned())
}

/// A provider token: printable, no spaces, at most 4096 bytes.
fn token(value: &str) -> Result<&str> {
    let ok =
        !value.is_empty() && value.len() <= 4096 && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(value)
    } else {
        Err(Error::InvalidArgument(
            "token: 1 to 4096 printable characters without spaces".into(),
        ))
    }
}

/// known_hosts lines: `host keytype base64-key`, at most 50 lines of 8 KiB.
fn known_hosts(value: &str) -> Result<Option<String>> {
    let lines: Vec<&str> = value
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    let ok = lines.len() <= 50
        && lines.iter().all(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            l.len() <= 8192
                && fields.len() >= 3
                && (fields[1].starts_with("ssh-") || fields[1].starts_with("ecdsa-"))
                && fields[2]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        });
    if ok {
        Ok(Some(lines.join("\n")))
    } else {
        Err(Error::InvalidArgument(
            "sshKnownHosts: known_hosts lines such as `git.example.com ssh-ed25519 AAAA...` (ssh-keyscan output), at most 50".into(),
        ))
    }
}

/// The webhook secret: the caller's (16 to 256 printable bytes) or 32
/// random bytes as hex. Never empty.
fn webhook_secret(value: &str) -> Result<String> {
    if value.is_empty() {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Internal("the system random source failed".into()))?;
        return Ok(hex::encode(bytes));
    }
    let ok = (16..=256).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(Error::InvalidArgument(
            "webhookSecret: 16 to 256 printable characters without spaces (empty: generated)"
                .into(),
        ))
    }
}

/// ListGitIntegrations' order: by name, then id.
static INTEGRATIONS: Keyset<integrations::Column> = Keyset {
    list: "gitIntegrations",
    columns: &[
        asc(integrations::Column::Name, Kind::Text),
        asc(integrations::Column::Id, Kind::Id),
    ],
};

impl GitApi {
    fn public_url(&self) -> &str {
        &self.0.identity.config.public_url
    }

    pub(super) async fn create_integration(
        &self,
        request: Request<pb::CreateGitIntegrationRequest>,
    ) -> Result<pb::GitIntegration> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller.organization(db, Action::GitManage, org).await?;
        let provider = provider_from_pb(req.provider)?;
        let name = validate::display_name("name", &req.name)?;
        let base = match (provider, req.base_url.trim()) {
            (GitProvider::Gitea | GitProvider::Forgejo, "") => {
                return Err(Error::InvalidArgument(
                    "baseUrl: required for Gitea and Forgejo (your server's address)".into(),
                ));
            }
            (GitProvider::Generic, v) if !v.is_empty() => {
                return Err(Error::InvalidArgument(
                    "baseUrl: not used by generic integrations; put the full URL in the build config's repository".into(),
                ));
            }
            (GitProvider::Github | GitProvider::Bitbucket, v) if !v.is_empty() => {
                return Err(Error::InvalidArgument(
                    "baseUrl: github.com and bitbucket.org need none".into(),
                ));
            }
            (_, "") => None,
            (_, v) => Some(base_url(v)?),
        };
        let token = match (provider, req.token.as_str()) {
            (GitProvider::Generic, "") => None,
            (GitProvider::Generic, _) => {
                return Err(Error::InvalidArgument(
                    "token: generic integrations read with a generated deploy key, not a token"
                        .into(),
                ));
            }
            (_, "") => {
                return Err(Error::InvalidArgument(
                    "token: required (a fine-grained or project access token with read access to contents)".into(),
                ));
            }
            (_, t) => Some(token(t)?),
        };
        let secret = webhook_secret(&req.webhook_secret)?;
        let known = known_hosts(&req.ssh_known_hosts)?;
        if known.is_some() && provider != GitProvider::Generic {
            return Err(Error::InvalidArgument(
                "sshKnownHosts: only generic integrations read over SSH".into(),
            ));
        }
        let keyring = self.0.identity.keyring()?;
        let id = Uuid::now_v7();
        let key = if provider == GitProvider::Generic {
            Some(deploy_key::generate(&format!("ferry-{id}"))?)
        } else {
            None
        };
        let now = Utc::now();
        let encrypt = |column, value: &str| keyring.encrypt("git_integrations", column, id, value);
        let row = integrations::ActiveModel {
            id: Set(id),
            organization_id: Set(org),
            name: Set(name),
            provider: Set(provider),
            auth_type: Set(if key.is_some() {
                GitAuthType::SshKey
            } else {
                GitAuthType::Token
            }),
            base_url: Set(base),
            access_token: Set(token.map(|t| encrypt("access_token", t)).transpose()?),
            app_id: Set(None),
            installation_id: Set(None),
            private_key: Set(None),
            ssh_private_key: Set(key
                .as_ref()
                .map(|k| encrypt("ssh_private_key", &k.private))
                .transpose()?),
            ssh_public_key: Set(key.as_ref().map(|k| k.public.clone())),
            ssh_known_hosts: Set(known),
            webhook_secret: Set(encrypt("webhook_secret", &secret)?),
            created_by: Set(Some(caller.user_id)),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = crate::db::begin_write(db).await?;
        let row = row.insert(&txn).await.map_err(unique_as(
            "name: the organization already has a git integration with this name",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new("git_integration.create", AuditResourceType::Integration, id).details(
                    json!({ "name": row.name, "provider": format!("{:?}", row.provider) }),
                ),
            )
            .await?;
        txn.commit().await?;
        let mut out = integration_to_pb(&row, self.public_url());
        out.webhook_secret = secret;
        Ok(out)
    }

    /// The integration `id` the caller may perform `action` on.
    pub(crate) async fn integration(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(crate::authz::Scope, integrations::Model)> {
        caller
            .org_row(
                &self.0.identity.db,
                action,
                integrations::Entity::find_by_id(id),
                integrations::Column::OrganizationId,
                |r| r.organization_id,
                "git integration not found",
            )
            .await
    }

    pub(super) async fn get_integration(
        &self,
        request: Request<pb::GetGitIntegrationRequest>,
    ) -> Result<pb::GitIntegration> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, row) = self.integration(&caller, Action::GitRead, id).await?;
        Ok(integration_to_pb(&row, self.public_url()))
    }

    pub(super) async fn list_integrations(
        &self,
        request: Request<pb::ListGitIntegrationsRequest>,
    ) -> Result<pb::ListGitIntegrationsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = INTEGRATIONS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.organization(db, Action::GitRead, org).await?;
        let query =
            integrations::Entity::find().filter(integrations::Column::OrganizationId.eq(org));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |r| vec![Key::Text(r.name.clone()), Key::Id(r.id)]);
        Ok(pb::ListGitIntegrationsResponse {
            git_integrations: rows
                .iter()
                .map(|r| integration_to_pb(r, self.public_url()))
                .collect(),
            next_page_token,
        })
    }

    pub(super) async fn delete_integration(
        &self,
        request: Request<pb::DeleteGitIntegrationRequest>,
    ) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (scope, row) = self.integration(&caller, Action::GitManage, id).await?;
        let txn = crate::db::begin_write(&self.0.identity.db).await?;
        integrations::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("git_integration.delete", AuditResourceType::Integration, id)
                    .details(json!({ "name": row.name })),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_generated_or_bounded() {
        let generated = webhook_secret("").unwrap();
        assert_eq!(generated.len(), 64);
        assert_ne!(generated, webhook_secret("").unwrap());
        assert!(webhook_secret("short").is_err());
        assert!(webhook_secret("sixteen chars ok").is_err(), "spaces");
        assert_eq!(
            webhook_secret("0123456789abcdef").unwrap(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn known_hosts_are_keyscan_lines() {
        let line = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(
            known_hosts(&format!("# scanned\n{line}\n\n"))
                .unwrap()
                .as_deref(),
            Some(line)
        );
        assert_eq!(known_hosts("").unwrap(), None);
        for bad in ["git.example.com", "h ssh-ed25519 not;base64", "h rsa AAAA"] {
            let err = known_hosts(bad).unwrap_err().to_string();
            assert!(err.starts_with("sshKnownHosts: "), "{bad}: {err}");
        }
    }

    #[test]
    fn base_urls_are_http_hosts_without_credentials() {
        assert_eq!(
            base_url("https://git.example.com/").unwrap(),
            "https://git.example.com"
        );
        for bad in [
            "git.example.com",
            "ftp://x",
            "https://",
            "https://u:p@h",
            "https://h/?q",
        ] {
            let err = base_url(bad).unwrap_err().to_string();
            assert!(err.starts_with("baseUrl: "), "{bad}: {err}");
        }
    }
}
