//! Signed requests as a client builds them: each wire message together with its signature
//! over the typed message of `cbdc_core::messages`, so no client assembles signing bytes.

use cbdc_core::messages::{
    AdminAction, AdminOrder, ExchangeDirection, Header, OpenProof, OperatorAction, OperatorOrder,
    OperatorStatus, ReadGrant, Signed, WalletAction,
};
use cbdc_core::{Keypair, KycTier, LedgerId, PublicKey, Transfer};

use crate::convert::{header as wire_header, to_kyc_tier, to_signed_transfer};
use crate::v1;

/// How long an order a client builds stays valid, by default.
pub const ORDER_VALID_FOR_MS: u64 = 10 * 60 * 1000;
/// How long a read grant a client builds stays valid, by default.
pub const READ_VALID_FOR_MS: u64 = 5 * 60 * 1000;

/// The header of an order for `target` in `network`, valid until `expires_unix_ms`.
pub fn header(
    network: &str,
    target: LedgerId,
    request_id: &str,
    expires_unix_ms: u64,
) -> v1::RequestHeader {
    v1::RequestHeader {
        network: network.to_string(),
        target: target.0,
        request_id: request_id.to_string(),
        expires_at_unix_ms: expires_unix_ms,
    }
}

fn borrowed(h: &v1::RequestHeader) -> Header<'_> {
    wire_header("header", Some(h)).expect("present")
}

fn admin_sign(admin: &Keypair, h: &v1::RequestHeader, action: AdminAction<'_>) -> Vec<u8> {
    AdminOrder {
        header: borrowed(h),
        action,
    }
    .sign(admin)
    .to_vec()
}

fn operator_sign(
    authority: &Keypair,
    h: &v1::RequestHeader,
    action: OperatorAction<'_>,
) -> Vec<u8> {
    OperatorOrder {
        header: borrowed(h),
        action,
    }
    .sign(authority)
    .to_vec()
}

/// The administrator's registration of bank `ledger`'s settlement `key`, reached at
/// `endpoint`, named "Bank {ledger}".
pub fn register_operator(
    admin: &Keypair,
    header: v1::RequestHeader,
    ledger: LedgerId,
    key: &PublicKey,
    endpoint: &str,
) -> v1::RegisterOperatorRequest {
    let operator = v1::Operator {
        ledger_id: ledger.0,
        name: format!("Bank {}", ledger.0),
        operator_public_key: key.as_bytes().to_vec(),
        endpoint: endpoint.to_string(),
        status: v1::OperatorStatus::Active as i32,
    };
    let admin_signature = admin_sign(
        admin,
        &header,
        AdminAction::Register {
            ledger,
            name: &operator.name,
            operator_key: &operator.operator_public_key,
            endpoint: &operator.endpoint,
        },
    );
    v1::RegisterOperatorRequest {
        operator: Some(operator),
        admin_signature,
        header: Some(header),
    }
}

/// The administrator's order to set bank `ledger` active or suspended.
pub fn set_operator_status(
    admin: &Keypair,
    header: v1::RequestHeader,
    ledger: LedgerId,
    status: OperatorStatus,
) -> v1::SetOperatorStatusRequest {
    let admin_signature = admin_sign(admin, &header, AdminAction::SetStatus { ledger, status });
    v1::SetOperatorStatusRequest {
        ledger_id: ledger.0,
        status: match status {
            OperatorStatus::Active => v1::OperatorStatus::Active,
            OperatorStatus::Suspended => v1::OperatorStatus::Suspended,
        } as i32,
        admin_signature,
        header: Some(header),
    }
}

/// The administrator's order to issue `amount` (decimal yuan) to `ledger` against
/// `reserve_reference`, once per the header's request id.
pub fn mint(
    admin: &Keypair,
    header: v1::RequestHeader,
    ledger: LedgerId,
    amount: &str,
    reserve_reference: &str,
) -> v1::MintRequest {
    let admin_signature = admin_sign(
        admin,
        &header,
        AdminAction::Mint {
            ledger,
            amount,
            reserve_reference,
        },
    );
    v1::MintRequest {
        ledger_id: ledger.0,
        amount: amount.into(),
        reserve_reference: reserve_reference.into(),
        admin_signature,
        header: Some(header),
    }
}

/// Opening an anonymous wallet for `key` on `ledger` of `network` with `phone` (E.164),
/// with its proof of key possession.
pub fn open_wallet(
    key: &Keypair,
    network: &str,
    ledger: LedgerId,
    phone: &str,
) -> v1::OpenWalletRequest {
    v1::OpenWalletRequest {
        public_key: key.public().as_bytes().to_vec(),
        tier: to_kyc_tier(KycTier::Class4Anonymous) as i32,
        phone_number: phone.to_string(),
        network: network.to_string(),
        signature: OpenProof {
            network,
            ledger,
            key: key.public(),
            phone,
        }
        .sign(key)
        .to_vec(),
    }
}

/// The bank authority's order to freeze, unfreeze or close the wallet at `address`.
pub fn wallet_action(
    authority: &Keypair,
    header: v1::RequestHeader,
    action: WalletAction,
    address: &str,
    reason: &str,
) -> v1::WalletActionRequest {
    let authority_signature = operator_sign(
        authority,
        &header,
        OperatorAction::Wallet {
            action,
            address,
            reason,
        },
    );
    v1::WalletActionRequest {
        address: address.into(),
        reason: reason.into(),
        header: Some(header),
        authority_signature,
    }
}

/// The bank authority's order to move the wallet at `address` to `tier`, after the
/// identity check `reason` names.
pub fn set_wallet_tier(
    authority: &Keypair,
    header: v1::RequestHeader,
    address: &str,
    tier: KycTier,
    reason: &str,
) -> v1::SetWalletTierRequest {
    let authority_signature = operator_sign(
        authority,
        &header,
        OperatorAction::SetTier {
            address,
            tier,
            reason,
        },
    );
    v1::SetWalletTierRequest {
        address: address.into(),
        tier: to_kyc_tier(tier) as i32,
        reason: reason.into(),
        header: Some(header),
        authority_signature,
    }
}

/// The bank authority's order to exchange `amount` with the wallet at `address`: from the
/// vault to the wallet, or (with the wallet's signed payment) from the wallet to the vault.
pub fn exchange(
    authority: &Keypair,
    header: v1::RequestHeader,
    address: &str,
    amount: &str,
    wallet_transfer: Option<&Transfer>,
) -> v1::ExchangeRequest {
    let direction = match wallet_transfer {
        None => ExchangeDirection::DepositToWallet,
        Some(_) => ExchangeDirection::WalletToDeposit,
    };
    let authority_signature = operator_sign(
        authority,
        &header,
        OperatorAction::Exchange {
            address,
            amount,
            direction,
            wallet_transfer: wallet_transfer.map(Transfer::txid),
        },
    );
    v1::ExchangeRequest {
        address: address.into(),
        amount: amount.into(),
        direction: crate::convert::to_direction(direction) as i32,
        wallet_transfer: wallet_transfer.map(to_signed_transfer),
        header: Some(header),
        authority_signature,
    }
}

/// The bank authority's order to return `amount` from the vault to the central bank.
pub fn redeem(authority: &Keypair, header: v1::RequestHeader, amount: &str) -> v1::RedeemRequest {
    let authority_signature = operator_sign(authority, &header, OperatorAction::Redeem { amount });
    v1::RedeemRequest {
        amount: amount.into(),
        header: Some(header),
        authority_signature,
    }
}

/// A grant to read the wallet at `address` on `ledger` until `expires_unix_ms`, signed by
/// the wallet's own key (or, with `by_authority`, by its bank's authority key).
pub fn read_auth(
    signer: &Keypair,
    network: &str,
    ledger: LedgerId,
    address: &str,
    expires_unix_ms: u64,
    by_authority: bool,
) -> v1::ReadAuth {
    v1::ReadAuth {
        network: network.to_string(),
        expires_at_unix_ms: expires_unix_ms,
        signature: ReadGrant {
            network,
            ledger,
            address,
            expires_unix_ms,
        }
        .sign(signer)
        .to_vec(),
        by_authority,
    }
}

/// A phone number of its own for each key (for test and benchmark wallets): +86 139 and
/// eight digits from the key.
pub fn phone_of(key: &PublicKey) -> String {
    let b = key.as_bytes();
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % 100_000_000;
    format!("+86139{n:08}")
}

/// Opens `key`'s wallet on `ledger` (anonymous, with `phone_of(key)`), then has the bank's
/// `authority` move it to `tier`: the whole path a wallet of a verified customer takes.
pub async fn open_at_tier(
    client: &mut crate::v1::ledger_service_client::LedgerServiceClient<tonic::transport::Channel>,
    key: &Keypair,
    authority: &Keypair,
    network: &str,
    ledger: LedgerId,
    tier: KycTier,
    now_ms: u64,
) -> Result<v1::Wallet, tonic::Status> {
    let opened = client
        .open_wallet(open_wallet(key, network, ledger, &phone_of(&key.public())))
        .await?
        .into_inner();
    if tier == KycTier::Class4Anonymous {
        return Ok(opened);
    }
    let request_id = format!("kyc-{}", opened.address);
    let request = set_wallet_tier(
        authority,
        header(network, ledger, &request_id, now_ms + ORDER_VALID_FOR_MS),
        &opened.address,
        tier,
        "identity check",
    );
    Ok(client.set_wallet_tier(request).await?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbdc_core::messages::verify_bytes;

    /// Each request's signature is over exactly the typed message of what it carries.
    #[test]
    fn signatures_cover_what_the_requests_carry() {
        let admin = Keypair::from_seed(&[1; 32]);
        let op = Keypair::from_seed(&[2; 32]);
        let h = header("net", LedgerId(0), "r-1", 99);
        let r = register_operator(
            &admin,
            h.clone(),
            LedgerId(3),
            &op.public(),
            "http://10.0.0.3:1",
        );
        let o = r.operator.as_ref().unwrap();
        let signed = AdminOrder {
            header: borrowed(r.header.as_ref().unwrap()),
            action: AdminAction::Register {
                ledger: LedgerId(o.ledger_id),
                name: &o.name,
                operator_key: &o.operator_public_key,
                endpoint: &o.endpoint,
            },
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(&admin.checked_key(), &signed, &r.admin_signature),
            Ok(())
        );
        let m = mint(&admin, h.clone(), LedgerId(3), "10.00", "ref");
        let signed = AdminOrder {
            header: borrowed(m.header.as_ref().unwrap()),
            action: AdminAction::Mint {
                ledger: LedgerId(m.ledger_id),
                amount: &m.amount,
                reserve_reference: &m.reserve_reference,
            },
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(&admin.checked_key(), &signed, &m.admin_signature),
            Ok(())
        );
        let w = open_wallet(&op, "net", LedgerId(3), "+8613800000000");
        let signed = OpenProof {
            network: "net",
            ledger: LedgerId(3),
            key: op.public(),
            phone: &w.phone_number,
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(&op.checked_key(), &signed, &w.signature),
            Ok(())
        );
        assert_eq!(w.public_key, op.public().as_bytes());
        let t = set_wallet_tier(&op, h, "ecny1x", KycTier::Class2, "id-check-7");
        let signed = OperatorOrder {
            header: borrowed(t.header.as_ref().unwrap()),
            action: OperatorAction::SetTier {
                address: &t.address,
                tier: KycTier::Class2,
                reason: &t.reason,
            },
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(&op.checked_key(), &signed, &t.authority_signature),
            Ok(())
        );
    }
}
