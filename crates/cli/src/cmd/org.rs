//! Organization-level commands: `org use`, `project use`, `orgs`,
//! `projects`, `members`, `invitations`, `tokens`, `registries`, `audit`,
//! `link`.

use std::io::Read as _;

use ferry_proto::ferry::v1 as pb;

use crate::cli::{
    AuditCmd, InvitationsCmd, LinkArgs, MembersCmd, OrgsCmd, ProjectsCmd, RegistriesCmd, TokensCmd,
    UseCmd,
};
use crate::config::Link;
use crate::error::{CliError, Result};
use crate::list_all;
use crate::session::{Session, pick};

/// A role name → the proto enum.
pub fn parse_role(role: &str) -> Result<i32> {
    let name = format!("ORGANIZATION_ROLE_{}", role.to_ascii_uppercase());
    pb::OrganizationRole::from_str_name(&name)
        .map(|r| r as i32)
        .ok_or_else(|| {
            CliError::usage(format!(
                "unknown role `{role}` (viewer, member, admin, owner)"
            ))
        })
}

/// `ferry org use NAME`.
pub async fn org_use(s: &mut Session, UseCmd::Use { name }: UseCmd) -> Result<()> {
    let org = s.find_org(&name).await?;
    let ctx = s.context_mut()?;
    if ctx.org.as_deref() != Some(org.id.as_str()) {
        ctx.project = None;
    }
    ctx.org = Some(org.id.clone());
    s.save()?;
    s.out
        .note(format!("Using organization `{}` ({}).", org.name, org.id))
}

/// `ferry project use NAME`.
pub async fn project_use(s: &mut Session, UseCmd::Use { name }: UseCmd) -> Result<()> {
    let project = s.find_project(&name).await?;
    let ctx = s.context_mut()?;
    ctx.org = Some(project.organization_id.clone());
    ctx.project = Some(project.id.clone());
    s.save()?;
    s.out.note(format!(
        "Using project `{}` ({}).",
        project.name, project.id
    ))
}

/// `ferry orgs ...`.
pub async fn orgs(s: &mut Session, cmd: OrgsCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        OrgsCmd::List => {
            let orgs = s.all_orgs().await?;
            s.out.list(&orgs)
        }
        OrgsCmd::Create { name } => {
            let org = api
                .orgs()
                .create_organization(api.req(pb::CreateOrganizationRequest { name }))
                .await?
                .into_inner();
            if let Ok(ctx) = s.context_mut()
                && ctx.org.is_none()
            {
                ctx.org = Some(org.id.clone());
                s.save()?;
            }
            s.out.one(&org)
        }
        OrgsCmd::Rename { org, name } => {
            let id = s.find_org(&org).await?.id;
            let org = api
                .orgs()
                .rename_organization(api.req(pb::RenameOrganizationRequest { id, name }))
                .await?
                .into_inner();
            s.out.one(&org)
        }
        OrgsCmd::Delete { org } => {
            let org = s.find_org(&org).await?;
            api.orgs()
                .delete_organization(api.req(pb::DeleteOrganizationRequest { id: org.id.clone() }))
                .await?;
            if let Ok(ctx) = s.context_mut()
                && ctx.org.as_deref() == Some(org.id.as_str())
            {
                ctx.org = None;
                ctx.project = None;
                s.save()?;
            }
            s.out.note(format!("Deleted organization `{}`.", org.name))
        }
    }
}

/// `ferry projects ...`.
pub async fn projects(s: &mut Session, cmd: ProjectsCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        ProjectsCmd::List => {
            let projects = s.all_projects().await?;
            s.out.list(&projects)
        }
        ProjectsCmd::Create { name, description } => {
            let organization_id = s.org_id().await?;
            let project = api
                .projects()
                .create_project(api.req(pb::CreateProjectRequest {
                    organization_id,
                    name,
                    description,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            if let Ok(ctx) = s.context_mut()
                && ctx.project.is_none()
            {
                ctx.org = Some(project.organization_id.clone());
                ctx.project = Some(project.id.clone());
                s.save()?;
            }
            s.out.one(&project)
        }
        ProjectsCmd::Delete { project } => {
            let project = s.find_project(&project).await?;
            api.projects()
                .delete_project(api.req(pb::DeleteProjectRequest {
                    id: project.id.clone(),
                }))
                .await?;
            if let Ok(ctx) = s.context_mut()
                && ctx.project.as_deref() == Some(project.id.as_str())
            {
                ctx.project = None;
                s.save()?;
            }
            s.out.note(format!("Deleted project `{}`.", project.name))
        }
    }
}

async fn members_of(s: &mut Session) -> Result<(String, Vec<pb::Member>)> {
    let api = s.api().await?;
    let organization_id = s.org_id().await?;
    let members = list_all!(
        api,
        orgs,
        list_members,
        pb::ListMembersRequest {
            organization_id: organization_id.clone(),
            ..Default::default()
        },
        members
    );
    Ok((organization_id, members))
}

async fn find_member(s: &mut Session, user: &str) -> Result<(String, pb::Member)> {
    let (org, members) = members_of(s).await?;
    let member = pick(
        "member",
        user,
        members,
        |m| &m.user_id,
        |m| vec![&m.username, &m.email],
    )?;
    Ok((org, member))
}

/// `ferry members ...`.
pub async fn members(s: &mut Session, cmd: MembersCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        MembersCmd::List => {
            let (_, members) = members_of(s).await?;
            s.out.list(&members)
        }
        MembersCmd::SetRole { user, role } => {
            let role = parse_role(&role)?;
            let (organization_id, member) = find_member(s, &user).await?;
            let member = api
                .orgs()
                .change_member_role(api.req(pb::ChangeMemberRoleRequest {
                    organization_id,
                    user_id: member.user_id,
                    role,
                }))
                .await?
                .into_inner();
            s.out.one(&member)
        }
        MembersCmd::Remove { user } => {
            let (organization_id, member) = find_member(s, &user).await?;
            api.orgs()
                .remove_member(api.req(pb::RemoveMemberRequest {
                    organization_id,
                    user_id: member.user_id,
                }))
                .await?;
            s.out.note(format!("Removed `{}`.", member.username))
        }
    }
}

/// `ferry invitations ...`.
pub async fn invitations(s: &mut Session, cmd: InvitationsCmd) -> Result<()> {
    let api = s.api().await?;
    if let InvitationsCmd::Accept { token } = cmd {
        let org = api
            .invitations()
            .accept_invitation(api.req(pb::AcceptInvitationRequest { token }))
            .await?
            .into_inner();
        return s.out.one(&org);
    }
    let organization_id = s.org_id().await?;
    let list = || pb::ListInvitationsRequest {
        organization_id: organization_id.clone(),
        ..Default::default()
    };
    match cmd {
        InvitationsCmd::List => {
            let all = list_all!(api, invitations, list_invitations, list(), invitations);
            s.out.list(&all)
        }
        InvitationsCmd::Create { email, role } => {
            let created = api
                .invitations()
                .create_invitation(api.req(pb::CreateInvitationRequest {
                    organization_id: organization_id.clone(),
                    email,
                    role: parse_role(&role)?,
                    ttl_hours: 0,
                }))
                .await?
                .into_inner();
            let invitation = created.invitation.unwrap_or_default();
            s.out.one(&invitation)?;
            if created.emailed {
                s.out.note("The invitation was e-mailed.")
            } else {
                s.out
                    .note(format!("Send this link: {}", created.accept_url))
            }
        }
        InvitationsCmd::Revoke { invitation } => {
            let all = list_all!(api, invitations, list_invitations, list(), invitations);
            let found = pick(
                "invitation",
                &invitation,
                all,
                |i| &i.id,
                |i| vec![&i.email],
            )?;
            api.invitations()
                .revoke_invitation(api.req(pb::RevokeInvitationRequest {
                    organization_id: organization_id.clone(),
                    id: found.id,
                }))
                .await?;
            s.out
                .note(format!("Revoked the invitation for {}.", found.email))
        }
        InvitationsCmd::Accept { .. } => Ok(()),
    }
}

/// `ferry tokens ...`.
pub async fn tokens(s: &mut Session, cmd: TokensCmd) -> Result<()> {
    let api = s.api().await?;
    let organization_id = s.org_id().await?;
    let list = || pb::ListApiTokensRequest {
        organization_id: organization_id.clone(),
        ..Default::default()
    };
    match cmd {
        TokensCmd::List => {
            let all = list_all!(api, tokens, list_api_tokens, list(), api_tokens);
            s.out.list(&all)
        }
        TokensCmd::Create { name, role } => {
            let created = api
                .tokens()
                .create_api_token(api.req(pb::CreateApiTokenRequest {
                    organization_id: organization_id.clone(),
                    name,
                    role: parse_role(&role)?,
                    expires_at: None,
                }))
                .await?
                .into_inner();
            if s.out.structured() {
                let mut value = crate::output::to_json(&created.api_token.unwrap_or_default())?;
                value["token"] = created.token.into();
                return s.out.value(&value);
            }
            if s.out.quiet {
                return crate::output::write_out(&format!("{}\n", created.token));
            }
            s.out.note(format!(
                "Token (shown once, keep it safe):\n{}",
                created.token
            ))
        }
        TokensCmd::Revoke { token } => {
            let all = list_all!(api, tokens, list_api_tokens, list(), api_tokens);
            let found = pick("API token", &token, all, |t| &t.id, |t| vec![&t.name])?;
            api.tokens()
                .revoke_api_token(api.req(pb::RevokeApiTokenRequest {
                    organization_id: organization_id.clone(),
                    id: found.id,
                }))
                .await?;
            s.out.note(format!("Revoked token `{}`.", found.name))
        }
    }
}

/// `ferry registries ...`.
pub async fn registries(s: &mut Session, cmd: RegistriesCmd) -> Result<()> {
    let api = s.api().await?;
    let organization_id = s.org_id().await?;
    let list = || pb::ListRegistriesRequest {
        organization_id: organization_id.clone(),
        ..Default::default()
    };
    match cmd {
        RegistriesCmd::List => {
            let all = list_all!(api, registries, list_registries, list(), registries);
            s.out.list(&all)
        }
        RegistriesCmd::Create {
            name,
            url,
            username,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text.trim_end_matches(['\r', '\n']).to_string()
            } else {
                rpassword::prompt_password("Registry password: ")
                    .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?
            };
            let registry = api
                .registries()
                .create_registry(api.req(pb::CreateRegistryRequest {
                    organization_id: organization_id.clone(),
                    name,
                    url,
                    username,
                    password,
                }))
                .await?
                .into_inner();
            s.out.one(&registry)
        }
        RegistriesCmd::Delete { registry } => {
            let all = list_all!(api, registries, list_registries, list(), registries);
            let found = pick("registry", &registry, all, |r| &r.id, |r| vec![&r.name])?;
            api.registries()
                .delete_registry(api.req(pb::DeleteRegistryRequest {
                    organization_id: organization_id.clone(),
                    id: found.id,
                }))
                .await?;
            s.out.note(format!("Deleted registry `{}`.", found.name))
        }
    }
}

/// `ferry audit ...`.
pub async fn audit(s: &mut Session, cmd: AuditCmd) -> Result<()> {
    let api = s.api().await?;
    let organization_id = s.org_id().await?;
    match cmd {
        AuditCmd::List { limit } => {
            let mut entries = Vec::new();
            let mut page_token = String::new();
            while entries.len() < limit {
                let page = api
                    .audit()
                    .list_audit_log(api.req(pb::ListAuditLogRequest {
                        organization_id: organization_id.clone(),
                        page_size: u32::try_from(limit - entries.len()).unwrap_or(500).min(500),
                        page_token,
                        ..Default::default()
                    }))
                    .await?
                    .into_inner();
                entries.extend(page.entries);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            entries.truncate(limit);
            s.out.list(&entries)
        }
        AuditCmd::Verify => {
            let result = api
                .audit()
                .verify_audit_chain(api.req(pb::VerifyAuditChainRequest { organization_id }))
                .await?
                .into_inner();
            if s.out.structured() {
                return s.out.value(&serde_json::json!({
                    "ok": result.ok,
                    "entriesChecked": result.entries_checked,
                    "firstBrokenId": result.first_broken_id,
                    "reason": result.reason,
                }));
            }
            if result.ok {
                s.out.note(format!(
                    "The audit chain is intact ({} entries checked).",
                    result.entries_checked
                ))
            } else {
                Err(CliError::msg(format!(
                    "the audit chain is broken at {}: {}",
                    result.first_broken_id.unwrap_or_default(),
                    result.reason
                )))
            }
        }
    }
}

/// `ferry link`: writes ./ferry.toml with the project (and service).
pub async fn link(s: &mut Session, args: LinkArgs) -> Result<()> {
    let project_id = s.project_id().await?;
    let project = s.find_project(&project_id).await?;
    let service = match &args.service {
        Some(key) => Some(s.find_service(key).await?),
        None => None,
    };
    let link = Link {
        org: Some(project.organization_id.clone()),
        project: Some(project.id.clone()),
        service: service.as_ref().map(|svc| svc.id.clone()),
    };
    let path = link.save(&std::env::current_dir()?)?;
    let what = match &service {
        Some(svc) => format!("project `{}`, service `{}`", project.name, svc.name),
        None => format!("project `{}`", project.name),
    };
    s.out.note(format!("Linked {} to {what}.", path.display()))
}
