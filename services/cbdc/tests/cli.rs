//! The `cbdc` commands, run in process: the demo scenario, a devnet driven by the wallet and
//! admin commands, and the errors a person sees for a mistyped address, a bad amount and an
//! unreachable server.

use cbdc::cli::{Cli, run};
use clap::Parser;

mod common;

/// Bob's key file in `dir`, created on first use.
fn bob_key_path(dir: &tempfile::TempDir) -> &'static str {
    let path = dir.path().join("bob.key");
    cbdc_runtime::secret::load_or_create_seed(&path).expect("bob's key");
    Box::leak(path.to_str().unwrap().to_string().into_boxed_str())
}

async fn cbdc(args: &[&str]) -> Result<Vec<String>, String> {
    let mut argv = vec!["cbdc"];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv).map_err(|e| e.to_string())?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_does_what_it_says() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    cbdc::demo::run(Box::new(move |l| sink.lock().unwrap().push(l.to_string())))
        .await
        .expect("every step");
    let text = lines.lock().unwrap().join("\n");
    for expected in [
        "per-payment cap of 2000.00 exceeded",
        "was already spent by transfer",
        "SETTLED on bank 1",
        "supply conserved",
        "Carol's class 1 refused: tier: a customer opens an anonymous wallet only",
        "her wallet records the change",
        "Every step did what it said.",
        "credited at bank 1 through the central bank",
        "captured 52.50",
        "revoked by Gus alone",
        "every line tied to its txid on the ledger: reconciled",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_and_admin_commands_against_a_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let devnet =
        cbdc::devnet::Devnet::start(dir.path(), 2, cbdc_runtime::shutdown::Shutdown::new())
            .await
            .expect("devnet");
    let key = dir.path().join("alice.key");
    let key = key.to_str().unwrap();
    let out = cbdc(&["wallet", "new", "--key", key]).await.unwrap();
    assert!(out[0].contains("mode 0600"), "{out:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let err = cbdc(&["wallet", "new", "--key", key]).await.unwrap_err();
    assert!(err.contains("already exists"), "{err}");

    // Alone, a customer opens an anonymous wallet only; the bank raises the tier.
    let err = cbdc(&[
        "wallet",
        "open",
        "--key",
        key,
        "--ledger",
        "1",
        "--phone",
        "+8613800000001",
        "--tier",
        "class1",
        "--devnet",
        &d,
    ])
    .await
    .unwrap_err();
    assert!(
        err.contains("a customer opens an anonymous wallet only"),
        "{err}"
    );
    let out = cbdc(&[
        "--json",
        "wallet",
        "open",
        "--key",
        key,
        "--ledger",
        "1",
        "--phone",
        "+8613800000001",
        "--devnet",
        &d,
    ])
    .await
    .unwrap();
    let opened: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    let alice = opened["address"].as_str().unwrap().to_string();
    let out = cbdc(&[
        "bank",
        "set-tier",
        &alice,
        "--tier",
        "class2",
        "--reason",
        "in-branch ID check 7",
        "--devnet",
        &d,
    ])
    .await
    .unwrap();
    assert!(out[0].contains("tier Class2"), "{out:?}");
    let out = cbdc(&["--json", "bank", "show", &alice, "--devnet", &d])
        .await
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(
        shown["tier_changes"][0]["reason"], "in-branch ID check 7",
        "{shown}"
    );

    // The same request id twice: issued once.
    for expected in ["issued 1000.00 to bank 1", "already issued"] {
        let out = cbdc(&[
            "central-bank",
            "mint",
            "--ledger",
            "1",
            "--amount",
            "1000.00",
            "--request-id",
            "m1",
            "--devnet",
            &d,
        ])
        .await
        .unwrap();
        assert!(out[0].starts_with(expected), "{out:?}");
    }

    // The vault pays Alice through an exchange (the bank's job), then Alice pays herself back
    // a part to check pay and history.
    let bank1 = &devnet.banks[0];
    let operator = cbdc_core::Keypair::from_seed(devnet.operators[0].seed());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = bank1.ledger.wallet(&operator.public()).await.unwrap();
        if v.balance == cbdc_core::Amount::parse("1000.00").unwrap() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the issue never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = cbdc(&[
        "bank",
        "exchange",
        &alice,
        "--amount",
        "300.00",
        "--request-id",
        "x1",
        "--devnet",
        &d,
    ])
    .await
    .unwrap();
    assert!(
        out[0].starts_with("paid 300.00 from the vault to"),
        "{out:?}"
    );
    let out = cbdc(&["wallet", "balance", &alice, "--key", key, "--devnet", &d])
        .await
        .unwrap();
    assert!(out[0].contains(": 300.00"), "{out:?}");
    // Another wallet's key does not read Alice's balance.
    let err = cbdc(&[
        "wallet",
        "balance",
        &alice,
        "--key",
        bob_key_path(&dir),
        "--devnet",
        &d,
    ])
    .await
    .unwrap_err();
    assert!(err.contains("holds the key of another wallet"), "{err}");

    let bob_key = bob_key_path(&dir);
    let out = cbdc(&[
        "--json",
        "wallet",
        "open",
        "--key",
        bob_key,
        "--ledger",
        "2",
        "--phone",
        "+8613800000002",
        "--devnet",
        &d,
    ])
    .await
    .unwrap();
    let bob: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    let bob = bob["address"].as_str().unwrap().to_string();
    let out = cbdc(&[
        "--json", "wallet", "pay", "--key", key, "--ledger", "1", "--to", &bob, "--amount",
        "12.30", "--devnet", &d,
    ])
    .await
    .unwrap();
    let paid: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    let txid = paid["txid"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = cbdc(&["wallet", "balance", &bob, "--key", bob_key, "--devnet", &d])
            .await
            .unwrap();
        if out[0].contains(": 12.30") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A watcher sees Bob's next incoming payment.
    let watcher = {
        let (bob, d, bob_key) = (bob.clone(), d.clone(), bob_key.to_string());
        tokio::spawn(async move {
            cbdc(&[
                "wallet", "watch", &bob, "--key", &bob_key, "--count", "1", "--devnet", &d,
            ])
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    cbdc(&[
        "wallet", "pay", "--key", key, "--ledger", "1", "--to", &bob, "--amount", "0.70",
        "--devnet", &d,
    ])
    .await
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), watcher)
        .await
        .expect("the watcher saw the payment")
        .unwrap()
        .unwrap();
    let out = cbdc(&["wallet", "history", &alice, "--key", key, "--devnet", &d])
        .await
        .unwrap();
    assert_eq!(out.len(), 4, "{out:?}");
    assert_eq!(
        out[0],
        "tier Class4Anonymous → Class2: in-branch ID check 7"
    );
    assert!(out[2].starts_with("out 12.30"), "{out:?}");

    // The receipt, once the audit log has signed a checkpoint covering it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        match cbdc(&[
            "wallet", "receipt", "verify", &txid, "--ledger", "1", "--key", key, "--devnet", &d,
        ])
        .await
        {
            Ok(out) => break out,
            Err(e) if e.contains("not yet in a signed checkpoint") => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(out[0].starts_with("verified:"), "{out:?}");
    assert!(
        out[0].contains("first checkpoint of ledger 1 kept"),
        "{out:?}"
    );
    // Verified again, the wallet checks that the log only grew since the checkpoint it kept.
    let out = cbdc(&[
        "wallet", "receipt", "verify", &txid, "--ledger", "1", "--key", key, "--devnet", &d,
    ])
    .await
    .unwrap();
    assert!(out[0].contains("the log extends the"), "{out:?}");
    // A kept checkpoint the ledger's log does not extend (a forged root) is refused.
    let kept = format!("{key}.ledger-1.checkpoint");
    let text = std::fs::read_to_string(&kept).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut message = hex::decode(stored["checkpoint"].as_str().unwrap()).unwrap();
    // The root follows the tag, the ledger id and the size.
    let root_at = b"cbdc/v2/checkpoint".len() + 4 + 8;
    message[root_at] ^= 1;
    std::fs::write(
        &kept,
        serde_json::json!({"ledger": 1, "checkpoint": hex::encode(message)}).to_string(),
    )
    .unwrap();
    let err = cbdc(&[
        "wallet", "receipt", "verify", &txid, "--ledger", "1", "--key", key, "--devnet", &d,
    ])
    .await
    .unwrap_err();
    assert!(err.contains("not the one it showed before"), "{err}");

    let out = cbdc(&[
        "bank", "freeze", &alice, "--reason", "order 7", "--devnet", &d,
    ])
    .await
    .unwrap();
    assert!(out[0].contains(": Frozen,"), "{out:?}");
    let err = cbdc(&[
        "wallet", "pay", "--key", key, "--ledger", "1", "--to", &bob, "--amount", "1.00",
        "--devnet", &d,
    ])
    .await
    .unwrap_err();
    assert!(err.contains("frozen"), "{err}");
    let out = cbdc(&[
        "bank", "unfreeze", &alice, "--reason", "order 8", "--devnet", &d,
    ])
    .await
    .unwrap();
    assert!(out[0].contains(": Active,"), "{out:?}");

    let out = cbdc(&[
        "central-bank",
        "redeem",
        "--ledger",
        "1",
        "--amount",
        "200.00",
        "--request-id",
        "r1",
        "--devnet",
        &d,
    ])
    .await
    .unwrap();
    assert!(out[0].starts_with("bank 1 returns 200.00"), "{out:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = cbdc(&["central-bank", "audit", "--devnet", &d])
            .await
            .unwrap();
        if out[0].ends_with("; balanced")
            && out[0].contains("redeemed 200.00")
            && !out.iter().any(|l| l.contains("NOT"))
        {
            assert!(
                out[0].starts_with("issued 1000.00 − redeemed 200.00 = 800.00"),
                "{out:?}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Each bank's log, replayed from its transfers alone, gives what its checkpoints say.
    for ledger in ["1", "2"] {
        let out = cbdc(&["audit", "replay", "--ledger", ledger, "--devnet", &d])
            .await
            .unwrap();
        assert!(
            out[0].starts_with(&format!("bank {ledger}: "))
                && out[0].contains("as its checkpoints say"),
            "{out:?}"
        );
    }
    // A wrong operator key: every checkpoint's signature fails, and the command says where.
    let stranger = hex::encode(cbdc_core::Keypair::from_seed(&[3; 32]).public().as_bytes());
    let err = cbdc(&[
        "audit",
        "replay",
        "--ledger",
        "1",
        "--operator-key",
        &stranger,
        "--devnet",
        &d,
    ])
    .await
    .unwrap_err();
    assert!(err.contains("does not give what it signed"), "{err}");
    let file = cbdc::devnet::DevnetFile::load(dir.path()).unwrap();
    assert_eq!(file.bank_metrics.len(), 2);
    assert!(file.central_bank_metrics.is_some());
    devnet.stop().await.unwrap();

    // Restarted on the same directory, the devnet resumes with its data and addresses.
    let devnet =
        cbdc::devnet::Devnet::start(dir.path(), 2, cbdc_runtime::shutdown::Shutdown::new())
            .await
            .expect("resumes");
    let out = cbdc(&["wallet", "balance", &bob, "--key", bob_key, "--devnet", &d])
        .await
        .unwrap();
    assert!(out[0].contains(": 13.00"), "{out:?}");
    assert_eq!(cbdc::devnet::DevnetFile::load(dir.path()).unwrap(), file);
    devnet.stop().await.unwrap();
}

/// Runs `args` until its JSON answer satisfies `done` (at most 20 s).
async fn until(args: &[&str], done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = cbdc(args).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.join("\n")).unwrap();
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{args:?}: still {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn owned(args: &[&str], tail: &[String]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(tail.iter().cloned());
    v
}

async fn run_owned(args: Vec<String>) -> Result<Vec<String>, String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    cbdc(&refs).await
}

fn json_of(out: Vec<String>) -> serde_json::Value {
    serde_json::from_str(&out.join("\n")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_commands_against_a_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let devnet =
        cbdc::devnet::Devnet::start(dir.path(), 2, cbdc_runtime::shutdown::Shutdown::new())
            .await
            .expect("devnet");
    let key = |name: &str| {
        let path = dir.path().join(format!("{name}.key"));
        cbdc_runtime::secret::load_or_create_seed(&path).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (api, dora) = (key("shop-api"), key("dora"));
    let shop: Vec<String> = ["--merchant-id", "shop-1", "--api-key", &api, "--devnet", &d]
        .iter()
        .map(|s| s.to_string())
        .collect();

    // Money: bank 2 issued, Dora's wallet opened there and filled.
    let dora_address = common::funded_at_bank_2(&d, &dora, "+8613800000042").await;

    // Bank 1 onboards the shop; an order; its QR code; Dora pays from bank 2.
    let m = json_of(
        run_owned(owned(
            &[
                "--json",
                "merchant",
                "onboard",
                "--bank",
                "1",
                "--webhook-url",
                "http://127.0.0.1:9/hooks",
                "--phone",
                "+8613800000099",
            ],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert!(
        m["collection_address"]
            .as_str()
            .unwrap()
            .starts_with("ecny1"),
        "{m}"
    );
    let order = json_of(
        run_owned(owned(
            &[
                "--json",
                "merchant",
                "order",
                "create",
                "--out-trade-no",
                "CLI-000001",
                "--amount",
                "12.30",
                "--description",
                "tea",
            ],
            &shop,
        ))
        .await
        .unwrap(),
    );
    let uri = order["payment_uri"].as_str().unwrap().to_string();
    let png = dir.path().join("qr.png");
    run_owned(owned(
        &[
            "merchant",
            "order",
            "qr",
            "CLI-000001",
            "--out",
            png.to_str().unwrap(),
        ],
        &shop,
    ))
    .await
    .unwrap();
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    run_owned(owned(
        &["merchant", "pay", &uri, "--key", &dora, "--ledger", "2"],
        &shop,
    ))
    .await
    .unwrap();
    let get = owned(&["--json", "merchant", "order", "get", "CLI-000001"], &shop);
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    let paid = until(&get, |o| o["status"] == "PAID").await;
    assert_eq!(paid["payer_address"], dora_address.as_str());

    // A partial refund; the same refund id with another amount is refused, naming the field.
    let r = json_of(
        run_owned(owned(
            &[
                "--json",
                "merchant",
                "refund",
                "--out-trade-no",
                "CLI-000001",
                "--out-refund-no",
                "CLI-R-0001",
                "--amount",
                "2.30",
            ],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    let err = run_owned(owned(
        &[
            "merchant",
            "refund",
            "--out-trade-no",
            "CLI-000001",
            "--out-refund-no",
            "CLI-R-0001",
            "--amount",
            "3.00",
        ],
        &shop,
    ))
    .await
    .unwrap_err();
    assert!(
        err.contains("409") && err.contains("(out_refund_no)"),
        "{err}"
    );

    // The statement, as CSV and reconciled; the events the shop was sent.
    let csv = run_owned(owned(&["merchant", "statement", "--csv"], &shop))
        .await
        .unwrap()
        .join("\n");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.contains(",payment,") && csv.contains(",refund,"),
        "{csv}"
    );
    let rec = json_of(
        run_owned(owned(
            &["--json", "merchant", "statement", "--reconcile"],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(rec["reconciled"], true, "{rec}");
    let events = json_of(
        run_owned(owned(&["--json", "merchant", "events"], &shop))
            .await
            .unwrap(),
    );
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"order.paid") && kinds.contains(&"refund.succeeded"),
        "{kinds:?}"
    );

    // A ride: Dora's wallet holds 5.00 for the shop, which captures 3.00 of it.
    let hold = json_of(
        run_owned(owned(
            &[
                "--json",
                "merchant",
                "hold",
                "authorize",
                "--hold-id",
                "CLI-RIDE-01",
                "--amount",
                "5.00",
                "--payer-key",
                &dora,
                "--payer-ledger",
                "2",
            ],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(hold["status"], "AUTHORIZED", "{hold}");
    let collection = m["collection_address"].as_str().unwrap().to_string();
    let captured = json_of(
        run_owned(owned(
            &[
                "--json",
                "merchant",
                "hold",
                "capture",
                "CLI-RIDE-01",
                "--split",
                &format!("{collection}=3.00"),
            ],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(captured["status"], "CAPTURED", "{captured}");
    assert_eq!(captured["captured"], "3.00", "{captured}");
    let got = json_of(
        run_owned(owned(
            &["--json", "merchant", "hold", "get", "CLI-RIDE-01"],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(got["status"], "CAPTURED", "{got}");

    // A mandate of 6.00, at most 2.00 a charge: 1.50 is charged, 2.50 refused naming the
    // field.
    run_owned(owned(
        &[
            "merchant",
            "mandate",
            "create",
            "--mandate-id",
            "CLI-SUB-01",
            "--amount",
            "6.00",
            "--per-payment-max",
            "2.00",
            "--owner-key",
            &dora,
            "--owner-ledger",
            "2",
        ],
        &shop,
    ))
    .await
    .unwrap();
    let charged = json_of(
        run_owned(owned(
            &[
                "--json",
                "merchant",
                "mandate",
                "charge",
                "CLI-SUB-01",
                "--out-trade-no",
                "CLI-SUB-0001",
                "--amount",
                "1.50",
            ],
            &shop,
        ))
        .await
        .unwrap(),
    );
    assert_eq!(charged["status"], "PAID", "{charged}");
    let err = run_owned(owned(
        &[
            "merchant",
            "mandate",
            "charge",
            "CLI-SUB-01",
            "--out-trade-no",
            "CLI-SUB-0002",
            "--amount",
            "2.50",
        ],
        &shop,
    ))
    .await
    .unwrap_err();
    assert!(err.contains("409") && err.contains("(amount)"), "{err}");
    devnet.stop().await.unwrap();
}

#[tokio::test]
async fn errors_a_person_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let key = key.to_str().unwrap();
    cbdc(&["wallet", "new", "--key", key]).await.unwrap();
    let good = cbdc_core::Address::new(
        cbdc_core::LedgerId(1),
        cbdc_core::Keypair::from_seed(&[1; 32]).public(),
    )
    .to_string();
    // A one-character typo in an address.
    let mut typo: Vec<char> = good.chars().collect();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == 'q' { 'p' } else { 'q' };
    let typo: String = typo.into_iter().collect();
    let err = cbdc(&[
        "wallet",
        "balance",
        &typo,
        "--key",
        key,
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .await
    .unwrap_err();
    assert!(err.starts_with(&format!("address {typo:?}:")), "{err}");
    assert!(err.contains("checksum"), "{err}");
    // Three decimal places.
    let err = cbdc(&[
        "wallet",
        "pay",
        "--key",
        key,
        "--ledger",
        "1",
        "--to",
        &good,
        "--amount",
        "1.234",
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .await
    .unwrap_err();
    assert!(err.starts_with("amount \"1.234\":"), "{err}");
    // Another wallet's key: refused before anything is sent.
    let err = cbdc(&[
        "wallet",
        "balance",
        &good,
        "--key",
        key,
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .await
    .unwrap_err();
    assert!(err.contains("holds the key of another wallet"), "{err}");
    // Nobody listening.
    let seed = cbdc_runtime::secret::read_seed(std::path::Path::new(key)).unwrap();
    let own = cbdc_core::Address::new(
        cbdc_core::LedgerId(1),
        cbdc_core::Keypair::from_seed(&seed).public(),
    )
    .to_string();
    let err = cbdc(&[
        "wallet",
        "balance",
        &own,
        "--key",
        key,
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .await
    .unwrap_err();
    assert!(
        err.starts_with("cannot reach the bank ledger at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("is it running?"), "{err}");
    // No devnet in the directory.
    let err = cbdc(&[
        "central-bank",
        "audit",
        "--devnet",
        dir.path().to_str().unwrap(),
    ])
    .await
    .unwrap_err();
    assert!(err.contains("start one with `cbdc devnet"), "{err}");
    // A missing key file.
    let err = cbdc(&[
        "wallet",
        "pay",
        "--key",
        "/nonexistent.key",
        "--ledger",
        "1",
        "--to",
        &good,
        "--amount",
        "1.00",
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .await
    .unwrap_err();
    assert!(err.contains("create one with `cbdc wallet new"), "{err}");
    // An unknown command is clap's error with usage.
    let err = cbdc(&["walet"]).await.unwrap_err();
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

/// The binary itself, with an encrypted key: refused without the passphrase or with a wrong
/// one, used with the right one.
#[test]
fn an_encrypted_key_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    let bin = env!("CARGO_BIN_EXE_cbdc");
    let run = |args: &[&str], pass: Option<&str>| {
        let mut c = std::process::Command::new(bin);
        c.args(args)
            .env("TEST_PASSPHRASE", "correct horse battery staple");
        match pass {
            Some(p) => c.env("CBDC_WALLET_PASSPHRASE", p),
            None => c.env_remove("CBDC_WALLET_PASSPHRASE"),
        };
        let out = c.output().expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let k = key.to_str().unwrap();
    let (ok, stdout, stderr) = run(
        &[
            "wallet",
            "new",
            "--key",
            k,
            "--passphrase-env",
            "TEST_PASSPHRASE",
        ],
        None,
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(
        std::fs::read(&key)
            .unwrap()
            .starts_with(b"age-encryption.org/")
    );
    let open = [
        "wallet",
        "open",
        "--key",
        k,
        "--ledger",
        "1",
        "--phone",
        "+8613800000009",
        "--endpoint",
        "http://127.0.0.1:1",
    ];
    let (ok, _, stderr) = run(&open, None);
    assert!(!ok);
    assert!(
        stderr.contains("is encrypted; put its passphrase in CBDC_WALLET_PASSPHRASE"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&open, Some("wrong"));
    assert!(!ok);
    assert!(stderr.contains("cannot decrypt it"), "{stderr}");
    // The right passphrase gets past the key to the network.
    let (ok, _, stderr) = run(&open, Some("correct horse battery staple"));
    assert!(!ok);
    assert!(stderr.contains("cannot reach the bank ledger"), "{stderr}");
    // --help on a command.
    let (ok, stdout, _) = run(&["wallet", "pay", "--help"], None);
    assert!(ok && stdout.contains("--amount"), "{stdout}");
}

/// `cbdc serve ledger` from the example configuration (its listeners and files moved by
/// environment variables), stopped by SIGTERM: it serves, then exits cleanly.
#[cfg(unix)]
#[test]
fn serve_runs_a_service_from_its_config_and_stops_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    cbdc_runtime::tls::DevCa::new("test CA")
        .unwrap()
        .write(&tls, &["bank-1"])
        .unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ledger.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
        .args(["serve", "ledger", "--config", config.to_str().unwrap()])
        .env("CBDC_LEDGER_LISTEN", "127.0.0.1:0")
        .env("CBDC_LEDGER_METRICS_LISTEN", "127.0.0.1:0")
        .env("CBDC_LEDGER_DATA_DIR", dir.path().join("store"))
        .env(
            "CBDC_LEDGER_OPERATOR_KEY_FILE",
            dir.path().join("operator.key"),
        )
        .env("CBDC_LEDGER_PHONE_KEY_FILE", dir.path().join("phone.key"))
        .env("CBDC_LEDGER_TLS__CERT_FILE", tls.join("bank-1.crt"))
        .env("CBDC_LEDGER_TLS__KEY_FILE", tls.join("bank-1.key"))
        .env("CBDC_LEDGER_TLS__CA_FILE", tls.join("ca.crt"))
        .env(
            "CBDC_LEDGER_AUTHORITY_PUBLIC_KEY",
            hex::encode(
                cbdc_core::Keypair::from_seed(&[0xa7; 32])
                    .public()
                    .as_bytes(),
            ),
        )
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .any(|l| l.contains("ledger serving"));
    assert!(serving, "the ledger did not report serving");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(dir.path().join("operator.key").exists());
}

/// `cbdc load` starts its own devnet as a separate process, opens and funds wallets through
/// the real APIs, drives presigned transfers (within and across banks), and reports; every
/// acknowledged transfer is read back and the audit balances.
#[test]
fn load_runs_against_a_devnet_it_starts_and_checks_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let stdout = cbdc_load(
        &report,
        &[
            "--wallets",
            "60",
            "--transfers-per-wallet",
            "5",
            "--batch",
            "20",
            "--concurrency",
            "2",
            "--cross-percent",
            "20",
            "--duration-s",
            "30",
            "--warmup-s",
            "0",
        ],
    );
    assert!(stdout.contains("transfers/s"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    // Every presigned transfer committed (the chains ran out before the 30 s did).
    assert_eq!(r["committed"], 300, "{r:#}");
    assert_eq!(r["checks"]["acknowledged"], 300);
    assert_eq!(r["checks"]["found"], 300);
    assert_eq!(r["checks"]["audit_balanced"], true);
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r:#}");
    assert!(r["payees_on_bank_2"].as_u64().unwrap() >= 1);
    // Each service ran in a process of its own, and each one's cost is reported, the load
    // generator's own beside them.
    let servers: Vec<&str> = r["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["rss_bytes"].as_u64().unwrap() > 0, "{r:#}");
            s["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        servers,
        [
            "bank 1",
            "bank 2",
            "central bank",
            "merchant gateway",
            "load generator"
        ],
        "{r:#}"
    );
    assert!(r["fsyncs_per_s"].as_f64().unwrap() > 0.0, "{r:#}");
    // Every cross-ledger payment was credited by bank 2 after the load.
    assert!(
        r["cross"]["committed_in_window"].as_u64().unwrap() > 0,
        "{r:#}"
    );
    assert!(
        r["cross"]["delivered_per_s"].as_f64().unwrap() > 0.0,
        "{r:#}"
    );
    assert!(!r["timeline"].as_array().unwrap().is_empty());
    // The picture beside it: throughput, latency over time and the distribution.
    let svg = std::fs::read_to_string(report.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg:.100}");
    assert!(svg.matches("<polyline").count() >= 4, "{svg:.300}");
}

/// Runs `cbdc load` with `args`, quietly, its report at `report`; what it printed, once it
/// succeeded.
fn cbdc_load(report: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
        .arg("load")
        .args(args)
        .args(["--quiet", "--report"])
        .arg(report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What a deployment needs beyond a devnet: certificates for its services (`cbdc certs`)
/// and each bank registered by the administrator (`cbdc central-bank register-bank`), once
/// per request id, refused when signed by anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_made_and_banks_registered_as_a_deployment_does() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let out = cbdc(&[
        "certs",
        "--dir",
        tls.to_str().unwrap(),
        "central-bank",
        "bank-3",
    ])
    .await
    .unwrap();
    assert!(out[0].contains("central-bank, bank-3"), "{out:?}");
    let config = cbdc_runtime::tls::TlsConfig::in_dir(&tls, "bank-3");
    assert!(config.load("ledger").unwrap().is_some());
    assert!(config.expiry().unwrap().is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls.join("bank-3.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        cbdc(&["certs", "--dir", tls.to_str().unwrap()])
            .await
            .is_err()
    );

    let net = dir.path().join("net");
    let devnet = cbdc::devnet::Devnet::start(&net, 2, cbdc_runtime::shutdown::Shutdown::new())
        .await
        .expect("devnet");
    let d = net.to_str().unwrap();
    let operator = dir.path().join("bank-3-operator.key");
    cbdc_runtime::secret::load_or_create_seed(&operator).unwrap();
    let operator_hex = hex::encode(
        cbdc_core::Keypair::from_seed(&cbdc_runtime::secret::read_seed(&operator).unwrap())
            .public()
            .as_bytes(),
    );
    let register = |key: &str, endpoint: &str, request: &str| {
        let (key, endpoint, request) = (key.to_string(), endpoint.to_string(), request.to_string());
        let d = d.to_string();
        async move {
            cbdc(&[
                "central-bank",
                "register-bank",
                "--ledger",
                "3",
                "--operator-key-file",
                &key,
                "--bank-endpoint",
                &endpoint,
                "--request-id",
                &request,
                "--devnet",
                &d,
            ])
            .await
        }
    };
    let key = operator.to_str().unwrap();
    let out = register(key, "https://bank-3:50061", "reg-3")
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![format!(
            "bank 3 registered: operator key {operator_hex}, endpoint https://bank-3:50061"
        )]
    );
    // The same order again answers the same.
    let again = register(key, "https://bank-3:50061", "reg-3")
        .await
        .unwrap();
    assert_eq!(again, out);
    let e = register(key, "bank-3:50061", "reg-3b").await.unwrap_err();
    assert!(e.contains("--bank-endpoint bank-3:50061"), "{e}");
    let e = cbdc(&[
        "central-bank",
        "register-bank",
        "--ledger",
        "3",
        "--bank-endpoint",
        "https://bank-3:50061",
        "--request-id",
        "reg-3c",
        "--devnet",
        d,
    ])
    .await
    .unwrap_err();
    assert!(
        e.contains("--operator-public-key or --operator-key-file"),
        "{e}"
    );
    // Signed by a key that is not the administrator's: refused.
    let e = cbdc(&[
        "central-bank",
        "register-bank",
        "--ledger",
        "4",
        "--operator-public-key",
        &operator_hex,
        "--bank-endpoint",
        "https://bank-4:50061",
        "--request-id",
        "reg-4",
        "--admin-key",
        key,
        "--devnet",
        d,
    ])
    .await
    .unwrap_err();
    assert!(e.contains("admin_signature"), "{e}");

    // The probe a container runs: SERVING over TLS, checked against the network's CA.
    let file = cbdc::devnet::DevnetFile::load(&net).unwrap();
    let (bank1, ca) = (
        format!("https://{}", file.banks[0]),
        file.ca_cert.to_str().unwrap().to_string(),
    );
    let health = |name: &str, endpoint: &str| {
        let (name, endpoint, ca) = (name.to_string(), endpoint.to_string(), ca.clone());
        async move {
            cbdc(&[
                "health",
                "--endpoint",
                &endpoint,
                "--name",
                &name,
                "--ca",
                &ca,
            ])
            .await
        }
    };
    let out = health("bank-1", &bank1).await.unwrap();
    assert_eq!(out, vec![format!("{bank1}: SERVING")]);
    // A certificate naming another service, or nothing listening: not healthy.
    assert!(health("bank-2", &bank1).await.is_err());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(
        health("bank-1", &format!("https://{closed}"))
            .await
            .is_err()
    );
    devnet.stop().await.unwrap();
}

/// `cbdc console`: makes its token file (mode 0600) on first start and prints where it
/// listens; without a session the page is the login and the state is refused naming the
/// cookie; the token from the file logs in, and the session reads the audit.
#[cfg(unix)]
#[test]
fn the_console_command_makes_its_token_and_lets_only_its_holder_in() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let devnet = runtime
        .block_on(cbdc::devnet::Devnet::start(
            dir.path(),
            2,
            cbdc_runtime::shutdown::Shutdown::new(),
        ))
        .expect("devnet");
    let token_file = dir.path().join("console.token");
    let mut console = std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
        .args([
            "console",
            "--listen",
            "127.0.0.1:0",
            "--interval-ms",
            "200",
            "--devnet",
        ])
        .arg(dir.path())
        .arg("--token-file")
        .arg(&token_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(console.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .strip_prefix("console on http://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let http = |request: String| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let page = http(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n"));
    assert!(
        page.starts_with("HTTP/1.0 200") && page.contains(r#"name="token""#),
        "{page}"
    );
    let state = http(format!("GET /api/state HTTP/1.0\r\nHost: {addr}\r\n\r\n"));
    assert!(
        state.starts_with("HTTP/1.0 401") && state.contains(r#""field":"cookie""#),
        "{state}"
    );
    let login = |t: &str| {
        let body = format!("token={t}");
        http(format!(
            "POST /login HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let refused = login("0000");
    assert!(refused.starts_with("HTTP/1.0 401"), "{refused}");
    let ok = login(&token);
    assert!(ok.starts_with("HTTP/1.0 303"), "{ok}");
    let cookie = ok
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("{ok}"))
        .to_string();
    assert!(ok.contains("HttpOnly; SameSite=Strict"), "{ok}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = http(format!(
            "GET /api/state HTTP/1.0\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n"
        ));
        assert!(state.starts_with("HTTP/1.0 200"), "{state}");
        if state.contains(r#""balanced":true"#) && state.contains(r#""ledger":2"#) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    console.kill().unwrap();
    console.wait().unwrap();
    runtime.block_on(devnet.stop()).unwrap();
}

/// `cbdc serve --check`: the deployment's configurations load with the public keys the
/// deployment gives them; a missing key or an unknown field is named, and nothing starts.
#[test]
fn serve_check_loads_a_deployment_configuration_and_names_what_is_wrong() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let key = hex::encode(cbdc_core::Keypair::from_seed(&[9; 32]).public().as_bytes());
    let check = |service: &str, file: &std::path::Path, env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
            .args(["serve", service, "--check", "--config"])
            .arg(file)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let bank = repo.join("deploy/compose/bank-1.toml");
    let keys = [
        ("CBDC_LEDGER_AUTHORITY_PUBLIC_KEY", key.as_str()),
        ("CBDC_LEDGER_CENTRAL_BANK_PUBLIC_KEY", key.as_str()),
    ];
    let (ok, text) = check("ledger", &bank, &keys);
    assert!(
        ok && text.contains("a valid Ledger configuration"),
        "{text}"
    );
    let (ok, text) = check("ledger", &bank, &keys[1..]);
    assert!(!ok && text.contains("authority_public_key"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&bank)
            .unwrap()
            .replace("outbox_interval_ms", "outbox_intervall_ms"),
    )
    .unwrap();
    let (ok, text) = check("ledger", &typo, &keys);
    assert!(!ok && text.contains("outbox_intervall_ms"), "{text}");
    let (ok, text) = check(
        "merchant",
        &repo.join("deploy/compose/merchant.toml"),
        &[
            ("CBDC_MERCHANT_BANKS__1", key.as_str()),
            ("CBDC_MERCHANT_BANKS__2", "not a key"),
        ],
    );
    assert!(!ok && text.contains("banks"), "{text}");
}

/// `cbdc devnet --processes`: each service (the central bank, the banks, the merchant
/// gateway) is a `cbdc serve` process of its own, named with its pid in devnet.json and
/// answering on its address; a wallet command works against it;
/// a restart on the same directory resumes at the same addresses; and when the devnet
/// itself is killed (SIGKILL, no chance to clean up) its services stop too.
#[cfg(unix)]
#[test]
fn a_devnet_of_processes_serves_resumes_and_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
            .args(["devnet", "--banks", "2", "--processes", "--dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starts")
    };
    let file = || -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.path().join("devnet.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("pids")?;
        Some(v)
    };
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let alive = |pid: u64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let pids = |v: &serde_json::Value| -> Vec<u64> {
        let p = &v["pids"];
        let mut all = vec![p["central_bank"].as_u64().unwrap()];
        all.extend(
            p["banks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap()),
        );
        all.push(p["merchant"].as_u64().unwrap());
        all
    };

    let mut devnet = start();
    wait_for("devnet.json names the processes", &|| file().is_some());
    let first = file().unwrap();
    let services = pids(&first);
    assert_eq!(services.len(), 4);
    for &pid in &services {
        assert!(alive(pid));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains("serve"), "{cmdline}");
    }
    assert!(dir.path().join("bank-1.toml").exists());
    // The banks register once devnet.json is written; a wallet command then works.
    let devnet_dir = dir.path().to_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let opened = runtime.block_on(async {
        let key = dir.path().join("w.key");
        cbdc_runtime::secret::load_or_create_seed(&key).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = cbdc(&[
                "wallet",
                "open",
                "--ledger",
                "1",
                "--devnet",
                &devnet_dir,
                "--key",
                key.to_str().unwrap(),
                "--phone",
                "+8613800000001",
            ])
            .await;
            if r.is_ok() || std::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    assert!(opened.is_ok(), "{opened:?}");
    // The merchant gateway answers HTTP: an unsigned request is refused, naming the header.
    let gateway = first["merchant_gateway"].as_str().unwrap();
    let mut stream = std::net::TcpStream::connect(gateway).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /v1/orders/T000001 HTTP/1.0\r\nHost: {gateway}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");
    assert!(answer.contains("\"field\":\"authorization\""), "{answer}");

    // SIGKILL the devnet: its services get SIGTERM from the kernel and stop.
    devnet.kill().unwrap();
    devnet.wait().unwrap();
    wait_for("the services stop with their devnet", &|| {
        services.iter().all(|&p| !alive(p))
    });

    // Resumed on the same directory: new processes, the same addresses.
    let mut devnet = start();
    wait_for("the devnet resumes", &|| {
        file().is_some_and(|v| pids(&v) != services)
    });
    let second = file().unwrap();
    assert_eq!(second["banks"], first["banks"]);
    assert_eq!(second["central_bank"], first["central_bank"]);
    let again = pids(&second);
    // SIGTERM: a graceful stop of every service.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &devnet.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(devnet.wait().unwrap().success());
    assert!(again.iter().all(|&p| !alive(p)));
}

/// `cbdc load` with two phases on one set-up (the second open loop at half the first's
/// rate), Zipf payees and live signing: each phase reports, and every transfer of both is
/// found committed at its acknowledged position with the audit balanced.
#[test]
fn load_phases_run_on_one_set_up_with_zipf_payees_signed_live() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    cbdc_load(
        &report,
        &[
            "--wallets",
            "50",
            "--transfers",
            "2000",
            "--phases",
            "closed:1x1,open:1@50%,merchant:2",
            "--payees",
            "zipf",
            "--sign",
            "live",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
        ],
    );
    let read = |k: u32| -> serde_json::Value {
        let path = dir.path().join(format!("r-p{k}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (first, second) = (read(1), read(2));
    // The merchant phase: orders end to end, beside the single calls before it, checked.
    let merchant: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("r-50-merchant-1.json")).unwrap(),
    )
    .unwrap();
    assert!(merchant["orders"].as_u64().unwrap() > 0, "{merchant:#}");
    assert_eq!(
        merchant["ledger_single_calls_per_s"], first["transfers_per_s"],
        "{merchant:#}"
    );
    assert_eq!(merchant["checks"]["reconciled"], true, "{merchant:#}");
    assert_eq!(merchant["checks"]["webhooks_missing"], 0, "{merchant:#}");
    assert_eq!(first["sign"], "live");
    assert_eq!(first["payees"], "zipf");
    let first_rate = first["transfers_per_s"].as_f64().unwrap();
    let offered = second["offered_rate"].as_u64().unwrap();
    assert_eq!(
        offered,
        ((first_rate * 0.5).round() as u64).max(1),
        "{second:#}"
    );
    for r in [&first, &second] {
        assert_eq!(r["checks"]["found"], r["checks"]["read_back"], "{r:#}");
        assert_eq!(r["checks"]["audit_balanced"], true);
        assert!(r["errors"].as_object().unwrap().is_empty(), "{r:#}");
    }
    // Both phases together sent no more than the chains hold, and the second sent some.
    let acknowledged = first["checks"]["acknowledged"].as_u64().unwrap()
        + second["checks"]["acknowledged"].as_u64().unwrap();
    assert!(acknowledged <= 2000, "{acknowledged}");
    assert!(second["checks"]["acknowledged"].as_u64().unwrap() > 0);
    // Zipf: the hot merchant (wallet 0) got about 1/H(50) ≈ 22% of the payments (uniform
    // payees would give it 1/49 ≈ 2%).
    let share = first["wallet_0_share"].as_f64().unwrap();
    assert!(share > 0.1, "{share}");
    assert!(report.with_file_name("r-p2.svg").exists());
}
