//! The merchant gateway's HTTP API tested against its own OpenAPI document with
//! Schemathesis (property-based: requests generated from the document, signed as a
//! merchant signs, every answer checked against the document). The test command installs
//! Schemathesis in a virtual environment and names its Python in `CBDC_OPENAPI_PYTHON`;
//! without it the test is skipped outside CI and fails in CI.

use cbdc_tests::merchant::MerchantNet;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_keeps_to_its_openapi_document_under_generated_requests() {
    let Some(python) = std::env::var_os("CBDC_OPENAPI_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CBDC_OPENAPI_PYTHON is not set: .ci/test installs Schemathesis and sets it"
        );
        eprintln!("skipped: set CBDC_OPENAPI_PYTHON to a Python with schemathesis and pynacl");
        return;
    };
    let net = MerchantNet::start(1).await;
    net.onboard().await;
    // Something to find: orders, one closed.
    for otn in ["OPENAPI00001", "OPENAPI00002"] {
        net.ok(&net.as_merchant(
            "POST",
            "/v1/orders",
            &json!({"out_trade_no": otn, "amount": "1.00", "description": "t"}),
        ))
        .await;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/check_gateway.py");
    let base = net.base.clone();
    let examples = std::env::var("CBDC_OPENAPI_EXAMPLES").unwrap_or_else(|_| "30".into());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("CBDC_GATEWAY", base)
            .env("CBDC_MERCHANT_ID", "m-1")
            .env("CBDC_MERCHANT_SEED", hex::encode([2u8; 32]))
            .env("CBDC_EXAMPLES", examples)
            .output()
    })
    .await
    .expect("joins")
    .expect("runs the checker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The signed requests got through (a checker whose every request is refused at the door
    // would test nothing).
    assert!(stdout.contains("200"), "{stdout}");
    net.stop().await;
}
