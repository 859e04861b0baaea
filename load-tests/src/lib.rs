//! `cbdc load`: stress a real network and report like a load tester expects.
//!
//! - [`target`]: the network under load — a devnet this tool starts as a separate process
//!   (`cbdc devnet`), so the servers' CPU and memory are read from `/proc` apart from the
//!   generator's, or a running devnet named by its directory.
//! - [`setup`]: wallets opened and funded through the real APIs (an administrator's mint,
//!   anonymous wallets opened with their proofs, the bank's exchanges), then chains of
//!   presigned transfers built before the timed window (signing time reported apart).
//! - [`drive`]: closed loop at a concurrency or open loop at a target rate (latency measured
//!   from the intended send time, so queueing is not hidden), batches or single calls, a
//!   warm-up left out of the figures, a progress line with the rate, p99 and errors.
//! - [`report`]: transfers/s, latency percentiles (HdrHistogram), errors by reason, server CPU
//!   per transfer and RSS, the per-second timeline, and the checks: every acknowledged
//!   transfer found committed with its position, and the central bank's audit balanced.

pub mod drive;
pub mod plot;
pub mod report;
pub mod setup;
pub mod target;

use std::path::PathBuf;
use std::time::Duration;

/// What to run (the `cbdc load` arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// A running devnet's directory; without it, a devnet of `--banks` banks is started in a
    /// temporary directory as a separate process and stopped at the end.
    #[arg(long)]
    pub devnet: Option<PathBuf>,
    /// Banks of the devnet started for the run.
    #[arg(long, default_value_t = 2)]
    pub banks: u32,
    /// Wallets opened and funded on bank 1 (payers and payees).
    #[arg(long, default_value_t = 1000)]
    pub wallets: usize,
    /// Presigned transfers per wallet (each spends the change of the one before).
    #[arg(long, default_value_t = 20)]
    pub transfers_per_wallet: usize,
    /// Percentage of payments to a wallet on bank 2 (cross-ledger).
    #[arg(long, default_value_t = 0)]
    pub cross_percent: u32,
    /// Transfers per `SubmitTransfers` call; 1 sends single `SubmitTransfer` calls.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Calls in flight at once (closed loop).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Open loop: transfers per second offered at a constant rate (0: closed loop).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds of load, warm-up included.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Seconds at the start left out of the figures.
    #[arg(long, default_value_t = 3)]
    pub warmup_s: u64,
    /// Where the JSON report is written.
    #[arg(long, default_value = "load-report.json")]
    pub report: PathBuf,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_s)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_s.min(self.duration_s))
    }

    fn check(&self) -> Result<(), String> {
        if self.wallets < 2 {
            return Err("--wallets: at least 2 (payers pay each other)".into());
        }
        if self.batch == 0 || self.batch > 1024 {
            return Err("--batch: between 1 and 1024".into());
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return Err("--concurrency: between 1 and 4096".into());
        }
        if self.transfers_per_wallet == 0 {
            return Err("--transfers-per-wallet: at least 1".into());
        }
        if self.cross_percent > 100 {
            return Err("--cross-percent: at most 100".into());
        }
        if self.cross_percent > 0 && self.banks < 2 && self.devnet.is_none() {
            return Err("--cross-percent needs --banks 2 or more".into());
        }
        if self.duration_s == 0 {
            return Err("--duration-s: at least 1".into());
        }
        Ok(())
    }
}

/// Runs the load described by `args`; `cbdc` is the path of the `cbdc` binary (to start a
/// devnet). Returns the report, also written to `args.report`.
pub async fn run(args: LoadArgs, cbdc: PathBuf) -> Result<report::Report, String> {
    args.check()?;
    let network = match &args.devnet {
        Some(dir) => target::Network::attach(dir).await?,
        None => target::Network::start(&cbdc, args.banks).await?,
    };
    let result = async {
        let prepared = setup::prepare(&network, &args).await?;
        let run = drive::drive(&network, &args, &prepared).await?;
        report::finish(&network, &args, &prepared, run).await
    }
    .await;
    network.stop().await;
    let report = result?;
    std::fs::write(
        &args.report,
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", args.report.display()))?;
    let picture = args.report.with_extension("svg");
    std::fs::write(&picture, plot::svg(&report)?)
        .map_err(|e| format!("{}: {e}", picture.display()))?;
    Ok(report)
}
