//! The accept loop's bounds, pausing and pacing.

use super::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Refusals run at full speed up to their share of a tenth of a second; the one that
/// reaches it waits for the tenth to end, and the next tenth starts afresh.
#[tokio::test]
async fn refusals_beyond_their_rate_wait() {
    let mut pace = Pace::default();
    let share = REFUSALS_PER_SECOND / 10;
    for _ in 1..share {
        assert_eq!(pace.refused(), None);
    }
    let wait = pace.refused().expect("the share is reached");
    assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
    tokio::time::sleep(wait).await;
    assert_eq!(pace.refused(), None, "a new tenth");
}

/// Up to the tolerated refusals nothing changes; one more within the window and what
/// the connection sends is not read until the window has passed; another connection is
/// read at once all along; a closed connection leaves nothing behind.
#[tokio::test]
async fn a_connection_that_sends_on_after_refusals_is_not_read_for_the_wait() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Counts::new().unwrap();
    let mut accepted = Box::pin(incoming(listener, Limits::with_max(8), counts.clone()));
    // Each accepted connection: its peer address, and when each byte was read.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = accepted.next().await {
            let peer = conn.stream.peer_addr().unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1];
                while let Ok(1) = conn.read(&mut buf).await {
                    let _ = tx.send((peer, std::time::Instant::now()));
                }
            });
        }
    });
    let mut rude = TcpStream::connect(addr).await.unwrap();
    let mut polite = TcpStream::connect(addr).await.unwrap();
    let rude_addr = rude.local_addr().unwrap();
    let polite_addr = polite.local_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    async fn read_one(
        s: &mut TcpStream,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, std::time::Instant)>,
    ) -> (SocketAddr, Duration) {
        let sent = std::time::Instant::now();
        s.write_all(b"x").await.unwrap();
        let (peer, at) = rx.recv().await.unwrap();
        (peer, at - sent)
    }
    for _ in 0..REFUSALS_TOLERATED {
        assert!(!refused(addr, rude_addr), "within the tolerated refusals");
    }
    let (peer, took) = read_one(&mut rude, &mut rx).await;
    assert_eq!(peer, rude_addr);
    assert!(took < Duration::from_millis(200), "read at once: {took:?}");
    assert_eq!(counts.paused.get(), 0);
    // One more within the window: paused.
    assert!(refused(addr, rude_addr));
    let started = std::time::Instant::now();
    rude.write_all(b"y").await.unwrap();
    let (peer, took) = read_one(&mut polite, &mut rx).await;
    assert_eq!(peer, polite_addr, "the other connection is read first");
    assert!(took < Duration::from_millis(200), "{took:?}");
    let (peer, at) = rx.recv().await.unwrap();
    assert_eq!(peer, rude_addr);
    let waited = at - started;
    assert!(
        waited >= REFUSALS_WINDOW - Duration::from_millis(100),
        "paused for the wait: {waited:?}"
    );
    assert_eq!(counts.paused.get(), 1);
    // Refusals on an unknown connection change nothing; a closed one is forgotten.
    assert!(!refused(addr, "127.0.0.1:1".parse().unwrap()));
    drop(rude);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !TOLD.lock().unwrap().contains_key(&(addr, rude_addr)),
        "forgotten when closed"
    );
}

/// Beyond the cap per address a connection is closed on arrival, while another address
/// still gets in; a connection that sends nothing
/// is closed after the idle timeout; one that keeps sending stays open; closing one
/// frees its place.
#[tokio::test]
async fn caps_connections_and_closes_idle_ones() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Counts::new().unwrap();
    let limits = Limits {
        connections_max: 3,
        per_address_max: 2,
        idle_timeout: Duration::from_millis(300),
    };
    let mut accepted = Box::pin(incoming(listener, limits, counts.clone()));
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = accepted.next().await {
            let tx = held_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let result = loop {
                    match conn.read(&mut buf).await {
                        Ok(0) => break Ok(()),
                        Ok(_) => continue,
                        Err(e) => break Err(e.kind()),
                    }
                };
                let _ = tx.send(result);
            });
        }
    });
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut busy = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The third is over the cap: closed at once.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(counts.refused.get(), 1);
    // The busy one writes every 100 ms and outlives the idle one.
    for _ in 0..6 {
        busy.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = held_rx.recv().await.unwrap();
    assert_eq!(closed, Err(io::ErrorKind::TimedOut));
    assert_eq!(counts.idle_closed.get(), 1);
    let n = idle.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
    assert!(held_rx.try_recv().is_err(), "the busy one is still open");
    // Its place is free again.
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(b"y").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts.refused.get(), 1);
    // Another source address has places of its own, up to the overall cap (3).
    let other = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let mut fourth = other().await;
    fourth.write_all(b"z").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counts.refused.get(), 1, "a place under the overall cap");
    let mut fifth = other().await;
    let n = tokio::time::timeout(Duration::from_secs(2), fifth.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "over the overall cap");
    assert_eq!(counts.refused.get(), 2);
}
