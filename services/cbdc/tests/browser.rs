//! The pages people look at, in a real browser: headless Chromium, driven through
//! chromedriver by `browser.py`, over the central bank's console (`cbdc console`) and a
//! merchant's checkout page. The browser is refused with a wrong token and logs in with the
//! right one; reads the checkout page's payment URI (nothing is scanned) and sees the order
//! waiting; the test pays the order from a wallet at bank 2; the page turns to paid by
//! itself and the console's figures move (bank 1's books and audit log grow, issuance does
//! not). Neither page loads anything from outside its own server. Screenshots go to
//! `CBDC_BROWSER_SHOTS` (a directory) when it is set.
//!
//! It needs Debian's `chromium` and `chromium-driver` and a Python with Selenium
//! (`CBDC_BROWSER_PYTHON`); the test command provides all three. Without them the test says
//! so and passes, except under `CI=true`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use cbdc::cli::{Cli, run};
use clap::Parser;
use serde_json::Value;

mod common;

async fn cbdc(args: &[&str]) -> Result<Vec<String>, String> {
    let mut argv = vec!["cbdc"];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv).map_err(|e| e.to_string())?).await
}

fn json_of(lines: Vec<String>) -> Value {
    serde_json::from_str(lines.last().expect("a line")).expect("JSON")
}

fn needed() -> Option<(String, String, String)> {
    let python = std::env::var("CBDC_BROWSER_PYTHON").ok();
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let driver = Some("/usr/bin/chromedriver").filter(|p| std::path::Path::new(p).exists());
    match (python, chromium, driver) {
        (Some(p), Some(c), Some(d)) => Some((p, c.to_string(), d.to_string())),
        missing => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but the browser test lacks what it needs: {missing:?}"
            );
            eprintln!(
                "skipped: needs CBDC_BROWSER_PYTHON (with selenium), chromium and chromedriver"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_a_checkout_page_in_a_real_browser() {
    let Some((python, chromium, chromedriver)) = needed() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let devnet =
        cbdc::devnet::Devnet::start(dir.path(), 2, cbdc_runtime::shutdown::Shutdown::new())
            .await
            .expect("devnet");
    let file = cbdc::devnet::DevnetFile::load(dir.path()).unwrap();

    // The console, as the administrator runs it.
    let token = hex::encode(rand::random::<[u8; 32]>());
    let dial = cbdc::client::Dial::new(
        file.central_bank_url(),
        cbdc_runtime::tls::CENTRAL_BANK_NAME,
    )
    .with_ca(&file.ca_cert)
    .unwrap()
    .with_identity(&file.admin_cert, &file.admin_cert_key)
    .unwrap();
    let listener = cbdc::console::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let console = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cbdc::console::serve(
        listener,
        cbdc::console::Console::new(&file.network, token.clone()),
        dial,
        std::time::Duration::from_millis(300),
    ));

    // Money at bank 2 in Dora's wallet; a shop at bank 1 with an order.
    let key = |name: &str| {
        let path = dir.path().join(format!("{name}.key"));
        cbdc_runtime::secret::load_or_create_seed(&path).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (api, dora) = (key("shop-api"), key("dora"));
    common::funded_at_bank_2(&d, &dora, "+8613800000042").await;
    let shop = ["--merchant-id", "shop-1", "--api-key", &api, "--devnet", &d];
    let with_shop = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(shop.iter().map(|s| s.to_string()));
        v
    };
    let run_shop = |v: Vec<String>| async move {
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        cbdc(&refs).await
    };
    run_shop(with_shop(&[
        "--json",
        "merchant",
        "onboard",
        "--bank",
        "1",
        "--webhook-url",
        "http://127.0.0.1:9/hooks",
        "--phone",
        "+8613800000099",
    ]))
    .await
    .unwrap();
    let order = json_of(
        run_shop(with_shop(&[
            "--json",
            "merchant",
            "order",
            "create",
            "--out-trade-no",
            "WEB-000001",
            "--amount",
            "12.30",
            "--description",
            "<b>tea</b> & cake",
        ]))
        .await
        .unwrap(),
    );
    let uri = order["payment_uri"].as_str().unwrap().to_string();
    let checkout = order["checkout_path"].as_str().unwrap().to_string();

    // The browser.
    let shots = match std::env::var("CBDC_BROWSER_SHOTS") {
        Ok(s) => {
            std::fs::create_dir_all(&s).unwrap();
            s
        }
        Err(_) => dir.path().to_str().unwrap().to_string(),
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser.py");
    let mut browser = Command::new(python)
        .arg(script)
        .arg(format!("console={console}"))
        .arg(format!("token={token}"))
        .arg(format!("gateway=http://{}", file.merchant_gateway.unwrap()))
        .arg(format!("checkout={checkout}"))
        .arg(format!("chromium={chromium}"))
        .arg(format!("chromedriver={chromedriver}"))
        .arg(format!("shots={shots}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut stdin = browser.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = BufReader::new(browser.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Until the browser shows the order waiting (or gives up).
    let (rx, mut seen) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(120)) {
            let ready = line == "READY";
            seen.push(line);
            if ready {
                break;
            }
        }
        (rx, seen)
    })
    .await
    .unwrap();
    if seen.last().map(String::as_str) == Some("READY") {
        let v = json_of(
            run_shop(with_shop(&[
                "--json",
                "merchant",
                "order",
                "get",
                "WEB-000001",
            ]))
            .await
            .unwrap(),
        );
        assert_eq!(v["status"], "CREATED");
        cbdc(&[
            "merchant", "pay", &uri, "--key", &dora, "--ledger", "2", "--devnet", &d,
        ])
        .await
        .unwrap();
        writeln!(stdin, "PAID").unwrap();
    }
    drop(stdin);
    let rest = tokio::task::spawn_blocking(move || rx.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    seen.extend(rest);
    reader.join().unwrap();
    let status = browser.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut browser.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        status.success(),
        "the browser: {status}\n{}\n{err}",
        seen.join("\n")
    );
    let part = |tag: &str| -> Value {
        let line = seen
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{tag} ")))
            .unwrap_or_else(|| panic!("no {tag} in {seen:?}"));
        serde_json::from_str(line).unwrap()
    };
    let (before, page, after) = (part("CONSOLE"), part("CHECKOUT"), part("AFTER"));
    assert_eq!(seen.last().map(String::as_str), Some("OK"));
    // The payload read back from the page is the order's payment URI; the description is
    // shown as the text the merchant wrote.
    assert_eq!(page["uri"], uri.as_str());
    assert_eq!(page["description"], "<b>tea</b> & cake");
    assert_eq!(page["amount"], "¥12.30");
    assert_eq!(after["paid_text"], "Paid ✓");
    assert_eq!(after["pay_hidden"], true);
    // Bank 1's books grew by the payment and bank 2's shrank by it; nothing was issued.
    let yuan = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    assert!(
        (yuan(&after["books1"]) - yuan(&before["books1"]) - 12.30).abs() < 0.005,
        "{before} {after}"
    );
    assert!(
        (yuan(&before["books2"]) - yuan(&after["books2"]) - 12.30).abs() < 0.005,
        "{before} {after}"
    );
    assert_eq!(after["issued"], before["issued"]);
    devnet.stop().await.unwrap();
}
