//! The signed messages' bytes, kinds, headers and verification.
use super::*;

fn kp(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

fn header(target: u32) -> Header<'static> {
    Header {
        network: "net",
        target: LedgerId(target),
        request_id: "r",
        expires_unix_ms: 1_000,
    }
}

fn op(action: OperatorAction<'static>) -> OperatorOrder<'static> {
    OperatorOrder {
        header: header(1),
        action,
    }
}

fn admin(action: AdminAction<'static>) -> AdminOrder<'static> {
    AdminOrder {
        header: header(0),
        action,
    }
}

/// Every kind of message, with fields that differ in one place from the next, so two
/// kinds never share bytes.
fn every_kind() -> Vec<(&'static str, Vec<u8>)> {
    let txid = Txid([7; 32]);
    let txids = [Txid([1; 32]), Txid([2; 32])];
    vec![
        (
            "open",
            OpenProof {
                network: "net",
                ledger: LedgerId(1),
                key: kp(1).public(),
                phone: "+8613800000000",
            }
            .signing_bytes(),
        ),
        (
            "read",
            ReadGrant {
                network: "net",
                ledger: LedgerId(1),
                address: "ecny1x",
                expires_unix_ms: 1_000,
            }
            .signing_bytes(),
        ),
        (
            "freeze",
            op(OperatorAction::Wallet {
                action: WalletAction::Freeze,
                address: "ecny1x",
                reason: "court",
            })
            .signing_bytes(),
        ),
        (
            "unfreeze",
            op(OperatorAction::Wallet {
                action: WalletAction::Unfreeze,
                address: "ecny1x",
                reason: "court",
            })
            .signing_bytes(),
        ),
        (
            "tier",
            op(OperatorAction::SetTier {
                address: "ecny1x",
                tier: KycTier::Class2,
                reason: "court",
            })
            .signing_bytes(),
        ),
        (
            "exchange",
            op(OperatorAction::Exchange {
                address: "ecny1x",
                amount: "1.00",
                direction: ExchangeDirection::DepositToWallet,
                wallet_transfer: None,
            })
            .signing_bytes(),
        ),
        (
            "redeem",
            op(OperatorAction::Redeem { amount: "1.00" }).signing_bytes(),
        ),
        (
            "settle",
            BankRequest::Settle {
                network: "net",
                from: LedgerId(1),
                txid: &txid,
            }
            .signing_bytes(),
        ),
        (
            "settle-batch",
            BankRequest::SettleBatch {
                network: "net",
                from: LedgerId(1),
                txids: &txids,
            }
            .signing_bytes(),
        ),
        (
            "register",
            admin(AdminAction::Register {
                ledger: LedgerId(1),
                name: "bank",
                operator_key: &[3; 32],
                endpoint: "http://x",
            })
            .signing_bytes(),
        ),
        (
            "status",
            admin(AdminAction::SetStatus {
                ledger: LedgerId(1),
                status: OperatorStatus::Suspended,
            })
            .signing_bytes(),
        ),
        (
            "mint",
            admin(AdminAction::Mint {
                ledger: LedgerId(1),
                amount: "1.00",
                reserve_reference: "ref",
            })
            .signing_bytes(),
        ),
        (
            "countersignature",
            Countersignature {
                network: "net",
                txid,
                to_ledger: LedgerId(2),
            }
            .signing_bytes(),
        ),
    ]
}

/// `tag`, then each field with its 4-byte length (integers as given, unprefixed).
fn lp(tag: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = tag.to_vec();
    for p in parts {
        m.extend_from_slice(&(p.len() as u32).to_be_bytes());
        m.extend_from_slice(p);
    }
    m
}

#[test]
fn the_signed_bytes_are_the_contract() {
    // The exact bytes, written out by hand: a change here breaks every signer in the
    // field, so it must be deliberate.
    let mut freeze = lp(OPERATOR_TAG, &[b"wallet", b"net"]);
    freeze.extend_from_slice(&1u32.to_be_bytes());
    freeze.extend_from_slice(&lp(b"", &[b"r"]));
    freeze.extend_from_slice(&1_000u64.to_be_bytes());
    freeze.extend_from_slice(&lp(b"", &[b"freeze", b"ecny1x", b"court"]));
    assert_eq!(every_kind()[2].1, freeze);

    let mut status = lp(ADMIN_TAG, &[b"status", b"net"]);
    status.extend_from_slice(&0u32.to_be_bytes());
    status.extend_from_slice(&lp(b"", &[b"r"]));
    status.extend_from_slice(&1_000u64.to_be_bytes());
    status.extend_from_slice(&1u32.to_be_bytes());
    status.extend_from_slice(&lp(b"", &[b"suspended"]));
    assert_eq!(every_kind()[10].1, status);

    let mut settle = lp(BANK_TAG, &[b"settle", b"net"]);
    settle.extend_from_slice(&1u32.to_be_bytes());
    settle.extend_from_slice(&lp(b"", &[&[7; 32]]));
    assert_eq!(every_kind()[7].1, settle);

    let mut open = lp(OPEN_TAG, &[b"open", b"net"]);
    open.extend_from_slice(&1u32.to_be_bytes());
    open.extend_from_slice(&lp(b"", &[kp(1).public().as_bytes(), b"+8613800000000"]));
    assert_eq!(every_kind()[0].1, open);
}

#[test]
fn a_read_grant_and_a_tier_change_sign_exactly_their_fields() {
    let mut read = lp(READ_TAG, &[b"read", b"net"]);
    read.extend_from_slice(&1u32.to_be_bytes());
    read.extend_from_slice(&lp(b"", &[b"ecny1x"]));
    read.extend_from_slice(&1_000u64.to_be_bytes());
    assert_eq!(every_kind()[1].1, read);

    let mut tier = lp(OPERATOR_TAG, &[b"tier", b"net"]);
    tier.extend_from_slice(&1u32.to_be_bytes());
    tier.extend_from_slice(&lp(b"", &[b"r"]));
    tier.extend_from_slice(&1_000u64.to_be_bytes());
    tier.extend_from_slice(&lp(b"", &[b"ecny1x", b"class2", b"court"]));
    assert_eq!(every_kind()[4].1, tier);
    // Each tier signs as its own name.
    let names: std::collections::BTreeSet<&str> =
        KycTier::ALL.iter().map(|t| tier_name(*t)).collect();
    assert_eq!(names.len(), KycTier::ALL.len());
    assert_eq!(tier_name(KycTier::Class4Anonymous), "class4-anonymous");
}

#[test]
fn lifetimes_and_expiry_are_what_the_contract_says() {
    assert_eq!(ORDER_LIFETIME_MAX_MS, 86_400_000, "a day");
    assert_eq!(READ_LIFETIME_MAX_MS, 900_000, "fifteen minutes");
    assert!(HeaderError::Expired { at: 1, now: 2 }.is_expired());
    for other in [
        HeaderError::RequestId(0),
        HeaderError::Target { signed: 1, ours: 2 },
        HeaderError::TooLong {
            at: 1,
            now: 0,
            max_ms: 0,
        },
    ] {
        assert!(!other.is_expired(), "{other:?}");
    }
}

#[test]
fn an_admin_order_digest_ignores_only_the_expiry() {
    let base = admin(AdminAction::Mint {
        ledger: LedgerId(1),
        amount: "1.00",
        reserve_reference: "ref",
    });
    let mut later = base;
    later.header.expires_unix_ms += 1;
    assert_eq!(base.content_digest(), later.content_digest());
    let mut other = base;
    other.action = AdminAction::Mint {
        ledger: LedgerId(1),
        amount: "1.01",
        reserve_reference: "ref",
    };
    assert_ne!(base.content_digest(), other.content_digest());
    let mut renamed = base;
    renamed.header.request_id = "r2";
    assert_ne!(base.content_digest(), renamed.content_digest());
}

#[test]
fn fields_cannot_be_shifted_between_each_other() {
    // With separators, ("a\0b", "c") and ("a", "b\0c") could sign alike; with lengths
    // they do not.
    let a = op(OperatorAction::Wallet {
        action: WalletAction::Freeze,
        address: "ecny1\0x",
        reason: "court",
    });
    let b = op(OperatorAction::Wallet {
        action: WalletAction::Freeze,
        address: "ecny1",
        reason: "x\0court",
    });
    assert_ne!(a.signing_bytes(), b.signing_bytes());
}

#[test]
fn a_signature_for_one_kind_verifies_for_no_other() {
    let signer = kp(9);
    let kinds = every_kind();
    for (i, (name, bytes)) in kinds.iter().enumerate() {
        let sig = signer.sign(bytes);
        assert_eq!(verify_bytes(&signer.checked_key(), bytes, &sig), Ok(()));
        assert_eq!(
            verify_bytes(&kp(8).checked_key(), bytes, &sig),
            Err(SignatureError::Mismatch),
            "{name} verified under another key"
        );
        for (j, (other, other_bytes)) in kinds.iter().enumerate() {
            if i != j {
                assert_eq!(
                    verify_bytes(&signer.checked_key(), other_bytes, &sig),
                    Err(SignatureError::Mismatch),
                    "a {name} signature verified as {other}"
                );
            }
        }
    }
}

#[test]
fn the_header_is_signed_and_the_digest_ignores_only_the_expiry() {
    let base = op(OperatorAction::Redeem { amount: "5.00" });
    let mut later = base;
    later.header.expires_unix_ms = 2_000;
    assert_ne!(base.signing_bytes(), later.signing_bytes());
    assert_eq!(base.content_digest(), later.content_digest());
    let changes: [fn(&mut OperatorOrder<'static>); 4] = [
        |o| o.header.network = "other",
        |o| o.header.target = LedgerId(2),
        |o| o.header.request_id = "r2",
        |o| o.action = OperatorAction::Redeem { amount: "5.01" },
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut other = base;
        change(&mut other);
        assert_ne!(base.signing_bytes(), other.signing_bytes(), "change {i}");
        assert_ne!(base.content_digest(), other.content_digest(), "change {i}");
    }
}

#[test]
fn a_header_is_checked_for_network_target_id_and_expiry() {
    let h = header(1);
    assert_eq!(h.check("net", LedgerId(1), 999), Ok(()));
    assert!(matches!(
        h.check("main", LedgerId(1), 999),
        Err(HeaderError::Network { .. })
    ));
    assert_eq!(
        h.check("net", LedgerId(2), 999),
        Err(HeaderError::Target { signed: 1, ours: 2 })
    );
    // Valid strictly before its expiry.
    assert_eq!(
        h.check("net", LedgerId(1), 1_000),
        Err(HeaderError::Expired {
            at: 1_000,
            now: 1_000
        })
    );
    let mut far = h;
    far.expires_unix_ms = 1 + ORDER_LIFETIME_MAX_MS;
    assert_eq!(far.check("net", LedgerId(1), 1), Ok(()));
    far.expires_unix_ms += 1;
    assert!(matches!(
        far.check("net", LedgerId(1), 1),
        Err(HeaderError::TooLong { .. })
    ));
    let mut unnamed = h;
    unnamed.request_id = "";
    assert_eq!(
        unnamed.check("net", LedgerId(1), 0),
        Err(HeaderError::RequestId(0))
    );
    let long = "x".repeat(REQUEST_ID_MAX + 1);
    let mut named = h;
    named.request_id = &long;
    assert_eq!(
        named.check("net", LedgerId(1), 0),
        Err(HeaderError::RequestId(REQUEST_ID_MAX + 1))
    );
    named.request_id = &long[1..];
    assert_eq!(named.check("net", LedgerId(1), 0), Ok(()));
}

#[test]
fn a_read_grant_is_short_lived() {
    let g = ReadGrant {
        network: "net",
        ledger: LedgerId(1),
        address: "ecny1x",
        expires_unix_ms: READ_LIFETIME_MAX_MS + 10,
    };
    assert_eq!(g.check("net", LedgerId(1), 10), Ok(()));
    assert!(matches!(
        g.check("net", LedgerId(1), 9),
        Err(HeaderError::TooLong { .. })
    ));
    assert!(g.check("net", LedgerId(1), g.expires_unix_ms).is_err());
    assert!(g.check("net", LedgerId(2), 10).is_err());
    assert!(g.check("x", LedgerId(1), 10).is_err());
}

#[test]
fn kinds_are_separate_request_spaces() {
    let kinds: Vec<&str> = vec![
        op(OperatorAction::Wallet {
            action: WalletAction::Close,
            address: "a",
            reason: "",
        })
        .kind(),
        op(OperatorAction::SetTier {
            address: "a",
            tier: KycTier::Class1,
            reason: "",
        })
        .kind(),
        op(OperatorAction::Exchange {
            address: "a",
            amount: "1",
            direction: ExchangeDirection::WalletToDeposit,
            wallet_transfer: None,
        })
        .kind(),
        op(OperatorAction::Redeem { amount: "1" }).kind(),
        admin(AdminAction::SetStatus {
            ledger: LedgerId(1),
            status: OperatorStatus::Active,
        })
        .kind(),
        admin(AdminAction::Mint {
            ledger: LedgerId(1),
            amount: "1",
            reserve_reference: "",
        })
        .kind(),
        admin(AdminAction::Register {
            ledger: LedgerId(1),
            name: "",
            operator_key: &[],
            endpoint: "",
        })
        .kind(),
    ];
    let unique: std::collections::BTreeSet<_> = kinds.iter().collect();
    assert_eq!(unique.len(), kinds.len(), "{kinds:?}");
}

#[test]
fn many_signatures_are_checked_together_and_each_bad_one_named() {
    let signer = kp(5);
    let messages: Vec<Vec<u8>> = (0..6u8)
        .map(|n| {
            Countersignature {
                network: "net",
                txid: Txid([n; 32]),
                to_ledger: LedgerId(2),
            }
            .signing_bytes()
        })
        .collect();
    let mut sigs: Vec<Vec<u8>> = messages.iter().map(|m| signer.sign(m).to_vec()).collect();
    let key = signer.checked_key();
    let all: Vec<_> = (0..6)
        .map(|i| (&key, &messages[i][..], &sigs[i][..]))
        .collect();
    assert!(verify_each(&all).iter().all(Result::is_ok));
    sigs[2] = signer.sign(&messages[3]).to_vec();
    sigs[4].truncate(10);
    let some_bad: Vec<_> = (0..6)
        .map(|i| (&key, &messages[i][..], &sigs[i][..]))
        .collect();
    let results = verify_each(&some_bad);
    assert_eq!(results[2], Err(SignatureError::Mismatch));
    assert_eq!(results[4], Err(SignatureError::Length(10)));
    for i in [0, 1, 3, 5] {
        assert_eq!(results[i], Ok(()), "item {i}");
    }
}

#[test]
fn verify_names_a_short_signature_and_checks_the_message_type() {
    let signer = kp(4);
    let order = op(OperatorAction::Redeem { amount: "5.00" });
    let sig = order.sign(&signer);
    assert_eq!(verify(&signer.checked_key(), &order, &sig), Ok(()));
    assert_eq!(
        verify(&signer.checked_key(), &order, &sig[..63]),
        Err(SignatureError::Length(63))
    );
    let other = op(OperatorAction::Redeem { amount: "50.00" });
    assert_eq!(
        verify(&signer.checked_key(), &other, &sig),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn each_issue_request_spends_its_own_reserve_entry() {
    let expected: [u8; 32] = sha2::Sha256::new()
        .chain_update(b"cbdc/v1/reserve")
        .chain_update(b"issue-1")
        .finalize()
        .into();
    assert_eq!(reserve_txid("issue-1"), Txid(expected));
    assert_ne!(reserve_txid("issue-2"), reserve_txid("issue-1"));
}
