//! The one tower layer around the gRPC router: per-request bookkeeping at the edge.
//!
//! For every request it holds an in-flight guard ([`super::drain`]) until the response
//! is ready, and it gives a request over the size limit the status gRPC prescribes
//! ([`super::oversize`]). One layer, so one boxed future per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower_layer::Layer;
use tower_service::Service;

use super::drain::InFlight;
use super::oversize;

/// Installs [`EdgeService`] around every service of the server.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    in_flight: InFlight,
}

impl EdgeLayer {
    /// A layer counting requests into `in_flight`.
    pub fn new(in_flight: InFlight) -> Self {
        Self { in_flight }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            in_flight: self.in_flight.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct EdgeService<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, R, B> Service<R> for EdgeService<S>
where
    S: Service<R, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let guard = self.in_flight.enter();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            oversize::rewrite(response.headers_mut());
            drop(guard);
            Ok(response)
        })
    }
}
