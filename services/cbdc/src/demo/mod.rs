//! The narrated demo: a devnet in a temporary directory and a scenario through real gRPC, each
//! step checked. The central bank issues to two banks; customers exchange deposits into
//! anonymous wallets, a self-upgrade is refused and the bank raises tiers after identity
//! checks; wallets pay each other within and across banks; a limit
//! breach and a double spend are refused with their reasons; a receipt is verified offline;
//! a bank redeems; then, through the merchant gateway, an order paid by QR code from another
//! bank and partly refunded, a ride hold captured with a split, a subscription mandate
//! charged and revoked, and the shop's statement reconciled ([`merchant`]); the audit shows
//! supply conserved.

mod merchant;

use std::time::{Duration, Instant};

use cbdc_core::audit::verify_receipt;
use cbdc_core::messages::CENTRAL_BANK;
use cbdc_core::transfer::sign_body;
use cbdc_core::{Address, Amount, Keypair, KycTier, LedgerId, PublicKey, Transfer};
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use cbdc_proto::{convert, requests, v1};
use cbdc_runtime::shutdown::Shutdown;
use tonic::transport::Channel;

use crate::client;
use crate::devnet::Devnet;

/// How long a step may wait for settlement to arrive.
const WAIT: Duration = Duration::from_secs(20);

struct Demo {
    step: u32,
    out: Box<dyn FnMut(&str) + Send>,
    banks: Vec<LedgerServiceClient<Channel>>,
    operators: Vec<Keypair>,
    authorities: Vec<Keypair>,
    network: String,
}

impl Demo {
    fn say(&mut self, what: &str) {
        self.step += 1;
        (self.out)(&format!("\n[{}] {what}", self.step));
    }

    fn ok(&mut self, what: &str) {
        (self.out)(&format!("    ✓ {what}"));
    }

    fn bank(&mut self, ledger: u32) -> &mut LedgerServiceClient<Channel> {
        &mut self.banks[ledger as usize - 1]
    }

    fn header(&self, target: LedgerId, request_id: &str) -> v1::RequestHeader {
        requests::header(
            &self.network,
            target,
            request_id,
            crate::cli::now_ms() + requests::ORDER_VALID_FOR_MS,
        )
    }

    /// A read grant for `address` signed by `signer` (with `by_authority`, the bank's key).
    fn read(&self, signer: &Keypair, address: &Address, by_authority: bool) -> v1::ReadAuth {
        requests::read_auth(
            signer,
            &self.network,
            address.ledger,
            &address.to_string(),
            crate::cli::now_ms() + requests::READ_VALID_FOR_MS,
            by_authority,
        )
    }

    /// Opens an anonymous wallet with phone number `phone`.
    async fn open(&mut self, ledger: u32, seed: u8, phone: &str) -> Result<Keypair, String> {
        let k = Keypair::from_seed(&[seed; 32]);
        let request = requests::open_wallet(&k, &self.network, LedgerId(ledger), phone);
        self.bank(ledger)
            .open_wallet(request)
            .await
            .map_err(|s| format!("opening a wallet: {}", client::status(&s)))?;
        Ok(k)
    }

    /// The bank raises `key`'s tier after its identity check `reason`.
    async fn set_tier(
        &mut self,
        ledger: u32,
        key: &PublicKey,
        tier: KycTier,
        reason: &str,
    ) -> Result<v1::Wallet, String> {
        let address = Address::new(LedgerId(ledger), *key).to_string();
        let header = self.header(LedgerId(ledger), &format!("demo-kyc-{address}"));
        let request = requests::set_wallet_tier(
            &self.authorities[ledger as usize - 1],
            header,
            &address,
            tier,
            reason,
        );
        Ok(self
            .bank(ledger)
            .set_wallet_tier(request)
            .await
            .map_err(|s| format!("tier change: {}", client::status(&s)))?
            .into_inner())
    }

    async fn exchange(&mut self, ledger: u32, to: &PublicKey, amount: &str) -> Result<(), String> {
        let address = Address::new(LedgerId(ledger), *to).to_string();
        let request_id = format!(
            "demo-exchange-{}-{}",
            ledger,
            hex::encode(&to.as_bytes()[..4])
        );
        let request = requests::exchange(
            &self.authorities[ledger as usize - 1],
            self.header(LedgerId(ledger), &request_id),
            &address,
            amount,
            None,
        );
        self.bank(ledger)
            .exchange(request)
            .await
            .map_err(|s| format!("exchange: {}", client::status(&s)))?;
        Ok(())
    }

    async fn build(
        &mut self,
        ledger: u32,
        from: &Keypair,
        to: &Address,
        amount: &str,
    ) -> Result<Transfer, tonic::Status> {
        let from_address = Address::new(LedgerId(ledger), from.public());
        let auth = self.read(from, &from_address, false);
        let built = self
            .bank(ledger)
            .build_transfer(v1::BuildTransferRequest {
                from_address: from_address.to_string(),
                auth: Some(auth),
                payments: vec![v1::Payment {
                    to_address: to.to_string(),
                    amount: amount.into(),
                }],
                memo: Vec::new(),
                valid_for_s: 0,
            })
            .await?
            .into_inner();
        Ok(sign_body(built.body, &[from]).expect("the wallet signs"))
    }

    async fn submit(
        &mut self,
        ledger: u32,
        t: &Transfer,
    ) -> Result<v1::TransferResult, tonic::Status> {
        self.bank(ledger)
            .submit_transfer(v1::SubmitTransferRequest {
                transfer: Some(convert::to_signed_transfer(t)),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A balance, as the bank's authority reads it.
    async fn balance(&mut self, ledger: u32, key: &PublicKey) -> Result<String, String> {
        let address = Address::new(LedgerId(ledger), *key);
        let authority = Keypair::from_seed(self.authorities[ledger as usize - 1].seed());
        let auth = self.read(&authority, &address, true);
        Ok(self
            .bank(ledger)
            .get_balance(v1::GetBalanceRequest {
                address: address.to_string(),
                auth: Some(auth),
            })
            .await
            .map_err(|s| format!("balance: {}", client::status(&s)))?
            .into_inner()
            .balance)
    }

    /// Waits until `key` on `ledger` holds `want`.
    async fn await_balance(
        &mut self,
        ledger: u32,
        key: &PublicKey,
        want: &str,
    ) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.balance(ledger, key).await?;
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "waited {WAIT:?} for a balance of {want} on ledger {ledger}; it is {got}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// Runs the demo, writing its narration to `out`; `Err` names the step that did not do what
/// it said.
pub async fn run(out: Box<dyn FnMut(&str) + Send>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let devnet = Devnet::start(dir.path(), 2, Shutdown::new()).await?;
    let result = scenario(&devnet, out).await;
    devnet.stop().await?;
    result
}

async fn scenario(devnet: &Devnet, out: Box<dyn FnMut(&str) + Send>) -> Result<(), String> {
    let mut cb = client::issuance(&devnet.file.admin_dial()?).await?;
    let mut banks = Vec::new();
    for i in 1..=devnet.banks.len() as u32 {
        banks.push(client::ledger(&devnet.file.bank_dial(i)?).await?);
    }
    let mut d = Demo {
        step: 0,
        out,
        banks,
        operators: devnet
            .operators
            .iter()
            .map(|k| Keypair::from_seed(k.seed()))
            .collect(),
        authorities: devnet
            .authorities
            .iter()
            .map(|k| Keypair::from_seed(k.seed()))
            .collect(),
        network: devnet.file.network.clone(),
    };
    (d.out)(&format!(
        "A devnet on loopback: the central bank at {}, bank 1 at {}, bank 2 at {}.",
        devnet.file.central_bank, devnet.file.banks[0], devnet.file.banks[1]
    ));

    // 1. Issuance.
    d.say("The central bank issues 1,000,000.00 to bank 1 and 500,000.00 to bank 2, against reserves.");
    for (ledger, amount) in [(1u32, "1000000.00"), (2, "500000.00")] {
        let request_id = format!("demo-mint-{ledger}");
        let reference = format!("reserve transfer for bank {ledger}");
        let request = requests::mint(
            &devnet.admin,
            d.header(CENTRAL_BANK, &request_id),
            LedgerId(ledger),
            amount,
            &reference,
        );
        cb.mint(request)
            .await
            .map_err(|s| format!("mint: {}", client::status(&s)))?;
        let vault = d.operators[ledger as usize - 1].public();
        d.await_balance(ledger, &vault, amount).await?;
    }
    d.ok("both vaults credited through countersigned settlements");

    // 2. Wallets: anonymous by phone number, higher tiers only from the bank.
    d.say("Customers open anonymous wallets with their phone numbers; Carol asks for class 1 on her own.");
    let alice = d.open(1, 0xa1, "+8613900000001").await?;
    let carol = d.open(1, 0xc0, "+8613900000003").await?;
    let bob = d.open(2, 0xb0, "+8613900000002").await?;
    let mut self_upgrade = requests::open_wallet(
        &Keypair::from_seed(&[0xc1; 32]),
        &d.network,
        LedgerId(1),
        "+8613900000004",
    );
    self_upgrade.tier = convert::to_kyc_tier(KycTier::Class1) as i32;
    match d.bank(1).open_wallet(self_upgrade).await {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            d.ok(&format!("Carol's class 1 refused: {}", s.message()));
        }
        other => return Err(format!("a self-chosen class 1 was not refused: {other:?}")),
    }
    d.say("After identity checks, bank 1 raises Alice to class 2 and bank 2 raises Bob to class 3, each order signed by the bank's authority key.");
    let w = d
        .set_tier(
            1,
            &alice.public(),
            KycTier::Class2,
            "in-branch ID check 2026-11-0017",
        )
        .await?;
    check(
        w.tier == v1::KycTier::Class2 as i32 && w.tier_changes.len() == 1,
        || format!("Alice's wallet after the upgrade: {w:?}"),
    )?;
    d.set_tier(
        2,
        &bob.public(),
        KycTier::Class3,
        "remote ID check 2026-11-0042",
    )
    .await?;
    d.ok("Alice is class 2 and her wallet records the change with the check's reference; Bob is class 3; Carol stays anonymous");

    d.say("The banks exchange deposits for e-CNY.");
    d.exchange(1, &alice.public(), "5000.00").await?;
    d.exchange(1, &carol.public(), "3000.00").await?;
    d.exchange(2, &bob.public(), "2000.00").await?;
    d.await_balance(1, &alice.public(), "5000.00").await?;
    d.ok("Alice (bank 1, class 2) 5,000.00; Carol (bank 1, anonymous) 3,000.00; Bob (bank 2, class 3) 2,000.00");

    // 3. Within a bank.
    d.say("Alice pays Carol 100.00 on bank 1.");
    let carol_addr = Address::new(LedgerId(1), carol.public());
    let t = d
        .build(1, &alice, &carol_addr, "100.00")
        .await
        .map_err(|s| client::status(&s))?;
    d.submit(1, &t)
        .await
        .map_err(|s| format!("payment: {}", client::status(&s)))?;
    d.await_balance(1, &carol.public(), "3100.00").await?;
    d.ok("committed; Carol holds 3,100.00");

    // 4. Across banks.
    d.say("Alice pays Bob 250.00 across banks: bank 1 → the central bank → bank 2.");
    let bob_addr = Address::new(LedgerId(2), bob.public());
    let cross = d
        .build(1, &alice, &bob_addr, "250.00")
        .await
        .map_err(|s| client::status(&s))?;
    d.submit(1, &cross)
        .await
        .map_err(|s| format!("payment: {}", client::status(&s)))?;
    d.await_balance(2, &bob.public(), "2250.00").await?;
    let deadline = Instant::now() + WAIT;
    let alice_addr = Address::new(LedgerId(1), alice.public());
    loop {
        let auth = d.read(&alice, &alice_addr, false);
        let status = d
            .bank(1)
            .get_transfer(v1::GetTransferRequest {
                txid: cross.txid().0.to_vec(),
                address: alice_addr.to_string(),
                auth: Some(auth),
            })
            .await
            .map_err(|s| client::status(&s))?
            .into_inner()
            .status;
        if status == v1::TransferStatus::Settled as i32 {
            break;
        }
        check(Instant::now() < deadline, || {
            "the payment never showed SETTLED".into()
        })?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.ok(&format!(
        "txid {}: SETTLED on bank 1, Bob holds 2,250.00 on bank 2",
        cross.txid()
    ));

    // 5. A limit breach.
    d.say("Carol (anonymous tier) tries to pay 2,500.00 in one payment.");
    let t = d
        .build(
            1,
            &carol,
            &Address::new(LedgerId(1), alice.public()),
            "2500.00",
        )
        .await
        .map_err(|s| client::status(&s))?;
    match d.submit(1, &t).await {
        Err(s)
            if s.code() == tonic::Code::FailedPrecondition
                && s.message().contains("per-payment cap") =>
        {
            d.ok(&format!("refused: {}", s.message()));
        }
        other => {
            return Err(format!(
                "the limit breach was not refused as expected: {other:?}"
            ));
        }
    }

    // 6. A double spend.
    d.say("Bob signs two payments spending the same coin; the second is a double spend.");
    let to_alice = Address::new(LedgerId(1), alice.public());
    let first = d
        .build(2, &bob, &to_alice, "10.00")
        .await
        .map_err(|s| client::status(&s))?;
    let mut body = first.body().clone();
    body.outputs[0].value = Amount::from_fen(2_000);
    if let Some(change) = body.outputs.get_mut(1) {
        change.value = change
            .value
            .checked_sub(Amount::from_fen(1_000))
            .ok_or("Bob's change is too small for the demo")?;
    }
    let second = sign_body(body.encode(), &[&bob]).expect("signs");
    d.submit(2, &first)
        .await
        .map_err(|s| format!("first payment: {}", client::status(&s)))?;
    match d.submit(2, &second).await {
        Err(s)
            if s.code() == tonic::Code::FailedPrecondition
                && s.message().contains("already spent") =>
        {
            d.ok(&format!("refused: {}", s.message()));
        }
        other => {
            return Err(format!(
                "the double spend was not refused as expected: {other:?}"
            ));
        }
    }

    // 7. A receipt, verified offline.
    d.say("Alice asks bank 1 for a receipt of her payment to Bob and verifies it offline.");
    let deadline = Instant::now() + WAIT;
    let receipt = loop {
        let auth = d.read(&alice, &alice_addr, false);
        match d
            .bank(1)
            .get_receipt(v1::GetReceiptRequest {
                txid: cross.txid().0.to_vec(),
                address: alice_addr.to_string(),
                auth: Some(auth),
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == tonic::Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => return Err(format!("receipt: {}", client::status(&s))),
        }
    };
    let operators = cb
        .list_operators(v1::ListOperatorsRequest { page: None })
        .await
        .map_err(|s| client::status(&s))?
        .into_inner()
        .operators;
    let bank1 = operators
        .iter()
        .find(|o| o.ledger_id == 1)
        .ok_or("bank 1 is not in the registry")?;
    let key = PublicKey::from_bytes(
        bank1
            .operator_public_key
            .as_slice()
            .try_into()
            .map_err(|_| "bad registry key")?,
    );
    let decoded = convert::receipt(&receipt).map_err(|e| e.to_string())?;
    verify_receipt(&decoded, LedgerId(1), &key).map_err(|e| format!("receipt: {e}"))?;
    d.ok(&format!(
        "leaf {} of {} under root {}…, signed by bank 1's operator key from the registry",
        decoded.index,
        decoded.checkpoint.size,
        &hex::encode(decoded.checkpoint.root)[..16]
    ));

    // 8. Redemption.
    d.say("Bank 2 returns 100,000.00 from its vault to the central bank.");
    let request = requests::redeem(
        &d.authorities[1],
        d.header(LedgerId(2), "demo-redeem"),
        "100000.00",
    );
    d.bank(2)
        .redeem(request)
        .await
        .map_err(|s| format!("redeem: {}", client::status(&s)))?;
    d.ok("committed on bank 2, settled through its outbox");

    // The merchant gateway's scenes.
    merchant::scenes(&mut d, devnet.merchant.http_addr).await?;

    // 9. The audit.
    d.say("The central bank audits: issued − redeemed against every ledger's signed checkpoint.");
    let deadline = Instant::now() + WAIT;
    let audit = loop {
        let a = cb
            .audit(v1::AuditRequest {})
            .await
            .map_err(|s| client::status(&s))?
            .into_inner();
        let quiet = a.redeemed == "100000.00"
            && a.ledgers
                .iter()
                .all(|l| l.in_flight_in == "0.00" && l.unacknowledged_out == "0.00");
        if a.balanced && quiet {
            break a;
        }
        check(Instant::now() < deadline, || {
            format!("the audit did not balance: {a:?}")
        })?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for l in &audit.ledgers {
        (d.out)(&format!(
            "    bank {}: books {}, its checkpoint counts {} in unspent outputs and outbox ({} log entries)",
            l.ledger_id, l.outstanding_books, l.outstanding_reported, l.checkpoint_size
        ));
    }
    check(audit.outstanding == "1400000.00", || {
        format!("outstanding is {}, expected 1400000.00", audit.outstanding)
    })?;
    d.ok(&format!(
        "issued {} − redeemed {} = {} = Σ what the ledgers hold by their own outputs: supply conserved",
        audit.issued, audit.redeemed, audit.outstanding
    ));
    (d.out)("\nEvery step did what it said.");
    Ok(())
}
