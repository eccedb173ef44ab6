//! Following a build Job until it ends: its steps as `Progress`, its pod's
//! log lines as batched `BuildLogLines`, and exactly one terminal event.
//!
//! Everything (the Job and pod watches, the log streams) lives inside the
//! one future [`follow`] returns: dropping it, because the client went away
//! or the builder is stopping, closes them all and leaves the Job running.

use std::collections::VecDeque;
use std::time::Duration;

use ferry_k8s::Cluster;
use ferry_k8s::build::{BuildOutcome, BuildStep, FailureReason};
use ferry_k8s::logs::PodLogLine;
use ferry_proto::ferry::internal::v1 as pb;
use futures::StreamExt as _;
use pb::build_event::Event;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::events::{self, Events};

/// A log message carries at most this many lines...
pub const BATCH_LINES: usize = 100;
/// ...and this many bytes (lines are up to 64 KiB each, cut by ferry-k8s;
/// gRPC clients refuse messages over 4 MiB by default).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// ...and waits at most this long for more lines.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);
/// Lines kept for a failure's `last_lines`.
pub const LAST_LINES: usize = 30;
/// After the verdict, how long the log streams get to deliver their last
/// lines (the Job and log streams are not ordered).
const LOG_SETTLE: Duration = Duration::from_secs(2);
/// Log lines buffered between the pod log readers and the batcher.
const LOG_BUFFER: usize = 256;

/// The build to follow.
#[derive(Debug, Clone)]
pub struct Followed<'a> {
    pub cluster: &'a Cluster,
    pub namespace: &'a str,
    pub build_id: Uuid,
    /// `<registry>/<project>/<service>`: the digest completes it.
    pub image: String,
}

/// Follows the build, sending events, until its terminal event is sent.
pub async fn follow(build: Followed<'_>, events: &Events) -> Result<()> {
    let (log_tx, mut log_rx) = mpsc::channel::<PodLogLine>(LOG_BUFFER);
    let logs =
        build
            .cluster
            .stream_build_logs(build.namespace, build.build_id, true, &log_tx, |line| line);
    tokio::pin!(logs);
    let mut logs_done = false;
    let watch = build.cluster.watch_build(build.namespace, build.build_id);
    tokio::pin!(watch);
    let mut batch = Batch::default();
    let mut last_lines = LastLines::default();
    let mut progress = Steps::default();
    // The verdict, and until when the logs may still come in.
    let mut verdict: Option<(Event, Instant)> = None;
    loop {
        if let Some((_, settle)) = &verdict
            && ((logs_done && log_rx.is_empty()) || Instant::now() >= *settle)
        {
            break;
        }
        let flush_at = batch.deadline();
        let settle_at = verdict.as_ref().map(|(_, at)| *at);
        tokio::select! {
            result = &mut logs, if !logs_done => {
                logs_done = true;
                if let Err(err) = result {
                    tracing::warn!(error = %err, "reading the build's logs failed");
                }
            }
            Some(line) = log_rx.recv() => {
                last_lines.push(&line.line);
                if batch.push(line) {
                    batch.flush(events).await;
                }
            }
            outcome = watch.next(), if verdict.is_none() => {
                let outcome = match outcome {
                    Some(Ok(outcome)) => outcome,
                    Some(Err(err)) if err.is_not_found() => BuildOutcome::Failed {
                        step: None,
                        reason: FailureReason::Deleted,
                        exit_code: None,
                        message: "the build's Job no longer exists (cancelled, or cleaned up after it ended)".into(),
                    },
                    Some(Err(err)) => return Err(Error::Kube(err)),
                    None => return Err(Error::Kube(ferry_k8s::Error::Encoding(
                        "the build watch ended without a verdict".into(),
                    ))),
                };
                match outcome {
                    BuildOutcome::Succeeded { digest } => {
                        let image = format!("{}@{digest}", build.image);
                        let done = Event::Finished(pb::Finished { image, digest });
                        verdict = Some((done, Instant::now() + LOG_SETTLE));
                    }
                    BuildOutcome::Failed { step, reason, exit_code, message } => {
                        let failed = Failure { step, reason, exit_code, message };
                        verdict = Some((failed.event(), Instant::now() + LOG_SETTLE));
                    }
                    running => {
                        if let Some(event) = progress.event(&running) {
                            batch.flush(events).await;
                            events.send(event).await;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                batch.flush(events).await;
            }
            () = tokio::time::sleep_until(settle_at.unwrap_or_else(Instant::now)), if settle_at.is_some() => {}
        }
    }
    // Lines that arrived in the last turn.
    while let Ok(line) = log_rx.try_recv() {
        last_lines.push(&line.line);
        if batch.push(line) {
            batch.flush(events).await;
        }
    }
    batch.flush(events).await;
    if let Some((mut event, _)) = verdict {
        if let Event::Failed(failed) = &mut event
            && !last_lines.is_empty()
        {
            failed.last_lines = last_lines.into_vec();
        }
        events.send(event).await;
    }
    Ok(())
}

/// Log lines waiting to be sent.
#[derive(Default)]
struct Batch {
    lines: Vec<pb::BuildLogLine>,
    bytes: usize,
    since: Option<Instant>,
}

impl Batch {
    /// Adds a line; true when the batch is full.
    fn push(&mut self, line: PodLogLine) -> bool {
        let step = BuildStep::of_container(&line.container)
            .map_or_else(|| line.container.clone(), |s| s.as_str().to_owned());
        self.bytes += line.line.len();
        self.since.get_or_insert_with(Instant::now);
        self.lines.push(pb::BuildLogLine {
            timestamp: line.time.map(events::timestamp),
            step,
            line: line.line,
        });
        self.lines.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + BATCH_WAIT)
    }

    async fn flush(&mut self, events: &Events) {
        if self.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        self.bytes = 0;
        self.since = None;
        events.send(Event::Logs(pb::BuildLogLines { lines })).await;
    }
}

/// The last [`LAST_LINES`] log lines, for a failure.
#[derive(Default)]
struct LastLines(VecDeque<String>);

impl LastLines {
    fn push(&mut self, line: &str) {
        if self.0.len() == LAST_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.to_owned());
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_vec(self) -> Vec<String> {
        self.0.into()
    }
}

/// `Progress` events, once per change: `queued` (with the reason) while
/// the pod waits, then `clone`, `prepare`, `build`.
#[derive(Default)]
struct Steps {
    last: Option<(String, String)>,
}

impl Steps {
    fn event(&mut self, outcome: &BuildOutcome) -> Option<Event> {
        let (step, message) = match outcome {
            BuildOutcome::Pending { reason } => ("queued".to_owned(), reason.clone()),
            BuildOutcome::Running { step } => (step.as_str().to_owned(), format!("{step} started")),
            _ => return None,
        };
        let current = Some((step.clone(), message.clone()));
        if self.last == current {
            return None;
        }
        self.last = current;
        Some(events::progress(&step, message))
    }
}

/// A failed build, in words.
struct Failure {
    step: Option<BuildStep>,
    reason: FailureReason,
    exit_code: Option<i32>,
    message: String,
}

impl Failure {
    fn event(self) -> Event {
        let step = self.step.map_or("", BuildStep::as_str);
        let in_step = self
            .step
            .map_or_else(String::new, |s| format!(" in the {s} step"));
        let message = self.message.trim();
        let with_message = |words: String| {
            if message.is_empty() {
                words
            } else {
                format!("{words}: {message}")
            }
        };
        let reason = match &self.reason {
            FailureReason::TimedOut => {
                format!("timed out{in_step}: the build ran longer than its timeout")
            }
            FailureReason::OutOfMemory => format!(
                "out of memory{in_step}: the step used more than its memory limit (raise memoryLimit)"
            ),
            FailureReason::ImagePull => with_message(format!("image pull failed{in_step}")),
            FailureReason::ContainerConfig => {
                with_message(format!("the step could not start{in_step}"))
            }
            FailureReason::StepFailed => match self.exit_code {
                Some(code) => format!("exit code {code}{in_step}"),
                None => format!("failed{in_step}"),
            },
            FailureReason::NoDigest => with_message(format!("no image digest{in_step}")),
            FailureReason::Deleted => message.to_owned(),
            FailureReason::Other(reason) => with_message(format!("{reason}{in_step}")),
        };
        // A failed step's termination message is its log tail
        // (FallbackToLogsOnError): the last lines when none were streamed.
        let last_lines = if matches!(
            self.reason,
            FailureReason::StepFailed | FailureReason::OutOfMemory
        ) {
            tail(message, LAST_LINES)
        } else {
            Vec::new()
        };
        Event::Failed(pb::Failed {
            step: step.to_owned(),
            reason,
            timed_out: self.reason == FailureReason::TimedOut,
            last_lines,
        })
    }
}

fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn failed(f: Failure) -> pb::Failed {
        match f.event() {
            Event::Failed(failed) => failed,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failures_in_words() {
        let f = failed(Failure {
            step: Some(BuildStep::Build),
            reason: FailureReason::StepFailed,
            exit_code: Some(2),
            message: "a\nb\nerror: failed to solve\n".into(),
        });
        assert_eq!(f.step, "build");
        assert_eq!(f.reason, "exit code 2 in the build step");
        assert_eq!(f.last_lines, ["a", "b", "error: failed to solve"]);
        assert!(!f.timed_out);
        let f = failed(Failure {
            step: Some(BuildStep::Clone),
            reason: FailureReason::TimedOut,
            exit_code: None,
            message: "Job was active longer than specified deadline".into(),
        });
        assert!(f.timed_out);
        assert_eq!(
            f.reason,
            "timed out in the clone step: the build ran longer than its timeout"
        );
        let f = failed(Failure {
            step: None,
            reason: FailureReason::ImagePull,
            exit_code: None,
            message: "Back-off pulling image \"x\"".into(),
        });
        assert_eq!(f.step, "");
        assert_eq!(f.reason, "image pull failed: Back-off pulling image \"x\"");
        let f = failed(Failure {
            step: Some(BuildStep::Build),
            reason: FailureReason::OutOfMemory,
            exit_code: Some(137),
            message: String::new(),
        });
        assert!(
            f.reason.starts_with("out of memory in the build step"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn progress_once_per_change() {
        let mut steps = Steps::default();
        let pending = BuildOutcome::Pending {
            reason: "PodInitializing".into(),
        };
        let clone = BuildOutcome::Running {
            step: BuildStep::Clone,
        };
        assert!(steps.event(&pending).is_some());
        assert!(steps.event(&pending).is_none());
        assert!(steps.event(&clone).is_some());
        assert!(steps.event(&clone).is_none());
    }

    #[test]
    fn batches_are_bounded_by_lines_and_bytes() {
        let line = |text: String| PodLogLine {
            pod: "p".into(),
            container: "clone-fetch".into(),
            line: text,
            time: None,
        };
        let mut batch = Batch::default();
        for i in 0..BATCH_LINES - 1 {
            assert!(!batch.push(line(format!("{i}"))));
        }
        assert!(batch.push(line("last".into())));
        assert_eq!(batch.lines[0].step, "clone");
        let mut batch = Batch::default();
        let big = "x".repeat(64 * 1024);
        let pushed = (0..BATCH_LINES)
            .take_while(|_| !batch.push(line(big.clone())))
            .count();
        assert_eq!(pushed, 15, "16 lines of 64 KiB fill 1 MiB");
        let mut last = LastLines::default();
        for i in 0..100 {
            last.push(&i.to_string());
        }
        let kept = last.into_vec();
        assert_eq!(kept.len(), LAST_LINES);
        assert_eq!(kept[0], "70");
    }
}
