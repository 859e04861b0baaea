//! The abusive clients of `cbdc overload`: the watcher, the flood and the slowloris client,
//! and how their refusals are counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cbdc_core::{Keypair, LedgerId, Transfer};
use cbdc_load::target::Network;

/// Refusals by code and reason, and overload refusals that came without retry advice.
#[derive(Default)]
pub(super) struct Refusals {
    pub(super) by_kind: BTreeMap<String, usize>,
    pub(super) without_advice: usize,
}

impl Refusals {
    pub(super) fn note(&mut self, e: &cbdc_client::Error) {
        let kind = match e {
            cbdc_client::Error::Rpc(r) => {
                let overload = matches!(
                    r.code,
                    tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                );
                if overload && r.retry_after.is_none() {
                    self.without_advice += 1;
                }
                format!(
                    "{:?}/{}{}",
                    r.code,
                    r.reason,
                    if r.retry_after.is_some() {
                        " (retry advice)"
                    } else {
                        ""
                    }
                )
            }
            cbdc_client::Error::Connect(_) => "connection failed".into(),
            other => other.to_string(),
        };
        *self.by_kind.entry(kind).or_default() += 1;
    }
}

/// The watcher: opens up to `streams` watch streams (nine tries per wallet), a new
/// connection every [`cbdc_ledger::service::WATCHERS_PER_CONNECTION`] streams, and drains
/// them until `stop`.
pub(super) async fn watcher(
    network: Arc<Network>,
    keys: Vec<Keypair>,
    streams: usize,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
    opened: Arc<AtomicBool>,
) -> (usize, Refusals) {
    let mut refusals = Refusals::default();
    let mut open = 0;
    let mut client = None;
    let mut on_connection = 0;
    let mut drains = tokio::task::JoinSet::new();
    'outer: for round in 0..=cbdc_ledger::service::WATCHERS_PER_WALLET {
        for key in &keys {
            if open + refusals.by_kind.values().sum::<usize>() >= streams
                || stop.load(Ordering::Relaxed)
            {
                break 'outer;
            }
            if client.is_none() || on_connection >= cbdc_ledger::service::WATCHERS_PER_CONNECTION {
                client = network.bank(LedgerId(1)).await.ok();
                on_connection = 0;
            }
            let Some(c) = client.as_mut() else {
                refusals.note(&cbdc_client::Error::Connect("no connection".into()));
                continue;
            };
            match c.watch(key, "").await {
                Ok(mut stream) => {
                    open += 1;
                    on_connection += 1;
                    let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
                    drains.spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            match tokio::time::timeout(Duration::from_millis(500), stream.message())
                                .await
                            {
                                Ok(Ok(Some(_))) => {
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(_) => return,
                                Err(_) => {}
                            }
                        }
                    });
                }
                Err(e) => refusals.note(&e),
            }
        }
        let _ = round;
    }
    opened.store(true, Ordering::Relaxed);
    // The streams stay open until the end of the phase.
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drains.abort_all();
    (open, refusals)
}

/// One flood connection: maximum-size batches back to back, `in_flight` at once, each the
/// next batch of the flood's chains (or the last one again), until `stop`.
pub(super) async fn flood(
    network: Arc<Network>,
    batches: Arc<Vec<Vec<Transfer>>>,
    next: Arc<AtomicUsize>,
    in_flight: usize,
    stop: Arc<AtomicBool>,
) -> (usize, usize, Refusals) {
    let Ok(client) = network.bank(LedgerId(1)).await else {
        let mut r = Refusals::default();
        r.note(&cbdc_client::Error::Connect("no connection".into()));
        return (0, 0, r);
    };
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (mut client, batches, next, stop) = (
            client.clone(),
            Arc::clone(&batches),
            Arc::clone(&next),
            Arc::clone(&stop),
        );
        senders.spawn(async move {
            let (mut sent, mut committed, mut refusals) = (0, 0, Refusals::default());
            while !stop.load(Ordering::Relaxed) {
                let j = next.load(Ordering::Relaxed).min(batches.len() - 1);
                let batch = &batches[j];
                sent += batch.len();
                match client.submit_many_with(batch, false).await {
                    Ok(results) => {
                        let ok = results.iter().filter(|r| r.is_ok()).count();
                        committed += ok;
                        if ok == batch.len() {
                            let _ = next.compare_exchange(
                                j,
                                j + 1,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        for r in results.into_iter().filter_map(Result::err) {
                            refusals.note(&cbdc_client::Error::Rpc(Box::new(r)));
                        }
                    }
                    Err(e) => refusals.note(&e),
                }
            }
            (sent, committed, refusals)
        });
    }
    let (mut sent, mut committed, mut refusals) = (0, 0, Refusals::default());
    while let Some(Ok((s, c, r))) = senders.join_next().await {
        sent += s;
        committed += c;
        for (k, n) in r.by_kind {
            *refusals.by_kind.entry(k).or_default() += n;
        }
        refusals.without_advice += r.without_advice;
    }
    (sent, committed, refusals)
}

/// The slowloris client: keeps `count` connections open that send nothing (from
/// [`SLOWLORIS_FROM`]), reopening each
/// as soon as the ledger closes it, until `stop`. Counts (opened, closed within a second of
/// opening, closed later, connect errors).
pub(super) async fn slowloris(
    addr: std::net::SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
) -> (usize, usize, usize, usize) {
    let tallies = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (stop, tallies) = (Arc::clone(&stop), Arc::clone(&tallies));
        holders.spawn(async move {
            use tokio::io::AsyncReadExt;
            while !stop.load(Ordering::Relaxed) {
                let connect = async {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind((SLOWLORIS_FROM, 0).into())?;
                    socket.connect(addr).await
                };
                let Ok(mut conn) = connect.await else {
                    tallies[3].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                tallies[0].fetch_add(1, Ordering::Relaxed);
                let opened = Instant::now();
                let mut buf = [0u8; 256];
                loop {
                    tokio::select! {
                        n = conn.read(&mut buf) => {
                            if matches!(n, Ok(0) | Err(_)) {
                                let early = opened.elapsed() < Duration::from_secs(1);
                                tallies[if early { 1 } else { 2 }].fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        () = tokio::time::sleep(Duration::from_millis(250)) => {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                    }
                }
                // Closed on arrival: the cap is full; try again shortly, as an attacker would.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    while holders.join_next().await.is_some() {}
    (
        tallies[0].load(Ordering::Relaxed),
        tallies[1].load(Ordering::Relaxed),
        tallies[2].load(Ordering::Relaxed),
        tallies[3].load(Ordering::Relaxed),
    )
}

/// The slowloris client's source address (another address than the others', so the
/// ledger's per-address cap can tell them apart, as it would tell two hosts apart).
const SLOWLORIS_FROM: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);
