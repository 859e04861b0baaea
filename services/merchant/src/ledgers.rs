//! The bank ledgers the gateway pays through: one client per ledger over mutual TLS, made on
//! first use and shared (a tonic channel multiplexes calls).
//!
//! Transfers the gateway submits are batched per ledger ([`Ledgers::submit`]): a ledger
//! commits a batch for a fraction of what the same transfers cost one call each (one
//! signature batch, one store transaction group, one round trip), and a gateway taking many
//! payments at once is where they meet. Batching adds no wait: a transfer goes as soon as
//! one of the [`IN_FLIGHT`] calls is free, with whatever else queued meanwhile; at low load
//! every batch is one transfer.

use std::collections::BTreeMap;
use std::sync::Arc;

use cbdc_client::{Dial, Ledger};
use cbdc_core::{LedgerId, Transfer};
use cbdc_proto::v1::Committed;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use crate::error::ApiError;

/// Transfers in one call to a ledger, at most (ledgers take 1,024 by default).
pub const BATCH_MAX: usize = 256;
/// Calls in flight to one ledger at once, at most.
pub const IN_FLIGHT: usize = 4;
/// Transfers waiting for a ledger, at most; past it a submission is refused UNAVAILABLE.
pub const QUEUED_MAX: usize = 4096;

/// What a submission gets back.
type Outcome = Result<Committed, cbdc_client::Error>;
/// A transfer waiting for its batch, and who waits for its outcome.
type Job = (Transfer, oneshot::Sender<Outcome>);

#[derive(Clone)]
pub struct Ledgers {
    network: Arc<str>,
    dials: Arc<BTreeMap<u32, Dial>>,
    clients: Arc<Mutex<BTreeMap<u32, Ledger>>>,
    /// Each ledger's batch queue, started on its first submission.
    queues: Arc<std::sync::Mutex<BTreeMap<u32, mpsc::Sender<Job>>>>,
}

impl Ledgers {
    /// `endpoints`: ledger id → URL; `tls`: the gateway's certificate and the network's CA
    /// (`None` for plaintext, local experiments only).
    pub fn new(
        network: &str,
        endpoints: &BTreeMap<u32, String>,
        tls: Option<&cbdc_runtime::tls::TlsConfig>,
    ) -> Result<Ledgers, String> {
        let mut dials = BTreeMap::new();
        for (&id, url) in endpoints {
            let mut dial = Dial::new(url.clone(), cbdc_runtime::tls::bank_name(id));
            if let Some(tls) = tls.filter(|t| !t.insecure) {
                let need = |f: &Option<std::path::PathBuf>, name: &str| {
                    f.clone()
                        .ok_or_else(|| format!("tls.{name}: required to call the ledgers"))
                };
                dial = dial
                    .with_ca(&need(&tls.ca_file, "ca_file")?)
                    .map_err(|e| format!("tls.ca_file: {e}"))?
                    .with_identity(
                        &need(&tls.cert_file, "cert_file")?,
                        &need(&tls.key_file, "key_file")?,
                    )
                    .map_err(|e| format!("tls: {e}"))?;
            }
            dials.insert(id, dial);
        }
        Ok(Ledgers {
            network: network.into(),
            dials: Arc::new(dials),
            clients: Arc::new(Mutex::new(BTreeMap::new())),
            queues: Arc::default(),
        })
    }

    pub fn knows(&self, ledger: u32) -> bool {
        self.dials.contains_key(&ledger)
    }

    /// A client of `ledger` (field names the request field that chose it, for errors).
    pub async fn get(&self, field: &str, ledger: u32) -> Result<Ledger, ApiError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&ledger) {
            return Ok(c.clone());
        }
        let dial = self.dials.get(&ledger).ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("ledger {ledger}: this gateway does not serve it"),
            )
        })?;
        let client = Ledger::connect(dial, LedgerId(ledger), &self.network)
            .await
            .map_err(|e| ApiError::unavailable(format!("ledger {ledger}: {e}")))?;
        clients.insert(ledger, client.clone());
        Ok(client)
    }
}

impl Ledgers {
    /// Submits a signed transfer to `ledger` in the next batch for it; its own outcome, as a
    /// single call would answer it (sending the same transfer again answers its commit). A
    /// full queue or an unreachable ledger is a transient error: send it again.
    pub async fn submit(&self, ledger: u32, t: &Transfer) -> Outcome {
        if !self.knows(ledger) {
            return Err(cbdc_client::Error::Invalid(format!(
                "ledger {ledger}: this gateway does not serve it"
            )));
        }
        let queue = {
            let mut queues = self.queues.lock().expect("not poisoned");
            queues
                .entry(ledger)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUED_MAX);
                    tokio::spawn(batches(self.clone(), ledger, rx));
                    tx
                })
                .clone()
        };
        let (done, outcome) = oneshot::channel();
        match queue.try_send((t.clone(), done)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(cbdc_client::Error::Rpc(Box::new(cbdc_client::RpcError {
                    code: tonic::Code::Unavailable,
                    reason: "UNAVAILABLE".into(),
                    message: format!("{QUEUED_MAX} transfers are waiting for ledger {ledger}"),
                    metadata: BTreeMap::new(),
                    field: None,
                    retry_after: Some(std::time::Duration::from_millis(100)),
                })));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // Its task ended with the runtime that ran it: the next submission starts
                // another.
                self.queues.lock().expect("not poisoned").remove(&ledger);
                return Err(cbdc_client::Error::Connect(format!(
                    "ledger {ledger}: the batch queue stopped; send again"
                )));
            }
        }
        outcome.await.unwrap_or_else(|_| {
            Err(cbdc_client::Error::Connect(format!(
                "ledger {ledger}: the batch was dropped"
            )))
        })
    }
}

/// Sends one ledger's queued transfers: a batch of what is waiting whenever a call is free.
async fn batches(ledgers: Ledgers, ledger: u32, mut queue: mpsc::Receiver<Job>) {
    let free = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // While every call is busy, more transfers queue up and go in the next batch.
        let Ok(permit) = Arc::clone(&free).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let ledgers = ledgers.clone();
        tokio::spawn(async move {
            let _permit = permit;
            send(&ledgers, ledger, batch).await;
        });
    }
}

/// One call with `batch`, each outcome to its waiter. A call refused as a whole for good
/// (not busy, not unreachable) is sent again one transfer at a time, so that no transfer
/// is answered for another's fault.
async fn send(ledgers: &Ledgers, ledger: u32, batch: Vec<Job>) {
    let mut client = match ledgers.get("ledger", ledger).await {
        Ok(c) => c,
        Err(e) => {
            for (_, done) in batch {
                let _ = done.send(Err(cbdc_client::Error::Connect(e.message.clone())));
            }
            return;
        }
    };
    let (transfers, waiters): (Vec<Transfer>, Vec<_>) = batch.into_iter().unzip();
    match client.submit_many_with(&transfers, false).await {
        Ok(results) if results.len() == waiters.len() => {
            for (r, done) in results.into_iter().zip(waiters) {
                let _ = done.send(r.map_err(|e| cbdc_client::Error::Rpc(Box::new(e))));
            }
        }
        Ok(results) => {
            let e = cbdc_client::Error::Connect(format!(
                "ledger {ledger} answered {} results for {} transfers",
                results.len(),
                waiters.len()
            ));
            for done in waiters {
                let _ = done.send(Err(e.clone()));
            }
        }
        Err(cbdc_client::Error::Rpc(e)) if !cbdc_client::transient(e.code) && waiters.len() > 1 => {
            for (t, done) in transfers.iter().zip(waiters) {
                let _ = done.send(client.submit(t).await);
            }
        }
        Err(e) => {
            for done in waiters {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}
