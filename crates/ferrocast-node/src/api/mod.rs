//! Server API operations, independent of how they arrive (HTTP API, backend command
//! stream): a typed [`ApiCommand`], decoded once, is run by [`execute`] with one handler
//! per method, and gives an [`ApiResult`] with the same JSON shape as Centrifugo's server
//! API.

mod requests;
mod results;

pub use requests::*;
pub use results::*;

use crate::metrics as m;
use crate::node::Node;
use ferrocast_engine::HistoryFilter;
use ferrocast_protocol::envelope::ControlMessage;
use ferrocast_protocol::{Disconnect, ErrorCode, ProtocolError};
use std::borrow::Cow;

/// Decodes and runs one call of `method` with JSON `body`; records it in metrics.
pub async fn call(node: &Node, method: ApiMethod, body: &[u8]) -> Result<ApiResult, ProtocolError> {
    let res = match ApiCommand::decode(method, body) {
        Ok(cmd) => execute(node, cmd).await,
        Err(e) => Err(e),
    };
    count_call(method, res.as_ref().map(|_| ()));
    res
}

/// Counts a server API call and its outcome (`ok` or the error code) in metrics.
pub fn count_call(method: ApiMethod, result: Result<(), &ProtocolError>) {
    let result: Cow<'_, str> = match result {
        Ok(()) => "ok".into(),
        Err(e) => e.code.to_string().into(),
    };
    m::api_call(method.name(), &result);
}

/// Runs a decoded command.
pub async fn execute(node: &Node, cmd: ApiCommand) -> Result<ApiResult, ProtocolError> {
    Ok(match cmd {
        ApiCommand::Publish(r) => ApiResult::Publish(publish(node, r).await?),
        ApiCommand::Broadcast(r) => ApiResult::Broadcast(broadcast(node, r).await?),
        ApiCommand::Subscribe(r) => ApiResult::Empty(subscribe(node, r, true).await?),
        ApiCommand::Unsubscribe(r) => ApiResult::Empty(subscribe(node, r, false).await?),
        ApiCommand::Disconnect(r) => ApiResult::Empty(disconnect(node, r).await?),
        ApiCommand::Refresh(r) => ApiResult::Empty(refresh(node, r).await?),
        ApiCommand::Presence(r) => ApiResult::Presence(presence(node, r).await?),
        ApiCommand::PresenceStats(r) => ApiResult::PresenceStats(presence_stats(node, r).await?),
        ApiCommand::History(r) => ApiResult::History(history(node, r).await?),
        ApiCommand::HistoryRemove(r) => ApiResult::Empty(history_remove(node, r).await?),
        ApiCommand::Channels(r) => ApiResult::Channels(channels(node, r).await),
        ApiCommand::Info(_) => ApiResult::Info(InfoResult {
            nodes: node.nodes(),
        }),
        ApiCommand::Batch(r) => ApiResult::Batch(batch(node, r).await),
        ApiCommand::UserStatus(r) => ApiResult::UserStatus(user_status(node, r).await?),
        ApiCommand::ChannelStats(r) => ApiResult::ChannelStats(ChannelStatsResult {
            channels: node
                .channel_stats(&r.pattern)
                .await
                .into_iter()
                .map(|(name, s)| (name, s.into()))
                .collect(),
        }),
        ApiCommand::ConnectionHealth(r) => {
            ApiResult::ConnectionHealth(connection_health(node, r).await?)
        }
    })
}

fn bad(msg: &'static str) -> ProtocolError {
    ProtocolError::with_message(ErrorCode::BadRequest, msg)
}

async fn publish(node: &Node, r: PublishRequest) -> Result<PublishResult, ProtocolError> {
    let (channel, params) = r.params()?;
    Ok(node.publish(&channel, params).await?.into())
}

async fn broadcast(node: &Node, r: BroadcastRequest) -> Result<BroadcastResult, ProtocolError> {
    if r.channels.is_empty() {
        return Err(bad("channels required"));
    }
    let data = requests::payload(r.data, r.b64data.as_deref())?;
    if data.is_none() {
        return Err(bad("data required"));
    }
    let mut responses = Vec::with_capacity(r.channels.len());
    for channel in &r.channels {
        let request = PublishRequest {
            channel: channel.clone(),
            data: data.clone(),
            b64data: None,
            tags: r.tags.clone(),
            idempotency_key: r.idempotency_key.clone(),
            skip_history: r.skip_history,
        };
        responses.push(publish(node, request).await.into());
    }
    Ok(BroadcastResult { responses })
}

/// `subscribe` (`join`) or `unsubscribe`, on every node.
async fn subscribe(
    node: &Node,
    r: UserChannelRequest,
    join: bool,
) -> Result<EmptyResult, ProtocolError> {
    if r.user.is_empty() {
        return Err(bad("user required"));
    }
    node.channel_options(&r.channel)?;
    let msg = if join {
        ControlMessage::Subscribe {
            user: r.user,
            client: r.client,
            channel: r.channel,
        }
    } else {
        ControlMessage::Unsubscribe {
            user: r.user,
            client: r.client,
            channel: r.channel,
        }
    };
    node.send_control(&msg).await?;
    Ok(EmptyResult {})
}

async fn disconnect(node: &Node, r: DisconnectRequest) -> Result<EmptyResult, ProtocolError> {
    if r.user.is_empty() && r.client.is_empty() {
        return Err(bad("user required"));
    }
    let d = match r.disconnect {
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
        user: r.user,
        client: r.client,
        code: d.code,
        reason: d.reason.into_owned(),
    };
    node.send_control(&msg).await?;
    Ok(EmptyResult {})
}

async fn refresh(node: &Node, r: RefreshRequest) -> Result<EmptyResult, ProtocolError> {
    if r.user.is_empty() {
        return Err(bad("user required"));
    }
    let msg = ControlMessage::Refresh {
        user: r.user,
        client: r.client,
        expired: r.expired,
        expire_at: r.expire_at,
    };
    node.send_control(&msg).await?;
    Ok(EmptyResult {})
}

async fn user_status(node: &Node, r: UsersRequest) -> Result<UserStatusResult, ProtocolError> {
    if r.users.len() > 1000 {
        return Err(bad("at most 1000 users per call"));
    }
    let online = node.user_status(&r.users).await?;
    let statuses = r
        .users
        .into_iter()
        .zip(online)
        .map(|(user, online)| UserStatus { user, online })
        .collect();
    Ok(UserStatusResult { statuses })
}

async fn connection_health(
    node: &Node,
    r: ConnectionHealthRequest,
) -> Result<ConnectionHealthResult, ProtocolError> {
    if r.user.is_empty() && r.client.is_empty() {
        return Err(bad("user or client required"));
    }
    Ok(ConnectionHealthResult {
        connections: node.connection_health(&r.user, &r.client).await,
    })
}

async fn presence(node: &Node, r: ChannelRequest) -> Result<PresenceResult, ProtocolError> {
    let presence = node.presence(&r.channel).await?;
    Ok(PresenceResult {
        presence: presence.into_iter().collect(),
    })
}

async fn presence_stats(
    node: &Node,
    r: ChannelRequest,
) -> Result<PresenceStatsResult, ProtocolError> {
    let s = node.presence_stats(&r.channel).await?;
    Ok(PresenceStatsResult {
        num_clients: s.num_clients,
        num_users: s.num_users,
    })
}

async fn history(node: &Node, r: HistoryRequest) -> Result<HistoryResult, ProtocolError> {
    let filter = HistoryFilter {
        since: r.since,
        limit: r.limit,
        reverse: r.reverse,
    };
    let h = node.history(&r.channel, filter).await?;
    Ok(HistoryResult {
        publications: h.publications,
        offset: h.position.offset,
        epoch: h.position.epoch,
    })
}

async fn history_remove(node: &Node, r: ChannelRequest) -> Result<EmptyResult, ProtocolError> {
    node.remove_history(&r.channel).await?;
    Ok(EmptyResult {})
}

async fn channels(node: &Node, r: ChannelsRequest) -> ChannelsResult {
    let channels = node
        .channels(&r.pattern)
        .await
        .into_iter()
        .map(|(name, num_clients)| (name, ChannelInfo { num_clients }))
        .collect();
    ChannelsResult { channels }
}

async fn batch(node: &Node, r: BatchRequest) -> BatchResult {
    let mut replies = Vec::with_capacity(r.commands.len());
    for entry in r.commands {
        let result = match entry.command {
            Ok(cmd) => Box::pin(execute(node, cmd)).await,
            Err(e) => Err(e),
        };
        replies.push(BatchReply::new(entry.method, result));
    }
    BatchResult { replies }
}
