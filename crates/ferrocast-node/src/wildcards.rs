//! Wildcard channel patterns (namespaces with `allow_wildcard_subscriptions`): the part
//! of a channel name after its namespace is a list of tokens separated by `.`; in a
//! pattern, `*` stands for exactly one token and `>` (last only) for one or more.
//! `sensors:building1.*.temp` matches `sensors:building1.f3.temp`; `sensors:>` matches
//! every channel of `sensors` with at least one token.
//!
//! [`PatternIndex`] finds the patterns matching a channel by walking a token trie: the
//! cost depends on the channel's length and on the patterns that match, not on how many
//! patterns there are.

use crate::channels::{NAMESPACE_BOUNDARY, USER_BOUNDARY};
use crate::subscriber::Subscriber;
use ferrocast_protocol::{ErrorCode, ProtocolError};
use std::collections::HashMap;
use std::sync::Arc;

/// Separates the tokens of a channel name.
pub const TOKEN_SEPARATOR: char = '.';
/// Matches exactly one token.
pub const ONE: &str = "*";
/// Matches one or more trailing tokens.
pub const REST: &str = ">";

/// A validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The namespace (`""` for channels without one).
    pub namespace: String,
    /// The tokens after the namespace, wildcards included.
    pub tokens: Vec<String>,
}

fn bad(message: &'static str) -> ProtocolError {
    ProtocolError::with_message(ErrorCode::BadRequest, message)
}

/// The namespace of a channel and the rest of its name.
fn split(channel: &str) -> (&str, &str) {
    channel
        .split_once(NAMESPACE_BOUNDARY)
        .unwrap_or(("", channel))
}

/// The namespace of `channel` (`""` without one): its wildcard feed.
pub fn namespace_of(channel: &str) -> &str {
    split(channel).0
}

/// Whether `channel` is a pattern: one of its tokens is `*` or `>`.
pub fn is_pattern(channel: &str) -> bool {
    split(channel)
        .1
        .split(TOKEN_SEPARATOR)
        .any(|t| t == ONE || t == REST)
}

/// Reads `channel` as a pattern of a namespace that allows them: `Ok(None)` for an
/// ordinary channel (no token contains `*` or `>`), 107 for a malformed pattern (an empty
/// token, `*` or `>` inside a token, `>` not last, a user-limited `#` part).
pub fn parse(channel: &str) -> Result<Option<Pattern>, ProtocolError> {
    let (namespace, rest) = split(channel);
    if !rest.contains(['*', '>']) {
        return Ok(None);
    }
    let tokens: Vec<&str> = rest.split(TOKEN_SEPARATOR).collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(bad("a wildcard pattern has an empty token"));
        }
        if t.contains(['*', '>']) && *t != ONE && *t != REST {
            return Err(bad("* and > must be whole tokens of a wildcard pattern"));
        }
        if *t == REST && i + 1 != tokens.len() {
            return Err(bad("> must be the last token of a wildcard pattern"));
        }
    }
    if rest.contains(USER_BOUNDARY) {
        return Err(bad("a wildcard pattern cannot name user-limited channels"));
    }
    Ok(Some(Pattern {
        namespace: namespace.to_string(),
        tokens: tokens.into_iter().map(str::to_string).collect(),
    }))
}

/// The subscribers of the patterns ending at one trie position, by the name they
/// subscribed with (the channel of their pushes: two names may spell one pattern).
type Terminal = HashMap<String, HashMap<String, Arc<Subscriber>>>;

/// One level of the trie.
#[derive(Default)]
struct Node {
    exact: HashMap<String, Node>,
    one: Option<Box<Node>>,
    /// Patterns ending with `>` at this level.
    rest: Option<Terminal>,
    /// Patterns ending here.
    end: Option<Terminal>,
}

/// Removes `client`'s subscription named `name` from a terminal slot, emptying the slot
/// when nothing is left; returns whether it was there.
fn take(slot: &mut Option<Terminal>, name: &str, client: &str) -> bool {
    let Some(t) = slot else { return false };
    let Some(subs) = t.get_mut(name) else {
        return false;
    };
    let removed = subs.remove(client).is_some();
    if subs.is_empty() {
        t.remove(name);
    }
    if t.is_empty() {
        *slot = None;
    }
    removed
}

impl Node {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.one.is_none() && self.rest.is_none() && self.end.is_none()
    }

    /// The terminal of `tokens` below this node, made on the way.
    fn terminal(&mut self, tokens: &[String]) -> &mut Terminal {
        match tokens.split_first() {
            None => self.end.get_or_insert_with(Default::default),
            Some((t, rest)) if t == REST && rest.is_empty() => {
                self.rest.get_or_insert_with(Default::default)
            }
            Some((t, rest)) if t == ONE => {
                self.one.get_or_insert_with(Default::default).terminal(rest)
            }
            Some((t, rest)) => self.exact.entry(t.clone()).or_default().terminal(rest),
        }
    }

    /// Removes `client`'s subscription named `name` from the terminal of `tokens`,
    /// pruning what is left empty; returns whether it was there.
    fn remove(&mut self, tokens: &[String], name: &str, client: &str) -> bool {
        match tokens.split_first() {
            None => take(&mut self.end, name, client),
            Some((t, rest)) if t == REST && rest.is_empty() => take(&mut self.rest, name, client),
            Some((t, rest)) if t == ONE => {
                let Some(child) = self.one.as_mut() else {
                    return false;
                };
                let removed = child.remove(rest, name, client);
                if child.is_empty() {
                    self.one = None;
                }
                removed
            }
            Some((t, rest)) => {
                let Some(child) = self.exact.get_mut(t) else {
                    return false;
                };
                let removed = child.remove(rest, name, client);
                if child.is_empty() {
                    self.exact.remove(t);
                }
                removed
            }
        }
    }

    /// Calls `f` with each subscribed name matching `tokens` (never twice for one).
    fn visit<'a>(
        &'a self,
        tokens: &[&str],
        f: &mut impl FnMut(&'a str, &'a HashMap<String, Arc<Subscriber>>),
    ) {
        match tokens.split_first() {
            None => {
                for (name, subs) in self.end.iter().flatten() {
                    f(name, subs);
                }
            }
            Some((first, rest)) => {
                for (name, subs) in self.rest.iter().flatten() {
                    f(name, subs);
                }
                if let Some(child) = self.exact.get(*first) {
                    child.visit(rest, f);
                }
                if let Some(child) = &self.one {
                    child.visit(rest, f);
                }
            }
        }
    }
}

/// Wildcard subscriptions by namespace.
#[derive(Default)]
pub struct PatternIndex {
    namespaces: HashMap<String, Node>,
    subscriptions: usize,
}

impl PatternIndex {
    /// Adds a subscriber of `pattern` (whose name is `channel`); returns true when it is
    /// the namespace's first wildcard subscription.
    pub fn add(&mut self, channel: &str, pattern: &Pattern, sub: Arc<Subscriber>) -> bool {
        let first = !self.namespaces.contains_key(&pattern.namespace);
        let root = self
            .namespaces
            .entry(pattern.namespace.clone())
            .or_default();
        let subs = root
            .terminal(&pattern.tokens)
            .entry(channel.to_string())
            .or_default();
        if subs.insert(sub.client.id.clone(), sub).is_none() {
            self.subscriptions += 1;
        }
        first
    }

    /// Removes `client`'s subscription to `pattern` (named `channel`); returns true when
    /// the namespace has no wildcard subscription left.
    pub fn remove(&mut self, channel: &str, pattern: &Pattern, client: &str) -> bool {
        let Some(root) = self.namespaces.get_mut(&pattern.namespace) else {
            return false;
        };
        if root.remove(&pattern.tokens, channel, client) {
            self.subscriptions -= 1;
        }
        if root.is_empty() {
            self.namespaces.remove(&pattern.namespace);
            true
        } else {
            false
        }
    }

    /// Whether a namespace has wildcard subscriptions.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// Wildcard subscriptions held.
    pub fn len(&self) -> usize {
        self.subscriptions
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// Calls `f` with each pattern matching the concrete `channel` and its subscribers.
    /// User-limited channels (`#`) never match.
    pub fn matching<'a>(
        &'a self,
        channel: &str,
        mut f: impl FnMut(&'a str, &'a HashMap<String, Arc<Subscriber>>),
    ) {
        let (namespace, rest) = split(channel);
        if rest.contains(USER_BOUNDARY) {
            return;
        }
        let Some(root) = self.namespaces.get(namespace) else {
            return;
        };
        let tokens: Vec<&str> = rest.split(TOKEN_SEPARATOR).collect();
        root.visit(&tokens, &mut f);
    }
}

/// Whether `pattern` matches the concrete `channel`: the definition [`PatternIndex`]
/// follows, token by token.
pub fn matches(pattern: &Pattern, channel: &str) -> bool {
    let (namespace, rest) = split(channel);
    if namespace != pattern.namespace || rest.contains(USER_BOUNDARY) {
        return false;
    }
    let tokens: Vec<&str> = rest.split(TOKEN_SEPARATOR).collect();
    let mut i = 0;
    for (k, p) in pattern.tokens.iter().enumerate() {
        if p == REST {
            return k + 1 == pattern.tokens.len() && i < tokens.len();
        }
        match tokens.get(i) {
            Some(t) if p == ONE || p == t => i += 1,
            _ => return false,
        }
    }
    i == tokens.len()
}

/// Checks [`PatternIndex`] against [`matches`] on one input (the fuzzer's and its
/// regressions'): the first line is a channel, the next ones (at most 64) patterns. The
/// index must report exactly the valid patterns that match, and be empty once they are
/// removed. Returns what disagreed.
pub fn cross_check(
    input: &str,
    subscriber: impl Fn(usize) -> Arc<Subscriber>,
) -> Result<(), String> {
    let mut lines = input.split('\n');
    let Some(channel) = lines.next() else {
        return Ok(());
    };
    let mut index = PatternIndex::default();
    let mut added: Vec<(String, Pattern, String)> = Vec::new();
    for (i, line) in lines.take(64).enumerate() {
        if let Ok(Some(p)) = parse(line) {
            let sub = subscriber(i);
            let id = sub.client.id.clone();
            index.add(line, &p, sub);
            added.push((line.to_string(), p, id));
        }
    }
    let mut got = Vec::new();
    index.matching(channel, |pattern, _| got.push(pattern.to_string()));
    got.sort();
    let mut want: Vec<String> = added
        .iter()
        .filter(|(_, p, _)| matches(p, channel))
        .map(|(name, _, _)| name.clone())
        .collect();
    want.sort();
    want.dedup();
    if got != want {
        return Err(format!("{channel:?}: index {got:?}, definition {want:?}"));
    }
    for (name, p, id) in &added {
        index.remove(name, p, id);
    }
    if !index.is_empty() || !index.namespaces.is_empty() {
        return Err("the index is not empty after every removal".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ClientHandle, ControlQueue};
    use crate::outbox::Outbox;
    use ferrocast_protocol::Protocol;

    fn sub(id: &str) -> Arc<Subscriber> {
        let handle = Arc::new(ClientHandle {
            id: id.into(),
            user: String::new(),
            protocol: Protocol::Json,
            outbox: Arc::new(Outbox::new(1 << 20)),
            control: Arc::new(ControlQueue::default()),
        });
        Arc::new(Subscriber::new(handle, false, false))
    }

    fn p(channel: &str) -> Pattern {
        parse(channel).unwrap().unwrap()
    }

    fn matches(index: &PatternIndex, channel: &str) -> Vec<String> {
        let mut out = Vec::new();
        index.matching(channel, |pattern, _| out.push(pattern.to_string()));
        out.sort();
        out
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse("sensors:a.b").unwrap(), None);
        assert_eq!(parse("plain").unwrap(), None);
        assert_eq!(
            p("sensors:a.*.temp").tokens,
            vec!["a".to_string(), "*".into(), "temp".into()]
        );
        assert_eq!(p("sensors:>").namespace, "sensors");
        assert_eq!(p("*").namespace, "");
        for bad in [
            "sensors:**",
            "sensors:a*",
            "sensors:>.a",
            "sensors:a..*",
            "sensors:*.",
            "sensors:.>",
            "sensors:a>",
            "sensors:*#42",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, 107, "{bad}");
        }
        assert!(is_pattern("s:a.*"));
        assert!(!is_pattern("s:a*"));
    }

    #[test]
    fn matches_nats_style() {
        let mut index = PatternIndex::default();
        for (i, pat) in ["s:a.*.t", "s:a.>", "s:>", "s:*", "s:a.b.t", "x:*"]
            .iter()
            .enumerate()
        {
            let first = index.add(pat, &p_or_exact(pat), sub(&format!("c{i}")));
            assert_eq!(first, i == 0 || *pat == "x:*", "{pat}");
        }
        assert_eq!(
            matches(&index, "s:a.b.t"),
            ["s:>", "s:a.*.t", "s:a.>", "s:a.b.t"]
        );
        assert_eq!(matches(&index, "s:a"), ["s:*", "s:>"]);
        assert_eq!(matches(&index, "s:a.b"), ["s:>", "s:a.>"]);
        assert_eq!(matches(&index, "x:q"), ["x:*"]);
        assert!(matches(&index, "x:q.r").is_empty());
        assert!(matches(&index, "y:q").is_empty());
        assert!(
            matches(&index, "s:a.b#42").is_empty(),
            "user-limited channels never match"
        );
        assert_eq!(index.len(), 6);
        assert!(!index.remove("s:a.>", &p("s:a.>"), "c1"));
        assert_eq!(matches(&index, "s:a.b"), ["s:>"]);
        assert!(index.remove("x:*", &p("x:*"), "c5"));
        assert!(!index.has_namespace("x"));
        for (pat, c) in [("s:a.*.t", "c0"), ("s:>", "c2"), ("s:*", "c3")] {
            index.remove(pat, &p(pat), c);
        }
        assert!(index.remove("s:a.b.t", &p_or_exact("s:a.b.t"), "c4"));
        assert!(index.is_empty());
        assert!(index.namespaces.is_empty(), "pruned");
    }

    /// A pattern, or an exact channel of a wildcard namespace as a pattern without
    /// wildcards (what a trie with only exact tokens holds).
    fn p_or_exact(channel: &str) -> Pattern {
        parse(channel).unwrap().unwrap_or_else(|| {
            let (namespace, rest) = split(channel);
            Pattern {
                namespace: namespace.into(),
                tokens: rest.split('.').map(str::to_string).collect(),
            }
        })
    }

    #[test]
    fn the_index_follows_the_definition() {
        for input in [
            "s:a.b.c\ns:*.b.*\ns:a.>\ns:>\ns:*\ns:a.b.c.>\nx:>",
            "s:a..c\ns:a.*.c\ns:*.*.*",
            "nons\n*\n>\nnons.*",
            "s:a\ns:a.>\ns:*.>",
        ] {
            cross_check(input, |i| sub(&format!("c{i}"))).unwrap();
        }
    }

    #[test]
    fn a_channel_with_many_patterns_visits_only_its_own() {
        let mut index = PatternIndex::default();
        for i in 0..10_000 {
            index.add(&format!("s:dev{i}.*"), &p(&format!("s:dev{i}.*")), sub("c"));
        }
        assert_eq!(matches(&index, "s:dev7.temp"), ["s:dev7.*"]);
        assert!(matches(&index, "s:other.temp").is_empty());
    }
}
