//! A body that fails when it makes no progress for a while, so a stalled
//! client or upstream cannot pin a connection (and its upstream slot)
//! forever. The timer is armed only while the inner body waits: a body
//! whose frames are ready at once, the common case, never touches it.

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
    /// Allocated the first time the body waits, then reused.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            armed: false,
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
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.idle;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.armed {
            timer.as_mut().reset(deadline);
            this.armed = true;
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

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_limit_and_a_flowing_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut body = IdleBody::new(StreamBody::new(stream), Duration::from_secs(5));
        // Frames 4 s apart: never idle for 5 s.
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then stall with the sender held open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let started = Instant::now();
        for _ in 0..3 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<IdleTimeout>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(17));
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
}
