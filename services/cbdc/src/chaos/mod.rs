//! `cbdc chaos`: a Jepsen-style bank test. The central bank and two bank ledgers run as
//! separate `cbdc serve` processes, each bank behind loopback proxies this process controls
//! (one in front of it, one on its way to the central bank). Clients pay chains of signed
//! transfers at bank 1 — some to wallets at bank 2, two of which are never opened (payments
//! to them are refused there and reversed) — and retry each with the same txid until its
//! outcome is definite, while a seeded nemesis:
//! - kills a ledger or the central bank with SIGKILL and restarts it on its data;
//! - partitions a bank (both of its proxies cut or stalled);
//! - pauses a process with SIGSTOP long enough for its peers' timeouts, then SIGCONT.
//!
//! Every invocation and completion goes to a history file (JSON lines). After the faults the
//! network is healed and the checker verifies, from the history and the services' own
//! answers: every acknowledged transfer committed at its acknowledged position; no coin
//! spent twice (double spends of already spent coins are tried along the way and must all
//! be refused); nothing in flight and the audit balanced, with issued − redeemed equal to
//! the sum of what the ledgers' signed checkpoints report and to the sum each ledger's log
//! gives when replayed from its transfers alone; every acknowledged redemption reached the
//! central bank, and no other; no service exited on its own.
//!
//! Beside the payments, bank 1's authority sends orders (`operator.rs`): exchanges from its
//! vault into its paying wallets, and redemptions from its vault to the central bank, each
//! sent again with the same request id until its outcome is definite.

mod moves;
mod nemesis;
mod operator;
mod proxy;
mod summary;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cbdc_core::{Amount, Keypair, LedgerId, Lock, Transfer, TransferBuilder, Txid};
use cbdc_load::setup::Prepared;
use cbdc_load::target::Network;
use cbdc_proto::v1;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::devnet::{BankRoute, DevnetProcesses, Routes};
use nemesis::Nemesis;
pub use proxy::{Link, Proxy};
pub use summary::{Summary, write_summary};

/// The `cbdc chaos` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long the nemesis injects faults, in seconds.
    #[arg(long, default_value_t = 300)]
    pub duration_s: u64,
    /// The nemesis's seed (random when not given; the summary names it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Paying wallets at bank 1.
    #[arg(long, default_value_t = 300)]
    pub wallets: usize,
    /// Transfers each wallet's chain holds (enough for the whole run: a chain that ends
    /// leaves its client idle).
    #[arg(long, default_value_t = 3000)]
    pub transfers_per_wallet: usize,
    /// Percent of payments to wallets at bank 2.
    #[arg(long, default_value_t = 25)]
    pub cross_percent: u32,
    /// Clients sending at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Mean pause between two faults, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub fault_every_s: f64,
    /// Where the history, the summary and the services' directory and logs go.
    #[arg(long, default_value = "chaos-run")]
    pub out: PathBuf,
    /// Put every service's data on a filesystem that keeps only what was synced, and add
    /// power losses to the faults: every service killed at once, everything unsynced gone,
    /// all restarted (needs root and /dev/fuse; the data is in memory, not in --out).
    #[arg(long)]
    pub power_loss: bool,
}

/// How long one call may take before it counts as indeterminate (and is sent again).
const CALL_TIMEOUT: Duration = Duration::from_secs(4);
/// Pause before a call whose outcome was indeterminate is sent again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// After the faults, how long in-flight transfers may take to reach a definite outcome.
const DRAIN: Duration = Duration::from_secs(120);
/// After the drain, how long the network may take to settle and balance.
const QUIET: Duration = Duration::from_secs(180);
/// Bank 2's payees that are never opened (payments to them are reversed).
const UNOPENED_PAYEES: usize = 2;
/// One double spend is tried after this many acknowledged transfers.
const DOUBLE_SPEND_EVERY: usize = 20;

/// The history: one JSON object per line, stamped with milliseconds since the start.
#[derive(Clone)]
struct History {
    tx: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
    start: Instant,
}

impl History {
    fn record(&self, mut event: serde_json::Value) {
        event["t_ms"] = json!(self.start.elapsed().as_millis() as u64);
        let _ = self.tx.send(event);
    }
}

/// The work the clients share: each payer's next transfer, when it may be sent.
struct Work {
    queue: Mutex<VecDeque<(usize, usize, Instant)>>,
    /// Transfers invoked and not yet definite, plus those queued.
    open: std::sync::atomic::AtomicUsize,
    /// No new chain step is started after this.
    stop_new: std::sync::atomic::AtomicBool,
    outcomes: Mutex<Outcomes>,
}

#[derive(Default)]
struct Outcomes {
    acknowledged: Vec<(usize, Txid, Vec<u8>)>,
    /// The acknowledged payments to bank 2.
    cross: Vec<Txid>,
    refused: BTreeMap<String, usize>,
    indeterminate: usize,
    double_tried: usize,
    double_refused: usize,
    double_accepted: Vec<String>,
}

/// A transfer spending the coin transfer `i` of payer `w` spent (already spent by it, once
/// that one is acknowledged), all of it back to the payer.
fn double_spend(prepared: &Prepared, key: &Keypair, w: usize, i: usize) -> Option<Transfer> {
    let spent = prepared.chains.transfer(w, i);
    let input = spent.body().inputs.first()?;
    TransferBuilder::new(spent.body().valid_until)
        .input(input.outpoint, input.value)
        .output(LedgerId(1), input.value, Lock::Key(key.public()))
        .memo(b"double spend".to_vec())
        .sign(&[key])
        .ok()
}

async fn client_loop(
    network: Arc<Network>,
    prepared: Arc<Prepared>,
    work: Arc<Work>,
    history: History,
    k: usize,
) {
    use std::sync::atomic::Ordering;
    let mut client: Option<cbdc_client::Ledger> = None;
    loop {
        let item = {
            let mut q = work.queue.lock().expect("queue");
            let now = Instant::now();
            match q.front() {
                Some(&(_, _, due)) if due <= now => q.pop_front(),
                _ => None,
            }
        };
        let Some((w, i, _)) = item else {
            if work.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let transfer = prepared.chains.transfer(w, i);
        let txid = transfer.txid();
        let cross = prepared.chains.is_cross(w, i);
        history.record(json!({"process": k, "type": "invoke", "f": "transfer",
            "payer": w, "i": i, "txid": txid.to_string(), "cross": cross}));
        if client.is_none() {
            client = tokio::time::timeout(CALL_TIMEOUT, network.bank(LedgerId(1)))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let outcome = match client.as_mut() {
            None => Err(cbdc_client::Error::Connect(
                "no connection to bank 1".into(),
            )),
            Some(c) => match tokio::time::timeout(CALL_TIMEOUT, c.submit(&transfer)).await {
                Ok(r) => r,
                Err(_) => Err(cbdc_client::Error::Connect("timed out".into())),
            },
        };
        match outcome {
            Ok(committed) => {
                history.record(json!({"process": k, "type": "ok", "f": "transfer",
                    "payer": w, "i": i, "txid": txid.to_string(),
                    "position": hex::encode(&committed.log_position)}));
                let n = {
                    let mut o = work.outcomes.lock().expect("outcomes");
                    o.acknowledged.push((w, txid, committed.log_position));
                    if cross {
                        o.cross.push(txid);
                    }
                    o.acknowledged.len()
                };
                if n % DOUBLE_SPEND_EVERY == 0
                    && let Some(c) = client.as_mut()
                    && let Some(d) = double_spend(&prepared, &prepared.chains.keys[w], w, i)
                {
                    history.record(json!({"process": k, "type": "invoke", "f": "double_spend",
                        "payer": w, "i": i, "txid": d.txid().to_string()}));
                    if let Ok(r) = tokio::time::timeout(CALL_TIMEOUT, c.submit(&d)).await {
                        let mut o = work.outcomes.lock().expect("outcomes");
                        o.double_tried += 1;
                        match r {
                            Ok(_) => {
                                o.double_accepted.push(d.txid().to_string());
                                history.record(json!({"process": k, "type": "ok",
                                    "f": "double_spend", "txid": d.txid().to_string()}));
                            }
                            Err(e) if !e.is_transient() => {
                                o.double_refused += 1;
                                history.record(json!({"process": k, "type": "fail",
                                    "f": "double_spend", "txid": d.txid().to_string(),
                                    "error": e.to_string()}));
                            }
                            // Indeterminate: not counted either way.
                            Err(_) => o.double_tried -= 1,
                        }
                    }
                }
                if i + 1 < prepared.chains.len(w) && !work.stop_new.load(Ordering::SeqCst) {
                    work.queue
                        .lock()
                        .expect("queue")
                        .push_back((w, i + 1, Instant::now()));
                } else {
                    work.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.is_transient() => {
                history.record(json!({"process": k, "type": "info", "f": "transfer",
                    "payer": w, "i": i, "txid": txid.to_string(), "error": e.to_string()}));
                work.outcomes.lock().expect("outcomes").indeterminate += 1;
                if matches!(e, cbdc_client::Error::Connect(_)) {
                    client = None;
                }
                work.queue
                    .lock()
                    .expect("queue")
                    .push_back((w, i, Instant::now() + RETRY_AFTER));
            }
            Err(e) => {
                let reason = match &e {
                    cbdc_client::Error::Rpc(r) => r.reason.clone(),
                    other => other.to_string(),
                };
                history.record(json!({"process": k, "type": "fail", "f": "transfer",
                    "payer": w, "i": i, "txid": txid.to_string(), "error": e.to_string()}));
                *work
                    .outcomes
                    .lock()
                    .expect("outcomes")
                    .refused
                    .entry(reason)
                    .or_default() += 1;
                // The chain ends here: its later transfers spend this one.
                work.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Reads back every acknowledged transfer in chunks; a chunk whose reads failed for a
/// passing reason (a timeout, a connection) is read again, up to [`READ_TRIES`] times, so
/// only a transfer the ledger answers for as missing or misplaced counts as missing.
pub(crate) async fn read_back_all(
    network: &Network,
    keys: &[cbdc_core::PublicKey],
    acknowledged: &[(usize, Txid, Vec<u8>)],
) -> Result<cbdc_load::report::ReadBack, String> {
    let authority = Arc::new(Keypair::from_seed(network.authorities[0].seed()));
    let client = network.bank(LedgerId(1)).await?;
    let (mut found, mut missing) = (0, Vec::new());
    for chunk in acknowledged.chunks(READ_CHUNK) {
        let items: Vec<_> = chunk
            .iter()
            .map(|(w, txid, position)| (keys[*w], *txid, position.clone()))
            .collect();
        let mut tries = 0;
        let got = loop {
            tries += 1;
            let got = cbdc_load::report::read_back(
                &client,
                Arc::clone(&authority),
                &network.file.network,
                LedgerId(1),
                items.clone(),
            )
            .await?;
            let passing = got.missing.iter().any(|m| {
                m.contains("CANCELLED") || m.contains("UNAVAILABLE") || m.contains("DEADLINE")
            });
            if !passing || tries >= READ_TRIES {
                break got;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        found += got.found;
        missing.extend(got.missing);
    }
    missing.truncate(20);
    Ok(cbdc_load::report::ReadBack {
        read: acknowledged.len(),
        found,
        missing,
    })
}

const READ_CHUNK: usize = 2_000;
const READ_TRIES: u32 = 5;

/// The load generator's arguments for chains of `transfers_per_wallet` on the devnet in
/// `dir`, `cross_percent` of them to bank 2.
pub(crate) fn load_args(
    dir: &std::path::Path,
    transfers_per_wallet: usize,
    cross_percent: u32,
) -> Result<cbdc_load::LoadArgs, String> {
    load_args_with(dir, transfers_per_wallet, cross_percent, 0)
}

/// [`load_args`], with `unopened` of bank 2's payees never opened (payments to them are
/// refused there and reversed).
fn load_args_with(
    dir: &std::path::Path,
    transfers_per_wallet: usize,
    cross_percent: u32,
    unopened: usize,
) -> Result<cbdc_load::LoadArgs, String> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        load: cbdc_load::LoadArgs,
    }
    Wrap::try_parse_from([
        "load".to_string(),
        "--devnet".into(),
        dir.display().to_string(),
        "--transfers-per-wallet".into(),
        transfers_per_wallet.to_string(),
        "--cross-percent".into(),
        cross_percent.to_string(),
        "--unopened-payees".into(),
        unopened.to_string(),
        "--quiet".into(),
    ])
    .map(|w| w.load)
    .map_err(|e| e.to_string())
}

fn free() -> Result<std::net::SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port: {e}"))
}

fn fen(text: &str) -> Result<u64, String> {
    Amount::parse(text)
        .map(Amount::fen)
        .map_err(|e| format!("{text}: {e}"))
}

/// Runs the test; the summary says whether its checks passed.
pub async fn run(args: ChaosArgs, cbdc: PathBuf) -> Result<Summary, String> {
    use std::sync::atomic::Ordering;
    let seed = args.seed.unwrap_or_else(|| rand::thread_rng().r#gen());
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out).map_err(|e| e.to_string())?;
    let dir = out.join("devnet");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }

    // With power losses, the whole devnet lives on a filesystem that keeps only what was
    // synced.
    let power = if args.power_loss {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Some(cbdc_lossyfs::Mount::new(&dir).map_err(|e| {
            format!(
                "mounting the power-loss filesystem on {}: {e} (needs root and /dev/fuse)",
                dir.display()
            )
        })?)
    } else {
        None
    };
    // The proxies first: the configurations name them.
    let banks = 2;
    let central_bank = free()?;
    let mut proxies = Vec::new();
    let mut routes = Routes {
        central_bank,
        banks: Vec::new(),
    };
    for _ in 0..banks {
        let listen = free()?;
        let front = Proxy::start("127.0.0.1:0".parse().expect("address"), listen)
            .await
            .map_err(|e| e.to_string())?;
        let to_cb = Proxy::start("127.0.0.1:0".parse().expect("address"), central_bank)
            .await
            .map_err(|e| e.to_string())?;
        routes.banks.push(BankRoute {
            public: front.listen,
            listen,
            central_bank_via: to_cb.listen,
        });
        proxies.push((front, to_cb));
    }
    let devnet = DevnetProcesses::start_routed(&dir, banks as u32, &cbdc, Some(&routes)).await?;
    if power.is_some() {
        nemesis::sync_tree(&dir)?;
    }
    let network = Arc::new(Network::attach(&dir).await?);

    // Two of bank 2's payees are never opened: payments to them are refused there and
    // reversed, so the run has both ends of a cross-ledger payment to check.
    let load_args = load_args_with(
        &dir,
        args.transfers_per_wallet,
        args.cross_percent,
        UNOPENED_PAYEES,
    )?;
    let prepared = Arc::new(cbdc_load::setup::prepare(&network, &load_args, args.wallets).await?);

    let history_path = out.join("history.jsonl");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let history = History {
        tx,
        start: Instant::now(),
    };
    let writer = {
        let path = history_path.clone();
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(file);
            while let Some(event) = rx.blocking_recv() {
                writeln!(w, "{event}").expect("history");
                if rx.is_empty() {
                    w.flush().expect("history");
                }
            }
            w.flush().expect("history");
        })
    };

    let work = Arc::new(Work {
        queue: Mutex::new(
            (0..prepared.chains.payers())
                .map(|w| (w, 0, Instant::now()))
                .collect(),
        ),
        open: std::sync::atomic::AtomicUsize::new(prepared.chains.payers()),
        stop_new: std::sync::atomic::AtomicBool::new(false),
        outcomes: Mutex::new(Outcomes::default()),
    });
    let mut clients = tokio::task::JoinSet::new();
    for k in 0..args.concurrency {
        clients.spawn(client_loop(
            Arc::clone(&network),
            Arc::clone(&prepared),
            Arc::clone(&work),
            history.clone(),
            k,
        ));
    }

    let orders = tokio::spawn(operator::operator_loop(
        Arc::clone(&network),
        Arc::clone(&prepared),
        Arc::clone(&work),
        history.clone(),
        seed,
        banks as u32,
    ));

    let mut nemesis = Nemesis {
        devnet,
        cbdc,
        banks,
        proxies,
        rng: StdRng::seed_from_u64(seed),
        history: history.clone(),
        faults: BTreeMap::new(),
        power,
    };
    let faults_end = Instant::now() + Duration::from_secs(args.duration_s);
    let mut fault_error = None;
    while Instant::now() < faults_end {
        let gap = nemesis.rng.gen_range(0.2..1.8) * args.fault_every_s;
        tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        if Instant::now() >= faults_end {
            break;
        }
        if let Err(e) = nemesis.one_fault().await {
            fault_error = Some(e);
            break;
        }
    }
    history.record(json!({"process": "nemesis", "type": "info", "f": "stop"}));
    work.stop_new.store(true, Ordering::SeqCst);

    // Heal: every link passes, every process runs.
    for (front, to_cb) in &nemesis.proxies {
        front.set(Link::Pass);
        to_cb.set(Link::Pass);
    }
    for i in 0..=banks {
        nemesis.devnet.signal(i, libc::SIGCONT);
    }
    // The services under test (the gateway, which nothing here calls, is left out).
    let exited: Vec<String> = nemesis
        .devnet
        .not_running()
        .into_iter()
        .filter(|name| !name.starts_with("merchant"))
        .collect();
    let drained = tokio::time::timeout(DRAIN, async {
        while clients.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    clients.abort_all();
    let orders_abort = orders.abort_handle();
    let orders = match tokio::time::timeout(DRAIN, orders).await {
        Ok(Ok(o)) => Some(o),
        _ => {
            orders_abort.abort();
            None
        }
    };
    let faults_ended = Instant::now();

    // The audit, asked until nothing is in flight and it balances.
    let mut cb = network.central_bank().await?;
    let deadline = Instant::now() + QUIET;
    let (audit, quiet_after) = loop {
        let a = cb.audit(v1::AuditRequest {}).await.map(|r| r.into_inner());
        if let Ok(a) = &a {
            let quiet = a
                .ledgers
                .iter()
                .all(|l| l.in_flight_in == "0.00" && l.unacknowledged_out == "0.00");
            if a.balanced && quiet {
                break (a.clone(), Some(faults_ended.elapsed().as_secs_f64()));
            }
        }
        if Instant::now() > deadline {
            break (a.map_err(|s| format!("audit: {s}"))?, None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Independently of the audit's verdict: what the central bank issued and saw redeemed
    // against what the ledgers' own signed checkpoints hold.
    let issued_minus_redeemed = fen(&audit.issued)? as i128 - fen(&audit.redeemed)? as i128;
    let reported: i128 = audit
        .ledgers
        .iter()
        .map(|l| fen(&l.outstanding_reported).map(i128::from))
        .sum::<Result<i128, String>>()?;

    let outcomes = std::mem::take(&mut *work.outcomes.lock().expect("outcomes"));
    let keys: Vec<cbdc_core::PublicKey> =
        prepared.chains.keys.iter().map(Keypair::public).collect();
    let orders_done = orders.is_some();
    let orders = orders.unwrap_or_default();
    let mut to_read = outcomes.acknowledged.clone();
    to_read.extend(orders.exchanges.iter().cloned());
    let read = read_back_all(&network, &keys, &to_read).await?;
    // Each ledger's log, replayed from its transfers alone.
    let mut replayed: i128 = 0;
    let mut replay_problems = Vec::new();
    let mut moves = moves::Moves::default();
    for bank in 1..=banks as u32 {
        match operator::replay(&network, &dir, bank, &mut moves).await {
            Ok(unspent) => replayed += i128::from(unspent),
            Err(e) => replay_problems.push(e),
        }
    }
    // Payment by payment: every move between ledgers credited or reversed exactly once.
    let cross: Vec<(Txid, u32, u32)> = outcomes.cross.iter().map(|t| (*t, 1, 2)).collect();
    let (moves, moves_problems) = moves.check(&cross);
    let redeemed_acknowledged: u64 = orders.redemptions.iter().sum();
    let redeemed_at_central_bank = fen(&audit.redeemed)?;

    let Nemesis {
        devnet,
        faults,
        history: nemesis_history,
        ..
    } = nemesis;
    devnet.stop().await;
    // The history closes when its last writer goes.
    drop((history, nemesis_history));
    let _ = writer.await;

    let mut missing = read.missing;
    missing.extend(replay_problems);
    missing.extend(moves_problems);
    if moves.issued_credited_fen != fen(&audit.issued)? {
        missing.push(format!(
            "the ledgers' logs credit {} of issues; the central bank issued {}",
            Amount::from_fen(moves.issued_credited_fen),
            audit.issued
        ));
    }
    if !orders_done {
        missing.push(format!(
            "orders still not definite {} s after the faults",
            DRAIN.as_secs()
        ));
    }
    if redeemed_acknowledged != redeemed_at_central_bank {
        missing.push(format!(
            "the central bank counts {} redeemed; the acknowledged redemptions returned {}",
            Amount::from_fen(redeemed_at_central_bank),
            Amount::from_fen(redeemed_acknowledged)
        ));
    }
    if replayed != issued_minus_redeemed {
        missing.push(format!(
            "the ledgers' logs replayed give {} unspent; issued − redeemed is {}",
            Amount::from_fen(replayed.max(0) as u64),
            Amount::from_fen(issued_minus_redeemed.max(0) as u64)
        ));
    }
    if !drained {
        missing.push(format!(
            "transfers still not definite {} s after the faults",
            DRAIN.as_secs()
        ));
    }
    if let Some(e) = fault_error {
        missing.push(format!("the nemesis could not restart a service: {e}"));
    }
    missing.extend(
        outcomes
            .double_accepted
            .iter()
            .map(|t| format!("double spend {t} accepted")),
    );
    let summary = Summary {
        seed,
        duration_s: args.duration_s,
        transfers_acknowledged: outcomes.acknowledged.len(),
        cross_ledger_acknowledged: outcomes.cross.len(),
        moves,
        transfers_refused: outcomes.refused.values().sum(),
        indeterminate_calls: outcomes.indeterminate + orders.indeterminate,
        double_spends_tried: outcomes.double_tried,
        double_spends_refused: outcomes.double_refused,
        exchanges_acknowledged: orders.exchanges.len(),
        redemptions_acknowledged: (redeemed_acknowledged / fen(operator::ORDER_AMOUNT)?) as usize,
        redeemed_acknowledged: Amount::from_fen(redeemed_acknowledged).to_string(),
        redeemed_at_central_bank: Amount::from_fen(redeemed_at_central_bank).to_string(),
        orders_refused: orders.refused,
        replayed_unspent: Amount::from_fen(replayed.max(0) as u64).to_string(),
        crashes: faults.get("crash").copied().unwrap_or(0),
        partitions: faults.get("partition").copied().unwrap_or(0),
        pauses: faults.get("pause").copied().unwrap_or(0),
        power_losses: faults.get("power_loss").copied().unwrap_or(0),
        faults,
        read_back_found: read.found,
        audit_balanced: audit.balanced,
        issued_minus_redeemed: Amount::from_fen(issued_minus_redeemed.max(0) as u64).to_string(),
        sum_reported_by_ledgers: Amount::from_fen(reported.max(0) as u64).to_string(),
        quiet_after_s: quiet_after,
        exited_on_their_own: exited,
        refusals: outcomes.refused,
        history: history_path,
        pass: false,
        problems: missing,
    };
    let pass = summary.problems.is_empty()
        && summary.read_back_found
            == summary.transfers_acknowledged + summary.exchanges_acknowledged
        && summary.audit_balanced
        && summary.quiet_after_s.is_some()
        && issued_minus_redeemed == reported
        && summary.double_spends_refused == summary.double_spends_tried
        && summary.exited_on_their_own.is_empty();
    let summary = Summary { pass, ..summary };
    write_summary(&out, &summary)?;
    Ok(summary)
}
