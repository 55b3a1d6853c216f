//! `ferrocast-loadgen`: opens many WebSocket subscribers against ferrocast (Centrifugo
//! client protocol v2, JSON or Protobuf) or nats-server (NATS protocol over WebSocket),
//! publishes at a fixed rate through a chosen path, and prints one JSON line with delivery
//! accounting (lost, duplicated, out of order) and end-to-end latency percentiles. With
//! `--rpc` the connections send `rpc` commands at a fixed rate instead and the line has the
//! calls' latency ([`rpc`]). Connections connect with nothing (`--insecure`), a signed
//! token each (`--token-secret`) or connect data for the broker's connect proxy
//! (`--connect-data`).
//!
//! Threads: `--threads` worker threads, each a single-threaded tokio runtime owning its
//! connections and counters (no locks on the receive path); the main thread runs the
//! publisher and the clock. Everything is bounded in time and stops by itself.

mod batch;
mod centrifugo;
mod config;
mod http;
mod nats;
mod patterns;
mod pipelined;
mod protobuf;
mod publish;
mod redis;
mod replies;
mod rpc;
mod scan;
mod stamped;
mod stats;
mod subscriber;
mod ws;

use anyhow::{Context, bail};
use clap::Parser;
use config::{Auth, ChannelMode, Config, Encoding, Protocol, PublishPath, Target};
use hdrhistogram::Histogram;
use stats::{ConnResult, Errors, Shared, ThreadStats, count};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use subscriber::WorkerCtx;
use tokio::sync::watch;

fn parse_channels(s: &str) -> Result<ChannelMode, String> {
    match s {
        "shared" => Ok(ChannelMode::Shared),
        "personal" => Ok(ChannelMode::Personal),
        _ => match s.strip_prefix("many:").map(str::parse::<usize>) {
            Some(Ok(k)) if k > 0 => Ok(ChannelMode::Many(k)),
            _ => Err("expected shared, many:K (K > 0) or personal".into()),
        },
    }
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load generator for ferrocast (and nats-server, for comparison)"
)]
struct Args {
    /// WebSocket endpoint(s), 127.0.0.1 only; repeatable or comma-separated. Connection i
    /// uses url[i % n]; the publisher uses the first.
    #[arg(long = "url", value_delimiter = ',', required = true)]
    urls: Vec<String>,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// New connections per second (0: all at once).
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// shared (one channel), many:K (connection i on channel i % K), personal (one per connection).
    #[arg(long, default_value = "shared", value_parser = parse_channels)]
    channels: ChannelMode,
    /// Channel name prefix: channels are PREFIX:shared, PREFIX:c<j>, PREFIX:p<i> (NATS: `.`).
    #[arg(long, default_value = "bench")]
    channel_prefix: String,
    /// Every subscriber connection subscribes to this wildcard pattern instead of its
    /// channel (in a namespace allowing wildcard subscriptions, e.g. 'wild:>') and expects
    /// every publication of the run; sequence numbers are then counted over all channels.
    #[arg(long, conflicts_with = "rpc")]
    subscribe_pattern: Option<String>,
    /// Distinct wildcard patterns that no publication matches, held by extra connections
    /// subscribed before the measured subscribers connect (pattern k: '<channel k % n>.x<k>.*').
    #[arg(long, default_value_t = 0)]
    background_patterns: usize,
    /// Patterns per background connection (the broker's client.channel_limit must allow it).
    #[arg(long, default_value_t = 1000)]
    patterns_per_connection: usize,
    #[arg(long, value_enum, default_value = "centrifugo")]
    protocol: Protocol,
    /// Encoding of the Centrifugo protocol, for the subscribers and --publish client
    /// (protobuf: subprotocol centrifuge-protobuf, binary frames); not with --protocol nats.
    #[arg(long, value_enum, default_value = "json")]
    encoding: Encoding,
    #[arg(long, value_enum, default_value = "http")]
    publish: PublishPath,
    /// Messages per second (all channels together).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of publishing (or of holding the connections with --idle).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to keep receiving after the last publish (ends early once all arrived).
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Bytes of each JSON payload.
    #[arg(long, default_value_t = 128)]
    payload_size: usize,
    /// Server API key (X-API-Key) for --publish http.
    #[arg(long, default_value = "", env = "FERROCAST_LOADGEN_API_KEY")]
    api_key: String,
    /// Server API base URL, default http://<host:port of the first --url>/api.
    #[arg(long)]
    api_url: Option<String>,
    /// Outstanding pipelined API requests (and XADD commands with --publish redis).
    #[arg(long, default_value_t = 64)]
    http_inflight: usize,
    /// Redis holding the backend command stream, for --publish redis.
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis_addr: SocketAddr,
    /// The backend command stream key, for --publish redis.
    #[arg(long, default_value = "ferrocast:api")]
    redis_stream: String,
    /// Connect without a token and without data (the broker must run with
    /// client.insecure = true). The Centrifugo protocol needs one of --insecure,
    /// --token-secret and --connect-data.
    #[arg(long)]
    insecure: bool,
    /// Connect with an HS256 connection token signed with this secret (the broker's
    /// client.token.hmac_secret_key), one per connection, `sub` = bench-<i> (no expiry).
    #[arg(long, conflicts_with_all = ["insecure", "connect_data"])]
    token_secret: Option<String>,
    /// Connect without a token, sending this JSON as the connect `data` (for the broker's
    /// connect proxy, client.proxy.connect); `{i}` is replaced by the connection index,
    /// e.g. '{"user":"bench-{i}"}'.
    #[arg(long, conflicts_with = "insecure")]
    connect_data: Option<String>,
    /// RPC mode: the connections only connect (no subscription), then send `rpc` commands
    /// (method --rpc-method, data: a JSON payload of --payload-size bytes) at --rate calls
    /// per second in total for --duration seconds, call g on connection g % connections
    /// at g / rate seconds, whether or not earlier calls were answered; prints the latency
    /// from sending each call to reading its reply.
    #[arg(long, conflicts_with = "idle")]
    rpc: bool,
    /// Method of the `rpc` commands (--rpc).
    #[arg(long, default_value = "echo")]
    rpc_method: String,
    /// Seconds after which an unanswered call counts as timed out (--rpc; a later reply
    /// counts as a timeout too). The run waits at most this long for the last replies.
    #[arg(long, default_value_t = 5.0)]
    call_timeout: f64,
    /// Only open and subscribe the connections and hold them for --duration seconds.
    #[arg(long)]
    idle: bool,
    /// Seconds allowed for one connection's setup; the connect phase ends at
    /// connections / connect-rate + this.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Receiver threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Touch this file once every connection is set up (for scripts measuring memory).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Free text copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

/// host:port of `scheme://host:port/path`, resolved, loopback only.
fn loopback_addr(url: &str, schemes: &[&str]) -> anyhow::Result<(SocketAddr, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("{url}: no scheme"))?;
    if !schemes.contains(&scheme) {
        bail!("{url}: scheme must be one of {schemes:?}");
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: bad host:port"))?
        .next()
        .with_context(|| format!("{url}: does not resolve"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: only loopback targets are allowed");
    }
    Ok((addr, path))
}

fn build_config(a: &Args) -> anyhow::Result<Config> {
    if a.connections == 0 {
        bail!("--connections must be > 0");
    }
    if (a.rate.is_nan() || a.rate <= 0.0) && !a.idle {
        bail!("--rate must be > 0");
    }
    if a.protocol == Protocol::Nats && a.encoding != Encoding::Json {
        bail!("--encoding applies to --protocol centrifugo only (NATS has its text protocol)");
    }
    let auth = match (a.protocol, &a.token_secret, &a.connect_data) {
        (Protocol::Nats, None, None) => Auth::Insecure,
        (Protocol::Nats, _, _) => {
            bail!("--token-secret and --connect-data apply to --protocol centrifugo only")
        }
        (Protocol::Centrifugo, Some(secret), _) => {
            // One per subscriber and one for the --publish client publisher.
            Auth::Tokens(config::sign_tokens(secret, a.connections + 1)?)
        }
        (Protocol::Centrifugo, None, Some(d)) => {
            serde_json::from_str::<serde::de::IgnoredAny>(&config::connect_data(d, 0))
                .with_context(|| format!("--connect-data {d:?} is not JSON"))?;
            Auth::ConnectData(d.clone())
        }
        (Protocol::Centrifugo, None, None) if a.insecure => Auth::Insecure,
        (Protocol::Centrifugo, None, None) => {
            bail!(
                "pass --insecure (broker with client.insecure = true), --token-secret or --connect-data"
            )
        }
    };
    if a.rpc && a.protocol == Protocol::Nats {
        bail!("--rpc applies to --protocol centrifugo only");
    }
    let mut targets = Vec::new();
    for u in &a.urls {
        let (addr, _) = loopback_addr(u, &["ws"])?;
        targets.push(Target {
            url: u.clone(),
            addr,
        });
    }
    let api = match &a.api_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{}/api", targets[0].addr),
    };
    let (api_addr, api_base) = loopback_addr(&api, &["http"])?;
    let sep = if a.protocol == Protocol::Nats {
        "."
    } else {
        ":"
    };
    let p = &a.channel_prefix;
    let channels: Vec<String> = match a.channels {
        ChannelMode::Shared => vec![format!("{p}{sep}shared")],
        ChannelMode::Many(k) => (0..k).map(|j| format!("{p}{sep}c{j}")).collect(),
        ChannelMode::Personal => (0..a.connections)
            .map(|i| format!("{p}{sep}p{i}"))
            .collect(),
    };
    Ok(Config {
        targets,
        protocol: a.protocol,
        encoding: a.encoding,
        publish: a.publish,
        channels,
        mode: a.channels,
        subscribe_pattern: a.subscribe_pattern.clone(),
        connections: a.connections,
        connect_rate: a.connect_rate,
        connect_timeout: Duration::from_secs_f64(a.connect_timeout.max(0.1)),
        payload_size: a.payload_size,
        api_addr,
        api_path: format!("{}/publish", api_base.trim_end_matches('/')),
        api_key: a.api_key.clone(),
        http_inflight: a.http_inflight,
        redis_addr: a.redis_addr,
        redis_stream: a.redis_stream.clone(),
        auth,
    })
}

struct WorkerOut {
    conns: Vec<ConnResult>,
    hist: Histogram<u64>,
    sock_hist: Histogram<u64>,
    setup_hist: Histogram<u64>,
    errors: Errors,
    first_recv_us: u64,
    last_recv_us: u64,
    pings: u64,
}

fn worker(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    mine: Vec<(usize, Instant)>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<WorkerOut> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, async move {
        let ctx = Rc::new(WorkerCtx {
            cfg: cfg.clone(),
            shared,
            stats: ThreadStats::new(),
        });
        let mut handles = Vec::with_capacity(mine.len());
        for (i, at) in mine {
            let ch = cfg.channel_of(i);
            let at = tokio::time::Instant::from_std(at);
            let (ctx, stop) = (ctx.clone(), stop.clone());
            let h = match (cfg.protocol, cfg.encoding) {
                (Protocol::Centrifugo, Encoding::Json) => {
                    tokio::task::spawn_local(subscriber::run::<
                        centrifugo::Subscriber<centrifugo::JsonCodec>,
                    >(ctx, i, ch, at, stop))
                }
                (Protocol::Centrifugo, Encoding::Protobuf) => {
                    tokio::task::spawn_local(subscriber::run::<
                        centrifugo::Subscriber<centrifugo::ProtobufCodec>,
                    >(ctx, i, ch, at, stop))
                }
                (Protocol::Nats, _) => tokio::task::spawn_local(
                    subscriber::run::<nats::Subscriber>(ctx, i, ch, at, stop),
                ),
            };
            handles.push((ch, h));
        }
        let mut conns = Vec::with_capacity(handles.len());
        for (ch, h) in handles {
            conns.push(h.await.unwrap_or_else(|_| {
                ctx.stats.error("task_panicked");
                ConnResult {
                    channel: ch,
                    ..Default::default()
                }
            }));
        }
        WorkerOut {
            conns,
            hist: ctx.stats.hist.replace(stats::new_histogram()),
            sock_hist: ctx.stats.sock_hist.replace(stats::new_histogram()),
            setup_hist: ctx.stats.setup_hist.replace(stats::new_histogram()),
            errors: ctx.stats.errors.take(),
            first_recv_us: ctx.stats.first_recv_us.get(),
            last_recv_us: ctx.stats.last_recv_us.get(),
            pings: ctx.stats.pings.get(),
        }
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = Arc::new(build_config(&args)?);
    scan::init_clock();
    if args.rpc {
        let opts = rpc::Options {
            method: args.rpc_method.clone(),
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration.max(0.0)),
            call_timeout: Duration::from_secs_f64(args.call_timeout.max(0.001)),
            threads: args.threads.clamp(1, 64),
        };
        let mut out = rpc::run(cfg, &opts)?;
        out["label"] = serde_json::json!(args.label);
        println!("{out}");
        return Ok(());
    }
    let shared = Shared::new(cfg.channels.len());
    let (stop_tx, stop_rx) = watch::channel(false);

    // Background patterns first: in place before the measured subscribers connect.
    let mut background = None;
    let mut background_ready = patterns::Ready::default();
    if args.background_patterns > 0 {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (holders_cfg, stop) = (cfg.clone(), stop_rx.clone());
        let (total, per_conn) = (args.background_patterns, args.patterns_per_connection);
        // After the subscribers and the --publish client publisher.
        let first_index = cfg.connections + 1;
        background = Some(
            std::thread::Builder::new()
                .name("loadgen-patterns".into())
                .spawn(move || {
                    patterns::hold(holders_cfg, total, per_conn, first_index, ready_tx, stop)
                })?,
        );
        let wait = cfg.connect_timeout + Duration::from_secs(5);
        background_ready = ready_rx
            .recv_timeout(wait)
            .context("background pattern connections did not get ready")?;
        eprintln!(
            "loadgen: {} of {} background patterns subscribed in {} s",
            background_ready.subscribed, args.background_patterns, background_ready.setup_secs
        );
    }

    // Connection i starts at t0 + i / connect_rate.
    let threads = args.threads.clamp(1, 64);
    let t0 = Instant::now() + Duration::from_millis(20);
    let t0_us = scan::now_us() + 20_000;
    let mut per_thread: Vec<Vec<(usize, Instant)>> = vec![Vec::new(); threads];
    for i in 0..cfg.connections {
        let at = if cfg.connect_rate > 0.0 {
            t0 + Duration::from_secs_f64(i as f64 / cfg.connect_rate)
        } else {
            t0
        };
        per_thread[i % threads].push((i, at));
    }
    let mut joins = Vec::new();
    for (t, mine) in per_thread.into_iter().enumerate() {
        let (cfg, shared, stop) = (cfg.clone(), shared.clone(), stop_rx.clone());
        joins.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || worker(cfg, shared, mine, stop))?,
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let (publish, publish_start_us, coordinator_errors) = local.block_on(&rt, async {
        let mut errors = Errors::new();
        // Connect phase.
        let ramp = if cfg.connect_rate > 0.0 {
            cfg.connections as f64 / cfg.connect_rate
        } else {
            0.0
        };
        let connect_deadline =
            t0 + Duration::from_secs_f64(ramp) + cfg.connect_timeout + Duration::from_secs(1);
        let mut last_report = Instant::now();
        loop {
            let done =
                shared.subscribed.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst);
            if done >= cfg.connections || Instant::now() >= connect_deadline {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!(
                    "loadgen: {} subscribed, {} failed of {}",
                    shared.subscribed.load(Ordering::SeqCst),
                    shared.failed.load(Ordering::SeqCst),
                    cfg.connections
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shared.publishing.store(true, Ordering::SeqCst);
        let subscribed = shared.subscribed.load(Ordering::SeqCst);
        eprintln!(
            "loadgen: connect phase over: {subscribed} of {} subscribed",
            cfg.connections
        );
        let unfinished = cfg.connections - subscribed - shared.failed.load(Ordering::SeqCst);
        if unfinished > 0 {
            count(
                &mut errors,
                "setup_unfinished_at_deadline",
                unfinished as u64,
            );
        }
        if let Some(f) = &args.ready_file {
            let _ = std::fs::write(f, format!("{subscribed}\n"));
        }
        if args.idle {
            tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
            return (None, 0, errors);
        }
        let names = Rc::new(cfg.channels.clone());
        let mut publisher = match publish::Publisher::connect(&cfg, names).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("loadgen: publisher: {e:#}");
                count(&mut errors, "publisher_connect_failed", 1);
                return (None, 0, errors);
            }
        };
        let publish_start_us = scan::now_us();
        let drain = Duration::from_secs_f64(args.drain_secs);
        let outcome = publish::run(
            &mut publisher,
            args.rate,
            Duration::from_secs_f64(args.duration),
            cfg.channels.len(),
            cfg.subscribe_pattern.is_some(),
            drain,
        )
        .await;
        // Drain: until every expected delivery arrived or the grace period is over.
        let expected: u64 = if cfg.subscribe_pattern.is_some() {
            let subs: u64 = shared
                .subs_per_channel
                .iter()
                .map(|s| u64::from(s.load(Ordering::SeqCst)))
                .sum();
            outcome.published.iter().sum::<u64>() * subs
        } else {
            outcome
                .published
                .iter()
                .zip(shared.subs_per_channel.iter())
                .map(|(p, s)| p * u64::from(s.load(Ordering::SeqCst)))
                .sum()
        };
        let drain_end = Instant::now() + drain;
        while Instant::now() < drain_end
            && shared.received_unique.load(Ordering::Relaxed) < expected
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (Some(outcome), publish_start_us, errors)
    });
    let _ = stop_tx.send(true);

    let mut conns = Vec::with_capacity(cfg.connections);
    let mut hist = stats::new_histogram();
    let mut sock_hist = stats::new_histogram();
    let mut setup_hist = stats::new_histogram();
    let mut errors = coordinator_errors;
    for (k, n) in &background_ready.errors {
        count(&mut errors, k.clone(), *n);
    }
    if let Some(b) = background {
        match b.join() {
            Ok(Ok(e)) => {
                for (k, n) in e {
                    count(&mut errors, k, n);
                }
            }
            Ok(Err(e)) => {
                eprintln!("loadgen: background patterns: {e:#}");
                count(&mut errors, "background_failed", 1);
            }
            Err(_) => count(&mut errors, "background_panicked", 1),
        }
    }
    let (mut first_recv, mut last_recv, mut pings) = (u64::MAX, 0u64, 0u64);
    for j in joins {
        match j.join() {
            Ok(Ok(w)) => {
                conns.extend(w.conns);
                let _ = hist.add(&w.hist);
                let _ = sock_hist.add(&w.sock_hist);
                let _ = setup_hist.add(&w.setup_hist);
                for (k, n) in w.errors {
                    count(&mut errors, k, n);
                }
                first_recv = first_recv.min(w.first_recv_us);
                last_recv = last_recv.max(w.last_recv_us);
                pings += w.pings;
            }
            Ok(Err(e)) => {
                eprintln!("loadgen: worker: {e:#}");
                count(&mut errors, "worker_failed", 1);
            }
            Err(_) => count(&mut errors, "worker_panicked", 1),
        }
    }

    let subscribed = conns.iter().filter(|c| c.subscribed).count();
    let last_sub_us = shared.last_subscribed_us.load(Ordering::SeqCst);
    let connect_secs = if subscribed > 0 {
        last_sub_us.saturating_sub(t0_us) as f64 / 1e6
    } else {
        0.0
    };
    let (published_per_ch, publish_secs) = match &publish {
        Some(o) => (o.published.clone(), o.publish_secs),
        None => (vec![0; cfg.channels.len()], 0.0),
    };
    if let Some(o) = &publish {
        for (k, n) in &o.errors {
            count(&mut errors, k.clone(), *n);
        }
    }
    let published: u64 = published_per_ch.iter().sum();
    let (mut expected, mut unique, mut dup, mut ooo) = (0u64, 0u64, 0u64, 0u64);
    for c in conns.iter().filter(|c| c.subscribed) {
        expected += match cfg.subscribe_pattern {
            Some(_) => published_per_ch.iter().sum::<u64>(),
            None => published_per_ch[c.channel as usize],
        };
        unique += c.unique;
        dup += c.duplicated;
        ooo += c.out_of_order;
    }
    let received = unique + dup;
    let lost = expected.saturating_sub(unique);
    let window = last_recv.saturating_sub(publish_start_us) as f64 / 1e6;
    let deliveries_per_sec = if received > 0 && window > 0.0 {
        received as f64 / window
    } else {
        0.0
    };
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let mode = match cfg.mode {
        ChannelMode::Shared => "shared".to_string(),
        ChannelMode::Many(k) => format!("many:{k}"),
        ChannelMode::Personal => "personal".to_string(),
    };
    let out = serde_json::json!({
        "label": args.label,
        "protocol": format!("{:?}", cfg.protocol).to_lowercase(),
        // The Centrifugo protocol's encoding (null for NATS).
        "encoding": match cfg.protocol {
            Protocol::Centrifugo => Some(format!("{:?}", cfg.encoding).to_lowercase()),
            Protocol::Nats => None,
        },
        "auth": cfg.auth.label(),
        "publish": if args.idle { "none".to_string() } else { format!("{:?}", cfg.publish).to_lowercase() },
        "channels_mode": mode,
        "channels": cfg.channels.len(),
        "subscribe_pattern": cfg.subscribe_pattern,
        "background_patterns": args.background_patterns,
        "background_patterns_subscribed": background_ready.subscribed,
        "background_setup_secs": background_ready.setup_secs,
        "payload_size": cfg.payload_size,
        "connections": cfg.connections,
        "subscribed": subscribed,
        "connect_secs": round3(connect_secs),
        "connect_rate": if connect_secs > 0.0 { round1(subscribed as f64 / connect_secs) } else { 0.0 },
        "target_rate": if args.idle { 0.0 } else { args.rate },
        "published": published,
        "publish_secs": round3(publish_secs),
        "publish_rate": if publish_secs > 0.0 { round1(published as f64 / publish_secs) } else { 0.0 },
        "expected": expected,
        "received": received,
        "lost": lost,
        "duplicated": dup,
        "out_of_order": ooo,
        "deliveries_per_sec": deliveries_per_sec.round(),
        "latency_us": stats::latency_json(&hist),
        // The same messages, to the kernel's receive time at the subscriber's socket.
        "latency_socket_us": stats::latency_json(&sock_hist),
        "setup_ms": stats::setup_json(&setup_hist),
        "pings_answered": pings,
        "errors": errors,
        "loadgen_cpu_secs": round3(stats::cpu_secs()),
    });
    let _ = first_recv;
    println!("{out}");
    Ok(())
}
