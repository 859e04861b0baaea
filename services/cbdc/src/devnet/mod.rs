//! A development network on loopback: the central bank and N bank ledgers, each a real
//! service with a durable embedded store under one directory, talking mutual TLS. Keys, a
//! CA of its own and one certificate per service (and one for the administrator) are made on
//! the first start; the ports chosen then are kept in `devnet.json`, so a restart on the
//! same directory resumes with all data at the same addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cbdc_core::{Keypair, LedgerId};
use cbdc_issuance::RunningIssuance;
use cbdc_issuance::config::IssuanceConfig;
use cbdc_ledger::RunningLedger;
use cbdc_ledger::config::LedgerConfig;
use cbdc_proto::requests;
use cbdc_runtime::shutdown::Shutdown;
use serde::{Deserialize, Serialize};

mod processes;
pub use processes::{BankRoute, DevnetProcesses, Routes};

/// Bank ledgers a devnet runs, at most.
pub const BANKS_MAX: u32 = 16;

/// What a devnet directory records about itself (`devnet.json`), read by the CLI.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevnetFile {
    /// The network's name (random per devnet): signed requests name it.
    pub network: String,
    pub central_bank: SocketAddr,
    pub banks: Vec<SocketAddr>,
    /// Each service's Prometheus `/metrics` address (plain HTTP): the central bank's, and
    /// the banks' in ledger order.
    #[serde(default)]
    pub central_bank_metrics: Option<SocketAddr>,
    #[serde(default)]
    pub bank_metrics: Vec<SocketAddr>,
    /// The merchant gateway's HTTP/JSON address.
    #[serde(default)]
    pub merchant_gateway: Option<SocketAddr>,
    /// Its gRPC face (`cbdc.v1.MerchantGateway`).
    #[serde(default)]
    pub merchant_gateway_grpc: Option<SocketAddr>,
    /// Its Prometheus `/metrics` address.
    #[serde(default)]
    pub merchant_gateway_metrics: Option<SocketAddr>,
    /// Key files: the administrator's, each bank's operator (vault and settlement) key,
    /// and each bank's authority key (orders and reads).
    pub admin_key: PathBuf,
    pub operator_keys: Vec<PathBuf>,
    pub authority_keys: Vec<PathBuf>,
    /// The devnet's CA certificate, and the administrator's TLS client certificate and key.
    pub ca_cert: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_cert_key: PathBuf,
    /// When every service runs in a process of its own (`cbdc devnet --processes`): their
    /// process ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<DevnetPids>,
}

/// The process ids of a devnet whose services run as separate processes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevnetPids {
    pub central_bank: u32,
    /// In ledger order.
    pub banks: Vec<u32>,
    #[serde(default)]
    pub merchant: Option<u32>,
}

impl DevnetFile {
    pub fn load(dir: &Path) -> Result<DevnetFile, String> {
        let path = dir.join("devnet.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (is a devnet running from this directory? start one with `cbdc devnet --dir {}`)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn central_bank_url(&self) -> String {
        format!("https://{}", self.central_bank)
    }

    /// How to reach the central bank (as a wallet or a bank's staff: no client certificate).
    pub fn central_bank_dial(&self) -> Result<crate::client::Dial, String> {
        crate::client::Dial::new(
            self.central_bank_url(),
            cbdc_runtime::tls::CENTRAL_BANK_NAME,
        )
        .with_ca(&self.ca_cert)
        .map_err(|e| e.to_string())
    }

    /// How to reach the central bank as its administrator.
    pub fn admin_dial(&self) -> Result<crate::client::Dial, String> {
        self.central_bank_dial()?
            .with_identity(&self.admin_cert, &self.admin_cert_key)
            .map_err(|e| e.to_string())
    }

    /// How to reach bank `ledger`.
    pub fn bank_dial(&self, ledger: u32) -> Result<crate::client::Dial, String> {
        crate::client::Dial::new(self.bank_url(ledger)?, cbdc_runtime::tls::bank_name(ledger))
            .with_ca(&self.ca_cert)
            .map_err(|e| e.to_string())
    }

    pub fn bank_url(&self, ledger: u32) -> Result<String, String> {
        self.banks
            .get((ledger as usize).wrapping_sub(1))
            .map(|a| format!("https://{a}"))
            .ok_or_else(|| {
                format!(
                    "ledger {ledger}: this devnet has banks 1 to {}",
                    self.banks.len()
                )
            })
    }
}

/// A running devnet.
pub struct Devnet {
    pub dir: PathBuf,
    pub file: DevnetFile,
    pub admin: Keypair,
    pub central_bank: RunningIssuance,
    pub banks: Vec<RunningLedger>,
    pub merchant: cbdc_merchant::RunningGateway,
    pub operators: Vec<Keypair>,
    pub authorities: Vec<Keypair>,
}

fn key(path: &Path) -> Result<Keypair, String> {
    cbdc_runtime::secret::load_or_create_seed(path)
        .map(|s| Keypair::from_seed(&s))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The merchant gateway's certificate name.
pub const MERCHANT_GATEWAY_NAME: &str = "merchant-gateway";

/// What a devnet is made of before anything runs: its keys, certificates and each service's
/// configuration (listening on the addresses of a previous start, or on port 0).
pub(crate) struct Plan {
    pub dir: PathBuf,
    pub network: String,
    pub admin: Keypair,
    admin_key: PathBuf,
    tls_dir: PathBuf,
    pub central_bank: IssuanceConfig,
    /// One per bank; `central_bank_endpoint` is set once the central bank's address is known.
    pub banks: Vec<LedgerConfig>,
    /// The merchant gateway, onboarding merchants for every bank.
    pub merchant: cbdc_merchant::config::MerchantConfig,
    pub operators: Vec<Keypair>,
    operator_keys: Vec<PathBuf>,
    pub authorities: Vec<Keypair>,
    authority_keys: Vec<PathBuf>,
}

impl Plan {
    /// The plan of the devnet in `dir` with `banks` ledgers: made on the first start, read
    /// back on a restart.
    pub fn make(dir: &Path, banks: u32) -> Result<Plan, String> {
        if banks == 0 || banks > BANKS_MAX {
            return Err(format!(
                "--banks {banks}: between 1 and {BANKS_MAX} are supported"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let previous = DevnetFile::load(dir).ok();
        if let Some(p) = &previous
            && p.banks.len() != banks as usize
        {
            return Err(format!(
                "{} holds a devnet of {} banks; start it with --banks {} or use another directory",
                dir.display(),
                p.banks.len(),
                p.banks.len()
            ));
        }
        let admin_key = dir.join("admin.key");
        let admin = key(&admin_key)?;
        let network = match &previous {
            Some(p) => p.network.clone(),
            None => {
                use rand::RngCore;
                let mut b = [0u8; 4];
                rand::rngs::OsRng.fill_bytes(&mut b);
                format!("devnet-{}", hex::encode(b))
            }
        };
        // The devnet's own CA and certificates, made once.
        let tls_dir = dir.join("tls");
        if !tls_dir.join("ca.crt").exists() {
            let ca = cbdc_runtime::tls::DevCa::new(&format!("{network} CA"))?;
            let mut names = vec![
                cbdc_runtime::tls::CENTRAL_BANK_NAME.to_string(),
                cbdc_runtime::tls::ADMIN_NAME.to_string(),
            ];
            names.extend((1..=banks).map(cbdc_runtime::tls::bank_name));
            names.push(MERCHANT_GATEWAY_NAME.to_string());
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            ca.write(&tls_dir, &names)?;
        }
        let cb_dir = dir.join("central-bank");
        let mut cb_config = IssuanceConfig::local(&cb_dir, &network, &admin.public());
        cb_config.tls =
            cbdc_runtime::tls::TlsConfig::in_dir(&tls_dir, cbdc_runtime::tls::CENTRAL_BANK_NAME);
        if let Some(p) = &previous {
            cb_config.listen = p.central_bank;
            if let Some(m) = p.central_bank_metrics {
                cb_config.metrics_listen = m;
            }
        }
        cb_config.delivery_interval_ms = 20;
        cb_config.audit_interval_ms = 1_000;
        let cb_key = key(&cb_config.signing_key_file)?;
        let mut plan = Plan {
            dir: dir.to_path_buf(),
            network: network.clone(),
            admin,
            admin_key,
            tls_dir: tls_dir.clone(),
            central_bank: cb_config,
            banks: Vec::new(),
            merchant: {
                let mut m =
                    cbdc_merchant::config::MerchantConfig::local(&dir.join("merchant"), &network);
                if let Some(a) = previous.as_ref().and_then(|p| p.merchant_gateway) {
                    m.listen = a;
                }
                if let Some(a) = previous.as_ref().and_then(|p| p.merchant_gateway_grpc) {
                    m.grpc_listen = a;
                }
                if let Some(a) = previous.as_ref().and_then(|p| p.merchant_gateway_metrics) {
                    m.metrics_listen = a;
                }
                m.tls = cbdc_runtime::tls::TlsConfig::in_dir(&tls_dir, MERCHANT_GATEWAY_NAME);
                m
            },
            operators: Vec::new(),
            operator_keys: Vec::new(),
            authorities: Vec::new(),
            authority_keys: Vec::new(),
        };
        for id in 1..=banks {
            let bank_dir = dir.join(format!("bank-{id}"));
            let authority_key = dir.join(format!("bank-{id}-authority.key"));
            let authority = key(&authority_key)?;
            let mut c = LedgerConfig::local(id, &bank_dir, &network, &authority.public());
            if let Some(p) = &previous {
                c.listen = p.banks[id as usize - 1];
                if let Some(m) = p.bank_metrics.get(id as usize - 1) {
                    c.metrics_listen = *m;
                }
            }
            c.central_bank_public_key = Some(hex::encode(cb_key.public().as_bytes()));
            c.tls =
                cbdc_runtime::tls::TlsConfig::in_dir(&tls_dir, &cbdc_runtime::tls::bank_name(id));
            c.outbox_interval_ms = 20;
            c.sequencer_interval_ms = 50;
            c.checkpoint_interval_ms = 500;
            plan.operators.push(key(&c.operator_key_file)?);
            plan.operator_keys.push(c.operator_key_file.clone());
            plan.banks.push(c);
            plan.merchant
                .banks
                .insert(id.to_string(), hex::encode(authority.public().as_bytes()));
            plan.authorities.push(authority);
            plan.authority_keys.push(authority_key);
        }
        Ok(plan)
    }

    /// `devnet.json` for the services listening where they do now, written to the directory.
    pub fn write_file(
        &self,
        central_bank: (SocketAddr, SocketAddr),
        banks: &[(SocketAddr, SocketAddr)],
        merchant: (SocketAddr, SocketAddr, SocketAddr),
        pids: Option<DevnetPids>,
    ) -> Result<DevnetFile, String> {
        let file = DevnetFile {
            network: self.network.clone(),
            central_bank: central_bank.0,
            banks: banks.iter().map(|b| b.0).collect(),
            central_bank_metrics: Some(central_bank.1),
            bank_metrics: banks.iter().map(|b| b.1).collect(),
            merchant_gateway: Some(merchant.0),
            merchant_gateway_grpc: Some(merchant.1),
            merchant_gateway_metrics: Some(merchant.2),
            admin_key: self.admin_key.clone(),
            operator_keys: self.operator_keys.clone(),
            authority_keys: self.authority_keys.clone(),
            ca_cert: self.tls_dir.join("ca.crt"),
            admin_cert: self
                .tls_dir
                .join(format!("{}.crt", cbdc_runtime::tls::ADMIN_NAME)),
            admin_cert_key: self
                .tls_dir
                .join(format!("{}.key", cbdc_runtime::tls::ADMIN_NAME)),
            pids,
        };
        std::fs::write(
            self.dir.join("devnet.json"),
            serde_json::to_string_pretty(&file).expect("serialisable"),
        )
        .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        Ok(file)
    }
}

/// Registers every bank with the central bank (again, harmlessly, on a restart: the same
/// order answers alike and keeps the bank's status).
pub(crate) async fn register_all(
    file: &DevnetFile,
    admin: &Keypair,
    operators: &[Keypair],
) -> Result<(), String> {
    let mut cb = crate::client::issuance(&file.admin_dial()?).await?;
    for (i, (bank, op)) in file.banks.iter().zip(operators).enumerate() {
        let id = (i + 1) as u32;
        let endpoint = format!("https://{bank}");
        let header = requests::header(
            &file.network,
            cbdc_core::messages::CENTRAL_BANK,
            &format!("devnet-register-{id}-{endpoint}"),
            crate::cli::now_ms() + requests::ORDER_VALID_FOR_MS,
        );
        cb.register_operator(requests::register_operator(
            admin,
            header,
            LedgerId(id),
            &op.public(),
            &endpoint,
        ))
        .await
        .map_err(|s| format!("registering bank {id}: {}", s.message()))?;
    }
    Ok(())
}

impl Devnet {
    /// Starts (or resumes) the devnet in `dir` with `banks` ledgers, every service in this
    /// process.
    pub async fn start(dir: &Path, banks: u32, shutdown: Shutdown) -> Result<Devnet, String> {
        let plan = Plan::make(dir, banks)?;
        let central_bank = cbdc_issuance::serve(plan.central_bank.clone(), shutdown.clone())
            .await
            .map_err(|e| format!("central bank: {e}"))?;
        let mut running = Vec::new();
        for c in &plan.banks {
            let mut c = c.clone();
            c.central_bank_endpoint = Some(format!("https://{}", central_bank.grpc_addr));
            let id = c.ledger_id;
            let ledger = cbdc_ledger::serve(c, shutdown.clone())
                .await
                .map_err(|e| format!("bank {id}: {e}"))?;
            running.push(ledger);
        }
        let mut gateway = plan.merchant.clone();
        for (c, r) in plan.banks.iter().zip(&running) {
            gateway
                .ledgers
                .insert(c.ledger_id.to_string(), format!("https://{}", r.grpc_addr));
        }
        let merchant = cbdc_merchant::serve_config(&gateway, shutdown.clone())
            .await
            .map_err(|e| format!("merchant gateway: {e}"))?;
        let addresses: Vec<_> = running
            .iter()
            .map(|r| (r.grpc_addr, r.metrics_addr))
            .collect();
        let file = plan.write_file(
            (central_bank.grpc_addr, central_bank.metrics_addr),
            &addresses,
            (
                merchant.http_addr,
                merchant.grpc_addr,
                merchant.metrics_addr,
            ),
            None,
        )?;
        register_all(&file, &plan.admin, &plan.operators).await?;
        Ok(Devnet {
            dir: dir.to_path_buf(),
            file,
            admin: plan.admin,
            central_bank,
            banks: running,
            merchant,
            operators: plan.operators,
            authorities: plan.authorities,
        })
    }

    pub fn ledger_id(i: usize) -> LedgerId {
        LedgerId(i as u32 + 1)
    }

    /// Stops every service gracefully.
    pub async fn stop(self) -> Result<(), String> {
        for b in self.banks {
            b.stop().await.map_err(|e| e.to_string())?;
        }
        self.central_bank.stop().await.map_err(|e| e.to_string())
    }
}
