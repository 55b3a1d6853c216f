//! Metric names and recording helpers. The server installs the Prometheus recorder;
//! without one these calls cost next to nothing.

use std::time::Duration;

/// Connections on this node (gauge).
pub const CONNECTIONS: &str = "ferrocast_connections";
/// Subscriptions on this node (gauge).
pub const SUBSCRIPTIONS: &str = "ferrocast_subscriptions";
/// Channels with local subscribers (gauge).
pub const CHANNELS: &str = "ferrocast_channels";
/// Distinct users on this node (gauge).
pub const USERS: &str = "ferrocast_users";
/// Messages fanned out to clients, by `type` (pub, join, leave).
pub const MESSAGES_SENT: &str = "ferrocast_messages_sent_total";
/// Commands received from clients, by `method`.
pub const MESSAGES_RECEIVED: &str = "ferrocast_messages_received_total";
/// Time to publish into the engine (seconds).
pub const PUBLISH_DURATION: &str = "ferrocast_publish_duration_seconds";
/// Time to fan a publication out to local subscribers (seconds).
pub const FANOUT_DURATION: &str = "ferrocast_fanout_duration_seconds";
/// Disconnects, by close `code`.
pub const DISCONNECTS: &str = "ferrocast_disconnects_total";
/// Connections closed because their queue overflowed.
pub const SLOW_CONSUMER_CLOSES: &str = "ferrocast_slow_consumer_closes_total";
/// Pushes dropped by a namespace's slow-consumer drop policy, by `namespace` (empty
/// without namespace) and `policy`.
pub const SLOW_CONSUMER_DROPS: &str = "ferrocast_slow_consumer_drops_total";
/// Server API calls, by `method` and `result` (ok or the error code).
pub const API_CALLS: &str = "ferrocast_api_calls_total";
/// Command replies with an error, by `method` and `code`.
pub const COMMAND_ERRORS: &str = "ferrocast_command_errors_total";

/// Pushes encoded for fan-out, by `protocol` (json, protobuf): one per publication, join
/// or leave and protocol, however many subscribers share the bytes.
pub const PUSH_ENCODINGS: &str = "ferrocast_push_encodings_total";
/// Connections closed because they cannot receive a payload (binary data for a JSON
/// client: close 3506).
pub const INAPPROPRIATE_PROTOCOL_CLOSES: &str = "ferrocast_inappropriate_protocol_closes_total";

/// Proxy hook calls, by `hook`, `proxy` (name) and `result` (ok, error, disconnect,
/// timeout, failed).
pub const PROXY_CALLS: &str = "ferrocast_proxy_calls_total";
/// Duration of proxy hook calls (seconds), by `hook` and `proxy`.
pub const PROXY_DURATION: &str = "ferrocast_proxy_call_duration_seconds";

/// Subscription streams open to the backend (gauge).
pub const PROXY_STREAMS: &str = "ferrocast_proxy_streams";

/// TCP connections refused before HTTP, by `reason`.
pub const CONNECTIONS_REFUSED: &str = "ferrocast_connections_refused_total";

/// Resident memory of the process in bytes (gauge).
pub const PROCESS_RESIDENT_MEMORY: &str = "ferrocast_process_resident_memory_bytes";
/// CPU time the process used, user and system, in seconds (a gauge holding the running
/// total, with the precision of `/proc`'s clock ticks; use it like a counter).
pub const PROCESS_CPU: &str = "ferrocast_process_cpu_seconds_total";
/// Open file descriptors, sockets included (gauge).
pub const PROCESS_OPEN_FDS: &str = "ferrocast_process_open_fds";
/// When the process started, Unix seconds (gauge).
pub const PROCESS_START_TIME: &str = "ferrocast_process_start_time_seconds";
/// Tasks alive in the async runtime (gauge): about two per connection.
pub const RUNTIME_ALIVE_TASKS: &str = "ferrocast_runtime_alive_tasks";
/// Worker threads of the async runtime (gauge).
pub const RUNTIME_WORKERS: &str = "ferrocast_runtime_workers";

/// Client commands, as counted in [`MESSAGES_RECEIVED`].
pub const COMMANDS: &[&str] = &[
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
];

/// Close codes that [`DISCONNECTS`] starts at zero (every code the node closes with).
pub const CLOSE_CODES: &[u16] = &[
    3000, 3001, 3004, 3005, 3006, 3008, 3009, 3010, 3011, 3012, 3013, 3500, 3501, 3502, 3503, 3504,
    3505, 3506,
];

/// Makes the series with known labels exist from the start, at zero, so dashboards and
/// alerts (`rate`, `increase`) see them before their first event. `api_methods` are the
/// server API method names.
pub fn register_zeros(api_methods: &[&str]) {
    for kind in ["pub", "join", "leave"] {
        metrics::counter!(MESSAGES_SENT, "type" => kind).absolute(0);
    }
    for method in COMMANDS {
        metrics::counter!(MESSAGES_RECEIVED, "method" => *method).absolute(0);
    }
    for code in CLOSE_CODES {
        metrics::counter!(DISCONNECTS, "code" => code.to_string()).absolute(0);
    }
    for method in api_methods {
        metrics::counter!(API_CALLS, "method" => method.to_string(), "result" => "ok").absolute(0);
    }
    metrics::counter!(COMMAND_ERRORS, "method" => "connect", "code" => "100").absolute(0);
    metrics::counter!(SLOW_CONSUMER_CLOSES).absolute(0);
    metrics::counter!(INAPPROPRIATE_PROTOCOL_CLOSES).absolute(0);
    for protocol in ["json", "protobuf"] {
        metrics::counter!(PUSH_ENCODINGS, "protocol" => protocol).absolute(0);
    }
    metrics::counter!(CONNECTIONS_REFUSED, "reason" => "ip_rate").absolute(0);
    metrics::gauge!(PROXY_STREAMS).set(0.0);
}

/// Records that a push was encoded for `protocol` (once per fan-out).
pub fn push_encoded(protocol: &'static str) {
    metrics::counter!(PUSH_ENCODINGS, "protocol" => protocol).increment(1);
}

/// Records connections closed with 3506 because a payload was not JSON.
pub fn inappropriate_protocol_closed(n: usize) {
    metrics::counter!(INAPPROPRIATE_PROTOCOL_CLOSES).increment(n as u64);
}

/// Records one proxy hook call.
pub fn proxy_call(hook: &'static str, proxy: &str, result: &'static str, took: Duration) {
    metrics::counter!(PROXY_CALLS, "hook" => hook, "proxy" => proxy.to_string(), "result" => result)
        .increment(1);
    metrics::histogram!(PROXY_DURATION, "hook" => hook, "proxy" => proxy.to_string())
        .record(took.as_secs_f64());
}

/// Counts one subscription stream as open while the guard lives.
pub struct OpenStream(());

impl OpenStream {
    /// A stream just opened.
    pub fn opened() -> OpenStream {
        metrics::gauge!(PROXY_STREAMS).increment(1.0);
        OpenStream(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(PROXY_STREAMS).decrement(1.0);
    }
}

/// Records a refused connection.
pub fn connection_refused(reason: &'static str) {
    metrics::counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// Records a fan-out of one publication to `n` subscribers.
pub fn fanout(n: usize, took: Duration) {
    metrics::counter!(MESSAGES_SENT, "type" => "pub").increment(n as u64);
    metrics::histogram!(FANOUT_DURATION).record(took.as_secs_f64());
}

/// Records pushes of a type.
pub fn pushes_sent(kind: &'static str, n: usize) {
    metrics::counter!(MESSAGES_SENT, "type" => kind).increment(n as u64);
}

/// Records a slow-consumer close.
pub fn slow_consumer_closed() {
    metrics::counter!(SLOW_CONSUMER_CLOSES).increment(1);
}

/// Makes the drop counter of a namespace with a drop policy exist from the start, at 0.
pub fn register_slow_consumer_drops(namespace: &str, policy: &'static str) {
    metrics::counter!(SLOW_CONSUMER_DROPS, "namespace" => namespace.to_string(), "policy" => policy)
        .absolute(0);
}

/// Records `n` pushes dropped by the drop `policy` of `namespace`.
pub fn slow_consumer_dropped(namespace: &str, policy: &'static str, n: u64) {
    metrics::counter!(SLOW_CONSUMER_DROPS, "namespace" => namespace.to_string(), "policy" => policy)
        .increment(n);
}

/// Records a received command.
pub fn command_received(method: &'static str) {
    metrics::counter!(MESSAGES_RECEIVED, "method" => method).increment(1);
}

/// Records a command error.
pub fn command_error(method: &'static str, code: u32) {
    metrics::counter!(COMMAND_ERRORS, "method" => method, "code" => code.to_string()).increment(1);
}

/// Records a disconnect.
pub fn disconnect(code: u16) {
    metrics::counter!(DISCONNECTS, "code" => code.to_string()).increment(1);
}

/// Records the duration of a publish into the engine.
pub fn publish_took(took: Duration) {
    metrics::histogram!(PUBLISH_DURATION).record(took.as_secs_f64());
}

/// Records a server API call.
pub fn api_call(method: &str, result: &str) {
    metrics::counter!(API_CALLS, "method" => method.to_string(), "result" => result.to_string())
        .increment(1);
}
