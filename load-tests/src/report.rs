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

/// One server process's cost over the window.
#[derive(Clone, Debug, Serialize)]
pub struct Server {
    pub name: String,
    pub pid: u32,
    pub cpu_s: f64,
    /// CPU per transfer committed in the window (all threads of the process).
    pub cpu_us_per_transfer: f64,
    pub rss_bytes: u64,
    pub rss_max_bytes: u64,
}

/// Cross-ledger payments: acknowledged by the payer's ledger, then settled by the central
/// bank and credited by the payee's.
#[derive(Clone, Debug, Serialize)]
pub struct Cross {
    pub committed_in_window: u64,
    /// Acknowledged per second by the payer's ledger.
    pub acknowledged_per_s: f64,
    /// After the window's last answer, how long until the payee's ledger had credited every
    /// one (the central bank's audit shows nothing in flight); `None` if not within the wait.
    pub delivered_after_s: Option<f64>,
    /// End to end: those payments over the window plus that time.
    pub delivered_per_s: Option<f64>,
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
    pub payers: usize,
    pub payees: crate::Payees,
    pub zipf_exponent: Option<f64>,
    /// The share of the window's payments that went to wallet 0 (the hot merchant).
    pub wallet_0_share: f64,
    pub sign: crate::Signing,
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
    /// Each server process's cost (when the services run as processes of their own here).
    pub servers: Vec<Server>,
    /// What the server figures are of, or why there are none.
    pub server_note: String,
    /// Bank 1's journal fsyncs per second in the window, and transfers per fsync.
    pub fsyncs_per_s: Option<f64>,
    pub transfers_per_fsync: Option<f64>,
    /// Intra-ledger payments committed per second.
    pub intra_per_s: f64,
    pub cross: Option<Cross>,
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
        if self.servers.is_empty() {
            lines.push(format!("servers: {}", self.server_note));
        }
        for s in &self.servers {
            lines.push(format!(
                "{:<12} {:>7.1} µs CPU per transfer, RSS {:.0} MiB (max {:.0} MiB)",
                s.name,
                s.cpu_us_per_transfer,
                s.rss_bytes as f64 / 1048576.0,
                s.rss_max_bytes as f64 / 1048576.0,
            ));
        }
        if let (Some(f), Some(t)) = (self.fsyncs_per_s, self.transfers_per_fsync) {
            lines.push(format!(
                "bank 1 fsyncs: {f:.0}/s, {t:.1} transfers per fsync"
            ));
        }
        if let Some(c) = &self.cross {
            lines.push(format!(
                "intra-ledger {:.0}/s; cross-ledger {:.0}/s acknowledged, {} end to end (all credited {} after the window)",
                self.intra_per_s,
                c.acknowledged_per_s,
                c.delivered_per_s
                    .map_or_else(|| "not measured".into(), |r| format!("{r:.0}/s")),
                c.delivered_after_s
                    .map_or_else(|| "not".into(), |t| format!("{t:.1} s")),
            ));
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

/// How long after the window the network waits for deliveries and checkpoints to catch up.
pub const QUIET_WAIT: Duration = Duration::from_secs(180);

/// The central bank's audit, asked until it balances with nothing in flight (at most
/// [`QUIET_WAIT`]); when it did, how long after `since` that was.
async fn audit_balanced(network: &Network, since: Instant) -> Result<Option<Duration>, String> {
    let mut cb = network.central_bank().await?;
    let deadline = Instant::now() + QUIET_WAIT;
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
            return Ok(Some(since.elapsed()));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report of a run, with its checks.
pub async fn finish(
    network: &Network,
    args: &LoadArgs,
    prepared: &Prepared,
    run: Run,
) -> Result<Report, String> {
    // The audit first: how long the network takes to credit every cross-ledger payment.
    let quiet_after = audit_balanced(network, run.ended).await?;
    let keys: Vec<cbdc_core::PublicKey> =
        prepared.chains.keys.iter().map(Keypair::public).collect();
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
    let server_note = if run.servers.is_empty() {
        "not measured: the network's services do not run as processes of their own on this machine"
            .to_string()
    } else {
        "each service in a process of its own (cbdc serve); the load generator shares the machine"
            .to_string()
    };
    let per_s = |n: u64| {
        if run.window_s > 0.0 {
            n as f64 / run.window_s
        } else {
            0.0
        }
    };
    let cross = (args.cross_percent > 0).then(|| {
        let delivered = quiet_after.map(|d| d.as_secs_f64());
        Cross {
            committed_in_window: run.cross_in_window,
            acknowledged_per_s: per_s(run.cross_in_window),
            delivered_after_s: delivered,
            delivered_per_s: delivered
                .map(|d| run.cross_in_window as f64 / (run.window_s + d).max(f64::EPSILON)),
        }
    });
    Ok(Report {
        mode,
        wallets: prepared.wallets,
        payers: prepared.chains.payers(),
        payees: args.payees,
        zipf_exponent: (args.payees == crate::Payees::Zipf).then_some(args.zipf_exponent),
        wallet_0_share: run.to_wallet_0_in_window as f64 / committed.max(1) as f64,
        sign: args.sign,
        payees_on_bank_2: prepared.payees_elsewhere,
        transfers_per_wallet: prepared.chains.plan.first().map_or(0, Vec::len),
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
        transfers_per_s: per_s(committed),
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
        servers: run
            .servers
            .iter()
            .map(|u| Server {
                name: u.name.clone(),
                pid: u.pid,
                cpu_s: u.cpu_s,
                cpu_us_per_transfer: if committed > 0 {
                    u.cpu_s * 1e6 / committed as f64
                } else {
                    0.0
                },
                rss_bytes: u.rss_bytes,
                rss_max_bytes: u.rss_max_bytes,
            })
            .collect(),
        server_note,
        fsyncs_per_s: run.fsyncs.map(|f| f / run.window_s.max(f64::EPSILON)),
        transfers_per_fsync: run
            .fsyncs
            .filter(|&f| f > 0.0)
            .map(|f| committed as f64 / f),
        intra_per_s: per_s(committed - run.cross_in_window),
        cross,
        timeline: run.timeline,
        checks: Checks {
            acknowledged: run.acknowledged.len(),
            read_back: read,
            found,
            missing,
            audit_balanced: quiet_after.is_some(),
        },
    })
}

/// One count of a scaling run.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingPoint {
    pub wallets: usize,
    pub transfers_per_s: f64,
    pub p99_ms: f64,
    /// Bank 1's process: RSS at the window's end and CPU per transfer.
    pub bank_rss_bytes: Option<u64>,
    pub bank_cpu_us_per_transfer: Option<f64>,
    pub checks_pass: bool,
}

/// A scaling run: the same load against networks of more and more wallets.
#[derive(Clone, Debug, Serialize)]
pub struct Scaling {
    pub mode: String,
    pub points: Vec<ScalingPoint>,
    /// Transfers/s of the largest count over that of the smallest.
    pub throughput_ratio: f64,
}

impl Scaling {
    pub fn of(reports: &[Report]) -> Scaling {
        let points: Vec<ScalingPoint> = reports
            .iter()
            .map(|r| {
                let bank = r.servers.iter().find(|s| s.name == "bank 1");
                ScalingPoint {
                    wallets: r.wallets,
                    transfers_per_s: r.transfers_per_s,
                    p99_ms: r.latency.p99_ms,
                    bank_rss_bytes: bank.map(|b| b.rss_bytes),
                    bank_cpu_us_per_transfer: bank.map(|b| b.cpu_us_per_transfer),
                    checks_pass: r.checks_pass(),
                }
            })
            .collect();
        let ratio = match (points.first(), points.last()) {
            (Some(a), Some(b)) if a.transfers_per_s > 0.0 => b.transfers_per_s / a.transfers_per_s,
            _ => 0.0,
        };
        Scaling {
            mode: reports.first().map_or_else(String::new, |r| r.mode.clone()),
            points,
            throughput_ratio: ratio,
        }
    }

    pub fn summary(&self) -> Vec<String> {
        let mut lines = vec![format!("scaling, {}:", self.mode)];
        for p in &self.points {
            lines.push(format!(
                "  {:>9} wallets: {:>8.0} transfers/s, p99 {:>8.1} ms, bank 1 RSS {}, checks {}",
                p.wallets,
                p.transfers_per_s,
                p.p99_ms,
                p.bank_rss_bytes.map_or_else(
                    || "-".into(),
                    |b| format!("{:.0} MiB", b as f64 / 1048576.0)
                ),
                if p.checks_pass { "pass" } else { "FAIL" }
            ));
        }
        lines.push(format!(
            "  largest over smallest: {:.2}× the transfers/s",
            self.throughput_ratio
        ));
        lines
    }
}
