//! The timed window: presigned transfers sent closed loop (a fixed number of calls in
//! flight) or open loop (calls started on a fixed schedule whatever the answers, latency
//! measured from the intended start), batches or single calls.
//!
//! A wallet's transfers form a chain (each spends the change of the one before), so a
//! wallet is handed out again only once its last transfer committed: the ready queue holds
//! the wallets whose next transfer may be sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cbdc_core::{LedgerId, Transfer, Txid};
use hdrhistogram::Histogram;

use crate::LoadArgs;
use crate::setup::{Chains, Prepared};
use crate::target::{Network, metric, process_usage, scrape};

/// Calls an open loop keeps in flight at most; a call due when they are all taken is not
/// sent and counted as `not_sent` (the server fell behind the offered rate).
pub const OPEN_LOOP_IN_FLIGHT_MAX: usize = 4096;
/// Bank 1's journal fsyncs, as its metrics name them.
pub const FSYNCS: &str = "cbdc_ledger_store_fsyncs_total";
/// Connections the generator spreads its calls over, at most.
const CONNECTIONS_MAX: usize = 8;

/// One second of the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Second {
    pub second: u64,
    pub committed: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub in_window: bool,
}

/// One server process's usage over the window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Usage {
    pub name: String,
    pub pid: u32,
    /// CPU seconds (user + system) spent in the window.
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub rss_max_bytes: u64,
}

/// What the sampler read of one process: CPU at the window's start, the last (CPU, RSS)
/// read, the largest RSS.
#[derive(Clone, Copy, Debug, Default)]
struct Sampled {
    cpu_at_start: Option<f64>,
    last: Option<(f64, u64)>,
    rss_max: u64,
}

/// What the timed window measured.
pub struct Run {
    /// Latency of each transfer in the window, microseconds (a batch's latency counts once
    /// per transfer in it).
    pub latency_us: Histogram<u64>,
    pub committed_in_window: u64,
    /// Of those, cross-ledger payments.
    pub cross_in_window: u64,
    /// Of those, payments to wallet 0 (the hot merchant of a Zipf law).
    pub to_wallet_0_in_window: u64,
    pub window_s: f64,
    /// When the window ended (the last answer).
    pub ended: Instant,
    pub errors: BTreeMap<String, u64>,
    pub not_sent: u64,
    pub starved: u64,
    pub timeline: Vec<Second>,
    /// Every acknowledged transfer: its payer wallet, txid and log position.
    pub acknowledged: Vec<(usize, Txid, Vec<u8>)>,
    /// Each server process's usage (when they run as processes of their own here).
    pub servers: Vec<Usage>,
    /// Journal fsyncs of bank 1 in the window, if its metrics say.
    pub fsyncs: Option<f64>,
}

struct State {
    ready: VecDeque<(usize, usize)>,
    latency_us: Histogram<u64>,
    per_second: BTreeMap<u64, (u64, u64, Histogram<u64>)>,
    committed_in_window: u64,
    cross_in_window: u64,
    to_wallet_0_in_window: u64,
    errors: BTreeMap<String, u64>,
    acknowledged: Vec<(usize, Txid, Vec<u8>)>,
    not_sent: u64,
    starved: u64,
    /// Transfers neither committed nor given up on (a failed transfer gives up the rest of
    /// its chain): the run ends early when none are left.
    remaining: usize,
    last_done: Instant,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

struct Shared {
    state: Mutex<State>,
    start: Instant,
    warmup: Duration,
    chains: Arc<Chains>,
}

impl Shared {
    fn done(&self) -> bool {
        self.state.lock().expect("state").remaining == 0
    }

    fn take(&self, n: usize) -> Vec<(usize, usize)> {
        let mut s = self.state.lock().expect("state");
        let n = n.min(s.ready.len());
        s.ready.drain(..n).collect()
    }

    /// Records the outcome of one call started (or due) at `intended`.
    fn record(
        &self,
        intended: Instant,
        items: &[(usize, usize)],
        txids: &[Txid],
        outcomes: Vec<Result<Vec<u8>, String>>,
    ) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(intended).as_micros().max(1) as u64;
        let in_window = intended >= self.start + self.warmup;
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut s = self.state.lock().expect("state");
        s.last_done = now;
        for ((&(w, i), &txid), outcome) in items.iter().zip(txids).zip(outcomes) {
            let entry = s
                .per_second
                .entry(second)
                .or_insert_with(|| (0, 0, histogram()));
            match outcome {
                Ok(position) => {
                    entry.0 += 1;
                    let _ = entry.2.record(latency);
                    if in_window {
                        s.committed_in_window += 1;
                        if self.chains.is_cross(w, i) {
                            s.cross_in_window += 1;
                        }
                        if self.chains.pays_wallet_0(w, i) {
                            s.to_wallet_0_in_window += 1;
                        }
                        let _ = s.latency_us.record(latency);
                    }
                    s.acknowledged.push((w, txid, position));
                    if i + 1 < self.chains.len(w) {
                        s.ready.push_back((w, i + 1));
                    }
                    s.remaining -= 1;
                }
                Err(reason) => {
                    entry.1 += 1;
                    *s.errors.entry(reason).or_default() += 1;
                    // The chain is broken here: the wallet's later transfers spend this one.
                    s.remaining -= self.chains.len(w) - i;
                }
            }
        }
    }
}

/// Sends the transfers of `items` (signing them first when signing live) and records the
/// outcomes against `intended`.
async fn send(
    shared: &Shared,
    client: &mut cbdc_client::Ledger,
    intended: Instant,
    items: &[(usize, usize)],
    batch: bool,
) {
    let transfers: Vec<Transfer> = items
        .iter()
        .map(|&(w, i)| shared.chains.transfer(w, i))
        .collect();
    let txids: Vec<Txid> = transfers.iter().map(Transfer::txid).collect();
    let outcomes = submit(client, &transfers, batch).await;
    shared.record(intended, items, &txids, outcomes);
}

async fn submit(
    client: &mut cbdc_client::Ledger,
    transfers: &[Transfer],
    batch: bool,
) -> Vec<Result<Vec<u8>, String>> {
    if !batch {
        return vec![match client.submit(&transfers[0]).await {
            Ok(c) => Ok(c.log_position),
            Err(cbdc_client::Error::Rpc(e)) => Err(e.reason.clone()),
            Err(e) => Err(format!("CLIENT: {e}")),
        }];
    }
    match client.submit_many_with(transfers, false).await {
        Ok(rows) => rows
            .into_iter()
            .map(|r| r.map(|c| c.log_position).map_err(|e| e.reason))
            .collect(),
        Err(e) => {
            let reason = e
                .reason()
                .map_or_else(|| "CONNECT".to_string(), str::to_string);
            vec![Err(reason); transfers.len()]
        }
    }
}

/// Runs the timed window.
pub async fn drive(network: &Network, args: &LoadArgs, prepared: &Prepared) -> Result<Run, String> {
    let connections = args.concurrency.clamp(1, CONNECTIONS_MAX);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(network.bank(LedgerId(1)).await?);
    }
    let ready = prepared.chains.ready();
    if ready.is_empty() {
        return Err(
            "no transfers left to send: raise --transfers or --transfers-per-wallet".into(),
        );
    }
    let remaining = ready.iter().map(|&(w, i)| prepared.chains.len(w) - i).sum();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ready: ready.into(),
            latency_us: histogram(),
            per_second: BTreeMap::new(),
            committed_in_window: 0,
            cross_in_window: 0,
            to_wallet_0_in_window: 0,
            errors: BTreeMap::new(),
            acknowledged: Vec::new(),
            not_sent: 0,
            starved: 0,
            remaining,
            last_done: Instant::now(),
        }),
        start: Instant::now(),
        warmup: args.warmup(),
        chains: Arc::clone(&prepared.chains),
    });
    let end = shared.start + args.duration();
    let batch = args.batch > 1;
    let processes = network.processes();
    let progress = progress_bar(args);
    let metrics = network.file.bank_metrics.first().copied();

    // Server usage and fsyncs at the window's start (once the warm-up is over), the usage
    // every half second after, for the largest RSS and in case a process is gone at the end.
    let sampler = {
        let shared = Arc::clone(&shared);
        let progress = progress.clone();
        let processes = processes.clone();
        tokio::spawn(async move {
            let mut usage = vec![Sampled::default(); processes.len()];
            let mut fsyncs_at_start = None;
            let mut started = false;
            while Instant::now() < end && !shared.done() {
                let in_window = Instant::now() >= shared.start + shared.warmup;
                let starts = in_window && !started;
                started |= in_window;
                if starts && let Some(addr) = metrics {
                    fsyncs_at_start = scrape(addr).await.ok().and_then(|p| metric(&p, FSYNCS));
                }
                for ((_, pid), u) in processes.iter().zip(usage.iter_mut()) {
                    if let Some((cpu, rss)) = process_usage(*pid) {
                        u.rss_max = u.rss_max.max(rss);
                        if starts {
                            u.cpu_at_start = Some(cpu);
                        }
                        u.last = Some((cpu, rss));
                    }
                }
                show_progress(&shared, &progress, end);
                // Every half second, and at the warm-up's end exactly.
                let warm_end = shared.start + shared.warmup;
                let mut next = Instant::now() + Duration::from_millis(500);
                if !started && warm_end < next {
                    next = warm_end;
                }
                tokio::time::sleep_until(next.into()).await;
            }
            (usage, fsyncs_at_start)
        })
    };

    if args.rate == 0 {
        let mut workers = Vec::new();
        for k in 0..args.concurrency {
            let shared = Arc::clone(&shared);
            let mut client = clients[k % connections].clone();
            let n = args.batch;
            workers.push(tokio::spawn(async move {
                while Instant::now() < end && !shared.done() {
                    let items = shared.take(n);
                    if items.is_empty() {
                        shared.state.lock().expect("state").starved += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    send(&shared, &mut client, Instant::now(), &items, batch).await;
                }
            }));
        }
        for w in workers {
            w.await.map_err(|e| e.to_string())?;
        }
    } else {
        let interval = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
        let gate = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
        let mut calls = tokio::task::JoinSet::new();
        let mut k = 0usize;
        let mut next = shared.start;
        while next < end && !shared.done() {
            tokio::time::sleep_until(next.into()).await;
            let intended = next;
            next += interval;
            let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
                shared.state.lock().expect("state").not_sent += args.batch as u64;
                continue;
            };
            let items = shared.take(args.batch);
            if items.is_empty() {
                shared.state.lock().expect("state").starved += 1;
                continue;
            }
            let shared = Arc::clone(&shared);
            let mut client = clients[k % connections].clone();
            k += 1;
            calls.spawn(async move {
                let _permit = permit;
                send(&shared, &mut client, intended, &items, batch).await;
            });
            while calls.try_join_next().is_some() {}
        }
        while calls.join_next().await.is_some() {}
    }
    let (usage, fsyncs_at_start) = sampler.await.map_err(|e| e.to_string())?;
    let fsyncs_at_end = network.bank_metric(LedgerId(1), FSYNCS).await;
    progress.finish_and_clear();
    let servers = processes
        .into_iter()
        .zip(usage)
        .filter_map(|((name, pid), u)| {
            let (cpu, rss) = process_usage(pid).or(u.last)?;
            Some(Usage {
                name,
                pid,
                cpu_s: cpu - u.cpu_at_start?,
                rss_bytes: rss,
                rss_max_bytes: u.rss_max.max(rss),
            })
        })
        .collect();

    let last_done = shared.state.lock().expect("state").last_done;
    let window_s = last_done
        .saturating_duration_since(shared.start + shared.warmup)
        .as_secs_f64();
    let state = Arc::try_unwrap(shared)
        .map_err(|_| "the run's state is still shared".to_string())?
        .state
        .into_inner()
        .expect("state");
    // Every call is answered: the next phase starts where this one left each chain.
    prepared
        .chains
        .set_ready(state.ready.iter().copied().collect());
    if state.committed_in_window == 0 && !state.acknowledged.is_empty() {
        return Err(format!(
            "all {} transfers were answered within the {} s warm-up, so the window measured \
             nothing: raise --transfers or --transfers-per-wallet",
            state.acknowledged.len(),
            args.warmup().as_secs()
        ));
    }
    let warmup_s = args.warmup().as_secs();
    let timeline = state
        .per_second
        .iter()
        .map(|(&second, (committed, errors, h))| Second {
            second,
            committed: *committed,
            errors: *errors,
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            in_window: second >= warmup_s,
        })
        .collect();
    Ok(Run {
        latency_us: state.latency_us,
        committed_in_window: state.committed_in_window,
        cross_in_window: state.cross_in_window,
        to_wallet_0_in_window: state.to_wallet_0_in_window,
        window_s,
        ended: last_done,
        errors: state.errors,
        not_sent: state.not_sent,
        starved: state.starved,
        timeline,
        acknowledged: state.acknowledged,
        servers,
        fsyncs: match (fsyncs_at_start, fsyncs_at_end) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
    })
}

/// The progress line: the rate over the last two seconds, the window's p99, the errors.
fn show_progress(shared: &Shared, progress: &indicatif::ProgressBar, end: Instant) {
    let s = shared.state.lock().expect("state");
    let now_s = shared.start.elapsed().as_secs();
    let recent: u64 = s
        .per_second
        .range(now_s.saturating_sub(2)..now_s)
        .map(|(_, v)| v.0)
        .sum();
    let p99 = s.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
    let errors: u64 = s.errors.values().sum();
    progress.set_message(format!(
        "{:>8.0} transfers/s   p99 {p99:>8.1} ms   errors {errors}",
        recent as f64 / 2.0
    ));
    progress.set_position(
        shared
            .start
            .elapsed()
            .as_secs()
            .min(args_duration(end, shared.start)),
    );
}

fn args_duration(end: Instant, start: Instant) -> u64 {
    (end - start).as_secs()
}

fn progress_bar(args: &LoadArgs) -> indicatif::ProgressBar {
    if args.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(args.duration_s);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar
}
