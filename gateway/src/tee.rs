//! A body stream that passes upstream chunks through to the client while keeping a copy, and
//! hands the copy over only when the stream ended cleanly: a cut or failed stream is never cached.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;

type OnComplete = Box<dyn FnOnce(Vec<u8>) + Send>;

/// Collects up to `limit_bytes` of a body and calls `on_complete` with it at a clean end.
pub struct Tee {
    limit_bytes: usize,
    on_complete: OnComplete,
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee")
            .field("limit_bytes", &self.limit_bytes)
            .finish_non_exhaustive()
    }
}

impl Tee {
    pub fn new(limit_bytes: usize, on_complete: impl FnOnce(Vec<u8>) + Send + 'static) -> Self {
        Self {
            limit_bytes,
            on_complete: Box::new(on_complete),
        }
    }

    pub fn wrap<E: Send + 'static>(
        self,
        inner: BoxStream<'static, Result<Bytes, E>>,
    ) -> TeeStream<E> {
        TeeStream {
            inner,
            copy: Vec::new(),
            limit_bytes: self.limit_bytes,
            on_complete: Some(self.on_complete),
        }
    }
}

#[allow(missing_debug_implementations)] // holds a boxed stream and callback
pub struct TeeStream<E> {
    inner: BoxStream<'static, Result<Bytes, E>>,
    copy: Vec<u8>,
    limit_bytes: usize,
    /// Taken when the copy is handed over, or dropped when it must not be.
    on_complete: Option<OnComplete>,
}

impl<E> Stream for TeeStream<E> {
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        match &item {
            Some(Ok(chunk)) if this.on_complete.is_some() => {
                if this.copy.len() + chunk.len() > this.limit_bytes {
                    // Too large to cache: stop copying, keep streaming.
                    this.on_complete = None;
                    this.copy = Vec::new();
                } else {
                    this.copy.extend_from_slice(chunk);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => this.on_complete = None,
            None => {
                if let Some(done) = this.on_complete.take() {
                    done(std::mem::take(&mut this.copy));
                }
            }
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;

    use super::*;

    async fn run(chunks: Vec<Result<Bytes, &'static str>>, limit: usize) -> Option<Vec<u8>> {
        let seen = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&seen);
        let tee = Tee::new(limit, move |body| *sink.lock().expect("lock") = Some(body));
        let stream = tee.wrap(futures::stream::iter(chunks).boxed());
        let _: Vec<_> = stream.collect().await;
        seen.lock().expect("lock").take()
    }

    #[tokio::test]
    async fn hands_over_a_clean_body() {
        let body = run(vec![Ok(Bytes::from("ab")), Ok(Bytes::from("cd"))], 10).await;
        assert_eq!(body.as_deref(), Some(&b"abcd"[..]));
    }

    #[tokio::test]
    async fn drops_failed_and_oversized_bodies() {
        assert_eq!(run(vec![Ok(Bytes::from("ab")), Err("cut")], 10).await, None);
        assert_eq!(run(vec![Ok(Bytes::from("abcdef"))], 4).await, None);
    }

    #[tokio::test]
    async fn drops_a_body_the_client_stopped_reading() {
        let seen = Arc::new(Mutex::new(false));
        let sink = Arc::clone(&seen);
        let tee = Tee::new(100, move |_| *sink.lock().expect("lock") = true);
        let chunks: Vec<Result<Bytes, ()>> = vec![Ok(Bytes::from("a")), Ok(Bytes::from("b"))];
        let mut stream = tee.wrap(futures::stream::iter(chunks).boxed());
        let _ = stream.next().await;
        drop(stream);
        assert!(!*seen.lock().expect("lock"));
    }
}
