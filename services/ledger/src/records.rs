//! Value encodings of the ledger's records: fixed-width big-endian fields, strict decoding.
//! A record that does not decode is corruption, reported as [`Corrupt`], never guessed at.

use cbdc_core::{Amount, KycTier, Output, PublicKey, Txid, WalletStatus, Witness};

use crate::layout::POSITION_LEN;

/// A stored record that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what} record")]
pub struct Corrupt {
    pub what: &'static str,
}

fn corrupt(what: &'static str) -> Corrupt {
    Corrupt { what }
}

fn u64_at(b: &[u8], at: usize, what: &'static str) -> Result<u64, Corrupt> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
        .ok_or(corrupt(what))
}

pub use cbdc_store::counter;

/// A counter as an amount; a negative counter is corruption.
pub fn counter_amount(value: Option<&[u8]>) -> Result<Amount, Corrupt> {
    u64::try_from(counter(value))
        .map(Amount::from_fen)
        .map_err(|_| corrupt("balance"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletRecord {
    pub status: WalletStatus,
    pub tier: KycTier,
    pub opened_at_ms: u64,
    pub phone_hash: Option<[u8; 32]>,
}

fn status_byte(s: WalletStatus) -> u8 {
    match s {
        WalletStatus::Active => 1,
        WalletStatus::Frozen => 2,
        WalletStatus::Closed => 3,
    }
}

fn tier_byte(t: KycTier) -> u8 {
    match t {
        KycTier::Class1 => 1,
        KycTier::Class2 => 2,
        KycTier::Class3 => 3,
        KycTier::Class4Anonymous => 4,
        KycTier::Operator => 5,
    }
}

impl WalletRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(43);
        out.push(status_byte(self.status));
        out.push(tier_byte(self.tier));
        out.extend_from_slice(&self.opened_at_ms.to_be_bytes());
        if let Some(h) = &self.phone_hash {
            out.push(1);
            out.extend_from_slice(h);
        } else {
            out.push(0);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<WalletRecord, Corrupt> {
        let what = "wallet";
        let status = match b.first() {
            Some(1) => WalletStatus::Active,
            Some(2) => WalletStatus::Frozen,
            Some(3) => WalletStatus::Closed,
            _ => return Err(corrupt(what)),
        };
        let tier = tier_from_byte(b.get(1), what)?;
        let opened_at_ms = u64_at(b, 2, what)?;
        let phone_hash = match (b.get(10), b.len()) {
            (Some(0), 11) => None,
            (Some(1), 43) => Some(b[11..43].try_into().expect("32 bytes")),
            _ => return Err(corrupt(what)),
        };
        Ok(WalletRecord {
            status,
            tier,
            opened_at_ms,
            phone_hash,
        })
    }
}

fn tier_from_byte(b: Option<&u8>, what: &'static str) -> Result<KycTier, Corrupt> {
    match b {
        Some(1) => Ok(KycTier::Class1),
        Some(2) => Ok(KycTier::Class2),
        Some(3) => Ok(KycTier::Class3),
        Some(4) => Ok(KycTier::Class4Anonymous),
        Some(5) => Ok(KycTier::Operator),
        _ => Err(corrupt(what)),
    }
}

/// A tier change's value (its key holds the wallet, time and request id): the tier before,
/// the tier after, the identity check's reference.
pub fn encode_tier_change(from: KycTier, to: KycTier, reason: &str) -> Vec<u8> {
    let mut out = vec![tier_byte(from), tier_byte(to)];
    out.extend_from_slice(reason.as_bytes());
    out
}

pub fn decode_tier_change(b: &[u8]) -> Result<(KycTier, KycTier, String), Corrupt> {
    let what = "tier change";
    let from = tier_from_byte(b.first(), what)?;
    let to = tier_from_byte(b.get(1), what)?;
    let reason = std::str::from_utf8(b.get(2..).unwrap_or_default())
        .map_err(|_| corrupt(what))?
        .to_string();
    Ok((from, to, reason))
}

/// The state of an outpoint this ledger has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputState {
    Unspent(Output),
    Spent { by: Txid },
}

impl OutputState {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            OutputState::Unspent(o) => {
                let mut out = vec![0];
                out.extend_from_slice(&o.encode());
                out
            }
            OutputState::Spent { by } => {
                let mut out = vec![1];
                out.extend_from_slice(&by.0);
                out
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<OutputState, Corrupt> {
        match b.split_first() {
            Some((0, rest)) => Output::decode(rest)
                .map(OutputState::Unspent)
                .map_err(|_| corrupt("output")),
            Some((1, rest)) if rest.len() == 32 => Ok(OutputState::Spent {
                by: Txid(rest.try_into().expect("32 bytes")),
            }),
            _ => Err(corrupt("output")),
        }
    }
}

/// How a transfer reached this ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    /// Submitted by a wallet (or built by the operator vault) and validated here.
    Local = 0,
    /// Delivered by the central bank (issuance or a cross-ledger move), countersigned.
    Inbound = 1,
    /// Made by this ledger: a refused move's value credited back to its payer.
    Reversal = 2,
}

/// What the ledger stores for a committed transfer. The first [`POSITION_LEN`] bytes are its
/// log position: the commit versionstamp (filled in by the store at commit) and its order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRecord {
    pub position: [u8; POSITION_LEN],
    pub committed_at_ms: u64,
    pub kind: TransferKind,
    pub body: Vec<u8>,
    /// (public key, signature) pairs exactly as received.
    pub witnesses: Vec<([u8; 32], [u8; 64])>,
}

impl TransferRecord {
    pub fn witnesses_of(ws: &[Witness]) -> Vec<([u8; 32], [u8; 64])> {
        ws.iter()
            .map(|w| (*w.key.as_bytes(), w.signature))
            .collect()
    }

    /// Encoded for `set_versionstamped_value` at offset 0 (the stamp's 10 bytes are replaced).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            POSITION_LEN + 8 + 1 + 4 + self.body.len() + 1 + 96 * self.witnesses.len() + 4,
        );
        out.extend_from_slice(&self.position);
        out.extend_from_slice(&self.committed_at_ms.to_be_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out.push(self.witnesses.len() as u8);
        for (k, s) in &self.witnesses {
            out.extend_from_slice(k);
            out.extend_from_slice(s);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<TransferRecord, Corrupt> {
        let what = "transfer";
        let position: [u8; POSITION_LEN] = b
            .get(..POSITION_LEN)
            .ok_or(corrupt(what))?
            .try_into()
            .expect("12 bytes");
        let committed_at_ms = u64_at(b, POSITION_LEN, what)?;
        let kind = match b.get(POSITION_LEN + 8) {
            Some(0) => TransferKind::Local,
            Some(1) => TransferKind::Inbound,
            Some(2) => TransferKind::Reversal,
            _ => return Err(corrupt(what)),
        };
        let at = POSITION_LEN + 9;
        let len = b
            .get(at..at + 4)
            .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")) as usize)
            .ok_or(corrupt(what))?;
        let body = b.get(at + 4..at + 4 + len).ok_or(corrupt(what))?.to_vec();
        let mut at = at + 4 + len;
        let n = *b.get(at).ok_or(corrupt(what))? as usize;
        at += 1;
        let mut witnesses = Vec::with_capacity(n);
        for _ in 0..n {
            let w = b.get(at..at + 96).ok_or(corrupt(what))?;
            witnesses.push((
                w[..32].try_into().expect("32"),
                w[32..].try_into().expect("64"),
            ));
            at += 96;
        }
        if at != b.len() {
            return Err(corrupt(what));
        }
        Ok(TransferRecord {
            position,
            committed_at_ms,
            kind,
            body,
            witnesses,
        })
    }
}

/// One line of a wallet's history (the key carries the commit stamp): a transfer in or out,
/// or a change of the wallet's tier by the bank's authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    pub txid: Txid,
    pub amount: Amount,
    pub incoming: bool,
    pub committed_at_ms: u64,
    pub memo: Vec<u8>,
    /// Set for a tier change (no txid, no amount).
    pub tier_change: Option<TierNote>,
}

/// A tier change as the wallet's history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierNote {
    pub from: KycTier,
    pub to: KycTier,
    pub request_id: String,
    pub reason: String,
}

/// The marker byte (where a transfer line has 0 for out, 1 for in) of a tier change line.
const TIER_LINE: u8 = 2;

impl HistoryRecord {
    /// A tier change line at `at_ms`.
    pub fn tier_change(note: TierNote, at_ms: u64) -> HistoryRecord {
        HistoryRecord {
            txid: Txid([0; 32]),
            amount: Amount::ZERO,
            incoming: false,
            committed_at_ms: at_ms,
            memo: Vec::new(),
            tier_change: Some(note),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 8 + 1 + 8 + self.memo.len());
        out.extend_from_slice(&self.txid.0);
        out.extend_from_slice(&self.amount.fen().to_be_bytes());
        match &self.tier_change {
            None => {
                out.push(u8::from(self.incoming));
                out.extend_from_slice(&self.committed_at_ms.to_be_bytes());
                out.extend_from_slice(&self.memo);
            }
            Some(note) => {
                out.push(TIER_LINE);
                out.extend_from_slice(&self.committed_at_ms.to_be_bytes());
                out.push(tier_byte(note.from));
                out.push(tier_byte(note.to));
                // Request ids are at most 128 bytes.
                out.push(u8::try_from(note.request_id.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(note.request_id.as_bytes());
                out.extend_from_slice(note.reason.as_bytes());
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<HistoryRecord, Corrupt> {
        let what = "history";
        if b.len() < 49 {
            return Err(corrupt(what));
        }
        let committed_at_ms = u64_at(b, 41, what)?;
        let (incoming, tier_change, memo) = match b[40] {
            0 => (false, None, b[49..].to_vec()),
            1 => (true, None, b[49..].to_vec()),
            TIER_LINE => {
                let from = tier_from_byte(b.get(49), what)?;
                let to = tier_from_byte(b.get(50), what)?;
                let n = usize::from(*b.get(51).ok_or(corrupt(what))?);
                let text = |r: &[u8]| {
                    std::str::from_utf8(r)
                        .map(str::to_string)
                        .map_err(|_| corrupt(what))
                };
                let request_id = text(b.get(52..52 + n).ok_or(corrupt(what))?)?;
                let reason = text(&b[52 + n..])?;
                let note = TierNote {
                    from,
                    to,
                    request_id,
                    reason,
                };
                (false, Some(note), Vec::new())
            }
            _ => return Err(corrupt(what)),
        };
        Ok(HistoryRecord {
            txid: Txid(b[..32].try_into().expect("32")),
            amount: Amount::from_fen(u64_at(b, 32, what)?),
            incoming,
            committed_at_ms,
            memo,
            tier_change,
        })
    }
}

/// The owner a stored public key names (records keep raw bytes).
pub fn key_of(bytes: [u8; 32]) -> PublicKey {
    PublicKey::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbdc_core::{LedgerId, Lock};

    #[test]
    fn records_round_trip() {
        let w = WalletRecord {
            status: WalletStatus::Frozen,
            tier: KycTier::Class4Anonymous,
            opened_at_ms: 7,
            phone_hash: Some([9; 32]),
        };
        assert_eq!(WalletRecord::decode(&w.encode()), Ok(w));
        let o = OutputState::Unspent(Output {
            ledger: LedgerId(3),
            value: Amount::from_fen(5),
            lock: Lock::Key(PublicKey::from_bytes([1; 32])),
        });
        assert_eq!(OutputState::decode(&o.encode()), Ok(o));
        let t = TransferRecord {
            position: [4; 12],
            committed_at_ms: 9,
            kind: TransferKind::Inbound,
            body: vec![1, 2, 3],
            witnesses: vec![([5; 32], [6; 64])],
        };
        assert_eq!(TransferRecord::decode(&t.encode()), Ok(t));
        let h = HistoryRecord {
            txid: Txid([8; 32]),
            amount: Amount::from_fen(12),
            incoming: true,
            committed_at_ms: 3,
            memo: b"hi".to_vec(),
            tier_change: None,
        };
        assert_eq!(HistoryRecord::decode(&h.encode()), Ok(h));
        let note = TierNote {
            from: KycTier::Class4Anonymous,
            to: KycTier::Class2,
            request_id: "kyc-1".into(),
            reason: "ID check".into(),
        };
        let t = HistoryRecord::tier_change(note, 11);
        assert_eq!(HistoryRecord::decode(&t.encode()), Ok(t.clone()));
        let mut cut = t.encode();
        cut.truncate(53);
        assert!(
            HistoryRecord::decode(&cut).is_err(),
            "a request id cut short"
        );
        assert!(WalletRecord::decode(&[1]).is_err());
        assert!(TransferRecord::decode(&[0; 14]).is_err());
    }
}
