//! Error codes carried in replies and disconnect codes carried in WebSocket close frames.

use serde::Serialize;
use std::borrow::Cow;

/// An error code of the Centrifugo protocol, sent in a reply's `error` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// 100: the server failed.
    Internal = 100,
    /// 101: the client is not authenticated or its credentials are wrong.
    Unauthorized = 101,
    /// 102: the channel's namespace does not exist.
    UnknownChannel = 102,
    /// 103: the client is not allowed to do this.
    PermissionDenied = 103,
    /// 104: the method does not exist or has no handler.
    MethodNotFound = 104,
    /// 105: the client is already subscribed to the channel.
    AlreadySubscribed = 105,
    /// 106: a configured limit was reached.
    LimitExceeded = 106,
    /// 107: the request is malformed.
    BadRequest = 107,
    /// 108: the feature is not enabled or the backend is unavailable.
    NotAvailable = 108,
    /// 109: the token has expired.
    TokenExpired = 109,
    /// 110: the connection or subscription has expired.
    Expired = 110,
    /// 111: the client sends commands too fast.
    TooManyRequests = 111,
    /// 112: the requested stream position is no longer available.
    UnrecoverablePosition = 112,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The standard message for this code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::Expired => "expired",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::UnrecoverablePosition => "unrecoverable position",
        }
    }

    /// Whether the client may retry the same request later.
    pub fn temporary(self) -> bool {
        matches!(
            self,
            ErrorCode::Internal | ErrorCode::NotAvailable | ErrorCode::TooManyRequests
        )
    }
}

/// An error as sent to a client or an API caller: a code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolError {
    /// Numeric error code.
    pub code: u32,
    /// Human readable message.
    pub message: Cow<'static, str>,
    /// Set when retrying later may succeed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

impl ProtocolError {
    /// An error with the code's standard message.
    pub fn new(code: ErrorCode) -> Self {
        ProtocolError {
            code: code.code(),
            message: Cow::Borrowed(code.message()),
            temporary: code.temporary(),
        }
    }

    /// An error with a specific message.
    pub fn with_message(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ProtocolError {
            code: code.code(),
            message: message.into(),
            temporary: code.temporary(),
        }
    }
}

impl From<ErrorCode> for ProtocolError {
    fn from(code: ErrorCode) -> Self {
        ProtocolError::new(code)
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ProtocolError {}

/// Why a connection is closed: the WebSocket close code and reason.
///
/// Codes 3000–3499 and 4000–4499 tell the client to reconnect; 3500–3999 and
/// 4500–4999 tell it not to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disconnect {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: Cow<'static, str>,
}

macro_rules! disconnects {
    ($($(#[$doc:meta])* $name:ident = $code:expr, $reason:expr;)*) => {
        impl Disconnect {
            $($(#[$doc])* pub const $name: Disconnect = Disconnect { code: $code, reason: Cow::Borrowed($reason) };)*
        }
    };
}

disconnects! {
    /// 3000: the connection was closed.
    CONNECTION_CLOSED = 3000, "connection closed";
    /// 3001: the node shuts down; reconnect elsewhere.
    SHUTDOWN = 3001, "shutdown";
    /// 3004: the server failed.
    INTERNAL = 3004, "internal server error";
    /// 3005: the connection token expired and was not refreshed.
    EXPIRED = 3005, "connection expired";
    /// 3006: a subscription token expired and was not refreshed.
    SUBSCRIPTION_EXPIRED = 3006, "subscription expired";
    /// 3008: the client did not read fast enough.
    SLOW = 3008, "slow";
    /// 3009: writing to the client failed.
    WRITE_ERROR = 3009, "write error";
    /// 3010: the server lost state the client depends on; reconnect and recover.
    INSUFFICIENT_STATE = 3010, "insufficient state";
    /// 3011: the server asks the client to reconnect.
    FORCE_RECONNECT = 3011, "force reconnect";
    /// 3012: the client did not answer the server's ping.
    NO_PONG = 3012, "no pong";
    /// 3013: the client sent too many commands.
    TOO_MANY_REQUESTS = 3013, "too many requests";
    /// 3500: the connection token is invalid.
    INVALID_TOKEN = 3500, "invalid token";
    /// 3501: the client sent a malformed or oversized frame.
    BAD_REQUEST = 3501, "bad request";
    /// 3502: the client did not connect in time.
    STALE = 3502, "stale";
    /// 3503: the server disconnected the client for good.
    FORCE_DISCONNECT = 3503, "force disconnect";
    /// 3504: a connection limit was reached.
    CONNECTION_LIMIT = 3504, "connection limit";
    /// 3505: the channel limit was reached.
    CHANNEL_LIMIT = 3505, "channel limit";
    /// 3506: the transport is not appropriate.
    INAPPROPRIATE_PROTOCOL = 3506, "inappropriate protocol";
    /// 3507: the client is not permitted.
    PERMISSION_DENIED = 3507, "permission denied";
    /// 3508: the feature is not available.
    NOT_AVAILABLE = 3508, "not available";
    /// 3509: the client caused too many errors.
    TOO_MANY_ERRORS = 3509, "too many errors";
}

impl Disconnect {
    /// Whether the client should reconnect after this disconnect.
    pub fn reconnect(&self) -> bool {
        matches!(self.code, 3000..=3499 | 4000..=4499)
    }
}

/// Unsubscribe push codes.
pub mod unsubscribe {
    /// 2000: unsubscribed by the server; do not resubscribe.
    pub const SERVER: u32 = 2000;
    /// 2500: the server lost the subscription's state; resubscribe and recover.
    pub const INSUFFICIENT_STATE: u32 = 2500;
    /// 2501: the subscription expired and the server could not extend it; resubscribe.
    pub const EXPIRED: u32 = 2501;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_ranges() {
        assert!(Disconnect::SHUTDOWN.reconnect());
        assert!(Disconnect::SLOW.reconnect());
        assert!(!Disconnect::BAD_REQUEST.reconnect());
        assert!(!Disconnect::FORCE_DISCONNECT.reconnect());
    }

    #[test]
    fn error_json_shape() {
        let e = ProtocolError::new(ErrorCode::PermissionDenied);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":103,"message":"permission denied"}"#
        );
    }
}
