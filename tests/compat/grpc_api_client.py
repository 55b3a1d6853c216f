#!/usr/bin/env python3
"""Drives the gRPC server API as a backend would, with grpcio: Centrifugo's CentrifugoApi
service, stubs compiled at start from crates/ferrocast-server/proto/api.proto (its field
numbers are Centrifugo's api.proto's) with grpcio-tools.

Usage: grpc_api_client.py HOST:PORT API_KEY CHANNEL USER NODES

CHANNEL has history and presence, a client of USER is subscribed to it, NODES nodes run. Every check
raises on a wrong answer; the last line is `RESULT <json>` with what the caller verifies on
the WebSocket side.
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "crates", "ferrocast-server", "proto")
OUT = tempfile.mkdtemp(prefix="ferrocast-grpc-api-")
if protoc.main(["", "-I", PROTO_DIR, f"--python_out={OUT}", f"--grpc_python_out={OUT}", "api.proto"]) != 0:
    raise SystemExit("cannot compile api.proto")
sys.path.insert(0, OUT)
import api_pb2 as pb  # noqa: E402
import api_pb2_grpc as pb_grpc  # noqa: E402


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok {what}", flush=True)


def main():
    addr, key, channel, user, nodes = sys.argv[1:6]
    chan = grpc.insecure_channel(addr)
    api = pb_grpc.CentrifugoApiStub(chan)
    auth = [("authorization", f"apikey {key}")]

    # The key: missing or wrong is UNAUTHENTICATED.
    for md, what in (([], "no key"), ([("authorization", "apikey wrong")], "wrong key")):
        try:
            api.Info(pb.InfoRequest(), metadata=md, timeout=5)
            check(False, f"{what} refused")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAUTHENTICATED, f"{what} refused")

    info = api.Info(pb.InfoRequest(), metadata=auth, timeout=5)
    check(not info.HasField("error") and len(info.result.nodes) == int(nodes), "info: every node")
    check(all(n.uid and n.name and n.version for n in info.result.nodes), "info: node identities")
    if int(nodes) == 1:  # other nodes' counts come with their periodic announcements
        n = info.result.nodes[0]
        check(n.num_clients >= 1 and n.num_subs >= 1 and n.num_users >= 1, "info: counts")

    pub = api.Publish(pb.PublishRequest(channel=channel, data=b'{"via":"grpc","n":1}',
                                        tags={"t": "1"}), metadata=auth, timeout=5)
    check(not pub.HasField("error") and pub.result.offset >= 1 and pub.result.epoch,
          "publish: offset and epoch")
    b = api.Broadcast(pb.BroadcastRequest(channels=[channel, "nope:x"], data=b'{"via":"grpc","n":2}'),
                      metadata=auth, timeout=5)
    check(len(b.result.responses) == 2, "broadcast: two responses")
    check(b.result.responses[0].result.offset == pub.result.offset + 1, "broadcast: published")
    check(b.result.responses[1].error.code == 102, "broadcast: unknown namespace is 102")

    h = api.History(pb.HistoryRequest(channel=channel, limit=-1), metadata=auth, timeout=5)
    datas = [p.data for p in h.result.publications]
    check(datas[-2:] == [b'{"via":"grpc","n":1}', b'{"via":"grpc","n":2}'], "history: both, in order")
    check(h.result.publications[-2].tags["t"] == "1", "history: tags")
    h0 = api.History(pb.HistoryRequest(channel=channel, limit=0), metadata=auth, timeout=5)
    check(h0.result.offset == b.result.responses[0].result.offset and not h0.result.publications,
          "history: position only")

    p = api.Presence(pb.PresenceRequest(channel=channel), metadata=auth, timeout=5)
    users = sorted(ci.user for ci in p.result.presence.values())
    check(user in users, "presence: the subscriber")
    ps = api.PresenceStats(pb.PresenceStatsRequest(channel=channel), metadata=auth, timeout=5)
    check(ps.result.num_clients == len(p.result.presence) and ps.result.num_users >= 1, "presence_stats")
    chs = api.Channels(pb.ChannelsRequest(pattern=channel.split(":")[0] + ":*"), metadata=auth, timeout=5)
    check(chs.result.channels[channel].num_clients >= 1, "channels: with its subscriber")

    # Errors in the response by default, as gRPC statuses when asked.
    e = api.Subscribe(pb.SubscribeRequest(channel=channel), metadata=auth, timeout=5)
    check(e.error.code == 107 and not e.HasField("result"), "subscribe without user: error 107")
    e = api.Publish(pb.PublishRequest(channel="nope:x", data=b"{}"), metadata=auth, timeout=5)
    check(e.error.code == 102, "publish to an unknown namespace: error 102")
    try:
        api.Publish(pb.PublishRequest(channel="nope:x", data=b"{}"),
                    metadata=auth + [("x-centrifugo-error-mode", "transport")], timeout=5)
        check(False, "transport error mode")
    except grpc.RpcError as err:
        check(err.code() == grpc.StatusCode.NOT_FOUND, "transport error mode: NOT_FOUND")

    # A batch: each reply in its method's field, a bad entry fails alone.
    batch = api.Batch(pb.BatchRequest(commands=[
        pb.Command(publish=pb.PublishRequest(channel=channel, data=b'{"via":"grpc","n":3}')),
        pb.Command(presence_stats=pb.PresenceStatsRequest(channel=channel)),
        pb.Command(),
        pb.Command(history=pb.HistoryRequest(channel=channel, limit=1, reverse=True)),
    ]), metadata=auth, timeout=5)
    r = batch.replies
    check(len(r) == 4, "batch: four replies")
    check(r[0].HasField("publish") and r[0].publish.offset == b.result.responses[0].result.offset + 1,
          "batch: publish")
    check(r[1].HasField("presence_stats"), "batch: presence_stats")
    check(r[2].error.code == 107, "batch: an empty command is 107")
    check(r[3].history.publications[0].data == b'{"via":"grpc","n":3}', "batch: history")

    # A request over the size limit (4 MiB by default) is refused before it runs.
    try:
        api.Publish(pb.PublishRequest(channel=channel, data=b'"' + b"x" * (5 << 20) + b'"'),
                    metadata=auth, timeout=10)
        check(False, "oversized request refused")
    except grpc.RpcError as err:
        # tonic answers OUT_OF_RANGE (grpc-go, and so Centrifugo: RESOURCE_EXHAUSTED).
        check(err.code() == grpc.StatusCode.OUT_OF_RANGE, f"oversized request refused ({err.code()})")

    # Methods ferrocast does not serve answer UNIMPLEMENTED.
    raw = chan.unary_unary("/centrifugal.centrifugo.api.CentrifugoApi/Connections",
                           request_serializer=lambda x: x, response_deserializer=lambda x: x)
    try:
        raw(b"", metadata=auth, timeout=5)
        check(False, "unimplemented method")
    except grpc.RpcError as err:
        check(err.code() == grpc.StatusCode.UNIMPLEMENTED, "unimplemented method")

    # Last: disconnect the user (the caller sees its client closed with this code).
    d = api.Disconnect(pb.DisconnectRequest(user=user, disconnect=pb.Disconnect(code=4321, reason="bye")),
                       metadata=auth, timeout=5)
    check(not d.HasField("error"), "disconnect")
    print("RESULT " + json.dumps({"offsets": [pub.result.offset, b.result.responses[0].result.offset,
                                              r[0].publish.offset]}), flush=True)


if __name__ == "__main__":
    main()
