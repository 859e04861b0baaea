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
