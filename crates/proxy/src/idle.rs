//! A body that fails when it makes no progress for a while, so a stalled
//! client or upstream cannot pin a connection (and its upstream slot)
//! forever.
//!
//! The timer is armed only when the body keeps waiting: the first wait
//! yields once instead (the connection task it woke usually has the data
//! already in its socket), so most bodies never create a timer.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error of a body that stayed idle past its limit.
#[derive(Debug, thiserror::Error)]
#[error("body idle for more than {0:?}")]
pub struct IdleTimeout(pub Duration);

/// `inner`, failing with [`IdleTimeout`] after `idle` without a frame.
#[derive(Debug)]
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Allocated the first time the body waits past a yield, then reused.
    timer: Option<Pin<Box<Sleep>>>,
    wait: Wait,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The last poll produced a frame (or none happened yet).
    None,
    /// Pending once; the task woke itself to look again.
    Yielded,
    /// Pending again: the timer runs.
    Armed,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            wait: Wait::None,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.wait = Wait::None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.wait == Wait::None {
            // Runs after the connection task this poll just woke.
            this.wait = Wait::Yielded;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let deadline = Instant::now() + this.idle;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if this.wait == Wait::Yielded {
            timer.as_mut().reset(deadline);
            this.wait = Wait::Armed;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(this.idle).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use hyper::body::Bytes;

    // Real time, not tokio's paused clock: `test-util` in dev-dependencies
    // leaks into binaries built together with examples (the benchmarks)
    // and makes every clock read dearer.
    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_limit_and_a_flowing_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let idle = Duration::from_millis(400);
        let mut body = IdleBody::new(StreamBody::new(stream), idle);
        // Frames 100 ms apart: never idle for 400 ms.
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then stall with the sender held open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let stalled = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        let waited = stalled.elapsed();
        assert!(waited >= idle && waited < idle * 10, "{waited:?}");
        sender.abort();
    }

    #[tokio::test]
    async fn a_ready_body_keeps_its_size_and_never_arms_the_timer() {
        let mut body = IdleBody::new(Full::new(Bytes::from_static(b"hello")), Duration::ZERO);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.timer.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn one_wait_yields_and_only_a_second_arms_the_timer() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut body = IdleBody::new(StreamBody::new(stream), Duration::from_secs(5));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = |body: &mut IdleBody<_>| Pin::new(body).poll_frame(&mut cx).is_ready();
        assert!(!poll(&mut body));
        assert!(body.timer.is_none(), "the first wait only yields");
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        assert!(poll(&mut body));
        assert!(body.timer.is_none());
        assert!(!poll(&mut body));
        assert!(!poll(&mut body));
        assert!(body.timer.is_some(), "a second wait in a row arms it");
    }
}
