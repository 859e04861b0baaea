//! The commands (clap): `serve`, `devnet`, `demo`, and the wallet, bank and central-bank
//! commands. Every failure is one line naming what to fix.
//!
//! [`args`] defines the command line; [`wallet`], [`bank`] and [`central_bank`] run those
//! commands; key files are read and written by `cbdc_runtime::secret`; this file dispatches
//! and holds what they share (output, parsing of addresses and amounts).

use std::path::{Path, PathBuf};

use cbdc_core::{Address, Amount, Keypair, LedgerId};
use cbdc_runtime::shutdown::Shutdown;
use serde_json::json;

use crate::devnet::{Devnet, DevnetFile, DevnetProcesses};

mod args;
mod audit;
mod bank;
mod central_bank;
mod merchant;
mod wallet;

pub use args::*;
pub use cbdc_runtime::secret::PASSPHRASE_ENV;
pub use merchant::MerchantCommand;

/// Reads a key file (see `cbdc_runtime::secret`).
/// A test command's summary, as JSON or as its lines; an error (exit 1) if its checks failed.
fn verdict(
    out: &mut Out,
    what: &str,
    summary: &impl serde::Serialize,
    lines: Vec<String>,
    pass: bool,
) -> Result<(), String> {
    if out.json {
        out.lines
            .push(serde_json::to_string(summary).map_err(|e| e.to_string())?);
    } else {
        out.lines.extend(lines.iter().cloned());
    }
    if !pass {
        return Err(format!("{what}: a check failed\n{}", lines.join("\n")));
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<Keypair, String> {
    cbdc_runtime::secret::read_seed(path).map(|s| Keypair::from_seed(&s))
}

/// The authority key file given, or the devnet's for `ledger`.
fn authority_key_file(
    given: Option<PathBuf>,
    target: &Target,
    ledger: LedgerId,
) -> Result<PathBuf, String> {
    match given {
        Some(k) => Ok(k),
        None => DevnetFile::load(&target.devnet)?
            .authority_keys
            .get((ledger.0 as usize).wrapping_sub(1))
            .cloned()
            .ok_or_else(|| format!("ledger {}: no such bank in the devnet", ledger.0)),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh request id: 128 random bits in hex.
fn fresh_request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The header of an order to `target_ledger` (0: the central bank), valid for ten minutes.
fn header(
    target: &Target,
    target_ledger: LedgerId,
    request_id: &str,
) -> Result<cbdc_proto::v1::RequestHeader, String> {
    Ok(cbdc_proto::requests::header(
        &target.network()?,
        target_ledger,
        request_id,
        now_ms() + cbdc_proto::requests::ORDER_VALID_FOR_MS,
    ))
}

/// A read grant for `address` signed by `key` (the wallet's own, or with `by_authority` the
/// bank's), valid for five minutes.
fn read_auth(
    key: &Keypair,
    target: &Target,
    address: &Address,
    by_authority: bool,
) -> Result<cbdc_proto::v1::ReadAuth, String> {
    Ok(cbdc_proto::requests::read_auth(
        key,
        &target.network()?,
        address.ledger,
        &address.to_string(),
        now_ms() + cbdc_proto::requests::READ_VALID_FOR_MS,
        by_authority,
    ))
}

fn address(text: &str) -> Result<Address, String> {
    text.parse().map_err(|e| format!("address {text:?}: {e}"))
}

fn amount(text: &str) -> Result<Amount, String> {
    Amount::parse(text).map_err(|e| format!("amount {text:?}: {e}"))
}

/// Output: a line for people, or JSON.
struct Out {
    json: bool,
    lines: Vec<String>,
}

impl Out {
    fn emit(&mut self, human: String, value: serde_json::Value) {
        self.lines
            .push(if self.json { value.to_string() } else { human });
    }
}

/// Runs a command; returns what it prints. Long-running commands (serve, devnet) print as
/// they go and return when shut down.
pub async fn run(cli: Cli) -> Result<Vec<String>, String> {
    let mut out = Out {
        json: cli.json,
        lines: Vec::new(),
    };
    match cli.command {
        Command::Serve {
            service,
            config,
            check: true,
        } => {
            check_config(service, &config)?;
            out.emit(
                format!("{}: a valid {service:?} configuration", config.display()),
                json!({"config": config, "valid": true}),
            );
        }
        Command::Serve {
            service, config, ..
        } => serve(service, &config).await?,
        Command::Devnet {
            dir,
            banks,
            processes,
        } => {
            let shutdown = Shutdown::new().on_signals();
            if processes {
                let cbdc = std::env::current_exe().map_err(|e| format!("the cbdc binary: {e}"))?;
                let mut devnet = DevnetProcesses::start(&dir, banks, &cbdc).await?;
                print_devnet(&dir, &devnet.file);
                for (name, pid, log) in devnet.processes() {
                    println!(
                        "  {name:<13} pid {}   log {}",
                        pid.unwrap_or(0),
                        log.display()
                    );
                }
                let exited = tokio::select! {
                    () = shutdown.wait() => None,
                    why = devnet.exited() => Some(why),
                };
                devnet.stop().await;
                if let Some(why) = exited {
                    return Err(why);
                }
            } else {
                let devnet = Devnet::start(&dir, banks, shutdown.clone()).await?;
                print_devnet(&dir, &devnet.file);
                shutdown.wait().await;
                devnet.stop().await?;
            }
        }
        Command::Console {
            listen,
            token_file,
            interval_ms,
            admin_cert,
            target,
        } => {
            let dial = target.central_bank_admin(&admin_cert)?;
            let network = target.network()?;
            let token = hex::encode(
                cbdc_runtime::secret::load_or_create_seed(&token_file)
                    .map_err(|e| format!("--token-file {}: {e}", token_file.display()))?
                    .as_slice(),
            );
            let listener = crate::console::bind(listen).await?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            println!(
                "console on http://{addr}/ — log in with the token in {}",
                token_file.display()
            );
            crate::console::serve(
                listener,
                crate::console::Console::new(&network, token),
                dial,
                std::time::Duration::from_millis(interval_ms.max(200)),
            )
            .await
            .map_err(|e| format!("console: {e}"))?;
        }
        Command::Health {
            endpoint,
            name,
            ca,
            service,
        } => {
            let mut dial = crate::client::Dial::new(endpoint.clone(), name);
            if let Some(ca) = &ca {
                dial = dial.with_ca(ca).map_err(|e| e.to_string())?;
            }
            let channel = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                cbdc_client::connect(&dial, "service"),
            )
            .await
            .map_err(|_| format!("{endpoint}: no connection within 5 s"))?
            .map_err(|e| e.to_string())?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let status = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                health.check(tonic_health::pb::HealthCheckRequest {
                    service: service.clone(),
                }),
            )
            .await
            .map_err(|_| format!("{endpoint}: no health answer within 5 s"))?
            .map_err(|s| crate::client::status(&s))?
            .into_inner()
            .status();
            let serving = status == tonic_health::pb::health_check_response::ServingStatus::Serving;
            let name = status.as_str_name();
            if !serving {
                return Err(format!("{endpoint}: {name}"));
            }
            out.emit(
                format!("{endpoint}: {name}"),
                serde_json::json!({"endpoint": endpoint, "status": name}),
            );
        }
        Command::Certs { dir, names } => {
            let ca = cbdc_runtime::tls::DevCa::new("cbdc network CA")?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            ca.write(&dir, &names)?;
            out.emit(
                format!(
                    "wrote {} with ca.crt and a certificate and key for {}",
                    dir.display(),
                    names.join(", ")
                ),
                serde_json::json!({"dir": dir, "names": names}),
            );
        }
        Command::Demo => {
            let json = cli.json;
            crate::demo::run(Box::new(move |line| {
                if !json {
                    println!("{line}");
                }
            }))
            .await?;
            out.emit(
                "demo: every step did what it said".into(),
                json!({"ok": true}),
            );
        }
        Command::Wallet(w) => wallet::wallet(w, &mut out).await?,
        Command::Bank(b) => bank::bank(b, &mut out).await?,
        Command::CentralBank(c) => central_bank::central_bank(c, &mut out).await?,
        Command::Audit(a) => audit::audit(a, &mut out).await?,
        Command::Merchant(m) => merchant::merchant(m, &mut out).await?,
        Command::Chaos(args) => {
            let cbdc = std::env::current_exe().map_err(|e| format!("the cbdc binary: {e}"))?;
            let summary = crate::chaos::run(args, cbdc).await?;
            verdict(&mut out, "chaos", &summary, summary.lines(), summary.pass)?;
        }
        Command::Overload(args) => {
            let cbdc = std::env::current_exe().map_err(|e| format!("the cbdc binary: {e}"))?;
            let summary = crate::overload::run(args, cbdc).await?;
            verdict(
                &mut out,
                "overload",
                &summary,
                summary.lines(),
                summary.pass,
            )?;
        }
        Command::Load(args) => {
            let cbdc = std::env::current_exe().map_err(|e| format!("the cbdc binary: {e}"))?;
            let path = args.report.clone();
            let cbdc_load::Outcome {
                reports,
                scaling,
                merchant,
            } = cbdc_load::run(args, cbdc).await?;
            if out.json {
                let value = match &scaling {
                    Some(s) => serde_json::to_string(s),
                    None if reports.len() == 1 => serde_json::to_string(&reports[0]),
                    None => serde_json::to_string(&reports),
                };
                out.lines.push(value.map_err(|e| e.to_string())?);
            } else {
                for r in &reports {
                    if reports.len() > 1 {
                        out.lines
                            .push(format!("— {} wallets, {}", r.wallets, r.mode));
                    }
                    out.lines.extend(r.summary());
                }
                if let Some(s) = &scaling {
                    out.lines.extend(s.summary());
                }
                for m in &merchant {
                    out.lines.extend(m.summary());
                }
            }
            if let Some(r) = reports.iter().find(|r| !r.checks_pass()) {
                return Err(format!(
                    "the checks failed ({} wallets): {:?} (report in {})",
                    r.wallets,
                    r.checks,
                    path.display()
                ));
            }
            if let Some(m) = merchant.iter().find(|m| !m.checks_pass()) {
                return Err(format!("the merchant checks failed: {:?}", m.checks));
            }
            if !out.json {
                out.lines
                    .push(format!("report written to {}", path.display()));
            }
        }
    }
    Ok(out.lines)
}

/// What a started devnet prints: where each service listens and the files a user needs.
fn print_devnet(dir: &Path, f: &DevnetFile) {
    println!(
        "devnet in {} (Ctrl-C stops it; run again on the same --dir to resume)",
        dir.display()
    );
    println!("  network       {}", f.network);
    let metrics = |m: Option<&std::net::SocketAddr>| {
        m.map_or_else(String::new, |m| format!("   metrics http://{m}/metrics"))
    };
    println!(
        "  central bank  https://{}{}",
        f.central_bank,
        metrics(f.central_bank_metrics.as_ref())
    );
    for (i, b) in f.banks.iter().enumerate() {
        println!(
            "  bank {}        https://{b}{}",
            i + 1,
            metrics(f.bank_metrics.get(i))
        );
    }
    if let Some(m) = f.merchant_gateway {
        println!(
            "  merchants     http://{m}/v1/ (OpenAPI: /v1/openapi.json){}",
            metrics(f.merchant_gateway_metrics.as_ref())
        );
    }
    if let Some(m) = f.merchant_gateway_grpc {
        println!("  merchants     gRPC http://{m} (cbdc.v1.MerchantGateway)");
    }
    println!("  admin key     {}", f.admin_key.display());
    println!("  TLS CA        {}", f.ca_cert.display());
}

/// Loads `config` for `service` as `serve` would, and checks what can be checked without
/// starting: the keys it names parse, its endpoints are URLs.
fn check_config(service: Service, config: &Path) -> Result<(), String> {
    let key = |field: &str, hex: &str| cbdc_issuance::parse_public_key(field, hex).map(|_| ());
    match service {
        Service::Ledger => {
            let c: cbdc_ledger::config::LedgerConfig =
                cbdc_runtime::config::load(Some(config), cbdc_ledger::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            key("authority_public_key", &c.authority_public_key)?;
            if let Some(k) = &c.central_bank_public_key {
                key("central_bank_public_key", k)?;
            }
            if let Some(e) = &c.central_bank_endpoint
                && !(e.starts_with("https://") || e.starts_with("http://"))
            {
                return Err(format!(
                    "central_bank_endpoint {e}: expected https://host:port"
                ));
            }
        }
        Service::Merchant => {
            let c: cbdc_merchant::config::MerchantConfig =
                cbdc_runtime::config::load(Some(config), cbdc_merchant::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            c.bank_keys()?;
            c.ledger_endpoints()?;
        }
        Service::Issuance => {
            let c: cbdc_issuance::config::IssuanceConfig =
                cbdc_runtime::config::load(Some(config), cbdc_issuance::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            key("admin_public_key", &c.admin_public_key)?;
        }
    }
    Ok(())
}

async fn serve(service: Service, config: &Path) -> Result<(), String> {
    let shutdown = Shutdown::new().on_signals();
    match service {
        Service::Ledger => {
            let c: cbdc_ledger::config::LedgerConfig =
                cbdc_runtime::config::load(Some(config), cbdc_ledger::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            cbdc_runtime::telemetry::init(c.log_json);
            let running = cbdc_ledger::serve(c, shutdown)
                .await
                .map_err(|e| e.to_string())?;
            running.wait().await.map_err(|e| e.to_string())
        }
        Service::Merchant => {
            let c: cbdc_merchant::config::MerchantConfig =
                cbdc_runtime::config::load(Some(config), cbdc_merchant::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            cbdc_runtime::telemetry::init(c.log_json);
            let running = cbdc_merchant::serve_config(&c, shutdown).await?;
            running.wait().await;
            Ok(())
        }
        Service::Issuance => {
            let c: cbdc_issuance::config::IssuanceConfig =
                cbdc_runtime::config::load(Some(config), cbdc_issuance::config::ENV_PREFIX)
                    .map_err(|e| e.to_string())?;
            cbdc_runtime::telemetry::init(c.log_json);
            let running = cbdc_issuance::serve(c, shutdown)
                .await
                .map_err(|e| e.to_string())?;
            running.wait().await.map_err(|e| e.to_string())
        }
    }
}
