//! A whole network under test: the central bank (`cbdc-issuance`) and bank ledgers, each a
//! real service on 127.0.0.1 with its own durable store, talking gRPC to each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cbdc_core::{Amount, Keypair, LedgerId};
use cbdc_issuance::RunningIssuance;
use cbdc_issuance::config::IssuanceConfig;
use cbdc_proto::v1;
use cbdc_proto::v1::issuance_service_client::IssuanceServiceClient;
use cbdc_runtime::shutdown::Shutdown;
use tonic::transport::Channel;

use crate::{LedgerNet, wall_ms};

/// The central bank's signing seed in tests (the same key `LedgerNet` trusts).
pub const CENTRAL_BANK_SEED: [u8; 32] = [0xcb; 32];
/// The administrator's seed in tests.
pub const ADMIN_SEED: [u8; 32] = [0xad; 32];

pub struct Network {
    pub dir: tempfile::TempDir,
    /// The network's CA: tests issue certificates of their own with it.
    pub ca: cbdc_runtime::tls::DevCa,
    pub config: IssuanceConfig,
    pub admin: Keypair,
    pub central_bank: Option<RunningIssuance>,
    pub cb: IssuanceServiceClient<Channel>,
    /// Bank ledgers; `banks[i]` has ledger id `i + 1`.
    pub banks: Vec<LedgerNet>,
    tickers: Vec<tokio::task::JoinHandle<()>>,
}

/// Keeps a test clock at least at wall time, so retry backoffs pass; `advance_clock` still
/// jumps it ahead.
fn tick(clock: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            clock.fetch_max(wall_ms(), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

impl Network {
    /// Starts a central bank and `banks` ledgers and registers them.
    pub async fn start(banks: u32) -> Network {
        Network::start_adjusted(banks, |_, _| {}).await
    }

    /// [`Network::start`], each ledger's configuration adjusted by `adjust(id, config)`.
    pub async fn start_adjusted(
        banks: u32,
        adjust: impl Fn(u32, &mut cbdc_ledger::config::LedgerConfig) + Clone + Send + 'static,
    ) -> Network {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = Keypair::from_seed(&ADMIN_SEED);
        // Mutual TLS throughout, from a CA of the test's own.
        let tls = dir.path().join("tls");
        let mut names = vec![
            cbdc_runtime::tls::CENTRAL_BANK_NAME.to_string(),
            cbdc_runtime::tls::ADMIN_NAME.to_string(),
        ];
        names.extend((1..=banks).map(cbdc_runtime::tls::bank_name));
        let ca = cbdc_runtime::tls::DevCa::new("test network CA").expect("CA");
        ca.write(&tls, &names.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("certificates");
        let mut config = IssuanceConfig::local(dir.path(), crate::NETWORK, &admin.public());
        config.tls =
            cbdc_runtime::tls::TlsConfig::in_dir(&tls, cbdc_runtime::tls::CENTRAL_BANK_NAME);
        config.delivery_interval_ms = 20;
        cbdc_runtime::secret::write_private(
            &config.signing_key_file,
            hex::encode(CENTRAL_BANK_SEED).as_bytes(),
        )
        .expect("key");
        let (central_bank, cb) = launch_cb(&config).await;
        let endpoint = format!("https://{}", central_bank.grpc_addr);
        let mut net = Network {
            dir,
            ca,
            config,
            admin,
            central_bank: Some(central_bank),
            cb,
            banks: Vec::new(),
            tickers: Vec::new(),
        };
        for id in 1..=banks {
            let e = endpoint.clone();
            let tls = tls.clone();
            let adjust = adjust.clone();
            let mut bank = LedgerNet::start_with(id, move |c| {
                adjust(id, c);
                c.tls =
                    cbdc_runtime::tls::TlsConfig::in_dir(&tls, &cbdc_runtime::tls::bank_name(id));
                c.central_bank_endpoint = Some(e);
                c.sequencer_interval_ms = 20;
                c.outbox_interval_ms = 20;
                c.checkpoint_interval_ms = 100;
            })
            .await;
            // Restarts keep the address the central bank has in its registry.
            bank.config.listen = bank.running().grpc_addr;
            net.tickers.push(tick(Arc::clone(&bank.clock_ms)));
            net.register(&bank).await.expect("registers");
            net.banks.push(bank);
        }
        net
    }

    /// A client of the central bank presenting a certificate for `name` from this network's
    /// CA (`bank-N`: as that bank's ledger would; `admin`: as the administrator).
    pub async fn cb_as(&self, name: &str) -> IssuanceServiceClient<Channel> {
        IssuanceServiceClient::new(self.cb_channel_as(name).await)
    }

    /// A channel to the central bank presenting a certificate for `name` (see [`cb_as`]).
    pub async fn cb_channel_as(&self, name: &str) -> Channel {
        let dir = self.dir.path().join(format!("tls-{name}"));
        if !dir.exists() {
            let issued = self.ca.issue(name).expect("certificate");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ca.crt"), self.ca.cert_pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.crt")), issued.cert_pem).unwrap();
            cbdc_runtime::secret::write_private(
                &dir.join(format!("{name}.key")),
                issued.key_pem.as_bytes(),
            )
            .unwrap();
        }
        tonic::transport::Endpoint::from_shared(format!("https://{}", self.cb_addr()))
            .expect("endpoint")
            .tls_config(crate::tls_client(
                &dir,
                Some(name),
                cbdc_runtime::tls::CENTRAL_BANK_NAME,
            ))
            .expect("TLS")
            .connect()
            .await
            .expect("connects")
    }

    pub fn bank(&mut self, id: u32) -> &mut LedgerNet {
        &mut self.banks[id as usize - 1]
    }

    /// The header of an administrator's order, valid for ten minutes.
    pub fn header(&self, request_id: &str) -> v1::RequestHeader {
        cbdc_proto::requests::header(
            crate::NETWORK,
            LedgerId(0),
            request_id,
            wall_ms() + cbdc_proto::requests::ORDER_VALID_FOR_MS,
        )
    }

    pub fn register_request(&self, bank: &LedgerNet) -> v1::RegisterOperatorRequest {
        cbdc_proto::requests::register_operator(
            &self.admin,
            self.header(&format!("register-{}", bank.ledger_id().0)),
            bank.ledger_id(),
            &bank.operator.public(),
            &format!("https://{}", bank.running().grpc_addr),
        )
    }

    pub async fn register(&mut self, bank: &LedgerNet) -> Result<v1::Operator, tonic::Status> {
        let r = self.register_request(bank);
        self.cb.register_operator(r).await.map(|r| r.into_inner())
    }

    pub fn mint_request(&self, ledger: u32, amount: &str, request_id: &str) -> v1::MintRequest {
        let reference = format!("reserve transfer {request_id}");
        cbdc_proto::requests::mint(
            &self.admin,
            self.header(request_id),
            LedgerId(ledger),
            amount,
            &reference,
        )
    }

    pub async fn mint(
        &mut self,
        ledger: u32,
        amount: &str,
        request_id: &str,
    ) -> Result<v1::MintResponse, tonic::Status> {
        let r = self.mint_request(ledger, amount, request_id);
        self.cb.mint(r).await.map(|r| r.into_inner())
    }

    pub async fn audit(&mut self) -> v1::AuditResponse {
        self.cb
            .audit(v1::AuditRequest {})
            .await
            .expect("audit")
            .into_inner()
    }

    /// Waits (up to 20 s) until nothing is in flight: every queue is delivered, every ledger's
    /// latest checkpoint is accepted and matches the books. Returns that audit; panics with the
    /// last audit otherwise.
    pub async fn quiesce(&mut self) -> v1::AuditResponse {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let a = self.audit().await;
            let mut settled = a.balanced;
            for l in &a.ledgers {
                settled &= l.in_flight_in == "0.00" && l.unacknowledged_out == "0.00";
            }
            for bank in &self.banks {
                let t = bank.ledger().totals().await.expect("totals");
                settled &= t.outbox.is_zero();
                let cp = bank.ledger().checkpoint().await.expect("checkpoint");
                settled &= cp.is_some_and(|c| c.checkpoint.size == t.log_entries);
            }
            if settled {
                return a;
            }
            if std::time::Instant::now() > deadline {
                panic!("the network did not settle: {a:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every ledger's own audit: unspent + outbox = inbound − settled out, balances =
    /// unspent, and its latest checkpoint states the unspent sum and set found by scanning
    /// its outputs. Returns Σ unspent + outbox.
    pub async fn assert_ledgers_conserve(&self) -> Amount {
        let mut sum = Amount::ZERO;
        for bank in &self.banks {
            let t = bank.ledger().totals().await.expect("totals");
            let cp = bank.ledger().sequence_all().await.expect("sequences");
            assert_eq!(cp.size, t.log_entries);
            let cp = bank
                .ledger()
                .checkpoint()
                .await
                .expect("checkpoint")
                .expect("a checkpoint")
                .checkpoint;
            assert_eq!(
                (cp.unspent, cp.unspent_set, cp.outbox),
                (t.unspent, t.unspent_set, t.outbox),
                "ledger {}: the checkpoint's unspent sum, set and outbox vs the scan",
                bank.ledger_id().0
            );
            let held = t.unspent.checked_add(t.outbox).expect("sum");
            assert_eq!(
                Some(held),
                t.inbound.checked_sub(t.settled_out),
                "ledger {}: unspent + outbox vs inbound − settled out: {t:?}",
                bank.ledger_id().0
            );
            assert_eq!(
                t.balances,
                t.unspent,
                "ledger {}: {t:?}",
                bank.ledger_id().0
            );
            sum = sum.checked_add(held).expect("sum");
        }
        sum
    }

    pub fn ledger_id(i: u32) -> LedgerId {
        LedgerId(i)
    }

    /// Stops the central bank gracefully and starts it again on the same store and key.
    pub async fn restart_central_bank(&mut self) {
        let addr = self.cb_addr();
        if let Some(cb) = self.central_bank.take() {
            cb.stop().await.expect("clean stop");
        }
        let mut config = self.config.clone();
        // The ledgers know the old address; keep it.
        config.listen = addr;
        let (central_bank, cb) = launch_cb(&config).await;
        self.central_bank = Some(central_bank);
        self.cb = cb;
    }

    pub fn cb_addr(&self) -> std::net::SocketAddr {
        self.central_bank.as_ref().expect("running").grpc_addr
    }

    pub async fn stop(mut self) {
        for t in &self.tickers {
            t.abort();
        }
        for b in &mut self.banks {
            b.stop().await;
        }
        if let Some(cb) = self.central_bank.take() {
            cb.stop().await.expect("clean stop");
        }
    }
}

/// Starts the central bank and connects a client presenting the administrator's
/// certificate.
async fn launch_cb(config: &IssuanceConfig) -> (RunningIssuance, IssuanceServiceClient<Channel>) {
    let running = cbdc_issuance::serve(config.clone(), Shutdown::new())
        .await
        .expect("central bank starts");
    let dir = config
        .tls
        .ca_file
        .as_ref()
        .and_then(|c| c.parent())
        .expect("the TLS directory");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", running.grpc_addr))
        .expect("endpoint")
        .tls_config(crate::tls_client(
            dir,
            Some(cbdc_runtime::tls::ADMIN_NAME),
            cbdc_runtime::tls::CENTRAL_BANK_NAME,
        ))
        .expect("TLS")
        .connect()
        .await
        .expect("connects");
    (running, IssuanceServiceClient::new(channel))
}
