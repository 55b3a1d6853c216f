//! gRPC API messages to typed server API commands, and results back. Field meanings are
//! those of the JSON API: `data` carries the payload's bytes, `b64data` wins when set.

use super::pb;
use bytes::Bytes;
use ferrocast_node::api::*;
use ferrocast_protocol::{ClientInfo, ErrorCode, Payload, ProtocolError, Publication};
use std::collections::BTreeMap;

/// A decoded command, or its method and why it could not be decoded.
pub(super) type Decoded = Result<ApiCommand, (ApiMethod, ProtocolError)>;

/// `bytes` as an optional payload (empty: none).
fn payload(b: Bytes) -> Option<Payload> {
    (!b.is_empty()).then(|| Payload::from_bytes(b))
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn tags(t: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!t.is_empty()).then_some(t)
}

pub(super) fn error(e: &ProtocolError) -> pb::Error {
    pb::Error {
        code: e.code,
        message: e.message.to_string(),
    }
}

pub(super) fn publish(r: pb::PublishRequest) -> Decoded {
    Ok(ApiCommand::Publish(publish_request(r)))
}

fn publish_request(r: pb::PublishRequest) -> PublishRequest {
    PublishRequest {
        channel: r.channel,
        data: payload(r.data),
        b64data: opt(r.b64data),
        tags: tags(r.tags),
        idempotency_key: opt(r.idempotency_key),
        skip_history: r.skip_history,
    }
}

pub(super) fn broadcast(r: pb::BroadcastRequest) -> Decoded {
    Ok(ApiCommand::Broadcast(BroadcastRequest {
        channels: r.channels,
        data: payload(r.data),
        b64data: opt(r.b64data),
        tags: tags(r.tags),
        idempotency_key: opt(r.idempotency_key),
        skip_history: r.skip_history,
    }))
}

pub(super) fn subscribe(r: pb::SubscribeRequest) -> Decoded {
    Ok(ApiCommand::Subscribe(UserChannelRequest {
        user: r.user,
        channel: r.channel,
        client: r.client,
    }))
}

pub(super) fn unsubscribe(r: pb::UnsubscribeRequest) -> Decoded {
    Ok(ApiCommand::Unsubscribe(UserChannelRequest {
        user: r.user,
        channel: r.channel,
        client: r.client,
    }))
}

pub(super) fn disconnect(r: pb::DisconnectRequest) -> Decoded {
    let disconnect = match r.disconnect {
        Some(d) => match u16::try_from(d.code) {
            Ok(code) => Some(DisconnectSpec {
                code,
                reason: d.reason,
            }),
            Err(_) => {
                return Err((
                    ApiMethod::Disconnect,
                    ProtocolError::with_message(
                        ErrorCode::BadRequest,
                        "disconnect code must be within 3000..4999",
                    ),
                ));
            }
        },
        None => None,
    };
    Ok(ApiCommand::Disconnect(DisconnectRequest {
        user: r.user,
        client: r.client,
        disconnect,
    }))
}

pub(super) fn presence(r: pb::PresenceRequest) -> Decoded {
    Ok(ApiCommand::Presence(ChannelRequest { channel: r.channel }))
}

pub(super) fn presence_stats(r: pb::PresenceStatsRequest) -> Decoded {
    Ok(ApiCommand::PresenceStats(ChannelRequest {
        channel: r.channel,
    }))
}

pub(super) fn history(r: pb::HistoryRequest) -> Decoded {
    Ok(ApiCommand::History(HistoryRequest {
        channel: r.channel,
        limit: r.limit,
        since: r.since.map(|s| ferrocast_protocol::StreamPosition {
            offset: s.offset,
            epoch: s.epoch,
        }),
        reverse: r.reverse,
    }))
}

pub(super) fn history_remove(r: pb::HistoryRemoveRequest) -> Decoded {
    Ok(ApiCommand::HistoryRemove(ChannelRequest {
        channel: r.channel,
    }))
}

pub(super) fn info(_: pb::InfoRequest) -> Decoded {
    Ok(ApiCommand::Info(InfoRequest {}))
}

pub(super) fn refresh(r: pb::RefreshRequest) -> Decoded {
    Ok(ApiCommand::Refresh(RefreshRequest {
        user: r.user,
        client: r.client,
        expired: r.expired,
        expire_at: r.expire_at,
    }))
}

pub(super) fn channels(r: pb::ChannelsRequest) -> Decoded {
    Ok(ApiCommand::Channels(ChannelsRequest { pattern: r.pattern }))
}

/// A result of another shape than the method's: a bug, reported as error 100.
fn mismatch() -> ProtocolError {
    ProtocolError::new(ErrorCode::Internal)
}

/// The empty result of subscribe, unsubscribe, disconnect, refresh, history_remove.
pub(super) fn empty<T: Default>(r: ApiResult) -> Result<T, ProtocolError> {
    match r {
        ApiResult::Empty(_) => Ok(T::default()),
        _ => Err(mismatch()),
    }
}

fn position(r: &PublishResult) -> pb::PublishResult {
    pb::PublishResult {
        offset: r.offset,
        epoch: r.epoch.clone(),
    }
}

pub(super) fn publish_result(r: ApiResult) -> Result<pb::PublishResult, ProtocolError> {
    match r {
        ApiResult::Publish(p) => Ok(position(&p)),
        _ => Err(mismatch()),
    }
}

pub(super) fn broadcast_result(r: ApiResult) -> Result<pb::BroadcastResult, ProtocolError> {
    let ApiResult::Broadcast(b) = r else {
        return Err(mismatch());
    };
    let responses = b
        .responses
        .iter()
        .map(|r| match r {
            BroadcastResponse::Result(p) => pb::PublishResponse {
                error: None,
                result: Some(position(p)),
            },
            BroadcastResponse::Error(e) => pb::PublishResponse {
                error: Some(error(e)),
                result: None,
            },
        })
        .collect();
    Ok(pb::BroadcastResult { responses })
}

fn bytes_of(p: Option<Payload>) -> Bytes {
    p.map(Payload::into_bytes).unwrap_or_default()
}

fn client_info(c: ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        user: c.user,
        client: c.client,
        conn_info: bytes_of(c.conn_info),
        chan_info: bytes_of(c.chan_info),
    }
}

pub(super) fn presence_result(r: ApiResult) -> Result<pb::PresenceResult, ProtocolError> {
    let ApiResult::Presence(p) = r else {
        return Err(mismatch());
    };
    Ok(pb::PresenceResult {
        presence: p
            .presence
            .into_iter()
            .map(|(k, v)| (k, client_info(v)))
            .collect(),
    })
}

pub(super) fn presence_stats_result(
    r: ApiResult,
) -> Result<pb::PresenceStatsResult, ProtocolError> {
    let ApiResult::PresenceStats(s) = r else {
        return Err(mismatch());
    };
    Ok(pb::PresenceStatsResult {
        num_clients: s.num_clients,
        num_users: s.num_users,
    })
}

fn publication(p: Publication) -> pb::Publication {
    pb::Publication {
        data: p.data.into_bytes(),
        info: p.info.map(client_info),
        offset: p.offset,
        tags: p.tags.unwrap_or_default(),
    }
}

pub(super) fn history_result(r: ApiResult) -> Result<pb::HistoryResult, ProtocolError> {
    let ApiResult::History(h) = r else {
        return Err(mismatch());
    };
    Ok(pb::HistoryResult {
        publications: h.publications.into_iter().map(publication).collect(),
        epoch: h.epoch,
        offset: h.offset,
    })
}

fn saturate(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub(super) fn info_result(r: ApiResult) -> Result<pb::InfoResult, ProtocolError> {
    let ApiResult::Info(i) = r else {
        return Err(mismatch());
    };
    Ok(pb::InfoResult {
        nodes: i
            .nodes
            .into_iter()
            .map(|n| pb::NodeResult {
                uid: n.uid,
                name: n.name,
                version: n.version,
                num_clients: saturate(n.num_clients),
                num_users: saturate(n.num_users),
                num_channels: saturate(n.num_channels),
                uptime: saturate(n.uptime),
                num_subs: saturate(n.num_subs),
            })
            .collect(),
    })
}

pub(super) fn channels_result(r: ApiResult) -> Result<pb::ChannelsResult, ProtocolError> {
    let ApiResult::Channels(c) = r else {
        return Err(mismatch());
    };
    Ok(pb::ChannelsResult {
        channels: c
            .channels
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    pb::ChannelInfo {
                        num_clients: saturate(v.num_clients),
                    },
                )
            })
            .collect(),
    })
}

/// The command of one batch entry: exactly one request set.
fn entry(c: pb::Command) -> BatchEntry {
    let mut decoded: Vec<Decoded> = Vec::with_capacity(1);
    let pb::Command {
        publish: p,
        broadcast: b,
        subscribe: s,
        unsubscribe: u,
        disconnect: d,
        presence: pr,
        presence_stats: ps,
        history: h,
        history_remove: hr,
        info: i,
        refresh: r,
        channels: ch,
    } = c;
    decoded.extend(p.map(publish));
    decoded.extend(b.map(broadcast));
    decoded.extend(s.map(subscribe));
    decoded.extend(u.map(unsubscribe));
    decoded.extend(d.map(disconnect));
    decoded.extend(pr.map(presence));
    decoded.extend(ps.map(presence_stats));
    decoded.extend(h.map(history));
    decoded.extend(hr.map(history_remove));
    decoded.extend(i.map(info));
    decoded.extend(r.map(refresh));
    decoded.extend(ch.map(channels));
    let one = decoded.len() == 1;
    match decoded.pop() {
        Some(Ok(cmd)) if one => BatchEntry {
            method: cmd.method().name().to_string(),
            command: Ok(cmd),
        },
        Some(Err((method, e))) if one => BatchEntry {
            method: method.name().to_string(),
            command: Err(e),
        },
        _ => BatchEntry {
            method: String::new(),
            command: Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "each batch command must hold exactly one method",
            )),
        },
    }
}

/// A gRPC batch as the typed batch command, with each entry's method (to key its reply).
pub(super) fn batch_command(r: pb::BatchRequest) -> (ApiCommand, Vec<String>) {
    let commands: Vec<BatchEntry> = r.commands.into_iter().map(entry).collect();
    let methods = commands.iter().map(|e| e.method.clone()).collect();
    (ApiCommand::Batch(BatchRequest { commands }), methods)
}

/// The replies of a batch, each in the field of its command's method.
pub(super) fn batch_replies(b: BatchResult, methods: &[String]) -> Vec<pb::Reply> {
    b.replies
        .into_iter()
        .zip(methods)
        .map(|(reply, method)| {
            let mut out = pb::Reply::default();
            let result = reply.into_result();
            let filled = result.and_then(|r| {
                match method.as_str() {
                    "publish" => out.publish = Some(publish_result(r)?),
                    "broadcast" => out.broadcast = Some(broadcast_result(r)?),
                    "subscribe" => out.subscribe = Some(empty(r)?),
                    "unsubscribe" => out.unsubscribe = Some(empty(r)?),
                    "disconnect" => out.disconnect = Some(empty(r)?),
                    "presence" => out.presence = Some(presence_result(r)?),
                    "presence_stats" => out.presence_stats = Some(presence_stats_result(r)?),
                    "history" => out.history = Some(history_result(r)?),
                    "history_remove" => out.history_remove = Some(empty(r)?),
                    "info" => out.info = Some(info_result(r)?),
                    "refresh" => out.refresh = Some(empty(r)?),
                    "channels" => out.channels = Some(channels_result(r)?),
                    _ => return Err(mismatch()),
                }
                Ok(())
            });
            if let Err(e) = filled {
                out = pb::Reply {
                    error: Some(error(&e)),
                    ..Default::default()
                };
            }
            out
        })
        .collect()
}
