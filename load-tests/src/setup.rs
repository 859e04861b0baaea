//! Wallets opened and funded through the real APIs, and the chains of transfers the timed
//! window sends (signed here, before it, or as they are sent).
//!
//! Funding fans out: a few distributor wallets (raised to class 1 by the bank's authority,
//! so no cap stops them) are each filled by one exchange order, then pay the wallets in
//! transfers of up to 31 outputs. A million wallets take about 32,000 transfers to fund,
//! not a million exchange orders on the vault's coins.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cbdc_core::{
    Address, Amount, Keypair, KycTier, LedgerId, Lock, OutPoint, PublicKey, Transfer,
    TransferBuilder, UnixSeconds,
};
use cbdc_proto::requests;
use rand::SeedableRng;
use rand_distr::Distribution;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::target::Network;
use crate::{LoadArgs, Payees, Signing};

/// What each wallet is funded with.
pub const FUNDING: &str = "100.00";
/// What each transfer pays.
pub const PAYMENT: &str = "0.01";
/// Set-up calls in flight at once.
const SETUP_CONCURRENCY: usize = 64;
/// Connections set-up calls are spread over.
const SETUP_CONNECTIONS: usize = 4;
/// Distributor wallets funding fans out from, at most.
const DISTRIBUTORS_MAX: usize = 64;
/// Wallets paid by one funding transfer (one output is the distributor's change).
const FUNDED_PER_TRANSFER: usize = cbdc_core::transfer::MAX_OUTPUTS - 1;
/// Wallets on bank 2 that cross-ledger payments go to, at most.
const ELSEWHERE_MAX: usize = 10_000;

/// The chains of a run: per payer, the payees of its transfers in order (each spends the
/// change of the one before), and the transfers themselves when presigned.
pub struct Chains {
    /// The payers' keys (payer `w` is wallet `payer_wallet[w]` of bank 1).
    pub keys: Vec<Keypair>,
    /// Every payee: bank 1's wallets, then bank 2's.
    pub payees: Vec<(LedgerId, PublicKey)>,
    /// Per payer, indices into `payees`.
    pub plan: Vec<Vec<u32>>,
    /// Per payer, its signed transfers (presigned mode).
    pub presigned: Option<Vec<Vec<Transfer>>>,
    /// Per payer, the coin its next transfer spends (live signing).
    live: Mutex<Vec<(OutPoint, Amount)>>,
    valid_until: UnixSeconds,
    /// Where the next phase starts: each payer's next transfer, for the payers whose chain
    /// is neither done nor broken (`None`: every payer at its first).
    resume: Mutex<Option<Vec<(usize, usize)>>>,
}

impl Chains {
    pub fn payers(&self) -> usize {
        self.plan.len()
    }

    pub fn len(&self, w: usize) -> usize {
        self.plan[w].len()
    }

    /// The transfers a phase may send: (payer, index) of each payer's next one.
    pub fn ready(&self) -> Vec<(usize, usize)> {
        match &*self.resume.lock().expect("resume") {
            Some(r) => r.clone(),
            None => (0..self.payers()).map(|w| (w, 0)).collect(),
        }
    }

    /// Where a phase left the chains (every call answered): the next phase starts there.
    pub fn set_ready(&self, ready: Vec<(usize, usize)>) {
        *self.resume.lock().expect("resume") = Some(ready);
    }

    /// Whether transfer `i` of payer `w` pays wallet 0 of bank 1 (the hot merchant of a Zipf
    /// law).
    pub fn pays_wallet_0(&self, w: usize, i: usize) -> bool {
        self.plan[w][i] == 0
    }

    /// Whether transfer `i` of payer `w` pays a wallet of another ledger.
    pub fn is_cross(&self, w: usize, i: usize) -> bool {
        self.payees[self.plan[w][i] as usize].0 != LedgerId(1)
    }

    /// Transfer `i` of payer `w`: the presigned one, or (live signing) built and signed now
    /// from the coin the one before left as change. Asked in chain order, each once.
    pub fn transfer(&self, w: usize, i: usize) -> Transfer {
        if let Some(p) = &self.presigned {
            return p[w][i].clone();
        }
        let coin = self.live.lock().expect("coins")[w];
        let (t, change) = pay(
            &self.keys[w],
            coin,
            self.payees[self.plan[w][i] as usize],
            self.valid_until,
        );
        self.live.lock().expect("coins")[w] = change;
        t
    }
}

/// A payment of [`PAYMENT`] from `coin` to `payee`, the rest back to the payer; and the
/// change coin.
fn pay(
    key: &Keypair,
    (outpoint, value): (OutPoint, Amount),
    (ledger, payee): (LedgerId, PublicKey),
    valid_until: UnixSeconds,
) -> (Transfer, (OutPoint, Amount)) {
    let payment = Amount::parse(PAYMENT).expect("amount");
    let change = value.checked_sub(payment).expect("funded for the chain");
    let t = TransferBuilder::new(valid_until)
        .input(outpoint, value)
        .output(ledger, payment, Lock::Key(payee))
        .output(LedgerId(1), change, Lock::Key(key.public()))
        .sign(&[key])
        .expect("signs");
    let next = OutPoint {
        txid: t.txid(),
        index: 1,
    };
    (t, (next, change))
}

/// What the timed window starts from.
pub struct Prepared {
    pub chains: Arc<Chains>,
    pub wallets: usize,
    pub payees_elsewhere: usize,
    pub open_s: f64,
    pub fund_s: f64,
    /// Signing the chains before the window (0 when signing live).
    pub sign_s: f64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The key of wallet `i` of a run: derived from the run's seed, so nothing is stored.
pub(crate) fn wallet_key(run: &[u8; 8], role: &[u8], i: usize) -> Keypair {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"cbdc-load/wallet")
        .chain_update(run)
        .chain_update(role)
        .chain_update((i as u64).to_be_bytes())
        .finalize()
        .into();
    Keypair::from_seed(&seed)
}

/// A phone number for wallet `i` of a run (`+86 1`, four digits mixed from the whole run
/// id, seven of the index), so a run of up to 10⁷ wallets never reuses one, and two runs on
/// one devnet (a merchant phase opens its shoppers as a run of its own) meet with odds of
/// 1 in 10,000 rather than the 1 in 100 of two digits of the run id's last byte.
pub(crate) fn phone(run: &[u8; 8], i: usize) -> String {
    let mixed = u64::from_be_bytes(*run).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    format!("+861{:04}{:07}", mixed % 10_000, i)
}

/// Runs `call(i)` for each of `0..n`, `SETUP_CONCURRENCY` at a time over `SETUP_CONNECTIONS`
/// connections to bank `ledger`; the first failure ends it.
async fn each<T, F, Fut>(
    network: &Network,
    ledger: LedgerId,
    n: usize,
    call: F,
) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(cbdc_client::Ledger, usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut clients = Vec::new();
    for _ in 0..SETUP_CONNECTIONS {
        clients.push(network.bank(ledger).await?);
    }
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("open");
        let call = call(clients[i % SETUP_CONNECTIONS].clone(), i);
        tasks.spawn(async move {
            let _permit = permit;
            call.await
        });
        while let Some(r) = tasks.try_join_next() {
            out.push(r.map_err(|e| e.to_string())??);
        }
    }
    while let Some(r) = tasks.join_next().await {
        out.push(r.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Opens an anonymous wallet for each of `keys` on `ledger`; phone numbers from `first`.
pub(crate) async fn open_wallets(
    network: &Network,
    ledger: LedgerId,
    run: [u8; 8],
    keys: &Arc<Vec<Keypair>>,
    first: usize,
) -> Result<(), String> {
    let keys = Arc::clone(keys);
    each(network, ledger, keys.len(), move |mut client, i| {
        let keys = Arc::clone(&keys);
        async move {
            client
                .open_wallet(&keys[i], &phone(&run, first + i))
                .await
                .map(|_| ())
                .map_err(|e| format!("opening wallet {i}: {e}"))
        }
    })
    .await
    .map(|_| ())
}

/// Calls `f` until it succeeds, while the ledger answers that it is busy or not ready
/// (FAILED_PRECONDITION: the mint still on its way to the vault; UNAVAILABLE: the vault's
/// coins taken by other orders), waiting what it says; at most a minute.
async fn patiently<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
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
            other => return other,
        }
    }
}

/// Funds each of `wallets` with [`FUNDING`]: distributors are raised to class 1 and filled
/// by exchange orders of the bank's authority, then pay the wallets in fan-out transfers.
/// Returns each wallet's coin.
pub(crate) async fn fund(
    network: &Network,
    run: [u8; 8],
    wallets: &Arc<Vec<Keypair>>,
) -> Result<Vec<(OutPoint, Amount)>, String> {
    let ledger = LedgerId(1);
    let run_id = hex::encode(run);
    let funding = Amount::parse(FUNDING).expect("amount");
    let d = wallets
        .len()
        .div_ceil(FUNDED_PER_TRANSFER)
        .clamp(1, DISTRIBUTORS_MAX);
    let per = wallets.len().div_ceil(d);
    let distributors: Arc<Vec<Keypair>> = Arc::new(
        (0..d)
            .map(|i| wallet_key(&run, b"distributor", i))
            .collect(),
    );
    open_wallets(network, ledger, run, &distributors, wallets.len()).await?;
    let authority = Arc::new(Keypair::from_seed(network.authorities[0].seed()));
    let network_name = network.file.network.clone();
    // Raised to class 1 (no caps), then filled from the vault.
    let filled = each(network, ledger, d, {
        let (distributors, authority) = (Arc::clone(&distributors), Arc::clone(&authority));
        let (network_name, run_id) = (network_name.clone(), run_id.clone());
        move |mut client, i| {
            let (distributors, authority) = (Arc::clone(&distributors), Arc::clone(&authority));
            let (network_name, run_id) = (network_name.clone(), run_id.clone());
            async move {
                let key = distributors[i].public();
                let address = Address::new(ledger, key).to_string();
                let header = |what: &str| {
                    requests::header(
                        &network_name,
                        ledger,
                        &format!("load-{run_id}-{what}-{i}"),
                        now_ms() + requests::ORDER_VALID_FOR_MS,
                    )
                };
                let request = requests::set_wallet_tier(
                    &authority,
                    header("tier"),
                    &address,
                    KycTier::Class1,
                    "load generator distributor",
                );
                client
                    .rpc()
                    .set_wallet_tier(request)
                    .await
                    .map_err(|s| format!("distributor {i}: {}", cbdc_client::RpcError::from(s)))?;
                let amount = funding
                    .fen()
                    .checked_mul(per as u64)
                    .map(Amount::from_fen)
                    .ok_or("--wallets: too many to fund")?
                    .to_string();
                let rpc = client.rpc().clone();
                let r = patiently(|| {
                    let mut rpc = rpc.clone();
                    let request =
                        requests::exchange(&authority, header("fund"), &address, &amount, None);
                    async move { rpc.exchange(request).await }
                })
                .await
                .map_err(|s| format!("distributor {i}: {}", cbdc_client::RpcError::from(s)))?
                .into_inner();
                let Some(cbdc_proto::v1::transfer_result::Outcome::Committed(c)) = r.outcome else {
                    return Err(format!("distributor {i}: the exchange did not commit"));
                };
                let lock = cbdc_proto::convert::to_lock(&Lock::Key(key));
                let coin = c
                    .outputs
                    .iter()
                    .find(|o| o.output.as_ref().and_then(|o| o.lock.as_ref()) == Some(&lock))
                    .ok_or_else(|| format!("distributor {i}: no output for it"))?;
                let outpoint = cbdc_proto::convert::outpoint("outpoint", coin.outpoint.as_ref())
                    .map_err(|e| e.to_string())?;
                Ok((i, outpoint))
            }
        }
    })
    .await?;

    // Each distributor pays its share of the wallets, one fan-out transfer after another.
    let valid_until = UnixSeconds(now_ms() / 1000 + 3600);
    let coins = Arc::new(Mutex::new(vec![None; wallets.len()]));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut outpoint) in filled {
        let mut client = network.bank(ledger).await?;
        let (distributors, wallets, coins) = (
            Arc::clone(&distributors),
            Arc::clone(wallets),
            Arc::clone(&coins),
        );
        tasks.spawn(async move {
            let key = &distributors[i];
            let share = i * per..((i + 1) * per).min(wallets.len());
            let mut value = funding
                .fen()
                .checked_mul(per as u64)
                .map(Amount::from_fen)
                .expect("checked above");
            for group in share.collect::<Vec<_>>().chunks(FUNDED_PER_TRANSFER) {
                let mut b = TransferBuilder::new(valid_until).input(outpoint, value);
                for &w in group {
                    b = b.output(ledger, funding, Lock::Key(wallets[w].public()));
                }
                let paid = Amount::from_fen(funding.fen() * group.len() as u64);
                let change = value.checked_sub(paid).expect("funded for its share");
                if change.fen() > 0 {
                    b = b.output(ledger, change, Lock::Key(key.public()));
                }
                let t = b.sign(&[key]).map_err(|e| e.to_string())?;
                client
                    .submit(&t)
                    .await
                    .map_err(|e| format!("funding from distributor {i}: {e}"))?;
                let txid = t.txid();
                let mut c = coins.lock().expect("coins");
                for (k, &w) in group.iter().enumerate() {
                    c[w] = Some((
                        OutPoint {
                            txid,
                            index: k as u16,
                        },
                        funding,
                    ));
                }
                outpoint = OutPoint {
                    txid,
                    index: group.len() as u16,
                };
                value = change;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let coins = Arc::try_unwrap(coins)
        .map_err(|_| "funding still running")?
        .into_inner()
        .expect("coins");
    coins
        .into_iter()
        .enumerate()
        .map(|(w, c)| c.ok_or_else(|| format!("wallet {w} was not funded")))
        .collect()
}

/// Chooses payees: another wallet of bank 1 (uniformly, or by a Zipf law whose rank 1 is
/// wallet 0, the hot merchant), or with `cross_percent` chance a wallet of bank 2.
struct PayeeChooser {
    rng: rand::rngs::StdRng,
    local: usize,
    elsewhere: usize,
    cross_percent: u32,
    zipf: Option<rand_distr::Zipf<f64>>,
}

impl PayeeChooser {
    fn next(&mut self, payer_wallet: usize) -> u32 {
        use rand::Rng;
        if self.elsewhere > 0 && self.rng.gen_range(0..100) < self.cross_percent {
            return (self.local + self.rng.gen_range(0..self.elsewhere)) as u32;
        }
        let to = match &self.zipf {
            // Rank r (from 1) is wallet r − 1.
            Some(z) => (z.sample(&mut self.rng) as usize - 1).min(self.local - 1),
            None => self.rng.gen_range(0..self.local),
        };
        // Never the payer itself: the next wallet instead.
        (if to == payer_wallet {
            (to + 1) % self.local
        } else {
            to
        }) as u32
    }
}

/// Opens and funds the wallets, plans the chains and (unless signing live) signs them.
pub async fn prepare(
    network: &Network,
    args: &LoadArgs,
    wallets: usize,
) -> Result<Prepared, String> {
    let run: [u8; 8] = now_ms().to_be_bytes();
    let run_id = hex::encode(run);
    let local: Arc<Vec<Keypair>> = Arc::new(
        (0..wallets)
            .map(|i| wallet_key(&run, b"bank-1", i))
            .collect(),
    );
    let elsewhere_count = if args.cross_percent > 0 {
        (wallets / 10).clamp(1, ELSEWHERE_MAX)
    } else {
        0
    };
    let elsewhere: Arc<Vec<Keypair>> = Arc::new(
        (0..elsewhere_count)
            .map(|i| wallet_key(&run, b"bank-2", i))
            .collect(),
    );

    // The vault's value: a mint by the administrator, twice what the wallets get. The vault
    // keeps its value in many coins; an exchange that had to gather the last fragments of
    // an almost empty vault could need more inputs than a transfer may have.
    let total = Amount::parse(FUNDING)
        .expect("amount")
        .fen()
        .checked_mul(2 * (wallets as u64 + DISTRIBUTORS_MAX as u64))
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
    open_wallets(network, LedgerId(1), run, &local, 0).await?;
    // The last `unopened_payees` of bank 2's wallets stay unopened.
    let opened = elsewhere.len().saturating_sub(args.unopened_payees);
    if opened > 0 {
        let to_open = Arc::new(
            elsewhere[..opened]
                .iter()
                .map(|k| Keypair::from_seed(k.seed()))
                .collect::<Vec<_>>(),
        );
        open_wallets(network, LedgerId(2), run, &to_open, 0).await?;
    }
    let open_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let coins = fund(network, run, &local).await?;
    let fund_s = started.elapsed().as_secs_f64();

    // The payers, spread evenly over the wallets, and their payees.
    let payers = if args.payers == 0 {
        wallets
    } else {
        args.payers.min(wallets)
    };
    let stride = wallets / payers;
    let payer_wallets: Vec<usize> = (0..payers).map(|p| p * stride).collect();
    let mut chooser = PayeeChooser {
        rng: rand::rngs::StdRng::seed_from_u64(u64::from_be_bytes(run)),
        local: wallets,
        elsewhere: elsewhere.len(),
        cross_percent: args.cross_percent,
        zipf: match args.payees {
            Payees::Uniform => None,
            Payees::Zipf => Some(
                rand_distr::Zipf::new(wallets as u64, args.zipf_exponent)
                    .map_err(|e| format!("--zipf-exponent: {e}"))?,
            ),
        },
    };
    let plan: Vec<Vec<u32>> = payer_wallets
        .iter()
        .map(|&w| {
            (0..args.chain_length(payers))
                .map(|_| chooser.next(w))
                .collect()
        })
        .collect();
    let payees: Vec<(LedgerId, PublicKey)> = local
        .iter()
        .map(|k| (LedgerId(1), k.public()))
        .chain(elsewhere.iter().map(|k| (LedgerId(2), k.public())))
        .collect();
    let keys: Vec<Keypair> = payer_wallets
        .iter()
        .map(|&w| Keypair::from_seed(local[w].seed()))
        .collect();
    let first: Vec<(OutPoint, Amount)> = payer_wallets.iter().map(|&w| coins[w]).collect();
    let valid_until = UnixSeconds(now_ms() / 1000 + 3600);
    let mut chains = Chains {
        keys,
        payees,
        plan,
        presigned: None,
        live: Mutex::new(first),
        valid_until,
        resume: Mutex::new(None),
    };

    // Presigned: on blocking threads (one chunk per core), outside the timed window.
    let started = Instant::now();
    if args.sign == Signing::Presigned {
        let shared = Arc::new(chains);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let per = payers.div_ceil(cores);
        let mut tasks = Vec::new();
        for chunk in 0..cores {
            let shared = Arc::clone(&shared);
            tasks.push(tokio::task::spawn_blocking(move || {
                let coins = shared.live.lock().expect("coins").clone();
                (chunk * per..((chunk + 1) * per).min(shared.payers()))
                    .map(|w| {
                        let mut coin = coins[w];
                        shared.plan[w]
                            .iter()
                            .map(|&to| {
                                let (t, next) = pay(
                                    &shared.keys[w],
                                    coin,
                                    shared.payees[to as usize],
                                    shared.valid_until,
                                );
                                coin = next;
                                t
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut presigned = Vec::with_capacity(payers);
        for t in tasks {
            presigned.extend(t.await.map_err(|e| e.to_string())?);
        }
        chains = Arc::try_unwrap(shared).map_err(|_| "the chains are still shared")?;
        chains.presigned = Some(presigned);
    }
    Ok(Prepared {
        chains: Arc::new(chains),
        wallets,
        payees_elsewhere: elsewhere.len(),
        open_s,
        fund_s,
        sign_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::phone;

    /// Runs started a millisecond apart (as two phases of one load run may be) get numbers
    /// of their own, each a valid E.164 number of 14 digits.
    #[test]
    fn runs_a_millisecond_apart_use_other_numbers() {
        let start = 1_800_000_000_000u64;
        let prefixes: std::collections::BTreeSet<String> = (0..100u64)
            .map(|ms| phone(&(start + ms).to_be_bytes(), 0)[..8].to_string())
            .collect();
        assert!(
            prefixes.len() >= 95,
            "{} prefixes of 100 runs",
            prefixes.len()
        );
        let p = phone(&start.to_be_bytes(), 9_999_999);
        assert_eq!(p.len(), 15, "{p}");
        assert!(p[1..].bytes().all(|b| b.is_ascii_digit()));
    }
}
