//! What several tests of the `cbdc` commands share.

use cbdc::cli::{Cli, run};
use clap::Parser;

async fn cbdc(args: &[&str]) -> Result<Vec<String>, String> {
    let mut argv = vec!["cbdc"];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv).map_err(|e| e.to_string())?).await
}

/// On the devnet in `d`: 1000.00 issued to bank 2, a wallet opened there with the key file
/// `key` and `phone`, and 100.00 exchanged into it (once the issue has reached bank 2). Its
/// address.
pub async fn funded_at_bank_2(d: &str, key: &str, phone: &str) -> String {
    cbdc(&[
        "central-bank",
        "mint",
        "--ledger",
        "2",
        "--amount",
        "1000.00",
        "--request-id",
        "m2",
        "--devnet",
        d,
    ])
    .await
    .unwrap();
    let opened = cbdc(&[
        "--json", "wallet", "open", "--key", key, "--ledger", "2", "--phone", phone, "--devnet", d,
    ])
    .await
    .unwrap();
    let opened: serde_json::Value = serde_json::from_str(opened.last().unwrap()).unwrap();
    let address = opened["address"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cbdc(&[
        "bank",
        "exchange",
        &address,
        "--amount",
        "100.00",
        "--request-id",
        "xd",
        "--devnet",
        d,
    ])
    .await
    .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the issue never reached bank 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    address
}
