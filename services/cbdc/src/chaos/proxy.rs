//! A loopback TCP proxy whose links the nemesis controls: passing, cut (every connection
//! through it reset, new ones closed at once) or stalled (connections held open, nothing
//! forwarded until the link passes again, so peers hit their own timeouts). It forwards
//! bytes, so mutual TLS runs end to end through it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    Pass,
    Cut,
    Stall,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub listen: SocketAddr,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any) and forwards each connection to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (link, watching) = watch::channel(Link::Pass);
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                tokio::spawn(forward(down, upstream, watching.clone()));
            }
        });
        Ok(Proxy { listen, link, task })
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Every connection ends with the link.
        self.link.send_replace(Link::Cut);
    }
}

/// Waits until the link passes (`true`) or is cut (`false`).
async fn passing(link: &mut watch::Receiver<Link>) -> bool {
    loop {
        match *link.borrow_and_update() {
            Link::Pass => return true,
            Link::Cut => return false,
            Link::Stall => {}
        }
        if link.changed().await.is_err() {
            return false;
        }
    }
}

async fn forward(down: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let _ = down.set_nodelay(true);
    if !passing(&mut link).await {
        return;
    }
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    // Either direction ending (or the link cut) ends the connection.
    tokio::select! {
        () = pump(down_r, up_w, link.clone()) => {}
        () = pump(up_r, down_w, link) => {}
    }
}

/// Copies `from` to `to` while the link passes: stalled, it reads nothing more; cut, it
/// stops. Whatever it read it writes whole.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !passing(&mut link).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = link.changed() => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
