//! Cross-ledger throughput end to end on loopback, beside the intra-ledger rate from the same
//! run: the central bank and two bank ledgers as real services (gRPC, embedded stores with
//! fsync), presigned 1-input/2-output transfers submitted to ledger 1 in `SubmitTransfers`
//! batches. Intra-ledger transfers pay a wallet on ledger 1; cross-ledger transfers pay a
//! wallet on ledger 2, so each one also goes ledger 1's outbox → the central bank's `Settle`
//! → its delivery queue → ledger 2's `DeliverInbound`. A cross-ledger transfer counts when
//! ledger 2 has credited it.
//!
//! Run: `cargo bench -p cbdc-issuance --bench cross_ledger`. `CBDC_BENCH_TRANSFERS` (default
//! 16000) sets the transfers per mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cbdc_core::transfer::sign_body;
use cbdc_core::{
    Amount, Keypair, LedgerId, Lock, OutPoint, Output, Transfer, TransferBody, TransferBuilder,
    UnixSeconds,
};
use cbdc_issuance::config::IssuanceConfig;
use cbdc_ledger::config::LedgerConfig;
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_proto::v1::issuance_service_client::IssuanceServiceClient;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use cbdc_runtime::shutdown::Shutdown;
use tonic::transport::Channel;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WALLETS: usize = 64;
const FAN: usize = 32;
const BATCH: usize = 512;
const IN_FLIGHT: usize = 8;
const COIN: u64 = 10_000;
const PAY: u64 = 6_000;

use cbdc_runtime::config::env_usize as env;

fn key(tag: u8, i: usize) -> Keypair {
    let mut s = [0u8; 32];
    s[0] = tag;
    s[1] = i as u8;
    Keypair::from_seed(&s)
}

/// The benchmark network's name.
const NETWORK: &str = "cbdc-bench";

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn client(addr: std::net::SocketAddr) -> LedgerServiceClient<Channel> {
    LedgerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// Submits `transfers` in batches, `IN_FLIGHT` at a time; panics unless all commit.
async fn submit_all(client: &LedgerServiceClient<Channel>, transfers: &[Transfer]) {
    let chunks: Arc<Vec<Vec<v1::SignedTransfer>>> = Arc::new(
        transfers
            .chunks(BATCH)
            .map(|c| c.iter().map(to_signed_transfer).collect())
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (chunks, next, mut client) = (Arc::clone(&chunks), Arc::clone(&next), client.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = chunks.get(i) else { break };
                let r = client
                    .submit_transfers(v1::SubmitTransfersRequest {
                        transfers: c.clone(),
                        return_outputs: false,
                    })
                    .await
                    .expect("batch");
                for r in &r.get_ref().results {
                    assert!(
                        matches!(r.outcome, Some(v1::transfer_result::Outcome::Committed(_))),
                        "{r:?}"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("submitter");
    }
}

/// Splits each coin into `FAN` outputs locked to `owners` (round robin); returns the signed
/// transfers and the new coins.
fn fan_out(
    coins: &[(OutPoint, Amount)],
    owner_of: impl Fn(usize) -> (LedgerId, Lock),
    vault: &Keypair,
    count: usize,
) -> (Vec<Transfer>, Vec<(OutPoint, Amount)>) {
    let valid_until = UnixSeconds(now_s() + 3600);
    let mut transfers = Vec::new();
    let mut out = Vec::new();
    for (i, (outpoint, value)) in coins.iter().enumerate() {
        let n = FAN.min(count - out.len());
        if n == 0 {
            break;
        }
        let piece = value.fen() / n as u64;
        let mut outputs = Vec::new();
        for j in 0..n {
            let v = if j + 1 == n {
                value.fen() - piece * (n as u64 - 1)
            } else {
                piece
            };
            let (ledger, lock) = owner_of(i * FAN + j);
            outputs.push(Output {
                ledger,
                value: Amount::from_fen(v),
                lock,
            });
        }
        let body = TransferBody {
            inputs: vec![cbdc_core::Input {
                outpoint: *outpoint,
                value: *value,
            }],
            outputs,
            memo: Vec::new(),
            valid_until,
        };
        let t = sign_body(body.encode(), &[vault]).expect("signs");
        for (j, o) in t.body().outputs.iter().enumerate() {
            out.push((t.outpoint(j as u16), o.value));
        }
        transfers.push(t);
    }
    (transfers, out)
}

/// Σ balances of `keys` on `client`'s ledger.
async fn balances(
    client: &mut LedgerServiceClient<Channel>,
    ledger: LedgerId,
    keys: &[Keypair],
) -> Amount {
    let mut sum = Amount::ZERO;
    for k in keys {
        let address = cbdc_core::Address::new(ledger, k.public()).to_string();
        let auth = cbdc_proto::requests::read_auth(
            k,
            NETWORK,
            ledger,
            &address,
            now_s() * 1000 + cbdc_proto::requests::READ_VALID_FOR_MS,
            false,
        );
        let b = client
            .get_balance(v1::GetBalanceRequest {
                address,
                auth: Some(auth),
            })
            .await
            .expect("balance")
            .into_inner()
            .balance;
        sum = sum
            .checked_add(Amount::parse(&b).expect("amount"))
            .expect("sum");
    }
    sum
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("CBDC_BENCH_TRANSFERS", 16_000).max(1);
    // Fan-out levels: the vault's single minted coin becomes FAN^levels coins of COIN.
    let mut levels = 1u32;
    while FAN.pow(levels) < 2 * n {
        levels += 1;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = Keypair::from_seed(&[0xad; 32]);
    let central_bank = Keypair::from_seed(&[0xcb; 32]);
    let mut cb_config = IssuanceConfig::local(&dir.path().join("cb"), NETWORK, &admin.public());
    cb_config.delivery_interval_ms = 2;
    std::fs::create_dir_all(dir.path().join("cb")).unwrap();
    cbdc_runtime::secret::write_private(
        &cb_config.signing_key_file,
        hex::encode(central_bank.seed()).as_bytes(),
    )
    .unwrap();
    let cb = cbdc_issuance::serve(cb_config, Shutdown::new())
        .await
        .expect("central bank");
    let mut cb_client = IssuanceServiceClient::connect(format!("http://{}", cb.grpc_addr))
        .await
        .expect("connects");
    let mut ledgers = Vec::new();
    let authority = Keypair::from_seed(&[0xa7; 32]);
    for id in 1..=2u32 {
        let mut c = LedgerConfig::local(
            id,
            &dir.path().join(format!("bank-{id}")),
            NETWORK,
            &authority.public(),
        );
        c.central_bank_public_key = Some(hex::encode(central_bank.public().as_bytes()));
        c.central_bank_endpoint = Some(format!("http://{}", cb.grpc_addr));
        c.outbox_interval_ms = 2;
        c.sequencer_interval_ms = 50;
        c.checkpoint_interval_ms = 1000;
        let running = cbdc_ledger::serve(c.clone(), Shutdown::new())
            .await
            .expect("ledger");
        let operator = cbdc_ledger::load_or_create_key(&c.operator_key_file).expect("key");
        let endpoint = format!("http://{}", running.grpc_addr);
        cb_client
            .register_operator(cbdc_proto::requests::register_operator(
                &admin,
                cbdc_proto::requests::header(
                    NETWORK,
                    LedgerId(0),
                    &format!("register-{id}"),
                    now_s() * 1000 + cbdc_proto::requests::ORDER_VALID_FOR_MS,
                ),
                LedgerId(id),
                &operator.public(),
                &endpoint,
            ))
            .await
            .expect("registers");
        ledgers.push((running, operator));
    }
    let l1 = LedgerId(1);
    let l2 = LedgerId(2);
    let mut c1 = client(ledgers[0].0.grpc_addr).await;
    let mut c2 = client(ledgers[1].0.grpc_addr).await;
    println!(
        "central bank + 2 ledgers, embedded stores with fsync, gRPC on loopback, {n} presigned 1-input/2-output transfers per mode"
    );

    // Wallets: payers on ledger 1, payees on both.
    let payers: Vec<Keypair> = (0..WALLETS).map(|i| key(1, i)).collect();
    let payees1: Vec<Keypair> = (0..WALLETS).map(|i| key(2, i)).collect();
    let payees2: Vec<Keypair> = (0..WALLETS).map(|i| key(3, i)).collect();
    for (which, ledger, keys) in [(1, l1, &payers), (1, l1, &payees1), (2, l2, &payees2)] {
        let client = if which == 1 { &mut c1 } else { &mut c2 };
        for k in keys.iter() {
            cbdc_proto::requests::open_at_tier(
                client,
                k,
                &authority,
                NETWORK,
                ledger,
                cbdc_core::KycTier::Class1,
                now_s() * 1000,
            )
            .await
            .expect("opens");
        }
    }

    // Mint to ledger 1 to ledger 1 and fan it out to the payers.
    let t0 = Instant::now();
    // FAN^levels coins of COIN each: the fan-out splits evenly.
    let total = Amount::from_fen(COIN * FAN.pow(levels) as u64);
    let total_text = total.to_string();
    let mint_request = cbdc_proto::requests::mint(
        &admin,
        cbdc_proto::requests::header(
            NETWORK,
            LedgerId(0),
            "bench",
            now_s() * 1000 + cbdc_proto::requests::ORDER_VALID_FOR_MS,
        ),
        LedgerId(1),
        &total_text,
        "bench reserve",
    );
    let minted = cb_client
        .mint(mint_request)
        .await
        .expect("mints")
        .into_inner();
    let mint = cbdc_proto::convert::signed_transfer("mint", minted.transfer.as_ref()).unwrap();
    let vault = &ledgers[0].1;
    let vault_lock = |_: usize| (l1, Lock::Key(vault.public()));
    while balances(&mut c1, l1, std::slice::from_ref(vault)).await != total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut coins = vec![(mint.outpoint(0), total)];
    for level in 1..levels {
        let (t, next) = fan_out(&coins, vault_lock, vault, FAN.pow(level));
        submit_all(&c1, &t).await;
        coins = next;
    }
    let (last, coins) = fan_out(
        &coins,
        |i| (l1, Lock::Key(payers[i % WALLETS].public())),
        vault,
        2 * n,
    );
    submit_all(&c1, &last).await;
    assert!(
        coins.iter().all(|c| c.1 == Amount::from_fen(COIN)),
        "even coins"
    );

    // Presign: the first n coins pay on ledger 1, the rest pay ledger 2.
    let valid_until = UnixSeconds(now_s() + 3600);
    let presign =
        |range: std::ops::Range<usize>, to: LedgerId, payees: &[Keypair]| -> Vec<Transfer> {
            range
                .map(|i| {
                    let payer = &payers[i % WALLETS];
                    TransferBuilder::new(valid_until)
                        .input(coins[i].0, coins[i].1)
                        .output(
                            to,
                            Amount::from_fen(PAY),
                            Lock::Key(payees[i % WALLETS].public()),
                        )
                        .output(l1, Amount::from_fen(COIN - PAY), Lock::Key(payer.public()))
                        .sign(&[payer])
                        .expect("signs")
                })
                .collect()
        };
    let intra = presign(0..n, l1, &payees1);
    let cross = presign(n..2 * n, l2, &payees2);
    println!(
        "setup (minting, fanning out, presigning): {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Intra-ledger (CBDC_BENCH_ONLY=cross skips it, for profiling).
    let started = Instant::now();
    if std::env::var("CBDC_BENCH_ONLY").as_deref() != Ok("cross") {
        submit_all(&c1, &intra).await;
    }
    let intra_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Cross-ledger: committed on ledger 1, then credited on ledger 2.
    let expected = Amount::from_fen(PAY * n as u64);
    // Two counter reads per poll, so that watching costs the system nothing measurable.
    let ledger2 = ledgers[1].0.ledger.clone();
    let inbound_before = ledger2.running_totals().await.expect("totals").0;
    let started = Instant::now();
    submit_all(&c1, &cross).await;
    let committed_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let inbound = ledger2.running_totals().await.expect("totals").0;
        if inbound.checked_sub(inbound_before) == Some(expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cross-ledger transfers did not arrive: {} of {expected} credited",
            inbound.checked_sub(inbound_before).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cross_s = started.elapsed().as_secs_f64();
    assert_eq!(
        balances(&mut c2, l2, &payees2).await,
        expected,
        "every payee credited"
    );
    let intra_rate = n as f64 / intra_s;
    let cross_rate = n as f64 / cross_s;
    println!("{:<58} {:>12}", "mode", "transfers/s");
    println!(
        "{:<58} {:>12.0}",
        "intra-ledger (committed on ledger 1)", intra_rate
    );
    println!(
        "{:<58} {:>12.0}",
        "cross-ledger, committed on ledger 1 (outbox written)",
        n as f64 / committed_s
    );
    println!(
        "{:<58} {:>12.0}",
        "cross-ledger, end to end (credited on ledger 2)", cross_rate
    );
    println!(
        "cross-ledger / intra-ledger: {:.2}",
        cross_rate / intra_rate
    );

    let audit = cb_client
        .audit(v1::AuditRequest {})
        .await
        .expect("audit")
        .into_inner();
    println!(
        "audit: issued {} redeemed {} outstanding {}; ledger books {:?}",
        audit.issued,
        audit.redeemed,
        audit.outstanding,
        audit
            .ledgers
            .iter()
            .map(|l| (l.ledger_id, l.outstanding_books.clone()))
            .collect::<Vec<_>>()
    );
    for (running, _) in ledgers {
        running.stop().await.expect("stops");
    }
    cb.stop().await.expect("stops");
}
