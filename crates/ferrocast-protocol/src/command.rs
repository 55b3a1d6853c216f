//! Client commands, and decoding JSON frames into them (Protobuf frames decode through
//! [`crate::protobuf`]; [`crate::codec::Protocol`] picks the decoder of a connection).
//!
//! A JSON frame holds one or more command objects separated by newlines (or any JSON
//! whitespace). Each object carries an `id` and exactly one method field.

use crate::types::*;
use serde::Deserialize;

/// A decoded client command.
#[derive(Debug, Clone)]
pub struct Command {
    /// Command id (0 for `send` and for heartbeat answers).
    pub id: u32,
    /// The request.
    pub method: Method,
}

/// The request carried by a command.
#[derive(Debug, Clone)]
pub enum Method {
    /// `connect`.
    Connect(ConnectRequest),
    /// `subscribe`.
    Subscribe(SubscribeRequest),
    /// `unsubscribe`.
    Unsubscribe(UnsubscribeRequest),
    /// `publish`.
    Publish(PublishRequest),
    /// `presence`.
    Presence(ChannelRequest),
    /// `presence_stats`.
    PresenceStats(ChannelRequest),
    /// `history`.
    History(HistoryRequest),
    /// `ping`.
    Ping,
    /// `send`.
    Send(SendRequest),
    /// `rpc`.
    Rpc(RpcRequest),
    /// `refresh`.
    Refresh(RefreshRequest),
    /// `sub_refresh`.
    SubRefresh(SubRefreshRequest),
    /// An object without any method: the answer to a server heartbeat when `id` is 0.
    Empty,
    /// More than one method field was set.
    Ambiguous,
}

impl Method {
    /// The method name as used in replies and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Connect(_) => "connect",
            Method::Subscribe(_) => "subscribe",
            Method::Unsubscribe(_) => "unsubscribe",
            Method::Publish(_) => "publish",
            Method::Presence(_) => "presence",
            Method::PresenceStats(_) => "presence_stats",
            Method::History(_) => "history",
            Method::Ping => "ping",
            Method::Send(_) => "send",
            Method::Rpc(_) => "rpc",
            Method::Refresh(_) => "refresh",
            Method::SubRefresh(_) => "sub_refresh",
            Method::Empty => "empty",
            Method::Ambiguous => "ambiguous",
        }
    }
}

/// Why a frame could not be decoded. The connection is closed with 3501 (bad request).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is not a sequence of JSON command objects.
    #[error("malformed command: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The frame holds more commands than allowed.
    #[error("too many commands in one frame (limit {0})")]
    TooManyCommands(usize),
    /// The frame holds no command.
    #[error("empty frame")]
    Empty,
}

#[derive(Deserialize)]
struct WireCommand {
    #[serde(default)]
    id: u32,
    connect: Option<ConnectRequest>,
    subscribe: Option<SubscribeRequest>,
    unsubscribe: Option<UnsubscribeRequest>,
    publish: Option<PublishRequest>,
    presence: Option<ChannelRequest>,
    presence_stats: Option<ChannelRequest>,
    history: Option<HistoryRequest>,
    ping: Option<serde::de::IgnoredAny>,
    send: Option<SendRequest>,
    rpc: Option<RpcRequest>,
    refresh: Option<RefreshRequest>,
    sub_refresh: Option<SubRefreshRequest>,
}

impl From<WireCommand> for Command {
    fn from(w: WireCommand) -> Self {
        let mut found: Vec<Method> = Vec::with_capacity(1);
        if let Some(r) = w.connect {
            found.push(Method::Connect(r));
        }
        if let Some(r) = w.subscribe {
            found.push(Method::Subscribe(r));
        }
        if let Some(r) = w.unsubscribe {
            found.push(Method::Unsubscribe(r));
        }
        if let Some(r) = w.publish {
            found.push(Method::Publish(r));
        }
        if let Some(r) = w.presence {
            found.push(Method::Presence(r));
        }
        if let Some(r) = w.presence_stats {
            found.push(Method::PresenceStats(r));
        }
        if let Some(r) = w.history {
            found.push(Method::History(r));
        }
        if w.ping.is_some() {
            found.push(Method::Ping);
        }
        if let Some(r) = w.send {
            found.push(Method::Send(r));
        }
        if let Some(r) = w.rpc {
            found.push(Method::Rpc(r));
        }
        if let Some(r) = w.refresh {
            found.push(Method::Refresh(r));
        }
        if let Some(r) = w.sub_refresh {
            found.push(Method::SubRefresh(r));
        }
        let method = match found.len() {
            0 => Method::Empty,
            1 => found.pop().unwrap_or(Method::Empty),
            _ => Method::Ambiguous,
        };
        Command { id: w.id, method }
    }
}

/// Decodes a JSON frame into its commands, refusing frames with more than
/// `max_commands` commands.
pub fn decode_frame(frame: &[u8], max_commands: usize) -> Result<Vec<Command>, DecodeError> {
    let mut out = Vec::new();
    let stream = serde_json::Deserializer::from_slice(frame).into_iter::<WireCommand>();
    for item in stream {
        if out.len() >= max_commands {
            return Err(DecodeError::TooManyCommands(max_commands));
        }
        out.push(Command::from(item?));
    }
    if out.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_batch() {
        let frame = b"{\"id\":1,\"connect\":{\"token\":\"t\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\",\"flag\":3}}\n";
        let cmds = decode_frame(frame, 10).unwrap();
        assert_eq!(cmds.len(), 2);
        assert!(matches!(&cmds[0].method, Method::Connect(c) if c.token == "t"));
        assert!(matches!(&cmds[1].method, Method::Subscribe(s) if s.channel == "a"));
    }

    #[test]
    fn empty_object_is_pong() {
        let cmds = decode_frame(b"{}", 10).unwrap();
        assert!(matches!(cmds[0].method, Method::Empty));
        assert_eq!(cmds[0].id, 0);
    }

    #[test]
    fn rejects_malformed_and_wrong_shape() {
        assert!(decode_frame(b"{\"id\":1,", 10).is_err());
        assert!(decode_frame(b"[1,2]", 10).is_err());
        assert!(decode_frame(b"{\"id\":-1}", 10).is_err());
        assert!(decode_frame(b"{\"id\":99999999999}", 10).is_err());
        assert!(decode_frame(b"{\"id\":1,\"subscribe\":{\"channel\":5}}", 10).is_err());
        assert!(decode_frame(b"", 10).is_err());
        assert!(matches!(
            decode_frame(b"{}{}{}", 2),
            Err(DecodeError::TooManyCommands(2))
        ));
    }

    #[test]
    fn two_methods_are_ambiguous() {
        let cmds = decode_frame(b"{\"id\":1,\"ping\":{},\"presence\":{}}", 10).unwrap();
        assert!(matches!(cmds[0].method, Method::Ambiguous));
    }
}
