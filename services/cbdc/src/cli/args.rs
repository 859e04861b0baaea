//! The command line, as clap types: every command, argument and its help.

use std::path::PathBuf;

use cbdc_core::{KycTier, LedgerId};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::Dial;
use crate::devnet::DevnetFile;

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
        /// Only check the configuration (every key known, keys and endpoints well formed)
        /// and exit: for a deployment's CI, before a rollout.
        #[arg(long)]
        check: bool,
    },
    /// Run the central bank and N bank ledgers on loopback, with durable stores under DIR;
    /// restarting on the same DIR resumes with all data.
    Devnet {
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        banks: u32,
        /// Run each service as a process of its own (`cbdc serve` from a configuration file
        /// written into DIR, logging beside it) instead of all in this one.
        #[arg(long)]
        processes: bool,
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
    /// Auditing a bank without trusting it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The merchant gateway: onboarding, orders and QR codes, payments, refunds, holds,
    /// mandates, statements and webhook events.
    #[command(subcommand)]
    Merchant(super::MerchantCommand),
    /// Stress a network with presigned transfers (a devnet it starts as a separate process,
    /// or a running one) and report throughput, latency, errors and server cost; exits 0
    /// only if every acknowledged transfer is found committed and the audit balances.
    Load(cbdc_load::LoadArgs),
    /// A Jepsen-style bank test: the central bank and two ledgers as processes behind
    /// loopback proxies, paid at under load while a seeded nemesis kills, restarts,
    /// partitions and pauses them; then checks that no acknowledged transfer was lost, no
    /// coin spent twice and the books balance. Exits 0 only if every check passes.
    Chaos(crate::chaos::ChaosArgs),
    /// Abusive clients against a bank ledger in its own process — thousands of watch
    /// streams, a flood of maximum-size batches, idle connections beyond the cap — beside a
    /// well-behaved client whose p99 is measured alone and under the abuse. Exits 0 only if
    /// nothing acknowledged is lost, the ledger keeps running and every overload refusal
    /// carries retry advice.
    Overload(crate::overload::OverloadArgs),
    /// The central bank's console: a web page for the administrator showing supply, each
    /// ledger's outstanding value, checkpoint freshness, the audit, flows between banks
    /// and transfers per second, live. Log in with the token in `--token-file` (made, mode
    /// 0600, on first start).
    Console {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "console.token")]
        token_file: PathBuf,
        /// How often the audit is read, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[command(flatten)]
        admin_cert: AdminCert,
        #[command(flatten)]
        target: Target,
    },
    /// Ask a service's gRPC health service whether it is serving (for container and
    /// Kubernetes probes, which cannot speak TLS themselves): exits 0 only if it is.
    Health {
        /// The service's gRPC endpoint (https://host:port, or http:// for a plaintext one).
        #[arg(long)]
        endpoint: String,
        /// The name its certificate carries (`central-bank`, `bank-<id>`,
        /// `merchant-gateway`).
        #[arg(long)]
        name: String,
        /// The network's CA certificate to check it against.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The gRPC service to ask about (empty: the server as a whole).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// A certificate authority for a test deployment: writes `ca.crt` and, for each NAME, a
    /// certificate naming it (and `localhost`, 127.0.0.1) with its key (mode 0600) into DIR.
    /// Service names: `central-bank`, `bank-<id>`, `merchant-gateway`, `admin`. A production
    /// network uses its own PKI instead.
    Certs {
        #[arg(long)]
        dir: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// The administrator's TLS client certificate and key (default: the devnet's).
#[derive(Args, Debug)]
pub struct AdminCert {
    #[arg(long)]
    pub admin_cert: Option<PathBuf>,
    #[arg(long)]
    pub admin_cert_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Read bank LEDGER's whole log and rebuild its Merkle tree, unspent outputs, their sum
    /// and set hash from the transfers alone, checking every signed checkpoint against them;
    /// exits non-zero naming the checkpoint at fault.
    Replay {
        #[arg(long)]
        ledger: u32,
        /// The bank's operator public key (hex) its checkpoints must be signed with
        /// (default: the devnet's).
        #[arg(long)]
        operator_key: Option<String>,
        #[command(flatten)]
        admin_cert: AdminCert,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Service {
    Issuance,
    Ledger,
    /// The merchant gateway (HTTP/JSON).
    Merchant,
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
    /// The network's name, instead of the devnet's (signed requests name it).
    #[arg(long)]
    pub network: Option<String>,
    /// The network's CA certificate (PEM) to check an https:// endpoint against, instead of
    /// the devnet's.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

impl Target {
    /// How to reach bank `ledger`: the endpoint given (with `--ca`), or the devnet's.
    pub(super) fn bank(&self, ledger: LedgerId) -> Result<Dial, String> {
        let peer = cbdc_runtime::tls::bank_name(ledger.0);
        match &self.endpoint {
            Some(e) => self.with_ca(Dial::new(e.clone(), peer)),
            None => {
                let f = DevnetFile::load(&self.devnet)?;
                Dial::new(f.bank_url(ledger.0)?, peer)
                    .with_ca(&f.ca_cert)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// How to reach the central bank, without a client certificate.
    pub(super) fn central_bank(&self) -> Result<Dial, String> {
        let peer = cbdc_runtime::tls::CENTRAL_BANK_NAME.to_string();
        match &self.endpoint {
            Some(e) => self.with_ca(Dial::new(e.clone(), peer)),
            None => {
                let f = DevnetFile::load(&self.devnet)?;
                Dial::new(f.central_bank_url(), peer)
                    .with_ca(&f.ca_cert)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// How to reach the central bank as its administrator: with the devnet's administrator
    /// certificate (or the ones given).
    pub(super) fn central_bank_admin(&self, cert: &AdminCert) -> Result<Dial, String> {
        self.as_admin(self.central_bank()?, cert)
    }

    /// `dial` presenting the administrator's certificate: the one given, else the devnet's
    /// (none when an endpoint was given instead of a devnet).
    pub(super) fn as_admin(&self, dial: Dial, cert: &AdminCert) -> Result<Dial, String> {
        match (&cert.admin_cert, &cert.admin_cert_key) {
            (Some(c), Some(k)) => dial.with_identity(c, k).map_err(|e| e.to_string()),
            (None, None) if self.endpoint.is_none() => {
                let f = DevnetFile::load(&self.devnet)?;
                dial.with_identity(&f.admin_cert, &f.admin_cert_key)
                    .map_err(|e| e.to_string())
            }
            (None, None) => Ok(dial),
            _ => Err("--admin-cert and --admin-cert-key go together".into()),
        }
    }

    fn with_ca(&self, dial: Dial) -> Result<Dial, String> {
        match &self.ca {
            Some(ca) => dial.with_ca(ca).map_err(|e| e.to_string()),
            None => Ok(dial),
        }
    }

    pub(super) fn network(&self) -> Result<String, String> {
        match &self.network {
            Some(n) => Ok(n.clone()),
            None => Ok(DevnetFile::load(&self.devnet)?.network),
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
    /// Open the wallet of KEY on a bank ledger: anonymous, with a phone number (one wallet
    /// per number at each bank). Higher tiers come from the bank after its identity check
    /// (`cbdc bank set-tier`).
    Open {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        ledger: u32,
        /// The phone number, E.164 (e.g. +8613800000000); the bank keeps only a keyed hash.
        #[arg(long)]
        phone: String,
        /// The tier asked for: only anonymous is granted to a customer alone.
        #[arg(long, value_enum, default_value = "anonymous")]
        tier: Tier,
        #[command(flatten)]
        target: Target,
    },
    /// The balance of an address (the read is signed with the wallet's KEY).
    Balance {
        address: String,
        #[arg(long)]
        key: PathBuf,
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
    /// An address's history, oldest first (signed with the wallet's KEY).
    History {
        address: String,
        #[arg(long)]
        key: PathBuf,
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
        #[arg(long)]
        key: PathBuf,
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
    /// Fetch the receipt of TXID from LEDGER (as the payer or a payee, KEY) and verify it
    /// offline against the operator key in the central bank's registry.
    Verify {
        txid: String,
        #[arg(long)]
        ledger: u32,
        #[arg(long)]
        key: PathBuf,
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
        #[command(flatten)]
        order: OperatorPayment,
    },
    /// Freeze a wallet (it can receive, not spend).
    Freeze(WalletAction),
    /// Unfreeze a wallet.
    Unfreeze(WalletAction),
    /// Move a wallet to another KYC tier after the bank's identity check.
    SetTier {
        address: String,
        #[arg(long, value_enum)]
        tier: Tier,
        /// The identity check's reference.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        order: AuthorityOrder,
    },
    /// A wallet as the bank sees it: tier, status, balance and its tier changes.
    Show {
        address: String,
        #[command(flatten)]
        order: AuthorityOrder,
    },
}

/// Who signs a bank's order and where it goes.
#[derive(Args, Debug)]
pub struct AuthorityOrder {
    /// Names the order (done once); a fresh random id if absent.
    #[arg(long)]
    pub request_id: Option<String>,
    /// The bank's authority key file (default: the devnet's for the address's ledger).
    #[arg(long)]
    pub authority_key: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
pub struct WalletAction {
    pub address: String,
    /// The legal order's reference.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub order: AuthorityOrder,
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
        admin_cert: AdminCert,
        #[command(flatten)]
        target: Target,
    },
    /// Bank LEDGER returns AMOUNT from its vault to the central bank (redemption): a
    /// transfer to ledger 0 that settles through the bank's outbox.
    Redeem {
        #[arg(long)]
        ledger: u32,
        #[command(flatten)]
        order: OperatorPayment,
    },
    /// Reconcile the books with every ledger's checkpoint.
    Audit {
        #[command(flatten)]
        target: Target,
    },
    /// Register bank LEDGER: its operator public key (which signs its settlements and
    /// checkpoints) and the endpoint the central bank delivers to. Signed by the
    /// administrator, once per request id.
    RegisterBank {
        #[arg(long)]
        ledger: u32,
        /// The operator's public key (64 hex digits), as `cbdc wallet new --key` prints it.
        #[arg(long, conflicts_with = "operator_key_file")]
        operator_public_key: Option<String>,
        /// Or the operator's key file, whose public key is registered.
        #[arg(long)]
        operator_key_file: Option<PathBuf>,
        /// Where the central bank reaches the ledger (e.g. https://bank-1:50061).
        #[arg(long)]
        bank_endpoint: String,
        #[arg(long)]
        request_id: String,
        /// The administrator's key file (default: the devnet's).
        #[arg(long)]
        admin_key: Option<PathBuf>,
        #[command(flatten)]
        admin_cert: AdminCert,
        #[command(flatten)]
        target: Target,
    },
}

/// A payment from the bank's vault that its authority orders: how much, once per which
/// request id, with which key, to which network.
#[derive(Args, Debug)]
pub struct OperatorPayment {
    #[arg(long)]
    pub amount: String,
    #[arg(long)]
    pub request_id: String,
    /// The bank's authority key file (default: the devnet's for the ledger).
    #[arg(long)]
    pub authority_key: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}
