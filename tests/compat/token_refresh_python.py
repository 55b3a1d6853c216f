#!/usr/bin/env python3
"""centrifuge-python with get_token callbacks over several short token lifetimes: the
connection and a token-protected subscription refresh in place, without a reconnect, a
resubscribe or a 3005/3006 close.

Environment: COMPAT_WS_URL, COMPAT_SECRET (HS256 key of the node), COMPAT_PROTOCOL,
COMPAT_CHANNEL (a channel needing a subscription token), COMPAT_TTL (token lifetime,
seconds), COMPAT_RUN (how long to run, seconds).
"""
import asyncio
import json
import os
import sys
import time

import jwt
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

SECRET = os.environ["COMPAT_SECRET"]
CHANNEL = os.environ["COMPAT_CHANNEL"]
TTL = int(os.environ.get("COMPAT_TTL", "2"))
RUN = int(os.environ.get("COMPAT_RUN", "8"))
COUNTS = {"connect_tokens": 0, "sub_tokens": 0, "connected": 0, "disconnected": 0,
          "subscribed": 0, "unsubscribed": 0}


def sign(claims):
    return jwt.encode({**claims, "exp": int(time.time()) + TTL}, SECRET, algorithm="HS256")


async def connect_token():
    COUNTS["connect_tokens"] += 1
    return sign({"sub": "refresher"})


async def sub_token(channel):
    COUNTS["sub_tokens"] += 1
    return sign({"sub": "refresher", "channel": channel})


class Events(ClientEventHandler):
    async def on_connected(self, ctx):
        COUNTS["connected"] += 1

    async def on_disconnected(self, ctx):
        COUNTS["disconnected"] += 1
        print(f"disconnected {ctx}", flush=True)


class SubEvents(SubscriptionEventHandler):
    async def on_subscribed(self, ctx):
        COUNTS["subscribed"] += 1

    async def on_unsubscribed(self, ctx):
        COUNTS["unsubscribed"] += 1
        print(f"unsubscribed {ctx}", flush=True)


async def main():
    client = Client(os.environ["COMPAT_WS_URL"], get_token=connect_token, events=Events(),
                    use_protobuf=os.environ.get("COMPAT_PROTOCOL") == "protobuf", timeout=5.0)
    sub = client.new_subscription(CHANNEL, events=SubEvents(), get_token=sub_token)
    await client.connect()
    await sub.subscribe()
    await asyncio.sleep(RUN)
    print(json.dumps(COUNTS), flush=True)
    lifetimes = RUN // TTL - 1
    ok = (COUNTS["connected"] == 1 and COUNTS["disconnected"] == 0 and COUNTS["subscribed"] == 1
          and COUNTS["unsubscribed"] == 0 and COUNTS["connect_tokens"] >= lifetimes
          and COUNTS["sub_tokens"] >= lifetimes)
    print(f"PASS refreshed {COUNTS['connect_tokens'] - 1} times, no reconnect" if ok else "FAIL",
          flush=True)
    await client.disconnect()
    sys.exit(0 if ok else 1)


asyncio.run(main())
