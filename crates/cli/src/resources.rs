//! How each API message prints: its proto name, table columns and id.

use ferry_proto::ferry::v1 as pb;

use crate::output::{age, enum_word, or_dash};
use crate::resource;

/// `ORGANIZATION_ROLE_ADMIN` → `admin`.
pub fn role_word(role: i32) -> String {
    pb::OrganizationRole::try_from(role).map_or_else(
        |_| role.to_string(),
        |r| enum_word(r.as_str_name(), "ORGANIZATION_ROLE_"),
    )
}

/// `DEPLOYMENT_STATUS_RUNNING` → `running`.
pub fn status_word(status: i32) -> String {
    pb::DeploymentStatus::try_from(status).map_or_else(
        |_| status.to_string(),
        |s| enum_word(s.as_str_name(), "DEPLOYMENT_STATUS_"),
    )
}

fn trigger_word(trigger: i32) -> String {
    pb::DeploymentTrigger::try_from(trigger).map_or_else(
        |_| trigger.to_string(),
        |t| enum_word(t.as_str_name(), "DEPLOYMENT_TRIGGER_"),
    )
}

/// `JOB_RUN_STATUS_SUCCEEDED` → `succeeded`.
fn run_status_word(status: i32) -> String {
    pb::JobRunStatus::try_from(status).map_or_else(
        |_| status.to_string(),
        |s| enum_word(s.as_str_name(), "JOB_RUN_STATUS_"),
    )
}

fn ports(ports: &[pb::Port]) -> String {
    let list: Vec<String> = ports.iter().map(|p| p.container_port.to_string()).collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

resource!(pb::Organization, "Organization", |o| o.id, [
    "ID" => o.id, "NAME" => o.name, "SLUG" => o.slug, "ROLE" => role_word(o.role),
    "CREATED" => age(o.created_at.as_ref()),
]);
resource!(pb::Project, "Project", |p| p.id, [
    "ID" => p.id, "NAME" => p.name, "SLUG" => p.slug, "NAMESPACE" => p.namespace,
    "CREATED" => age(p.created_at.as_ref()),
]);
resource!(pb::Service, "Service", |s| s.id, [
    "ID" => s.id, "NAME" => s.name, "STATUS" => or_dash(&s.status),
    "IMAGE" => or_dash(&s.image), "REPLICAS" => s.replicas, "PORTS" => ports(&s.ports),
    "CREATED" => age(s.created_at.as_ref()),
]);
resource!(pb::EnvVar, "EnvVar", |e| e.key, [
    "KEY" => e.key, "VALUE" => if e.secret { "(secret)" } else { e.value.as_str() },
    "UPDATED" => age(e.updated_at.as_ref()),
]);
resource!(pb::Volume, "Volume", |v| v.id, [
    "ID" => v.id, "NAME" => v.name, "SIZE" => format!("{} GB", v.size_gb),
    "CLASS" => or_dash(&v.storage_class), "CREATED" => age(v.created_at.as_ref()),
]);
resource!(pb::VariableGroup, "VariableGroup", |g| g.id, [
    "ID" => g.id, "NAME" => g.name, "VARIABLES" => g.variables.len(),
    "DESCRIPTION" => or_dash(&g.description),
]);
resource!(pb::Route, "Route", |r| r.id, [
    "ID" => r.id, "HOST" => r.hostname, "PATH" => or_dash(&r.path_prefix), "TLS" => r.tls_enabled,
    "TARGETS" => r.targets.iter().map(|t| format!("{}:{}", short(&t.service_id), t.port))
        .collect::<Vec<_>>().join(","),
]);
resource!(pb::Registry, "Registry", |r| r.id, [
    "ID" => r.id, "NAME" => r.name, "URL" => r.url, "USERNAME" => r.username,
]);
resource!(pb::GitIntegration, "GitIntegration", |g| g.id, [
    "ID" => g.id, "NAME" => g.name,
    "PROVIDER" => enum_word(g.provider().as_str_name(), "GIT_PROVIDER_"),
    "BASE URL" => or_dash(&g.base_url), "WEBHOOK URL" => g.webhook_url,
    "CREATED" => age(g.created_at.as_ref()),
]);
resource!(pb::BuildConfig, "BuildConfig", |c| c.service_id, [
    "REPOSITORY" => c.repository, "BRANCH" => c.branch,
    "TYPE" => enum_word(c.build_type().as_str_name(), "BUILD_TYPE_"),
    "ROOT" => or_dash(&c.root_dir), "WATCH" => or_dash(&c.watch_paths.join(",")),
    "AUTO DEPLOY" => c.auto_deploy,
]);
resource!(pb::Build, "Build", |b| b.id, [
    "ID" => b.id, "STATUS" => enum_word(b.status().as_str_name(), "BUILD_STATUS_"),
    "TRIGGER" => enum_word(b.trigger().as_str_name(), "DEPLOYMENT_TRIGGER_"),
    "COMMIT" => or_dash(b.commit_sha.get(..12).unwrap_or(&b.commit_sha)),
    "IMAGE" => or_dash(&b.image),
    "MESSAGE" => or_dash(b.message.lines().next().unwrap_or_default()),
    "CREATED" => age(b.created_at.as_ref()),
]);
resource!(pb::WebhookDelivery, "WebhookDelivery", |d| d.id, [
    "DELIVERY" => d.delivery_id, "EVENT" => d.event, "BRANCH" => or_dash(&d.branch),
    "AFTER" => or_dash(d.after_sha.get(..12).unwrap_or(&d.after_sha)),
    "STATUS" => enum_word(d.status().as_str_name(), "WEBHOOK_DELIVERY_STATUS_"),
    "REASON" => or_dash(&d.reason), "RECEIVED" => age(d.received_at.as_ref()),
]);
resource!(pb::Job, "Job", |j| j.id, [
    "NAME" => j.name, "SCHEDULE" => or_dash(&j.schedule),
    "NEXT RUN" => j.next_runs.first().map_or_else(|| "-".into(), chrono_time),
    "LAST RUN" => j.last_run.as_ref().map_or_else(|| "-".into(), |r| run_status_word(r.status)),
    "RUNS" => if j.image.is_empty() { format!("service {}", short(&j.service_id)) } else { j.image.clone() },
    "ENABLED" => j.enabled,
]);
resource!(pb::Domain, "Domain", |d| d.id, [
    "DOMAIN" => d.domain, "STATUS" => d.status, "METHOD" => or_dash(&d.method),
    "CHECKED" => age(d.last_checked_at.as_ref()), "PROBLEM" => or_dash(&d.last_check_error),
]);
resource!(pb::JobRun, "JobRun", |r| r.id, [
    "ID" => r.id, "STATUS" => run_status_word(r.status),
    "TRIGGER" => enum_word(r.trigger().as_str_name(), "JOB_RUN_TRIGGER_"),
    "EXIT" => r.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
    "CREATED" => age(r.created_at.as_ref()), "REASON" => or_dash(&r.reason),
]);
resource!(pb::ApiToken, "ApiToken", |t| t.id, [
    "ID" => t.id, "NAME" => t.name, "PREFIX" => t.prefix, "ROLE" => role_word(t.role),
    "LAST USED" => age(t.last_used_at.as_ref()),
    "REVOKED" => if t.revoked_at.is_some() { "yes" } else { "no" },
]);
resource!(pb::Member, "Member", |m| m.user_id, [
    "USER ID" => m.user_id, "USERNAME" => m.username, "EMAIL" => m.email,
    "ROLE" => role_word(m.role), "JOINED" => age(m.joined_at.as_ref()),
]);
resource!(pb::Invitation, "Invitation", |i| i.id, [
    "ID" => i.id, "EMAIL" => i.email, "ROLE" => role_word(i.role),
    "EXPIRES" => i.expires_at.as_ref().map_or_else(|| "-".into(), chrono_time),
]);
resource!(pb::AuditEntry, "AuditEntry", |a| a.id, [
    "AGE" => age(a.created_at.as_ref()), "ACTION" => a.action,
    "RESOURCE" => format!("{} {}", a.resource_type, a.resource_id.as_deref().map_or("", short)),
    "ACTOR" => a.actor_id.as_deref().map_or("-", short),
]);
resource!(pb::Deployment, "Deployment", |d| d.id, [
    "ID" => d.id, "STATUS" => status_word(d.status), "TRIGGER" => trigger_word(d.trigger),
    "IMAGE" => or_dash(&d.image), "CREATED" => age(d.created_at.as_ref()),
    "MESSAGE" => or_dash(&d.message),
]);
resource!(pb::Stack, "Stack", |s| s.id, [
    "ID" => s.id, "NAME" => s.name, "STATUS" => or_dash(&s.status),
    "SERVICES" => s.service_ids.len(),
]);
resource!(pb::ServiceEvent, "ServiceEvent", |e| e.object, [
    "LAST SEEN" => age(e.last_seen.as_ref()), "TYPE" => e.r#type, "OBJECT" => e.object,
    "SUMMARY" => if e.summary.is_empty() { format!("{}: {}", e.reason, e.message) } else { e.summary.clone() },
]);
resource!(pb::User, "User", |u| u.id, [
    "ID" => u.id, "USERNAME" => u.username, "EMAIL" => u.email, "2FA" => u.totp_enabled,
]);
resource!(pb::LogLine, "LogLine", |l| l.pod, [
    "POD" => l.pod, "LINE" => l.line,
]);
resource!(pb::DeploymentLogLine, "DeploymentLogLine", |l| l.message, [
    "LEVEL" => l.level, "MESSAGE" => l.message,
]);

/// A timestamp as RFC 3339 UTC.
pub fn chrono_time(ts: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(ts.seconds, 0).map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}
