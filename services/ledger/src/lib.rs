//! `cbdc-ledger`: the commercial-bank (tier-two) ledger service.
//!
//! - [`ledger::Ledger`]: wallets, transfers, the operator vault and inbound deliveries over
//!   `cbdc-store`, with validation from `cbdc-core`.
//! - [`verifier`]: stateless checks and Ed25519 batch verification shared across requests.
//! - [`audit`]: the Merkle audit log's sequencer, checkpoints, receipts.
//! - [`outbox`]: settlement of outbound transfers and checkpoint submission to the central
//!   bank.
//! - [`service::LedgerGrpc`]: the `cbdc.v1.LedgerService` gRPC face.
//! - [`serve`]: runs it all from a [`config::LedgerConfig`] — gRPC with health and
//!   reflection, Prometheus `/metrics`, graceful shutdown.

pub mod audit;
pub mod batcher;
pub mod config;
pub mod hub;
pub mod layout;
pub mod ledger;
pub mod metrics;
pub mod outbox;
pub mod records;
pub mod replay;
pub mod service;
pub mod verifier;

use std::net::SocketAddr;
use std::path::Path;

use cbdc_core::{Keypair, LedgerId, PublicKey};
use cbdc_runtime::shutdown::{ServerTask, Shutdown};
use cbdc_store::Database;

use crate::config::LedgerConfig;
use crate::ledger::{Clock, Ledger, Settings};

/// A ledger service that failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("operator key file {path}: {message}")]
    OperatorKey { path: String, message: String },
    #[error("store: {0}")]
    Store(#[from] cbdc_store::StoreError),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::ServiceError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A running ledger service.
pub struct RunningLedger {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub ledger: Ledger,
    server: ServerTask<ServeError>,
}

impl RunningLedger {
    /// Stops accepting, finishes in-flight requests (and so their commits), closes the store.
    pub async fn stop(self) -> Result<(), ServeError> {
        let result = self.server.stop().await;
        drop(self.ledger);
        result
    }

    /// Waits until the server stops (after its shutdown signal fires).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.server.wait().await
    }
}

/// Reads the operator seed (hex) from `path`, creating a fresh one with mode 0600 if absent.
pub fn load_or_create_key(path: &Path) -> Result<Keypair, ServeError> {
    let err = |message: String| ServeError::OperatorKey {
        path: path.display().to_string(),
        message,
    };
    cbdc_runtime::secret::load_or_create_seed(path)
        .map(|seed| Keypair::from_seed(&seed))
        .map_err(err)
}

/// A public key from configuration (64 hex digits), named by `field` in errors.
fn config_key(field: &str, text: &str) -> Result<PublicKey, ServeError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ServeError::Config(format!("{field}: expected 64 hex digits")))?;
    PublicKey::checked(&bytes).map_err(|e| ServeError::Config(format!("{field}: {e}")))
}

fn settings(config: &LedgerConfig) -> Result<Settings, ServeError> {
    let central_bank = match &config.central_bank_public_key {
        None => None,
        Some(text) => Some(config_key("central_bank_public_key", text)?),
    };
    let authority = config_key("authority_public_key", &config.authority_public_key)?;
    if config.network.is_empty() || config.network.len() > cbdc_core::messages::NETWORK_MAX {
        return Err(ServeError::Config(format!(
            "network: required, at most {} bytes",
            cbdc_core::messages::NETWORK_MAX
        )));
    }
    let phone_key = cbdc_runtime::secret::load_or_create_seed(&config.phone_key_file)
        .map_err(|e| ServeError::Config(format!("phone_key_file: {e}")))?;
    if config.max_batch == 0 || config.max_batch > 8192 {
        return Err(ServeError::Config(format!(
            "max_batch: {}; must be between 1 and 8192",
            config.max_batch
        )));
    }
    if !(-14 * 60..=14 * 60).contains(&config.utc_offset_minutes) {
        return Err(ServeError::Config(format!(
            "utc_offset_minutes: {}; must be within ±14 hours",
            config.utc_offset_minutes
        )));
    }
    Ok(Settings {
        ledger: LedgerId(config.ledger_id),
        tiers: config.tier_table().map_err(ServeError::Config)?,
        utc_offset_minutes: config.utc_offset_minutes,
        max_batch: config.max_batch,
        page_size_max: config.page_size_max.max(1),
        default_valid_for_s: config.default_valid_for_s.max(1),
        amount_max: config.amount_max().map_err(ServeError::Config)?,
        central_bank,
        network: config.network.clone(),
        authority,
        phone_key,
        faults: config.faults,
    })
}

/// The largest request the server decodes: a full `SubmitTransfers` batch of the largest
/// transfers (body, eight witnesses, framing), plus slack for the other fields.
pub fn request_bytes_max(max_batch: usize) -> usize {
    let per_transfer = cbdc_core::transfer::MAX_BODY_BYTES
        + cbdc_core::transfer::MAX_WITNESSES * (32 + 64 + 8)
        + 16;
    max_batch * per_transfer + 64 * 1024
}

fn open_store(config: &LedgerConfig) -> Result<Database, ServeError> {
    Ok(Database::open_configured_with(
        &config.data_dir,
        config.fdb_cluster_file.as_deref(),
        store_options(LedgerId(config.ledger_id)),
    )?)
}

/// How a ledger opens its embedded store: its hot key families in memory
/// ([`layout::Layout::memory_families`]), and so a smaller block cache than the store's
/// default: with wallet records and balances out of the LSM tree, 128 MiB ran as fast as
/// 256 at 10⁵ and 10⁶ wallets and left bank 1 about 275 MiB smaller at 10⁶.
pub fn store_options(ledger: LedgerId) -> cbdc_store::EmbeddedOptions {
    cbdc_store::EmbeddedOptions {
        memory_families: layout::Layout::new(ledger).memory_families(),
        cache_bytes: 128 << 20,
        ..cbdc_store::EmbeddedOptions::default()
    }
}

/// Starts the ledger service described by `config`: binds both listeners, opens the store
/// and serves until `shutdown` fires.
pub async fn serve(config: LedgerConfig, shutdown: Shutdown) -> Result<RunningLedger, ServeError> {
    serve_with_clock(config, shutdown, Clock::system()).await
}

/// [`serve`] with a given clock (tests move time to cross day boundaries and expiries).
pub async fn serve_with_clock(
    config: LedgerConfig,
    shutdown: Shutdown,
    clock: Clock,
) -> Result<RunningLedger, ServeError> {
    let settings = settings(&config)?;
    let operator = load_or_create_key(&config.operator_key_file)?;
    if operator.public() == settings.authority {
        return Err(ServeError::Config(
            "authority_public_key: is the operator key; the authority key (orders, reads) must be separate from the hot vault and settlement key".into(),
        ));
    }
    let db = open_store(&config)?;
    let ledger = Ledger::open(db, settings, operator, clock).await?;

    let tls = config.tls.load("ledger").map_err(ServeError::Config)?;
    let mut listeners = cbdc_runtime::grpc::bind(config.listen, config.metrics_listen).await?;
    if let Some(max) = config.connections_max {
        listeners.limits = cbdc_runtime::conn::Limits::with_max(max);
    }
    let (grpc_addr, metrics_addr) = (listeners.grpc_addr, listeners.metrics_addr);
    let service = service::LedgerGrpc::new(ledger.clone(), shutdown.clone()).with_tls(tls.clone());
    let admission = service.admission();
    let grpc = service::admission::Gate::new(
        cbdc_proto::v1::ledger_service_server::LedgerServiceServer::new(service)
            .max_decoding_message_size(request_bytes_max(config.max_batch)),
        admission,
    );
    let mut workers = vec![tokio::spawn(audit::run_sequencer(
        ledger.clone(),
        std::time::Duration::from_millis(config.sequencer_interval_ms.max(1)),
        shutdown.clone(),
    ))];
    if let Some(endpoint) = &config.central_bank_endpoint {
        let link = outbox::GrpcCentralBank::new(endpoint, tls.as_ref())
            .map_err(|e| ServeError::Config(format!("central_bank_endpoint: {e}")))?;
        let worker = outbox::OutboxWorker::new(ledger.clone(), std::sync::Arc::new(link));
        workers.push(tokio::spawn(worker.run(
            std::time::Duration::from_millis(config.outbox_interval_ms.max(1)),
            std::time::Duration::from_millis(config.checkpoint_interval_ms.max(1)),
            shutdown.clone(),
        )));
    }
    let server = cbdc_runtime::grpc::serve(
        "ledger",
        listeners,
        grpc,
        cbdc_proto::FILE_DESCRIPTOR_SET,
        ledger.metrics().registry.clone(),
        tls.as_ref(),
        true,
        ledger.db(),
        workers,
        shutdown.clone(),
    )
    .await
    .map_err(ServeError::Config)?;
    Ok(RunningLedger {
        grpc_addr,
        metrics_addr,
        ledger,
        server: ServerTask::new(shutdown, server),
    })
}
