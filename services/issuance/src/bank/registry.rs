//! The registry of operator banks: ledger id, name, operator key, endpoint, status. Changed
//! only with the administrator's signature.

use cbdc_core::messages::{AdminAction, AdminOrder, CENTRAL_BANK, Header, OperatorStatus};
use cbdc_core::{LedgerId, PublicKey};
use cbdc_runtime::ServiceError;
use cbdc_runtime::error::abort;
use cbdc_store::{RangeOptions, TxError};

use super::{CentralBank, OPERATORS_MAX};
use crate::records::Operator;

/// What registering an operator asks for, as the administrator signed it.
#[derive(Clone, Copy, Debug)]
pub struct Registration<'a> {
    pub ledger: LedgerId,
    pub name: &'a str,
    /// The operator's public key, as sent (checked after the signature).
    pub operator_key: &'a [u8],
    pub endpoint: &'a str,
}

impl CentralBank {
    /// Registers a bank operator (ACTIVE). Registering a registered ledger again with the
    /// same key updates its name and endpoint and keeps its status (only
    /// [`CentralBank::set_status`] changes that); another key for it is refused. Once per
    /// request id.
    pub async fn register(
        &self,
        header: Header<'_>,
        r: Registration<'_>,
        signature: &[u8],
    ) -> Result<Operator, ServiceError> {
        let seen = self.check_admin(
            &AdminOrder {
                header,
                action: AdminAction::Register {
                    ledger: r.ledger,
                    name: r.name,
                    operator_key: r.operator_key,
                    endpoint: r.endpoint,
                },
            },
            signature,
        )?;
        if r.ledger == CENTRAL_BANK {
            return Err(ServiceError::InvalidArgument(
                "operator.ledger_id: 0 is the central bank's own id".into(),
            ));
        }
        if r.name.is_empty() || r.name.len() > 128 {
            return Err(ServiceError::InvalidArgument(
                "operator.name: required, at most 128 bytes".into(),
            ));
        }
        let key: [u8; 32] = r.operator_key.try_into().map_err(|_| {
            ServiceError::InvalidArgument(format!(
                "operator.operator_public_key: {} bytes, expected 32",
                r.operator_key.len()
            ))
        })?;
        let key = PublicKey::checked(&key).map_err(|e| {
            ServiceError::InvalidArgument(format!("operator.operator_public_key: {e}"))
        })?;
        if !(r.endpoint.starts_with("http://") || r.endpoint.starts_with("https://"))
            || r.endpoint.len() > 256
        {
            return Err(ServiceError::InvalidArgument(format!(
                "operator.endpoint: {:?}; expected an http:// or https:// URL of at most 256 bytes",
                r.endpoint
            )));
        }
        let record = Operator {
            ledger: r.ledger,
            name: r.name.to_string(),
            key,
            endpoint: r.endpoint.to_string(),
            status: OperatorStatus::Active,
        };
        let out = self.transact(move |me, tx| {
                let mut record = record.clone();
                let seen = seen.clone();
                Box::pin(async move {
                    let k = me.keys().op(record.ledger);
                    let existing = match tx.get(&k).await? {
                        Some(b) => Some(Operator::decode(&b).map_err(abort)?),
                        None => None,
                    };
                    if seen.first_result(tx).await?.is_some() {
                        return existing.ok_or_else(|| abort(ServiceError::corrupt("operator")));
                    }
                    if let Some(existing) = existing {
                        if existing.key != record.key {
                            return Err(abort(ServiceError::FailedPrecondition(format!(
                                "operator.ledger_id: ledger {} is already registered with another operator key",
                                record.ledger.0
                            ))));
                        }
                        record.status = existing.status;
                    }
                    tx.set(&k, record.encode())?;
                    seen.record(tx, &[])?;
                    Ok::<_, TxError<ServiceError>>(record)
                })
            })
            .await?;
        Ok(out)
    }

    /// Sets the operator of `ledger` active or suspended, once per request id: sent again,
    /// the order changes nothing and answers with the operator as it is.
    pub async fn set_status(
        &self,
        header: Header<'_>,
        ledger: LedgerId,
        status: OperatorStatus,
        signature: &[u8],
    ) -> Result<Operator, ServiceError> {
        let seen = self.check_admin(
            &AdminOrder {
                header,
                action: AdminAction::SetStatus { ledger, status },
            },
            signature,
        )?;
        let out = self
            .transact(move |me, tx| {
                let seen = seen.clone();
                Box::pin(async move {
                    let k = me.keys().op(ledger);
                    let Some(bytes) = tx.get(&k).await? else {
                        return Err(abort(ServiceError::NotFound(format!(
                            "ledger_id: ledger {} is not registered",
                            ledger.0
                        ))));
                    };
                    let mut op = Operator::decode(&bytes).map_err(abort)?;
                    if seen.first_result(tx).await?.is_some() {
                        return Ok(op);
                    }
                    op.status = status;
                    tx.set(&k, op.encode())?;
                    seen.record(tx, &[])?;
                    Ok::<_, TxError<ServiceError>>(op)
                })
            })
            .await?;
        Ok(out)
    }

    pub async fn operator(&self, ledger: LedgerId) -> Result<Option<Operator>, ServiceError> {
        let mut tx = self.inner.db.create_transaction()?;
        match tx.get_snapshot(&self.keys().op(ledger)).await? {
            None => Ok(None),
            Some(v) => Operator::decode(&v).map(Some),
        }
    }

    /// Every registered operator, by ledger id.
    pub async fn operators(&self) -> Result<Vec<Operator>, ServiceError> {
        let (b, e) = self.keys().ops();
        let mut tx = self.inner.db.create_transaction()?;
        let rows = tx
            .get_range(&b, &e, RangeOptions::snapshot(OPERATORS_MAX))
            .await?;
        rows.iter().map(|(_, v)| Operator::decode(v)).collect()
    }

    /// The registered operator of `ledger`, which must be active; `field` names the id in
    /// errors.
    pub(super) async fn active_operator(
        &self,
        ledger: LedgerId,
        field: &str,
    ) -> Result<Operator, ServiceError> {
        let op = self.operator(ledger).await?.ok_or_else(|| {
            ServiceError::PermissionDenied(format!(
                "{field}: ledger {} is not a registered bank",
                ledger.0
            ))
        })?;
        if op.status != OperatorStatus::Active {
            return Err(ServiceError::PermissionDenied(format!(
                "{field}: bank ledger {} is suspended",
                ledger.0
            )));
        }
        Ok(op)
    }
}
