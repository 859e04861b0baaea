//! `cbdc-runtime`: what every service of the network needs to run, written once.
//!
//! - [`clock`]: wall-clock time, replaceable in tests and simulations.
//! - [`error`]: the one error kind of every service and its mapping to a gRPC status.
//! - [`config`]: TOML file plus environment overrides, unknown keys refused.
//! - [`telemetry`]: structured logs (`tracing`), text or JSON.
//! - [`metrics`]: a Prometheus `/metrics` HTTP endpoint over a registry.
//! - [`orders`]: signed orders checked (signature, network, target, expiry) and their
//!   request ids recorded with the digest of what they asked.
//! - [`retry`]: the one sans-IO retry queue of every worker that hands rows on until
//!   acknowledged (paging, backoff with jitter, bounded chunks, dead letters).
//! - [`grpc`]: the standard health and reflection services for a tonic server.
//! - [`conn`]: accepting connections within bounds (a cap, an idle timeout, an accept loop
//!   that outlives running out of descriptors).
//! - [`secret`]: secret key files (hex seed, mode 0600).
//! - [`tls`]: mutual TLS between services (rustls), certificate checks by service name,
//!   and a CA for devnets and tests.
//! - [`shutdown`]: one signal (SIGINT, SIGTERM or a test's trigger) that servers drain on.

pub mod background;
pub mod clock;
pub mod config;
pub mod conn;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod orders;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use error::ServiceError;
