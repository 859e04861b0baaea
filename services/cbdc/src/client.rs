//! The command line's clients, over the client library (`cbdc-client`): the same dialing,
//! TLS and errors a person can act on.

pub use cbdc_client::Dial;
use cbdc_proto::v1::issuance_service_client::IssuanceServiceClient;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::transport::Channel;

pub async fn ledger(d: &Dial) -> Result<LedgerServiceClient<Channel>, String> {
    Ok(LedgerServiceClient::new(
        cbdc_client::connect(d, "bank ledger")
            .await
            .map_err(|e| e.to_string())?,
    ))
}

pub async fn issuance(d: &Dial) -> Result<IssuanceServiceClient<Channel>, String> {
    Ok(IssuanceServiceClient::new(
        cbdc_client::connect(d, "central bank")
            .await
            .map_err(|e| e.to_string())?,
    ))
}

/// A gRPC status as a line a person reads: the code and the service's reason, then its
/// message.
pub fn status(s: &tonic::Status) -> String {
    let e = cbdc_client::RpcError::from(s.clone());
    format!("{:?} {}: {}", e.code, e.reason, e.message)
}
