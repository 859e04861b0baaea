//! `cbdc overload`: abusive clients against a bank ledger in its own process, beside a
//! well-behaved one whose latency is measured before and during the abuse.
//!
//! - **Well-behaved:** a few wallets paying single signed transfers at a modest paced rate,
//!   each sent again with the same txid while its outcome is unknown.
//! - **Watchers:** thousands of `WatchWallet` streams, eight per wallet and more (the ninth
//!   must be refused), opened on as few connections as the ledger allows.
//! - **Flood:** maximum-size `SubmitTransfers` batches sent back to back on several
//!   connections, paying attention to no refusal and no retry advice.
//! - **Slowloris:** TCP connections that send nothing, reopened as soon as they are closed,
//!   more than the ledger accepts.
//!
//! It reports the well-behaved client's p50/p99 alone and under abuse (the goal: at most 5×;
//! a measured figure, not a check), what each abuser was answered (gRPC code, reason,
//! whether retry advice came with it), the ledger's peak resident memory, and checks that
//! every acknowledged transfer is committed at its position, no well-behaved transfer was
//! refused, every overload refusal carried retry advice, the audit balances and the ledger
//! is still running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cbdc_core::{Keypair, LedgerId, Transfer, Txid};
use cbdc_load::target::Network;
use cbdc_proto::v1;
use serde::Serialize;

use crate::devnet::DevnetProcesses;

mod abusers;

use abusers::{Refusals, flood, slowloris, watcher};

/// The `cbdc overload` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct OverloadArgs {
    /// Length of each measured phase (alone, then under abuse), in seconds.
    #[arg(long, default_value_t = 30)]
    pub phase_s: u64,
    /// The well-behaved client's rate, transfers per second (single calls).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// The well-behaved client's wallets.
    #[arg(long, default_value_t = 400)]
    pub wallets: usize,
    /// Watch streams the watcher tries to open (eight per wallet are allowed).
    #[arg(long, default_value_t = 3600)]
    pub watch_streams: usize,
    /// Connections the flood sends maximum-size batches on.
    #[arg(long, default_value_t = 4)]
    pub flood_connections: usize,
    /// Batches the flood keeps in flight on each connection (twice what the ledger admits
    /// from one connection, by default).
    #[arg(long, default_value_t = 16)]
    pub flood_in_flight: usize,
    /// Idle connections the slowloris client keeps open (or tries to).
    #[arg(long, default_value_t = 3000)]
    pub idle_connections: usize,
    /// The ledger's connection cap for the run (below the slowloris count, to see it hold).
    #[arg(long, default_value_t = 2000)]
    pub connections_max: usize,
    /// Pin the ledger to CPU 0 and everything else (the central bank, the gateway, this
    /// process's clients) to CPU 1, as if the clients ran on other machines: on a shared
    /// machine an abusive client otherwise takes the ledger's CPU directly, which no server
    /// can prevent. Both phases run the same way. `--pin false` shares every CPU.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pin: bool,
    /// Where the summary and the devnet's data and logs go.
    #[arg(long, default_value = "overload-run")]
    pub out: PathBuf,
}

/// What a run measured and what its checks found.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Whether the ledger had CPU 0 to itself (see [`OverloadArgs::pin`]).
    pub pinned: bool,
    pub alone: Latency,
    pub under_abuse: Latency,
    /// p99 under abuse ÷ p99 alone.
    pub p99_ratio: f64,
    /// Whether that is at most 5 (the goal; a measured figure, not one of the checks).
    pub p99_goal_met: bool,
    pub watch_streams_open: usize,
    pub watch_entries_received: usize,
    pub watch_refusals: BTreeMap<String, usize>,
    pub flood_transfers_sent: usize,
    pub flood_transfers_committed: usize,
    pub flood_refusals: BTreeMap<String, usize>,
    pub idle_connections_opened: usize,
    pub idle_closed_on_arrival: usize,
    pub idle_closed_later: usize,
    pub idle_connect_errors: usize,
    /// Overload refusals (RESOURCE_EXHAUSTED, UNAVAILABLE) that came without retry advice.
    pub overload_without_retry_advice: usize,
    pub ledger_peak_rss_bytes: u64,
    pub ledger_rss_before_abuse_bytes: u64,
    pub acknowledged: usize,
    pub read_back_found: usize,
    pub audit_balanced: bool,
    pub ledger_running: bool,
    pub problems: Vec<String>,
    pub pass: bool,
}

/// The well-behaved client's figures in one phase.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Latency {
    pub acknowledged: usize,
    pub sent_again: usize,
    pub refused: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "overload ({}): well-behaved p50/p99 {:.2}/{:.2} ms alone, {:.2}/{:.2} ms under abuse (×{:.2}, goal ≤ ×5 {}); {} + {} acknowledged, {} sent again",
                if self.pinned {
                    "ledger on CPU 0, clients on CPU 1"
                } else {
                    "all sharing the CPUs"
                },
                self.alone.p50_ms,
                self.alone.p99_ms,
                self.under_abuse.p50_ms,
                self.under_abuse.p99_ms,
                self.p99_ratio,
                if self.p99_goal_met { "met" } else { "not met" },
                self.alone.acknowledged,
                self.under_abuse.acknowledged,
                self.alone.sent_again + self.under_abuse.sent_again
            ),
            format!(
                "  watchers: {} streams open, {} entries received, refused {:?}",
                self.watch_streams_open, self.watch_entries_received, self.watch_refusals
            ),
            format!(
                "  flood: {} transfers sent in maximum-size batches, {} committed, refused {:?}",
                self.flood_transfers_sent, self.flood_transfers_committed, self.flood_refusals
            ),
            format!(
                "  slowloris: {} connections opened, {} closed on arrival, {} closed later, {} connect errors",
                self.idle_connections_opened,
                self.idle_closed_on_arrival,
                self.idle_closed_later,
                self.idle_connect_errors
            ),
            format!(
                "  ledger: peak RSS {:.0} MiB ({:.0} MiB before the abuse); running after: {}",
                self.ledger_peak_rss_bytes as f64 / 1048576.0,
                self.ledger_rss_before_abuse_bytes as f64 / 1048576.0,
                self.ledger_running
            ),
            format!(
                "  read back {} of {} acknowledged; audit balanced {}; overload refusals without retry advice {}; checks: {}{}",
                self.read_back_found,
                self.acknowledged,
                self.audit_balanced,
                self.overload_without_retry_advice,
                if self.pass { "pass" } else { "FAIL" },
                if self.problems.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", self.problems)
                }
            ),
        ]
    }
}

/// The resident-memory high-water mark of `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// What the well-behaved clients share.
struct Polite {
    /// Per wallet, its next transfer.
    next: Vec<AtomicUsize>,
    latencies: Mutex<Vec<f64>>,
    acknowledged: Mutex<Vec<(usize, Txid, Vec<u8>)>>,
    sent_again: AtomicUsize,
    refused: AtomicUsize,
}

/// One well-behaved client: pays from its share of the wallets at `rate` per second until
/// `until`, one call at a time.
async fn polite_client(
    mut client: cbdc_client::Ledger,
    chains: Arc<cbdc_load::setup::Chains>,
    polite: Arc<Polite>,
    wallets: Vec<usize>,
    rate: f64,
    until: Instant,
) -> Result<(), String> {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut due = Instant::now();
    let mut k = 0;
    while Instant::now() < until {
        let w = wallets[k % wallets.len()];
        k += 1;
        let i = polite.next[w].load(Ordering::Relaxed);
        if i >= chains.len(w) {
            if wallets
                .iter()
                .all(|&w| polite.next[w].load(Ordering::Relaxed) >= chains.len(w))
            {
                return Err("the well-behaved wallets' chains ran out".into());
            }
            continue;
        }
        tokio::time::sleep_until(due.into()).await;
        due += gap;
        let t = chains.transfer(w, i);
        let started = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), client.submit(&t)).await {
                Ok(Ok(committed)) => {
                    let ms = started.elapsed().as_secs_f64() * 1e3;
                    polite.latencies.lock().expect("latencies").push(ms);
                    polite.acknowledged.lock().expect("acknowledged").push((
                        w,
                        t.txid(),
                        committed.log_position,
                    ));
                    polite.next[w].store(i + 1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(e)) if !e.is_transient() => {
                    polite.refused.fetch_add(1, Ordering::Relaxed);
                    polite.next[w].store(usize::MAX, Ordering::Relaxed);
                    break;
                }
                _ => {
                    polite.sent_again.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    Ok(())
}

/// Runs the well-behaved clients for `length`; their figures for the phase.
async fn polite_phase(
    clients: &[cbdc_client::Ledger],
    chains: &Arc<cbdc_load::setup::Chains>,
    polite: &Arc<Polite>,
    wallets: usize,
    rate: u32,
    length: Duration,
) -> Result<Latency, String> {
    let (before_ack, before_again, before_refused) = (
        polite.acknowledged.lock().expect("ack").len(),
        polite.sent_again.load(Ordering::Relaxed),
        polite.refused.load(Ordering::Relaxed),
    );
    polite.latencies.lock().expect("latencies").clear();
    let until = Instant::now() + length;
    let mut running = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        let mine: Vec<usize> = (c..wallets).step_by(clients.len()).collect();
        running.spawn(polite_client(
            client.clone(),
            Arc::clone(chains),
            Arc::clone(polite),
            mine,
            f64::from(rate) / clients.len() as f64,
            until,
        ));
    }
    while let Some(done) = running.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let mut l = polite.latencies.lock().expect("latencies").clone();
    l.sort_by(f64::total_cmp);
    Ok(Latency {
        acknowledged: polite.acknowledged.lock().expect("ack").len() - before_ack,
        sent_again: polite.sent_again.load(Ordering::Relaxed) - before_again,
        refused: polite.refused.load(Ordering::Relaxed) - before_refused,
        p50_ms: quantile(&l, 0.50),
        p99_ms: quantile(&l, 0.99),
        max_ms: l.last().copied().unwrap_or(0.0),
    })
}

/// Pins every thread of process `pid` to CPU `cpu`.
fn pin(pid: u32, cpu: usize) -> Result<(), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: a zeroed cpu_set_t is an empty set; the calls read and write only it.
        let ok = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if ok != 0 {
            return Err(format!(
                "pinning thread {tid} of {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Sets `connections_max` in bank 1's configuration file.
fn cap_connections(dir: &std::path::Path, max: usize) -> Result<(), String> {
    let path = dir.join("bank-1.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut config: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    config.insert("connections_max".into(), toml::Value::Integer(max as i64));
    std::fs::write(&path, config.to_string()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the test; the summary says whether its checks passed.
pub async fn run(args: OverloadArgs, cbdc: PathBuf) -> Result<Summary, String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out).map_err(|e| e.to_string())?;
    let dir = out.join("devnet");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut devnet = DevnetProcesses::start(&dir, 1, &cbdc).await?;
    // Bank 1 again, with the run's connection cap.
    devnet.kill(1).await;
    cap_connections(&dir, args.connections_max)?;
    devnet.restart(1, &cbdc).await?;
    let ledger_pid = devnet.processes()[1].1.ok_or("bank 1 is not running")?;
    let pinned = args.pin && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if pinned {
        for (name, pid, _) in devnet.processes() {
            let Some(pid) = pid else { continue };
            pin(pid, if name == "bank 1" { 0 } else { 1 })?;
        }
        pin(std::process::id(), 1)?;
    }
    // The well-behaved clients run on a runtime of their own, so the abusers' tasks in this
    // process do not delay them.
    let polite_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("well-behaved")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let network = Arc::new(Network::attach(&dir).await?);

    let phase = Duration::from_secs(args.phase_s);
    let max_batch = cbdc_ledger::config::MAX_BATCH_DEFAULT;
    let per_wallet = (args.rate as u64 * args.phase_s * 2 / args.wallets as u64 + 8) as usize;
    let load_args = crate::chaos::load_args(&dir, per_wallet.max(FLOOD_BATCHES), 0)?;
    let prepared =
        cbdc_load::setup::prepare(&network, &load_args, args.wallets + max_batch).await?;
    let chains = Arc::clone(&prepared.chains);
    let flood_batches: Arc<Vec<Vec<Transfer>>> = Arc::new(
        (0..FLOOD_BATCHES)
            .map(|j| {
                (args.wallets..args.wallets + max_batch)
                    .map(|w| chains.transfer(w, j))
                    .collect()
            })
            .collect(),
    );
    let polite = Arc::new(Polite {
        next: (0..args.wallets).map(|_| AtomicUsize::new(0)).collect(),
        latencies: Mutex::new(Vec::new()),
        acknowledged: Mutex::new(Vec::new()),
        sent_again: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
    });

    // The well-behaved clients connect once, as a wallet app keeps its connection.
    let clients = {
        let network = Arc::clone(&network);
        polite_runtime
            .spawn(async move {
                let mut clients = Vec::new();
                for _ in 0..POLITE_CLIENTS {
                    clients.push(network.bank(LedgerId(1)).await?);
                }
                Ok::<_, String>(clients)
            })
            .await
            .map_err(|e| e.to_string())??
    };
    let clients = Arc::new(clients);
    let phase_on_own_runtime = || {
        let (clients, chains, polite) = (
            Arc::clone(&clients),
            Arc::clone(&chains),
            Arc::clone(&polite),
        );
        let (wallets, rate) = (args.wallets, args.rate);
        polite_runtime.spawn(async move {
            polite_phase(&clients, &chains, &polite, wallets, rate, phase).await
        })
    };
    // Phase 1: alone.
    let alone = phase_on_own_runtime().await.map_err(|e| e.to_string())??;
    let rss_before = peak_rss(ledger_pid).unwrap_or(0);

    // Phase 2: the abusers start, watchers first (they need connections the slowloris
    // client would otherwise take), then the flood and the slowloris.
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicUsize::new(0));
    let watchers_opened = Arc::new(AtomicBool::new(false));
    let watch_keys: Vec<Keypair> = chains.keys[..args.wallets]
        .iter()
        .map(|k| Keypair::from_seed(k.seed()))
        .collect();
    let watcher_task = tokio::spawn(watcher(
        Arc::clone(&network),
        watch_keys,
        args.watch_streams,
        Arc::clone(&stop),
        Arc::clone(&received),
        Arc::clone(&watchers_opened),
    ));
    // The watchers open their streams first (within a bound), then the others start.
    let opening = Instant::now();
    while !watchers_opened.load(Ordering::Relaxed) && opening.elapsed() < WATCH_OPENING_MAX {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next_batch = Arc::new(AtomicUsize::new(0));
    let floods: Vec<_> = (0..args.flood_connections)
        .map(|_| {
            tokio::spawn(flood(
                Arc::clone(&network),
                Arc::clone(&flood_batches),
                Arc::clone(&next_batch),
                args.flood_in_flight,
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loris = tokio::spawn(slowloris(
        network.file.banks[0],
        args.idle_connections,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let under_abuse = phase_on_own_runtime().await.map_err(|e| e.to_string())??;
    polite_runtime.shutdown_background();
    stop.store(true, Ordering::Relaxed);
    let (watch_open, watch_refusals) = watcher_task.await.map_err(|e| e.to_string())?;
    let mut flood_refusals = Refusals::default();
    let (mut flood_sent, mut flood_committed) = (0, 0);
    for f in floods {
        let (s, c, r) = f.await.map_err(|e| e.to_string())?;
        flood_sent += s;
        flood_committed += c;
        for (k, n) in r.by_kind {
            *flood_refusals.by_kind.entry(k).or_default() += n;
        }
        flood_refusals.without_advice += r.without_advice;
    }
    let (opened, on_arrival, later, connect_errors) = loris.await.map_err(|e| e.to_string())?;
    let peak = peak_rss(ledger_pid).unwrap_or(0);
    let running = devnet.not_running().is_empty();

    // The checks: every acknowledged transfer where it was acknowledged; the audit.
    let acknowledged = std::mem::take(&mut *polite.acknowledged.lock().expect("ack"));
    let keys: Vec<cbdc_core::PublicKey> = chains.keys.iter().map(Keypair::public).collect();
    let read = crate::chaos::read_back_all(&network, &keys, &acknowledged).await?;
    let mut cb = network.central_bank().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let balanced = loop {
        let a = cb.audit(v1::AuditRequest {}).await.map(|r| r.into_inner());
        if let Ok(a) = &a
            && a.balanced
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    devnet.stop().await;

    let mut problems = read.missing;
    if alone.refused + under_abuse.refused > 0 {
        problems.push(format!(
            "{} well-behaved transfers refused",
            alone.refused + under_abuse.refused
        ));
    }
    let without_advice = watch_refusals.without_advice + flood_refusals.without_advice;
    let p99_ratio = if alone.p99_ms > 0.0 {
        under_abuse.p99_ms / alone.p99_ms
    } else {
        f64::INFINITY
    };
    let summary = Summary {
        pinned,
        p99_ratio,
        p99_goal_met: p99_ratio <= 5.0,
        watch_streams_open: watch_open,
        watch_entries_received: received.load(Ordering::Relaxed),
        watch_refusals: watch_refusals.by_kind,
        flood_transfers_sent: flood_sent,
        flood_transfers_committed: flood_committed,
        flood_refusals: flood_refusals.by_kind,
        idle_connections_opened: opened,
        idle_closed_on_arrival: on_arrival,
        idle_closed_later: later,
        idle_connect_errors: connect_errors,
        overload_without_retry_advice: without_advice,
        ledger_peak_rss_bytes: peak,
        ledger_rss_before_abuse_bytes: rss_before,
        acknowledged: acknowledged.len(),
        read_back_found: read.found,
        audit_balanced: balanced,
        ledger_running: running,
        alone,
        under_abuse,
        problems,
        pass: false,
    };
    let pass = summary.problems.is_empty()
        && summary.read_back_found == summary.acknowledged
        && summary.audit_balanced
        && summary.ledger_running
        && summary.overload_without_retry_advice == 0;
    let summary = Summary { pass, ..summary };
    crate::chaos::write_summary(&out, &summary)?;
    Ok(summary)
}

/// How long the watcher may take to open its streams before the other abusers start.
const WATCH_OPENING_MAX: Duration = Duration::from_secs(60);
/// Well-behaved clients, each on a connection of its own.
const POLITE_CLIENTS: usize = 8;
/// Batches of the flood's chains (each as large as the ledger takes).
const FLOOD_BATCHES: usize = 32;
