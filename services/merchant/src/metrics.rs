//! The gateway's Prometheus metrics, served on its own `/metrics` listener: every request by
//! API (HTTP or gRPC), operation (the route template or the gRPC method) and outcome (the
//! HTTP status or the gRPC code), with its latency; and every webhook delivery attempt by
//! outcome.

use std::sync::Arc;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The gateway's metrics and their registry.
pub struct Metrics {
    pub registry: Registry,
    /// `merchant_requests_total{api, operation, code}`.
    pub requests: IntCounterVec,
    /// `merchant_request_duration_seconds{api, operation}`.
    pub latency: HistogramVec,
    /// `merchant_webhook_attempts_total{outcome}`: `delivered`, `retry` or `given_up`.
    pub webhooks: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry =
            Registry::new_custom(Some("cbdc_merchant".into()), None).expect("valid registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Merchant gateway requests answered, by API, operation and outcome",
            ),
            &["api", "operation", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time to answer a merchant gateway request",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            &["api", "operation"],
        )
        .expect("valid metric");
        let webhooks = IntCounterVec::new(
            Opts::new(
                "webhook_attempts_total",
                "Webhook delivery attempts, by outcome (delivered, retry, given_up)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        registry
            .register(Box::new(webhooks.clone()))
            .expect("registered once");
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            webhooks,
        })
    }

    /// Counts one answered request.
    pub fn answered(&self, api: &str, operation: &str, code: &str, started: Instant) {
        self.requests
            .with_label_values(&[api, operation, code])
            .inc();
        self.latency
            .with_label_values(&[api, operation])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Counts each HTTP request by its route template (so ids in paths do not make new series).
pub async fn http_layer(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = Instant::now();
    let operation = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || "unmatched".to_string(),
            |p| format!("{} {}", request.method(), p.as_str()),
        );
    let response = next.run(request).await;
    metrics.answered("http", &operation, response.status().as_str(), started);
    response
}

/// The gRPC service wrapped to count each call by method and `grpc-status`.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Counted<S> {
        Counted { inner, metrics }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Counted<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let started = Instant::now();
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let metrics = Arc::clone(&self.metrics);
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            // An error is answered in the headers (trailers-only); a success's status comes
            // in the trailers, after the body.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_string();
            metrics.answered("grpc", &method, &code, started);
            Ok(response)
        })
    }
}
