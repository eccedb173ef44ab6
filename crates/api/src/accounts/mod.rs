//! The identity gRPC services: `AuthService`, `OrganizationService` and
//! `AuditService` (package `ferry.v1`).
//!
//! Every handler's first line is [`Identity::authenticate`] (except
//! `Register` and `Login`), then [`crate::authz::Caller`] for the action, and
//! every mutation writes its audit row ([`crate::audit::Auditor`]) in the
//! mutation's own transaction.

pub mod audit;
pub mod auth;
pub mod limits;
pub mod organization;
pub mod retention;
// Tenancy: members, invitations, API tokens, grants.
pub mod grants;
pub mod invitations;
pub mod members;
pub mod tokens;

use ferry_common::GrpcServices;
use ferry_proto::ferry::v1 as pb;

use crate::auth::Identity;

/// Adds the identity services to `services`. Deleting an organization
/// removes its projects' cluster objects through `workloads`.
pub fn add_identity_services(
    services: GrpcServices,
    workloads: &crate::workloads::Workloads,
) -> GrpcServices {
    let identity = &workloads.identity;
    services
        .add_service(pb::auth_service_server::AuthServiceServer::new(
            auth::AuthApi::new(identity.clone()),
        ))
        .add_service(
            pb::organization_service_server::OrganizationServiceServer::new(
                organization::OrganizationApi::new(workloads.clone()),
            ),
        )
        .add_service(pb::audit_service_server::AuditServiceServer::new(
            audit::AuditApi::new(identity.clone()),
        ))
}

/// Adds the tenancy services (`InvitationService`, `ApiTokenService`,
/// `GrantService`) to `services`. Accept links start with the configured
/// public URL (`--public-url`).
pub fn add_tenancy_services(
    services: GrpcServices,
    identity: &Identity,
    keyring: std::sync::Arc<ferry_db::crypto::Keyring>,
    smtp_trust: ferry_notify::smtp::SmtpTrust,
) -> GrpcServices {
    services
        .add_service(pb::invitation_service_server::InvitationServiceServer::new(
            invitations::InvitationApi::new(identity.clone(), keyring, &identity.config.public_url)
                .with_smtp_trust(smtp_trust),
        ))
        .add_service(pb::api_token_service_server::ApiTokenServiceServer::new(
            tokens::ApiTokenApi::new(identity.clone()),
        ))
        .add_service(pb::grant_service_server::GrantServiceServer::new(
            grants::GrantApi::new(identity.clone()),
        ))
}
