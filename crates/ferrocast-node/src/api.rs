//! Server API operations, independent of how they arrive (HTTP API, backend stream).
//!
//! [`call`] takes a method name and its JSON body and returns the JSON result, with the
//! same shapes as Centrifugo's server API.

use crate::metrics as m;
use crate::node::{Node, PublishParams, engine_error};
use ferrocast_engine::HistoryFilter;
use ferrocast_protocol::envelope::ControlMessage;
use ferrocast_protocol::{Disconnect, ErrorCode, ProtocolError, RawJson, StreamPosition};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Every method [`call`] knows.
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "batch",
    "user_status",
];

#[derive(Deserialize)]
struct PublishBody {
    #[serde(default)]
    channel: String,
    data: Option<RawJson>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    skip_history: bool,
}

#[derive(Deserialize)]
struct BroadcastBody {
    #[serde(default)]
    channels: Vec<String>,
    data: Option<RawJson>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    skip_history: bool,
}

#[derive(Deserialize)]
struct UserChannelBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    client: String,
}

#[derive(Deserialize)]
struct DisconnectSpec {
    code: u16,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct DisconnectBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize)]
struct RefreshBody {
    #[serde(default)]
    user: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    expire_at: i64,
}

#[derive(Deserialize)]
struct ChannelBody {
    #[serde(default)]
    channel: String,
}

#[derive(Deserialize)]
struct HistoryBody {
    #[serde(default)]
    channel: String,
    #[serde(default)]
    limit: i32,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
struct ChannelsBody {
    #[serde(default)]
    pattern: String,
}

#[derive(Deserialize)]
struct UsersBody {
    #[serde(default)]
    users: Vec<String>,
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(default)]
    commands: Vec<Map<String, Value>>,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let body = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ProtocolError::with_message(ErrorCode::BadRequest, format!("bad request: {e}"))
    })
}

fn bad(msg: &'static str) -> ProtocolError {
    ProtocolError::with_message(ErrorCode::BadRequest, msg)
}

fn position_json(p: &StreamPosition) -> Value {
    let mut m = Map::new();
    if p.offset > 0 {
        m.insert("offset".into(), json!(p.offset));
    }
    if !p.epoch.is_empty() {
        m.insert("epoch".into(), json!(p.epoch));
    }
    Value::Object(m)
}

/// Runs one server API method; records it in metrics.
pub async fn call(node: &Node, method: &str, body: &[u8]) -> Result<Value, ProtocolError> {
    let res = dispatch(node, method, body).await;
    let method_label = if METHODS.contains(&method) {
        method
    } else {
        "unknown"
    };
    count_call(method_label, res.as_ref().map(|_| ()));
    res
}

/// Counts an API call that did not go through [`call`] (the command stream's runs of
/// publishes to one channel), like [`call`] does.
pub fn count_call(method: &str, result: Result<(), &ProtocolError>) {
    let result: Cow<'_, str> = match result {
        Ok(()) => "ok".into(),
        Err(e) => e.code.to_string().into(),
    };
    m::api_call(method, &result);
}

/// The channel and parameters of a `publish` request body, parsed as the `publish` method
/// parses it.
pub fn publish_request(body: &[u8]) -> Result<(String, PublishParams), ProtocolError> {
    let b: PublishBody = parse(body)?;
    let params = PublishParams {
        data: b.data,
        info: None,
        tags: b.tags,
        idempotency_key: b.idempotency_key,
        skip_history: b.skip_history,
    };
    Ok((b.channel, params))
}

async fn dispatch(node: &Node, method: &str, body: &[u8]) -> Result<Value, ProtocolError> {
    match method {
        "publish" => {
            let (channel, params) = publish_request(body)?;
            let pos = node.publish(&channel, params).await?;
            Ok(position_json(&pos))
        }
        "broadcast" => {
            let b: BroadcastBody = parse(body)?;
            if b.channels.is_empty() {
                return Err(bad("channels required"));
            }
            if b.data.is_none() {
                return Err(bad("data required"));
            }
            let mut responses = Vec::with_capacity(b.channels.len());
            for channel in &b.channels {
                let params = PublishParams {
                    data: b.data.clone(),
                    info: None,
                    tags: b.tags.clone(),
                    idempotency_key: b.idempotency_key.clone(),
                    skip_history: b.skip_history,
                };
                responses.push(match node.publish(channel, params).await {
                    Ok(pos) => json!({ "result": position_json(&pos) }),
                    Err(e) => json!({ "error": e }),
                });
            }
            Ok(json!({ "responses": responses }))
        }
        "subscribe" | "unsubscribe" => {
            let b: UserChannelBody = parse(body)?;
            if b.user.is_empty() {
                return Err(bad("user required"));
            }
            node.rules.options(&b.channel)?;
            let msg = if method == "subscribe" {
                ControlMessage::Subscribe {
                    user: b.user,
                    client: b.client,
                    channel: b.channel,
                }
            } else {
                ControlMessage::Unsubscribe {
                    user: b.user,
                    client: b.client,
                    channel: b.channel,
                }
            };
            node.engine
                .publish_control(&msg)
                .await
                .map_err(engine_error)?;
            Ok(json!({}))
        }
        "disconnect" => {
            let b: DisconnectBody = parse(body)?;
            if b.user.is_empty() && b.client.is_empty() {
                return Err(bad("user required"));
            }
            let d = match b.disconnect {
                Some(spec) => {
                    if !(3000..=4999).contains(&spec.code) {
                        return Err(bad("disconnect code must be within 3000..4999"));
                    }
                    Disconnect {
                        code: spec.code,
                        reason: spec.reason.into(),
                    }
                }
                None => Disconnect::FORCE_DISCONNECT,
            };
            let msg = ControlMessage::Disconnect {
                user: b.user,
                client: b.client,
                code: d.code,
                reason: d.reason.into_owned(),
            };
            node.engine
                .publish_control(&msg)
                .await
                .map_err(engine_error)?;
            Ok(json!({}))
        }
        "refresh" => {
            let b: RefreshBody = parse(body)?;
            if b.user.is_empty() {
                return Err(bad("user required"));
            }
            let msg = ControlMessage::Refresh {
                user: b.user,
                client: b.client,
                expired: b.expired,
                expire_at: b.expire_at,
            };
            node.engine
                .publish_control(&msg)
                .await
                .map_err(engine_error)?;
            Ok(json!({}))
        }
        "user_status" => {
            let b: UsersBody = parse(body)?;
            if b.users.len() > 1000 {
                return Err(bad("at most 1000 users per call"));
            }
            let online = node
                .engine
                .user_status(&b.users)
                .await
                .map_err(engine_error)?;
            let statuses: Vec<Value> = b
                .users
                .iter()
                .zip(online)
                .map(|(u, o)| json!({"user": u, "online": o}))
                .collect();
            Ok(json!({ "statuses": statuses }))
        }
        "presence" => {
            let b: ChannelBody = parse(body)?;
            if !node.rules.options(&b.channel)?.presence {
                return Err(ProtocolError::new(ErrorCode::NotAvailable));
            }
            let p = node
                .engine
                .presence(&b.channel)
                .await
                .map_err(engine_error)?;
            let p: BTreeMap<_, _> = p.into_iter().collect();
            Ok(json!({ "presence": p }))
        }
        "presence_stats" => {
            let b: ChannelBody = parse(body)?;
            if !node.rules.options(&b.channel)?.presence {
                return Err(ProtocolError::new(ErrorCode::NotAvailable));
            }
            let s = node
                .engine
                .presence_stats(&b.channel)
                .await
                .map_err(engine_error)?;
            Ok(json!({ "num_clients": s.num_clients, "num_users": s.num_users }))
        }
        "history" => {
            let b: HistoryBody = parse(body)?;
            if !node.rules.options(&b.channel)?.history_enabled() {
                return Err(ProtocolError::new(ErrorCode::NotAvailable));
            }
            let filter = HistoryFilter {
                since: b.since,
                limit: b.limit,
                reverse: b.reverse,
            };
            let h = node
                .engine
                .history(&b.channel, filter)
                .await
                .map_err(engine_error)?;
            Ok(json!({
                "publications": h.publications,
                "offset": h.position.offset,
                "epoch": h.position.epoch,
            }))
        }
        "history_remove" => {
            let b: ChannelBody = parse(body)?;
            node.rules.options(&b.channel)?;
            node.engine
                .remove_history(&b.channel)
                .await
                .map_err(engine_error)?;
            Ok(json!({}))
        }
        "channels" => {
            let b: ChannelsBody = parse(body)?;
            let mut channels = Map::new();
            for (name, n) in crate::survey::channels(node, &b.pattern).await {
                channels.insert(name, json!({ "num_clients": n }));
            }
            Ok(json!({ "channels": channels }))
        }
        "info" => {
            let own = crate::cluster::node_info(node);
            let mut nodes: Vec<_> = node
                .engine
                .nodes()
                .into_iter()
                .filter(|n| n.uid != own.uid)
                .collect();
            nodes.push(own);
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(json!({ "nodes": nodes }))
        }
        "batch" => {
            let b: BatchBody = parse(body)?;
            let mut replies = Vec::with_capacity(b.commands.len());
            for cmd in b.commands {
                let mut entries = cmd.into_iter();
                let reply = match (entries.next(), entries.next()) {
                    (Some((method, params)), None) if method != "batch" => {
                        let params = serde_json::to_vec(&params).unwrap_or_default();
                        match Box::pin(dispatch(node, &method, &params)).await {
                            Ok(v) => json!({ method: v }),
                            Err(e) => json!({ "error": e }),
                        }
                    }
                    _ => json!({ "error": bad("each batch command must hold exactly one method") }),
                };
                replies.push(reply);
            }
            Ok(json!({ "replies": replies }))
        }
        _ => Err(ProtocolError::new(ErrorCode::MethodNotFound)),
    }
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("chat:*", "chat:1"));
        assert!(!glob_match("chat:*", "news"));
        assert!(glob_match("*:room*", "chat:room7"));
        assert!(glob_match("exact", "exact"));
        assert!(glob_match("*", "anything"));
    }
}
