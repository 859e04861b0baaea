//! Accepting connections within bounds: a cap on open connections (below the process's
//! file-descriptor limit), an idle timeout on each, and an accept loop that outlives running
//! out of descriptors.
//!
//! Without these, a client that opens connections and sends nothing (slowloris) holds a
//! descriptor and a task per connection for ever, and once the descriptors run out the
//! accept loop ends and the service stops serving everyone.
//!
//! A connection that keeps sending what it was just told to hold back (see [`refused`]) is
//! not read from for the advised wait: its bytes wait in its own socket buffer, and the
//! sender's TCP window closes, instead of costing the service their decryption and parsing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Pauses in reading from a connection that sent again before the advised wait.
    pub paused: IntCounter,
}

impl Counts {
    /// The counters, registered in `registry`.
    pub fn registered(registry: &prometheus::Registry) -> Result<Counts, prometheus::Error> {
        let counts = Counts::new()?;
        for c in [
            &counts.refused,
            &counts.idle_closed,
            &counts.accept_errors,
            &counts.paused,
        ] {
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
            paused: IntCounter::new(
                "grpc_connections_paused_total",
                "Pauses in reading from a connection that kept sending requests it was told to hold back",
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
    let refusals = Arc::new(Mutex::new(Pace::default()));
    futures::stream::unfold((listener, open, counts), move |(listener, open, counts)| {
        let by_address = Arc::clone(&by_address);
        let refusals = Arc::clone(&refusals);
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let place = Arc::clone(&open).try_acquire_owned().ok().and_then(|p| {
                            Place::take(&by_address, peer.ip(), limits.per_address_max)
                                .map(|place| (p, place))
                        });
                        let Some((permit, place)) = place else {
                            counts.refused.inc();
                            // A reset, not a close: no TIME_WAIT left behind.
                            let _ = stream.set_zero_linger();
                            drop(stream);
                            let wait = refusals.lock().expect("refusals").refused();
                            if let Some(wait) = wait {
                                tokio::time::sleep(wait).await;
                            }
                            continue;
                        };
                        // TCP_NODELAY: without it a response written in two segments waits
                        // for the client's delayed ACK of the first (about 40 ms on Linux).
                        let _ = stream.set_nodelay(true);
                        let advice = stream
                            .local_addr()
                            .ok()
                            .map(|local| Told::register(local, peer));
                        let bounded = Bounded::new(
                            stream,
                            (permit, place),
                            advice,
                            limits.idle_timeout,
                            &counts,
                        );
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

/// Refusals of a connection within [`REFUSALS_WINDOW`], at most, before it is paused: a
/// client whose several requests were refused at once is not ignoring the advice, one that
/// sends on regardless is.
pub const REFUSALS_TOLERATED: u32 = 8;

/// Open connections by (local, peer) address: what the service told each.
static TOLD: LazyLock<Mutex<HashMap<Ends, Arc<Advice>>>> = LazyLock::new(Mutex::default);

/// A connection's (local, peer) addresses.
type Ends = (SocketAddr, SocketAddr);
static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// A connection's refusals and pause.
#[derive(Default)]
struct Advice {
    /// The current window's start (ms since [`EPOCH`]) and refusals in it.
    window: Mutex<(u64, u32)>,
    /// Nothing is read before this (ms since [`EPOCH`]).
    paused_until_ms: AtomicU64,
}

/// A connection's entry in [`TOLD`], removed when the connection closes.
struct Told {
    key: Ends,
    advice: Arc<Advice>,
}

impl Told {
    fn register(local: SocketAddr, peer: SocketAddr) -> Told {
        let advice = Arc::new(Advice::default());
        TOLD.lock()
            .expect("connections told")
            .insert((local, peer), Arc::clone(&advice));
        Told {
            key: (local, peer),
            advice,
        }
    }

    /// When reading resumes, if it is paused now.
    fn paused_until(&self) -> Option<std::time::Instant> {
        let until = self.advice.paused_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| std::time::Instant::now() + Duration::from_millis(until - now))
    }
}

impl Drop for Told {
    fn drop(&mut self) {
        let mut map = TOLD.lock().expect("connections told");
        if map
            .get(&self.key)
            .is_some_and(|a| Arc::ptr_eq(a, &self.advice))
        {
            map.remove(&self.key);
        }
    }
}

/// The window in which refusals of one connection are counted: the retry advice's wait.
pub const REFUSALS_WINDOW: Duration = crate::error::RETRY_AFTER;

/// Tells the accept loop that a request on the connection from `peer` to `local` was
/// refused with the advice to wait [`REFUSALS_WINDOW`]. A connection refused more than
/// [`REFUSALS_TOLERATED`] times within that window sends without waiting: nothing more is
/// read from it until the window has passed since its last refusal. Returns whether it is
/// paused now.
pub fn refused(local: SocketAddr, peer: SocketAddr) -> bool {
    let Some(advice) = TOLD
        .lock()
        .expect("connections told")
        .get(&(local, peer))
        .cloned()
    else {
        return false;
    };
    let now = now_ms();
    let wait = REFUSALS_WINDOW.as_millis() as u64;
    let mut window = advice.window.lock().expect("advice");
    if now >= window.0 + wait {
        *window = (now, 0);
    }
    window.1 += 1;
    if window.1 > REFUSALS_TOLERATED {
        advice
            .paused_until_ms
            .fetch_max(now + wait, Ordering::Relaxed);
        return true;
    }
    false
}

/// Connections closed on arrival per second, at most, at full speed. Beyond that the accept
/// loop waits: a client that reopens every refused connection at once (a connection flood)
/// then waits in the kernel's backlog, which costs the service nothing, instead of
/// costing it an accept and a reset each time. Connections already open are not affected;
/// a new one may wait in the backlog while the flood lasts.
pub const REFUSALS_PER_SECOND: u32 = 1_000;

/// Refusals counted per tenth of a second.
#[derive(Default)]
struct Pace {
    window_start: Option<Instant>,
    count: u32,
}

impl Pace {
    /// Counts a refusal; how long to wait before accepting again, if the tenth of a second
    /// has had its share.
    fn refused(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let tenth = Duration::from_millis(100);
        let start = match self.window_start {
            Some(start) if now < start + tenth => start,
            _ => {
                self.window_start = Some(now);
                self.count = 0;
                now
            }
        };
        self.count += 1;
        (self.count >= REFUSALS_PER_SECOND / 10).then(|| start + tenth - now)
    }
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

/// The same bounded accept loop as [`incoming`], as a listener for `axum::serve` (an HTTP
/// server: the merchant gateway, the console).
pub struct BoundedListener {
    connections: Pin<Box<dyn futures::Stream<Item = Result<Bounded, io::Error>> + Send>>,
    local: SocketAddr,
}

impl BoundedListener {
    pub fn new(listener: TcpListener, limits: Limits, counts: Counts) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(BoundedListener {
            connections: Box::pin(incoming(listener, limits, counts)),
            local,
        })
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        use futures::StreamExt;
        loop {
            // `incoming` never ends and never yields an error (it retries accepts itself).
            if let Some(Ok(connection)) = self.connections.next().await {
                let peer = connection
                    .stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                return (connection, peer);
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// An accepted connection holding its place under the cap, closed when idle too long.
pub struct Bounded {
    stream: TcpStream,
    _places: (OwnedSemaphorePermit, Place),
    /// What the service told this connection; `None` if its address was not known.
    told: Option<Told>,
    /// Set while reading is paused: when it resumes.
    resume: Option<Pin<Box<Sleep>>>,
    idle: Duration,
    last_read: Instant,
    deadline: Pin<Box<Sleep>>,
    counts: Counts,
}

impl Bounded {
    fn new(
        stream: TcpStream,
        places: (OwnedSemaphorePermit, Place),
        told: Option<Told>,
        idle: Duration,
        counts: &Counts,
    ) -> Bounded {
        let now = Instant::now();
        Bounded {
            stream,
            _places: places,
            told,
            resume: None,
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
        // Paused: nothing is read until the advised wait is over.
        if let Some(until) = self.told.as_ref().and_then(Told::paused_until) {
            let until = Instant::from_std(until);
            match &mut self.resume {
                Some(sleep) if sleep.deadline() == until => {}
                slot => {
                    if slot.is_none() {
                        self.counts.paused.inc();
                    }
                    self.resume = Some(Box::pin(tokio::time::sleep_until(until)));
                }
            }
            if let Some(sleep) = self.resume.as_mut()
                && sleep.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
        }
        self.resume = None;
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
mod tests;
