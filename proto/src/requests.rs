//! Signed requests as a client builds them: each wire message together with its signature
//! over the typed message of `cbdc_core::messages`, so no client assembles signing bytes.

use cbdc_core::messages::{AdminOrder, OpenProof, Signed};
use cbdc_core::{Keypair, KycTier, LedgerId, PublicKey};

use crate::convert::to_kyc_tier;
use crate::v1;

/// The administrator's registration of bank `ledger`'s operator `key`, reached at
/// `endpoint`, named "Bank {ledger}".
pub fn register_operator(
    admin: &Keypair,
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
    let signature = AdminOrder::Register {
        ledger,
        name: &operator.name,
        operator_key: &operator.operator_public_key,
        endpoint: &operator.endpoint,
    }
    .sign(admin);
    v1::RegisterOperatorRequest {
        operator: Some(operator),
        admin_signature: signature.to_vec(),
    }
}

/// The administrator's order to issue `amount` (decimal yuan) to `ledger`, once per
/// `request_id`, against `reserve_reference`.
pub fn mint(
    admin: &Keypair,
    request_id: &str,
    ledger: LedgerId,
    amount: &str,
    reserve_reference: &str,
) -> v1::MintRequest {
    let signature = AdminOrder::Mint {
        request_id,
        ledger,
        amount,
        reserve_reference,
    }
    .sign(admin);
    v1::MintRequest {
        request_id: request_id.into(),
        ledger_id: ledger.0,
        amount: amount.into(),
        reserve_reference: reserve_reference.into(),
        admin_signature: signature.to_vec(),
    }
}

/// Opening a wallet for `key` on `ledger` at `tier`, with its proof of key possession.
pub fn open_wallet(
    key: &Keypair,
    ledger: LedgerId,
    tier: KycTier,
    phone_hash: Vec<u8>,
) -> v1::OpenWalletRequest {
    v1::OpenWalletRequest {
        public_key: key.public().as_bytes().to_vec(),
        tier: to_kyc_tier(tier) as i32,
        phone_hash,
        signature: OpenProof {
            ledger,
            key: key.public(),
        }
        .sign(key)
        .to_vec(),
    }
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
        let r = register_operator(&admin, LedgerId(3), &op.public(), "http://10.0.0.3:1");
        let o = r.operator.as_ref().unwrap();
        let signed = AdminOrder::Register {
            ledger: LedgerId(o.ledger_id),
            name: &o.name,
            operator_key: &o.operator_public_key,
            endpoint: &o.endpoint,
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(admin.verifying_key(), &signed, &r.admin_signature),
            Ok(())
        );
        let m = mint(&admin, "m-1", LedgerId(3), "10.00", "ref");
        let signed = AdminOrder::Mint {
            request_id: &m.request_id,
            ledger: LedgerId(m.ledger_id),
            amount: &m.amount,
            reserve_reference: &m.reserve_reference,
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(admin.verifying_key(), &signed, &m.admin_signature),
            Ok(())
        );
        let w = open_wallet(&op, LedgerId(3), KycTier::Class2, Vec::new());
        let signed = OpenProof {
            ledger: LedgerId(3),
            key: op.public(),
        }
        .signing_bytes();
        assert_eq!(
            verify_bytes(op.verifying_key(), &signed, &w.signature),
            Ok(())
        );
        assert_eq!(w.public_key, op.public().as_bytes());
    }
}
