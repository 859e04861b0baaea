//! Ledger service throughput, end to end through gRPC on loopback with durability on:
//! presigned 1-input/2-output transfers via `SubmitTransfers` batches and via single
//! `SubmitTransfer` calls, with p50/p99 latency, printed beside the raw Ed25519 batch-verify
//! rate measured in the same run, and the same batches through `Ledger::submit` in process
//! (what gRPC costs).
//!
//! Each mode also prints the process's CPU time per transfer (server and client together),
//! by thread, its mean verify batch and commit group, its fsyncs per second and the keys the
//! store wrote per transfer: on a shared machine these move less than transfers/s do.
//!
//! Batches and single calls each run twice: at a moderate concurrency (8 batches of 512 in
//! flight; 512 callers) and at a saturating one (32 batches; 2048 callers), which buys
//! throughput with latency: the bigger store batches cost less per transfer.
//!
//! Run: `cargo bench -p cbdc-ledger --bench ledger`. `CBDC_BENCH_TRANSFERS` (default 60000)
//! sets the transfers per mode; `CBDC_BENCH_BATCH` (512) the batch size;
//! `CBDC_BENCH_IN_FLIGHT` the batches in flight (one level instead of 8 and 32);
//! `CBDC_BENCH_CALLERS` the concurrent single callers (one level instead of 512 and 2048);
//! `CBDC_BENCH_CHANNELS` (4) the client's connections; `CBDC_BENCH_TLS=1` serves and connects
//! over TLS (the client presenting the central bank's certificate, as setup mints through
//! deliveries); `CBDC_BENCH_ONLY=batches|singles|direct`
//! runs one kind.

use std::sync::Arc;
use std::time::Instant;

use cbdc_core::messages::{Countersignature, Signed};
use cbdc_core::validate::check_stateless_batch;
use cbdc_core::{
    Amount, Keypair, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, UnixSeconds,
};
use cbdc_ledger::config::LedgerConfig;
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use cbdc_runtime::shutdown::Shutdown;
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LEDGER: LedgerId = LedgerId(1);
const WALLETS: usize = 64;
const MINT_OUTPUTS: usize = 32;
const CHANNELS: usize = 4;

use cbdc_runtime::config::env_usize as env;

/// A distinct key seed per (mode, wallet, role).
fn seed(tag: u8, i: usize, role: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0] = tag;
    s[1] = i as u8;
    s[2] = role;
    s
}

/// This process's CPU time (user + system) so far, in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds so far of this process's threads, summed by thread name.
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *out.entry(name).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

/// Per thread name, CPU microseconds per transfer between `before` and now, given the
/// process's CPU seconds spent in between. Threads that ended in between (the store's flush
/// and compaction workers come and go) show only in the process total: what the live threads
/// do not account for is listed as "ended threads".
fn thread_breakdown(
    before: &std::collections::BTreeMap<String, f64>,
    process_cpu: f64,
    n: usize,
) -> String {
    let per = |seconds: f64| seconds * 1e6 / n.max(1) as f64;
    let mut live = 0.0;
    let mut parts: Vec<(String, f64)> = cpu_by_thread()
        .into_iter()
        .map(|(name, after)| {
            let spent = (after - before.get(&name).copied().unwrap_or(0.0)).max(0.0);
            live += spent;
            (name, per(spent))
        })
        .collect();
    parts.push((
        "ended threads".to_string(),
        per((process_cpu - live).max(0.0)),
    ));
    parts.retain(|(_, us)| *us >= 0.5);
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    parts
        .iter()
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// (sum, count) of the verifier's batch sizes and of the commit groups so far, and the
/// store's transactions committed, durable batches (fsyncs) and keys written so far.
fn batching(ledger: &cbdc_ledger::ledger::Ledger) -> ([(f64, u64); 2], (u64, u64, u64)) {
    let m = ledger.metrics();
    let store = ledger.store_stats().unwrap_or_default();
    (
        [
            (
                m.verify_batch.get_sample_sum(),
                m.verify_batch.get_sample_count(),
            ),
            (
                m.commit_group.get_sample_sum(),
                m.commit_group.get_sample_count(),
            ),
        ],
        (store.commits, store.batches, store.rows),
    )
}

/// Mean verify batch, mean commit group, store transactions per fsync and keys written per
/// transfer since `before`.
fn batching_since(
    ledger: &cbdc_ledger::ledger::Ledger,
    before: ([(f64, u64); 2], (u64, u64, u64)),
    seconds: f64,
    transfers: usize,
) -> String {
    let (now, store) = batching(ledger);
    let (then, store_then) = before;
    let mean = |i: usize| (now[i].0 - then[i].0) / (now[i].1 - then[i].1).max(1) as f64;
    let (commits, fsyncs) = (store.0 - store_then.0, store.1 - store_then.1);
    let rows = store.2 - store_then.2;
    format!(
        "mean verify batch {:.0}, mean commit group {:.0}, {:.0} fsyncs/s of {:.1} store transactions each, {:.1} keys written per transfer",
        mean(0),
        mean(1),
        fsyncs as f64 / seconds.max(1e-9),
        commits as f64 / fsyncs.max(1) as f64,
        rows as f64 / transfers.max(1) as f64
    )
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Signs `bodies` on all cores.
async fn sign_all(jobs: Vec<(TransferBuilder, Arc<Keypair>)>) -> Vec<Transfer> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = jobs.len().div_ceil(threads).max(1);
    let mut handles = Vec::new();
    let mut jobs = jobs;
    while !jobs.is_empty() {
        let rest = jobs.split_off(chunk.min(jobs.len()));
        let mine = std::mem::replace(&mut jobs, rest);
        handles.push(tokio::task::spawn_blocking(move || {
            mine.into_iter()
                .map(|(b, k)| b.sign(&[&k]).expect("signs"))
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.expect("signer"));
    }
    out
}

struct Setup {
    clients: Vec<LedgerServiceClient<Channel>>,
    transfers: Vec<Transfer>,
}

/// The network and the bank's authority key of the benchmark's ledger.
const NETWORK: &str = "cbdc-bench";
const AUTHORITY_SEED: [u8; 32] = [0xa7; 32];

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Mints `n` coins through countersigned inbound deliveries to `WALLETS` payers and presigns
/// one 1-input/2-output transfer per coin.
async fn setup(
    clients: &[LedgerServiceClient<Channel>],
    central_bank: &Keypair,
    n: usize,
    tag: u8,
) -> Vec<Transfer> {
    let payers: Vec<Arc<Keypair>> = (0..WALLETS)
        .map(|i| Arc::new(Keypair::from_seed(&seed(tag, i, 1))))
        .collect();
    let payees: Vec<Keypair> = (0..WALLETS)
        .map(|i| Keypair::from_seed(&seed(tag, i, 2)))
        .collect();
    let mut client = clients[0].clone();
    for k in payers.iter().map(|k| k.as_ref()).chain(payees.iter()) {
        cbdc_proto::requests::open_at_tier(
            &mut client,
            k,
            &Keypair::from_seed(&AUTHORITY_SEED),
            NETWORK,
            LEDGER,
            cbdc_core::KycTier::Class1,
            now_ms(),
        )
        .await
        .expect("opens");
    }
    let coin = Amount::from_fen(10_000);
    let valid_until = UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600,
    );
    // Mint transfers, each with 32 coins spread over the payers.
    let mints: Vec<(TransferBuilder, Arc<Keypair>)> = (0..n.div_ceil(MINT_OUTPUTS))
        .map(|m| {
            let mut b = TransferBuilder::new(valid_until).input(
                OutPoint {
                    txid: cbdc_core::Txid([tag; 32]),
                    index: m as u16,
                },
                Amount::from_fen(coin.fen() * MINT_OUTPUTS as u64),
            );
            b = b.memo(format!("mint {tag} {m}").into_bytes());
            for o in 0..MINT_OUTPUTS {
                let payer = &payers[(m * MINT_OUTPUTS + o) % WALLETS];
                b = b.output(LEDGER, coin, Lock::Key(payer.public()));
            }
            (b, Arc::new(Keypair::from_seed(central_bank.seed())))
        })
        .collect();
    let mints = sign_all(mints).await;
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::new();
    for (i, t) in mints.iter().enumerate() {
        let mut client = clients[i % clients.len()].clone();
        let settlement = v1::Settlement {
            transfer: Some(to_signed_transfer(t)),
            from_ledger_id: 0,
            to_ledger_id: LEDGER.0,
            amount: Amount::from_fen(coin.fen() * MINT_OUTPUTS as u64).to_string(),
            reversal_reason: String::new(),
            central_bank_signature: Countersignature {
                network: NETWORK,
                txid: t.txid(),
                to_ledger: LEDGER,
            }
            .sign(central_bank)
            .to_vec(),
        };
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            client
                .deliver_inbound(v1::DeliverInboundRequest {
                    settlement: Some(settlement),
                })
                .await
                .expect("minted");
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // One payment per coin: 60.00 to a payee, 40.00 change.
    let pay = Amount::from_fen(6_000);
    let change = Amount::from_fen(4_000);
    let jobs: Vec<(TransferBuilder, Arc<Keypair>)> = (0..n)
        .map(|i| {
            let mint = &mints[i / MINT_OUTPUTS];
            let o = (i % MINT_OUTPUTS) as u16;
            let payer = Arc::clone(&payers[i % WALLETS]);
            let b = TransferBuilder::new(valid_until)
                .input(mint.outpoint(o), coin)
                .output(LEDGER, pay, Lock::Key(payees[i % WALLETS].public()))
                .output(LEDGER, change, Lock::Key(payer.public()));
            (b, payer)
        })
        .collect();
    sign_all(jobs).await
}

/// Joins the workers (each returning its latencies in ms and how many transfers committed),
/// checks every transfer committed, and computes the figures.
async fn finish(
    tasks: Vec<tokio::task::JoinHandle<(Vec<f64>, usize)>>,
    started: Instant,
    cpu_started: (f64, std::collections::BTreeMap<String, f64>),
    expected: usize,
) -> Figures {
    let mut lat = Vec::new();
    let mut ok = 0;
    for t in tasks {
        let (l, o) = t.await.expect("worker");
        lat.extend(l);
        ok += o;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started.0;
    let threads = thread_breakdown(&cpu_started.1, cpu, expected);
    assert_eq!(ok, expected, "every presigned transfer commits");
    lat.sort_by(|a, b| a.total_cmp(b));
    Figures {
        per_s: ok as f64 / elapsed,
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        cpu_us: cpu * 1e6 / ok.max(1) as f64,
        threads,
    }
}

struct Figures {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of the whole process (server and client) per transfer, in microseconds.
    cpu_us: f64,
    /// The same, by thread name.
    threads: String,
}

async fn run_batches(setup: &Setup, batch: usize, in_flight: usize) -> Figures {
    // Each request is built before the clock starts and sent once, moved into the call.
    let chunks: Arc<std::sync::Mutex<Vec<Vec<v1::SignedTransfer>>>> =
        Arc::new(std::sync::Mutex::new(
            setup
                .transfers
                .chunks(batch)
                .rev()
                .map(|c| c.iter().map(to_signed_transfer).collect())
                .collect(),
        ));
    let (started, cpu_started) = (Instant::now(), (cpu_seconds(), cpu_by_thread()));
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let chunks = Arc::clone(&chunks);
        let mut client = setup.clients[w % setup.clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ok = 0usize;
            loop {
                let Some(transfers) = chunks.lock().unwrap().pop() else {
                    break;
                };
                let t0 = Instant::now();
                let r = client
                    .submit_transfers(v1::SubmitTransfersRequest {
                        transfers,
                        return_outputs: false,
                    })
                    .await
                    .expect("batch");
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                ok += r
                    .get_ref()
                    .results
                    .iter()
                    .filter(|r| {
                        matches!(r.outcome, Some(v1::transfer_result::Outcome::Committed(_)))
                    })
                    .count();
            }
            (lat, ok)
        }));
    }
    finish(tasks, started, cpu_started, setup.transfers.len()).await
}

async fn run_singles(setup: &Setup, callers: usize) -> Figures {
    let wires: Arc<std::sync::Mutex<Vec<v1::SignedTransfer>>> = Arc::new(std::sync::Mutex::new(
        setup
            .transfers
            .iter()
            .rev()
            .map(to_signed_transfer)
            .collect(),
    ));
    let (started, cpu_started) = (Instant::now(), (cpu_seconds(), cpu_by_thread()));
    let mut tasks = Vec::new();
    for w in 0..callers {
        let wires = Arc::clone(&wires);
        let mut client = setup.clients[w % setup.clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some(transfer) = wires.lock().unwrap().pop() else {
                    break;
                };
                let t0 = Instant::now();
                client
                    .submit_transfer(v1::SubmitTransferRequest {
                        transfer: Some(transfer),
                    })
                    .await
                    .expect("commits");
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            let ok = lat.len();
            (lat, ok)
        }));
    }
    finish(tasks, started, cpu_started, setup.transfers.len()).await
}

/// The same batches straight into `Ledger::submit`, without gRPC: what the wire costs.
async fn run_in_process(
    ledger: &cbdc_ledger::ledger::Ledger,
    transfers: Vec<Transfer>,
    batch: usize,
    in_flight: usize,
) -> Figures {
    let n = transfers.len();
    let chunks: Arc<std::sync::Mutex<Vec<Vec<Transfer>>>> = Arc::new(std::sync::Mutex::new(
        transfers.chunks(batch).rev().map(|c| c.to_vec()).collect(),
    ));
    let (started, cpu_started) = (Instant::now(), (cpu_seconds(), cpu_by_thread()));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let chunks = Arc::clone(&chunks);
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ok = 0;
            loop {
                let Some(c) = chunks.lock().unwrap().pop() else {
                    break;
                };
                let t0 = Instant::now();
                let r = ledger.submit(c.into_iter().map(Ok).collect()).await;
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                ok += r.iter().filter(|r| r.is_ok()).count();
            }
            (lat, ok)
        }));
    }
    finish(tasks, started, cpu_started, n).await
}

/// Raw `check_stateless_batch` over 1024-transfer batches on one core: transfers/s.
fn raw_batch_verify(transfers: &[Transfer]) -> f64 {
    let sample = &transfers[..transfers.len().min(8192)];
    let now = UnixSeconds(0);
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        for chunk in sample.chunks(1024) {
            let r = check_stateless_batch(chunk, now);
            assert!(r.iter().all(|r| r.is_ok()));
        }
        rates.push(sample.len() as f64 / t0.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[rates.len() / 2]
}

/// What one row of the report drives.
#[derive(Clone, Copy)]
enum Mode {
    /// `SubmitTransfers`, this many batches in flight.
    Batches(usize),
    /// `SubmitTransfer`, this many concurrent callers.
    Singles(usize),
    /// `Ledger::submit` in process, batches in flight.
    Direct(usize),
}

impl Mode {
    fn kind(self) -> &'static str {
        match self {
            Mode::Batches(_) => "batches",
            Mode::Singles(_) => "singles",
            Mode::Direct(_) => "direct",
        }
    }

    fn name(self, batch: usize) -> String {
        match self {
            Mode::Batches(k) => format!("SubmitTransfers, batches of {batch}, {k} in flight"),
            Mode::Singles(k) => format!("SubmitTransfer, {k} concurrent callers"),
            Mode::Direct(k) => format!("Ledger::submit in process (no gRPC), {batch} x {k}"),
        }
    }
}

/// A ledger service on a fresh store, and clients connected to it.
struct Service {
    running: cbdc_ledger::RunningLedger,
    clients: Vec<LedgerServiceClient<Channel>>,
    _dir: tempfile::TempDir,
}

async fn start(central_bank: &Keypair) -> Service {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = LedgerConfig::local(
        LEDGER.0,
        dir.path(),
        NETWORK,
        &Keypair::from_seed(&AUTHORITY_SEED).public(),
    );
    config.central_bank_public_key = Some(hex::encode(central_bank.public().as_bytes()));
    let tls = std::env::var("CBDC_BENCH_TLS").is_ok_and(|v| v == "1");
    let certs = dir.path().join("tls");
    if tls {
        cbdc_runtime::tls::DevCa::new("bench CA")
            .expect("CA")
            .write(&certs, &["bank-1", "central-bank"])
            .expect("certificates");
        config.tls = cbdc_runtime::tls::TlsConfig::in_dir(&certs, "bank-1");
    }
    let running = cbdc_ledger::serve(config, Shutdown::new())
        .await
        .expect("serves");
    let mut clients = Vec::new();
    for _ in 0..env("CBDC_BENCH_CHANNELS", CHANNELS) {
        let endpoint = if tls {
            let read = |f: &str| std::fs::read(certs.join(f)).expect("certificate");
            tonic::transport::Endpoint::from_shared(format!("https://{}", running.grpc_addr))
                .unwrap()
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.crt")))
                        .identity(tonic::transport::Identity::from_pem(
                            read("central-bank.crt"),
                            read("central-bank.key"),
                        ))
                        .domain_name("bank-1"),
                )
                .expect("TLS")
        } else {
            tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
                .unwrap()
        };
        clients.push(
            LedgerServiceClient::new(endpoint.connect().await.expect("connects"))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        );
    }
    println!("transport: {}", if tls { "TLS" } else { "plaintext" });
    Service {
        running,
        clients,
        _dir: dir,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("CBDC_BENCH_TRANSFERS", 60_000);
    let batch = env("CBDC_BENCH_BATCH", 512);
    let central_bank = Keypair::from_seed(&[0xcb; 32]);
    println!(
        "ledger service, embedded store with fsync, gRPC on loopback, {n} presigned 1-input/2-output transfers per mode, each mode on a fresh store"
    );
    // The default concurrency of each kind, then a saturating one (more latency, more
    // throughput); CBDC_BENCH_IN_FLIGHT and CBDC_BENCH_CALLERS pick one level instead.
    let levels = |var: &str, default: [usize; 2]| match std::env::var(var).ok() {
        Some(_) => vec![env(var, default[0])],
        None => default.to_vec(),
    };
    let mut modes: Vec<Mode> = Vec::new();
    modes.extend(
        levels("CBDC_BENCH_IN_FLIGHT", [8, 32])
            .into_iter()
            .map(Mode::Batches),
    );
    modes.extend(
        levels("CBDC_BENCH_CALLERS", [512, 2048])
            .into_iter()
            .map(Mode::Singles),
    );
    modes.push(Mode::Direct(8));
    // CBDC_BENCH_ONLY=batches|singles|direct runs just that kind (for profiling).
    let only = std::env::var("CBDC_BENCH_ONLY").unwrap_or_default();
    modes.retain(|m| only.is_empty() || only == m.kind());
    assert!(
        !modes.is_empty(),
        "CBDC_BENCH_ONLY: batches, singles or direct"
    );
    let mut raw = 0.0;
    let mut retries = 0;
    let mut results = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let service = start(&central_bank).await;
        let t0 = Instant::now();
        let setup = Setup {
            transfers: setup(&service.clients, &central_bank, n, i as u8 + 1).await,
            clients: service.clients.clone(),
        };
        println!(
            "{}: setup (minting and presigning {n} transfers) {:.1} s",
            mode.name(batch),
            t0.elapsed().as_secs_f64()
        );
        if i == 0 {
            raw = raw_batch_verify(&setup.transfers);
        }
        let ledger = service.running.ledger.clone();
        let (before, t) = (batching(&ledger), Instant::now());
        let figures = match *mode {
            Mode::Batches(k) => run_batches(&setup, batch, k).await,
            Mode::Singles(k) => run_singles(&setup, k).await,
            Mode::Direct(k) => run_in_process(&ledger, setup.transfers, batch, k).await,
        };
        let seen = batching_since(&ledger, before, t.elapsed().as_secs_f64(), n);
        retries += ledger.metrics().store_retries.get();
        results.push((*mode, figures, seen));
        drop(ledger);
        service.running.stop().await.expect("stops");
    }
    println!(
        "{:<50} {:>12} {:>9} {:>9} {:>14}",
        "mode", "transfers/s", "p50 ms", "p99 ms", "CPU us/transfer"
    );
    for (mode, f, _) in &results {
        println!(
            "{:<50} {:>12.0} {:>9.2} {:>9.2} {:>14.1}",
            mode.name(batch),
            f.per_s,
            f.p50_ms,
            f.p99_ms,
            f.cpu_us
        );
    }
    println!("CPU us/transfer by thread:");
    for (mode, f, seen) in &results {
        println!("  {}: {}; {seen}", mode.name(batch), f.threads);
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "raw check_stateless_batch (1024 per batch), one core: {raw:.0} transfers/s ({:.0} on {cores} cores)",
        raw * cores as f64
    );
    for (mode, f, _) in &results {
        println!(
            "{} = {:.2} x one core's raw batch verify",
            mode.name(batch),
            f.per_s / raw
        );
    }
    println!("store retries: {retries}");
}
