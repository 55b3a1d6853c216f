//! The `ferrocast` binary's library: configuration, CLI, HTTP server, WebSocket
//! transport, server API routes, health/readiness/metrics and graceful drain.
//!
//! - A WebSocket frame enters in [`websocket`] and is handed to the node's session.
//! - HTTP routes live in [`http`]; `ferrocast serve` in [`serve`].

pub mod cli;
pub mod config;
pub mod grpc_api;
pub mod http;
pub mod observability;
pub mod ratelimit;
pub mod serve;
pub mod token;
pub mod websocket;
pub mod wsframe;
