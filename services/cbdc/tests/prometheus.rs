//! Prometheus, for real: the server Debian packages scrapes a devnet whose services run in
//! their own processes, with `deploy/prometheus/alerts.yml` loaded. The test sees the
//! counters move by at least what a load run acknowledged, evaluates every PromQL
//! expression of the Grafana dashboards in `deploy/grafana/`, sees no alert fire on a healthy
//! network, and then sees `ServiceDown` fire for the ledger it stops, and resolve when the
//! ledger runs again.
//!
//! The rules are loaded as written, except that each `for:` hold time is cut to 2 s so the
//! test does not wait minutes; `promtool test rules deploy/prometheus/alerts_test.yml`
//! checks the real hold times.
//!
//! Without a `prometheus` binary the test says so and passes, except under `CI=true`, where
//! the test command installs it and its absence is a failure.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills a child process when dropped (also on a failed assertion).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

fn wait_for<T>(what: &str, timeout_s: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` from Prometheus at `addr`: the status and the JSON body.
fn get(addr: &str, path: &str) -> Option<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// An instant query: Prometheus's answer (status `success` or an error naming why).
fn query(addr: &str, promql: &str) -> Value {
    get(
        addr,
        &format!("/api/v1/query?query={}", percent_encoded(promql)),
    )
    .map(|(_, v)| v)
    .unwrap_or(Value::Null)
}

/// The single value of an instant query, if it has exactly one series.
fn scalar(addr: &str, promql: &str) -> Option<f64> {
    let v = query(addr, promql);
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// Every PromQL expression of the dashboards, with the file and panel it is from.
fn dashboard_expressions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for file in ["central-bank.json", "ledger.json", "merchant-gateway.json"] {
        let path = repo().join("deploy/grafana").join(file);
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    file.to_string(),
                    p["title"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// What the test's traffic does not make, so whose expressions may answer no series (they
/// must still be valid PromQL).
const NOT_EXERCISED: &[&str] = &[
    // Refusals: the load run's transfers are all good ones.
    "cbdc_ledger_transfers_rejected_total",
    // Holds, mandates and refunds: the load run only takes orders.
    "capture|CaptureHold",
    "charge|ChargeMandate",
    "POST /v1/refunds|Refund",
    // Signature batches: single calls go through the priority lane one by one.
    "cbdc_ledger_verify_batch_size_bucket",
];

#[test]
fn prometheus_scrapes_a_devnet_evaluates_the_dashboards_and_fires_an_alert() {
    let Some(prometheus) = find("prometheus") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no prometheus binary: the test command installs Debian's prometheus"
        );
        eprintln!("skipped: no prometheus binary (Debian: apt-get install prometheus)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let cbdc = env!("CARGO_BIN_EXE_cbdc");
    let devnet = Command::new(cbdc)
        .args(["devnet", "--banks", "2", "--processes", "--dir"])
        .arg(&net)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the devnet starts");
    let mut devnet = Killed(devnet);
    let file: Value = wait_for("devnet.json names the processes", 90, || {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(net.join("devnet.json")).ok()?).ok()?;
        v.get("pids")?;
        Some(v)
    });
    let addr = |v: &Value| v.as_str().unwrap().to_string();
    let cb_metrics = addr(&file["central_bank_metrics"]);
    let bank_metrics: Vec<String> = file["bank_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(addr)
        .collect();
    let gateway_metrics = addr(&file["merchant_gateway_metrics"]);

    // Prometheus: the deployed rules (hold times cut), scraping every second.
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let held: usize = rules.matches("for: ").count();
    assert!(held >= 5, "the rules hold their alerts: {held}");
    let rules: String = rules
        .lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 2s"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
    let quoted = |v: &[String]| {
        v.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - alerts.yml\n\
             scrape_configs:\n\
             \x20 - job_name: central-bank\n    static_configs:\n      - targets: [\"{cb_metrics}\"]\n\
             \x20 - job_name: ledger\n    static_configs:\n      - targets: [{}]\n\
             \x20 - job_name: merchant-gateway\n    static_configs:\n      - targets: [\"{gateway_metrics}\"]\n",
            quoted(&bank_metrics)
        ),
    )
    .unwrap();
    let web = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let server = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    let _server = Killed(server);
    wait_for("prometheus is ready", 60, || {
        get(&web, "/-/ready").filter(|(s, _)| *s == 200)
    });
    wait_for("every service is scraped", 60, || {
        let v = query(&web, "up == 1");
        (v["data"]["result"].as_array()?.len() == 4).then_some(())
    });
    let value = |q: &str| scalar(&web, q).unwrap_or(0.0);
    let committed_before = value(r#"cbdc_ledger_transfers_committed_total{ledger="1"}"#);
    let received_before = value(r#"cbdc_issuance_ledger_received_yuan_total{ledger="2"}"#);

    // Traffic: payments within and across banks, then merchant orders.
    let report = dir.path().join("load.json");
    let load = Command::new(cbdc)
        .args(["load", "--devnet"])
        .arg(&net)
        .args([
            "--wallets",
            "40",
            "--transfers-per-wallet",
            "40",
            "--cross-percent",
            "30",
            "--phases",
            "closed:1x8,merchant:4",
            "--duration-s",
            "4",
            "--warmup-s",
            "0",
            "--report",
        ])
        .arg(&report)
        .output()
        .expect("cbdc load runs");
    assert!(
        load.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&load.stdout),
        String::from_utf8_lossy(&load.stderr)
    );
    let reports: Vec<Value> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            (name.starts_with("load") && name.ends_with(".json"))
                .then(|| serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok())
                .flatten()
        })
        .collect();
    let acknowledged: f64 = reports
        .iter()
        .filter_map(|r| r["checks"]["acknowledged"].as_f64())
        .sum();
    let orders: f64 = reports.iter().filter_map(|r| r["orders"].as_f64()).sum();
    let cross: f64 = reports
        .iter()
        .filter_map(|r| r["cross"]["committed_in_window"].as_f64())
        .sum();
    assert!(
        acknowledged > 0.0 && orders > 0.0 && cross > 0.0,
        "acknowledged {acknowledged}, cross-ledger {cross}, orders {orders}: {reports:?}"
    );

    // The counters moved by at least what the run saw acknowledged (funding adds more).
    wait_for("ledger 1 counts every acknowledged transfer", 30, || {
        let now = value(r#"cbdc_ledger_transfers_committed_total{ledger="1"}"#);
        (now - committed_before >= acknowledged).then_some(())
    });
    wait_for(
        "the gateway counts a delivered webhook per order",
        30,
        || {
            (value(r#"cbdc_merchant_webhook_attempts_total{outcome="delivered"}"#) >= orders)
                .then_some(())
        },
    );
    wait_for(
        "value settled into ledger 2 shows at the central bank",
        30,
        || {
            (value(r#"cbdc_issuance_ledger_received_yuan_total{ledger="2"}"#) > received_before)
                .then_some(())
        },
    );
    wait_for("the audit balances", 30, || {
        (value("cbdc_issuance_audit_balanced") == 1.0).then_some(())
    });
    assert!(value("cbdc_issuance_outstanding_yuan") > 0.0);
    let expiry = value(
        r#"min(cbdc_ledger_tls_certificate_expiry_timestamp_seconds{certificate="service"})"#,
    );
    assert!(expiry > 2_000_000_000.0, "certificate expiry {expiry}");

    // Every dashboard expression is valid PromQL, and answers data where traffic ran.
    for (file, panel, expr) in dashboard_expressions() {
        let promql = expr
            .replace("$__rate_interval", "30s")
            .replace("$ledger", ".*");
        let v = query(&web, &promql);
        assert_eq!(v["status"], "success", "{file} / {panel}: {expr}: {v}");
        let empty = v["data"]["result"].as_array().is_none_or(Vec::is_empty);
        let exempt = NOT_EXERCISED.iter().any(|m| expr.contains(m));
        assert!(
            !empty || exempt,
            "{file} / {panel}: {expr} answered no series"
        );
    }

    // A healthy network raises no alert (latency aside: this machine is shared).
    let firing = |v: &Value| -> Vec<String> {
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                format!(
                    "{} {}",
                    a["labels"]["alertname"].as_str().unwrap_or(""),
                    a["labels"]["instance"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let (_, alerts) = get(&web, "/api/v1/alerts").expect("alerts");
    let noisy: Vec<String> = firing(&alerts)
        .into_iter()
        .filter(|a| !a.starts_with("TransferLatency"))
        .collect();
    assert!(noisy.is_empty(), "a healthy network raised {noisy:?}");

    // Bank 2's ledger is stopped (SIGSTOP: the devnet would take the whole network down
    // with a service that exits): ServiceDown fires for it, and only for it.
    let bank2 = file["pids"]["banks"][1].as_u64().unwrap().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &bank2])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let down = wait_for("ServiceDown fires for the stopped ledger", 60, || {
        let (_, v) = get(&web, "/api/v1/alerts")?;
        let f = firing(&v);
        f.iter().any(|a| a.starts_with("ServiceDown")).then_some(f)
    });
    let down: Vec<&String> = down
        .iter()
        .filter(|a| a.starts_with("ServiceDown"))
        .collect();
    assert_eq!(
        down,
        vec![&format!("ServiceDown {}", bank_metrics[1])],
        "ServiceDown for the stopped ledger only"
    );
    // Running again, it is scraped again and the alert resolves.
    signal("-CONT");
    wait_for(
        "ServiceDown resolves once the ledger runs again",
        60,
        || {
            let (_, v) = get(&web, "/api/v1/alerts")?;
            (!firing(&v).iter().any(|a| a.starts_with("ServiceDown"))).then_some(())
        },
    );

    let _ = Command::new("kill")
        .args(["-TERM", &devnet.0.id().to_string()])
        .status();
    let _ = devnet.0.wait();
}
