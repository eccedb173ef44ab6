//! Building the stream's events, and sending them.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use ferry_proto::ferry::internal::v1 as pb;
use pb::build_event::Event;
use prost_types::Timestamp;
use tokio::sync::mpsc;
use tonic::Status;

/// What a RunBuild stream carries.
pub type Sender = mpsc::Sender<Result<pb::BuildEvent, Status>>;

/// The sending side of one RunBuild stream.
#[derive(Debug, Clone)]
pub struct Events {
    tx: Sender,
}

impl Events {
    pub fn new(tx: Sender) -> Events {
        Events { tx }
    }

    /// Sends one event stamped now. A client that went away is noticed by
    /// whoever drives the build (it stops the work); here it is ignored.
    pub async fn send(&self, event: Event) {
        let _ = self.tx.send(Ok(stamped(event))).await;
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Ends the stream with an error instead of a terminal event.
    pub async fn fail(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}

pub fn stamped(event: Event) -> pb::BuildEvent {
    pb::BuildEvent {
        at: Some(Timestamp::from(SystemTime::now())),
        event: Some(event),
    }
}

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn progress(step: &str, message: impl Into<String>) -> Event {
    Event::Progress(pb::Progress {
        step: step.to_owned(),
        message: message.into(),
    })
}

pub fn failed(step: &str, reason: impl Into<String>) -> Event {
    Event::Failed(pb::Failed {
        step: step.to_owned(),
        reason: reason.into(),
        timed_out: false,
        last_lines: Vec::new(),
    })
}
