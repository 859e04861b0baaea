//! The report: the figures of the timed window, the server's cost, and the checks run after
//! it — every acknowledged transfer committed at the position it was acknowledged with, and
//! the central bank's audit balanced once the network is quiet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cbdc_core::{Address, Keypair, LedgerId};
use cbdc_proto::v1;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::LoadArgs;
use crate::drive::{Run, Second};
use crate::setup::Prepared;
use crate::target::Network;

/// Acknowledged transfers the check reads back, at most (evenly spread beyond that).
pub const CHECK_MAX: usize = 100_000;
/// The quantiles the latency distribution is reported at.
pub const QUANTILES: [f64; 10] = [
    0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
];
/// Check reads in flight at once.
const CHECK_CONCURRENCY: usize = 64;

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Server {
    pub cpu_us_per_transfer: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub rss_max_bytes: Option<u64>,
    /// What the figures are of: "the devnet process this run started (every service in
    /// one process)", or why there are none.
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Checks {
    pub acknowledged: usize,
    pub read_back: usize,
    /// Read back committed at the position acknowledged.
    pub found: usize,
    pub missing: Vec<String>,
    pub audit_balanced: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub wallets: usize,
    pub payees_on_bank_2: usize,
    pub transfers_per_wallet: usize,
    pub batch: usize,
    pub concurrency: usize,
    pub offered_rate: u64,
    pub cross_percent: u32,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub setup: BTreeMap<String, f64>,
    pub window_s: f64,
    pub committed: u64,
    pub transfers_per_s: f64,
    pub latency: Latency,
    /// Latency (ms) at each of [`QUANTILES`] in the window.
    pub latency_distribution: Vec<(f64, f64)>,
    pub errors: BTreeMap<String, u64>,
    /// Open loop: transfers due while every call slot was taken (the server fell behind).
    pub not_sent: u64,
    /// Times a sender found no wallet ready (every chain waiting on a commit).
    pub starved: u64,
    pub server: Server,
    pub timeline: Vec<Second>,
    pub checks: Checks,
}

impl Report {
    /// The report as lines a person reads.
    pub fn summary(&self) -> Vec<String> {
        let l = &self.latency;
        let mut lines = vec![
            format!(
                "{}: {} transfers committed in {:.1} s: {:.0} transfers/s",
                self.mode, self.committed, self.window_s, self.transfers_per_s
            ),
            format!(
                "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            ),
        ];
        if !self.errors.is_empty() || self.not_sent > 0 {
            lines.push(format!(
                "errors: {:?}; not sent (open loop behind): {}",
                self.errors, self.not_sent
            ));
        }
        match (self.server.cpu_us_per_transfer, self.server.rss_bytes) {
            (Some(cpu), Some(rss)) => lines.push(format!(
                "server: {cpu:.1} µs CPU per transfer, RSS {:.0} MiB (max {:.0} MiB) — {}",
                rss as f64 / 1048576.0,
                self.server.rss_max_bytes.unwrap_or(rss) as f64 / 1048576.0,
                self.server.note
            )),
            _ => lines.push(format!("server: {}", self.server.note)),
        }
        lines.push(format!(
            "checks: {} of {} read back committed at their acknowledged position ({} acknowledged); audit balanced: {}",
            self.checks.found,
            self.checks.read_back,
            self.checks.acknowledged,
            self.checks.audit_balanced
        ));
        lines
    }

    /// Whether every check passed.
    pub fn checks_pass(&self) -> bool {
        self.checks.found == self.checks.read_back && self.checks.audit_balanced
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// What reading acknowledged transfers back found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    pub read: usize,
    /// Committed (any status past UNKNOWN) at the position acknowledged.
    pub found: usize,
    /// The first few that were not, with what was read.
    pub missing: Vec<String>,
}

/// Reads back `items` — each a payer's key, a txid and the log position its commit was
/// acknowledged with — on ledger `ledger` of `network`, as the bank's `authority`, at most
/// [`CHECK_CONCURRENCY`] at once.
pub async fn read_back(
    client: &cbdc_client::Ledger,
    authority: Arc<Keypair>,
    network: &str,
    ledger: LedgerId,
    items: Vec<(cbdc_core::PublicKey, cbdc_core::Txid, Vec<u8>)>,
) -> Result<ReadBack, String> {
    let gate = Arc::new(Semaphore::new(CHECK_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let read = items.len();
    for (payer, txid, position) in items {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("open");
        let mut client = client.clone();
        let (authority, network_name) = (Arc::clone(&authority), network.to_string());
        tasks.spawn(async move {
            let _permit = permit;
            let address = Address::new(ledger, payer).to_string();
            let auth = cbdc_proto::requests::read_auth(
                &authority,
                &network_name,
                ledger,
                &address,
                now_ms() + cbdc_proto::requests::READ_VALID_FOR_MS,
                true,
            );
            let got = client
                .rpc()
                .get_transfer(v1::GetTransferRequest {
                    txid: txid.0.to_vec(),
                    address,
                    auth: Some(auth),
                })
                .await;
            match got {
                Ok(r) => {
                    let r = r.into_inner();
                    let committed = r.status != v1::TransferStatus::Unknown as i32
                        && r.status != v1::TransferStatus::Unspecified as i32;
                    if committed && r.log_position == position {
                        None
                    } else {
                        Some(format!(
                            "{txid}: status {} at {}",
                            r.status,
                            hex::encode(&r.log_position)
                        ))
                    }
                }
                Err(s) => Some(format!("{txid}: {}", cbdc_client::RpcError::from(s))),
            }
        });
    }
    let mut missing = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(m) = r.map_err(|e| e.to_string())? {
            missing.push(m);
        }
    }
    let found = read - missing.len();
    missing.truncate(20);
    Ok(ReadBack {
        read,
        found,
        missing,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The central bank's audit, asked until it balances (at most 30 s: deliveries and
/// checkpoints catch up once the load stops).
async fn audit_balanced(network: &Network) -> Result<bool, String> {
    let mut cb = network.central_bank().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = cb
            .audit(v1::AuditRequest {})
            .await
            .map_err(|s| format!("audit: {}", cbdc_client::RpcError::from(s)))?
            .into_inner();
        let quiet = a
            .ledgers
            .iter()
            .all(|l| l.in_flight_in == "0.00" && l.unacknowledged_out == "0.00");
        if a.balanced && quiet {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The report of a run, with its checks.
pub async fn finish(
    network: &Network,
    args: &LoadArgs,
    prepared: &Prepared,
    run: Run,
) -> Result<Report, String> {
    let keys: Arc<Vec<cbdc_core::PublicKey>> = Arc::new(
        prepared
            .chains
            .iter()
            .map(|c| {
                c[0].witnesses()
                    .first()
                    .map(|w| w.key)
                    .expect("a signed transfer")
            })
            .collect(),
    );
    let stride = run.acknowledged.len().div_ceil(CHECK_MAX).max(1);
    let sample = run
        .acknowledged
        .iter()
        .step_by(stride)
        .map(|(w, txid, position)| (keys[*w], *txid, position.clone()))
        .collect();
    let ReadBack {
        read,
        found,
        missing,
    } = read_back(
        &network.bank(LedgerId(1)).await?,
        Arc::new(Keypair::from_seed(network.authorities[0].seed())),
        &network.file.network,
        LedgerId(1),
        sample,
    )
    .await?;
    let balanced = audit_balanced(network).await?;
    let h = &run.latency_us;
    let committed = run.committed_in_window;
    let mode = format!(
        "{} loop, {}",
        if args.rate == 0 { "closed" } else { "open" },
        if args.batch > 1 {
            format!("batches of {}", args.batch)
        } else {
            "single calls".to_string()
        }
    );
    let server_note = if network.server_pid().is_some() {
        "the devnet process this run started (central bank and ledgers in one process; the generator shares the machine)".to_string()
    } else {
        "not measured: the network was not started by this run".to_string()
    };
    Ok(Report {
        mode,
        wallets: prepared.wallets,
        payees_on_bank_2: prepared.payees_elsewhere,
        transfers_per_wallet: args.transfers_per_wallet,
        batch: args.batch,
        concurrency: args.concurrency,
        offered_rate: args.rate,
        cross_percent: args.cross_percent,
        duration_s: args.duration_s,
        warmup_s: args.warmup().as_secs(),
        setup: BTreeMap::from([
            ("open_wallets_s".to_string(), prepared.open_s),
            ("fund_wallets_s".to_string(), prepared.fund_s),
            ("presign_s".to_string(), prepared.sign_s),
        ]),
        window_s: run.window_s,
        committed,
        transfers_per_s: if run.window_s > 0.0 {
            committed as f64 / run.window_s
        } else {
            0.0
        },
        latency: Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        },
        latency_distribution: QUANTILES
            .iter()
            .map(|&q| (q, ms(h.value_at_quantile(q))))
            .collect(),
        errors: run.errors,
        not_sent: run.not_sent,
        starved: run.starved,
        server: Server {
            cpu_us_per_transfer: run
                .server_cpu_s
                .filter(|_| committed > 0)
                .map(|s| s * 1e6 / committed as f64),
            rss_bytes: run.server_rss_bytes,
            rss_max_bytes: run.server_rss_max_bytes,
            note: server_note,
        },
        timeline: run.timeline,
        checks: Checks {
            acknowledged: run.acknowledged.len(),
            read_back: read,
            found,
            missing,
            audit_balanced: balanced,
        },
    })
}
