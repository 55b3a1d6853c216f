//! Between the wire messages of the Protobuf variant and the protocol's own types: client
//! commands in, replies and pushes out. Payloads move as shared bytes (no copy); an
//! empty `bytes` field is an absent payload, as Protobuf cannot tell them apart.

use super::wire;
use crate::codes::ProtocolError;
use crate::command::{Command, Method};
use crate::raw::Payload;
use crate::reply::{PushBody, Reply, ReplyResult};
use crate::types::*;
use bytes::Bytes;

fn payload(b: Bytes) -> Option<Payload> {
    (!b.is_empty()).then(|| Payload::from_bytes(b))
}

fn bytes(p: &Option<Payload>) -> Bytes {
    p.as_ref().map(|p| p.as_bytes().clone()).unwrap_or_default()
}

fn subscribe_request(r: wire::SubscribeRequest) -> SubscribeRequest {
    SubscribeRequest {
        channel: r.channel,
        token: r.token,
        recover: r.recover,
        epoch: r.epoch,
        offset: r.offset,
        data: payload(r.data),
        positioned: r.positioned,
        recoverable: r.recoverable,
        join_leave: r.join_leave,
    }
}

/// The command a wire command carries: its one request, [`Method::Empty`] without any
/// (an empty command with id 0 is the answer to a server ping), [`Method::Ambiguous`]
/// with several.
pub fn command_from_wire(c: wire::Command) -> Command {
    let mut found: Vec<Method> = Vec::with_capacity(1);
    if let Some(r) = c.connect {
        found.push(Method::Connect(ConnectRequest {
            token: r.token,
            data: payload(r.data),
            subs: r
                .subs
                .into_iter()
                .map(|(k, v)| (k, subscribe_request(v)))
                .collect(),
            name: r.name,
            version: r.version,
        }));
    }
    if let Some(r) = c.subscribe {
        found.push(Method::Subscribe(subscribe_request(r)));
    }
    if let Some(r) = c.unsubscribe {
        found.push(Method::Unsubscribe(UnsubscribeRequest {
            channel: r.channel,
        }));
    }
    if let Some(r) = c.publish {
        found.push(Method::Publish(PublishRequest {
            channel: r.channel,
            data: payload(r.data),
        }));
    }
    if let Some(r) = c.presence {
        found.push(Method::Presence(ChannelRequest { channel: r.channel }));
    }
    if let Some(r) = c.presence_stats {
        found.push(Method::PresenceStats(ChannelRequest { channel: r.channel }));
    }
    if let Some(r) = c.history {
        found.push(Method::History(HistoryRequest {
            channel: r.channel,
            limit: r.limit,
            since: r.since.map(|s| StreamPosition {
                offset: s.offset,
                epoch: s.epoch,
            }),
            reverse: r.reverse,
        }));
    }
    if c.ping.is_some() {
        found.push(Method::Ping);
    }
    if let Some(r) = c.send {
        found.push(Method::Send(SendRequest {
            data: payload(r.data),
        }));
    }
    if let Some(r) = c.rpc {
        found.push(Method::Rpc(RpcRequest {
            method: r.method,
            data: payload(r.data),
        }));
    }
    if let Some(r) = c.refresh {
        found.push(Method::Refresh(RefreshRequest { token: r.token }));
    }
    if let Some(r) = c.sub_refresh {
        found.push(Method::SubRefresh(SubRefreshRequest {
            channel: r.channel,
            token: r.token,
        }));
    }
    let method = match found.len() {
        0 => Method::Empty,
        1 => found.pop().unwrap_or(Method::Empty),
        _ => Method::Ambiguous,
    };
    Command { id: c.id, method }
}

fn error(e: &ProtocolError) -> wire::Error {
    wire::Error {
        code: e.code,
        message: e.message.to_string(),
        temporary: e.temporary,
    }
}

/// A client info on the wire.
pub fn client_info(i: &ClientInfo) -> wire::ClientInfo {
    wire::ClientInfo {
        user: i.user.clone(),
        client: i.client.clone(),
        conn_info: bytes(&i.conn_info),
        chan_info: bytes(&i.chan_info),
    }
}

/// A publication on the wire.
pub fn publication(p: &Publication) -> wire::Publication {
    wire::Publication {
        data: p.data.as_bytes().clone(),
        info: p.info.as_ref().map(client_info),
        offset: p.offset,
        tags: p.tags.clone().unwrap_or_default(),
        time: p.time,
        channel: p.channel.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn subscribe_result(r: &SubscribeResult) -> wire::SubscribeResult {
    wire::SubscribeResult {
        expires: r.expires,
        ttl: r.ttl,
        recoverable: r.recoverable,
        epoch: r.epoch.clone(),
        publications: r.publications.iter().map(publication).collect(),
        recovered: r.recovered,
        offset: r.offset,
        positioned: r.positioned,
        data: bytes(&r.data),
        was_recovering: r.was_recovering,
        ..Default::default()
    }
}

/// A reply on the wire.
pub fn reply(r: &Reply) -> wire::Reply {
    let mut out = wire::Reply {
        id: r.id,
        ..Default::default()
    };
    match &r.result {
        ReplyResult::Error(e) => out.error = Some(error(e)),
        ReplyResult::Connect(c) => {
            out.connect = Some(wire::ConnectResult {
                client: c.client.clone(),
                version: c.version.clone(),
                expires: c.expires,
                ttl: c.ttl,
                data: bytes(&c.data),
                subs: c
                    .subs
                    .iter()
                    .map(|(k, v)| (k.clone(), subscribe_result(v)))
                    .collect(),
                ping: c.ping,
                pong: c.pong,
                session: c.session.clone(),
                node: c.node.clone(),
                ..Default::default()
            })
        }
        ReplyResult::Subscribe(s) => out.subscribe = Some(subscribe_result(s)),
        ReplyResult::Unsubscribe => out.unsubscribe = Some(wire::UnsubscribeResult {}),
        ReplyResult::Publish => out.publish = Some(wire::PublishResult {}),
        ReplyResult::Presence(p) => {
            out.presence = Some(wire::PresenceResult {
                presence: p
                    .presence
                    .iter()
                    .map(|(k, v)| (k.clone(), client_info(v)))
                    .collect(),
            })
        }
        ReplyResult::PresenceStats(s) => {
            out.presence_stats = Some(wire::PresenceStatsResult {
                num_clients: s.num_clients,
                num_users: s.num_users,
            })
        }
        ReplyResult::History(h) => {
            out.history = Some(wire::HistoryResult {
                publications: h.publications.iter().map(publication).collect(),
                epoch: h.epoch.clone(),
                offset: h.offset,
            })
        }
        ReplyResult::Ping => out.ping = Some(wire::PingResult {}),
        ReplyResult::Rpc(data) => out.rpc = Some(wire::RpcResult { data: bytes(data) }),
        ReplyResult::Refresh(r) => {
            out.refresh = Some(wire::RefreshResult {
                client: r.client.clone(),
                version: r.version.clone(),
                expires: r.expires,
                ttl: r.ttl,
            })
        }
        ReplyResult::SubRefresh(r) => {
            out.sub_refresh = Some(wire::SubRefreshResult {
                expires: r.expires,
                ttl: r.ttl,
                ..Default::default()
            })
        }
    }
    out
}

/// A push on the wire.
pub fn push(channel: &str, body: &PushBody<'_>) -> wire::Push {
    let mut out = wire::Push {
        channel: channel.to_string(),
        ..Default::default()
    };
    match body {
        PushBody::Pub(p) => out.r#pub = Some(publication(p)),
        PushBody::Join(i) => {
            out.join = Some(wire::Join {
                info: Some(client_info(i)),
            })
        }
        PushBody::Leave(i) => {
            out.leave = Some(wire::Leave {
                info: Some(client_info(i)),
            })
        }
        PushBody::Unsubscribe { code, reason } => {
            out.unsubscribe = Some(wire::Unsubscribe {
                code: *code,
                reason: reason.to_string(),
            })
        }
        PushBody::Subscribe(s) => {
            out.subscribe = Some(wire::Subscribe {
                recoverable: s.recoverable,
                epoch: s.epoch.clone(),
                offset: s.offset,
                positioned: s.positioned,
                data: bytes(&s.data),
            })
        }
        PushBody::Message(d) => {
            out.message = Some(wire::Message {
                data: d.as_bytes().clone(),
            })
        }
        PushBody::Refresh { expires, ttl } => {
            out.refresh = Some(wire::Refresh {
                expires: *expires,
                ttl: *ttl,
            })
        }
    }
    out
}
