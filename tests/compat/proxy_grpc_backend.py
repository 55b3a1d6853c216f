#!/usr/bin/env python3
"""An application backend serving the proxy hooks over gRPC (grpcio): Centrifugo's
CentrifugoProxy service, compiled at start from crates/ferrocast-proxy/proto/proxy.proto
(wire-compatible with Centrifugo's proxy.proto) with grpcio-tools.

It listens on 127.0.0.1 (port given as the first argument, 0 for any) and prints
`LISTENING <port>`; every call and every stream event is printed as `EVENT <json>` so a
test can follow them.

Connect      data {"user": U}: user U, data {"welcome": U}, meta {"tenant": "t-U"};
             metadata authorization "Bearer U" works too; data {"kick": true}: disconnect
             4501; otherwise no result.
RPC          "echo" (any namespace): data {"echo": data, "user": user, "meta": meta}, data
             read from b64data with binary_encoding; "fail": error 1003.
Subscribe    channels ...:denied-*: error 1001; otherwise allowed, data {"hello": channel}.
Publish      data {"published_by": user, "original": data}.
SubscribeUnidirectional (streams):
  streams:rows     1,000 rows in 10 batches of 100, each batch followed by a progress
                   message, 100 ms apart; the client may cancel (EVENT cancelled).
  streams:hold     one publication (tags {"k": "v"}), then open until cancelled.
  streams:end      two publications, then the stream ends (EVENT ended).
  streams:fail     two publications, then the stream fails.
  streams:denied-* error 1001 instead of a subscription.
SubscribeBidirectional: every publication of the client comes back as {"echo": data}.
"""
import base64
import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "crates", "ferrocast-proxy", "proto")
OUT = tempfile.mkdtemp(prefix="ferrocast-grpc-backend-")
if protoc.main(["", "-I", PROTO_DIR, f"--python_out={OUT}", f"--grpc_python_out={OUT}", "proxy.proto"]) != 0:
    raise SystemExit("cannot compile proxy.proto")
sys.path.insert(0, OUT)
import proxy_pb2 as pb  # noqa: E402
import proxy_pb2_grpc as pb_grpc  # noqa: E402

LOCK = threading.Lock()


def event(kind, **fields):
    with LOCK:
        print("EVENT " + json.dumps({"event": kind, **fields}), flush=True)


def loads(b):
    try:
        return json.loads(b) if b else None
    except ValueError:
        return None


def dumps(v):
    return json.dumps(v).encode()


def metadata(context):
    return {k: v for k, v in context.invocation_metadata()}


class Backend(pb_grpc.CentrifugoProxyServicer):
    def Connect(self, request, context):
        md = metadata(context)
        event("connect", client=request.client, protocol=request.protocol,
              transport=request.transport, authorization=md.get("authorization"),
              static=md.get("x-static"), credential=md.get("x-credential"))
        data = loads(request.data) or {}
        if data.get("kick"):
            return pb.ConnectResponse(disconnect=pb.Disconnect(code=4501, reason="go away"))
        user = data.get("user")
        auth = md.get("authorization", "")
        if not user and auth.startswith("Bearer "):
            user = auth[len("Bearer "):]
        if not user:
            return pb.ConnectResponse()
        return pb.ConnectResponse(result=pb.ConnectResult(
            user=user, data=dumps({"welcome": user}), meta=dumps({"tenant": f"t-{user}"}),
            info=dumps({"via": "grpc"})))

    def RPC(self, request, context):
        event("rpc", method=request.method, user=request.user, meta=loads(request.meta),
              encoding=request.encoding, b64data=request.b64data)
        data = base64.b64decode(request.b64data) if request.b64data else request.data
        if request.method.split(":")[-1] == "echo":
            return pb.RPCResponse(result=pb.RPCResult(data=dumps(
                {"echo": loads(data), "user": request.user, "meta": loads(request.meta)})))
        return pb.RPCResponse(error=pb.Error(code=1003, message="nope"))

    def Subscribe(self, request, context):
        event("subscribe", channel=request.channel, user=request.user)
        if request.channel.split(":", 1)[-1].startswith("denied-"):
            return pb.SubscribeResponse(error=pb.Error(code=1001, message="not for you"))
        return pb.SubscribeResponse(result=pb.SubscribeResult(data=dumps({"hello": request.channel})))

    def Publish(self, request, context):
        event("publish", channel=request.channel, user=request.user)
        return pb.PublishResponse(result=pb.PublishResult(
            data=dumps({"published_by": request.user, "original": loads(request.data)})))

    def SubscribeUnidirectional(self, request, context):
        channel, client = request.channel, request.client
        event("stream_open", channel=channel, client=client, user=request.user)
        cancelled = threading.Event()

        def on_done():
            if not done.is_set():
                cancelled.set()
                event("cancelled", channel=channel, client=client)

        done = threading.Event()
        context.add_callback(on_done)
        if channel.split(":", 1)[-1].startswith("denied-"):
            done.set()
            yield pb.StreamSubscribeResponse(subscribe_response=pb.SubscribeResponse(
                error=pb.Error(code=1001, message="not for you")))
            return
        yield pb.StreamSubscribeResponse(subscribe_response=pb.SubscribeResponse(
            result=pb.SubscribeResult(data=dumps({"stream": channel}))))
        if channel == "streams:rows":
            for batch in range(10):
                if cancelled.wait(0.1):
                    return
                rows = list(range(batch * 100, batch * 100 + 100))
                yield pb.StreamSubscribeResponse(publication=pb.Publication(
                    data=dumps({"type": "rows", "batch": batch, "rows": rows})))
                yield pb.StreamSubscribeResponse(publication=pb.Publication(
                    data=dumps({"type": "progress", "done": (batch + 1) * 100, "total": 1000})))
            done.set()
            event("finished", channel=channel, client=client)
            return
        if channel == "streams:hold":
            yield pb.StreamSubscribeResponse(publication=pb.Publication(
                data=dumps({"held": True}), tags={"k": "v"}))
            cancelled.wait(60)
            return
        for i in range(2):
            yield pb.StreamSubscribeResponse(publication=pb.Publication(data=dumps({"n": i})))
        if channel == "streams:fail":
            done.set()
            event("failing", channel=channel, client=client)
            context.abort(grpc.StatusCode.INTERNAL, "backend stream broke")
        done.set()
        event("ended", channel=channel, client=client)

    def SubscribeBidirectional(self, request_iterator, context):
        first = next(request_iterator)
        channel, client = first.subscribe_request.channel, first.subscribe_request.client
        event("bidi_open", channel=channel, client=client)
        context.add_callback(lambda: event("bidi_closed", channel=channel, client=client))
        yield pb.StreamSubscribeResponse(subscribe_response=pb.SubscribeResponse(
            result=pb.SubscribeResult(data=dumps({"bidi": channel}))))
        try:
            for msg in request_iterator:
                if msg.HasField("publication"):
                    event("bidi_publication", channel=channel, data=loads(msg.publication.data))
                    yield pb.StreamSubscribeResponse(publication=pb.Publication(
                        data=dumps({"echo": loads(msg.publication.data)})))
        except Exception:  # the call was cancelled: the client left
            pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    pb_grpc.add_CentrifugoProxyServicer_to_server(Backend(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"LISTENING {bound}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
