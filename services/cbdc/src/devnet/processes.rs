//! A devnet whose services each run in a process of their own: `cbdc serve issuance` and one
//! `cbdc serve ledger` per bank, each from a configuration file written into the devnet's
//! directory (`central-bank.toml`, `bank-N.toml`) and logging to a file beside it. What a
//! deployment runs, on one machine: a service's CPU and memory can be read from `/proc`
//! apart from everything else, and one service can be stopped or killed on its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{DevnetFile, DevnetPids, Plan, register_all};

/// How long a service may take to listen after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One service's process, and how to start it again.
struct Service {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
    service: String,
    config: PathBuf,
    listen: SocketAddr,
}

/// Where the services listen when something the caller runs (a fault-injecting proxy) sits
/// between them: each bank listens on `listen`, is known to everyone else (clients, the
/// central bank, the gateway) as `public`, and reaches the central bank through
/// `central_bank_via`; the central bank listens on `central_bank`.
#[derive(Clone, Debug)]
pub struct Routes {
    pub central_bank: SocketAddr,
    pub banks: Vec<BankRoute>,
}

#[derive(Clone, Copy, Debug)]
pub struct BankRoute {
    pub public: SocketAddr,
    pub listen: SocketAddr,
    pub central_bank_via: SocketAddr,
}

/// A running devnet of separate processes.
pub struct DevnetProcesses {
    pub file: DevnetFile,
    services: Vec<Service>,
}

/// A free loopback address: bound and released, so the service can bind it next.
/// A port free now, for a service that binds it later. Chosen below Linux's ephemeral range
/// (32768 and up): a port the kernel handed out for `bind(0)` and released could be handed
/// to another socket (an outgoing connection's, another server's) before the service binds
/// it, and with many tests at once that happens.
fn free_address() -> Result<SocketAddr, String> {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    for _ in 0..256 {
        let port = LOW + rand::random::<u16>() % (HIGH - LOW);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l
                .local_addr()
                .map_err(|e| format!("finding a free port: {e}"));
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Gives a port to an address left at port 0, so it can be written to the configuration and
/// known before the service runs.
fn fixed(address: &mut SocketAddr) -> Result<(), String> {
    if address.port() == 0 {
        *address = free_address()?;
    }
    Ok(())
}

fn write_config<T: serde::Serialize>(path: &Path, config: &T, what: &str) -> Result<(), String> {
    let text = toml::to_string(config).map_err(|e| format!("{what}'s configuration: {e}"))?;
    let header =
        format!("# {what}, written by `cbdc devnet --processes`; served by `cbdc serve`.\n\n");
    std::fs::write(path, header + &text).map_err(|e| format!("{}: {e}", path.display()))
}

impl DevnetProcesses {
    /// Starts (or resumes) the devnet in `dir` with `banks` ledgers, each service a child
    /// process of `cbdc` (this binary) that gets SIGTERM if this process dies.
    pub async fn start(dir: &Path, banks: u32, cbdc: &Path) -> Result<DevnetProcesses, String> {
        DevnetProcesses::start_routed(dir, banks, cbdc, None).await
    }

    /// [`DevnetProcesses::start`], the services listening and dialling as `routes` say.
    pub async fn start_routed(
        dir: &Path,
        banks: u32,
        cbdc: &Path,
        routes: Option<&Routes>,
    ) -> Result<DevnetProcesses, String> {
        if let Some(r) = routes
            && r.banks.len() != banks as usize
        {
            return Err(format!("{} bank routes for {banks} banks", r.banks.len()));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Children run from this directory too, but absolute paths read better in their files.
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut plan = Plan::make(&dir, banks)?;
        if let Some(r) = routes {
            plan.central_bank.listen = r.central_bank;
        }
        fixed(&mut plan.central_bank.listen)?;
        fixed(&mut plan.central_bank.metrics_listen)?;
        let central_bank_url = format!("https://{}", plan.central_bank.listen);
        fixed(&mut plan.merchant.listen)?;
        fixed(&mut plan.merchant.grpc_listen)?;
        fixed(&mut plan.merchant.metrics_listen)?;
        // What everyone else dials for each bank.
        let mut public = Vec::new();
        for (i, c) in plan.banks.iter_mut().enumerate() {
            let route = routes.map(|r| r.banks[i]);
            if let Some(route) = route {
                c.listen = route.listen;
            }
            fixed(&mut c.listen)?;
            fixed(&mut c.metrics_listen)?;
            c.central_bank_endpoint = Some(match route {
                Some(r) => format!("https://{}", r.central_bank_via),
                None => central_bank_url.clone(),
            });
            let known_as = route.map_or(c.listen, |r| r.public);
            plan.merchant
                .ledgers
                .insert(c.ledger_id.to_string(), format!("https://{known_as}"));
            public.push(known_as);
        }
        let central = (plan.central_bank.listen, plan.central_bank.metrics_listen);
        let addresses: Vec<_> = plan
            .banks
            .iter()
            .zip(&public)
            .map(|(c, known_as)| (*known_as, c.metrics_listen))
            .collect();
        let mut devnet = DevnetProcesses {
            file: plan.write_file(
                central,
                &addresses,
                (
                    plan.merchant.listen,
                    plan.merchant.grpc_listen,
                    plan.merchant.metrics_listen,
                ),
                None,
            )?,
            services: Vec::new(),
        };
        let started = async {
            let path = dir.join("central-bank.toml");
            write_config(&path, &plan.central_bank, "the central bank")?;
            devnet
                .spawn(
                    cbdc,
                    "central bank",
                    "issuance",
                    &path,
                    plan.central_bank.listen,
                )
                .await?;
            for c in &plan.banks {
                let id = c.ledger_id;
                let path = dir.join(format!("bank-{id}.toml"));
                write_config(&path, c, &format!("bank {id}"))?;
                devnet
                    .spawn(cbdc, &format!("bank {id}"), "ledger", &path, c.listen)
                    .await?;
            }
            let path = dir.join("merchant.toml");
            write_config(&path, &plan.merchant, "the merchant gateway")?;
            devnet
                .spawn(cbdc, "merchant", "merchant", &path, plan.merchant.listen)
                .await?;
            Ok::<_, String>(())
        }
        .await;
        if let Err(e) = started {
            devnet.stop().await;
            return Err(e);
        }
        let pids: Vec<u32> = devnet
            .services
            .iter()
            .map(|s| s.child.id().unwrap_or(0))
            .collect();
        let banks = plan.banks.len();
        let pids = DevnetPids {
            central_bank: pids[0],
            banks: pids[1..=banks].to_vec(),
            merchant: pids.get(banks + 1).copied(),
        };
        devnet.file = plan.write_file(
            central,
            &addresses,
            (
                plan.merchant.listen,
                plan.merchant.grpc_listen,
                plan.merchant.metrics_listen,
            ),
            Some(pids),
        )?;
        if let Err(e) = register_all(&devnet.file, &plan.admin, &plan.operators).await {
            devnet.stop().await;
            return Err(e);
        }
        Ok(devnet)
    }

    /// Starts `cbdc serve <service> --config <config>` and waits until it listens on `listen`.
    async fn spawn(
        &mut self,
        cbdc: &Path,
        name: &str,
        service: &str,
        config: &Path,
        listen: SocketAddr,
    ) -> Result<(), String> {
        let log = config.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = tokio::process::Command::new(cbdc);
        command
            .arg("serve")
            .arg(service)
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM to the
        // child when this process dies, so no service outlives the devnet that started it.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {name} ({}): {e}", cbdc.display()))?;
        self.services.push(Service {
            name: name.to_string(),
            child,
            log: log.clone(),
            service: service.to_string(),
            config: config.to_path_buf(),
            listen,
        });
        self.wait_listening(self.services.len() - 1).await
    }

    /// Waits until service `i` listens (or says why it will not).
    async fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let (name, listen, log) = {
            let s = &self.services[i];
            (s.name.clone(), s.listen, s.log.clone())
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.services[i].child.try_wait() {
                return Err(format!(
                    "{name} exited at start ({status}); its log is {}:\n{}",
                    log.display(),
                    tail(&log)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not listen on {listen} within {} s; its log is {}",
                    START_TIMEOUT.as_secs(),
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The services' names and process ids, central bank first.
    pub fn processes(&self) -> Vec<(String, Option<u32>, PathBuf)> {
        self.services
            .iter()
            .map(|s| (s.name.clone(), s.child.id(), s.log.clone()))
            .collect()
    }

    /// Kills service `i` with SIGKILL (no chance to flush or close anything) and reaps it.
    pub async fn kill(&mut self, i: usize) {
        let s = &mut self.services[i];
        let _ = s.child.kill().await;
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to service `i`, if it runs.
    pub fn signal(&self, i: usize, signal: i32) {
        if let Some(pid) = self.services[i].child.id() {
            // SAFETY: a signal to our own child process.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Starts service `i` again on its configuration and data (after [`Self::kill`]) and
    /// waits until it listens.
    pub async fn restart(&mut self, i: usize, cbdc: &Path) -> Result<(), String> {
        let old = self.services.remove(i);
        let (name, service, config, listen) = (old.name, old.service, old.config, old.listen);
        let before = self.services.len();
        let started = self.spawn(cbdc, &name, &service, &config, listen).await;
        if self.services.len() > before {
            let again = self.services.pop().expect("just pushed");
            self.services.insert(i, again);
        }
        started
    }

    /// The services that are not running (exited, and how).
    pub fn not_running(&mut self) -> Vec<String> {
        self.services
            .iter_mut()
            .filter_map(|s| match s.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status})", s.name)),
                _ => None,
            })
            .collect()
    }

    /// Waits until one of the services exits (it should not: it is said which, and how).
    pub async fn exited(&mut self) -> String {
        loop {
            for s in &mut self.services {
                if let Ok(Some(status)) = s.child.try_wait() {
                    return format!(
                        "{} exited ({status}); its log is {}",
                        s.name,
                        s.log.display()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the banks, then the central bank: SIGTERM (a graceful stop that drains calls
    /// and closes the store), killed if one does not stop in time.
    pub async fn stop(mut self) {
        while let Some(mut s) = self.services.pop() {
            if let Some(pid) = s.child.id() {
                // SAFETY: a signal to our own child process.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(STOP_TIMEOUT, s.child.wait())
                .await
                .is_err()
            {
                let _ = s.child.kill().await;
            }
        }
    }
}

/// The last lines of a log, to say why a service did not start.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
