//! Counting in-flight requests, so that a graceful shutdown waits for the requests that are
//! running and not for clients to hang up their idle connections.
//!
//! [`InFlightLayer`] wraps the whole gRPC router; each request holds a guard until its response
//! future resolves. Streaming RPCs count only until their response stream starts: their bodies
//! end through the shutdown token instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tower_layer::Layer;
use tower_service::Service;

/// Shared count of requests being handled.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

/// Decrements the count when dropped (response ready, or the request cancelled).
struct Guard(InFlight);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inner.idle.notify_waiters();
        }
    }
}

impl InFlight {
    fn enter(&self) -> Guard {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        Guard(self.clone())
    }

    /// Requests being handled right now.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is being handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a decrement between the check and the await wakes us.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The layer that counts requests into this tracker.
    pub fn layer(&self) -> InFlightLayer {
        InFlightLayer(self.clone())
    }
}

/// Tower layer counting requests into an [`InFlight`].
#[derive(Debug, Clone)]
pub struct InFlightLayer(InFlight);

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            tracker: self.0.clone(),
        }
    }
}

/// A service whose calls are counted while they run.
#[derive(Debug, Clone)]
pub struct InFlightService<S> {
    inner: S,
    tracker: InFlight,
}

impl<S, R> Service<R> for InFlightService<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let guard = self.tracker.enter();
        let response = self.inner.call(request);
        Box::pin(async move {
            let r = response.await;
            drop(guard);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_returns_once_every_guard_is_gone() {
        let t = InFlight::default();
        t.wait_idle().await;
        let a = t.enter();
        let b = t.enter();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait_idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
        assert_eq!(t.count(), 0);
    }
}
