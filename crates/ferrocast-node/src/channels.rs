//! Channel names: validation, namespace lookup, user-limited channels and name patterns.

use crate::config::{ChannelConfig, ChannelOptions};
use ferrocast_protocol::{ErrorCode, ProtocolError};
use std::collections::HashMap;

/// Separates a namespace from the rest of a channel name (`chat:room1`).
pub const NAMESPACE_BOUNDARY: char = ':';
/// Starts the user list of a user-limited channel (`dialog#42,43`).
pub const USER_BOUNDARY: char = '#';
/// Separates users in a user-limited channel.
pub const USER_SEPARATOR: char = ',';

/// Resolves channel names to their namespace options.
pub struct ChannelRules {
    config: ChannelConfig,
    by_name: HashMap<String, usize>,
}

impl ChannelRules {
    /// Rules for a (validated) channel configuration.
    pub fn new(config: ChannelConfig) -> Self {
        let by_name = config
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.name.clone(), i))
            .collect();
        ChannelRules { config, by_name }
    }

    /// Checks a channel name and returns its options: 107 for an invalid name, 102 for
    /// an unknown namespace.
    pub fn options(&self, channel: &str) -> Result<&ChannelOptions, ProtocolError> {
        if channel.is_empty() {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "empty channel name",
            ));
        }
        if channel.len() > self.config.max_length {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                format!("channel name longer than {} bytes", self.config.max_length),
            ));
        }
        if channel.chars().any(|c| c.is_control()) {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "channel name contains control characters",
            ));
        }
        match channel.split_once(NAMESPACE_BOUNDARY) {
            None => Ok(&self.config.without_namespace),
            Some((ns, _)) => self
                .by_name
                .get(ns)
                .map(|&i| &self.config.namespaces[i].options)
                .ok_or_else(|| ProtocolError::new(ErrorCode::UnknownChannel)),
        }
    }

    /// For a user-limited channel (`name#1,2`): whether `user` is listed. `None` when the
    /// channel is not user-limited.
    pub fn user_limited_allows(&self, channel: &str, user: &str) -> Option<bool> {
        let (_, users) = channel.rsplit_once(USER_BOUNDARY)?;
        Some(!user.is_empty() && users.split(USER_SEPARATOR).any(|u| u == user))
    }

    /// Every namespace name.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.config.namespaces.iter().map(|n| n.name.as_str())
    }
}

/// The namespace of a channel name (empty for channels without namespace).
pub fn namespace_of(channel: &str) -> &str {
    channel
        .split_once(NAMESPACE_BOUNDARY)
        .map_or("", |(ns, _)| ns)
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
    use super::*;
    use crate::config::Namespace;

    fn rules() -> ChannelRules {
        ChannelRules::new(ChannelConfig {
            namespaces: vec![Namespace {
                name: "chat".into(),
                options: ChannelOptions {
                    presence: true,
                    ..Default::default()
                },
            }],
            ..Default::default()
        })
    }

    #[test]
    fn resolves_namespaces() {
        let r = rules();
        assert!(r.options("chat:1").unwrap().presence);
        assert!(!r.options("plain").unwrap().presence);
        assert_eq!(r.options("nope:1").unwrap_err().code, 102);
        assert_eq!(r.options("").unwrap_err().code, 107);
        assert_eq!(r.options("a\u{1}b").unwrap_err().code, 107);
        assert_eq!(r.options(&"x".repeat(256)).unwrap_err().code, 107);
    }

    #[test]
    fn user_limited() {
        let r = rules();
        assert_eq!(r.user_limited_allows("dialog#42,43", "43"), Some(true));
        assert_eq!(r.user_limited_allows("dialog#42,43", "4"), Some(false));
        assert_eq!(r.user_limited_allows("dialog#42", ""), Some(false));
        assert_eq!(r.user_limited_allows("dialog", "42"), None);
    }

    #[test]
    fn namespaces_of_channels() {
        assert_eq!(namespace_of("chat:1"), "chat");
        assert_eq!(namespace_of("chat:a:b"), "chat");
        assert_eq!(namespace_of("plain"), "");
    }

    #[test]
    fn globs() {
        assert!(glob_match("chat:*", "chat:1"));
        assert!(!glob_match("chat:*", "news"));
        assert!(glob_match("*:room*", "chat:room7"));
        assert!(glob_match("exact", "exact"));
        assert!(glob_match("*", "anything"));
    }
}
