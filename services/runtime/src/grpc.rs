//! The standard services every gRPC server of the network carries: `grpc.health.v1.Health`
//! and server reflection (v1 and v1alpha) over the service's file descriptor set.

use tonic_health::server::HealthReporter;

/// The health service and its reporter; the caller marks its services serving.
pub fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// The name the health service is listed under.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

fn reflection_builder(
    descriptor_set: &'static [u8],
    service: &str,
) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service)
        .with_service_name(HEALTH_SERVICE)
}

/// Reflection over `descriptor_set` in both versions of the protocol (v1, and v1alpha, which
/// older tools and some languages' libraries still speak), listing exactly what a server of
/// `service` serves: that service, the health service and reflection itself. Every message
/// of the contract stays resolvable by symbol.
#[allow(clippy::type_complexity)]
pub fn reflection(
    descriptor_set: &'static [u8],
    service: &str,
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    Ok((
        reflection_builder(descriptor_set, service)
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()?,
        reflection_builder(descriptor_set, service)
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()?,
    ))
}

/// The two listeners every service binds, with the addresses they got (port 0 picks one).
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub grpc_addr: std::net::SocketAddr,
    pub metrics: tokio::net::TcpListener,
    pub metrics_addr: std::net::SocketAddr,
    /// How the gRPC listener bounds its connections.
    pub limits: crate::conn::Limits,
}

/// Binds the gRPC listener on `grpc` and the Prometheus one on `metrics`; an error names the
/// address that could not be bound.
pub async fn bind(
    grpc: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
) -> std::io::Result<Listeners> {
    let grpc_listener = tokio::net::TcpListener::bind(grpc)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding gRPC on {grpc}: {e}")))?;
    let metrics_listener = crate::metrics::bind(metrics).await?;
    Ok(Listeners {
        grpc_addr: grpc_listener.local_addr()?,
        grpc: grpc_listener,
        metrics_addr: metrics_listener.local_addr()?,
        metrics: metrics_listener,
        limits: crate::conn::Limits::default(),
    })
}

/// Calls in progress on one connection, at most; more wait for a slot.
pub const CALLS_PER_CONNECTION: usize = 256;
/// HTTP/2 streams one connection may open at once, at most.
pub const STREAMS_PER_CONNECTION: u32 = 512;
/// A unary call (or the start of a stream) that takes longer than this is cancelled with
/// `CANCELLED`/`DEADLINE_EXCEEDED`.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The server pings each connection this often (a live client's answer keeps it from
/// counting as idle: see [`crate::conn::IDLE_TIMEOUT`]).
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// A ping not answered within this closes the connection.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// A TLS handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The response of a call that failed before or outside our handlers (the gRPC library's
/// own statuses: a message too large, an unknown method, a timeout) given the same rich
/// details as ours, so every status a client sees carries an `ErrorInfo` reason. A request
/// message over the server's limit is `RESOURCE_EXHAUSTED` (reason `MESSAGE_TOO_LARGE`), as
/// gRPC specifies, not the decoder's `OUT_OF_RANGE`. Statuses that already carry details
/// and successful responses pass unchanged.
pub fn with_error_details<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    if status.code() == tonic::Code::Ok {
        return response;
    }
    let too_large = status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large");
    let (code, reason) = if too_large {
        (tonic::Code::ResourceExhausted, "MESSAGE_TOO_LARGE")
    } else {
        (status.code(), crate::error::code_reason(status.code()))
    };
    let rich = crate::error::status(
        code,
        status.message(),
        crate::error::Detail {
            reason,
            retry_after: matches!(code, tonic::Code::Unavailable)
                .then_some(crate::error::RETRY_AFTER),
            ..crate::error::Detail::default()
        },
    );
    if rich.add_header(headers).is_err() {
        tracing::warn!("could not add error details to a {code:?} status");
    }
    response
}

/// What every gRPC service needs to run: `service` beside the health service (marked
/// serving) and reflection over `descriptor_set` on the gRPC listener (TLS when `tls` is
/// given; with `grpc_web`, gRPC-Web too, over HTTP/1.1 or HTTP/2, for browser and
/// mini-program wallets), `registry` on the metrics listener, until `shutdown` fires; then the metrics
/// endpoint and the background `workers` (which end on the same signal) are awaited.
/// Every connection is bounded ([`CALLS_PER_CONNECTION`], [`STREAMS_PER_CONNECTION`],
/// [`CALL_TIMEOUT`]), and so are the connections themselves (`listeners.limits`: how many,
/// how long idle; see [`crate::conn`]). `name` goes in the logs.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S>(
    name: &'static str,
    listeners: Listeners,
    service: S,
    descriptor_set: &'static [u8],
    registry: prometheus::Registry,
    tls: Option<&crate::tls::Tls>,
    grpc_web: bool,
    store: &cbdc_store::Database,
    workers: Vec<tokio::task::JoinHandle<()>>,
    shutdown: crate::shutdown::Shutdown,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, String>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let Listeners {
        grpc: grpc_listener,
        grpc_addr,
        metrics: metrics_listener,
        metrics_addr,
        limits,
    } = listeners;
    let counts = crate::conn::Counts::registered(&registry).map_err(|e| format!("metrics: {e}"))?;
    let (health_reporter, health) = health();
    health_reporter.set_serving::<S>().await;
    // A store that stopped after a storage failure takes no more commits: the service says
    // so in its health (NOT_SERVING), a metric and its log, until it is restarted.
    let failed = prometheus::IntGauge::new(
        "store_failed",
        "1 when the store stopped after a failed write or fsync (restart to recover)",
    )
    .map_err(|e| format!("metrics: {e}"))?;
    registry
        .register(Box::new(failed.clone()))
        .map_err(|e| format!("metrics: {e}"))?;
    if let Some(tls) = tls {
        tls.register_expiry(&registry)
            .map_err(|e| format!("metrics: {e}"))?;
    }
    let watch_store = {
        let (store, shutdown) = (store.clone(), shutdown.clone());
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
                if store.stats().is_some_and(|s| s.failed) {
                    failed.set(1);
                    reporter.set_not_serving::<S>().await;
                    reporter
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                    tracing::error!(
                        "{name}: the store stopped after a failed write or fsync; NOT_SERVING until restarted"
                    );
                    return;
                }
            }
        })
    };
    let (reflection, reflection_v1alpha) =
        reflection(descriptor_set, S::NAME).map_err(|e| format!("reflection: {e}"))?;
    let mut builder = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .timeout(CALL_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .accept_http1(grpc_web)
        .layer(tower::util::MapResponseLayer::new(with_error_details))
        .layer(tower::util::option_layer(
            grpc_web.then(tonic_web::GrpcWebLayer::new),
        ));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.server().timeout(HANDSHAKE_TIMEOUT))
            .map_err(|e| format!("tls: {e}"))?;
    }
    let metrics_task = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        registry,
        shutdown.clone(),
    ));
    let transport = if tls.is_some() { "TLS" } else { "PLAINTEXT" };
    Ok(tokio::spawn(async move {
        tracing::info!(%grpc_addr, %metrics_addr, transport, "{name} serving");
        let result = builder
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(
                crate::conn::incoming(grpc_listener, limits, counts),
                async move { shutdown.wait().await },
            )
            .await;
        let _ = metrics_task.await;
        watch_store.abort();
        for w in workers {
            let _ = w.await;
        }
        tracing::info!("{name} stopped");
        result
    }))
}
