//! The harness of the end-to-end tests: services started in-process on 127.0.0.1 with
//! ephemeral ports and durable stores in a temporary directory, and real gRPC clients.
//! [`LedgerNet`] is one ledger whose central bank is a key the test holds; [`network::Network`]
//! is the central bank service with several ledgers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cbdc_core::messages::{Countersignature, Signed, WalletAction};
use cbdc_core::transfer::sign_body;
use cbdc_core::{
    Address, Amount, Keypair, KycTier, LedgerId, Lock, OutPoint, PublicKey, Transfer,
    TransferBuilder, Txid, UnixSeconds,
};
use cbdc_ledger::config::LedgerConfig;
use cbdc_ledger::ledger::Clock;
use cbdc_ledger::{RunningLedger, serve_with_clock};
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use cbdc_runtime::shutdown::Shutdown;
use sha2::Digest;
use tonic::transport::Channel;

pub use cbdc_proto::v1::exchange_request::Direction;

/// The central bank's ledger id in issuance transfers.
pub const CENTRAL_BANK_LEDGER: LedgerId = LedgerId(0);
/// The network every test service belongs to.
pub const NETWORK: &str = "cbdc-test";
/// The seed of every test bank's authority key (orders and reads), apart from its operator
/// (vault and settlement) key.
pub const AUTHORITY_SEED: [u8; 32] = [0xa7; 32];

/// One ledger service under test, with the keys to drive it.
pub struct LedgerNet {
    pub dir: tempfile::TempDir,
    pub config: LedgerConfig,
    pub central_bank: Keypair,
    pub operator: Keypair,
    /// The bank's authority key: freezes, tier changes, exchanges, reads of any wallet.
    pub authority: Keypair,
    pub clock_ms: Arc<AtomicU64>,
    pub running: Option<RunningLedger>,
    pub client: LedgerServiceClient<Channel>,
    issued: u64,
}

pub mod merchant;
pub mod network;

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

impl LedgerNet {
    pub async fn start(ledger_id: u32) -> LedgerNet {
        LedgerNet::start_with(ledger_id, |_| {}).await
    }

    /// Starts with a configuration adjusted by `adjust`.
    pub async fn start_with(ledger_id: u32, adjust: impl FnOnce(&mut LedgerConfig)) -> LedgerNet {
        let dir = tempfile::tempdir().expect("tempdir");
        let central_bank = Keypair::from_seed(&[0xcb; 32]);
        let authority = Keypair::from_seed(&AUTHORITY_SEED);
        let mut config = LedgerConfig::local(ledger_id, dir.path(), NETWORK, &authority.public());
        config.central_bank_public_key = Some(hex::encode(central_bank.public().as_bytes()));
        adjust(&mut config);
        let clock_ms = Arc::new(AtomicU64::new(wall_ms()));
        let (running, client) = launch(&config, &clock_ms).await;
        let operator = running.ledger.operator_key();
        let operator = {
            let seed = std::fs::read_to_string(&config.operator_key_file).expect("key file");
            let seed: [u8; 32] = hex::decode(seed.trim()).unwrap().try_into().unwrap();
            let k = Keypair::from_seed(&seed);
            assert_eq!(k.public(), operator);
            k
        };
        LedgerNet {
            dir,
            config,
            central_bank,
            operator,
            authority,
            clock_ms,
            running: Some(running),
            client,
            issued: 0,
        }
    }

    pub fn ledger_id(&self) -> LedgerId {
        LedgerId(self.config.ledger_id)
    }

    pub fn ledger(&self) -> &cbdc_ledger::ledger::Ledger {
        &self.running.as_ref().expect("running").ledger
    }

    pub fn running(&self) -> &RunningLedger {
        self.running.as_ref().expect("running")
    }

    /// Stops the service gracefully (in-flight requests finish) and starts it again on the
    /// same store and keys.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (running, client) = launch(&self.config, &self.clock_ms).await;
        self.running = Some(running);
        self.client = client;
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
    }

    pub fn advance_clock(&self, ms: u64) {
        self.clock_ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn now_s(&self) -> u64 {
        self.clock_ms.load(Ordering::SeqCst) / 1000
    }

    pub fn address(&self, key: &PublicKey) -> String {
        Address::new(self.ledger_id(), *key).to_string()
    }

    /// The central bank issues `yuan` to this bank's vault (a countersigned inbound
    /// delivery, as the issuance service will send it).
    pub async fn issue(&mut self, amount: Amount) -> Txid {
        self.issued += 1;
        let source = OutPoint {
            txid: Txid(sha2::Sha256::digest(format!("reserve-{}", self.issued)).into()),
            index: 0,
        };
        let t = TransferBuilder::new(UnixSeconds(self.now_s() + 600))
            .input(source, amount)
            .output(self.ledger_id(), amount, Lock::Key(self.operator.public()))
            .memo(b"issuance".to_vec())
            .sign(&[&self.central_bank])
            .expect("signs");
        let settlement = self.settlement(&t, amount, &self.central_bank);
        self.client
            .deliver_inbound(v1::DeliverInboundRequest {
                settlement: Some(settlement),
            })
            .await
            .expect("issuance delivered");
        t.txid()
    }

    /// A settlement of `t` to this ledger countersigned by `signer`.
    pub fn settlement(&self, t: &Transfer, amount: Amount, signer: &Keypair) -> v1::Settlement {
        v1::Settlement {
            transfer: Some(to_signed_transfer(t)),
            from_ledger_id: CENTRAL_BANK_LEDGER.0,
            to_ledger_id: self.ledger_id().0,
            amount: amount.to_string(),
            reversal_reason: String::new(),
            central_bank_signature: Countersignature {
                network: NETWORK,
                txid: t.txid(),
                to_ledger: self.ledger_id(),
            }
            .sign(signer)
            .to_vec(),
        }
    }

    /// Opens a wallet with a fresh key at `tier`.
    pub async fn open_wallet(&mut self, seed: u8, tier: KycTier) -> Keypair {
        let k = Keypair::from_seed(&[seed; 32]);
        self.open_wallet_key(&k, tier).await.expect("opens");
        k
    }

    pub async fn open_wallet_key(
        &mut self,
        k: &Keypair,
        tier: KycTier,
    ) -> Result<v1::Wallet, tonic::Status> {
        let opened = self
            .client
            .open_wallet(self.open_request(k))
            .await
            .map(|r| r.into_inner())?;
        if tier == KycTier::Class4Anonymous {
            return Ok(opened);
        }
        let address = self.address(&k.public());
        let request_id = format!("kyc-{}-{tier:?}", &address[address.len() - 12..]);
        let r = self.tier_request(&self.authority, &address, tier, &request_id);
        self.client.set_wallet_tier(r).await.map(|r| r.into_inner())
    }

    /// A phone number of its own for each key.
    pub fn phone(k: &PublicKey) -> String {
        cbdc_proto::requests::phone_of(k)
    }

    /// `OpenWallet` for `k` with its own phone number.
    pub fn open_request(&self, k: &Keypair) -> v1::OpenWalletRequest {
        cbdc_proto::requests::open_wallet(k, NETWORK, self.ledger_id(), &Self::phone(&k.public()))
    }

    /// `SetWalletTier` signed by `signer`.
    pub fn tier_request(
        &self,
        signer: &Keypair,
        address: &str,
        tier: KycTier,
        request_id: &str,
    ) -> v1::SetWalletTierRequest {
        cbdc_proto::requests::set_wallet_tier(
            signer,
            self.header(request_id),
            address,
            tier,
            "identity check 2026-0042",
        )
    }

    /// The header of an order to this ledger, valid for ten minutes of its clock.
    pub fn header(&self, request_id: &str) -> v1::RequestHeader {
        cbdc_proto::requests::header(
            NETWORK,
            self.ledger_id(),
            request_id,
            self.clock_ms.load(Ordering::SeqCst) + cbdc_proto::requests::ORDER_VALID_FOR_MS,
        )
    }

    /// A read grant for the wallet at `address`, signed by `signer` (its own key), valid
    /// for five minutes of this ledger's clock.
    pub fn read_auth(&self, signer: &Keypair, address: &str) -> v1::ReadAuth {
        cbdc_proto::requests::read_auth(
            signer,
            NETWORK,
            self.ledger_id(),
            address,
            self.clock_ms.load(Ordering::SeqCst) + cbdc_proto::requests::READ_VALID_FOR_MS,
            signer.public() == self.authority.public(),
        )
    }

    /// A read grant for `address` by the bank's authority.
    pub fn authority_read(&self, address: &str) -> v1::ReadAuth {
        self.read_auth(&self.authority, address)
    }

    /// The bank pays `amount` from its vault to `to` (deposits exchanged for e-CNY).
    pub async fn exchange_in(
        &mut self,
        to: &PublicKey,
        amount: &str,
        request_id: &str,
    ) -> Result<v1::TransferResult, tonic::Status> {
        let address = self.address(to);
        let r = cbdc_proto::requests::exchange(
            &self.authority,
            self.header(request_id),
            &address,
            amount,
            None,
        );
        self.client.exchange(r).await.map(|r| r.into_inner())
    }

    /// Builds (server-side coin selection), signs and submits a payment.
    pub async fn pay(
        &mut self,
        from: &Keypair,
        to: &str,
        amount: &str,
    ) -> Result<v1::TransferResult, tonic::Status> {
        let t = self.build_signed(from, &[(to, amount)]).await?;
        self.submit(&t).await
    }

    pub async fn build_signed(
        &mut self,
        from: &Keypair,
        payments: &[(&str, &str)],
    ) -> Result<Transfer, tonic::Status> {
        let built = self
            .client
            .build_transfer(v1::BuildTransferRequest {
                from_address: self.address(&from.public()),
                payments: payments
                    .iter()
                    .map(|(to, amount)| v1::Payment {
                        to_address: to.to_string(),
                        amount: amount.to_string(),
                    })
                    .collect(),
                memo: Vec::new(),
                valid_for_s: 0,
                auth: Some(self.read_auth(from, &self.address(&from.public()))),
            })
            .await?
            .into_inner();
        Ok(sign_body(built.body, &[from]).expect("signs"))
    }

    /// `GetTransfer` of `txid` (raw bytes, so a test can send any length), read by the
    /// bank's authority.
    pub async fn get_transfer(&mut self, txid: &[u8]) -> v1::GetTransferResponse {
        let address = self.address(&self.operator.public());
        self.client
            .get_transfer(v1::GetTransferRequest {
                txid: txid.to_vec(),
                auth: Some(self.authority_read(&address)),
                address,
            })
            .await
            .expect("GetTransfer")
            .into_inner()
    }

    pub async fn submit(&mut self, t: &Transfer) -> Result<v1::TransferResult, tonic::Status> {
        self.client
            .submit_transfer(v1::SubmitTransferRequest {
                transfer: Some(to_signed_transfer(t)),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A wallet's balance, read by the bank's authority.
    pub async fn balance(&mut self, key: &PublicKey) -> String {
        let address = self.address(key);
        self.client
            .get_balance(v1::GetBalanceRequest {
                auth: Some(self.authority_read(&address)),
                address,
            })
            .await
            .expect("balance")
            .into_inner()
            .balance
    }

    pub fn wallet_action(
        &self,
        signer: &Keypair,
        action: WalletAction,
        key: &PublicKey,
        request_id: &str,
    ) -> v1::WalletActionRequest {
        cbdc_proto::requests::wallet_action(
            signer,
            self.header(request_id),
            action,
            &self.address(key),
            "court order 2026-117",
        )
    }

    /// Audit: unspent outputs and wallet balances must both equal everything issued.
    pub async fn assert_conserved(&self, issued: Amount) -> cbdc_ledger::ledger::Totals {
        let totals = self.ledger().totals().await.expect("totals");
        assert_eq!(
            totals.unspent, issued,
            "unspent outputs vs issued: {totals:?}"
        );
        assert_eq!(
            totals.balances, issued,
            "wallet balances vs issued: {totals:?}"
        );
        totals
    }
}

async fn launch(
    config: &LedgerConfig,
    clock_ms: &Arc<AtomicU64>,
) -> (RunningLedger, LedgerServiceClient<Channel>) {
    let running = serve_with_clock(
        config.clone(),
        Shutdown::new(),
        Clock::manual(Arc::clone(clock_ms)),
    )
    .await
    .expect("ledger starts");
    let channel = if config.tls.insecure {
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))
            .expect("endpoint")
    } else {
        // With TLS, the harness's client presents the central bank's certificate: it plays
        // the central bank when a test delivers to the ledger directly.
        let ca = config.tls.ca_file.as_ref().expect("a CA");
        let dir = ca.parent().expect("the TLS directory");
        tonic::transport::Endpoint::from_shared(format!("https://{}", running.grpc_addr))
            .expect("endpoint")
            .tls_config(tls_client(
                dir,
                Some(cbdc_runtime::tls::CENTRAL_BANK_NAME),
                &cbdc_runtime::tls::bank_name(config.ledger_id),
            ))
            .expect("TLS")
    };
    let client = LedgerServiceClient::new(channel.connect().await.expect("connects"))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    (running, client)
}

/// TLS client settings from the certificates in `dir` (as `DevCa::write` names them):
/// trusting its `ca.crt`, presenting `<identity>.crt` if given, expecting the server to be
/// `peer`.
pub fn tls_client(
    dir: &std::path::Path,
    identity: Option<&str>,
    peer: &str,
) -> tonic::transport::ClientTlsConfig {
    let read = |name: &str| std::fs::read(dir.join(name)).expect("certificate file");
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.crt")))
        .domain_name(peer);
    if let Some(name) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read(&format!("{name}.crt")),
            read(&format!("{name}.key")),
        ));
    }
    tls
}

/// A table of hostile requests: each row must be refused with `code` and a message
/// containing `needle`; the rows are printed at the end as the test's report.
#[derive(Default)]
pub struct Table {
    pub rows: Vec<String>,
}

impl Table {
    pub fn check<T: std::fmt::Debug>(
        &mut self,
        name: &str,
        result: Result<T, tonic::Status>,
        code: tonic::Code,
        needle: &str,
    ) {
        let status = match result {
            Ok(v) => panic!("{name}: expected {code:?}, got success {v:?}"),
            Err(s) => s,
        };
        assert_eq!(status.code(), code, "{name}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{name}: message {:?} should contain {needle:?}",
            status.message()
        );
        // Every refusal carries the rich error model: a stable reason in our domain.
        let info = error_info(&status).unwrap_or_else(|| panic!("{name}: no ErrorInfo"));
        self.rows.push(format!(
            "{name}: {code:?} {} {:?} {}",
            info.reason,
            info.metadata,
            status.message()
        ));
    }

    pub fn print(&self) {
        for row in &self.rows {
            println!("{row}");
        }
    }
}

/// Yuan as an amount.
/// The `ErrorInfo` of a status, checked to be in the network's domain with a reason.
pub fn error_info(status: &tonic::Status) -> Option<tonic_types::ErrorInfo> {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info()?;
    assert_eq!(info.domain, cbdc_runtime::error::ERROR_DOMAIN);
    assert!(!info.reason.is_empty());
    Some(info)
}

pub fn yuan(text: &str) -> Amount {
    Amount::parse(text).expect("amount")
}

/// The rejection of a `TransferResult`, or panics.
pub fn rejected(r: &v1::TransferResult) -> &v1::Rejected {
    match &r.outcome {
        Some(v1::transfer_result::Outcome::Rejected(x)) => x,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// The commitment of a `TransferResult`, or panics.
pub fn committed(r: &v1::TransferResult) -> &v1::Committed {
    match &r.outcome {
        Some(v1::transfer_result::Outcome::Committed(x)) => x,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Keeps the tier names in one place for tests.
pub const ANON: KycTier = KycTier::Class4Anonymous;
