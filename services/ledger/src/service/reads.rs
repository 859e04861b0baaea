//! Reads a wallet makes beside its transfers: its coins, consistency proofs between
//! checkpoints; list pages, and the result of a transfer the ledger built, with its outputs.

use cbdc_proto::{convert, v1};
use tonic::{Request, Response, Status};

use super::wire::{coin_cursor, coin_msg, committed_msg};
use super::{LedgerGrpc, PAGE_SIZE_DEFAULT};

impl LedgerGrpc {
    /// A list request's page and its size (the default when it leaves it 0).
    pub(super) fn page(
        &self,
        page: Option<v1::PageRequest>,
    ) -> Result<(usize, v1::PageRequest), Status> {
        let page = page.unwrap_or_default();
        let size = convert::page_size(
            &page,
            PAGE_SIZE_DEFAULT,
            self.ledger.settings().page_size_max,
        )?;
        Ok((size, page))
    }

    /// The result of a transfer the ledger built itself (an exchange, a redemption), with
    /// the outputs read back from its record.
    pub(super) async fn committed_with_outputs(
        &self,
        committed: &crate::ledger::Committed,
    ) -> Result<v1::TransferResult, Status> {
        let info = self
            .ledger
            .transfer(&committed.txid)
            .await?
            .ok_or_else(|| cbdc_runtime::error::internal("a committed transfer has no record"))?;
        let body = cbdc_core::TransferBody::decode(&info.record.body)
            .map_err(|_| cbdc_runtime::error::internal("corrupt transfer record"))?;
        Ok(committed_msg(committed, &body.outputs))
    }

    pub(super) async fn coins(
        &self,
        request: Request<v1::ListCoinsRequest>,
    ) -> Result<Response<v1::ListCoinsResponse>, Status> {
        let r = request.into_inner();
        let key = self.reader("address", &r.address, r.auth.as_ref())?.key;
        let (size, page) = self.page(r.page)?;
        let after = coin_cursor("page.cursor", &page.cursor)?;
        self.ledger.wallet(&key).await?;
        let coins = self.ledger.list_coins(&key, after, size + 1).await?;
        let (coins, page) = convert::paginate(coins, size, |(o, _)| {
            format!("{}{:04x}", hex::encode(o.txid.0), o.index)
        });
        Ok(Response::new(v1::ListCoinsResponse {
            coins: coins.iter().map(|(o, out)| coin_msg(*o, out)).collect(),
            page: Some(page),
        }))
    }

    pub(super) async fn consistency_proof(
        &self,
        request: Request<v1::GetConsistencyProofRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        let r = request.into_inner();
        let signed = if r.new_size == 0 {
            self.ledger.checkpoint().await?
        } else {
            self.ledger.checkpoint_at(r.new_size).await?
        };
        let signed = signed.ok_or_else(|| match r.new_size {
            0 => cbdc_runtime::error::precondition(
                "the audit log has not signed a checkpoint yet; try again shortly",
            ),
            n => cbdc_runtime::error::not_found(format!(
                "new_size: no checkpoint was signed at size {n}"
            )),
        })?;
        let new = signed.checkpoint.size;
        if r.old_size > new {
            return Err(cbdc_runtime::error::invalid(format!(
                "old_size: {} is past the checkpoint's size {new}",
                r.old_size
            )));
        }
        let proof = self.ledger.consistency(r.old_size, new).await?;
        Ok(Response::new(v1::ConsistencyProof {
            old_size: r.old_size,
            proof: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint: Some(convert::to_checkpoint(
                &signed.checkpoint,
                &signed.signature,
            )),
        }))
    }
}
