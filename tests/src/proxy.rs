//! A TCP proxy owned by a test, to put network trouble between a node and Redis.
//!
//! It listens on a free loopback port and forwards every connection to `target`. The
//! test controls the link: [`Proxy::cut`] closes every connection and refuses new ones
//! (a crash of the link), [`Proxy::stall`] keeps the sockets open but stops moving bytes
//! (a black hole: nothing is closed, nothing arrives), [`Proxy::set_delay`] holds every
//! chunk for a while before forwarding it (a slow link), and [`Proxy::heal`] restores
//! normal forwarding. [`Proxy::hold_upstream`] holds back one particular request (the
//! first chunk towards the target containing a pattern, and what follows it on that
//! connection) until [`Proxy::release`], to delay one command without touching the
//! others. Dropping the proxy closes everything it opened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// State of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow (after the configured delay).
    Open,
    /// Connections are closed and new ones refused.
    Cut,
    /// Sockets stay open, no byte moves.
    Stalled,
}

#[derive(Debug, Clone)]
struct Link {
    mode: Mode,
    delay: Duration,
    hold: Option<Arc<Vec<u8>>>,
}

struct Shared {
    link: watch::Sender<Link>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
    held: AtomicU64,
}

/// A running proxy.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it forwards to.
    pub target: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (link, _) = watch::channel(Link {
            mode: Mode::Open,
            delay: Duration::ZERO,
            hold: None,
        });
        let shared = Arc::new(Shared {
            link,
            conns: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            held: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Proxy {
            addr,
            target,
            shared,
            accept,
        }
    }

    /// A `redis://` URL pointing at the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.link.borrow().mode
    }

    /// Closes every current connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.shared.link.send_modify(|l| l.mode = Mode::Cut);
        self.close_all();
    }

    /// Stops forwarding bytes in both directions; sockets stay open and new
    /// connections are accepted but get nothing through.
    pub fn stall(&self) {
        self.shared.link.send_modify(|l| l.mode = Mode::Stalled);
    }

    /// Forwards normally again (keeping the configured delay).
    pub fn heal(&self) {
        self.shared.link.send_modify(|l| l.mode = Mode::Open);
    }

    /// Holds every chunk for `delay` before forwarding it (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.link.send_modify(|l| l.delay = delay);
    }

    /// From now on, a chunk sent towards the target that contains `pattern` (within one
    /// read, which is where a short command lands) is held, with everything after it on
    /// its connection, until [`Proxy::release`]. Other connections are not affected.
    pub fn hold_upstream(&self, pattern: &[u8]) {
        let pattern = Arc::new(pattern.to_vec());
        self.shared.link.send_modify(|l| l.hold = Some(pattern));
    }

    /// Forwards the held chunks and stops holding.
    pub fn release(&self) {
        self.shared.link.send_modify(|l| l.hold = None);
    }

    /// Chunks held right now.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Bytes forwarded in both directions.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.retain(|h| !h.is_finished());
        conns.len()
    }

    fn close_all(&self) {
        for h in self.shared.conns.lock().unwrap().drain(..) {
            // Dropping the task drops both sockets: the peers see the connection close.
            h.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_all();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.link.borrow().mode == Mode::Cut {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let Ok(Ok(server)) =
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
            else {
                return;
            };
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = pump(cr, sw, s.clone(), true);
            let down = pump(sr, cw, s.clone(), false);
            // Either direction ending closes the whole connection.
            tokio::select! {
                _ = up => {},
                _ = down => {},
            }
        });
        let mut conns = shared.conns.lock().unwrap();
        conns.retain(|h| !h.is_finished());
        // A cut that raced with this accept must close this connection too.
        if shared.link.borrow().mode == Mode::Cut {
            task.abort();
        } else {
            conns.push(task);
        }
    }
}

/// Waits until bytes may move; returns the delay to apply, `None` when the link is cut.
async fn wait_open(rx: &mut watch::Receiver<Link>) -> Option<Duration> {
    loop {
        let link = rx.borrow_and_update().clone();
        match link.mode {
            Mode::Open => return Some(link.delay),
            Mode::Cut => return None,
            Mode::Stalled => {
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Holds `chunk` while it matches the hold pattern; `false` when the link was cut
/// meanwhile.
async fn wait_unheld(rx: &mut watch::Receiver<Link>, chunk: &[u8], shared: &Shared) -> bool {
    let matches = |l: &Link| {
        l.hold
            .as_ref()
            .is_some_and(|p| !p.is_empty() && chunk.windows(p.len()).any(|w| w == p.as_slice()))
    };
    if !matches(&rx.borrow_and_update()) {
        return true;
    }
    shared.held.fetch_add(1, Ordering::Relaxed);
    let open = loop {
        if rx.changed().await.is_err() {
            break false;
        }
        let l = rx.borrow_and_update().clone();
        if l.mode == Mode::Cut {
            break false;
        }
        if l.hold.is_none() {
            break true;
        }
    };
    shared.held.fetch_sub(1, Ordering::Relaxed);
    open
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    upstream: bool,
) {
    let mut rx = shared.link.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While stalled nothing is read, so the bytes stay in the kernel buffers.
        if wait_open(&mut rx).await.is_none() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if upstream && !wait_unheld(&mut rx, &buf[..n], &shared).await {
            return;
        }
        // The link may have stalled while this read was pending: hold the chunk.
        let Some(delay) = wait_open(&mut rx).await else {
            return;
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            if wait_open(&mut rx).await.is_none() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
