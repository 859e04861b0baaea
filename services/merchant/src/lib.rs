//! `cbdc-merchant`: the merchant gateway — what e-commerce, ride-hailing and video platforms
//! integrate with. This first part serves HTTP/JSON:
//!
//! - [`auth`]: signed requests (Ed25519 over method, path, timestamp, nonce and body, a
//!   replay window, nonces remembered for it).
//! - [`gateway`]: merchants onboarded by their bank's authority, orders (idempotent by
//!   `out_trade_no`), their `cbdc:` payment URIs; state in `cbdc-store`.
//! - [`qr`]: the payment URI's QR code as SVG and PNG.
//! - [`http`]: the axum routes and JSON errors naming the field ([`error`]).
//!
//! Not yet: payments of orders through the ledgers, holds, mandates, refunds, webhooks,
//! statements, gRPC and the OpenAPI document.

pub mod auth;
pub mod config;
pub mod error;
pub mod gateway;
pub mod http;
pub mod qr;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cbdc_core::PublicKey;
use cbdc_runtime::shutdown::Shutdown;

use crate::error::ApiError;

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
    let banks = config.bank_keys()?;
    let db =
        cbdc_store::Database::open_configured(&config.data_dir, config.fdb_cluster_file.as_deref())
            .map_err(|e| format!("store: {e}"))?;
    serve(config.listen, db, config.network.clone(), banks, shutdown)
        .await
        .map_err(|e| format!("listen {}: {e}", config.listen))
}

/// A running gateway.
pub struct RunningGateway {
    pub http_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// Waits until the gateway has stopped (its shutdown was signalled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Serves the gateway over HTTP on `listen` with its state in `db`, for `network`, taking
/// onboardings from the banks whose authority keys are `banks`; stops on `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    db: cbdc_store::Database,
    network: String,
    banks: BTreeMap<u32, PublicKey>,
    shutdown: Shutdown,
) -> std::io::Result<RunningGateway> {
    let gateway = gateway::Gateway::new(db, network, banks);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let http_addr = listener.local_addr()?;
    let app = http::router(gateway.clone());
    let pruner = {
        let (gateway, shutdown) = (gateway.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                if let Err(e) = gateway.prune_nonces().await {
                    tracing::warn!(error = %e.message, "pruning nonces");
                }
            }
        }
    };
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown({
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
        let _ = tokio::join!(server, pruner);
    });
    tracing::info!(%http_addr, "merchant gateway serving");
    Ok(RunningGateway { http_addr, task })
}
