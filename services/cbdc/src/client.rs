//! gRPC clients with errors a person can act on.

use std::time::Duration;

use cbdc_proto::v1::issuance_service_client::IssuanceServiceClient;
use cbdc_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::transport::{Channel, Endpoint};

async fn channel(url: &str, what: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| {
            format!("{what} endpoint {url:?}: {e} (expected e.g. http://127.0.0.1:50061)")
        })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    endpoint.connect().await.map_err(|e| {
        format!("cannot reach the {what} at {url}: {e}; is it running? (`cbdc devnet` prints the endpoints)")
    })
}

pub async fn ledger(url: &str) -> Result<LedgerServiceClient<Channel>, String> {
    Ok(LedgerServiceClient::new(channel(url, "bank ledger").await?))
}

pub async fn issuance(url: &str) -> Result<IssuanceServiceClient<Channel>, String> {
    Ok(IssuanceServiceClient::new(
        channel(url, "central bank").await?,
    ))
}

/// A gRPC status as a line a person reads: the code, then the service's message.
pub fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}
