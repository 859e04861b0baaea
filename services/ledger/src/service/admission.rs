//! Admission of `SubmitTransfers` batches: the transfers of batches in flight are bounded
//! overall and per client connection. A batch that would pass either bound is refused at
//! once with `RESOURCE_EXHAUSTED` and retry advice, before it queues anywhere, so a client
//! flooding the ledger with batches holds at most its share of the queue and its memory,
//! and the others' batches still get in. (Single calls are not counted here: they go in
//! the verifier's and committer's priority lane.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Batches of the largest size in flight on the ledger, at most.
pub const BATCHES_IN_FLIGHT: usize = 32;
/// Batches of the largest size in flight on one connection, at most.
pub const BATCHES_PER_CONNECTION: usize = 8;

/// The bounds and what is in flight.
pub struct Admission {
    overall: Arc<Semaphore>,
    overall_max: usize,
    per_connection_max: usize,
    by_connection: Mutex<HashMap<String, usize>>,
}

/// A batch's place; dropping it (the call answered or abandoned) frees it.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    connection: String,
    n: usize,
}

impl Admission {
    /// Bounds for batches of at most `max_batch` transfers.
    pub fn new(max_batch: usize) -> Arc<Admission> {
        let overall_max = max_batch.max(1) * BATCHES_IN_FLIGHT;
        Arc::new(Admission {
            overall: Arc::new(Semaphore::new(overall_max)),
            overall_max,
            per_connection_max: max_batch.max(1) * BATCHES_PER_CONNECTION,
            by_connection: Mutex::default(),
        })
    }

    /// Admits a batch of `n` transfers from `connection`, or refuses it.
    pub fn admit(self: &Arc<Self>, connection: &str, n: usize) -> Result<Admitted, Status> {
        {
            let mut by = self.by_connection.lock().expect("admission");
            let mine = by.entry(connection.to_string()).or_default();
            if *mine + n > self.per_connection_max {
                let held = *mine;
                if held == 0 {
                    by.remove(connection);
                }
                return Err(cbdc_runtime::error::exhausted(format!(
                    "transfers: {held} transfers of this connection's batches are in flight \
                     (at most {}); wait for their answers",
                    self.per_connection_max
                )));
            }
            *mine += n;
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| Arc::clone(&self.overall).try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            self.release(connection, n);
            return Err(cbdc_runtime::error::exhausted(format!(
                "transfers: the ledger has {} transfers of batches in flight; try again shortly",
                self.overall_max
            )));
        };
        Ok(Admitted {
            _permit: permit,
            admission: Arc::clone(self),
            connection: connection.to_string(),
            n,
        })
    }

    /// Whether `connection` may send a batch now (it holds less than its share and the
    /// ledger has room): the check made before a request's body is read.
    fn room(&self, connection: &str) -> Result<(), Status> {
        let held = self
            .by_connection
            .lock()
            .expect("admission")
            .get(connection)
            .copied()
            .unwrap_or(0);
        if held >= self.per_connection_max {
            return Err(cbdc_runtime::error::exhausted(format!(
                "transfers: {held} transfers of this connection's batches are in flight \
                 (at most {}); wait for their answers",
                self.per_connection_max
            )));
        }
        if self.overall.available_permits() == 0 {
            return Err(cbdc_runtime::error::exhausted(format!(
                "transfers: the ledger has {} transfers of batches in flight; try again shortly",
                self.overall_max
            )));
        }
        Ok(())
    }

    fn release(&self, connection: &str, n: usize) {
        let mut by = self.by_connection.lock().expect("admission");
        if let Some(mine) = by.get_mut(connection) {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                by.remove(connection);
            }
        }
    }
}

/// The client connection a request came on, as [`tonic::Request::remote_addr`] names it.
pub fn connection_of<B>(request: &tonic::codegen::http::Request<B>) -> String {
    tcp_info(request)
        .and_then(TcpConnectInfo::remote_addr)
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// The TCP connection a request came on (under TLS or not).
fn tcp_info<B>(request: &tonic::codegen::http::Request<B>) -> Option<&TcpConnectInfo> {
    let e = request.extensions();
    e.get::<TcpConnectInfo>().or_else(|| {
        e.get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    })
}

/// The (local, peer) addresses of the connection a request came on.
fn addresses_of<B>(
    request: &tonic::codegen::http::Request<B>,
) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    let info = tcp_info(request)?;
    Some((info.local_addr()?, info.remote_addr()?))
}

/// The ledger's gRPC service behind a gate that refuses a `SubmitTransfers` call before its
/// body is read when the caller's connection (or the ledger) has no room for another batch:
/// a client that ignores the retry advice and sends again at once costs the ledger a header
/// parse, not the decoding of a maximum-size message; and if it keeps doing so, nothing
/// more is read from its connection for the advised wait ([`cbdc_runtime::conn::refused`]).
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    admission: Arc<Admission>,
}

/// The method the gate watches.
const SUBMIT_TRANSFERS: &str = "/cbdc.v1.LedgerService/SubmitTransfers";

impl<S> Gate<S> {
    pub fn new(inner: S, admission: Arc<Admission>) -> Gate<S> {
        Gate { inner, admission }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Gate<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        std::future::Ready<Result<Self::Response, Self::Error>>,
        futures::future::Either<
            S::Future,
            futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>,
        >,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        use futures::future::Either;
        if request.uri().path() != SUBMIT_TRANSFERS {
            return Either::Right(Either::Left(self.inner.call(request)));
        }
        if let Err(status) = self.admission.room(&connection_of(&request)) {
            // A connection that sends on without waiting is not read from for a while.
            if let Some((local, peer)) = addresses_of(&request) {
                cbdc_runtime::conn::refused(local, peer);
            }
            return Either::Left(std::future::ready(Ok(status.into_http())));
        }
        // A batch is decoded, verified and committed on the background runtime's threads,
        // which yield the CPU to the single calls' (its body still arrives on the
        // connection's task).
        let call = self.inner.call(request);
        Either::Right(Either::Right(Box::pin(cbdc_runtime::background::run(call))))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(&self.connection, self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection gets up to its share, then is refused with retry advice; another
    /// connection still gets in until the overall bound; answered batches free their
    /// places.
    #[test]
    fn bounds_per_connection_and_overall() {
        let a = Admission::new(10);
        let mut held = Vec::new();
        for _ in 0..BATCHES_PER_CONNECTION {
            held.push(a.admit("a", 10).unwrap());
        }
        let refused = a.admit("a", 1).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let details = tonic_types::StatusExt::get_error_details(&refused);
        assert!(details.retry_info().is_some(), "retry advice");
        // Exactly at the share is allowed: 4 × 10 held, a batch of 0 more is not asked for,
        // and one less than the share leaves room for exactly that.
        drop(held.pop());
        held.push(a.admit("a", 10).unwrap());
        // Other connections fill the rest of the overall bound, and no more.
        let mut connection = 0;
        while held.len() < BATCHES_IN_FLIGHT {
            let name = format!("c{}", connection / BATCHES_PER_CONNECTION);
            held.push(a.admit(&name, 10).unwrap());
            connection += 1;
        }
        let refused = a.admit("fresh", 10).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("ledger"),
            "{}",
            refused.message()
        );
        // The refusal took nothing: the fresh connection holds no place.
        assert!(!a.by_connection.lock().unwrap().contains_key("fresh"));
        held.clear();
        assert!(a.by_connection.lock().unwrap().is_empty());
        assert_eq!(a.overall.available_permits(), 10 * BATCHES_IN_FLIGHT);
        // A batch larger than a connection's share is refused even on an idle ledger.
        assert!(a.admit("a", 10 * BATCHES_PER_CONNECTION + 1).is_err());
    }
}
