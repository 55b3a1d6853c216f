#!/usr/bin/env python3
"""centrifuge-python subscribes to wildcard patterns and receives the publications of the
channels they match, made elsewhere (another node's HTTP API, the Redis command stream)
once it printed READY.

Environment: COMPAT_WS_URL, COMPAT_TOKEN (connection token), COMPAT_PROTOCOL (json or
protobuf), COMPAT_EXPECT (JSON: pattern -> the data it must receive, in any order).
Prints READY when subscribed, PASS when every pattern got exactly its data.
"""
import asyncio
import json
import os
import sys

from centrifuge import Client, SubscriptionEventHandler

PROTOBUF = os.environ.get("COMPAT_PROTOCOL") == "protobuf"
EXPECT = json.loads(os.environ["COMPAT_EXPECT"])


def data_of(d):
    if PROTOBUF:
        return json.loads(bytes(d).decode())
    return d


class Collect(SubscriptionEventHandler):
    def __init__(self, sink):
        self.sink = sink

    async def on_publication(self, ctx):
        self.sink.append(data_of(ctx.pub.data))


async def main():
    client = Client(os.environ["COMPAT_WS_URL"], token=os.environ["COMPAT_TOKEN"],
                    use_protobuf=PROTOBUF, timeout=5.0)
    got = {p: [] for p in EXPECT}
    subs = [client.new_subscription(p, events=Collect(got[p])) for p in EXPECT]
    await client.connect()
    for s in subs:
        await s.subscribe()
    for s in subs:
        await s.ready(5.0)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(len(got[p]) < len(EXPECT[p]) for p in EXPECT):
        if loop.time() > deadline:
            print(f"FAIL within 10 s: got {got}, expected {EXPECT}", flush=True)
            sys.exit(1)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # nothing more may arrive
    key = lambda v: json.dumps(v, sort_keys=True)
    for p in EXPECT:
        a, b = sorted(map(key, got[p])), sorted(map(key, EXPECT[p]))
        if a != b:
            print(f"FAIL {p}: got {a}, expected {b}", flush=True)
            sys.exit(1)
        print(f"PASS {p}: {len(a)} publications", flush=True)
    await client.disconnect()


asyncio.run(main())
