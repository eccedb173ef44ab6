//! Push webhooks: `POST /hooks/git/{integration_id}` on the api's HTTP
//! listener (reached through ferry-proxy on the public host).
//!
//! The signature is checked over the raw body before anything is parsed or
//! written; a forged delivery writes nothing. A signed delivery is recorded
//! once per service whose build config names the repository (or once with
//! no service when none does), deduplicated by the provider's delivery id,
//! and queues builds in the same transaction. Nothing slow runs inline: the
//! answer does not wait for git or the cluster.

use std::sync::Arc;

use chrono::Utc;
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::{TriggerType, WebhookDeliveryStatus};
use ferry_db::entities::{
    build_configs as configs, git_integrations as integrations, services,
    webhook_deliveries as deliveries,
};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection, DbErr,
    EntityTrait as _, QueryFilter as _, QuerySelect as _, TransactionTrait as _,
};
use http::{HeaderMap, StatusCode};
use uuid::Uuid;

use super::push::{self, Delivery, Push};
use super::{queue, signature};

/// Largest body accepted (GitHub caps payloads at 25 MB, but pushes Ferry
/// acts on are far smaller; larger ones answer 413).
pub const MAX_BODY: usize = 1024 * 1024;

/// Services one delivery may concern (bounds the work of a request).
const MAX_SERVICES: u64 = 100;

/// The answer to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// A short JSON-able message (never secrets).
    pub message: String,
    /// Builds queued.
    pub queued: Vec<Uuid>,
}

impl Answer {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            queued: Vec::new(),
        }
    }
}

/// Receives push webhooks.
#[derive(Clone)]
pub struct Webhooks {
    db: DatabaseConnection,
    keyring: Arc<Keyring>,
    queue: super::runner::BuildQueue,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

/// What happens to one service's share of a push.
fn decide(config: &configs::Model, push: &Push) -> Result<(), String> {
    if push.branch != config.branch {
        return Err(format!(
            "branch {} is not the watched branch {}",
            push.branch, config.branch
        ));
    }
    if push.deleted() {
        return Err(format!("branch {} was deleted", push.branch));
    }
    if !config.auto_deploy {
        return Err("auto-deploy is off for this service".into());
    }
    Ok(())
}

impl Webhooks {
    pub fn new(db: DatabaseConnection, keyring: Arc<Keyring>) -> Self {
        Self {
            db,
            keyring,
            queue: super::runner::BuildQueue::default(),
        }
    }

    /// Wakes `queue`'s runner when a delivery queues builds.
    pub fn with_queue(mut self, queue: super::runner::BuildQueue) -> Self {
        self.queue = queue;
        self
    }

    /// Handles one delivery for the integration named in the path.
    pub async fn receive(&self, integration: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
        match self.try_receive(integration, headers, body).await {
            Ok(answer) => answer,
            Err(err) => {
                tracing::error!(error = %err, "webhook delivery failed");
                Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the delivery could not be recorded; the provider will retry",
                )
            }
        }
    }

    async fn try_receive(
        &self,
        integration: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Answer, crate::Error> {
        let not_found = || Answer::new(StatusCode::NOT_FOUND, "unknown integration");
        let Ok(id) = Uuid::parse_str(integration) else {
            return Ok(not_found());
        };
        let Some(row) = integrations::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(not_found());
        };
        let secret = self.keyring.decrypt(
            "git_integrations",
            "webhook_secret",
            row.id,
            &row.webhook_secret,
        )?;
        if let Err(err) = signature::verify(row.provider, headers, body, secret.expose().as_bytes())
        {
            tracing::info!(integration = %id, reason = %err, "webhook signature refused");
            return Ok(Answer::new(StatusCode::UNAUTHORIZED, err.to_string()));
        }
        let delivery = match push::parse(row.provider, headers, body) {
            Ok(d) => d,
            Err(err) => return Ok(Answer::new(StatusCode::BAD_REQUEST, err.to_string())),
        };
        // A newer push racing for the same service can lose the one-active-
        // build index once; the retry sees the winner and supersedes it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.record(&row, &delivery).await {
                Err(crate::Error::AlreadyExists(_)) if attempt < 3 => continue,
                other => return other,
            }
        }
    }

    /// Records the delivery per service and queues builds, in one
    /// transaction.
    async fn record(
        &self,
        integration: &integrations::Model,
        delivery: &Delivery,
    ) -> Result<Answer, crate::Error> {
        let matched: Vec<(configs::Model, services::Model)> = match &delivery.push {
            None => Vec::new(),
            Some(p) => {
                let keys: Vec<String> = p.repositories.iter().map(|r| push::repo_key(r)).collect();
                configs::Entity::find()
                    .filter(configs::Column::GitIntegrationId.eq(integration.id))
                    .find_also_related(services::Entity)
                    .limit(MAX_SERVICES)
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .filter_map(|(c, s)| Some((c, s?)))
                    .filter(|(c, _)| keys.contains(&push::repo_key(&c.repository)))
                    .collect()
            }
        };
        let txn = self.db.begin().await?;
        let now = Utc::now();
        let base = |service: Option<Uuid>| deliveries::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(integration.organization_id),
            git_integration_id: Set(integration.id),
            service_id: Set(service),
            delivery_id: Set(delivery.delivery_id.clone()),
            event: Set(delivery.event.clone()),
            repository: Set(delivery
                .push
                .as_ref()
                .and_then(|p| p.repositories.first().cloned())),
            branch: Set(delivery.push.as_ref().map(|p| p.branch.clone())),
            before_sha: Set(delivery.push.as_ref().map(|p| p.before.clone())),
            after_sha: Set(delivery.push.as_ref().map(|p| p.after.clone())),
            status: Set(WebhookDeliveryStatus::Ignored),
            reason: Set(None),
            build_id: Set(None),
            created_at: Set(now),
        };
        let duplicate = |e: DbErr| {
            if crate::db::is_unique_violation(&e) {
                None
            } else {
                Some(crate::Error::from(e))
            }
        };
        let mut answer = Answer::new(StatusCode::ACCEPTED, "");
        if matched.is_empty() {
            let reason = match &delivery.push {
                None => format!("{} events are not pushes to a branch", delivery.event),
                Some(_) => "no service builds this repository with this integration".to_owned(),
            };
            let mut row = base(None);
            row.reason = Set(Some(reason.clone()));
            if let Err(e) = row.insert(&txn).await {
                return match duplicate(e) {
                    None => Ok(Answer::new(
                        StatusCode::OK,
                        "duplicate delivery: already handled",
                    )),
                    Some(e) => Err(e),
                };
            }
            txn.commit().await?;
            answer.message = reason;
            return Ok(answer);
        }
        let push = delivery
            .push
            .as_ref()
            .ok_or_else(|| crate::Error::Internal("matched services without a push".into()))?;
        for (config, service) in &matched {
            // Duplicate check first: a redelivery must not queue again.
            let mut row = base(Some(service.id));
            let row_id = Uuid::now_v7();
            row.id = Set(row_id);
            row.status = Set(WebhookDeliveryStatus::Received);
            if let Err(e) = row.insert(&txn).await {
                return match duplicate(e) {
                    None => Ok(Answer::new(
                        StatusCode::OK,
                        "duplicate delivery: already handled",
                    )),
                    Some(e) => Err(e),
                };
            }
            let (status, reason, build) = match decide(config, push) {
                Err(why) => (WebhookDeliveryStatus::Ignored, Some(why), None),
                Ok(()) => {
                    let build = queue::enqueue(
                        &txn,
                        integration.organization_id,
                        service,
                        config,
                        queue::Request {
                            trigger: TriggerType::Webhook,
                            commit_sha: Some(push.after.clone()),
                            before_sha: Some(push.before.clone())
                                .filter(|b| !b.bytes().all(|c| c == b'0')),
                            message: push.message.clone(),
                            author: push.author.clone(),
                            triggered_by: None,
                        },
                    )
                    // A unique violation (a concurrent build won) is
                    // AlreadyExists: the caller retries.
                    .await?;
                    answer.queued.push(build.id);
                    (WebhookDeliveryStatus::Queued, None, Some(build.id))
                }
            };
            deliveries::Entity::update_many()
                .filter(deliveries::Column::Id.eq(row_id))
                .col_expr(deliveries::Column::Status, status.into())
                .col_expr(deliveries::Column::Reason, reason.into())
                .col_expr(deliveries::Column::BuildId, build.into())
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        if !answer.queued.is_empty() {
            self.queue.kick();
        }
        answer.message = format!(
            "{} build(s) queued for {} service(s)",
            answer.queued.len(),
            matched.len()
        );
        Ok(answer)
    }
}
