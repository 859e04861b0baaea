//! A service whose store stopped after a failed fsync says so: its health service answers
//! NOT_SERVING and its metrics show `store_failed 1`.

use cbdc_runtime::shutdown::Shutdown;
use cbdc_store::{Database, EmbeddedOptions, StoreError, TxError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_turns_the_service_not_serving() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = EmbeddedOptions {
        fail_fsync_at_batch: Some(0),
        ..EmbeddedOptions::default()
    };
    let db = Database::open_embedded(dir.path(), faulty).unwrap();
    let listeners = cbdc_runtime::grpc::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let (grpc, metrics_addr) = (listeners.grpc_addr, listeners.metrics_addr);
    // Any service will do: one that answers every call UNIMPLEMENTED.
    let service = Nothing;
    let shutdown = Shutdown::new();
    let server = cbdc_runtime::grpc::serve(
        "test",
        listeners,
        service,
        cbdc_proto_descriptor(),
        prometheus::Registry::new(),
        None,
        false,
        &db,
        Vec::new(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = |h: &mut HealthClient<tonic::transport::Channel>| {
        let mut h = h.clone();
        async move {
            h.check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
        }
    };
    assert_eq!(status(&mut health).await, ServingStatus::Serving as i32);
    assert!(metrics(metrics_addr).await.contains("store_failed 0"));

    let failed = db
        .run(|tx| {
            Box::pin(async move {
                tx.set(b"k", b"v")?;
                Ok::<_, TxError<StoreError>>(())
            })
        })
        .await;
    assert!(failed.is_err(), "the injected fsync failure");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status(&mut health).await != ServingStatus::NotServing as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the service never said NOT_SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics(metrics_addr).await.contains("store_failed 1"));
    shutdown.trigger();
    let _ = server.await;
}

/// A service with no methods: every call is UNIMPLEMENTED.
#[derive(Clone)]
struct Nothing;

impl tonic::server::NamedService for Nothing {
    const NAME: &'static str = "test.Nothing";
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Nothing {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::unimplemented("nothing here").into_http()))
    }
}

/// A descriptor set for reflection: an empty one is enough here.
fn cbdc_proto_descriptor() -> &'static [u8] {
    &[]
}
