//! `domains`: custom domains of the project and their proofs
//! (`ferry.v1.DomainService`).

use ferry_proto::ferry::v1 as pb;

use crate::cli::DomainsCmd;
use crate::error::Result;
use crate::list_all;
use crate::session::{Session, looks_like_id, pick};

async fn all_domains(s: &mut Session) -> Result<Vec<pb::Domain>> {
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    Ok(list_all!(
        api,
        domains,
        list_domains,
        pb::ListDomainsRequest {
            project_id,
            ..Default::default()
        },
        domains
    ))
}

/// The project's domain named (as added, any case, trailing dot allowed)
/// or with the id `key`.
async fn find_domain(s: &mut Session, key: &str) -> Result<pb::Domain> {
    let all = all_domains(s).await?;
    let name = key.trim_end_matches('.').to_ascii_lowercase();
    let key = if looks_like_id(key) { key } else { &name };
    pick("domain", key, all, |d| &d.id, |d| vec![&d.domain])
}

/// How to prove `d`, in words.
fn instructions(d: &pb::Domain) -> String {
    let mut text = format!(
        "To verify {}, publish a TXT record\n  {}  TXT  \"{}\"\nthen run `ferry domains verify {}`.",
        d.domain, d.txt_record_name, d.txt_record_value, d.domain
    );
    if !d.http_url.is_empty() {
        text.push_str(&format!(
            "\nOr point {} at this installation and run `ferry domains verify {} --http` \
             (ferry-proxy answers {}).",
            d.domain, d.domain, d.http_url
        ));
    }
    text
}

/// `ferry domains ...`.
pub async fn domains(s: &mut Session, cmd: DomainsCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        DomainsCmd::List => {
            let all = all_domains(s).await?;
            s.out.list(&all)
        }
        DomainsCmd::Add { domain } => {
            let project_id = s.project_id().await?;
            let d = api
                .domains()
                .add_domain(api.req(pb::AddDomainRequest {
                    project_id,
                    domain,
                    preverified: false,
                }))
                .await?
                .into_inner();
            s.out.one(&d)?;
            s.out.note(format!("\n{}", instructions(&d)))
        }
        DomainsCmd::Verify { domain, http } => {
            let d = find_domain(s, &domain).await?;
            let method = if http { "http" } else { "dns" };
            let d = api
                .domains()
                .verify_domain(api.req(pb::VerifyDomainRequest {
                    id: d.id,
                    method: method.into(),
                }))
                .await?
                .into_inner();
            s.out.one(&d)?;
            s.out.note(format!(
                "{} is verified; routes of this organization may use it.",
                d.domain
            ))
        }
        DomainsCmd::Rm { domain } => {
            let d = find_domain(s, &domain).await?;
            api.domains()
                .delete_domain(api.req(pb::DeleteDomainRequest { id: d.id }))
                .await?;
            s.out.note(format!(
                "Removed domain `{}` (routes already made under it stay).",
                d.domain
            ))
        }
    }
}
