//! A ferrocast node: everything one broker process does between the transport and the
//! engine.
//!
//! - [`hub::Hub`]: the local connection table and channel index; publications fan out here.
//! - [`session::Session`]: one client connection's protocol state machine.
//! - [`api`]: the server API operations (HTTP API and backend command stream share them).
//! - [`auth`], [`channels`], [`config`]: tokens, namespaces and settings.
//! - [`telemetry`]: OpenTelemetry spans and the W3C trace context carried between nodes.

pub mod api;
pub mod auth;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod control;
pub mod duration;
pub mod hub;
pub mod ingest;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod proxy;
pub mod ratelimit;
pub mod session;
pub mod stats;
pub mod subscriber;
pub mod survey;
pub mod telemetry;
pub mod wildcards;

pub use node::{Node, NodeError, NodeOptions, PublishParams};
