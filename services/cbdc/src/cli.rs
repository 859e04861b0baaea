//! The command line: arguments (clap) and what each command does. Every failure is one line
//! a person can act on; `--json` prints results as JSON for scripts.

use std::path::{Path, PathBuf};

use cbdc_core::messages::{self, AdminOrder, OpenProof, OperatorOrder, Signed};
use cbdc_core::transfer::sign_body;
use cbdc_core::{Address, Amount, Keypair, KycTier, LedgerId, Txid};
use cbdc_proto::convert;
use cbdc_proto::v1;
use cbdc_runtime::shutdown::Shutdown;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::client;
use crate::devnet::{Devnet, DevnetFile};

#[derive(Parser, Debug)]
#[command(
    name = "cbdc",
    version,
    about = "A two-tier digital-currency payment ledger: services, devnet, demo, wallet and admin commands"
)]
pub struct Cli {
    /// Print results as JSON (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one service from a configuration file (examples in deploy/).
    Serve {
        #[arg(value_enum)]
        service: Service,
        /// The TOML configuration; environment variables override it.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the central bank and N bank ledgers on loopback, with durable stores under DIR;
    /// restarting on the same DIR resumes with all data.
    Devnet {
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        banks: u32,
    },
    /// Start a devnet in a temporary directory and run a narrated scenario; exits 0 only if
    /// every step did what it said.
    Demo,
    /// Wallet commands against a running network.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// A bank operator's commands.
    #[command(subcommand)]
    Bank(BankCommand),
    /// The central bank's commands.
    #[command(subcommand, name = "central-bank")]
    CentralBank(CentralBankCommand),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Service {
    Issuance,
    Ledger,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Tier {
    Class1,
    Class2,
    Class3,
    Anonymous,
}

impl From<Tier> for KycTier {
    fn from(t: Tier) -> KycTier {
        match t {
            Tier::Class1 => KycTier::Class1,
            Tier::Class2 => KycTier::Class2,
            Tier::Class3 => KycTier::Class3,
            Tier::Anonymous => KycTier::Class4Anonymous,
        }
    }
}

/// Where the services are: a devnet directory, or an explicit endpoint.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A devnet directory (its devnet.json names every endpoint).
    #[arg(long, default_value = "devnet")]
    pub devnet: PathBuf,
    /// An explicit endpoint (e.g. http://127.0.0.1:50061), instead of the devnet's.
    #[arg(long)]
    pub endpoint: Option<String>,
}

impl Target {
    fn bank(&self, ledger: LedgerId) -> Result<String, String> {
        match &self.endpoint {
            Some(e) => Ok(e.clone()),
            None => DevnetFile::load(&self.devnet)?.bank_url(ledger.0),
        }
    }

    fn central_bank(&self) -> Result<String, String> {
        match &self.endpoint {
            Some(e) => Ok(e.clone()),
            None => Ok(DevnetFile::load(&self.devnet)?.central_bank_url()),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum WalletCommand {
    /// Create a wallet key file (mode 0600), encrypted with a passphrase if one is given.
    New {
        #[arg(long)]
        key: PathBuf,
        /// The name of an environment variable holding a passphrase to encrypt the key with
        /// (age, scrypt); commands using the key then need it in CBDC_WALLET_PASSPHRASE.
        #[arg(long)]
        passphrase_env: Option<String>,
    },
    /// Open the wallet of KEY on a bank ledger.
    Open {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        ledger: u32,
        #[arg(long, value_enum, default_value = "class2")]
        tier: Tier,
        /// The phone number, for the anonymous tier (only its SHA-256 is sent).
        #[arg(long)]
        phone: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// The balance of an address.
    Balance {
        address: String,
        #[command(flatten)]
        target: Target,
    },
    /// Pay AMOUNT (yuan, e.g. 12.30) from the wallet of KEY on LEDGER to an address.
    Pay {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        ledger: u32,
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        target: Target,
    },
    /// An address's history, oldest first.
    History {
        address: String,
        #[command(flatten)]
        target: Target,
    },
    /// Receipts: proof that a transfer is in a ledger's audit log.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Follow an address's incoming and outgoing transfers as they commit (Ctrl-C stops;
    /// `--count N` stops after N).
    Watch {
        address: String,
        /// Resume after this history cursor (from `history --json`); empty for "from now".
        #[arg(long, default_value = "")]
        cursor: String,
        #[arg(long)]
        count: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReceiptCommand {
    /// Fetch the receipt of TXID from LEDGER and verify it offline against the operator key
    /// in the central bank's registry.
    Verify {
        txid: String,
        #[arg(long)]
        ledger: u32,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum BankCommand {
    /// A customer exchanges bank deposits for e-CNY: the bank pays AMOUNT from its vault to
    /// the address (once per request id).
    Exchange {
        address: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        request_id: String,
        /// The bank's operator key file (default: the devnet's for the address's ledger).
        #[arg(long)]
        operator_key: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Freeze a wallet (it can receive, not spend).
    Freeze(WalletAction),
    /// Unfreeze a wallet.
    Unfreeze(WalletAction),
}

#[derive(Args, Debug)]
pub struct WalletAction {
    pub address: String,
    /// The legal order's reference.
    #[arg(long)]
    pub reason: String,
    /// The bank's operator key file (default: the devnet's for the address's ledger).
    #[arg(long)]
    pub operator_key: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum CentralBankCommand {
    /// Issue AMOUNT to the vault of bank LEDGER.
    Mint {
        #[arg(long)]
        ledger: u32,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        request_id: String,
        #[arg(long, default_value = "devnet reserve")]
        reserve_reference: String,
        /// The administrator's key file (default: the devnet's).
        #[arg(long)]
        admin_key: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Bank LEDGER returns AMOUNT from its vault to the central bank (redemption): a
    /// transfer to ledger 0 that settles through the bank's outbox.
    Redeem {
        #[arg(long)]
        ledger: u32,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        request_id: String,
        /// The bank's operator key file (default: the devnet's).
        #[arg(long)]
        operator_key: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Reconcile the books with every ledger's checkpoint.
    Audit {
        #[command(flatten)]
        target: Target,
    },
}

/// The environment variable that unlocks encrypted key files for the other commands.
pub const PASSPHRASE_ENV: &str = "CBDC_WALLET_PASSPHRASE";

fn passphrase(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err(format!(
            "--passphrase-env {var}: the variable is not set or empty"
        )),
    }
}

/// Encrypts `text` with `pass` (age's scrypt recipient).
fn seal(text: &str, pass: &str) -> Result<Vec<u8>, String> {
    let recipient = age::scrypt::Recipient::new(age::secrecy::SecretString::from(pass.to_string()));
    age::encrypt(&recipient, text.as_bytes()).map_err(|e| format!("encrypting the key: {e}"))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("key file {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("key file {}: {e}", path.display()))
}

fn read_key(path: &Path) -> Result<Keypair, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "key file {}: {e} (create one with `cbdc wallet new --key {}`)",
            path.display(),
            path.display()
        )
    })?;
    let text = if bytes.starts_with(b"age-encryption.org/") {
        let pass = std::env::var(PASSPHRASE_ENV).map_err(|_| {
            format!(
                "key file {} is encrypted; put its passphrase in {PASSPHRASE_ENV}",
                path.display()
            )
        })?;
        let identity = age::scrypt::Identity::new(age::secrecy::SecretString::from(pass));
        let plain = age::decrypt(&identity, &bytes).map_err(|e| {
            format!(
                "key file {}: cannot decrypt it ({e}); is {PASSPHRASE_ENV} right?",
                path.display()
            )
        })?;
        String::from_utf8(plain).map_err(|_| format!("key file {}: not a key", path.display()))?
    } else {
        String::from_utf8(bytes).map_err(|_| format!("key file {}: not a key", path.display()))?
    };
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("key file {}: expected 64 hex digits", path.display()))?;
    Ok(Keypair::from_seed(&seed))
}

/// The operator key file given, or the devnet's for `ledger`.
fn operator_key_file(
    given: Option<PathBuf>,
    target: &Target,
    ledger: LedgerId,
) -> Result<PathBuf, String> {
    match given {
        Some(k) => Ok(k),
        None => DevnetFile::load(&target.devnet)?
            .operator_keys
            .get((ledger.0 as usize).wrapping_sub(1))
            .cloned()
            .ok_or_else(|| format!("ledger {}: no such bank in the devnet", ledger.0)),
    }
}

fn address(text: &str) -> Result<Address, String> {
    text.parse().map_err(|e| format!("address {text:?}: {e}"))
}

fn amount(text: &str) -> Result<Amount, String> {
    Amount::parse(text).map_err(|e| format!("amount {text:?}: {e}"))
}

/// Output: a line for people, or JSON.
struct Out {
    json: bool,
    lines: Vec<String>,
}

impl Out {
    fn emit(&mut self, human: String, value: serde_json::Value) {
        self.lines
            .push(if self.json { value.to_string() } else { human });
    }
}

/// Runs a command; returns what it prints. Long-running commands (serve, devnet) print as
/// they go and return when shut down.
pub async fn run(cli: Cli) -> Result<Vec<String>, String> {
    let mut out = Out {
        json: cli.json,
        lines: Vec::new(),
    };
    match cli.command {
        Command::Serve { service, config } => serve(service, &config).await?,
        Command::Devnet { dir, banks } => {
            let shutdown = Shutdown::new().on_signals();
            let devnet = Devnet::start(&dir, banks, shutdown.clone()).await?;
            let f = &devnet.file;
            println!(
                "devnet in {} (Ctrl-C stops it; run again on the same --dir to resume)",
                dir.display()
            );
            println!("  central bank  http://{}", f.central_bank);
            for (i, b) in f.banks.iter().enumerate() {
                println!("  bank {}        http://{b}", i + 1);
            }
            println!("  admin key     {}", f.admin_key.display());
            shutdown.wait().await;
            devnet.stop().await?;
        }
        Command::Demo => {
            let json = cli.json;
            crate::demo::run(Box::new(move |line| {
                if !json {
                    println!("{line}");
                }
            }))
            .await?;
            out.emit(
                "demo: every step did what it said".into(),
                json!({"ok": true}),
            );
        }
        Command::Wallet(w) => wallet(w, &mut out).await?,
        Command::Bank(b) => bank(b, &mut out).await?,
        Command::CentralBank(c) => central_bank(c, &mut out).await?,
    }
    Ok(out.lines)
}

async fn serve(service: Service, config: &Path) -> Result<(), String> {
    let shutdown = Shutdown::new().on_signals();
    match service {
        Service::Ledger => {
            let c: cbdc_ledger::config::LedgerConfig =
                cbdc_runtime::config::load(Some(config), cbdc_ledger::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            cbdc_runtime::telemetry::init(c.log_json);
            let running = cbdc_ledger::serve(c, shutdown)
                .await
                .map_err(|e| e.to_string())?;
            running.wait().await.map_err(|e| e.to_string())
        }
        Service::Issuance => {
            let c: cbdc_issuance::config::IssuanceConfig =
                cbdc_runtime::config::load(Some(config), cbdc_issuance::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            cbdc_runtime::telemetry::init(c.log_json);
            let running = cbdc_issuance::serve(c, shutdown)
                .await
                .map_err(|e| e.to_string())?;
            running.wait().await.map_err(|e| e.to_string())
        }
    }
}

async fn wallet(w: WalletCommand, out: &mut Out) -> Result<(), String> {
    match w {
        WalletCommand::New {
            key,
            passphrase_env,
        } => {
            if key.exists() {
                return Err(format!(
                    "key file {} already exists; not overwriting it",
                    key.display()
                ));
            }
            let seed = match passphrase_env {
                None => cbdc_runtime::secret::load_or_create_seed(&key)
                    .map_err(|e| format!("key file {}: {e}", key.display()))?,
                Some(var) => {
                    let k = Keypair::generate(&mut rand::rngs::OsRng);
                    let sealed = seal(&hex::encode(k.seed()), &passphrase(&var)?)?;
                    write_private(&key, &sealed)?;
                    *k.seed()
                }
            };
            let k = Keypair::from_seed(&seed);
            let pk = hex::encode(k.public().as_bytes());
            out.emit(
                format!(
                    "new wallet key in {} (mode 0600); public key {pk}",
                    key.display()
                ),
                json!({"key_file": key, "public_key": pk}),
            );
        }
        WalletCommand::Open {
            key,
            ledger,
            tier,
            phone,
            target,
        } => {
            let k = read_key(&key)?;
            let ledger = LedgerId(ledger);
            let tier = KycTier::from(tier);
            let phone_hash = match (tier, phone) {
                (KycTier::Class4Anonymous, None) => {
                    return Err("--phone: the anonymous tier needs a phone number".into());
                }
                (_, Some(p)) => {
                    use sha2::Digest;
                    sha2::Sha256::digest(p.as_bytes()).to_vec()
                }
                (_, None) => Vec::new(),
            };
            let mut c = client::ledger(&target.bank(ledger)?).await?;
            let w = c
                .open_wallet(v1::OpenWalletRequest {
                    public_key: k.public().as_bytes().to_vec(),
                    tier: convert::to_kyc_tier(tier) as i32,
                    phone_hash,
                    signature: OpenProof {
                        ledger,
                        key: k.public(),
                    }
                    .sign(&k)
                    .to_vec(),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!("opened {}", w.address),
                json!({"address": w.address, "balance": w.balance}),
            );
        }
        WalletCommand::Balance { address: a, target } => {
            let addr = address(&a)?;
            let mut c = client::ledger(&target.bank(addr.ledger)?).await?;
            let b = c
                .get_balance(v1::GetBalanceRequest { address: a.clone() })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!("{a}: {} (spent today {})", b.balance, b.spent_today),
                json!({"address": a, "balance": b.balance, "spent_today": b.spent_today, "unspent_outputs": b.unspent_outputs}),
            );
        }
        WalletCommand::Pay {
            key,
            ledger,
            to,
            amount: a,
            target,
        } => {
            let k = read_key(&key)?;
            let to_addr = address(&to)?;
            amount(&a)?;
            let ledger = LedgerId(ledger);
            let mut c = client::ledger(&target.bank(ledger)?).await?;
            let built = c
                .build_transfer(v1::BuildTransferRequest {
                    from_address: Address::new(ledger, k.public()).to_string(),
                    payments: vec![v1::Payment {
                        to_address: to_addr.to_string(),
                        amount: a.clone(),
                    }],
                    memo: Vec::new(),
                    valid_for_s: 0,
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            let t = sign_body(built.body, &[&k]).map_err(|e| e.to_string())?;
            c.submit_transfer(v1::SubmitTransferRequest {
                transfer: Some(convert::to_signed_transfer(&t)),
            })
            .await
            .map_err(|s| client::status(&s))?;
            out.emit(
                format!("paid {a} to {to}: txid {}", t.txid()),
                json!({"txid": t.txid().to_string(), "amount": a, "to": to}),
            );
        }
        WalletCommand::History { address: a, target } => {
            let addr = address(&a)?;
            let mut c = client::ledger(&target.bank(addr.ledger)?).await?;
            let h = c
                .list_history(v1::ListHistoryRequest {
                    address: a.clone(),
                    page: None,
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            for e in &h.entries {
                out.emit(
                    format!(
                        "{} {} {}",
                        if e.incoming { "in " } else { "out" },
                        e.amount,
                        hex::encode(&e.txid)
                    ),
                    json!({"incoming": e.incoming, "amount": e.amount, "txid": hex::encode(&e.txid)}),
                );
            }
        }
        WalletCommand::Watch {
            address: a,
            cursor,
            count,
            target,
        } => {
            let addr = address(&a)?;
            let mut c = client::ledger(&target.bank(addr.ledger)?).await?;
            let mut stream = c
                .watch_wallet(v1::WatchWalletRequest {
                    address: a.clone(),
                    cursor,
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            let mut seen = 0usize;
            while count.is_none_or(|n| seen < n) {
                let Some(e) = stream.message().await.map_err(|s| client::status(&s))? else {
                    break;
                };
                seen += 1;
                let line = if out.json {
                    json!({"incoming": e.incoming, "amount": e.amount, "txid": hex::encode(&e.txid), "cursor": e.cursor}).to_string()
                } else {
                    format!(
                        "{} {} {}",
                        if e.incoming { "in " } else { "out" },
                        e.amount,
                        hex::encode(&e.txid)
                    )
                };
                println!("{line}");
            }
        }
        WalletCommand::Receipt(ReceiptCommand::Verify {
            txid,
            ledger,
            target,
        }) => {
            let id = Txid(
                hex::decode(&txid)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("txid {txid:?}: expected 64 hex digits"))?,
            );
            let ledger = LedgerId(ledger);
            let mut c = client::ledger(&target.bank(ledger)?).await?;
            let r = c
                .get_receipt(v1::GetReceiptRequest {
                    txid: id.0.to_vec(),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            let mut cb = client::issuance(&target.central_bank()?).await?;
            let ops = cb
                .list_operators(v1::ListOperatorsRequest { page: None })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner()
                .operators;
            let op = ops
                .iter()
                .find(|o| o.ledger_id == ledger.0)
                .ok_or_else(|| {
                    format!("ledger {}: not in the central bank's registry", ledger.0)
                })?;
            let key = cbdc_core::PublicKey::from_bytes(
                op.operator_public_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| "the registry's key is malformed".to_string())?,
            );
            let receipt = convert::receipt(&r).map_err(|e| e.to_string())?;
            cbdc_core::audit::verify_receipt(&receipt, ledger, &key)
                .map_err(|e| format!("the receipt does not verify: {e}"))?;
            out.emit(
                format!(
                    "verified: txid {txid} is leaf {} of the {}-leaf log of ledger {}, checkpoint signed by its operator",
                    receipt.index, receipt.checkpoint.size, ledger.0
                ),
                json!({"verified": true, "index": receipt.index, "size": receipt.checkpoint.size, "root": hex::encode(receipt.checkpoint.root)}),
            );
        }
    }
    Ok(())
}

async fn bank(b: BankCommand, out: &mut Out) -> Result<(), String> {
    let (action, a) = match b {
        BankCommand::Exchange {
            address: a,
            amount: x,
            request_id,
            operator_key,
            target,
        } => {
            let addr = address(&a)?;
            amount(&x)?;
            let operator = read_key(&operator_key_file(operator_key, &target, addr.ledger)?)?;
            let direction = v1::exchange_request::Direction::DepositToWallet as i32;
            let sig = OperatorOrder::Exchange {
                address: &a,
                request_id: &request_id,
                amount: &x,
                direction,
                wallet_transfer: None,
            }
            .sign(&operator)
            .to_vec();
            let mut c = client::ledger(&target.bank(addr.ledger)?).await?;
            let r = c
                .exchange(v1::ExchangeRequest {
                    address: a.clone(),
                    amount: x.clone(),
                    direction,
                    request_id,
                    wallet_transfer: None,
                    operator_signature: sig,
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "paid {x} from the vault to {a}: txid {}",
                    hex::encode(&r.txid)
                ),
                json!({"address": a, "amount": x, "txid": hex::encode(&r.txid)}),
            );
            return Ok(());
        }
        BankCommand::Freeze(a) => (messages::WalletAction::Freeze, a),
        BankCommand::Unfreeze(a) => (messages::WalletAction::Unfreeze, a),
    };
    let addr = address(&a.address)?;
    let key_file = operator_key_file(a.operator_key.clone(), &a.target, addr.ledger)?;
    let operator = read_key(&key_file)?;
    let request_id = format!("{}-{}-{}", action.name(), a.address, a.reason);
    let request = v1::WalletActionRequest {
        operator_signature: OperatorOrder::Wallet {
            action,
            address: &a.address,
            request_id: &request_id,
            reason: &a.reason,
        }
        .sign(&operator)
        .to_vec(),
        address: a.address.clone(),
        reason: a.reason.clone(),
        request_id,
    };
    let mut c = client::ledger(&a.target.bank(addr.ledger)?).await?;
    let w = if action == messages::WalletAction::Freeze {
        c.freeze_wallet(request).await
    } else {
        c.unfreeze_wallet(request).await
    }
    .map_err(|s| client::status(&s))?
    .into_inner();
    let status = format!(
        "{:?}",
        v1::WalletStatus::try_from(w.status).unwrap_or_default()
    );
    out.emit(
        format!("{}: {status}", w.address),
        json!({"address": w.address, "status": status}),
    );
    Ok(())
}

async fn central_bank(c: CentralBankCommand, out: &mut Out) -> Result<(), String> {
    match c {
        CentralBankCommand::Mint {
            ledger,
            amount: a,
            request_id,
            reserve_reference,
            admin_key,
            target,
        } => {
            amount(&a)?;
            let admin_file = match admin_key {
                Some(k) => k,
                None => DevnetFile::load(&target.devnet)?.admin_key,
            };
            let admin = read_key(&admin_file)?;
            let sig = AdminOrder::Mint {
                request_id: &request_id,
                ledger: LedgerId(ledger),
                amount: &a,
                reserve_reference: &reserve_reference,
            }
            .sign(&admin);
            let mut cb = client::issuance(&target.central_bank()?).await?;
            let r = cb
                .mint(v1::MintRequest {
                    request_id,
                    ledger_id: ledger,
                    amount: a.clone(),
                    reserve_reference,
                    admin_signature: sig.to_vec(),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "{} {a} to bank {ledger}; its outstanding is {}",
                    if r.already_minted { "already issued" } else { "issued" },
                    r.outstanding
                ),
                json!({"ledger": ledger, "amount": a, "outstanding": r.outstanding, "already_minted": r.already_minted}),
            );
        }
        CentralBankCommand::Redeem {
            ledger,
            amount: a,
            request_id,
            operator_key,
            target,
        } => {
            amount(&a)?;
            let operator = read_key(&operator_key_file(operator_key, &target, LedgerId(ledger))?)?;
            let sig = OperatorOrder::Redeem {
                amount: &a,
                request_id: &request_id,
            }
            .sign(&operator);
            let mut c = client::ledger(&target.bank(LedgerId(ledger))?).await?;
            let r = c
                .redeem(v1::RedeemRequest {
                    amount: a.clone(),
                    request_id,
                    operator_signature: sig.to_vec(),
                })
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "bank {ledger} returns {a} to the central bank: txid {}",
                    hex::encode(&r.txid)
                ),
                json!({"ledger": ledger, "amount": a, "txid": hex::encode(&r.txid)}),
            );
        }
        CentralBankCommand::Audit { target } => {
            let mut cb = client::issuance(&target.central_bank()?).await?;
            let a = cb
                .audit(v1::AuditRequest {})
                .await
                .map_err(|s| client::status(&s))?
                .into_inner();
            out.emit(
                format!(
                    "issued {} − redeemed {} = {}; {}",
                    a.issued,
                    a.redeemed,
                    a.outstanding,
                    if a.balanced { "balanced" } else { "NOT balanced" }
                ),
                json!({"issued": a.issued, "redeemed": a.redeemed, "outstanding": a.outstanding, "balanced": a.balanced}),
            );
            for l in &a.ledgers {
                out.emit(
                    format!(
                        "  bank {}: books {}, reported {}, in flight {}, unacknowledged {}{}",
                        l.ledger_id,
                        l.outstanding_books,
                        l.outstanding_reported,
                        l.in_flight_in,
                        l.unacknowledged_out,
                        if l.balanced { "" } else { " — NOT balanced" }
                    ),
                    json!({"ledger": l.ledger_id, "books": l.outstanding_books, "reported": l.outstanding_reported, "balanced": l.balanced}),
                );
            }
        }
    }
    Ok(())
}
