//! `cbdc load`: stress a real network and report like a load tester expects.
//!
//! - [`target`]: the network under load — a devnet this tool starts with every service in a
//!   process of its own (`cbdc devnet --processes`), so each server's CPU and memory are read
//!   from `/proc` apart from the generator's, or a running devnet named by its directory.
//! - [`setup`]: wallets opened and funded through the real APIs (an administrator's mint,
//!   anonymous wallets opened with their proofs, exchanges into distributor wallets that fan
//!   out to the rest), then chains of transfers to uniform or Zipf-distributed payees, signed
//!   before the timed window (signing time reported apart) or as they are sent.
//! - [`drive`]: closed loop at a concurrency or open loop at a target rate (latency measured
//!   from the intended send time, so queueing is not hidden), batches or single calls, a
//!   warm-up left out of the figures, a progress line with the rate, p99 and errors.
//! - [`report`]: transfers/s, latency percentiles (HdrHistogram), errors by reason, CPU per
//!   transfer and RSS of each server process, fsyncs per second, cross-ledger delivery, the
//!   per-second timeline, and the checks: every acknowledged transfer found committed with
//!   its position, and the central bank's audit balanced.
//! - [`plot`]: the report as SVG; a scaling run (`--wallets 1e3,1e4,...`) adds transfers/s
//!   and server RSS against the number of wallets.

pub mod drive;
pub mod merchant;
pub mod plot;
pub mod report;
pub mod setup;
pub mod target;

use std::path::PathBuf;
use std::time::Duration;

/// How payees are chosen.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payees {
    /// Any other wallet, equally likely.
    Uniform,
    /// By a Zipf law: wallet 0 (a hot merchant) gets the most, then wallet 1, and so on.
    Zipf,
}

/// When transfers are signed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    /// All before the timed window (signing time reported apart).
    Presigned,
    /// Each as it is sent, by the generator, inside the measured latency.
    Live,
}

/// One load shape of a run: closed loop at a concurrency, or open loop at a rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Closed {
        batch: usize,
        concurrency: usize,
    },
    Open {
        batch: usize,
        rate: Rate,
    },
    /// Merchant orders end to end through the gateway, `concurrency` shoppers at once.
    Merchant {
        concurrency: usize,
    },
}

/// An open loop's offered rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    PerSecond(u64),
    /// A percentage of what the closed-loop phase before it committed per second (its
    /// peak).
    OfPeak(f64),
}

/// A phase: `closed:BATCHxCONCURRENCY` or `open:BATCH@RATE`, the rate in transfers/s or as a
/// percentage of the closed-loop phase before it (`open:64@50%`: half its peak).
fn phase(s: &str) -> Result<Phase, String> {
    let bad = || {
        format!(
            "{s}: a phase is closed:BATCHxCONCURRENCY, open:BATCH@RATE[%] or merchant:CONCURRENCY"
        )
    };
    let number = |t: &str| t.trim().parse::<usize>().map_err(|_| bad());
    match s.trim().split_once(':') {
        Some(("closed", rest)) => {
            let (b, c) = rest.split_once('x').ok_or_else(bad)?;
            Ok(Phase::Closed {
                batch: number(b)?,
                concurrency: number(c)?,
            })
        }
        Some(("merchant", c)) => Ok(Phase::Merchant {
            concurrency: number(c)?,
        }),
        Some(("open", rest)) => {
            let (b, r) = rest.split_once('@').ok_or_else(bad)?;
            let rate = match r.trim().strip_suffix('%') {
                Some(p) => Rate::OfPeak(p.trim().parse::<f64>().map_err(|_| bad())?),
                None => Rate::PerSecond(number(r)? as u64),
            };
            Ok(Phase::Open {
                batch: number(b)?,
                rate,
            })
        }
        _ => Err(bad()),
    }
}

/// A number of wallets: digits, or a power of ten written `1e6`.
fn wallet_count(s: &str) -> Result<usize, String> {
    let n = match s.split_once(['e', 'E']) {
        Some((m, e)) => {
            let m: usize = m.parse().map_err(|_| format!("{s}: not a number"))?;
            let e: u32 = e.parse().map_err(|_| format!("{s}: not a number"))?;
            10usize
                .checked_pow(e)
                .and_then(|p| p.checked_mul(m))
                .ok_or_else(|| format!("{s}: too large"))?
        }
        None => s.parse().map_err(|_| format!("{s}: not a number"))?,
    };
    if !(2..=WALLETS_MAX).contains(&n) {
        return Err(format!("{s}: between 2 and {WALLETS_MAX} wallets"));
    }
    Ok(n)
}

/// Transfers one wallet can pay (0.01 each out of 100.00, the day's anonymous cap aside).
pub const CHAIN_MAX: usize = 9_000;

/// Wallets one run opens, at most.
pub const WALLETS_MAX: usize = 10_000_000;

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
    /// Wallets opened and funded on bank 1 (`1e6` for a million); several, comma-separated,
    /// make a scaling run: one run per count, each on a devnet of its own, and a report of
    /// transfers/s and server RSS against the number of wallets.
    #[arg(long, value_delimiter = ',', value_parser = wallet_count, default_value = "1000")]
    pub wallets: Vec<usize>,
    /// Wallets that pay, spread evenly over all of them (0: every wallet).
    #[arg(long, default_value_t = 0)]
    pub payers: usize,
    /// Transfers per paying wallet (each spends the change of the one before).
    #[arg(long, default_value_t = 20)]
    pub transfers_per_wallet: usize,
    /// Transfers in all, shared out over the payers (overrides `--transfers-per-wallet`), so
    /// every count of a scaling run sends the same number.
    #[arg(long, default_value_t = 0)]
    pub transfers: usize,
    /// How payees are chosen among bank 1's wallets.
    #[arg(long, value_enum, default_value_t = Payees::Uniform)]
    pub payees: Payees,
    /// The Zipf law's exponent (with `--payees zipf`).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// When transfers are signed.
    #[arg(long, value_enum, default_value_t = Signing::Presigned)]
    pub sign: Signing,
    /// Percentage of payments to a wallet on bank 2 (cross-ledger).
    #[arg(long, default_value_t = 0)]
    pub cross_percent: u32,
    /// Of bank 2's payees, this many are never opened: payments to them are refused there
    /// and reversed to their payers (the refused path of cross-ledger payments).
    #[arg(long, default_value_t = 0)]
    pub unopened_payees: usize,
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
    /// Several load shapes run one after the other on the same wallets (one set-up), e.g.
    /// `closed:256x8,open:256@50%,closed:1x256,open:1@50%` (an open loop at a percentage
    /// of the closed loop before it); each gets a report (`<report>-p<N>.json`). Overrides
    /// `--batch`, `--concurrency` and `--rate`.
    #[arg(long, value_delimiter = ',', value_parser = phase)]
    pub phases: Vec<Phase>,
    /// Where the JSON report is written (the SVG goes beside it; a scaling run writes one
    /// report per count, `<name>-<wallets>.json`, and the scaling report at this path).
    #[arg(long, default_value = "load-report.json")]
    pub report: PathBuf,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Transfers per paying wallet when there are `payers`.
    pub fn chain_length(&self, payers: usize) -> usize {
        if self.transfers == 0 {
            self.transfers_per_wallet
        } else {
            self.transfers.div_ceil(payers.max(1))
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_s)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_s.min(self.duration_s))
    }

    /// The phases of a run: `--phases`, or the one that `--batch`, `--concurrency` and
    /// `--rate` describe.
    pub fn phase_list(&self) -> Vec<Phase> {
        if !self.phases.is_empty() {
            return self.phases.clone();
        }
        vec![if self.rate == 0 {
            Phase::Closed {
                batch: self.batch,
                concurrency: self.concurrency,
            }
        } else {
            Phase::Open {
                batch: self.batch,
                rate: Rate::PerSecond(self.rate),
            }
        }]
    }

    /// These arguments with one phase's shape, a rate in % resolved against `peak`, the
    /// rate of the last closed-loop phase before it.
    fn for_phase(&self, phase: Phase, peak: Option<f64>) -> Result<LoadArgs, String> {
        let mut a = self.clone();
        match phase {
            Phase::Closed { batch, concurrency } => {
                (a.batch, a.concurrency, a.rate) = (batch, concurrency, 0);
            }
            Phase::Merchant { concurrency } => {
                (a.batch, a.concurrency, a.rate) = (1, concurrency, 0);
            }
            Phase::Open { batch, rate } => {
                a.batch = batch;
                a.rate = match rate {
                    Rate::PerSecond(r) => r,
                    Rate::OfPeak(p) => {
                        let peak = peak
                            .ok_or("--phases: a rate in % needs a closed-loop phase before it")?;
                        ((peak * p / 100.0).round() as u64).max(1)
                    }
                };
            }
        }
        a.check_shape()?;
        Ok(a)
    }

    fn check_shape(&self) -> Result<(), String> {
        if self.batch == 0 || self.batch > 1024 {
            return Err("--batch: between 1 and 1024".into());
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return Err("--concurrency: between 1 and 4096".into());
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        for p in self.phase_list() {
            match p {
                Phase::Closed { batch, concurrency } => {
                    let mut a = self.clone();
                    (a.batch, a.concurrency) = (batch, concurrency);
                    a.check_shape()?;
                }
                Phase::Merchant { concurrency } => {
                    if !(1..=merchant::SHOPPERS_MAX).contains(&concurrency) {
                        return Err(format!(
                            "--phases: merchant:C takes 1 to {} shoppers",
                            merchant::SHOPPERS_MAX
                        ));
                    }
                }
                Phase::Open { batch, rate } => {
                    if !(1..=1024).contains(&batch) {
                        return Err("--phases: a batch is between 1 and 1024".into());
                    }
                    if matches!(rate, Rate::OfPeak(p) if !(p > 0.0 && p <= 1000.0))
                        || rate == Rate::PerSecond(0)
                    {
                        return Err(
                            "--phases: a rate is above 0 (and a percentage at most 1000)".into(),
                        );
                    }
                }
            }
        }
        let mut closed_before = false;
        for p in self.phase_list() {
            match p {
                Phase::Closed { .. } => closed_before = true,
                Phase::Open {
                    rate: Rate::OfPeak(_),
                    ..
                } if !closed_before => {
                    return Err(
                        "--phases: an open loop at a % rate needs a closed-loop phase before it"
                            .into(),
                    );
                }
                Phase::Open { .. } | Phase::Merchant { .. } => {}
            }
        }
        if self.wallets.is_empty() {
            return Err("--wallets: at least one count".into());
        }
        if !(self.zipf_exponent > 0.0 && self.zipf_exponent <= 10.0) {
            return Err("--zipf-exponent: above 0, at most 10".into());
        }
        for &w in &self.wallets {
            let payers = if self.payers == 0 {
                w
            } else {
                self.payers.min(w)
            };
            let n = self.chain_length(payers);
            if n == 0 || n > CHAIN_MAX {
                return Err(format!(
                    "--transfers-per-wallet (or --transfers over the payers): {n} per wallet; between 1 and {CHAIN_MAX} (each pays 0.01 of 100.00)"
                ));
            }
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
/// devnet). Writes the reports (JSON and SVG) and returns them, one per wallet count and
/// phase; a scaling run also writes the scaling report (of each count's first phase).
pub async fn run(args: LoadArgs, cbdc: PathBuf) -> Result<Outcome, String> {
    args.check()?;
    let stem = args
        .report
        .file_stem()
        .map_or_else(|| "load-report".into(), |s| s.to_string_lossy().to_string());
    let scaling = args.wallets.len() > 1;
    let phased = args.phase_list().len() > 1;
    let mut all = Vec::new();
    let mut firsts = Vec::new();
    let mut merchant_reports = Vec::new();
    for &wallets in &args.wallets {
        let (reports, merchants) = run_one(&args, &cbdc, wallets).await?;
        for (k, m) in merchants.iter().enumerate() {
            let name = args
                .report
                .with_file_name(format!("{stem}-{wallets}-merchant-{}.json", k + 1));
            write(&name, m, merchant::svg(m)?)?;
        }
        merchant_reports.extend(merchants);
        for (k, report) in reports.iter().enumerate() {
            let name = match (scaling, phased) {
                (false, false) => args.report.clone(),
                (true, false) => args.report.with_file_name(format!("{stem}-{wallets}.json")),
                (false, true) => args
                    .report
                    .with_file_name(format!("{stem}-p{}.json", k + 1)),
                (true, true) => args
                    .report
                    .with_file_name(format!("{stem}-{wallets}-p{}.json", k + 1)),
            };
            write(&name, report, plot::svg(report)?)?;
        }
        // A run of merchant phases alone has no ledger report.
        firsts.extend(reports.first().cloned());
        all.extend(reports);
    }
    let scaling = if scaling && !firsts.is_empty() {
        let scaling = report::Scaling::of(&firsts);
        write(&args.report, &scaling, plot::scaling_svg(&scaling)?)?;
        Some(scaling)
    } else {
        None
    };
    Ok(Outcome {
        reports: all,
        scaling,
        merchant: merchant_reports,
    })
}

/// What a run produced: a report per wallet count and phase, in order, and for several
/// counts the scaling report.
pub struct Outcome {
    pub reports: Vec<report::Report>,
    pub scaling: Option<report::Scaling>,
    /// One per merchant phase.
    pub merchant: Vec<merchant::Report>,
}

/// One set-up with `wallets` wallets, then each phase on it.
async fn run_one(
    args: &LoadArgs,
    cbdc: &std::path::Path,
    wallets: usize,
) -> Result<(Vec<report::Report>, Vec<merchant::Report>), String> {
    let network = match &args.devnet {
        Some(dir) => target::Network::attach(dir).await?,
        None => target::Network::start(cbdc, args.banks).await?,
    };
    let result = async {
        let prepared = setup::prepare(&network, args, wallets).await?;
        let mut reports: Vec<report::Report> = Vec::new();
        let mut merchants = Vec::new();
        let mut peak = None;
        let mut single_calls = None;
        for phase in args.phase_list() {
            let a = args.for_phase(phase, peak)?;
            if let Phase::Merchant { concurrency } = phase {
                merchants.push(merchant::run(&network, &a, concurrency, single_calls).await?);
                continue;
            }
            let run = drive::drive(&network, &a, &prepared).await?;
            let report = report::finish(&network, &a, &prepared, run).await?;
            if let Phase::Closed { batch, .. } = phase {
                peak = Some(report.transfers_per_s);
                if batch == 1 {
                    single_calls = Some(report.transfers_per_s);
                }
            }
            reports.push(report);
        }
        Ok::<_, String>((reports, merchants))
    }
    .await;
    network.stop().await;
    result
}

/// Writes a report as JSON at `path` and its picture beside it (`.svg`).
fn write<T: serde::Serialize>(
    path: &std::path::Path,
    report: &T,
    svg: String,
) -> Result<(), String> {
    std::fs::write(
        path,
        serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let picture = path.with_extension("svg");
    std::fs::write(&picture, svg).map_err(|e| format!("{}: {e}", picture.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_counts_read_digits_and_powers_of_ten_within_bounds() {
        assert_eq!(wallet_count("1e6"), Ok(1_000_000));
        assert_eq!(wallet_count("5e3"), Ok(5_000));
        assert_eq!(wallet_count("1000"), Ok(1_000));
        assert!(wallet_count("1").is_err());
        assert!(wallet_count("1e8").is_err());
        assert!(wallet_count("1e99").is_err());
        assert!(wallet_count("ten").is_err());
    }

    #[test]
    fn phases_read_closed_and_open_shapes_and_name_what_is_wrong() {
        assert_eq!(
            phase("closed:256x8"),
            Ok(Phase::Closed {
                batch: 256,
                concurrency: 8
            })
        );
        assert_eq!(
            phase("open:64@2500"),
            Ok(Phase::Open {
                batch: 64,
                rate: Rate::PerSecond(2500)
            })
        );
        assert_eq!(
            phase("open:1@50%"),
            Ok(Phase::Open {
                batch: 1,
                rate: Rate::OfPeak(50.0)
            })
        );
        for bad in [
            "closed:256",
            "open:64",
            "sideways:1x1",
            "open:x@5",
            "closed:1x",
        ] {
            assert!(phase(bad).unwrap_err().starts_with(bad), "{bad}");
        }
    }

    #[test]
    fn an_open_phase_at_a_percentage_takes_it_of_the_closed_phase_before_it() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadArgs,
        }
        let cli = Cli::parse_from(["load", "--phases", "closed:256x8,open:64@50%"]);
        let phases = cli.args.phase_list();
        let second = cli.args.for_phase(phases[1], Some(5000.0)).unwrap();
        assert_eq!((second.batch, second.rate), (64, 2500));
        assert!(cli.args.for_phase(phases[1], None).is_err());
        let first_open = Cli::parse_from(["load", "--phases", "open:64@50%"]);
        assert!(first_open.args.check().is_err());
    }
}
