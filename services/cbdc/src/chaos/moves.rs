//! Every move of value between ledgers, payment by payment, as the ledgers' own logs tell
//! it: what each ledger committed as sent to another, what each credited as delivered to it,
//! and what each reversed back to a payer. The checker asks of every move that it was
//! credited exactly once or reversed exactly once (and with its value), and of every credit
//! and reversal that a move or an issue of the central bank stands behind it.

use std::collections::BTreeMap;

use cbdc_core::messages::CENTRAL_BANK;
use cbdc_core::{Transfer, Txid};
use cbdc_ledger::records::TransferKind;
use serde::Serialize;

/// What the logs hold, gathered by [`Moves::observe`].
#[derive(Debug, Default)]
pub struct Moves {
    /// Committed at the payer's ledger: (txid, from, to) → value moved to `to`.
    sent: BTreeMap<(Txid, u32, u32), u64>,
    /// Logged at a payee's ledger: (txid, ledger) → the value of each credit logged.
    credited: BTreeMap<(Txid, u32), Vec<u64>>,
    /// Logged at a payer's ledger: (reversed txid, ledger) → the value of each reversal.
    reversed: BTreeMap<(Txid, u32), Vec<u64>>,
}

/// What the check found, in figures.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct MovesFigures {
    /// Moves from one bank ledger to another.
    pub between_banks: usize,
    pub credited_once: usize,
    pub reversed_once: usize,
    /// Moves to the central bank (redemptions), and how many of them were reversed.
    pub to_central_bank: usize,
    pub to_central_bank_reversed: usize,
    /// Σ of the credits no bank sent: the central bank's issues, in fen.
    pub issued_credited_fen: u64,
}

impl Moves {
    /// Merges what another replay gathered (of another ledger).
    pub fn merge(&mut self, other: Moves) {
        self.sent.extend(other.sent);
        for (k, v) in other.credited {
            self.credited.entry(k).or_default().extend(v);
        }
        for (k, v) in other.reversed {
            self.reversed.entry(k).or_default().extend(v);
        }
    }

    /// Takes in one transfer of `ledger`'s log.
    pub fn observe(&mut self, ledger: u32, kind: TransferKind, t: &Transfer) {
        let txid = t.txid();
        match kind {
            TransferKind::Local => {
                for o in &t.body().outputs {
                    if o.ledger.0 != ledger {
                        *self.sent.entry((txid, ledger, o.ledger.0)).or_default() += o.value.fen();
                    }
                }
            }
            TransferKind::Inbound => {
                let value = t
                    .body()
                    .outputs
                    .iter()
                    .filter(|o| o.ledger.0 == ledger)
                    .map(|o| o.value.fen())
                    .sum();
                self.credited.entry((txid, ledger)).or_default().push(value);
            }
            TransferKind::Reversal => {
                // A reversal spends output 0 of the transfer it reverses and pays its value
                // back (`Ledger::apply_reversal`).
                let Some(input) = t.body().inputs.first() else {
                    return;
                };
                self.reversed
                    .entry((input.outpoint.txid, ledger))
                    .or_default()
                    .push(input.value.fen());
            }
        }
    }

    /// Checks every move, credit and reversal; `acknowledged` are the cross-ledger payments
    /// (txid, from, to) the clients were told committed. Returns the figures and what is
    /// wrong.
    pub fn check(&self, acknowledged: &[(Txid, u32, u32)]) -> (MovesFigures, Vec<String>) {
        let mut f = MovesFigures::default();
        let mut wrong = Vec::new();
        let none = Vec::new();
        // What moved from `from` for one txid, over all payees: a reversal returns the
        // value whose delivery failed.
        for (&(txid, from, to), &value) in &self.sent {
            let reversed = self.reversed.get(&(txid, from)).unwrap_or(&none);
            if to == CENTRAL_BANK.0 {
                f.to_central_bank += 1;
                match reversed.as_slice() {
                    [] => {}
                    [v] if *v == value => f.to_central_bank_reversed += 1,
                    other => wrong.push(format!(
                        "redemption {txid} of {value} fen from ledger {from}: reversals {other:?}"
                    )),
                }
                continue;
            }
            f.between_banks += 1;
            let credited = self.credited.get(&(txid, to)).unwrap_or(&none);
            match (credited.as_slice(), reversed.as_slice()) {
                ([c], []) if *c == value => f.credited_once += 1,
                ([], [r]) if *r == value => f.reversed_once += 1,
                (c, r) => wrong.push(format!(
                    "payment {txid} of {value} fen from ledger {from} to ledger {to}: \
                     credited {c:?}, reversed {r:?}"
                )),
            }
        }
        for (&(txid, ledger), values) in &self.credited {
            let sent_by: Vec<u32> = self
                .sent
                .range((txid, 0, 0)..=(txid, u32::MAX, u32::MAX))
                .filter(|((_, _, to), _)| *to == ledger)
                .map(|((_, from, _), _)| *from)
                .collect();
            if sent_by.is_empty() {
                // No bank sent it: an issue of the central bank, which no ledger's log holds.
                if values.len() != 1 {
                    wrong.push(format!(
                        "issue {txid} credited {} times at ledger {ledger}",
                        values.len()
                    ));
                }
                f.issued_credited_fen += values.iter().sum::<u64>();
            }
        }
        for &(txid, ledger) in self.reversed.keys() {
            let sent = self
                .sent
                .range((txid, ledger, 0)..=(txid, ledger, u32::MAX))
                .next()
                .is_some();
            if !sent {
                wrong.push(format!(
                    "ledger {ledger} reversed {txid}, which it never sent to another ledger"
                ));
            }
        }
        for &(txid, from, to) in acknowledged {
            if !self.sent.contains_key(&(txid, from, to)) {
                wrong.push(format!(
                    "acknowledged payment {txid} from ledger {from} to ledger {to} is not in \
                     ledger {from}'s log as sent"
                ));
            }
        }
        wrong.truncate(20);
        (f, wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbdc_core::{Amount, Keypair, LedgerId, Lock, OutPoint, TransferBuilder};

    fn key() -> Keypair {
        Keypair::from_seed(&[7; 32])
    }

    /// A payment from ledger 1 of `value` fen to ledger `to`, with change at ledger 1.
    fn payment(n: u8, value: u64, to: u32) -> Transfer {
        TransferBuilder::new(cbdc_core::UnixSeconds(u64::MAX))
            .input(
                OutPoint {
                    txid: Txid([n; 32]),
                    index: 0,
                },
                Amount::from_fen(value + 5),
            )
            .output(
                LedgerId(to),
                Amount::from_fen(value),
                Lock::Key(key().public()),
            )
            .output(LedgerId(1), Amount::from_fen(5), Lock::Key(key().public()))
            .sign(&[&key()])
            .expect("signed")
    }

    /// A reversal at ledger 1 of `of`, as `apply_reversal` builds it.
    fn reversal(of: &Transfer, value: u64) -> Transfer {
        TransferBuilder::new(cbdc_core::UnixSeconds(0))
            .input(
                OutPoint {
                    txid: of.txid(),
                    index: 0,
                },
                Amount::from_fen(value),
            )
            .output(
                LedgerId(1),
                Amount::from_fen(value),
                Lock::Key(key().public()),
            )
            .sign(&[&key()])
            .expect("signed")
    }

    /// An issue of the central bank to ledger `to`.
    fn issue(n: u8, value: u64, to: u32) -> Transfer {
        TransferBuilder::new(cbdc_core::UnixSeconds(u64::MAX))
            .input(
                OutPoint {
                    txid: Txid([n; 32]),
                    index: 0,
                },
                Amount::from_fen(value),
            )
            .output(
                LedgerId(to),
                Amount::from_fen(value),
                Lock::Key(key().public()),
            )
            .sign(&[&key()])
            .expect("signed")
    }

    /// A healthy history: one payment credited, one reversed, one redemption, one issue.
    fn healthy() -> (Moves, Vec<(Txid, u32, u32)>, [Transfer; 4]) {
        let (a, b, r, i) = (
            payment(1, 100, 2),
            payment(2, 200, 2),
            payment(3, 50, 0),
            issue(4, 1000, 1),
        );
        let mut m = Moves::default();
        m.observe(1, TransferKind::Local, &a);
        m.observe(1, TransferKind::Local, &b);
        m.observe(1, TransferKind::Local, &r);
        m.observe(2, TransferKind::Inbound, &a);
        m.observe(1, TransferKind::Reversal, &reversal(&b, 200));
        m.observe(1, TransferKind::Inbound, &i);
        let acked = vec![(a.txid(), 1, 2), (b.txid(), 1, 2)];
        (m, acked, [a, b, r, i])
    }

    #[test]
    fn a_healthy_history_passes_with_its_figures() {
        let (m, acked, _) = healthy();
        let (f, wrong) = m.check(&acked);
        assert_eq!(wrong, Vec::<String>::new());
        assert_eq!(
            f,
            MovesFigures {
                between_banks: 2,
                credited_once: 1,
                reversed_once: 1,
                to_central_bank: 1,
                to_central_bank_reversed: 0,
                issued_credited_fen: 1000,
            }
        );
    }

    /// Each planted fault is one the checker must name.
    #[test]
    fn every_planted_fault_is_found() {
        type Plant = fn(&mut Moves, &mut Vec<(Txid, u32, u32)>, &[Transfer; 4]);
        let plants: [(&str, Plant); 8] = [
            ("credited twice", |m, _, t| {
                m.observe(2, TransferKind::Inbound, &t[0])
            }),
            ("credited and reversed", |m, _, t| {
                m.observe(1, TransferKind::Reversal, &reversal(&t[0], 100))
            }),
            ("reversed twice", |m, _, t| {
                m.observe(1, TransferKind::Reversal, &reversal(&t[1], 200))
            }),
            ("neither credited nor reversed", |m, _, t| {
                m.credited.remove(&(t[0].txid(), 2));
            }),
            ("reversed with the wrong value", |m, _, t| {
                m.reversed.insert((t[1].txid(), 1), vec![199]);
            }),
            ("redemption reversed twice", |m, _, t| {
                m.observe(1, TransferKind::Reversal, &reversal(&t[2], 50));
                m.observe(1, TransferKind::Reversal, &reversal(&t[2], 50));
            }),
            ("a reversal of nothing sent", |m, _, t| {
                m.observe(1, TransferKind::Reversal, &reversal(&t[3], 1000))
            }),
            ("an acknowledged payment not logged", |_, acked, _| {
                acked.push((Txid([9; 32]), 1, 2))
            }),
        ];
        for (name, plant) in plants {
            let (mut m, mut acked, t) = healthy();
            plant(&mut m, &mut acked, &t);
            let (_, wrong) = m.check(&acked);
            assert!(!wrong.is_empty(), "{name}: not found");
        }
    }

    #[test]
    fn an_issue_credited_twice_is_found_and_counted() {
        let (mut m, acked, t) = healthy();
        m.observe(1, TransferKind::Inbound, &t[3]);
        let (f, wrong) = m.check(&acked);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert_eq!(f.issued_credited_fen, 2000);
    }
}
