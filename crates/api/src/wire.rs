//! Conversions between protobuf wire values and the api's types, shared
//! by every RPC module.

use chrono::{DateTime, Utc};
use ferry_db::entities::enums::OrgRole;
use ferry_proto::ferry::v1 as pb;
use uuid::Uuid;

use crate::{Error, Result};

/// A protobuf timestamp.
pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A timestamp from the wire (`None` if out of range).
pub fn from_ts(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// Parses a UUID field, naming it on error.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value.trim())
        .map_err(|_| Error::InvalidArgument(format!("{field}: must be a UUID")))
}

/// The wire form of an organization role (`Unspecified`: none).
pub fn role_to_pb(role: Option<OrgRole>) -> pb::OrganizationRole {
    match role {
        None => pb::OrganizationRole::Unspecified,
        Some(OrgRole::Viewer) => pb::OrganizationRole::Viewer,
        Some(OrgRole::Member) => pb::OrganizationRole::Member,
        Some(OrgRole::Admin) => pb::OrganizationRole::Admin,
        Some(OrgRole::Owner) => pb::OrganizationRole::Owner,
    }
}
