//! The facts of each rejection, as a client reads them in an error's metadata.

use super::{LimitKind, Reject};

impl Reject {
    /// The facts of the rejection a client acts on, as name and value pairs (the gRPC error's
    /// `ErrorInfo.metadata` and a batch row's `metadata`): which input, witness or output,
    /// the transfer that spent an input, the limit and cap, the times. Names are stable;
    /// `rule` tells apart the rejections that share a code.
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        use Reject::*;
        let n = |v: usize| v.to_string();
        match self {
            Malformed(e) => vec![("rule", "malformed".into()), ("error", e.to_string())],
            BodyTooLarge { len, max } => vec![
                ("rule", "body_too_large".into()),
                ("len", n(*len)),
                ("max", n(*max)),
            ],
            NoInputs => vec![("rule", "no_inputs".into())],
            NoOutputs => vec![("rule", "no_outputs".into())],
            TooManyInputs { count, max } => vec![
                ("rule", "too_many_inputs".into()),
                ("count", n(*count)),
                ("max", n(*max)),
            ],
            TooManyOutputs { count, max } => vec![
                ("rule", "too_many_outputs".into()),
                ("count", n(*count)),
                ("max", n(*max)),
            ],
            MemoTooLong { len, max } => vec![
                ("rule", "memo_too_long".into()),
                ("len", n(*len)),
                ("max", n(*max)),
            ],
            NoWitnesses => vec![("rule", "no_witnesses".into())],
            TooManyWitnesses { count, max } => vec![
                ("rule", "too_many_witnesses".into()),
                ("count", n(*count)),
                ("max", n(*max)),
            ],
            WitnessKeyLength { index, len } => vec![
                ("rule", "witness_key_length".into()),
                ("witness", n(*index)),
                ("len", n(*len)),
            ],
            WitnessSignatureLength { index, len } => vec![
                ("rule", "witness_signature_length".into()),
                ("witness", n(*index)),
                ("len", n(*len)),
            ],
            WitnessKey { index, error } => vec![
                ("rule", "witness_key".into()),
                ("witness", n(*index)),
                ("error", error.to_string()),
            ],
            DuplicateInput { outpoint } => vec![
                ("rule", "duplicate_input".into()),
                ("input", outpoint.to_string()),
            ],
            DuplicateWitness { key } => vec![
                ("rule", "duplicate_witness".into()),
                ("key", key.to_string()),
            ],
            ZeroInput { index } => vec![("rule", "zero_input".into()), ("input_index", n(*index))],
            ZeroOutput { index } => vec![("rule", "zero_output".into()), ("output", n(*index))],
            ValueOverflow => vec![("rule", "value_overflow".into())],
            NotConserved { inputs, outputs } => vec![
                ("inputs", inputs.to_string()),
                ("outputs", outputs.to_string()),
            ],
            Expired { valid_until, now } => vec![
                ("valid_until", valid_until.0.to_string()),
                ("now", now.0.to_string()),
            ],
            BadSignature { index } => vec![("witness", n(*index))],
            InputMissing { outpoint } => vec![("input", outpoint.to_string())],
            InputSpent { outpoint, spent_by } => vec![
                ("input", outpoint.to_string()),
                ("spent_by", spent_by.to_string()),
            ],
            InputValueMismatch {
                outpoint,
                stated,
                actual,
            } => vec![
                ("input", outpoint.to_string()),
                ("stated", stated.to_string()),
                ("actual", actual.to_string()),
            ],
            NotAuthorised { input, needed } => vec![
                ("rule", "not_signed".into()),
                ("input_index", n(*input)),
                ("needed", (*needed).into()),
            ],
            HoldExpired { input, expires_at } => vec![
                ("rule", "hold_expired".into()),
                ("input_index", n(*input)),
                ("expires_at", expires_at.0.to_string()),
            ],
            HoldActive { input, expires_at } => vec![
                ("rule", "hold_active".into()),
                ("input_index", n(*input)),
                ("expires_at", expires_at.0.to_string()),
            ],
            MandateExpired { input, expires_at } => vec![
                ("rule", "mandate_expired".into()),
                ("input_index", n(*input)),
                ("expires_at", expires_at.0.to_string()),
            ],
            MandateExceeded {
                owner,
                taken,
                per_payment_max,
            } => vec![
                ("rule", "mandate_exceeded".into()),
                ("owner", owner.to_string()),
                ("amount", taken.to_string()),
                ("cap", per_payment_max.to_string()),
            ],
            UnusedWitness { index, key } => vec![
                ("rule", "unused_witness".into()),
                ("witness", n(*index)),
                ("key", key.to_string()),
            ],
            UnknownWallet { ledger, key } => {
                vec![("ledger", ledger.0.to_string()), ("key", key.to_string())]
            }
            DestinationUnavailable { index, ledger, why } => vec![
                ("output", n(*index)),
                ("ledger", ledger.0.to_string()),
                ("why", (*why).into()),
            ],
            WalletFrozen { key } | WalletClosed { key } => vec![("key", key.to_string())],
            LimitExceeded {
                key,
                limit,
                cap,
                amount,
                would_be,
            } => vec![
                ("key", key.to_string()),
                (
                    "limit",
                    match limit {
                        LimitKind::BalanceCap => "balance_cap",
                        LimitKind::PerPaymentCap => "per_payment_cap",
                        LimitKind::DailyOutgoingCap => "daily_outgoing_cap",
                    }
                    .into(),
                ),
                ("cap", cap.to_string()),
                ("amount", amount.to_string()),
                ("would_be", would_be.to_string()),
            ],
        }
    }
}
