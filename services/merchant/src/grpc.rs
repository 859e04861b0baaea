//! The gateway's gRPC face (`cbdc.v1.MerchantGateway`): each call checked and signed as its
//! HTTP twin is (the signature over the method's path and the request's protobuf encoding,
//! in the `authorization` metadata), then handed to the same [`Gateway`] operation, so both
//! faces keep one set of rules, one store and one set of errors — an [`ApiError`] becomes a
//! status with the same code, its field a `BadRequest` violation.

use cbdc_proto::v1;
use cbdc_proto::v1::merchant_gateway_server::MerchantGateway;
use prost::Message;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use crate::auth::{self, Credentials, Signer};
use crate::error::ApiError;
use crate::gateway::{Gateway, Order, OrderStatus};
use crate::locks::{Hold, HoldStatus, Mandate};
use crate::refunds::Refund;

/// The service's path prefix, which signatures cover.
pub const SERVICE_PATH: &str = "/cbdc.v1.MerchantGateway/";

#[derive(Clone)]
pub struct GrpcGateway {
    gateway: Gateway,
}

impl GrpcGateway {
    pub fn new(gateway: Gateway) -> GrpcGateway {
        GrpcGateway { gateway }
    }

    /// The caller's credentials, their signature over `method` and `message` checked, and
    /// the request's `merchant_id` the signer's own.
    async fn signed<M: Message>(
        &self,
        request: &Request<M>,
        method: &str,
        merchant_id: &str,
    ) -> Result<Credentials, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let credentials = auth::parse(header).map_err(status)?;
        let path = format!("{SERVICE_PATH}{method}");
        self.gateway
            .authenticate(
                &credentials,
                "POST",
                &path,
                &request.get_ref().encode_to_vec(),
            )
            .await
            .map_err(status)?;
        if let Signer::Merchant(m) = &credentials.signer
            && m != merchant_id
        {
            return Err(status(ApiError::denied(
                "merchant_id",
                "a merchant acts on its own account only",
            )));
        }
        Ok(credentials)
    }
}

/// An [`ApiError`] as a gRPC status: the same code and message, the field named.
pub fn status(e: ApiError) -> Status {
    use tonic::Code;
    let code = match e.code {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "FAILED_PRECONDITION" | "LEDGER_REJECTED" => Code::FailedPrecondition,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "UNAVAILABLE" => Code::Unavailable,
        _ => Code::Internal,
    };
    cbdc_runtime::error::status(
        code,
        if e.field.is_empty() {
            e.message.clone()
        } else {
            format!("{}: {}", e.field, e.message)
        },
        cbdc_runtime::error::Detail {
            reason: e.code,
            metadata: Vec::new(),
            field: (!e.field.is_empty()).then(|| (e.field.clone(), e.message.clone())),
            retry_after: (code == Code::Unavailable).then_some(cbdc_runtime::error::RETRY_AFTER),
        },
    )
}

fn body(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn transfer(t: Option<v1::TransferHex>) -> Value {
    let t = t.unwrap_or_default();
    json!({
        "body": t.body,
        "witnesses": t.witnesses.iter().map(|w| json!({"public_key": w.public_key, "signature": w.signature})).collect::<Vec<_>>(),
    })
}

fn order(o: Order) -> v1::Order {
    let status = match o.status {
        OrderStatus::Created => v1::OrderStatus::Created,
        OrderStatus::Paid => v1::OrderStatus::Paid,
        OrderStatus::Closed => v1::OrderStatus::Closed,
        OrderStatus::Refunded => v1::OrderStatus::Refunded,
        OrderStatus::Expired => v1::OrderStatus::Expired,
    };
    v1::Order {
        merchant_id: o.merchant_id,
        out_trade_no: o.out_trade_no,
        amount: o.amount,
        description: o.description,
        status: status as i32,
        payment_uri: o.payment_uri,
        txid: o.txid.unwrap_or_default(),
        expires_at_unix_s: o.expires_at_unix_s,
        refunded: o.refunded,
        memo: o.memo,
        payer_address: o.payer_address.unwrap_or_default(),
        pending_txid: o.pending_txid.unwrap_or_default(),
        created_at_unix_s: o.created_at_unix_s,
        paid_at_unix_ms: o.paid_at_unix_ms.unwrap_or_default(),
    }
}

fn hold(h: Hold) -> v1::Hold {
    let status = match h.status {
        HoldStatus::Authorizing => v1::HoldStatus::Authorizing,
        HoldStatus::Authorized => v1::HoldStatus::Authorized,
        HoldStatus::Captured => v1::HoldStatus::Captured,
        HoldStatus::Released => v1::HoldStatus::Released,
        HoldStatus::Failed => v1::HoldStatus::Failed,
    };
    v1::Hold {
        merchant_id: h.merchant_id,
        hold_id: h.hold_id,
        amount: h.amount,
        captured: h.captured,
        status: status as i32,
        expires_at_unix_s: h.expires_at_unix_s,
        outpoint: h.outpoint,
        payer_address: h.payer_address,
        splits: h
            .splits
            .into_iter()
            .map(|s| v1::Split {
                to_address: s.to_address,
                amount: s.amount,
            })
            .collect(),
        settle_txid: h.settle_txid.unwrap_or_default(),
    }
}

fn mandate(m: Mandate) -> v1::Mandate {
    v1::Mandate {
        merchant_id: m.merchant_id,
        mandate_id: m.mandate_id,
        owner_address: m.owner_address,
        per_payment_max: m.per_payment_max,
        expires_at_unix_s: m.expires_at_unix_s,
        remaining: m.remaining,
        status: format!("{:?}", m.status).to_uppercase(),
        outpoint: m.outpoint.unwrap_or_default(),
        charges: m.charges,
    }
}

fn refund(r: Refund) -> v1::RefundRecord {
    v1::RefundRecord {
        merchant_id: r.merchant_id,
        out_trade_no: r.out_trade_no,
        out_refund_no: r.out_refund_no,
        amount: r.amount,
        txid: r.txid.unwrap_or_default(),
        status: format!("{:?}", r.status).to_uppercase(),
        to_address: r.to_address,
        reason: r.reason,
    }
}

#[tonic::async_trait]
impl MerchantGateway for GrpcGateway {
    async fn create_order(
        &self,
        r: Request<v1::CreateOrderRequest>,
    ) -> Result<Response<v1::Order>, Status> {
        let c = self
            .signed(&r, "CreateOrder", &r.get_ref().merchant_id)
            .await?;
        let m = r.into_inner();
        let mut v = json!({"out_trade_no": m.out_trade_no, "amount": m.amount, "description": m.description});
        if m.expires_in_s != 0 {
            v["expires_in_s"] = m.expires_in_s.into();
        }
        let o = self
            .gateway
            .create_order(&c, &body(v))
            .await
            .map_err(status)?;
        Ok(Response::new(order(o.view(self.gateway.now()))))
    }

    async fn get_order(
        &self,
        r: Request<v1::GetOrderRequest>,
    ) -> Result<Response<v1::Order>, Status> {
        let c = self
            .signed(&r, "GetOrder", &r.get_ref().merchant_id)
            .await?;
        let o = self
            .gateway
            .get_order(&c, &r.get_ref().out_trade_no)
            .await
            .map_err(status)?;
        Ok(Response::new(order(o.view(self.gateway.now()))))
    }

    async fn close_order(
        &self,
        r: Request<v1::GetOrderRequest>,
    ) -> Result<Response<v1::Order>, Status> {
        let c = self
            .signed(&r, "CloseOrder", &r.get_ref().merchant_id)
            .await?;
        let o = self
            .gateway
            .close_order(&c, &r.get_ref().out_trade_no)
            .await
            .map_err(status)?;
        Ok(Response::new(order(o.view(self.gateway.now()))))
    }

    async fn pay_order(
        &self,
        r: Request<v1::PayOrderRequest>,
    ) -> Result<Response<v1::Order>, Status> {
        let m = r.into_inner();
        let v = json!({"payer_address": m.payer_address, "transfer": transfer(m.transfer)});
        let o = self
            .gateway
            .pay_order(&m.merchant_id, &m.out_trade_no, &body(v))
            .await
            .map_err(status)?;
        Ok(Response::new(order(o.view(self.gateway.now()))))
    }

    async fn authorize_hold(
        &self,
        r: Request<v1::AuthorizeHoldRequest>,
    ) -> Result<Response<v1::Hold>, Status> {
        let c = self
            .signed(&r, "AuthorizeHold", &r.get_ref().merchant_id)
            .await?;
        let m = r.into_inner();
        let v = json!({"hold_id": m.hold_id, "payer_address": m.payer_address, "transfer": transfer(m.transfer)});
        Ok(Response::new(hold(
            self.gateway
                .authorize_hold(&c, &body(v))
                .await
                .map_err(status)?,
        )))
    }

    async fn capture_hold(
        &self,
        r: Request<v1::CaptureHoldRequest>,
    ) -> Result<Response<v1::Hold>, Status> {
        let c = self
            .signed(&r, "CaptureHold", &r.get_ref().merchant_id)
            .await?;
        let m = r.into_inner();
        let v = json!({"splits": m.splits.iter().map(|s| json!({"to_address": s.to_address, "amount": s.amount})).collect::<Vec<_>>()});
        Ok(Response::new(hold(
            self.gateway
                .settle_hold(&c, &m.hold_id, &body(v), false)
                .await
                .map_err(status)?,
        )))
    }

    async fn release_hold(
        &self,
        r: Request<v1::ReleaseHoldRequest>,
    ) -> Result<Response<v1::Hold>, Status> {
        let c = self
            .signed(&r, "ReleaseHold", &r.get_ref().merchant_id)
            .await?;
        Ok(Response::new(hold(
            self.gateway
                .settle_hold(&c, &r.get_ref().hold_id, b"", true)
                .await
                .map_err(status)?,
        )))
    }

    async fn refund(
        &self,
        r: Request<v1::RefundRequest>,
    ) -> Result<Response<v1::RefundRecord>, Status> {
        let c = self.signed(&r, "Refund", &r.get_ref().merchant_id).await?;
        let m = r.into_inner();
        let v = json!({"out_refund_no": m.out_refund_no, "out_trade_no": m.out_trade_no, "amount": m.amount, "reason": m.reason});
        Ok(Response::new(refund(
            self.gateway.refund(&c, &body(v)).await.map_err(status)?,
        )))
    }

    async fn create_mandate(
        &self,
        r: Request<v1::CreateMandateRequest>,
    ) -> Result<Response<v1::Mandate>, Status> {
        let c = self
            .signed(&r, "CreateMandate", &r.get_ref().merchant_id)
            .await?;
        let m = r.into_inner();
        let v = json!({"mandate_id": m.mandate_id, "owner_address": m.owner_address, "transfer": transfer(m.transfer)});
        Ok(Response::new(mandate(
            self.gateway
                .create_mandate(&c, &body(v))
                .await
                .map_err(status)?,
        )))
    }

    async fn charge_mandate(
        &self,
        r: Request<v1::ChargeMandateRequest>,
    ) -> Result<Response<v1::Order>, Status> {
        let c = self
            .signed(&r, "ChargeMandate", &r.get_ref().merchant_id)
            .await?;
        let m = r.into_inner();
        let v = json!({"out_trade_no": m.out_trade_no, "amount": m.amount, "description": m.description});
        let o = self
            .gateway
            .charge_mandate(&c, &m.mandate_id, &body(v))
            .await
            .map_err(status)?;
        Ok(Response::new(order(o.view(self.gateway.now()))))
    }

    async fn revoke_mandate(
        &self,
        r: Request<v1::RevokeMandateRequest>,
    ) -> Result<Response<v1::Mandate>, Status> {
        let m = r.into_inner();
        let v = json!({"transfer": transfer(m.transfer)});
        Ok(Response::new(mandate(
            self.gateway
                .revoke_mandate(&m.merchant_id, &m.mandate_id, &body(v))
                .await
                .map_err(status)?,
        )))
    }

    async fn get_statement(
        &self,
        r: Request<v1::GetStatementRequest>,
    ) -> Result<Response<v1::Statement>, Status> {
        let c = self
            .signed(&r, "GetStatement", &r.get_ref().merchant_id)
            .await?;
        let date = r.get_ref().date.clone();
        let s = self.gateway.statement(&c, &date).await.map_err(status)?;
        let rec = self
            .gateway
            .reconcile_of(&s.merchant_id, &date)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::Statement {
            merchant_id: s.merchant_id,
            date: s.date,
            lines: s
                .lines
                .into_iter()
                .map(|l| v1::StatementLine {
                    kind: l.kind,
                    reference: l.reference,
                    amount: l.amount,
                    txid: l.txid,
                    at_unix_ms: l.at_unix_ms,
                    incoming: l.incoming,
                })
                .collect(),
            total_in: s.total_in,
            total_out: s.total_out,
            net: s.net,
            reconciled: rec.reconciled,
        }))
    }
}

/// The `authorization` metadata a merchant's gRPC call carries: its signature over
/// `method`'s path and `message`'s encoding.
pub fn authorization<M: Message>(
    key: &cbdc_core::Keypair,
    merchant_id: &str,
    method: &str,
    message: &M,
    timestamp: u64,
    nonce: &str,
) -> String {
    auth::authorization(
        key,
        &Signer::Merchant(merchant_id.to_string()),
        "POST",
        &format!("{SERVICE_PATH}{method}"),
        timestamp,
        nonce,
        &message.encode_to_vec(),
    )
}
