//! Subscription streams (Centrifugo's subscribe stream proxy): the backend opens a gRPC
//! stream for one client's subscription and pushes publications into it. The subscription
//! is otherwise an ordinary one (hub, presence, join/leave; no history or recovery), so
//! channel publications reach it too. A task reads the stream and queues each publication
//! to the client (held until the subscribe reply is out); the client's unsubscribe or
//! disconnect cancels the backend call; the backend closing the stream unsubscribes the
//! client (2000), a failed stream makes it subscribe again (2500). In a bidirectional
//! stream the client's publications into the channel go back to the backend.

use super::proxied::{Answer, answer, expiry, overrides};
use super::subscribe::Grant;
use super::{Session, SubState};
use crate::config::ChannelOptions;
use crate::control::{ClientHandle, SessionControl};
use crate::metrics;
use crate::proxy::Hook;
use crate::subscriber::Subscriber;
use ferrocast_protocol::*;
use ferrocast_proxy::grpc::{StreamEnd, StreamPublisher, SubscriptionStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells the streams of one process apart, so that the end of an old stream never
/// unsubscribes a newer subscription to the same channel.
static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// The backend stream of one subscription, while it runs.
pub(crate) struct StreamSub {
    id: u64,
    task: tokio::task::AbortHandle,
    publisher: Option<StreamPublisher>,
}

impl StreamSub {
    /// Ends the stream (the backend sees the call cancelled).
    pub(super) fn cancel(self) {
        self.task.abort();
    }
}

impl Drop for StreamSub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reading `stream` into `subscriber`: each publication is encoded for this one
/// client and queued like any other; the stream's end is reported to the session.
fn start(
    stream: SubscriptionStream,
    channel: String,
    subscriber: Arc<Subscriber>,
    handle: Arc<ClientHandle>,
    protocol: Protocol,
) -> StreamSub {
    let id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
    let publisher = stream.publisher();
    let task = tokio::spawn(read(stream, id, channel, subscriber, handle, protocol));
    StreamSub {
        id,
        task: task.abort_handle(),
        publisher,
    }
}

async fn read(
    mut stream: SubscriptionStream,
    id: u64,
    channel: String,
    subscriber: Arc<Subscriber>,
    handle: Arc<ClientHandle>,
    protocol: Protocol,
) {
    // Dropped when the stream ends or the task is aborted (unsubscribe, disconnect).
    let _open = metrics::OpenStream::opened();
    let failed = loop {
        match stream.next().await {
            Ok(p) => {
                let publication = Publication {
                    data: p.data,
                    info: None,
                    offset: 0,
                    tags: (!p.tags.is_empty()).then_some(p.tags),
                    time: 0,
                    channel: None,
                };
                match protocol.encode_push(&channel, &PushBody::Pub(&publication)) {
                    Ok(frame) => {
                        subscriber.deliver(0, "", &frame);
                    }
                    Err(_) => {
                        // Binary data for a JSON client: as for channel publications.
                        handle.outbox.close(Disconnect::INAPPROPRIATE_PROTOCOL);
                        return;
                    }
                }
            }
            Err(StreamEnd::Closed) => break false,
            Err(StreamEnd::Failed(e)) => {
                tracing::info!(channel = %channel, error = %e, "subscription stream failed");
                break true;
            }
        }
    };
    let ctl = SessionControl::StreamEnded {
        channel,
        stream: id,
        failed,
    };
    handle.control(ctl, Disconnect::INSUFFICIENT_STATE);
}

impl Session {
    /// Opens the backend stream of a subscription to a namespace with
    /// `subscribe_stream_proxy_enabled`: the backend's first answer decides, as the
    /// subscribe proxy's would; the grant carries the open stream.
    pub(super) async fn proxy_stream_subscribe(
        &self,
        opts: &ChannelOptions,
        req: &SubscribeRequest,
    ) -> Result<Result<Grant, ProtocolError>, Disconnect> {
        let Some(proxy) = self
            .node
            .proxies
            .subscribe_stream(&opts.subscribe_stream_proxy_name)
        else {
            return Ok(Err(ProtocolError::new(ErrorCode::NotAvailable)));
        };
        let request = self.subscribe_request(proxy, req);
        let bidirectional = opts.subscribe_stream_proxy_bidirectional;
        let mut opened: Option<SubscriptionStream> = None;
        let res = proxy
            .call(Hook::SubscribeStream, &self.headers, |h| {
                let opened = &mut opened;
                async move {
                    let (reply, stream) = proxy
                        .proxy
                        .subscribe_stream(request, &h, bidirectional)
                        .await?;
                    *opened = stream;
                    Ok(reply)
                }
            })
            .await;
        // An error or disconnect answer drops the stream, which cancels the call.
        let result = match answer(res) {
            Answer::Go(r) => r.unwrap_or_default(),
            Answer::Refuse(e) => return Ok(Err(e)),
            Answer::Close(d) => return Err(d),
        };
        let Some(stream) = opened else {
            return Ok(Err(ProtocolError::new(ErrorCode::Internal)));
        };
        let mut o = overrides(&result.r#override);
        // Publications of a stream have no place in the channel's history.
        o.force_recovery = Some(false);
        o.force_positioning = Some(false);
        Ok(Ok(Grant {
            server_side: false,
            chan_info: result.info,
            expires_at: expiry(result.expire_at),
            data: result.data,
            overrides: o,
            server_refresh: opts.sub_refresh_proxy_enabled,
            stream: Some(stream),
        }))
    }

    /// Starts the stream of a subscription just made.
    pub(super) fn start_stream(
        &self,
        stream: SubscriptionStream,
        channel: &str,
        subscriber: Arc<Subscriber>,
        handle: Arc<ClientHandle>,
    ) -> StreamSub {
        start(
            stream,
            channel.to_string(),
            subscriber,
            handle,
            self.protocol,
        )
    }

    /// The backend ended the stream `stream` of `channel`: unsubscribe the client (2000),
    /// or, when it failed, have it subscribe again (2500). Nothing when the subscription
    /// is already another one.
    pub(super) async fn stream_ended(
        &mut self,
        channel: &str,
        stream: u64,
        failed: bool,
    ) -> Result<(), Disconnect> {
        let current = self
            .connected
            .as_ref()
            .and_then(|c| c.subs.get(channel))
            .and_then(|s| s.stream.as_ref())
            .is_some_and(|s| s.id == stream);
        if !current {
            return Ok(());
        }
        if failed {
            self.recover_channel(channel).await
        } else {
            self.server_unsubscribe(channel).await
        }
    }

    /// A client publication into a channel of a stream namespace: into the client's own
    /// stream when that is bidirectional; 108 otherwise (or when not subscribed).
    pub(super) fn stream_publish(
        &self,
        channel: &str,
        data: Option<Payload>,
    ) -> Result<ReplyResult, ProtocolError> {
        let publisher = self
            .connected
            .as_ref()
            .and_then(|c| c.subs.get(channel))
            .and_then(|s: &SubState| s.stream.as_ref())
            .and_then(|s| s.publisher.as_ref());
        let Some(publisher) = publisher else {
            return Err(ProtocolError::new(ErrorCode::NotAvailable));
        };
        if publisher.publish(&data.unwrap_or_default()) {
            Ok(ReplyResult::Publish)
        } else {
            // The stream is gone or its queue is full: the client may retry.
            Err(ProtocolError {
                code: ErrorCode::Internal as u32,
                message: "stream is not accepting publications".into(),
                temporary: true,
            })
        }
    }
}
