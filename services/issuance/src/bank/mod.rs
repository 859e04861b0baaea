//! The central bank's logic over the store: the operator registry, issuance, settlement of
//! cross-ledger moves and redemptions, checkpoints and the audit. It works on domain types
//! ([`crate::records`]); the gRPC layer (`service.rs`) converts and calls in here.
//!
//! One room per duty: [`registry`] (operators, changed only by the administrator),
//! [`issue`] (mint and the books), [`settle`] (moves out of a bank's ledger, and the
//! delivery queue they feed), [`checkpoints`] (accepting a ledger's signed checkpoints) and
//! [`audit`] (reconciling the books with every checkpoint). Keys are in [`keys`].
//!
//! The books: for every ledger `L`, `in(L) − out(L)` is what the central bank says `L`
//! answers for, and `issued − redeemed = Σ (in(L) − out(L))` holds by construction (each
//! issue, settlement and redemption changes both sides in one transaction).

use std::sync::Arc;

use cbdc_core::messages::{AdminOrder, CENTRAL_BANK, Order};
use cbdc_core::{Keypair, PublicKey};
use cbdc_runtime::ServiceError;
use cbdc_runtime::clock::Clock;
use cbdc_runtime::orders::{Authority, Seen};
use cbdc_store::Database;
use cbdc_store::keys::Subspace;

pub mod audit;
pub mod checkpoints;
pub mod issue;
mod keys;
pub mod registry;
pub mod reverse;
pub mod settle;

pub use audit::{AuditReport, LedgerAudit};
pub use checkpoints::CheckpointAnswer;
pub use settle::{Queued, SettleOutcome, SettlementState};

use keys::Keys;

/// Registered operators listed, at most (the registry is small: one row per bank).
pub const OPERATORS_MAX: usize = 10_000;
/// Transfers per `SettleBatch` request, at most.
pub const SETTLE_BATCH_MAX: usize = 1024;
/// Queued deliveries read per step, at most.
pub const QUEUE_SCAN_MAX: usize = 4096;
/// An issue's transfer is valid for this long (it is delivered as a countersigned
/// settlement, which ledgers accept after expiry, so this only bounds the body).
pub const MINT_VALID_FOR_S: u64 = 86_400;

struct Inner {
    db: Database,
    keys: Keys,
    signing: Keypair,
    admin: PublicKey,
    network: String,
    clock: Clock,
}

/// The central bank. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct CentralBank {
    inner: Arc<Inner>,
}

use cbdc_runtime::orders::signature_error;

impl CentralBank {
    /// The central bank of `network`: `signing` signs issues and countersigns settlements;
    /// `admin` (a separate key, kept offline) signs registrations, status changes and mints.
    pub fn new(
        db: Database,
        signing: Keypair,
        admin: PublicKey,
        network: String,
        clock: Clock,
    ) -> CentralBank {
        CentralBank {
            inner: Arc::new(Inner {
                db,
                keys: Keys {
                    sub: Subspace::from(("issuance",)),
                },
                signing,
                admin,
                network,
                clock,
            }),
        }
    }

    /// The key that countersigns settlements and signs issues.
    pub fn public_key(&self) -> PublicKey {
        self.inner.signing.public()
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Runs `f` in a store transaction, retried as the store decides; each attempt gets a
    /// handle of its own.
    async fn transact<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        F: for<'t> Fn(
            CentralBank,
            &'t mut cbdc_store::Transaction,
        ) -> futures::future::BoxFuture<
            't,
            Result<T, cbdc_store::TxError<ServiceError>>,
        >,
    {
        let me = self.clone();
        Ok(self.inner.db.run(move |tx| f(me.clone(), tx)).await?)
    }

    /// The central bank's store.
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The network the central bank serves.
    pub fn network(&self) -> &str {
        &self.inner.network
    }

    /// Checks an administrator's order (signature, network, target, expiry) and gives the
    /// record of its request id.
    fn check_admin(&self, order: &AdminOrder<'_>, signature: &[u8]) -> Result<Seen, ServiceError> {
        Authority {
            key: &self.inner.admin,
            field: "admin_signature",
            whose: "the central bank administrator's key",
            network: &self.inner.network,
            target: CENTRAL_BANK,
        }
        .check(order, signature, self.now_ms())?;
        Ok(Seen::of(
            order,
            self.keys().request(order.kind(), order.header.request_id),
        ))
    }
}
