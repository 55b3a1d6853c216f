//! `fanout-floor`: the least work a broker can do for the load generator's fan-out
//! workloads, to measure what the machine itself costs.
//!
//! It speaks just enough of the Centrifugo JSON protocol for `ferrocast-loadgen --publish
//! client`: every connection is answered `connect` (and `subscribe`, which makes it a
//! subscriber); each `publish` command from any connection becomes one push frame, built
//! once and written with one blocking `write` to every subscriber socket in a loop, on the
//! publisher's reader thread. No channels, queues, tasks, history or limits: what is left is
//! the kernel's cost of delivering one WebSocket frame per subscriber over loopback, plus
//! the load generator's own cost. `bench/run.sh` runs it with the broker's pinning (W1f).
//!
//! Usage: `fanout-floor --port P [--drop-one-in N]` (127.0.0.1 only; runs until killed;
//! `--drop-one-in N` writes every N-th publication to nobody, to check that the load
//! generator counts losses). When a publisher
//! connection ends it prints to stderr how many broadcasts it caused and their duration
//! (first write to last write), one line per publisher (per load generator run).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

fn main() {
    let mut port: u16 = 0;
    let mut drop_one_in: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), value) {
            ("--port", Some(p)) if p <= u64::from(u16::MAX) => port = p as u16,
            ("--drop-one-in", Some(n)) => drop_one_in = n,
            _ => {
                eprintln!("usage: fanout-floor --port P [--drop-one-in N]");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fanout-floor: bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let subscribers: Subscribers = Arc::default();
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        let subs = subscribers.clone();
        // Handshakes on their own thread; a publisher keeps its thread for its commands.
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, subs, drop_one_in) {
                eprintln!("fanout-floor: connection ended: {e}");
            }
        });
    }
}

/// Handshake, first frame, then (publishers only) the command loop.
fn serve(stream: TcpStream, subs: Subscribers, drop_one_in: u64) -> Result<(), tungstenite::Error> {
    let raw = stream.try_clone()?;
    let mut ws = tungstenite::accept(stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })?;
    let first = ws.read()?.into_text()?;
    let mut reply = String::from("{\"id\":1,\"connect\":{\"client\":\"floor\",\"version\":\"0\"}}");
    if first.contains("\"subscribe\"") {
        reply.push_str("\n{\"id\":2,\"subscribe\":{}}");
        ws.send(Message::text(reply))?;
        // Nothing is read from subscribers again (the floor sends no pings); `raw` is a
        // duplicate of the socket, which stays open when the WebSocket is dropped.
        if let Ok(mut s) = subs.lock() {
            s.push(raw);
        }
        drop(ws);
        return Ok(());
    }
    ws.send(Message::text(reply))?;
    let mut durations: Vec<u64> = Vec::new();
    let ended = publisher(&mut ws, &subs, drop_one_in, &mut durations);
    if !durations.is_empty() {
        report(&mut durations);
    }
    ended
}

/// Answers `publish` commands, each written to every subscriber (except every
/// `drop_one_in`-th, when not 0); records how long each broadcast took (first write to
/// last) in `durations`.
fn publisher(
    ws: &mut tungstenite::WebSocket<TcpStream>,
    subs: &Subscribers,
    drop_one_in: u64,
    durations: &mut Vec<u64>,
) -> Result<(), tungstenite::Error> {
    let mut frame = Vec::with_capacity(512);
    let mut count: u64 = 0;
    loop {
        let Message::Text(text) = ws.read()? else {
            continue;
        };
        let mut answers = String::new();
        for line in text.as_str().split('\n') {
            let (Some(id), Some(data)) = (field(line, "{\"id\":", ','), data_of(line)) else {
                continue;
            };
            push_frame(&mut frame, data);
            count += 1;
            let dropped = drop_one_in > 0 && count.is_multiple_of(drop_one_in);
            let started = Instant::now();
            if !dropped && let Ok(mut s) = subs.lock() {
                // A subscriber that failed is dropped; the load generator reports the loss.
                s.retain_mut(|sock| sock.write_all(&frame).is_ok());
            }
            durations.push(started.elapsed().as_micros() as u64);
            if !answers.is_empty() {
                answers.push('\n');
            }
            answers.push_str(&format!("{{\"id\":{id},\"publish\":{{}}}}"));
        }
        if !answers.is_empty() {
            ws.send(Message::text(answers))?;
        }
    }
}

/// Text between `key` and `end` (the command id).
fn field<'a>(line: &'a str, key: &str, end: char) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?;
    Some(&rest[..rest.find(end)?])
}

/// The `data` value of a publish command written by the load generator (`..."data":{...}}}`).
fn data_of(line: &str) -> Option<&str> {
    let at = line.find("\"data\":")? + "\"data\":".len();
    line.get(at..line.len().checked_sub(2)?)
}

/// One unmasked text frame carrying a publication push (Centrifugo JSON shape).
fn push_frame(frame: &mut Vec<u8>, data: &str) {
    let body = format!(
        "{{\"push\":{{\"channel\":\"bench:shared\",\"pub\":{{\"data\":{data},\"offset\":1}}}}}}"
    );
    frame.clear();
    frame.push(0x81);
    match body.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(body.as_bytes());
}

fn report(durations: &mut Vec<u64>) {
    durations.sort_unstable();
    let at = |q: f64| durations[((durations.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{} broadcasts, duration p50 {} us, p99 {} us, max {} us",
        durations.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    durations.clear();
}
