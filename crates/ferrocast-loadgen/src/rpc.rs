//! `--rpc`: the latency of `rpc` calls, e.g. through the broker's rpc proxy to a backend.
//!
//! The connections connect (with the run's credentials, no subscription) at the connect
//! rate. Once the connect phase is over, call `g` of the `rate * duration` calls goes out on
//! connection `g % connections`, `g / rate` seconds after a common start, whether or not the
//! earlier calls were answered (an open loop: a slow broker does not lower the offered
//! rate), each in its own frame. A call's latency runs from just before its frame is written
//! to when the frame holding its reply is read (and, as for publications, to the kernel's
//! receive time of that frame). A call not answered within `call_timeout` of being sent
//! counts as a timeout, a reply with an error under `rpc_error:<code>`.

use crate::centrifugo::{Codec, Item, JsonCodec, ProtobufCodec, handshake, pong};
use crate::config::{Config, Creds, Encoding, Target};
use crate::scan::{build_payload, now_us};
use crate::stats::{self, Errors, count};
use crate::ws::{Ws, open_ws};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::Message;

/// What `--rpc` runs.
pub struct Options {
    /// Method of every call.
    pub method: String,
    /// Calls per second, all connections together.
    pub rate: f64,
    /// Seconds of calling.
    pub duration: Duration,
    /// A call not answered within this counts as a timeout.
    pub call_timeout: Duration,
    /// Worker threads.
    pub threads: usize,
}

/// The connect phase, shared by every thread and the coordinator.
#[derive(Default)]
struct Phase {
    connected: AtomicUsize,
    failed: AtomicUsize,
    last_connected_us: AtomicU64,
    /// Set right before the start time is sent; later setups do not take part.
    started: AtomicBool,
}

/// What one thread's connections add up to.
struct Tally {
    sent: u64,
    ok: u64,
    failed: u64,
    timeouts: u64,
    not_sent: u64,
    first_sent_us: u64,
    last_sent_us: u64,
    last_reply_us: u64,
    hist: Histogram<u64>,
    sock_hist: Histogram<u64>,
    setup_hist: Histogram<u64>,
    /// How late each call went out after its scheduled time.
    lag_hist: Histogram<u64>,
    errors: Errors,
}

impl Tally {
    fn new() -> Self {
        Tally {
            sent: 0,
            ok: 0,
            failed: 0,
            timeouts: 0,
            not_sent: 0,
            first_sent_us: u64::MAX,
            last_sent_us: 0,
            last_reply_us: 0,
            hist: stats::new_histogram(),
            sock_hist: stats::new_histogram(),
            setup_hist: stats::new_histogram(),
            lag_hist: stats::new_histogram(),
            errors: Errors::new(),
        }
    }

    fn merge(&mut self, o: Tally) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        self.timeouts += o.timeouts;
        self.not_sent += o.not_sent;
        self.first_sent_us = self.first_sent_us.min(o.first_sent_us);
        self.last_sent_us = self.last_sent_us.max(o.last_sent_us);
        self.last_reply_us = self.last_reply_us.max(o.last_reply_us);
        let _ = self.hist.add(&o.hist);
        let _ = self.sock_hist.add(&o.sock_hist);
        let _ = self.setup_hist.add(&o.setup_hist);
        let _ = self.lag_hist.add(&o.lag_hist);
        for (k, n) in o.errors {
            count(&mut self.errors, k, n);
        }
    }
}

/// What the connections of one thread share.
struct Ctx {
    cfg: Arc<Config>,
    phase: Arc<Phase>,
    method: String,
    rate: f64,
    total: u64,
    call_timeout: Duration,
    /// Bound of the whole calling phase after the start.
    hard_stop: Duration,
    tally: RefCell<Tally>,
}

fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 120_000_000));
}

/// Connects (no subscription); the error is an error-kind label.
async fn setup<C: Codec>(target: &Target, creds: &Creds) -> Result<Ws, String> {
    let mut ws = open_ws(target, C::SUBPROTOCOL).await?;
    let mut first = Vec::new();
    C::connect(&mut first, 1, "ferrocast-loadgen-rpc", creds);
    handshake::<C>(&mut ws, first, &[(1, "connect")]).await?;
    Ok(ws)
}

/// Reads one server message: matches replies to `pending` calls and accounts them;
/// returns the pings to answer.
fn on_message<C: Codec>(
    ctx: &Ctx,
    ws: &Ws,
    m: &Message,
    pending: &mut VecDeque<(u32, u64)>,
) -> Result<usize, String> {
    let Some(data) = C::data(m) else {
        return match m {
            Message::Close(f) => Err(match f {
                Some(f) => format!("server_close:{}", u16::from(f.code)),
                None => "server_close:none".to_string(),
            }),
            _ => Ok(0),
        };
    };
    let (now, rx) = (now_us(), ws.get_ref().last_rx_us());
    let timeout_us = ctx.call_timeout.as_micros() as u64;
    let mut t = ctx.tally.borrow_mut();
    let mut pings = 0;
    C::items(data, |it| match it {
        Item::Ping => pings += 1,
        Item::Bad => count(&mut t.errors, "rpc_bad_reply", 1),
        Item::Reply { id, error } => {
            // Replies come in order on one connection: the call is almost always first.
            let Some(pos) = pending.iter().position(|&(p, _)| u64::from(p) == id) else {
                count(&mut t.errors, "rpc_unexpected_reply", 1);
                return;
            };
            let Some((_, sent)) = pending.remove(pos) else {
                return;
            };
            let took = now.saturating_sub(sent);
            t.last_reply_us = t.last_reply_us.max(now);
            if took > timeout_us {
                t.timeouts += 1;
            } else if let Some(code) = error {
                t.failed += 1;
                count(&mut t.errors, format!("rpc_error:{code}"), 1);
            } else {
                t.ok += 1;
                record(&mut t.hist, took);
                if rx > 0 {
                    record(&mut t.sock_hist, rx.saturating_sub(sent));
                }
            }
        }
    });
    Ok(pings)
}

/// One connection: setup at `at`, then its calls after the start.
async fn conn<C: Codec>(
    ctx: Rc<Ctx>,
    i: usize,
    at: TokioInstant,
    mut start: watch::Receiver<Option<Instant>>,
) {
    let cfg = &ctx.cfg;
    let n = cfg.connections as u64;
    let mut next_g = i as u64;
    tokio::time::sleep_until(at).await;
    let target = &cfg.targets[i % cfg.targets.len()];
    let creds = cfg.creds(i);
    let not_sent = |next_g: u64| {
        if next_g < ctx.total {
            (ctx.total - next_g).div_ceil(n)
        } else {
            0
        }
    };
    let mut ws = match tokio::time::timeout(cfg.connect_timeout, setup::<C>(target, &creds)).await {
        Ok(Ok(ws)) => ws,
        r => {
            let kind = r.unwrap_or_else(|_| Err("setup_timeout".into())).err();
            let mut t = ctx.tally.borrow_mut();
            count(&mut t.errors, kind.unwrap_or_default(), 1);
            t.not_sent += not_sent(next_g);
            ctx.phase.failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    record(
        &mut ctx.tally.borrow_mut().setup_hist,
        at.elapsed().as_micros() as u64,
    );
    if ctx.phase.started.load(Ordering::SeqCst) {
        let mut t = ctx.tally.borrow_mut();
        count(&mut t.errors, "connected_after_start", 1);
        t.not_sent += not_sent(next_g);
        ctx.phase.failed.fetch_add(1, Ordering::SeqCst);
        return;
    }
    ctx.phase
        .last_connected_us
        .fetch_max(now_us(), Ordering::SeqCst);
    ctx.phase.connected.fetch_add(1, Ordering::SeqCst);

    let mut pending: VecDeque<(u32, u64)> = VecDeque::new();
    let fail = |kind: String, next_g: u64, pending: &VecDeque<(u32, u64)>| {
        let mut t = ctx.tally.borrow_mut();
        count(&mut t.errors, kind, 1);
        t.timeouts += pending.len() as u64;
        t.not_sent += not_sent(next_g);
    };
    // Wait for the start, answering pings meanwhile.
    let start = loop {
        if let Some(s) = *start.borrow_and_update() {
            break TokioInstant::from_std(s);
        }
        tokio::select! {
            r = start.changed() => if r.is_err() { return fail("no_start".into(), next_g, &pending) },
            m = ws.next() => {
                let r = match m {
                    Some(Ok(m)) => on_message::<C>(&ctx, &ws, &m, &mut pending),
                    Some(Err(_)) => Err("read_error".into()),
                    None => Err("eof".into()),
                };
                match r {
                    Ok(0) => {}
                    Ok(p) => if let Err(k) = pong::<C>(&mut ws, p).await { return fail(k, next_g, &pending) },
                    Err(k) => return fail(k, next_g, &pending),
                }
            }
        }
    };
    let hard_stop = start + ctx.hard_stop;
    let due = |g: u64| start + Duration::from_secs_f64(g as f64 / ctx.rate);
    let (mut frame, mut payload) = (Vec::new(), Vec::new());
    let mut id: u32 = 2;
    let mut wait_end = start;
    loop {
        if next_g >= ctx.total && pending.is_empty() {
            break;
        }
        let sending = next_g < ctx.total;
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(hard_stop) => {
                return fail("rpc_aborted_at_hard_stop".into(), next_g, &pending);
            }
            m = ws.next() => {
                let r = match m {
                    Some(Ok(m)) => on_message::<C>(&ctx, &ws, &m, &mut pending),
                    Some(Err(_)) => Err("read_error".into()),
                    None => Err("eof".into()),
                };
                match r {
                    Ok(0) => {}
                    Ok(p) => if let Err(k) = pong::<C>(&mut ws, p).await { return fail(k, next_g, &pending) },
                    Err(k) => return fail(k, next_g, &pending),
                }
            }
            _ = tokio::time::sleep_until(due(next_g)), if sending => {
                // Every call already due (more than one when behind schedule).
                while next_g < ctx.total && due(next_g) <= TokioInstant::now() {
                    payload.clear();
                    build_payload(&mut payload, next_g + 1, now_us(), cfg.payload_size);
                    frame.clear();
                    C::rpc(&mut frame, id, &ctx.method, &payload);
                    let m = match C::message(std::mem::take(&mut frame)) {
                        Ok(m) => m,
                        Err(k) => return fail(k, next_g, &pending),
                    };
                    let lag = due(next_g).elapsed().as_micros() as u64;
                    let sent = now_us();
                    match tokio::time::timeout_at(hard_stop, ws.send(m)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return fail("write_error".into(), next_g, &pending),
                        Err(_) => return fail("rpc_aborted_at_hard_stop".into(), next_g, &pending),
                    }
                    pending.push_back((id, sent));
                    id = id.wrapping_add(1).max(2);
                    next_g += n;
                    let mut t = ctx.tally.borrow_mut();
                    t.sent += 1;
                    t.first_sent_us = t.first_sent_us.min(sent);
                    t.last_sent_us = t.last_sent_us.max(sent);
                    record(&mut t.lag_hist, lag);
                }
                wait_end = TokioInstant::now() + ctx.call_timeout;
            }
            _ = tokio::time::sleep_until(wait_end), if !sending => break,
        }
    }
    ctx.tally.borrow_mut().timeouts += pending.len() as u64;
    let _ = ws.close(None).await;
}

fn worker<C: Codec + 'static>(
    ctx: Ctx,
    mine: Vec<(usize, Instant)>,
    start: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<Tally> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let ctx = Rc::new(ctx);
    local.block_on(&rt, async {
        let handles: Vec<_> = mine
            .into_iter()
            .map(|(i, at)| {
                let at = TokioInstant::from_std(at);
                tokio::task::spawn_local(conn::<C>(ctx.clone(), i, at, start.clone()))
            })
            .collect();
        for h in handles {
            if h.await.is_err() {
                count(&mut ctx.tally.borrow_mut().errors, "task_panicked", 1);
            }
        }
    });
    Ok(ctx.tally.replace(Tally::new()))
}

/// Runs the calls and returns the JSON result (without `label`).
pub fn run(cfg: Arc<Config>, o: &Options) -> anyhow::Result<serde_json::Value> {
    let total = (o.rate * o.duration.as_secs_f64()).round() as u64;
    let phase = Arc::new(Phase::default());
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let t0 = Instant::now() + Duration::from_millis(20);
    let t0_us = now_us() + 20_000;
    let mut per_thread: Vec<Vec<(usize, Instant)>> = vec![Vec::new(); o.threads];
    for i in 0..cfg.connections {
        let at = if cfg.connect_rate > 0.0 {
            t0 + Duration::from_secs_f64(i as f64 / cfg.connect_rate)
        } else {
            t0
        };
        per_thread[i % o.threads].push((i, at));
    }
    let mut joins = Vec::new();
    for (t, mine) in per_thread.into_iter().enumerate() {
        let ctx = Ctx {
            cfg: cfg.clone(),
            phase: phase.clone(),
            method: o.method.clone(),
            rate: o.rate,
            total,
            call_timeout: o.call_timeout,
            hard_stop: o.duration * 2 + o.call_timeout + Duration::from_secs(10),
            tally: RefCell::new(Tally::new()),
        };
        let start = start_rx.clone();
        let encoding = cfg.encoding;
        joins.push(
            std::thread::Builder::new()
                .name(format!("loadgen-rpc-{t}"))
                .spawn(move || match encoding {
                    Encoding::Json => worker::<JsonCodec>(ctx, mine, start),
                    Encoding::Protobuf => worker::<ProtobufCodec>(ctx, mine, start),
                })?,
        );
    }
    drop(start_rx);

    // Connect phase, bounded as in the other modes.
    let ramp = if cfg.connect_rate > 0.0 {
        cfg.connections as f64 / cfg.connect_rate
    } else {
        0.0
    };
    let deadline =
        t0 + Duration::from_secs_f64(ramp) + cfg.connect_timeout + Duration::from_secs(1);
    let mut last_report = Instant::now();
    loop {
        let connected = phase.connected.load(Ordering::SeqCst);
        let failed = phase.failed.load(Ordering::SeqCst);
        if connected + failed >= cfg.connections || Instant::now() >= deadline {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "loadgen: {connected} connected, {failed} failed of {}",
                cfg.connections
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    phase.started.store(true, Ordering::SeqCst);
    let connected = phase.connected.load(Ordering::SeqCst);
    let unfinished = cfg.connections - connected - phase.failed.load(Ordering::SeqCst);
    eprintln!(
        "loadgen: connect phase over: {connected} of {} connected; {total} calls at {} /s",
        cfg.connections, o.rate
    );
    let start = Instant::now() + Duration::from_millis(50);
    let start_us = now_us() + 50_000;
    let _ = start_tx.send(Some(start));

    let mut all = Tally::new();
    if unfinished > 0 {
        count(
            &mut all.errors,
            "setup_unfinished_at_deadline",
            unfinished as u64,
        );
    }
    for j in joins {
        match j.join() {
            Ok(Ok(t)) => all.merge(t),
            Ok(Err(e)) => {
                eprintln!("loadgen: worker: {e:#}");
                count(&mut all.errors, "worker_failed", 1);
            }
            Err(_) => count(&mut all.errors, "worker_panicked", 1),
        }
    }
    // Calls of connections whose setup never finished.
    let accounted = all.sent + all.not_sent;
    all.not_sent += total.saturating_sub(accounted);

    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let connect_secs = if connected > 0 {
        phase
            .last_connected_us
            .load(Ordering::SeqCst)
            .saturating_sub(t0_us) as f64
            / 1e6
    } else {
        0.0
    };
    // Sending: from the start to the last send, plus one call interval.
    let send_secs = if all.sent > 0 {
        all.last_sent_us.saturating_sub(start_us) as f64 / 1e6 + 1.0 / o.rate
    } else {
        0.0
    };
    // Answered calls per second, from the start to the last reply.
    let reply_secs = all.last_reply_us.saturating_sub(start_us) as f64 / 1e6;
    Ok(serde_json::json!({
        "mode": "rpc",
        "protocol": "centrifugo",
        "encoding": format!("{:?}", cfg.encoding).to_lowercase(),
        "auth": cfg.auth.label(),
        "method": o.method,
        "payload_size": cfg.payload_size,
        "connections": cfg.connections,
        "connected": connected,
        "connect_secs": round3(connect_secs),
        "setup_ms": stats::setup_json(&all.setup_hist),
        "target_rate": o.rate,
        "duration_secs": o.duration.as_secs_f64(),
        "calls": total,
        "sent": all.sent,
        "ok": all.ok,
        "failed": all.failed,
        "timeouts": all.timeouts,
        "not_sent": all.not_sent,
        "send_rate": if send_secs > 0.0 { round1(all.sent as f64 / send_secs) } else { 0.0 },
        "call_rate": if reply_secs > 0.0 { round1(all.ok as f64 / reply_secs) } else { 0.0 },
        "latency_us": stats::latency_json(&all.hist),
        // The same calls, to the kernel's receive time of the reply at the socket.
        "latency_socket_us": stats::latency_json(&all.sock_hist),
        "send_lag_us": stats::latency_json(&all.lag_hist),
        "errors": all.errors,
        "loadgen_cpu_secs": round3(stats::cpu_secs()),
    }))
}
