//! What the central bank stores, in its own encoding: domain types, never wire messages, so
//! a change to the gRPC contract is never a data migration.
//!
//! Every record starts with a version byte ([`RECORD_VERSION`]); integers are fixed-width
//! big-endian, variable fields carry a length prefix, and nothing may follow the last field.
//! A record that does not decode is corruption, reported as an internal error naming the
//! record, never guessed at.

use cbdc_core::audit::Checkpoint;
use cbdc_core::messages::OperatorStatus;
use cbdc_core::{Amount, LedgerId, PublicKey, Transfer, Txid};
use cbdc_runtime::ServiceError;

/// The version byte every record starts with.
pub const RECORD_VERSION: u8 = 1;

/// A registered bank operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub ledger: LedgerId,
    pub name: String,
    pub key: PublicKey,
    /// The ledger's gRPC endpoint (`http://…` or `https://…`).
    pub endpoint: String,
    pub status: OperatorStatus,
}

/// A transfer exactly as it was signed: its body bytes and witnesses, kept without decoding
/// them again (the central bank hands them on; the destination ledger checks them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedParts {
    pub body: Vec<u8>,
    pub witnesses: Vec<([u8; 32], [u8; 64])>,
}

impl SignedParts {
    pub fn of(t: &Transfer) -> SignedParts {
        SignedParts {
            body: t.body_bytes().to_vec(),
            witnesses: t
                .witnesses()
                .iter()
                .map(|w| (*w.key.as_bytes(), w.signature))
                .collect(),
        }
    }

    pub fn txid(&self) -> Txid {
        Txid::of_body(&self.body)
    }
}

/// A move of value the central bank countersigned: `amount` of `transfer` leaves ledger
/// `from` for ledger `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub from: LedgerId,
    pub to: LedgerId,
    pub amount: Amount,
    /// Over [`cbdc_core::messages::Countersignature`] `{ txid, to }`.
    pub countersignature: [u8; 64],
}

/// What settling one transfer did: one countersigned settlement per destination ledger and
/// the value redeemed (outputs to ledger 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub settlements: Vec<Settlement>,
    pub redeemed: Amount,
}

/// A ledger's accepted checkpoint and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedCheckpoint {
    pub checkpoint: Checkpoint,
    pub signature: [u8; 64],
}

fn corrupt(what: &str) -> ServiceError {
    ServiceError::corrupt(what)
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![RECORD_VERSION])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A length-prefixed field (u32 length).
    fn var(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.bytes(v);
    }
    fn signed(&mut self, t: &SignedParts) {
        self.var(&t.body);
        self.u32(t.witnesses.len() as u32);
        for (k, s) in &t.witnesses {
            self.bytes(k);
            self.bytes(s);
        }
    }
    fn settlement(&mut self, s: &Settlement) {
        self.u32(s.from.0);
        self.u32(s.to.0);
        self.u64(s.amount.fen());
        self.bytes(&s.countersignature);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Reader<'a>, ServiceError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, rest)) => Ok(Reader { bytes: rest, what }),
            _ => Err(corrupt(what)),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ServiceError> {
        if self.bytes.len() < n {
            return Err(corrupt(self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ServiceError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, ServiceError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, ServiceError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ServiceError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn var(&mut self) -> Result<&'a [u8], ServiceError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn text(&mut self) -> Result<String, ServiceError> {
        String::from_utf8(self.var()?.to_vec()).map_err(|_| corrupt(self.what))
    }
    fn signed(&mut self) -> Result<SignedParts, ServiceError> {
        let body = self.var()?.to_vec();
        let n = self.u32()? as usize;
        // Each witness takes 96 bytes: a count beyond what is left is corruption, not an
        // allocation.
        if n > self.bytes.len() / 96 {
            return Err(corrupt(self.what));
        }
        let mut witnesses = Vec::with_capacity(n);
        for _ in 0..n {
            witnesses.push((self.array()?, self.array()?));
        }
        Ok(SignedParts { body, witnesses })
    }
    fn settlement(&mut self) -> Result<Settlement, ServiceError> {
        Ok(Settlement {
            from: LedgerId(self.u32()?),
            to: LedgerId(self.u32()?),
            amount: Amount::from_fen(self.u64()?),
            countersignature: self.array()?,
        })
    }
    fn finish(self) -> Result<(), ServiceError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.what))
        }
    }
}

fn status_byte(s: OperatorStatus) -> u8 {
    match s {
        OperatorStatus::Active => 1,
        OperatorStatus::Suspended => 2,
    }
}

impl Operator {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.ledger.0);
        w.var(self.name.as_bytes());
        w.bytes(self.key.as_bytes());
        w.var(self.endpoint.as_bytes());
        w.u8(status_byte(self.status));
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<Operator, ServiceError> {
        let mut r = Reader::new(b, "operator")?;
        let op = Operator {
            ledger: LedgerId(r.u32()?),
            name: r.text()?,
            key: PublicKey::from_bytes(r.array()?),
            endpoint: r.text()?,
            status: match r.u8()? {
                1 => OperatorStatus::Active,
                2 => OperatorStatus::Suspended,
                _ => return Err(corrupt("operator")),
            },
        };
        r.finish()?;
        Ok(op)
    }
}

impl SignedParts {
    /// The record of an issue (the transfer the central bank signed for a mint request).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.signed(self);
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<SignedParts, ServiceError> {
        let mut r = Reader::new(b, "mint")?;
        let t = r.signed()?;
        r.finish()?;
        Ok(t)
    }
}

/// A settlement waiting for delivery, with the transfer it moves.
pub fn encode_queued(settlement: &Settlement, transfer: &SignedParts) -> Vec<u8> {
    let mut w = Writer::new();
    w.settlement(settlement);
    w.signed(transfer);
    w.0
}

/// A queued reversal: the settlement back to the payer's ledger, the transfer, and why its
/// move was refused.
pub fn encode_queued_reversal(
    settlement: &Settlement,
    transfer: &SignedParts,
    reason: &str,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.settlement(settlement);
    w.signed(transfer);
    w.var(reason.as_bytes());
    w.0
}

/// A queued delivery, or reversal (with its reason).
pub fn decode_queued(b: &[u8]) -> Result<(Settlement, SignedParts, Option<String>), ServiceError> {
    let mut r = Reader::new(b, "queued settlement")?;
    let s = r.settlement()?;
    let t = r.signed()?;
    let reason = if r.bytes.is_empty() {
        None
    } else {
        Some(r.text()?)
    };
    r.finish()?;
    Ok((s, t, reason))
}

impl Settled {
    /// The record of a settled transfer, without the transfer (its txid is the key, and a
    /// replay carries it again).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.redeemed.fen());
        w.u32(self.settlements.len() as u32);
        for s in &self.settlements {
            w.settlement(s);
        }
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<Settled, ServiceError> {
        let mut r = Reader::new(b, "settlement")?;
        let redeemed = Amount::from_fen(r.u64()?);
        let n = r.u32()? as usize;
        // Read one by one (nothing is reserved up front): a count beyond the record ends in
        // a short read.
        let settlements = (0..n)
            .map(|_| r.settlement())
            .collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        Ok(Settled {
            settlements,
            redeemed,
        })
    }
}

impl AcceptedCheckpoint {
    /// The signed message, then the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.checkpoint.message());
        w.bytes(&self.signature);
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<AcceptedCheckpoint, ServiceError> {
        let mut r = Reader::new(b, "checkpoint")?;
        let message: [u8; cbdc_core::audit::CHECKPOINT_MESSAGE_BYTES] = r.array()?;
        let checkpoint = Checkpoint::from_message(&message).ok_or_else(|| corrupt("checkpoint"))?;
        let signature = r.array()?;
        r.finish()?;
        Ok(AcceptedCheckpoint {
            checkpoint,
            signature,
        })
    }
}

/// A counter written by atomic add, as an amount; a negative counter is corruption.
pub fn counter_amount(value: Option<&[u8]>, what: &str) -> Result<Amount, ServiceError> {
    u64::try_from(cbdc_store::counter(value))
        .map(Amount::from_fen)
        .map_err(|_| corrupt(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> SignedParts {
        SignedParts {
            body: vec![1, 2, 3, 4, 5],
            witnesses: vec![([7; 32], [8; 64]), ([9; 32], [10; 64])],
        }
    }

    fn settlement(to: u32) -> Settlement {
        Settlement {
            from: LedgerId(1),
            to: LedgerId(to),
            amount: Amount::from_fen(1234),
            countersignature: [to as u8; 64],
        }
    }

    /// Every record decodes to what was encoded, and every strict prefix, a longer copy, a
    /// changed version byte, or a bad enum byte is refused as corruption.
    #[test]
    fn records_round_trip_and_anything_else_is_corrupt() {
        let op = Operator {
            ledger: LedgerId(3),
            name: "Bank Three".into(),
            key: PublicKey::from_bytes([4; 32]),
            endpoint: "http://127.0.0.1:1".into(),
            status: OperatorStatus::Suspended,
        };
        let settled = Settled {
            settlements: vec![settlement(2), settlement(3)],
            redeemed: Amount::from_fen(99),
        };
        let cp = AcceptedCheckpoint {
            checkpoint: Checkpoint {
                ledger: LedgerId(2),
                size: 17,
                root: [5; 32],
                outstanding: Amount::from_fen(10),
                inbound: Amount::from_fen(30),
                settled_out: Amount::from_fen(20),
                timestamp_ms: 1_700_000_000_000,
                unspent: Amount::from_fen(7),
                outbox: Amount::from_fen(3),
                unspent_set: [8; 32],
            },
            signature: [6; 64],
        };
        assert_eq!(Operator::decode(&op.encode()).unwrap(), op);
        assert_eq!(SignedParts::decode(&parts().encode()).unwrap(), parts());
        assert_eq!(Settled::decode(&settled.encode()).unwrap(), settled);
        assert_eq!(AcceptedCheckpoint::decode(&cp.encode()).unwrap(), cp);
        let queued = encode_queued(&settlement(2), &parts());
        assert_eq!(
            decode_queued(&queued).unwrap(),
            (settlement(2), parts(), None)
        );
        let reversal = encode_queued_reversal(&settlement(3), &parts(), "closed");
        assert_eq!(
            decode_queued(&reversal).unwrap(),
            (settlement(3), parts(), Some("closed".to_string()))
        );

        type Decode = fn(&[u8]) -> bool;
        let cases: [(Vec<u8>, Decode); 5] = [
            (op.encode(), |b| Operator::decode(b).is_ok()),
            (parts().encode(), |b| SignedParts::decode(b).is_ok()),
            (settled.encode(), |b| Settled::decode(b).is_ok()),
            (cp.encode(), |b| AcceptedCheckpoint::decode(b).is_ok()),
            (queued, |b| decode_queued(b).is_ok()),
        ];
        for (bytes, decodes) in cases {
            assert!(decodes(&bytes));
            for n in 0..bytes.len() {
                assert!(!decodes(&bytes[..n]), "a {n}-byte prefix decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(!decodes(&longer), "a trailing byte was accepted");
            let mut other_version = bytes.clone();
            other_version[0] = RECORD_VERSION + 1;
            assert!(!decodes(&other_version), "another version was accepted");
        }
        let mut bad_status = op.encode();
        *bad_status.last_mut().unwrap() = 3;
        assert!(Operator::decode(&bad_status).is_err());
    }

    #[test]
    fn both_statuses_decode_and_a_transfer_is_named_by_its_body() {
        for status in [OperatorStatus::Active, OperatorStatus::Suspended] {
            let op = Operator {
                ledger: LedgerId(1),
                name: "B".into(),
                key: PublicKey::from_bytes([1; 32]),
                endpoint: "https://b".into(),
                status,
            };
            assert_eq!(Operator::decode(&op.encode()).unwrap(), op);
        }
        assert_eq!(parts().txid(), Txid::of_body(&parts().body));
        assert_ne!(parts().txid(), Txid([0; 32]));
    }

    /// A count that claims more items than the record holds is corruption, found before
    /// anything is allocated for them.
    #[test]
    fn counts_beyond_the_record_are_refused_without_allocating() {
        let mut w = Writer::new();
        w.var(b"body");
        w.u32(u32::MAX);
        assert!(SignedParts::decode(&w.0).is_err());
        let mut w = Writer::new();
        w.u64(0);
        w.u32(u32::MAX);
        assert!(Settled::decode(&w.0).is_err());
        // Exactly as many as the bytes hold still decode.
        let settled = Settled {
            settlements: vec![settlement(2)],
            redeemed: Amount::ZERO,
        };
        assert_eq!(Settled::decode(&settled.encode()).unwrap(), settled);
    }

    #[test]
    fn a_negative_counter_is_corruption() {
        assert_eq!(
            counter_amount(Some(&5i64.to_le_bytes()), "books").unwrap(),
            Amount::from_fen(5)
        );
        assert_eq!(counter_amount(None, "books").unwrap(), Amount::ZERO);
        assert_eq!(
            counter_amount(Some(&(-1i64).to_le_bytes()), "books"),
            Err(ServiceError::corrupt("books"))
        );
    }
}
