//! A subscriber that behaves like the SDKs: it follows one channel, reconnects to
//! another node when its connection drops, resubscribes when told to (unsubscribe 2500),
//! and always asks to recover from the last offset it saw. It records every sequence
//! number it receives so tests can account for each publication.

use crate::client::Client;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What a recovering subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// `data.seq` of every publication delivered to the application, in order.
    pub seqs: Vec<u64>,
    /// Reconnections.
    pub reconnects: u32,
    /// Resubscriptions after an unsubscribe 2500.
    pub resubscribes: u32,
    /// Subscriptions that asked to recover and got `recovered: false`.
    pub unrecovered: u32,
    /// Close codes received.
    pub closes: Vec<u16>,
    /// Successful subscribe replies.
    pub subscriptions: u32,
    /// Stream offset of each entry of `seqs`.
    pub offsets: Vec<u64>,
    /// (index into `seqs`, what happened there): reconnects, resubscribes, recoveries.
    pub marks: Vec<(usize, String)>,
}

impl Received {
    fn mark(&mut self, what: String) {
        let at = self.seqs.len();
        self.marks.push((at, what));
    }
}

/// A running recovering subscriber.
pub struct RecoveringSubscriber {
    state: Arc<Mutex<Received>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Position {
    offset: u64,
    epoch: String,
}

impl RecoveringSubscriber {
    /// Starts following `channel` through the nodes at `urls` (tried in turn).
    pub fn start(urls: Vec<String>, token: String, channel: String) -> RecoveringSubscriber {
        let state = Arc::new(Mutex::new(Received::default()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(urls, token, channel, state.clone(), stop_rx));
        RecoveringSubscriber { state, stop, task }
    }

    /// A snapshot of what was received so far.
    pub fn received(&self) -> Received {
        self.state.lock().unwrap().clone()
    }

    /// Waits until `n` publications were received (or `within` passed).
    pub async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.state.lock().unwrap().seqs.len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits until the first subscription succeeded.
    pub async fn wait_subscribed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.state.lock().unwrap().subscriptions > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops and returns everything received.
    pub async fn stop(self) -> Received {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.state.lock().unwrap().clone()
    }
}

fn record(state: &Mutex<Received>, pos: &mut Option<Position>, publication: &Value) {
    if let Some(seq) = publication["data"]["seq"].as_u64() {
        let mut st = state.lock().unwrap();
        st.seqs.push(seq);
        st.offsets.push(publication["offset"].as_u64().unwrap_or(0));
    }
    if let (Some(p), Some(o)) = (pos.as_mut(), publication["offset"].as_u64()) {
        p.offset = o;
    }
}

async fn subscribe(
    c: &mut Client,
    channel: &str,
    pos: &mut Option<Position>,
    state: &Mutex<Received>,
) -> Result<bool, (u16, String)> {
    let mut req = json!({"channel": channel, "recoverable": true});
    if let Some(p) = pos.as_ref() {
        req["recover"] = json!(true);
        req["offset"] = json!(p.offset);
        req["epoch"] = json!(p.epoch);
    }
    state.lock().unwrap().mark(format!("subscribe {req}"));
    let r = c.try_command("subscribe", req).await?;
    let Some(s) = r.get("subscribe") else {
        return Ok(false);
    };
    {
        let mut st = state.lock().unwrap();
        st.subscriptions += 1;
        if s["was_recovering"] == json!(true) && s["recovered"] != json!(true) {
            st.unrecovered += 1;
        }
    }
    let epoch = s["epoch"].as_str().unwrap_or("").to_string();
    let offset = s["offset"].as_u64().unwrap_or(0);
    let recovered_pubs = s["publications"].as_array().cloned().unwrap_or_default();
    state.lock().unwrap().mark(format!(
        "subscribed offset {offset} recovered {} with {} publications",
        s["recovered"],
        recovered_pubs.len()
    ));
    *pos = Some(Position { offset, epoch });
    for p in &recovered_pubs {
        record(state, pos, p);
    }
    if let Some(p) = pos.as_mut() {
        p.offset = offset;
    }
    Ok(true)
}

async fn run(
    urls: Vec<String>,
    token: String,
    channel: String,
    state: Arc<Mutex<Received>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pos: Option<Position> = None;
    let mut attempt = 0usize;
    let mut first = true;
    while !*stop.borrow() {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        if !first {
            state.lock().unwrap().reconnects += 1;
            tokio::time::sleep(Duration::from_millis(50 + fastrand_ms())).await;
        }
        first = false;
        let Some(mut c) = Client::try_open(url).await else {
            continue;
        };
        match c.try_command("connect", json!({"token": token})).await {
            Ok(r) if r.get("connect").is_some() => {}
            _ => continue,
        }
        match subscribe(&mut c, &channel, &mut pos, &state).await {
            Ok(true) => {}
            Ok(false) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => continue,
        }
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return,
                n = c.next_push_or_close(Duration::from_millis(500)) => n,
            };
            match next {
                Ok(None) => continue,
                Ok(Some(push)) => {
                    if push["channel"] != json!(channel) {
                        continue;
                    }
                    if let Some(p) = push.get("pub") {
                        record(&state, &mut pos, p);
                    } else if push["unsubscribe"]["code"] == json!(2500) {
                        state.lock().unwrap().resubscribes += 1;
                        match subscribe(&mut c, &channel, &mut pos, &state).await {
                            Ok(true) => {}
                            _ => break,
                        }
                    }
                }
                Err((code, reason)) => {
                    let mut st = state.lock().unwrap();
                    st.closes.push(code);
                    st.mark(format!("closed {code} {reason}"));
                    drop(st);
                    if (3500..4000).contains(&code) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

fn fastrand_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos % 150)
}

/// Checks a sequence: returns (missing, duplicated, out of order) against `0..n`.
pub fn account(seqs: &[u64], n: u64) -> (u64, u64, u64) {
    let mut seen = vec![0u32; n as usize];
    let mut out_of_order = 0;
    let mut last: Option<u64> = None;
    for &s in seqs {
        if let Some(l) = last
            && s <= l
        {
            out_of_order += 1;
        }
        last = Some(s);
        if (s as usize) < seen.len() {
            seen[s as usize] += 1;
        }
    }
    let missing = seen.iter().filter(|c| **c == 0).count() as u64;
    let duplicated = seen.iter().map(|c| u64::from(c.saturating_sub(1))).sum();
    (missing, duplicated, out_of_order)
}

/// Publishes `{"seq": n}` through a node's API with an idempotency key, retrying
/// (against the next node) until it succeeds; returns the number of retries.
pub async fn publish_seq(nodes: &[std::net::SocketAddr], channel: &str, seq: u64) -> u32 {
    let body =
        json!({"channel": channel, "data": {"seq": seq}, "idempotency_key": format!("seq-{seq}")});
    let mut retries = 0;
    loop {
        let addr = nodes[(seq as usize + retries as usize) % nodes.len()];
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            crate::node::http_request_opt(
                addr,
                "POST",
                "/api/publish",
                &[("X-API-Key", crate::node::API_KEY)],
                body.to_string().as_bytes(),
            ),
        )
        .await;
        if let Ok(Some((200, text))) = res
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v.get("result").is_some()
        {
            return retries;
        }
        retries += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(retries < 400, "publish of seq {seq} kept failing");
    }
}
