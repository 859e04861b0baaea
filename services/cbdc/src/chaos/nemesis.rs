//! The nemesis: one fault at a time, chosen by a seeded generator — a crash and restart, a
//! partition through a bank's proxies, or a pause.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;

use super::History;
use super::proxy::{Link, Proxy};
use crate::devnet::DevnetProcesses;

/// The processes: index 0 the central bank, then the banks (the gateway after them is left
/// alone).
pub(super) struct Nemesis {
    pub(super) devnet: DevnetProcesses,
    pub(super) cbdc: PathBuf,
    pub(super) banks: usize,
    /// Per bank: the proxy in front of it and the one to the central bank.
    pub(super) proxies: Vec<(Proxy, Proxy)>,
    pub(super) rng: StdRng,
    pub(super) history: History,
    pub(super) faults: BTreeMap<String, usize>,
    /// The filesystem every service's data is on, when the run cuts the power.
    pub(super) power: Option<cbdc_lossyfs::Mount>,
}

impl Nemesis {
    /// The machine loses power: every service dies at once (SIGKILL), every byte not yet
    /// synced is gone, then everything starts again on what the disk kept.
    async fn power_loss(&mut self) -> Result<(), String> {
        let all = self.devnet.processes().len();
        self.log("power_loss", "all", json!({}));
        for i in 0..all {
            self.devnet.kill(i).await;
        }
        if let Some(mount) = &self.power {
            mount.power_cut();
        }
        for i in 0..all {
            self.devnet.restart(i, &self.cbdc).await?;
        }
        self.log("power_back", "all", json!({}));
        *self.faults.entry("power_loss".into()).or_default() += 1;
        Ok(())
    }
}

/// Makes every file under `dir` durable (what the devnet wrote when it was made: its
/// configurations and keys), so a power cut takes only what the services did since.
pub(super) fn sync_tree(dir: &std::path::Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

fn process_name(i: usize) -> String {
    if i == 0 {
        "central-bank".into()
    } else {
        format!("bank-{i}")
    }
}

impl Nemesis {
    fn log(&mut self, f: &str, target: &str, extra: serde_json::Value) {
        self.history
            .record(json!({"process": "nemesis", "type": "info", "f": f,
            "target": target, "detail": extra}));
    }

    pub(super) async fn one_fault(&mut self) -> Result<(), String> {
        let pick = self.rng.gen_range(0..100);
        let hold = Duration::from_millis(self.rng.gen_range(1_000..6_000));
        if self.power.is_some() && pick < 15 {
            self.power_loss().await?;
        } else if pick < 45 {
            // A crash: a bank two times in three, else the central bank.
            let i = if self.rng.gen_range(0..3) < 2 {
                self.rng.gen_range(1..=self.banks)
            } else {
                0
            };
            let name = process_name(i);
            let down = Duration::from_millis(self.rng.gen_range(100..2_000));
            self.log("kill", &name, json!({"down_ms": down.as_millis() as u64}));
            self.devnet.kill(i).await;
            tokio::time::sleep(down).await;
            self.devnet.restart(i, &self.cbdc).await?;
            self.log("restart", &name, json!({}));
            *self.faults.entry("crash".into()).or_default() += 1;
        } else if pick < 75 {
            let b = self.rng.gen_range(1..=self.banks);
            let link = if self.rng.gen_bool(0.5) {
                Link::Cut
            } else {
                Link::Stall
            };
            let name = process_name(b);
            self.log(
                "partition",
                &name,
                json!({"link": link, "ms": hold.as_millis() as u64}),
            );
            let (front, to_cb) = &self.proxies[b - 1];
            front.set(link);
            to_cb.set(link);
            tokio::time::sleep(hold).await;
            let (front, to_cb) = &self.proxies[b - 1];
            front.set(Link::Pass);
            to_cb.set(Link::Pass);
            self.log("heal", &name, json!({}));
            *self.faults.entry("partition".into()).or_default() += 1;
        } else {
            let i = self.rng.gen_range(0..=self.banks);
            let name = process_name(i);
            self.log("pause", &name, json!({"ms": hold.as_millis() as u64}));
            self.devnet.signal(i, libc::SIGSTOP);
            tokio::time::sleep(hold).await;
            self.devnet.signal(i, libc::SIGCONT);
            self.log("resume", &name, json!({}));
            *self.faults.entry("pause".into()).or_default() += 1;
        }
        Ok(())
    }
}
