//! Spending conditions and the remaining structural rejections, through gRPC: holds
//! (pre-authorisations) and mandates (merchant sub-wallets) behave as `docs/design.md` says before
//! and after expiry, and each refusal reaches the client as a precise status and message.

use cbdc_core::transfer::{MAX_BODY_BYTES, MAX_INPUTS, MAX_OUTPUTS, sign_body};
use cbdc_core::{
    Amount, Input, Keypair, KycTier, Lock, OutPoint, Output, Transfer, TransferBody,
    TransferBuilder, Txid, UnixSeconds,
};
use cbdc_proto::convert::to_signed_transfer;
use cbdc_proto::v1;
use cbdc_tests::{LedgerNet, committed, yuan};
use tonic::Code;

fn expect_err<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    let s = r.expect_err("refused");
    assert_eq!(s.code(), code, "{}", s.message());
    assert!(
        s.message().contains(needle),
        "{:?} should contain {needle:?}",
        s.message()
    );
}

/// The output of `t` locked to `lock`.
fn coin(t: &Transfer, lock: Lock) -> (OutPoint, Amount) {
    let i = t
        .body()
        .outputs
        .iter()
        .position(|o| o.lock == lock)
        .expect("output");
    (t.outpoint(i as u16), t.body().outputs[i].value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_mandates_before_and_after_expiry() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let payer = net.open_wallet(1, KycTier::Class1).await;
    let shop = net.open_wallet(2, KycTier::Class1).await;
    net.exchange_in(&payer.public(), "100.00", "d")
        .await
        .unwrap();
    let ledger = net.ledger_id();
    let (p, m) = (payer.public(), shop.public());
    let soon = UnixSeconds(net.now_s() + 600);
    let until = UnixSeconds(net.now_s() + 3600);

    // The payer pre-authorises 30.00 to the shop (two holds: one captured, one left to expire).
    let funding = net
        .build_signed(&payer, &[(&net.address(&p), "100.00")])
        .await
        .unwrap();
    net.submit(&funding).await.unwrap();
    let (c, v) = coin(&funding, Lock::Key(p));
    let hold = Lock::Hold {
        payer: p,
        payee: m,
        expires_at: soon,
    };
    let hold2 = Lock::Hold {
        payer: p,
        payee: m,
        expires_at: UnixSeconds(soon.0 + 1),
    };
    let holds = TransferBuilder::new(until)
        .input(c, v)
        .output(ledger, yuan("30.00"), hold)
        .output(ledger, yuan("30.00"), hold2)
        .output(ledger, yuan("40.00"), Lock::Key(p))
        .sign(&[&payer])
        .unwrap();
    net.submit(&holds).await.unwrap();
    let (h, hv) = coin(&holds, hold);
    let (h2, h2v) = coin(&holds, hold2);

    // Before expiry the payer alone cannot take it back.
    let reclaim = |input: OutPoint, value: Amount| {
        TransferBuilder::new(until)
            .input(input, value)
            .output(ledger, value, Lock::Key(p))
            .sign(&[&payer])
            .unwrap()
    };
    expect_err(
        net.submit(&reclaim(h, hv)).await,
        Code::FailedPrecondition,
        "hold is active until",
    );
    // The shop captures 20.00 and returns the rest.
    let capture = TransferBuilder::new(until)
        .input(h, hv)
        .output(ledger, yuan("20.00"), Lock::Key(m))
        .output(ledger, yuan("10.00"), Lock::Key(p))
        .sign(&[&shop])
        .unwrap();
    committed(&net.submit(&capture).await.unwrap());
    assert_eq!(net.balance(&m).await, "20.00");

    // After expiry the shop can no longer capture; the payer reclaims.
    net.advance_clock(601_000 + 1_000);
    let late = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
        .input(h2, h2v)
        .output(ledger, h2v, Lock::Key(m))
        .sign(&[&shop])
        .unwrap();
    expect_err(
        net.submit(&late).await,
        Code::FailedPrecondition,
        "hold expired at",
    );
    let back = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
        .input(h2, h2v)
        .output(ledger, h2v, Lock::Key(p))
        .sign(&[&payer])
        .unwrap();
    committed(&net.submit(&back).await.unwrap());

    // A mandate: the shop may take up to 5.00 per payment, keeping the rest under the same terms.
    let until = UnixSeconds(net.now_s() + 3600);
    let (c, v) = coin(&capture, Lock::Key(p));
    let mandate = Lock::Mandate {
        owner: p,
        merchant: m,
        per_payment_max: yuan("5.00"),
        expires_at: UnixSeconds(net.now_s() + 600),
    };
    let sub = TransferBuilder::new(until)
        .input(c, v)
        .output(ledger, v, mandate)
        .sign(&[&payer])
        .unwrap();
    net.submit(&sub).await.unwrap();
    let (mc, mv) = coin(&sub, mandate);
    let draw = |take: &str, keep_lock: Lock| {
        let take = yuan(take);
        TransferBuilder::new(until)
            .input(mc, mv)
            .output(ledger, take, Lock::Key(m))
            .output(ledger, mv.checked_sub(take).unwrap(), keep_lock)
            .sign(&[&shop])
            .unwrap()
    };
    expect_err(
        net.submit(&draw("5.01", mandate)).await,
        Code::PermissionDenied,
        "merchant takes 5.01, more than the per-payment maximum 5.00",
    );
    expect_err(
        net.submit(&draw("5.00", Lock::Key(p))).await,
        Code::PermissionDenied,
        "more than the per-payment maximum",
    );
    let ok = draw("5.00", mandate);
    committed(&net.submit(&ok).await.unwrap());
    assert_eq!(net.balance(&m).await, "25.00");
    // After expiry only the owner may spend it.
    net.advance_clock(601_000);
    let (mc2, mv2) = coin(&ok, mandate);
    let after = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
        .input(mc2, mv2)
        .output(ledger, yuan("1.00"), Lock::Key(m))
        .output(ledger, mv2.checked_sub(yuan("1.00")).unwrap(), mandate)
        .sign(&[&shop])
        .unwrap();
    expect_err(
        net.submit(&after).await,
        Code::FailedPrecondition,
        "mandate expired at",
    );
    let owner = TransferBuilder::new(UnixSeconds(net.now_s() + 600))
        .input(mc2, mv2)
        .output(ledger, mv2, Lock::Key(p))
        .sign(&[&payer])
        .unwrap();
    committed(&net.submit(&owner).await.unwrap());
    net.assert_conserved(yuan("1000")).await;
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structural_rejections_reach_the_client_precisely() {
    let mut net = LedgerNet::start(1).await;
    net.issue(yuan("1000")).await;
    let payer = net.open_wallet(1, KycTier::Class1).await;
    let other = Keypair::from_seed(&[9; 32]);
    net.exchange_in(&payer.public(), "100.00", "d")
        .await
        .unwrap();
    let good = net
        .build_signed(&payer, &[(&net.address(&payer.public()), "1.00")])
        .await
        .unwrap();
    let body = good.body().clone();
    let ledger = net.ledger_id();
    let key = Lock::Key(payer.public());
    // Signed wire transfers whose bodies need not decode (sign_body would refuse them).
    let raw = |b: TransferBody| {
        let bytes = b.encode();
        let txid = Txid::of_body(&bytes);
        v1::SubmitTransferRequest {
            transfer: Some(v1::SignedTransfer {
                body: bytes,
                witnesses: vec![v1::Witness {
                    public_key: payer.public().as_bytes().to_vec(),
                    signature: payer.sign(&txid.signing_message()).to_vec(),
                }],
            }),
        }
    };
    let mut client = net.client.clone();
    let before = net.ledger().totals().await.unwrap();

    let mut no_inputs = body.clone();
    no_inputs.inputs.clear();
    expect_err(
        client.submit_transfer(raw(no_inputs)).await,
        Code::InvalidArgument,
        "transfer has no inputs",
    );
    let mut no_outputs = body.clone();
    no_outputs.outputs.clear();
    expect_err(
        client.submit_transfer(raw(no_outputs)).await,
        Code::InvalidArgument,
        "transfer has no outputs",
    );
    let mut many_in = body.clone();
    many_in.inputs = (0..=MAX_INPUTS)
        .map(|i| Input {
            outpoint: OutPoint {
                txid: Txid([1; 32]),
                index: i as u16,
            },
            value: Amount::from_fen(1),
        })
        .collect();
    expect_err(
        client.submit_transfer(raw(many_in)).await,
        Code::InvalidArgument,
        "33 inputs; at most 32",
    );
    let mut many_out = body.clone();
    many_out.outputs = vec![
        Output {
            ledger,
            value: Amount::from_fen(1),
            lock: key
        };
        MAX_OUTPUTS + 1
    ];
    expect_err(
        client.submit_transfer(raw(many_out)).await,
        Code::InvalidArgument,
        "33 outputs; at most 32",
    );
    let mut zero_in = body.clone();
    zero_in.inputs[0].value = Amount::ZERO;
    expect_err(
        client.submit_transfer(raw(zero_in)).await,
        Code::InvalidArgument,
        "input 0 has zero value",
    );
    let mut overflow = body.clone();
    overflow.outputs = vec![
        Output {
            ledger,
            value: Amount::from_fen(u64::MAX),
            lock: key,
        },
        Output {
            ledger,
            value: Amount::from_fen(u64::MAX),
            lock: key,
        },
    ];
    expect_err(
        client.submit_transfer(raw(overflow)).await,
        Code::InvalidArgument,
        "values overflow",
    );
    let mut huge = to_signed_transfer(&good);
    huge.body = vec![1; MAX_BODY_BYTES + 1];
    let r = net
        .client
        .submit_transfer(v1::SubmitTransferRequest {
            transfer: Some(huge),
        })
        .await;
    expect_err(
        r,
        Code::InvalidArgument,
        &format!(
            "body is {} bytes; at most {MAX_BODY_BYTES}",
            MAX_BODY_BYTES + 1
        ),
    );
    let mut not_a_point = to_signed_transfer(&good);
    // y = 2 is not the y-coordinate of any point on the curve.
    let mut bad_key = [0u8; 32];
    bad_key[0] = 2;
    not_a_point.witnesses[0].public_key = bad_key.to_vec();
    let r = net
        .client
        .submit_transfer(v1::SubmitTransferRequest {
            transfer: Some(not_a_point),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "witness 0:");
    let mut twice = to_signed_transfer(&good);
    twice.witnesses.push(twice.witnesses[0].clone());
    let r = net
        .client
        .submit_transfer(v1::SubmitTransferRequest {
            transfer: Some(twice),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "two witnesses carry the same key");
    let extra = sign_body(good.body_bytes().to_vec(), &[&payer, &other]).unwrap();
    expect_err(
        net.submit(&extra).await,
        Code::PermissionDenied,
        "is not needed by any input",
    );

    assert_eq!(net.ledger().totals().await.unwrap(), before);
    net.stop().await;
}
