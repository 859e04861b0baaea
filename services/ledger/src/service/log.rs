//! `StreamLog`: the whole audit log, in leaf order with its checkpoints, for auditors.

use cbdc_proto::{convert, v1};
use tonic::{Request, Response, Status};

use super::{LedgerGrpc, LogStream};
use crate::replay::{LOG_PAGE_ENTRIES, LogItem};

impl LedgerGrpc {
    pub(super) async fn log_stream(
        &self,
        request: Request<v1::StreamLogRequest>,
    ) -> Result<Response<LogStream>, Status> {
        // The whole log is every customer's payments: for the central bank and the
        // network's administrator (an auditor), not for wallets.
        let tls = self.tls.as_ref();
        cbdc_runtime::tls::require_peer(tls, &request, cbdc_runtime::tls::CENTRAL_BANK_NAME)
            .or_else(|_| {
                cbdc_runtime::tls::require_peer(tls, &request, cbdc_runtime::tls::ADMIN_NAME)
            })
            .map_err(|_| {
                cbdc_runtime::error::denied(
                    "StreamLog is for the central bank's or the administrator's certificate",
                )
            })?;
        let ledger = self.ledger.clone();
        let mut cursor = ledger.log_cursor().await?;
        // A few pages ahead of a slow reader, no more.
        let (send, receive) = tokio::sync::mpsc::channel(4 * LOG_PAGE_ENTRIES);
        tokio::spawn(async move {
            while !cursor.done() {
                let page = match ledger.log_page(&mut cursor).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = send.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                for item in page {
                    let item = match item {
                        LogItem::Transfer {
                            leaf,
                            position,
                            kind,
                            transfer,
                        } => v1::log_item::Item::Transfer(v1::LoggedTransfer {
                            leaf,
                            position: position.to_vec(),
                            inbound: kind == crate::records::TransferKind::Inbound,
                            reversal: kind == crate::records::TransferKind::Reversal,
                            transfer: Some(convert::to_signed_transfer(&transfer)),
                        }),
                        LogItem::Checkpoint(c) => v1::log_item::Item::Checkpoint(
                            convert::to_checkpoint(&c.checkpoint, &c.signature),
                        ),
                    };
                    if send
                        .send(Ok(v1::LogItem { item: Some(item) }))
                        .await
                        .is_err()
                    {
                        return; // the reader went away
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receive),
        )))
    }
}
