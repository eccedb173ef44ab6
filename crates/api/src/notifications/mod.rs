//! `ferry.v1.NotificationService`: an organization's notification
//! channels, their subscriptions and delivery log, `TestChannel`, and the
//! organization's SMTP settings (`org_email_configs`).
//!
//! Every handler follows the request prologue: authenticate
//! ([`Caller::of`]), load the row scoped to the caller and decide the
//! action in one step (`organization` / `org_row`), validate naming the
//! field, then write and audit in one transaction. Members read channels
//! and deliveries (`notification.read`); admins change them, test them and
//! manage SMTP (`notification.manage`).
//!
//! Secrets: webhook URLs (they carry the provider's token), the generic
//! webhook's signing secret and the SMTP password are encrypted with the
//! keyring, bound to their row, never returned and never logged; a channel
//! shows its URL redacted (`target_hint`, computed when it is saved). The
//! signing secret is returned once, by CreateChannel.
//!
//! Producers of events are in [`produce`]; delivery is ferry-scheduler's
//! (`ferry_notify::Worker`).

pub mod produce;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_common::GrpcServices;
use ferry_db::entities::enums::{AuditResourceType, NotificationKind, SmtpTlsMode};
use ferry_db::entities::{
    notification_channels as channels, notification_deliveries as deliveries,
    notification_outbox as outbox, notification_subscriptions as subscriptions, org_email_configs,
    projects,
};
use ferry_db::outbox::EventKind;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _,
};
use ferry_notify::{Notification, Sender};
use ferry_proto::ferry::v1 as pb;
use pb::notification_service_server::NotificationService;
use ring::rand::SecureRandom as _;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::Entry;
use crate::authz::{Action, Caller, Scope};
use crate::paging::{Key, Keyset, Kind, asc, desc};
use crate::wire::{parse_id, ts};
use crate::workloads::{Workloads, unique_as, validate};
use crate::{Error, Result};

/// The operator's notification settings.
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    /// Allow webhook and SMTP targets on loopback, private and link-local
    /// addresses (`--notifications-allow-private-targets`).
    pub allow_private_targets: bool,
    /// TestChannel's timeout.
    pub send_timeout: Duration,
    /// Extra CAs trusted for SMTP relays (`--smtp-ca-file`): TestChannel
    /// and invitation e-mails.
    pub smtp_trust: ferry_notify::smtp::SmtpTrust,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            send_timeout: Duration::from_secs(10),
            smtp_trust: ferry_notify::smtp::SmtpTrust::default(),
        }
    }
}

const TABLE: &str = "notification_channels";

/// The most e-mail recipients per channel.
pub const MAX_RECIPIENTS: usize = ferry_notify::send::MAX_RECIPIENTS;

/// A stored enum and its proto enum, both ways, from one table:
/// `$to(db) -> pb` and `$from(i32) -> Result<db>`, refusing other values
/// with `$refused`; `unspecified` names what an unset field means.
macro_rules! pb_enum {
    (
        $db:ident <=> $pb:ident, $from:ident, $to:ident, $refused:literal
        $(, unspecified => $default:ident)?;
        $($d:ident <=> $p:ident),+ $(,)?
    ) => {
        fn $to(value: $db) -> pb::$pb {
            match value {
                $($db::$d => pb::$pb::$p,)+
            }
        }

        fn $from(value: i32) -> Result<$db> {
            match pb::$pb::try_from(value) {
                $(Ok(pb::$pb::$p) => Ok($db::$d),)+
                $(Ok(pb::$pb::Unspecified) => Ok($db::$default),)?
                _ => Err(Error::InvalidArgument($refused.into())),
            }
        }
    };
}

pb_enum! {
    NotificationKind <=> ChannelKind, kind_from_pb, kind_to_pb,
    "kind: one of SLACK, DISCORD, TEAMS, GOOGLE_CHAT, WEBHOOK, EMAIL";
    Slack <=> Slack,
    Discord <=> Discord,
    Teams <=> Teams,
    GoogleChat <=> GoogleChat,
    Webhook <=> Webhook,
    Email <=> Email,
}

pb_enum! {
    SmtpTlsMode <=> SmtpTlsMode, tls_from_pb, tls_to_pb,
    "tlsMode: one of NONE, STARTTLS, TLS", unspecified => Starttls;
    None <=> None,
    Starttls <=> Starttls,
    Tls <=> Tls,
}

/// A channel kind's stable name in audit details: its proto name without
/// the prefix, e.g. `google_chat`.
fn kind_name(kind: NotificationKind) -> String {
    kind_to_pb(kind)
        .as_str_name()
        .trim_start_matches("CHANNEL_KIND_")
        .to_ascii_lowercase()
}

/// An event name Ferry knows.
fn event_kind(field: &str, value: &str) -> Result<EventKind> {
    EventKind::parse(value.trim()).ok_or_else(|| {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        Error::InvalidArgument(format!("{field}: one of {}", names.join(", ")))
    })
}

/// 1 to 20 distinct deliverable addresses.
fn recipients(values: &[String]) -> Result<Vec<String>> {
    let bad = |why: String| Error::InvalidArgument(format!("emailRecipients: {why}"));
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let v = v.trim();
        if v.len() > 254 || v.parse::<lettre::Address>().is_err() {
            return Err(bad(format!("{v:?} is not an e-mail address")));
        }
        if !out.iter().any(|o| o.eq_ignore_ascii_case(v)) {
            out.push(v.to_owned());
        }
    }
    if out.is_empty() || out.len() > MAX_RECIPIENTS {
        return Err(bad(format!("1 to {MAX_RECIPIENTS} addresses")));
    }
    Ok(out)
}

/// The caller's signing secret (16 to 256 printable bytes) or 32 random
/// bytes as hex.
fn signing_secret(value: &str) -> Result<String> {
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
            "signingSecret: 16 to 256 printable characters without spaces (empty: generated)"
                .into(),
        ))
    }
}

fn channel_message(c: &channels::Model, subs: &[subscriptions::Model]) -> pb::NotificationChannel {
    pb::NotificationChannel {
        id: c.id.to_string(),
        organization_id: c.organization_id.to_string(),
        kind: kind_to_pb(c.kind).into(),
        name: c.name.clone(),
        enabled: c.enabled,
        target: c.target_hint.clone().unwrap_or_default(),
        email_recipients: ferry_notify::send::recipients(&c.config),
        signed: c.signing_secret.is_some(),
        subscriptions: subs
            .iter()
            .filter(|s| s.channel_id == c.id)
            .map(subscription_message)
            .collect(),
        created_at: Some(ts(c.created_at)),
        updated_at: Some(ts(c.updated_at)),
    }
}

fn subscription_message(s: &subscriptions::Model) -> pb::NotificationSubscription {
    pb::NotificationSubscription {
        id: s.id.to_string(),
        channel_id: s.channel_id.to_string(),
        event: s.event.clone(),
        project_id: s.project_id.map(|p| p.to_string()).unwrap_or_default(),
        created_at: Some(ts(s.created_at)),
    }
}

fn status_name(s: ferry_db::entities::enums::NotificationDeliveryStatus) -> &'static str {
    use ferry_db::entities::enums::NotificationDeliveryStatus as S;
    match s {
        S::Pending => "pending",
        S::Delivered => "delivered",
        S::Failed => "failed",
    }
}

fn email_config_message(c: &org_email_configs::Model) -> pb::EmailConfig {
    pb::EmailConfig {
        organization_id: c.organization_id.to_string(),
        smtp_host: c.smtp_host.clone(),
        smtp_port: c.smtp_port,
        username: c.username.clone().unwrap_or_default(),
        has_password: c.password.is_some(),
        from_address: c.from_address.clone(),
        from_name: c.from_name.clone().unwrap_or_default(),
        tls_mode: tls_to_pb(c.tls_mode).into(),
        enabled: c.enabled,
        updated_at: Some(ts(c.updated_at)),
    }
}

/// ListChannels' order: by name, then id.
static CHANNELS: Keyset<channels::Column> = Keyset {
    list: "notificationChannels",
    columns: &[
        asc(channels::Column::Name, Kind::Text),
        asc(channels::Column::Id, Kind::Id),
    ],
};

/// ListDeliveries' order: newest first.
static DELIVERIES: Keyset<deliveries::Column> = Keyset {
    list: "notificationDeliveries",
    columns: &[
        desc(deliveries::Column::CreatedAt, Kind::Time),
        desc(deliveries::Column::Id, Kind::Id),
    ],
};

/// The `NotificationService` implementation.
#[derive(Debug, Clone)]
pub struct NotificationApi {
    w: Workloads,
    /// `Err`: TLS could not be set up (TestChannel answers Unavailable).
    sender: std::result::Result<Sender, String>,
}

/// Adds `NotificationService` to `services`.
pub fn add_notification_service(services: GrpcServices, workloads: &Workloads) -> GrpcServices {
    let config = &workloads.deployer.config.notifications;
    let sender = Sender::new(ferry_notify::SendConfig {
        allow_private: config.allow_private_targets,
        timeout: config.send_timeout,
    })
    .map(|s| s.with_smtp_trust(config.smtp_trust.clone()))
    .map_err(|e| {
        tracing::error!(error = %e, "notification sender setup failed");
        e.to_string()
    });
    services.add_service(
        pb::notification_service_server::NotificationServiceServer::new(NotificationApi {
            w: workloads.clone(),
            sender,
        }),
    )
}

/// A channel's webhook target: parsed, allowed, and its redacted form.
struct WebhookTarget {
    url: String,
    hint: String,
}

impl NotificationApi {
    fn config(&self) -> &NotificationConfig {
        &self.w.deployer.config.notifications
    }

    fn db(&self) -> &ferry_db::sea_orm::DatabaseConnection {
        &self.w.identity.db
    }

    async fn webhook_target(&self, value: &str) -> Result<WebhookTarget> {
        let url =
            ferry_notify::target::parse_url("webhookUrl", value).map_err(Error::InvalidArgument)?;
        ferry_notify::target::check_host("webhookUrl", &url, self.config().allow_private_targets)
            .await
            .map_err(Error::InvalidArgument)?;
        Ok(WebhookTarget {
            hint: ferry_notify::target::redact(&url),
            url: value.trim().to_owned(),
        })
    }

    /// The prologue of a channel RPC: authenticates, parses the channel id
    /// (`field`) and loads the channel if the caller may `action` it.
    async fn channel<T>(
        &self,
        request: &Request<T>,
        field: &str,
        value: &str,
        action: Action,
    ) -> Result<(Scope, channels::Model)> {
        let caller = Caller::of(&self.w.identity, request).await?;
        let id = parse_id(field, value)?;
        caller
            .org_row(
                self.db(),
                action,
                channels::Entity::find_by_id(id),
                channels::Column::OrganizationId,
                |c| c.organization_id,
                "channel not found",
            )
            .await
    }

    /// The prologue of an organization RPC: authenticates, parses
    /// `organizationId` and decides `action` in that organization.
    async fn organization<T>(
        &self,
        request: &Request<T>,
        value: &str,
        action: Action,
    ) -> Result<(Scope, Uuid)> {
        let caller = Caller::of(&self.w.identity, request).await?;
        let org = parse_id("organizationId", value)?;
        let (scope, _) = caller.organization(self.db(), action, org).await?;
        Ok((scope, org))
    }

    async fn subscriptions_of(&self, ids: &[Uuid]) -> Result<Vec<subscriptions::Model>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(subscriptions::Entity::find()
            .filter(subscriptions::Column::ChannelId.is_in(ids.iter().copied()))
            .order_by_asc(subscriptions::Column::Event)
            .order_by_asc(subscriptions::Column::Id)
            .all(self.db())
            .await?)
    }

    async fn create(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<pb::CreateChannelResponse> {
        let req = request.get_ref();
        let (scope, org) = self
            .organization(&request, &req.organization_id, Action::NotificationManage)
            .await?;
        let db = self.db();
        let kind = kind_from_pb(req.kind)?;
        let name = validate::display_name("name", &req.name)?;
        let events = req
            .events
            .iter()
            .map(|e| event_kind("events", e))
            .collect::<Result<Vec<_>>>()?;
        let (target, config, secret) = match kind {
            NotificationKind::Email => {
                if !req.webhook_url.is_empty() || !req.signing_secret.is_empty() {
                    return Err(Error::InvalidArgument(
                        "webhookUrl: e-mail channels take emailRecipients, not a URL or secret"
                            .into(),
                    ));
                }
                let to = recipients(&req.email_recipients)?;
                (None, json!({ "recipients": to }), None)
            }
            _ => {
                if !req.email_recipients.is_empty() {
                    return Err(Error::InvalidArgument(
                        "emailRecipients: only e-mail channels have recipients".into(),
                    ));
                }
                if kind != NotificationKind::Webhook && !req.signing_secret.is_empty() {
                    return Err(Error::InvalidArgument(
                        "signingSecret: only generic webhooks sign their requests".into(),
                    ));
                }
                let target = self.webhook_target(&req.webhook_url).await?;
                let secret = (kind == NotificationKind::Webhook)
                    .then(|| signing_secret(&req.signing_secret))
                    .transpose()?;
                (Some(target), json!({}), secret)
            }
        };
        let keyring = self.w.identity.keyring()?;
        let id = Uuid::now_v7();
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let row = channels::ActiveModel {
            id: Set(id),
            organization_id: Set(org),
            name: Set(name),
            kind: Set(kind),
            config: Set(config),
            webhook_url: Set(target
                .as_ref()
                .map(|t| keyring.encrypt(TABLE, "webhook_url", id, &t.url))
                .transpose()?),
            signing_secret: Set(secret
                .as_ref()
                .map(|s| keyring.encrypt(TABLE, "signing_secret", id, s))
                .transpose()?),
            target_hint: Set(target.as_ref().map(|t| t.hint.clone())),
            enabled: Set(!req.disabled),
            created_by: Set(Some(scope.actor().user_id)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "name: a channel with this name exists in the organization",
        ))?;
        let mut subs = Vec::new();
        for kind in dedup(events) {
            subs.push(
                subscriptions::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    channel_id: Set(id),
                    organization_id: Set(org),
                    event: Set(kind.as_str().to_owned()),
                    project_id: Set(None),
                    created_by: Set(Some(scope.actor().user_id)),
                    created_at: Set(now),
                }
                .insert(&txn)
                .await?,
            );
        }
        scope
            .audit(
                &txn,
                Entry::new(
                    "notification_channel.create",
                    AuditResourceType::NotificationChannel,
                    id,
                )
                .details(json!({
                    "name": row.name,
                    "kind": kind_name(kind),
                    "target": row.target_hint,
                    "events": subs.iter().map(|s| s.event.clone()).collect::<Vec<_>>(),
                })),
            )
            .await?;
        txn.commit().await?;
        Ok(pb::CreateChannelResponse {
            channel: Some(channel_message(&row, &subs)),
            signing_secret: secret.unwrap_or_default(),
        })
    }

    async fn get(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<pb::NotificationChannel> {
        let (_, row) = self
            .channel(
                &request,
                "id",
                &request.get_ref().id,
                Action::NotificationRead,
            )
            .await?;
        let subs = self.subscriptions_of(&[row.id]).await?;
        Ok(channel_message(&row, &subs))
    }

    async fn list(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<pb::ListChannelsResponse> {
        let req = request.get_ref();
        let (_, org) = self
            .organization(&request, &req.organization_id, Action::NotificationRead)
            .await?;
        let page = CHANNELS.page(req.page_size, &req.page_token)?;
        let db = self.db();
        let rows = page
            .apply(channels::Entity::find().filter(channels::Column::OrganizationId.eq(org)))
            .all(db)
            .await?;
        let (rows, next_page_token) =
            page.finish(rows, |c| vec![Key::Text(c.name.clone()), Key::Id(c.id)]);
        let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
        let subs = self.subscriptions_of(&ids).await?;
        Ok(pb::ListChannelsResponse {
            channels: rows.iter().map(|c| channel_message(c, &subs)).collect(),
            next_page_token,
        })
    }

    async fn update(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<pb::NotificationChannel> {
        let req = request.get_ref();
        let (scope, row) = self
            .channel(&request, "id", &req.id, Action::NotificationManage)
            .await?;
        let id = row.id;
        let mut update = row.clone().into_active_model();
        let mut changed = Vec::new();
        if !req.name.trim().is_empty() {
            update.name = Set(validate::display_name("name", &req.name)?);
            changed.push("name");
        }
        if !req.webhook_url.trim().is_empty() {
            if row.kind == NotificationKind::Email {
                return Err(Error::InvalidArgument(
                    "webhookUrl: e-mail channels have recipients, not a URL".into(),
                ));
            }
            let target = self.webhook_target(&req.webhook_url).await?;
            let keyring = self.w.identity.keyring()?;
            update.webhook_url = Set(Some(keyring.encrypt(
                TABLE,
                "webhook_url",
                id,
                &target.url,
            )?));
            update.target_hint = Set(Some(target.hint));
            changed.push("webhookUrl");
        }
        if !req.email_recipients.is_empty() {
            if row.kind != NotificationKind::Email {
                return Err(Error::InvalidArgument(
                    "emailRecipients: only e-mail channels have recipients".into(),
                ));
            }
            update.config = Set(json!({ "recipients": recipients(&req.email_recipients)? }));
            changed.push("emailRecipients");
        }
        if let Some(enabled) = req.enabled {
            update.enabled = Set(enabled);
            changed.push("enabled");
        }
        if changed.is_empty() {
            let subs = self.subscriptions_of(&[id]).await?;
            return Ok(channel_message(&row, &subs));
        }
        update.updated_at = Set(Utc::now());
        let txn = crate::db::begin_write(self.db()).await?;
        let updated = update.update(&txn).await.map_err(unique_as(
            "name: a channel with this name exists in the organization",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "notification_channel.update",
                    AuditResourceType::NotificationChannel,
                    id,
                )
                .details(
                    json!({ "name": updated.name, "changed": changed, "enabled": updated.enabled }),
                ),
            )
            .await?;
        txn.commit().await?;
        let subs = self.subscriptions_of(&[id]).await?;
        Ok(channel_message(&updated, &subs))
    }

    /// A new random signing secret for a generic webhook, returned once.
    async fn rotate_secret(
        &self,
        request: Request<pb::RotateChannelSecretRequest>,
    ) -> Result<pb::RotateChannelSecretResponse> {
        let (scope, row) = self
            .channel(
                &request,
                "id",
                &request.get_ref().id,
                Action::NotificationManage,
            )
            .await?;
        let id = row.id;
        if row.kind != NotificationKind::Webhook {
            return Err(Error::FailedPrecondition(
                "only generic webhook channels are signed".into(),
            ));
        }
        let secret = signing_secret("")?;
        let keyring = self.w.identity.keyring()?;
        let mut update = row.into_active_model();
        update.signing_secret = Set(Some(keyring.encrypt(
            TABLE,
            "signing_secret",
            id,
            &secret,
        )?));
        update.updated_at = Set(Utc::now());
        let txn = crate::db::begin_write(self.db()).await?;
        let updated = update.update(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "notification_channel.rotate_secret",
                    AuditResourceType::NotificationChannel,
                    id,
                )
                .details(json!({ "name": updated.name })),
            )
            .await?;
        txn.commit().await?;
        let subs = self.subscriptions_of(&[id]).await?;
        Ok(pb::RotateChannelSecretResponse {
            channel: Some(channel_message(&updated, &subs)),
            signing_secret: secret,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteChannelRequest>) -> Result<()> {
        let (scope, row) = self
            .channel(
                &request,
                "id",
                &request.get_ref().id,
                Action::NotificationManage,
            )
            .await?;
        let id = row.id;
        scope
            .remove(
                self.db(),
                channels::Entity::delete_many()
                    .filter(channels::Column::Id.eq(id))
                    .filter(channels::Column::OrganizationId.eq(row.organization_id)),
                "channel not found",
                Entry::new(
                    "notification_channel.delete",
                    AuditResourceType::NotificationChannel,
                    id,
                )
                .details(json!({ "name": row.name, "kind": kind_name(row.kind) })),
            )
            .await
    }

    async fn test(
        &self,
        request: Request<pb::TestChannelRequest>,
    ) -> Result<pb::TestChannelResponse> {
        let (_, row) = self
            .channel(
                &request,
                "id",
                &request.get_ref().id,
                Action::NotificationManage,
            )
            .await?;
        let sender = self
            .sender
            .as_ref()
            .map_err(|e| Error::Unavailable(format!("notifications cannot be sent: {e}")))?;
        let keyring = self.w.identity.keyring()?;
        let started = Instant::now();
        let outcome = sender
            .send(
                self.db(),
                keyring,
                &row,
                &Notification::test(row.organization_id, &row.name),
            )
            .await;
        tracing::info!(
            channel = %row.id,
            delivered = outcome.delivered,
            status = outcome.status,
            "test notification sent"
        );
        Ok(pb::TestChannelResponse {
            delivered: outcome.delivered,
            status_code: outcome.status.map(i32::from).unwrap_or_default(),
            error: outcome.error.unwrap_or_default(),
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// The project `value` names, which must be in `org`; `None` if empty.
    async fn project_in(&self, org: Uuid, value: &str) -> Result<Option<Uuid>> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        let id = parse_id("projectId", value)?;
        projects::Entity::find_by_id(id)
            .filter(projects::Column::OrganizationId.eq(org))
            .one(self.db())
            .await?
            .map(|p| Some(p.id))
            .ok_or_else(|| {
                Error::NotFound("projectId: project not found in the channel's organization".into())
            })
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<pb::NotificationSubscription> {
        let req = request.get_ref();
        let (scope, channel) = self
            .channel(
                &request,
                "channelId",
                &req.channel_id,
                Action::NotificationManage,
            )
            .await?;
        let id = channel.id;
        let event = event_kind("event", &req.event)?;
        let project = self
            .project_in(channel.organization_id, &req.project_id)
            .await?;
        let txn = crate::db::begin_write(self.db()).await?;
        let row = subscriptions::ActiveModel {
            id: Set(Uuid::now_v7()),
            channel_id: Set(id),
            organization_id: Set(channel.organization_id),
            event: Set(event.as_str().to_owned()),
            project_id: Set(project),
            created_by: Set(Some(scope.actor().user_id)),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "event: the channel is subscribed to this event already (for this project)",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "notification_channel.subscribe",
                    AuditResourceType::NotificationChannel,
                    id,
                )
                .details(json!({ "event": event.as_str(), "projectId": project })),
            )
            .await?;
        txn.commit().await?;
        Ok(subscription_message(&row))
    }

    async fn unsubscribe(&self, request: Request<pb::UnsubscribeRequest>) -> Result<()> {
        let req = request.get_ref();
        let (scope, channel) = self
            .channel(
                &request,
                "channelId",
                &req.channel_id,
                Action::NotificationManage,
            )
            .await?;
        let id = channel.id;
        let event = event_kind("event", &req.event)?;
        let project = self
            .project_in(channel.organization_id, &req.project_id)
            .await?;
        let mut rows = subscriptions::Entity::delete_many()
            .filter(subscriptions::Column::ChannelId.eq(id))
            .filter(subscriptions::Column::Event.eq(event.as_str()));
        rows = match project {
            Some(p) => rows.filter(subscriptions::Column::ProjectId.eq(p)),
            None => rows.filter(subscriptions::Column::ProjectId.is_null()),
        };
        scope
            .remove(
                self.db(),
                rows,
                "event: the channel is not subscribed to this event (for this project)",
                Entry::new(
                    "notification_channel.unsubscribe",
                    AuditResourceType::NotificationChannel,
                    id,
                )
                .details(json!({ "event": event.as_str(), "projectId": project })),
            )
            .await
    }

    async fn deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<pb::ListDeliveriesResponse> {
        let req = request.get_ref();
        let page = DELIVERIES.page(req.page_size, &req.page_token)?;
        let (_, channel) = self
            .channel(
                &request,
                "channelId",
                &req.channel_id,
                Action::NotificationRead,
            )
            .await?;
        let id = channel.id;
        let db = self.db();
        let rows = page
            .apply(
                deliveries::Entity::find()
                    .filter(deliveries::Column::ChannelId.eq(id))
                    .filter(deliveries::Column::OrganizationId.eq(channel.organization_id)),
            )
            .all(db)
            .await?;
        let (rows, next_page_token) =
            page.finish(rows, |d| vec![Key::Time(d.created_at), Key::Id(d.id)]);
        let events: HashMap<Uuid, outbox::Model> = if rows.is_empty() {
            HashMap::new()
        } else {
            outbox::Entity::find()
                .filter(outbox::Column::Id.is_in(rows.iter().map(|d| d.event_id)))
                .all(db)
                .await?
                .into_iter()
                .map(|e| (e.id, e))
                .collect()
        };
        Ok(pb::ListDeliveriesResponse {
            deliveries: rows
                .iter()
                .map(|d| {
                    let event = events.get(&d.event_id);
                    pb::NotificationDelivery {
                        id: d.id.to_string(),
                        channel_id: d.channel_id.to_string(),
                        event_id: d.event_id.to_string(),
                        event: event.map(|e| e.event.clone()).unwrap_or_default(),
                        project_id: event
                            .and_then(|e| e.project_id)
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        status: status_name(d.status).into(),
                        attempts: d.attempts,
                        last_response_code: d.last_response_code.unwrap_or_default(),
                        last_error: d.last_error.clone().unwrap_or_default(),
                        next_attempt_at: d.next_attempt_at.map(ts),
                        last_attempt_at: d.last_attempt_at.map(ts),
                        delivered_at: d.delivered_at.map(ts),
                        created_at: Some(ts(d.created_at)),
                    }
                })
                .collect(),
            next_page_token,
        })
    }

    async fn get_email(
        &self,
        request: Request<pb::GetEmailConfigRequest>,
    ) -> Result<pb::EmailConfig> {
        let (_, org) = self
            .organization(
                &request,
                &request.get_ref().organization_id,
                Action::NotificationManage,
            )
            .await?;
        let db = self.db();
        org_email_configs::Entity::find()
            .filter(org_email_configs::Column::OrganizationId.eq(org))
            .one(db)
            .await?
            .map(|c| email_config_message(&c))
            .ok_or_else(|| Error::NotFound("the organization has no SMTP settings".into()))
    }

    async fn set_email(
        &self,
        request: Request<pb::SetEmailConfigRequest>,
    ) -> Result<pb::EmailConfig> {
        let req = request.get_ref();
        let (scope, org) = self
            .organization(&request, &req.organization_id, Action::NotificationManage)
            .await?;
        let db = self.db();
        let host = req.smtp_host.trim().to_ascii_lowercase();
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        if !host_ok {
            return Err(Error::InvalidArgument(
                "smtpHost: a host name or IP address, at most 253 characters".into(),
            ));
        }
        // The same rule as webhook targets: not the installation's network.
        let as_url = url::Url::parse(&format!("smtp://{host}"))
            .map_err(|_| Error::InvalidArgument("smtpHost: not a host name".into()))?;
        ferry_notify::target::check_host("smtpHost", &as_url, self.config().allow_private_targets)
            .await
            .map_err(Error::InvalidArgument)?;
        let port = match req.smtp_port {
            0 => 587,
            p if (1..=65535).contains(&p) => p,
            _ => {
                return Err(Error::InvalidArgument(
                    "smtpPort: 1 to 65535 (0: 587)".into(),
                ));
            }
        };
        let from = req.from_address.trim();
        if from.len() > 254 || from.parse::<lettre::Address>().is_err() {
            return Err(Error::InvalidArgument(
                "fromAddress: an e-mail address".into(),
            ));
        }
        let from_name = req.from_name.trim();
        if from_name.chars().count() > 100 || from_name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "fromName: at most 100 characters".into(),
            ));
        }
        let username = req.username.trim();
        if username.len() > 256 || username.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "username: at most 256 characters".into(),
            ));
        }
        if req.password.len() > 1024 || req.password.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(
                "password: at most 1024 characters".into(),
            ));
        }
        let tls = tls_from_pb(req.tls_mode)?;
        let keyring = self.w.identity.keyring()?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let existing = org_email_configs::Entity::find()
            .filter(org_email_configs::Column::OrganizationId.eq(org))
            .one(&txn)
            .await?;
        let id = existing.as_ref().map_or_else(Uuid::now_v7, |e| e.id);
        let password = if !req.password.is_empty() {
            Some(keyring.encrypt("org_email_configs", "password", id, &req.password)?)
        } else if req.clear_password {
            None
        } else {
            existing.as_ref().and_then(|e| e.password.clone())
        };
        let model = org_email_configs::ActiveModel {
            id: Set(id),
            organization_id: Set(org),
            smtp_host: Set(host),
            smtp_port: Set(port),
            username: Set((!username.is_empty()).then(|| username.to_owned())),
            password: Set(password),
            from_address: Set(from.to_owned()),
            from_name: Set((!from_name.is_empty()).then(|| from_name.to_owned())),
            tls_mode: Set(tls),
            enabled: Set(!req.disabled),
            created_at: Set(existing.as_ref().map_or(now, |e| e.created_at)),
            updated_at: Set(now),
        };
        let saved = if existing.is_some() {
            model.update(&txn).await?
        } else {
            model.insert(&txn).await?
        };
        scope
            .audit(
                &txn,
                Entry::new("email_config.set", AuditResourceType::Integration, id).details(json!({
                    "smtpHost": saved.smtp_host,
                    "smtpPort": saved.smtp_port,
                    "tlsMode": format!("{:?}", saved.tls_mode).to_lowercase(),
                    "passwordChanged": !req.password.is_empty() || req.clear_password,
                    "enabled": saved.enabled,
                })),
            )
            .await?;
        txn.commit().await?;
        Ok(email_config_message(&saved))
    }

    async fn delete_email(&self, request: Request<pb::DeleteEmailConfigRequest>) -> Result<()> {
        let (scope, org) = self
            .organization(
                &request,
                &request.get_ref().organization_id,
                Action::NotificationManage,
            )
            .await?;
        let db = self.db();
        scope
            .remove(
                db,
                org_email_configs::Entity::delete_many()
                    .filter(org_email_configs::Column::OrganizationId.eq(org)),
                "the organization has no SMTP settings",
                Entry::new("email_config.delete", AuditResourceType::Integration, org),
            )
            .await
    }
}

/// `kinds` without repeats, in order.
fn dedup(kinds: Vec<EventKind>) -> Vec<EventKind> {
    let mut out: Vec<EventKind> = Vec::new();
    for k in kinds {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::NotificationChannel>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::NotificationChannel>, Status> {
        Ok(Response::new(self.update(request).await?))
    }
    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteChannelResponse {}))
    }
    async fn test_channel(
        &self,
        request: Request<pb::TestChannelRequest>,
    ) -> Result<Response<pb::TestChannelResponse>, Status> {
        Ok(Response::new(self.test(request).await?))
    }
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::NotificationSubscription>, Status> {
        Ok(Response::new(
            NotificationApi::subscribe(self, request).await?,
        ))
    }
    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        NotificationApi::unsubscribe(self, request).await?;
        Ok(Response::new(pb::UnsubscribeResponse {}))
    }
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        Ok(Response::new(self.deliveries(request).await?))
    }
    async fn get_email_config(
        &self,
        request: Request<pb::GetEmailConfigRequest>,
    ) -> Result<Response<pb::EmailConfig>, Status> {
        Ok(Response::new(self.get_email(request).await?))
    }
    async fn set_email_config(
        &self,
        request: Request<pb::SetEmailConfigRequest>,
    ) -> Result<Response<pb::EmailConfig>, Status> {
        Ok(Response::new(self.set_email(request).await?))
    }
    async fn delete_email_config(
        &self,
        request: Request<pb::DeleteEmailConfigRequest>,
    ) -> Result<Response<pb::DeleteEmailConfigResponse>, Status> {
        self.delete_email(request).await?;
        Ok(Response::new(pb::DeleteEmailConfigResponse {}))
    }
    async fn rotate_channel_secret(
        &self,
        request: Request<pb::RotateChannelSecretRequest>,
    ) -> Result<Response<pb::RotateChannelSecretResponse>, Status> {
        Ok(Response::new(self.rotate_secret(request).await?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn enums_map_both_ways_and_unknown_values_are_refused() {
        for kind in [
            NotificationKind::Slack,
            NotificationKind::Discord,
            NotificationKind::Teams,
            NotificationKind::GoogleChat,
            NotificationKind::Webhook,
            NotificationKind::Email,
        ] {
            assert_eq!(kind_from_pb(kind_to_pb(kind).into()).unwrap(), kind);
        }
        assert_eq!(kind_name(NotificationKind::GoogleChat), "google_chat");
        assert!(kind_from_pb(0).is_err() && kind_from_pb(99).is_err());
        for mode in [SmtpTlsMode::None, SmtpTlsMode::Starttls, SmtpTlsMode::Tls] {
            assert_eq!(tls_from_pb(tls_to_pb(mode).into()).unwrap(), mode);
        }
        assert_eq!(tls_from_pb(0).unwrap(), SmtpTlsMode::Starttls);
        let err = tls_from_pb(99).unwrap_err().to_string();
        assert!(err.starts_with("tlsMode: one of"), "{err}");
    }

    #[test]
    fn recipients_are_bounded_and_deduplicated() {
        assert_eq!(
            recipients(&["a@example.com".into(), "A@example.com".into()]).unwrap(),
            vec!["a@example.com"]
        );
        assert!(recipients(&[]).is_err());
        assert!(recipients(&["nope".into()]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("u{i}@example.com")).collect();
        let err = recipients(&many).unwrap_err().to_string();
        assert!(err.starts_with("emailRecipients: "), "{err}");
    }

    #[test]
    fn events_are_named_or_refused_naming_the_field() {
        assert_eq!(
            event_kind("event", "build.failed").unwrap(),
            EventKind::BuildFailed
        );
        let err = event_kind("event", "build.exploded")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("event: one of deployment.succeeded"),
            "{err}"
        );
    }
}
