//! Wallet KYC tiers, their limits, and wallet status.
//!
//! Limits are configuration: the published e-CNY figures have changed over time. The defaults
//! are the wallet classes of the People's Bank of China e-CNY white paper (July 2021):
//!
//! | class | identity                          | balance cap | per payment | per day   |
//! |-------|-----------------------------------|-------------|-------------|-----------|
//! | 1     | strong real-name, in person       | none        | none        | none      |
//! | 2     | remote real-name, bank account    | ¥500,000    | ¥50,000     | ¥100,000  |
//! | 3     | remote, weaker verification       | ¥20,000     | ¥5,000      | ¥10,000   |
//! | 4     | anonymous: phone number only      | ¥10,000     | ¥2,000      | ¥5,000    |
//!
//! The operator tier is the bank's own vault: it has no caps.

use crate::Amount;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KycTier {
    Class1,
    Class2,
    Class3,
    /// Anonymous: only a phone-number hash is known.
    Class4Anonymous,
    /// The bank's operator vault.
    Operator,
}

impl KycTier {
    pub const ALL: [KycTier; 5] = [
        KycTier::Class1,
        KycTier::Class2,
        KycTier::Class3,
        KycTier::Class4Anonymous,
        KycTier::Operator,
    ];
}

/// Caps of one tier; `None` means no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierLimits {
    pub balance_cap: Option<Amount>,
    pub per_payment_cap: Option<Amount>,
    pub daily_outgoing_cap: Option<Amount>,
}

impl TierLimits {
    pub const UNLIMITED: TierLimits = TierLimits {
        balance_cap: None,
        per_payment_cap: None,
        daily_outgoing_cap: None,
    };

    const fn yuan(balance: u64, per_payment: u64, daily: u64) -> TierLimits {
        TierLimits {
            balance_cap: Some(Amount::from_fen(balance * Amount::FEN_PER_YUAN)),
            per_payment_cap: Some(Amount::from_fen(per_payment * Amount::FEN_PER_YUAN)),
            daily_outgoing_cap: Some(Amount::from_fen(daily * Amount::FEN_PER_YUAN)),
        }
    }
}

/// The limits of every tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierTable {
    pub class1: TierLimits,
    pub class2: TierLimits,
    pub class3: TierLimits,
    pub class4_anonymous: TierLimits,
}

impl Default for TierTable {
    /// The 2021 white-paper figures.
    fn default() -> Self {
        TierTable {
            class1: TierLimits::UNLIMITED,
            class2: TierLimits::yuan(500_000, 50_000, 100_000),
            class3: TierLimits::yuan(20_000, 5_000, 10_000),
            class4_anonymous: TierLimits::yuan(10_000, 2_000, 5_000),
        }
    }
}

impl TierTable {
    pub fn limits(&self, tier: KycTier) -> TierLimits {
        match tier {
            KycTier::Class1 => self.class1,
            KycTier::Class2 => self.class2,
            KycTier::Class3 => self.class3,
            KycTier::Class4Anonymous => self.class4_anonymous,
            KycTier::Operator => TierLimits::UNLIMITED,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalletStatus {
    Active,
    /// Frozen by a legal order: may receive, may not spend.
    Frozen,
    /// Closed at zero balance: may neither receive nor spend.
    Closed,
}

/// What validation needs to know about one wallet, prefetched by the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletState {
    pub status: WalletStatus,
    pub tier: KycTier,
    pub balance: Amount,
    /// Outgoing total of the current day (in the ledger's configured time zone).
    pub spent_today: Amount,
}
