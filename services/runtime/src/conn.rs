//! Accepting connections within bounds: a cap on open connections (below the process's
//! file-descriptor limit), an idle timeout on each, and an accept loop that outlives running
//! out of descriptors.
//!
//! Without these, a client that opens connections and sends nothing (slowloris) holds a
//! descriptor and a task per connection for ever, and once the descriptors run out the
//! accept loop ends and the service stops serving everyone.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Open connections, at most, unless the descriptor limit is lower.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Descriptors kept for everything but client connections (the store's files, outbound
/// connections, the metrics endpoint).
pub const DESCRIPTORS_RESERVED: usize = 1_024;
/// A connection from which nothing was read for this long is closed. Servers ping every
/// [`crate::grpc::KEEPALIVE_INTERVAL`], and a live client's acknowledgements count as reads.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How a server bounds its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections, at most; one more is closed as soon as it is accepted.
    pub connections_max: usize,
    /// Open connections from one source address, at most (so one client cannot take every
    /// place); one more is closed as soon as it is accepted.
    pub per_address_max: usize,
    /// A connection from which nothing was read for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::with_max(CONNECTIONS_MAX.min(descriptors_for_connections()))
    }
}

impl Limits {
    /// At most `connections_max` open connections, a quarter of them from one address.
    pub fn with_max(connections_max: usize) -> Limits {
        let connections_max = connections_max.max(1);
        Limits {
            connections_max,
            per_address_max: (connections_max / 4).max(1),
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Raises the soft descriptor limit to the hard one (as Go's runtime does at start) and
/// returns how many descriptors that leaves for client connections.
fn descriptors_for_connections() -> usize {
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    let soft = unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return CONNECTIONS_MAX;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(DESCRIPTORS_RESERVED)
        .max(16)
}

/// What the accept loop counted, as Prometheus counters.
#[derive(Clone, Debug)]
pub struct Counts {
    /// Connections closed on arrival because [`Limits::connections_max`] were open.
    pub refused: IntCounter,
    /// Connections closed after [`Limits::idle_timeout`] without a byte read.
    pub idle_closed: IntCounter,
    /// Accept errors waited out (descriptors or memory exhausted).
    pub accept_errors: IntCounter,
}

impl Counts {
    /// The counters, registered in `registry`.
    pub fn registered(registry: &prometheus::Registry) -> Result<Counts, prometheus::Error> {
        let counts = Counts::new()?;
        for c in [&counts.refused, &counts.idle_closed, &counts.accept_errors] {
            registry.register(Box::new(c.clone()))?;
        }
        Ok(counts)
    }

    fn new() -> Result<Counts, prometheus::Error> {
        Ok(Counts {
            refused: IntCounter::new(
                "grpc_connections_refused_total",
                "Connections closed on arrival because the most allowed were open",
            )?,
            idle_closed: IntCounter::new(
                "grpc_connections_idle_closed_total",
                "Connections closed because nothing was read from them within the idle timeout",
            )?,
            accept_errors: IntCounter::new(
                "grpc_accept_errors_total",
                "Failed accepts waited out (descriptors or memory exhausted)",
            )?,
        })
    }
}

/// The accepted connections of `listener`, within `limits`, for
/// `Server::serve_with_incoming`. It never ends and never yields an error: an accept that
/// fails (out of descriptors, say) is retried after a pause.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
    counts: Counts,
) -> impl futures::Stream<Item = Result<Bounded, io::Error>> {
    let open = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let by_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    futures::stream::unfold((listener, open, counts), move |(listener, open, counts)| {
        let by_address = Arc::clone(&by_address);
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                            counts.refused.inc();
                            drop(stream);
                            continue;
                        };
                        let Some(place) =
                            Place::take(&by_address, peer.ip(), limits.per_address_max)
                        else {
                            counts.refused.inc();
                            drop(stream);
                            continue;
                        };
                        // TCP_NODELAY: without it a response written in two segments waits
                        // for the client's delayed ACK of the first (about 40 ms on Linux).
                        let _ = stream.set_nodelay(true);
                        let bounded =
                            Bounded::new(stream, (permit, place), limits.idle_timeout, &counts);
                        return Some((Ok(bounded), (listener, open, counts)));
                    }
                    Err(e) => {
                        counts.accept_errors.inc();
                        if counts.accept_errors.get() % 1000 == 1 {
                            tracing::warn!("accepting a connection: {e}; retrying");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    })
}

/// One connection's place in its source address's count.
struct Place {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Place {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Place> {
        let mut map = counts.lock().expect("connections by address");
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Place {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("connections by address");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection holding its place under the cap, closed when idle too long.
pub struct Bounded {
    stream: TcpStream,
    _places: (OwnedSemaphorePermit, Place),
    idle: Duration,
    last_read: Instant,
    deadline: Pin<Box<Sleep>>,
    counts: Counts,
}

impl Bounded {
    fn new(
        stream: TcpStream,
        places: (OwnedSemaphorePermit, Place),
        idle: Duration,
        counts: &Counts,
    ) -> Bounded {
        let now = Instant::now();
        Bounded {
            stream,
            _places: places,
            idle,
            last_read: now,
            deadline: Box::pin(tokio::time::sleep_until(now + idle)),
            counts: counts.clone(),
        }
    }
}

impl Connected for Bounded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // The timer is moved only when it fires, not on every read.
                loop {
                    let due = self.last_read + self.idle;
                    if self.deadline.deadline() != due {
                        self.deadline.as_mut().reset(due);
                    }
                    if self.deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= self.last_read + self.idle {
                        self.counts.idle_closed.inc();
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "nothing read from the connection within the idle timeout",
                        )));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
}
