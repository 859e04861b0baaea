//! Shared fixtures: a ledger with a few wallets and funded outputs.
#![allow(dead_code)]

use std::collections::BTreeMap;

use cbdc_core::validate::{InputState, StatefulContext, check_stateful, check_stateless};
use cbdc_core::{
    Amount, Effects, Keypair, KycTier, LedgerId, Lock, OutPoint, Output, PublicKey, Reject,
    TierTable, Transfer, Txid, UnixSeconds, WalletState, WalletStatus,
};

pub const LEDGER: LedgerId = LedgerId(1);
pub const OTHER_LEDGER: LedgerId = LedgerId(2);
pub const NOW: UnixSeconds = UnixSeconds(1_700_000_000);

pub fn yuan(y: u64) -> Amount {
    Amount::from_yuan(y).expect("small")
}

pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed(&[seed; 32])
}

pub fn outpoint(n: u8) -> OutPoint {
    OutPoint {
        txid: Txid([n; 32]),
        index: 0,
    }
}

/// The ledger's books as validation sees them.
pub struct World {
    pub outputs: BTreeMap<OutPoint, InputState>,
    pub wallets: BTreeMap<PublicKey, WalletState>,
    pub tiers: TierTable,
    pub now: UnixSeconds,
}

impl World {
    pub fn new() -> World {
        World {
            outputs: BTreeMap::new(),
            wallets: BTreeMap::new(),
            tiers: TierTable::default(),
            now: NOW,
        }
    }

    pub fn wallet(&mut self, key: &Keypair, tier: KycTier) -> &mut WalletState {
        self.wallets.entry(key.public()).or_insert(WalletState {
            status: WalletStatus::Active,
            tier,
            balance: Amount::ZERO,
            spent_today: Amount::ZERO,
        })
    }

    pub fn fund(&mut self, at: OutPoint, value: Amount, lock: Lock) {
        self.outputs.insert(
            at,
            InputState::Unspent(Output {
                ledger: LEDGER,
                value,
                lock,
            }),
        );
        if let Some(w) = self.wallets.get_mut(&lock.owner()) {
            w.balance = w.balance.checked_add(value).expect("small");
        }
    }

    /// Full validation: stateless, then stateful.
    pub fn check(&self, transfer: &Transfer) -> Result<Effects, Reject> {
        check_stateless(transfer, self.now)?;
        let inputs: Vec<InputState> = transfer
            .body()
            .inputs
            .iter()
            .map(|i| {
                self.outputs
                    .get(&i.outpoint)
                    .copied()
                    .unwrap_or(InputState::Missing)
            })
            .collect();
        check_stateful(
            transfer,
            &StatefulContext {
                ledger: LEDGER,
                now: self.now,
                inputs: &inputs,
                wallets: &self.wallets,
                tiers: &self.tiers,
            },
        )
    }
}
