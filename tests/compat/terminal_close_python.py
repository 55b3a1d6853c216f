#!/usr/bin/env python3
"""centrifuge-python and close codes that meet a flood of in-flight commands:
  A. a flood over the node's command rate limit: the SDK sees 3013 (a reconnecting code),
     reconnects and resubscribes;
  B. commands still in flight when the server API disconnects the user with 3503 (force
     disconnect, terminal): the SDK sees 3503 and does not reconnect.

Environment: COMPAT_WS_URL, COMPAT_API_URL, COMPAT_API_KEY, COMPAT_SECRET (HS256 key of the
node), COMPAT_PROTOCOL (json | protobuf), COMPAT_CHANNEL (a channel the subscriber may
publish to), COMPAT_USER.
"""
import asyncio
import json
import os
import sys
import time
import urllib.request

import jwt
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

SECRET = os.environ["COMPAT_SECRET"]
CHANNEL = os.environ["COMPAT_CHANNEL"]
USER = os.environ["COMPAT_USER"]
EVENTS = []
SUBSCRIBED = [0]
ERRORS = {}
PROTOBUF = os.environ.get("COMPAT_PROTOCOL") == "protobuf"


class Events(ClientEventHandler):
    async def on_connecting(self, ctx):
        EVENTS.append(("connecting", ctx.code, ctx.reason))

    async def on_connected(self, ctx):
        EVENTS.append(("connected", 0, ""))

    async def on_disconnected(self, ctx):
        EVENTS.append(("disconnected", ctx.code, ctx.reason))


class SubEvents(SubscriptionEventHandler):
    async def on_subscribed(self, ctx):
        SUBSCRIBED[0] += 1


async def until(what, cond, secs=10.0):
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"FAIL timed out waiting for {what}; events {EVENTS}; errors {ERRORS}")
        await asyncio.sleep(0.01)


def closed_with(kind):
    return [code for (e, code, _) in EVENTS if e == kind and code >= 3000]


def api_disconnect():
    body = json.dumps({"user": USER, "disconnect": {"code": 3503, "reason": "force disconnect"}})
    req = urllib.request.Request(
        os.environ["COMPAT_API_URL"] + "/disconnect", data=body.encode(), method="POST",
        headers={"X-API-Key": os.environ["COMPAT_API_KEY"], "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.status


async def main():
    token = jwt.encode({"sub": USER}, SECRET, algorithm="HS256")
    client = Client(os.environ["COMPAT_WS_URL"], token=token, events=Events(), timeout=5.0,
                    use_protobuf=PROTOBUF,
                    min_reconnect_delay=0.1, max_reconnect_delay=0.5)
    sub = client.new_subscription(CHANNEL, events=SubEvents())
    await client.connect()
    await sub.subscribe()
    await until("subscribed", lambda: SUBSCRIBED[0] == 1)

    def flood(n):
        async def one(i):
            try:
                await sub.publish(json.dumps({"n": i}).encode() if PROTOBUF else {"n": i})
            except Exception as e:  # refused (111) or cut off by the close: expected here
                k = f"{type(e).__name__}: {e}"[:80]; ERRORS[k] = ERRORS.get(k, 0) + 1
        return [asyncio.ensure_future(one(i)) for i in range(n)]

    # A: over the rate limit (burst 500, disconnect after 100 refused commands in a row).
    tasks = flood(2000)
    await until("a close during the flood",
                lambda: closed_with("connecting") or closed_with("disconnected"))
    a = closed_with("connecting")
    await until("the reconnect after 3013", lambda: SUBSCRIBED[0] == 2)
    print(f"A: closed with {a}, reconnected and resubscribed", flush=True)
    if a[:1] != [3013] or closed_with("disconnected"):
        raise SystemExit(f"FAIL A: events {EVENTS}")
    for t in tasks:
        t.cancel()

    # B: commands in flight (within the burst) when the API disconnects the user.
    await asyncio.sleep(1.5)  # the rate limiter refills (100/s)
    before = len(EVENTS)
    tasks = flood(150)
    await asyncio.sleep(0)  # let the publishes go out
    await asyncio.to_thread(api_disconnect)
    await until("disconnected", lambda: closed_with("disconnected"))
    await asyncio.sleep(1.5)  # a reconnect would show within the 0.1-0.5 s delay
    b = EVENTS[before:]
    print(f"B: events after the API disconnect: {b}", flush=True)
    for t in tasks:
        t.cancel()
    ok = len(b) == 1 and b[0][0] == "disconnected" and b[0][1] == 3503
    print("PASS 3013 reconnects, 3503 is terminal, both codes arrived during a flood" if ok
          else "FAIL", flush=True)
    sys.exit(0 if ok else 1)


asyncio.run(main())
