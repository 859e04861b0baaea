//! Wallets opened and funded through the real APIs, and chains of presigned transfers.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cbdc_core::{
    Amount, Keypair, LedgerId, Lock, OutPoint, Transfer, TransferBuilder, UnixSeconds,
};
use cbdc_proto::requests;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::LoadArgs;
use crate::target::Network;

/// What each payer wallet is funded with.
pub const FUNDING: &str = "100.00";
/// What each presigned transfer pays.
pub const PAYMENT: &str = "0.01";
/// Set-up calls in flight at once.
const SETUP_CONCURRENCY: usize = 64;
/// Connections set-up calls are spread over.
const SETUP_CONNECTIONS: usize = 4;

/// What the timed window starts from.
pub struct Prepared {
    /// Per payer wallet (on bank 1), its transfers in the order they must commit: each
    /// spends the change of the one before.
    pub chains: Vec<Vec<Transfer>>,
    pub wallets: usize,
    pub payees_elsewhere: usize,
    pub open_s: f64,
    pub fund_s: f64,
    pub sign_s: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The key of wallet `i` of a run: derived from the run's seed, so nothing is stored.
fn wallet_key(run: &[u8; 8], ledger: u32, i: usize) -> Keypair {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"cbdc-load/wallet")
        .chain_update(run)
        .chain_update(ledger.to_be_bytes())
        .chain_update((i as u64).to_be_bytes())
        .finalize()
        .into();
    Keypair::from_seed(&seed)
}

/// Wallet `i`'s phone number: one per wallet of a run (`+86 1`, two digits of the run, the
/// index in eight digits), so a run of up to 10⁸ wallets never reuses one.
fn phone(run: &[u8; 8], i: usize) -> String {
    format!("+861{:02}{:08}", run[7] % 100, i)
}

/// A small deterministic generator for payee choices (SplitMix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Opens `count` anonymous wallets on `ledger`, `SETUP_CONCURRENCY` at a time.
async fn open_wallets(
    network: &Network,
    ledger: LedgerId,
    run: [u8; 8],
    keys: &Arc<Vec<Keypair>>,
) -> Result<(), String> {
    let mut clients = Vec::new();
    for _ in 0..SETUP_CONNECTIONS {
        clients.push(network.bank(ledger).await?);
    }
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..keys.len() {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("open");
        let mut client = clients[i % SETUP_CONNECTIONS].clone();
        let keys = Arc::clone(keys);
        tasks.spawn(async move {
            let _permit = permit;
            let key = &keys[i];
            client
                .open_wallet(key, &phone(&run, i))
                .await
                .map(|_| ())
                .map_err(|e| format!("opening wallet {i}: {e}"))
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Funds each of `keys` with [`FUNDING`] from bank 1's vault by an exchange order of the
/// bank's authority, and returns each wallet's coin (from the exchange's result). The vault
/// is filled by a mint first; an exchange that finds it not yet filled is tried again.
async fn fund(
    network: &Network,
    run: &str,
    keys: &Arc<Vec<Keypair>>,
) -> Result<Vec<(OutPoint, Amount)>, String> {
    let ledger = LedgerId(1);
    let authority = Arc::new(Keypair::from_seed(network.authorities[0].seed()));
    let mut clients = Vec::new();
    for _ in 0..SETUP_CONNECTIONS {
        clients.push(network.bank(ledger).await?);
    }
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let network_name = network.file.network.clone();
    for i in 0..keys.len() {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("open");
        let mut client = clients[i % SETUP_CONNECTIONS].clone();
        let (keys, authority) = (Arc::clone(keys), Arc::clone(&authority));
        let (run, network_name) = (run.to_string(), network_name.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let key = keys[i].public();
            let address = client.address(&key).to_string();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let header = requests::header(
                    &network_name,
                    ledger,
                    &format!("load-{run}-fund-{i}"),
                    now_ms() + requests::ORDER_VALID_FOR_MS,
                );
                let request = requests::exchange(&authority, header, &address, FUNDING, None);
                match client.rpc().exchange(request).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let Some(cbdc_proto::v1::transfer_result::Outcome::Committed(c)) =
                            r.outcome
                        else {
                            return Err(format!("funding wallet {i}: not committed"));
                        };
                        let lock = cbdc_proto::convert::to_lock(&Lock::Key(key));
                        let coin = c
                            .outputs
                            .iter()
                            .find(|o| {
                                o.output.as_ref().and_then(|o| o.lock.as_ref()) == Some(&lock)
                            })
                            .ok_or_else(|| format!("funding wallet {i}: no output for it"))?;
                        let outpoint =
                            cbdc_proto::convert::outpoint("outpoint", coin.outpoint.as_ref())
                                .map_err(|e| e.to_string())?;
                        return Ok((i, outpoint));
                    }
                    // The mint still on its way to the vault, or the vault's coins busy with
                    // the other exchanges (the ledger says when to try again).
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::FailedPrecondition | tonic::Code::Unavailable
                        ) && Instant::now() < deadline =>
                    {
                        let wait = cbdc_client::RpcError::from(s)
                            .retry_after
                            .unwrap_or(Duration::from_millis(100));
                        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                    }
                    Err(s) => {
                        return Err(format!(
                            "funding wallet {i}: {}",
                            cbdc_client::RpcError::from(s)
                        ));
                    }
                }
            }
        });
    }
    let funding = Amount::parse(FUNDING).expect("amount");
    let mut coins = vec![None; keys.len()];
    while let Some(r) = tasks.join_next().await {
        let (i, outpoint) = r.map_err(|e| e.to_string())??;
        coins[i] = Some((outpoint, funding));
    }
    Ok(coins
        .into_iter()
        .map(|c| c.expect("every wallet funded"))
        .collect())
}

/// Opens and funds the wallets, and presigns the chains.
pub async fn prepare(network: &Network, args: &LoadArgs) -> Result<Prepared, String> {
    let run: [u8; 8] = now_ms().to_be_bytes();
    let run_id = hex::encode(run);
    let payers: Arc<Vec<Keypair>> =
        Arc::new((0..args.wallets).map(|i| wallet_key(&run, 1, i)).collect());
    let elsewhere_count = if args.cross_percent > 0 {
        (args.wallets / 10).max(1)
    } else {
        0
    };
    let elsewhere: Arc<Vec<Keypair>> = Arc::new(
        (0..elsewhere_count)
            .map(|i| wallet_key(&run, 2, i))
            .collect(),
    );

    // The vault's value: a mint by the administrator.
    let total = Amount::parse(FUNDING)
        .expect("amount")
        .fen()
        .checked_mul(args.wallets as u64 + 1)
        .map(Amount::from_fen)
        .ok_or("--wallets: too many to fund")?;
    let mut cb = network.central_bank().await?;
    let header = requests::header(
        &network.file.network,
        cbdc_core::messages::CENTRAL_BANK,
        &format!("load-{run_id}-mint"),
        now_ms() + requests::ORDER_VALID_FOR_MS,
    );
    cb.mint(requests::mint(
        &network.admin,
        header,
        LedgerId(1),
        &total.to_string(),
        &format!("load run {run_id}"),
    ))
    .await
    .map_err(|s| format!("mint: {}", cbdc_client::RpcError::from(s)))?;

    let started = Instant::now();
    open_wallets(network, LedgerId(1), run, &payers).await?;
    if !elsewhere.is_empty() {
        open_wallets(network, LedgerId(2), run, &elsewhere).await?;
    }
    let open_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let coins = fund(network, &run_id, &payers).await?;
    let fund_s = started.elapsed().as_secs_f64();

    // Chains, signed on blocking threads (one chunk per core), outside the timed window.
    let started = Instant::now();
    let payment = Amount::parse(PAYMENT).expect("amount");
    let valid_until = UnixSeconds(now_ms() / 1000 + 3600);
    let payees: Arc<Vec<(LedgerId, cbdc_core::PublicKey)>> = Arc::new(
        payers
            .iter()
            .map(|k| (LedgerId(1), k.public()))
            .chain(elsewhere.iter().map(|k| (LedgerId(2), k.public())))
            .collect(),
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = args.wallets.div_ceil(cores);
    let mut tasks = Vec::new();
    for chunk in 0..cores {
        let (payers, payees, coins) = (Arc::clone(&payers), Arc::clone(&payees), coins.clone());
        let (m, cross, n_local) = (args.transfers_per_wallet, args.cross_percent, args.wallets);
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut mix = Mix(0x5eed ^ chunk as u64);
            let mut chains = Vec::new();
            for w in chunk * per..((chunk + 1) * per).min(payers.len()) {
                let key = &payers[w];
                let (mut outpoint, mut value) = coins[w];
                let mut chain = Vec::with_capacity(m);
                for _ in 0..m {
                    let to = if cross > 0 && (mix.next() % 100) < u64::from(cross) {
                        n_local + (mix.next() as usize % (payees.len() - n_local))
                    } else {
                        // Another wallet of this ledger.
                        (w + 1 + mix.next() as usize % (n_local - 1)) % n_local
                    };
                    let (ledger, payee) = payees[to];
                    let change = value.checked_sub(payment).expect("funded for the chain");
                    let t = TransferBuilder::new(valid_until)
                        .input(outpoint, value)
                        .output(ledger, payment, Lock::Key(payee))
                        .output(LedgerId(1), change, Lock::Key(key.public()))
                        .sign(&[key])
                        .expect("signs");
                    outpoint = OutPoint {
                        txid: t.txid(),
                        index: 1,
                    };
                    value = change;
                    chain.push(t);
                }
                chains.push(chain);
            }
            chains
        }));
    }
    let mut chains = Vec::with_capacity(args.wallets);
    for t in tasks {
        chains.extend(t.await.map_err(|e| e.to_string())?);
    }
    Ok(Prepared {
        chains,
        wallets: args.wallets,
        payees_elsewhere: elsewhere.len(),
        open_s,
        fund_s,
        sign_s: started.elapsed().as_secs_f64(),
    })
}
