//! `cbdc-runtime`: what every service of the network needs to run, written once.
//!
//! - [`backoff`]: exponential backoff per item, for retrying workers.
//! - [`clock`]: wall-clock time, replaceable in tests and simulations.
//! - [`config`]: TOML file plus environment overrides, unknown keys refused.
//! - [`telemetry`]: structured logs (`tracing`), text or JSON.
//! - [`metrics`]: a Prometheus `/metrics` HTTP endpoint over a registry.
//! - [`grpc`]: the standard health and reflection services for a tonic server.
//! - [`secret`]: secret key files (hex seed, mode 0600).
//! - [`shutdown`]: one signal (SIGINT, SIGTERM or a test's trigger) that servers drain on.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
