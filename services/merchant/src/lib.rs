//! `cbdc-merchant`: the merchant gateway — what e-commerce, ride-hailing and video platforms
//! integrate with, over HTTP/JSON.
//!
//! - [`auth`]: signed requests (Ed25519 over method, path, timestamp, nonce and body, a
//!   replay window, nonces remembered for it).
//! - [`gateway`]: merchants onboarded by their bank's authority, orders (idempotent by
//!   `out_trade_no`), their `cbdc:` payment URIs; state in `cbdc-store`.
//! - [`custody`]: the keys the gateway holds — a collection wallet per merchant, the webhook
//!   key — derived from one secret seed.
//! - [`ledgers`]: clients of the bank ledgers over mutual TLS.
//! - [`payments`]: orders paid by a payer's signed transfer from any bank, credits matched
//!   to orders, refunds (asked for, and automatic for payments an order cannot take).
//! - [`locks`]: ride holds captured with splits, subscription mandates charged and revoked.
//! - [`events`]: events and their signed webhooks, retried, logged, redelivered.
//! - [`statements`]: daily statements in CSV and JSON, reconciled with the ledger.
//! - [`workers`]: reading credits, settling refunds, delivering webhooks.
//! - [`qr`]: the payment URI's QR code as SVG and PNG.
//! - [`client`]: a client of the HTTP API, signing as merchants and banks sign.
//! - [`grpc`]: the same operations as `cbdc.v1.MerchantGateway` over gRPC.
//! - [`http`]: the axum routes and JSON errors naming the field ([`error`]);
//!   [`openapi`]: their OpenAPI document, generated from the code.
//! - [`metrics`]: requests, latency and webhook attempts, on a Prometheus `/metrics`.

pub mod auth;
pub mod checkout;
pub mod client;
pub mod config;
pub mod custody;
pub mod error;
pub mod events;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod ledgers;
pub mod locks;
pub mod metrics;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod qr;
pub mod refunds;
pub mod statements;
pub mod workers;

use std::net::SocketAddr;
use std::time::Duration;

use cbdc_core::PublicKey;
use cbdc_runtime::shutdown::Shutdown;

use crate::error::ApiError;

/// How long the gateway's embedded store lets a commit wait for others to share its fsync
/// (only while commits are arriving together). An order takes three small commits: under
/// load, one fsync each made the fsyncs the gateway's largest single cost.
pub const COMMIT_DELAY: Duration = Duration::from_millis(1);

/// Parses a hex Ed25519 public key, naming `field`.
pub fn parse_key(field: &str, text: &str) -> Result<PublicKey, ApiError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::invalid(field, "64 hex digits"))?;
    PublicKey::checked(&bytes).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// Serves the gateway its configuration describes.
pub async fn serve_config(
    config: &config::MerchantConfig,
    shutdown: Shutdown,
) -> Result<RunningGateway, String> {
    let gateway = gateway_of(config)?;
    serve(
        (config.listen, config.grpc_listen, config.metrics_listen),
        gateway,
        pace(config),
        shutdown,
    )
    .await
    .map_err(|e| {
        format!(
            "listen {} / {} / {}: {e}",
            config.listen, config.grpc_listen, config.metrics_listen
        )
    })
}

/// The gateway its configuration describes (its store open, its seed read or made).
pub fn gateway_of(config: &config::MerchantConfig) -> Result<gateway::Gateway, String> {
    let banks = config.bank_keys()?;
    let seed = cbdc_runtime::secret::load_or_create_seed(&config.key_file)
        .map_err(|e| format!("key_file {}: {e}", config.key_file.display()))?;
    let ledgers = ledgers::Ledgers::new(
        &config.network,
        &config.ledger_endpoints()?,
        Some(&config.tls),
    )?;
    if config.tls.insecure {
        tracing::warn!("merchant gateway: tls.insecure: PLAINTEXT to the ledgers");
    }
    let db = cbdc_store::Database::open_configured_with(
        &config.data_dir,
        config.fdb_cluster_file.as_deref(),
        cbdc_store::EmbeddedOptions {
            commit_delay: COMMIT_DELAY,
            ..Default::default()
        },
    )
    .map_err(|e| format!("store: {e}"))?;
    let gateway = gateway::Gateway::new(
        db,
        config.network.clone(),
        banks,
        custody::Custody::new(seed),
        ledgers,
    );
    // The store's commits, fsyncs and bytes written, as the ledger and central bank expose
    // theirs.
    gateway
        .metrics
        .registry
        .register(Box::new(cbdc_store::StoreCollector::new(
            gateway.db.clone(),
        )))
        .map_err(|e| format!("metrics: {e}"))?;
    if let Some(expiry) = config.tls.expiry()? {
        expiry
            .register(&gateway.metrics.registry)
            .map_err(|e| format!("metrics: {e}"))?;
    }
    Ok(gateway)
}

/// The workers' pace from the configuration.
pub fn pace(config: &config::MerchantConfig) -> workers::Pace {
    workers::Pace {
        poll: Duration::from_millis(config.poll_interval_ms.max(1)),
        webhook_base: Duration::from_millis(config.webhook_retry_base_ms.max(1)),
        webhook_max: Duration::from_millis(config.webhook_retry_max_ms.max(1)),
        webhook_attempts: config.webhook_attempts_max,
    }
}

/// A running gateway.
pub struct RunningGateway {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// Waits until the gateway has stopped (its shutdown was signalled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Serves `gateway` over HTTP and gRPC on `listen` (HTTP, gRPC, metrics) with its workers
/// at `pace`; stops on `shutdown`.
pub async fn serve(
    listen: (SocketAddr, SocketAddr, SocketAddr),
    gateway: gateway::Gateway,
    pace: workers::Pace,
    shutdown: Shutdown,
) -> std::io::Result<RunningGateway> {
    let listener = tokio::net::TcpListener::bind(listen.0).await?;
    let http_addr = listener.local_addr()?;
    let grpc_listener = tokio::net::TcpListener::bind(listen.1).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_listener = cbdc_runtime::metrics::bind(listen.2).await?;
    let metrics_addr = metrics_listener.local_addr()?;
    // Both listeners bound their connections as the services' gRPC servers do: a cap (a
    // quarter of it per source address), idle connections closed, accept errors waited out.
    let counts = cbdc_runtime::conn::Counts::registered(&gateway.metrics.registry)
        .map_err(|e| std::io::Error::other(format!("metrics: {e}")))?;
    let limits = cbdc_runtime::conn::Limits::default();
    let listener = cbdc_runtime::conn::BoundedListener::new(listener, limits, counts.clone())?;
    let app = http::router(gateway.clone());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<cbdc_proto::v1::merchant_gateway_server::MerchantGatewayServer<grpc::GrpcGateway>>()
        .await;
    let grpc = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(256)
        .timeout(Duration::from_secs(30))
        .add_service(health)
        .add_service(metrics::Counted::new(
            cbdc_proto::v1::merchant_gateway_server::MerchantGatewayServer::new(
                grpc::GrpcGateway::new(gateway.clone()),
            ),
            std::sync::Arc::clone(&gateway.metrics),
        ))
        .serve_with_incoming_shutdown(
            cbdc_runtime::conn::incoming(grpc_listener, limits, counts),
            {
                let shutdown = shutdown.clone();
                async move { shutdown.wait().await }
            },
        );
    let metrics_server = cbdc_runtime::metrics::serve(
        metrics_listener,
        gateway.metrics.registry.clone(),
        shutdown.clone(),
    );
    let workers = workers::run(gateway, pace, shutdown.clone());
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown({
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
        let _ = tokio::join!(server, grpc, workers, metrics_server);
    });
    tracing::info!(%http_addr, %grpc_addr, %metrics_addr, "merchant gateway serving");
    Ok(RunningGateway {
        http_addr,
        grpc_addr,
        metrics_addr,
        task,
    })
}
