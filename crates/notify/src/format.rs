//! Message bodies, one per channel kind.
//!
//! | Kind | Body |
//! |---|---|
//! | Slack (incoming webhook) | `{"text", "blocks": [header, section (mrkdwn), context]}` |
//! | Discord (webhook) | `{"content", "embeds": [{title, description, color, timestamp, footer}], "allowed_mentions": {"parse": []}}` |
//! | Microsoft Teams (Workflows webhook) | `{"type": "message", "attachments": [Adaptive Card 1.4]}` |
//! | Google Chat (webhook) | `{"text"}` |
//! | generic webhook | `{"id", "event", "organization_id", "project_id", "occurred_at", "data"}`, signed ([`crate::sign`]) |
//! | e-mail | subject `[Ferry] <title>: <summary>`, a plain-text body |
//!
//! Text from events (names, reasons) is escaped for Slack's mrkdwn and
//! never pings anyone on Discord (`allowed_mentions` empty).

use chrono::{DateTime, SecondsFormat, Utc};
use ferry_db::entities::enums::NotificationKind;
use ferry_db::outbox::EventKind;
use serde_json::{Value, json};
use uuid::Uuid;

/// The kind name of the message `TestChannel` sends.
pub const TEST_EVENT: &str = "test";

/// One event as sent to a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The event id (the outbox row): receivers deduplicate on it.
    pub id: Uuid,
    /// The stable event name, e.g. `deployment.failed` (or `test`).
    pub event: String,
    pub organization_id: Uuid,
    pub project_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    /// The event's payload; `summary` is its one-line description.
    pub data: Value,
}

impl Notification {
    /// The test message of `TestChannel`.
    pub fn test(organization_id: Uuid, channel_name: &str) -> Self {
        Self {
            id: Uuid::now_v7(),
            event: TEST_EVENT.to_owned(),
            organization_id,
            project_id: None,
            occurred_at: Utc::now(),
            data: json!({
                "summary": format!("Test message from Ferry: the channel {channel_name} works."),
            }),
        }
    }

    /// "Deployment failed", or the event name for kinds Ferry does not know.
    pub fn title(&self) -> String {
        match EventKind::parse(&self.event) {
            Some(kind) => kind.title().to_owned(),
            None if self.event == TEST_EVENT => "Test notification".to_owned(),
            None => self.event.clone(),
        }
    }

    /// The payload's `summary`, or the title.
    pub fn summary(&self) -> String {
        self.data
            .get("summary")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.title())
    }

    fn failure(&self) -> bool {
        EventKind::parse(&self.event).is_some_and(EventKind::is_failure)
    }

    fn time(&self) -> String {
        self.occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// `s` cut to `max` characters (with an ellipsis when cut).
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's three control characters in text fields.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack incoming webhook body.
pub fn slack(n: &Notification) -> Value {
    let title = slack_escape(&cut(&n.title(), 150));
    let summary = slack_escape(&cut(&n.summary(), 2900));
    json!({
        "text": format!("{title}: {summary}"),
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": title } },
            { "type": "section", "text": { "type": "mrkdwn", "text": summary } },
            { "type": "context", "elements": [
                { "type": "mrkdwn", "text": format!("`{}` · {}", n.event, n.time()) }
            ] },
        ],
    })
}

/// Discord webhook body.
pub fn discord(n: &Notification) -> Value {
    let color = if n.failure() {
        0x00D8_3C3E
    } else {
        0x002E_B67D
    };
    json!({
        "content": cut(&n.title(), 2000),
        "embeds": [{
            "title": cut(&n.title(), 256),
            "description": cut(&n.summary(), 4096),
            "color": color,
            "timestamp": n.time(),
            "footer": { "text": n.event },
        }],
        "allowed_mentions": { "parse": [] },
    })
}

/// Microsoft Teams (Workflows "post to a channel when a webhook request is
/// received") body: a message with one Adaptive Card.
pub fn teams(n: &Notification) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": cut(&n.title(), 200), "weight": "Bolder", "size": "Medium", "wrap": true },
                    { "type": "TextBlock", "text": cut(&n.summary(), 4000), "wrap": true },
                    { "type": "TextBlock", "text": format!("{} · {}", n.event, n.time()), "isSubtle": true, "size": "Small", "wrap": true },
                ],
            },
        }],
    })
}

/// Google Chat webhook body.
pub fn google_chat(n: &Notification) -> Value {
    json!({ "text": format!("*{}*\n{}", cut(&n.title(), 200), cut(&n.summary(), 3900)) })
}

/// The generic webhook body (documented in docs/architecture.md).
pub fn webhook(n: &Notification) -> Value {
    json!({
        "id": n.id,
        "event": n.event,
        "organization_id": n.organization_id,
        "project_id": n.project_id,
        "occurred_at": n.time(),
        "data": n.data,
    })
}

/// The JSON body for an HTTP channel kind (`None` for e-mail).
pub fn body(kind: NotificationKind, n: &Notification) -> Option<Value> {
    Some(match kind {
        NotificationKind::Slack => slack(n),
        NotificationKind::Discord => discord(n),
        NotificationKind::Teams => teams(n),
        NotificationKind::GoogleChat => google_chat(n),
        NotificationKind::Webhook => webhook(n),
        NotificationKind::Email => return None,
    })
}

/// E-mail subject and plain-text body.
pub fn email(n: &Notification) -> (String, String) {
    let subject = cut(
        &format!("[Ferry] {}: {}", n.title(), n.summary()).replace(['\r', '\n'], " "),
        200,
    );
    let project = n.project_id.map(|p| p.to_string()).unwrap_or_default();
    let details = serde_json::to_string_pretty(&n.data).unwrap_or_default();
    let body = format!(
        "{}\n\nEvent: {}\nOrganization: {}\nProject: {}\nOccurred at: {}\nEvent id: {}\n\nDetails:\n{}\n",
        n.summary(),
        n.event,
        n.organization_id,
        if project.is_empty() { "-" } else { &project },
        n.time(),
        n.id,
        details,
    );
    (subject, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Notification {
        Notification {
            id: Uuid::nil(),
            event: "deployment.failed".into(),
            organization_id: Uuid::nil(),
            project_id: None,
            occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            data: json!({ "summary": "web <failed> & @everyone" }),
        }
    }

    #[test]
    fn slack_text_is_escaped() {
        let body = slack(&sample());
        assert_eq!(
            body["text"],
            "Deployment failed: web &lt;failed&gt; &amp; @everyone"
        );
        assert_eq!(
            body["blocks"][2]["elements"][0]["text"],
            "`deployment.failed` · 2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn discord_never_mentions_and_marks_failures_red() {
        let body = discord(&sample());
        assert_eq!(body["allowed_mentions"], json!({ "parse": [] }));
        assert_eq!(body["embeds"][0]["color"], 0xD83C3E);
    }

    #[test]
    fn long_text_is_cut() {
        let mut n = sample();
        n.data = json!({ "summary": "x".repeat(10_000) });
        let d = discord(&n);
        assert_eq!(
            d["embeds"][0]["description"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            4096
        );
        let (subject, _) = email(&n);
        assert_eq!(subject.chars().count(), 200);
    }
}
