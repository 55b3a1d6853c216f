//! One subscriber connection, whatever its protocol: the scheduled start, the bounded
//! setup, the read loop and the accounting of what arrives. A protocol ([`Session`]) only
//! says how to subscribe, how to read one frame and how to answer pings.

use crate::config::{Config, Creds, Target};
use crate::scan::{SeqTs, now_us};
use crate::stats::{ConnResult, SeqTracker, Shared, ThreadStats};
use crate::ws::Ws;
use futures_util::StreamExt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Per worker thread: what its subscriber connections share.
pub struct WorkerCtx {
    /// The run configuration.
    pub cfg: Arc<Config>,
    /// Counters shared with the other threads and the coordinator.
    pub shared: Arc<Shared>,
    /// This thread's histograms and error counters.
    pub stats: ThreadStats,
}

/// The protocol side of one subscriber connection; the value is its per-connection read
/// state.
pub trait Session: Sized {
    /// Whether binary frames carry protocol data (otherwise each counts as `binary_frame`).
    const BINARY_FRAMES: bool;
    /// Error kind of a publication on another channel than the one subscribed.
    const OTHER_CHANNEL: &'static str;
    /// Error kind of a publication whose `seq` and `ts` cannot be read.
    const UNPARSED: &'static str;

    /// Connects with `creds` and subscribes to `channel`; the error is an error-kind label.
    async fn setup(target: &Target, channel: &str, creds: &Creds) -> Result<(Ws, Self), String>;

    /// Error kind counted when the server closes the connection.
    fn close_kind(frame: Option<&CloseFrame>) -> String;

    /// Reads one data frame, reporting what it holds to `frame`; an error ends the
    /// connection.
    fn read(&mut self, data: &[u8], frame: &mut Frame<'_>) -> Result<(), String>;

    /// Answers `n` server pings.
    async fn pong(ws: &mut Ws, n: usize) -> Result<(), String>;
}

/// The accounting of one received frame, fed by [`Session::read`].
pub struct Frame<'a> {
    stats: &'a ThreadStats,
    tracker: &'a mut SeqTracker,
    /// The subscribed channel's name.
    expected: &'a [u8],
    other_channel: &'static str,
    unparsed: &'static str,
    /// When the load generator read the frame (shared clock, µs).
    now: u64,
    /// When the kernel received it (0: unknown).
    rx: u64,
    /// New (not duplicated) publications in the frame.
    new: u64,
    /// Server pings in the frame.
    pings: usize,
}

impl Frame<'_> {
    /// A publication on `channel` carrying `seq_ts` (`None`: not readable).
    #[inline]
    pub fn publication(&mut self, channel: &[u8], seq_ts: Option<SeqTs>) {
        if channel != self.expected {
            self.stats.error(self.other_channel);
            return;
        }
        match seq_ts {
            Some((seq, ts)) => {
                if self.tracker.record(seq) {
                    self.new += 1;
                    self.stats.latency(ts, self.now, self.rx);
                }
            }
            None => self.unparsed(),
        }
    }

    /// A publication that could not be read at all.
    pub fn unparsed(&mut self) {
        self.stats.error(self.unparsed);
    }

    /// A server ping, answered once the frame is read.
    #[inline]
    pub fn ping(&mut self) {
        self.pings += 1;
    }

    /// Counts one error of kind `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        self.stats.error(kind);
    }
}

/// One subscriber connection speaking `S`, from its scheduled start until `stop`.
pub async fn run<S: Session>(
    ctx: Rc<WorkerCtx>,
    idx: usize,
    channel: u32,
    start_at: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> ConnResult {
    let cfg = &ctx.cfg;
    let name = match &cfg.subscribe_pattern {
        Some(p) => p.clone(),
        None => cfg.channels[channel as usize].clone(),
    };
    let target = &cfg.targets[idx % cfg.targets.len()];
    let mut tracker = SeqTracker::default();

    tokio::select! {
        _ = tokio::time::sleep_until(start_at) => {}
        _ = stop.changed() => {
            ctx.stats.error("setup_cancelled");
            ctx.shared.on_failed();
            return ConnResult::from_tracker(channel, false, &tracker);
        }
    }
    let creds = cfg.creds(idx);
    let setup_result = tokio::select! {
        r = tokio::time::timeout(cfg.connect_timeout, S::setup(target, &name, &creds)) => {
            r.unwrap_or_else(|_| Err("setup_timeout".into()))
        }
        _ = stop.changed() => Err("setup_cancelled".into()),
    };
    let (mut ws, mut session) = match setup_result {
        Ok(x) => x,
        Err(kind) => {
            ctx.stats.error(kind);
            ctx.shared.on_failed();
            return ConnResult::from_tracker(channel, false, &tracker);
        }
    };
    ctx.stats.setup_done(start_at);
    if !ctx.shared.on_subscribed(channel, now_us()) {
        ctx.stats.error("subscribed_after_publish_start");
        return ConnResult::from_tracker(channel, false, &tracker);
    }

    let expected = name.as_bytes();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = ws.next() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(_)) => { ctx.stats.error("read_error"); break; }
                    None => { ctx.stats.error("eof"); break; }
                };
                let data = match &m {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) if S::BINARY_FRAMES => &b[..],
                    Message::Binary(_) => { ctx.stats.error("binary_frame"); continue; }
                    Message::Close(f) => { ctx.stats.error(S::close_kind(f.as_ref())); break; }
                    _ => continue,
                };
                let mut frame = Frame {
                    stats: &ctx.stats,
                    tracker: &mut tracker,
                    expected,
                    other_channel: S::OTHER_CHANNEL,
                    unparsed: S::UNPARSED,
                    now: now_us(),
                    rx: ws.get_ref().last_rx_us(),
                    new: 0,
                    pings: 0,
                };
                if let Err(kind) = session.read(data, &mut frame) {
                    ctx.stats.error(kind);
                    break;
                }
                let Frame { now, new, pings, .. } = frame;
                if new > 0 {
                    ctx.stats.received_at(now);
                    ctx.shared.received_unique.fetch_add(new, Ordering::Relaxed);
                }
                if pings > 0 {
                    ctx.stats.pings.set(ctx.stats.pings.get() + pings as u64);
                    if let Err(kind) = S::pong(&mut ws, pings).await {
                        ctx.stats.error(kind);
                        break;
                    }
                }
            }
        }
    }
    ConnResult::from_tracker(channel, true, &tracker)
}
