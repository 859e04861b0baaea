//! The network under load: a devnet started for the run with every service in a process of
//! its own (`cbdc devnet --processes`: each service's CPU and memory read from `/proc`), or a
//! running one named by its directory (measured the same way when its services run as
//! separate processes on this machine).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cbdc_client::Dial;
use cbdc_core::{Keypair, LedgerId};
use cbdc_proto::v1;
use serde::Deserialize;

/// What a devnet directory says about itself (`devnet.json`): the fields a load needs.
#[derive(Clone, Debug, Deserialize)]
pub struct DevnetFile {
    pub network: String,
    pub central_bank: std::net::SocketAddr,
    pub banks: Vec<std::net::SocketAddr>,
    pub admin_key: PathBuf,
    pub authority_keys: Vec<PathBuf>,
    pub ca_cert: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_cert_key: PathBuf,
    #[serde(default)]
    pub central_bank_metrics: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub bank_metrics: Vec<std::net::SocketAddr>,
    /// The merchant gateway's HTTP/JSON address.
    #[serde(default)]
    pub merchant_gateway: Option<std::net::SocketAddr>,
    /// The services' process ids, when each runs in a process of its own.
    #[serde(default)]
    pub pids: Option<Pids>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Pids {
    pub central_bank: u32,
    pub banks: Vec<u32>,
    #[serde(default)]
    pub merchant: Option<u32>,
}

/// The network: its description, and the devnet process when this run started it.
pub struct Network {
    pub file: DevnetFile,
    pub admin: Keypair,
    pub authorities: Vec<Keypair>,
    /// The devnet (the parent of its services' processes), if this run started it.
    pub devnet: Option<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

fn key(path: &Path) -> Result<Keypair, String> {
    cbdc_runtime::secret::read_seed(path).map(|s| Keypair::from_seed(&s))
}

impl Network {
    /// A running devnet in `dir`.
    pub async fn attach(dir: &Path) -> Result<Network, String> {
        let path = dir.join("devnet.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (is a devnet running there?)", path.display()))?;
        let file: DevnetFile =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Network::from_file(file, None, None)
    }

    /// Starts `cbdc devnet --processes` with `banks` banks in a temporary directory (each
    /// service a process of its own) and waits until every bank is registered.
    pub async fn start(cbdc: &Path, banks: u32) -> Result<Network, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log_path = dir.path().join("devnet.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(cbdc)
            .arg("devnet")
            .arg("--dir")
            .arg(dir.path())
            .arg("--banks")
            .arg(banks.to_string())
            .arg("--processes")
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {} devnet: {e}", cbdc.display()))?;
        let path = dir.path().join("devnet.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        let file = loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(file) = serde_json::from_str::<DevnetFile>(&text)
                && file.pids.is_some()
            {
                break file;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the devnet exited at start ({status}): {}",
                    std::fs::read_to_string(&log_path)
                        .unwrap_or_default()
                        .trim()
                ));
            }
            if Instant::now() > deadline {
                return Err("the devnet did not start within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let network = Network::from_file(file, Some(child), Some(dir))?;
        // devnet.json is written before the banks are registered: wait for the registry.
        let mut cb = network.central_bank().await?;
        loop {
            let ops = cb
                .list_operators(v1::ListOperatorsRequest { page: None })
                .await
                .map(|r| r.into_inner().operators.len())
                .unwrap_or(0);
            if ops == banks as usize {
                break;
            }
            if Instant::now() > deadline {
                return Err("the devnet's banks were not registered within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(network)
    }

    fn from_file(
        file: DevnetFile,
        devnet: Option<tokio::process::Child>,
        dir: Option<tempfile::TempDir>,
    ) -> Result<Network, String> {
        let admin = key(&file.admin_key)?;
        let authorities = file
            .authority_keys
            .iter()
            .map(|p| key(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Network {
            file,
            admin,
            authorities,
            devnet,
            _dir: dir,
        })
    }

    /// The services' processes, named, when each runs in a process of its own on this
    /// machine: the banks in ledger order, the central bank, the merchant gateway, then this
    /// load generator itself.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let Some(pids) = &self.file.pids else {
            return Vec::new();
        };
        let mut named: Vec<(String, u32)> = pids
            .banks
            .iter()
            .enumerate()
            .map(|(i, &pid)| (format!("bank {}", i + 1), pid))
            .collect();
        named.push(("central bank".to_string(), pids.central_bank));
        if let Some(m) = pids.merchant {
            named.push(("merchant gateway".to_string(), m));
        }
        // A devnet.json left by a devnet that is gone names processes that are not ours.
        named.retain(|&(_, pid)| process_usage(pid).is_some());
        // The generator shares the machine with them: its own cost is the rest of the bill.
        if !named.is_empty() {
            named.push(("load generator".to_string(), std::process::id()));
        }
        named
    }

    /// The value of a counter on bank `ledger`'s metrics endpoint (summed over its labels).
    pub async fn bank_metric(&self, ledger: LedgerId, name: &str) -> Option<f64> {
        let addr = self
            .file
            .bank_metrics
            .get((ledger.0 as usize).wrapping_sub(1))?;
        metric(&scrape(*addr).await.ok()?, name)
    }

    pub fn bank_dial(&self, ledger: LedgerId) -> Result<Dial, String> {
        let addr = self
            .file
            .banks
            .get((ledger.0 as usize).wrapping_sub(1))
            .ok_or_else(|| format!("ledger {}: the devnet has no such bank", ledger.0))?;
        Dial::new(
            format!("https://{addr}"),
            cbdc_runtime::tls::bank_name(ledger.0),
        )
        .with_ca(&self.file.ca_cert)
        .map_err(|e| e.to_string())
    }

    /// A ledger client of bank `ledger` on a connection of its own.
    pub async fn bank(&self, ledger: LedgerId) -> Result<cbdc_client::Ledger, String> {
        cbdc_client::Ledger::connect(&self.bank_dial(ledger)?, ledger, &self.file.network)
            .await
            .map_err(|e| e.to_string())
    }

    /// The central bank, presenting the administrator's certificate.
    pub async fn central_bank(
        &self,
    ) -> Result<v1::issuance_service_client::IssuanceServiceClient<tonic::transport::Channel>, String>
    {
        let dial = Dial::new(
            format!("https://{}", self.file.central_bank),
            cbdc_runtime::tls::CENTRAL_BANK_NAME,
        )
        .with_ca(&self.file.ca_cert)
        .and_then(|d| d.with_identity(&self.file.admin_cert, &self.file.admin_cert_key))
        .map_err(|e| e.to_string())?;
        let channel = cbdc_client::connect(&dial, "central bank")
            .await
            .map_err(|e| e.to_string())?;
        Ok(v1::issuance_service_client::IssuanceServiceClient::new(
            channel,
        ))
    }

    /// Stops the devnet this run started (SIGTERM, then waits; killed if it does not stop).
    pub async fn stop(mut self) {
        if let Some(child) = self.devnet.as_mut() {
            if let Some(pid) = child.id() {
                // SAFETY: sending a signal to our own child process.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// CPU seconds (user + system) and resident memory of process `pid`, from `/proc`.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(((utime + stime) as f64 / ticks, rss_kb * 1024))
}

/// A Prometheus text page, fetched over plain HTTP/1.0 (at most 4 MiB, within 5 s).
pub async fn scrape(addr: std::net::SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        stream.take(4 << 20).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| format!("{addr}: no answer within 5 s"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    let (_, page) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    Ok(page.to_string())
}

/// The sum of every sample of metric `name` in a Prometheus text page (`None` if it has none).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some('{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(' ') => Some(rest),
            _ => None,
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_is_summed_over_its_labels_and_not_confused_with_a_longer_name() {
        let page = "# HELP x_total X\nx_total{ledger=\"1\"} 3\nx_total{ledger=\"2\"} 4.5\nx_total_other 100\ny 1\n";
        assert_eq!(super::metric(page, "x_total"), Some(7.5));
        assert_eq!(super::metric(page, "y"), Some(1.0));
        assert_eq!(super::metric(page, "z"), None);
    }
}
