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

/// Reflection over `descriptor_set` (v1).
pub fn reflection(
    descriptor_set: &'static [u8],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .build_v1()
}

/// The two listeners every service binds, with the addresses they got (port 0 picks one).
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub grpc_addr: std::net::SocketAddr,
    pub metrics: tokio::net::TcpListener,
    pub metrics_addr: std::net::SocketAddr,
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
    })
}
