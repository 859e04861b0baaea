//! `cbdc-issuance`: the central bank (tier one).
//!
//! - [`bank::CentralBank`]: the operator registry, issuance, settlement of cross-ledger moves
//!   and redemptions, checkpoints and the audit, over `cbdc-store`.
//! - [`records`]: what the central bank stores, in its own versioned encoding.
//! - [`delivery`]: delivery of countersigned settlements to the destination ledgers, with
//!   retries.
//! - [`service::IssuanceGrpc`]: the `cbdc.v1.IssuanceService` gRPC face.
//! - [`serve`]: runs it all from a [`config::IssuanceConfig`].
//!
//! Authentication is by signed requests: the administrator signs registrations, status
//! changes and issues; a bank's operator key signs its settlements and checkpoints. Every
//! signature covers the request's fields and a domain tag, so it is checked end to end
//! whatever carries it; a deployment adds mutual TLS between services for transport
//! confidentiality (see `deploy/README.md`).

pub mod bank;
pub mod config;
pub mod delivery;
pub mod gauges;
pub mod records;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cbdc_core::{Keypair, PublicKey};
use cbdc_runtime::clock::Clock;
use cbdc_runtime::shutdown::{ServerTask, Shutdown};
use cbdc_store::Database;

use crate::bank::CentralBank;
use crate::config::IssuanceConfig;

/// A central bank that failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] cbdc_store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A running central bank.
pub struct RunningIssuance {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub bank: CentralBank,
    server: ServerTask<ServeError>,
}

impl RunningIssuance {
    /// Stops accepting, finishes in-flight requests, closes the store.
    pub async fn stop(self) -> Result<(), ServeError> {
        let result = self.server.stop().await;
        drop(self.bank);
        result
    }

    /// Waits until the server stops (after its shutdown signal fires).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.server.wait().await
    }
}

fn open_store(config: &IssuanceConfig) -> Result<Database, ServeError> {
    Ok(Database::open_configured(
        &config.data_dir,
        config.fdb_cluster_file.as_deref(),
    )?)
}

/// Parses a hex public key, naming `field` in errors.
pub fn parse_public_key(field: &str, text: &str) -> Result<PublicKey, String> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{field}: expected 64 hex digits"))?;
    PublicKey::checked(&bytes).map_err(|e| format!("{field}: {e}"))
}

/// Starts the central bank described by `config` and serves until `shutdown` fires.
pub async fn serve(
    config: IssuanceConfig,
    shutdown: Shutdown,
) -> Result<RunningIssuance, ServeError> {
    serve_with_clock(config, shutdown, Clock::system()).await
}

/// [`serve`] with a given clock.
pub async fn serve_with_clock(
    config: IssuanceConfig,
    shutdown: Shutdown,
    clock: Clock,
) -> Result<RunningIssuance, ServeError> {
    let admin = parse_public_key("admin_public_key", &config.admin_public_key)
        .map_err(ServeError::Config)?;
    let seed =
        cbdc_runtime::secret::load_or_create_seed(&config.signing_key_file).map_err(|e| {
            ServeError::Config(format!(
                "signing_key_file {}: {e}",
                config.signing_key_file.display()
            ))
        })?;
    let signing = Keypair::from_seed(&seed);
    if signing.public() == admin {
        return Err(ServeError::Config(
            "admin_public_key: is the signing key; the administrator's key must be separate from the key that countersigns settlements".into(),
        ));
    }
    if config.network.is_empty() || config.network.len() > cbdc_core::messages::NETWORK_MAX {
        return Err(ServeError::Config(format!(
            "network: required, at most {} bytes",
            cbdc_core::messages::NETWORK_MAX
        )));
    }
    let tls = config
        .tls
        .load("central bank")
        .map_err(ServeError::Config)?;
    let db = open_store(&config)?;
    let store_metrics = cbdc_store::StoreCollector::new(db.clone());
    let bank = CentralBank::new(db, signing, admin, config.network.clone(), clock);

    let listeners = cbdc_runtime::grpc::bind(config.listen, config.metrics_listen).await?;
    let (grpc_addr, metrics_addr) = (listeners.grpc_addr, listeners.metrics_addr);
    let registry = prometheus::Registry::new_custom(Some("cbdc_issuance".into()), None)
        .map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let grpc = cbdc_proto::v1::issuance_service_server::IssuanceServiceServer::new(
        service::IssuanceGrpc::new(bank.clone())
            .with_tls(tls.clone())
            .with_metrics(&registry)
            .map_err(|e| ServeError::Config(format!("metrics: {e}")))?,
    );
    registry
        .register(Box::new(store_metrics))
        .map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let worker = delivery::DeliveryWorker::new(
        bank.clone(),
        Arc::new(delivery::GrpcLedgers::new(tls.clone())),
    )
    .with_metrics(&registry);
    let audits = gauges::AuditMetrics::register(&registry)
        .map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let workers = vec![
        tokio::spawn(worker.run(
            Duration::from_millis(config.delivery_interval_ms.max(1)),
            shutdown.clone(),
        )),
        tokio::spawn(audits.run(
            bank.clone(),
            Duration::from_millis(config.audit_interval_ms.max(100)),
            shutdown.clone(),
        )),
    ];
    let server = cbdc_runtime::grpc::serve(
        "central bank",
        listeners,
        grpc,
        cbdc_proto::FILE_DESCRIPTOR_SET,
        registry,
        tls.as_ref(),
        false,
        bank.db(),
        workers,
        shutdown.clone(),
    )
    .await
    .map_err(ServeError::Config)?;
    Ok(RunningIssuance {
        grpc_addr,
        metrics_addr,
        bank,
        server: ServerTask::new(shutdown, server),
    })
}
