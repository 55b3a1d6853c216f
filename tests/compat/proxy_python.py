#!/usr/bin/env python3
"""centrifuge-python against ferrocast nodes whose proxy hooks go to proxy_backend.py.

Steps: a. connect without a token, the backend chooses the user (connect data), b. a client
the backend refuses gets its error (disconnected with code 1000), c. one it kicks is
disconnected with 4501, d. subscribe through the subscribe proxy (its data arrives),
e. publish through the publish proxy: a second client on another node receives the
backend's data instead of the client's, f. rpc returns the backend's data, g. an rpc error
of the backend arrives as the SDK's error.

Environment: COMPAT_WS_URL, COMPAT_WS_URL_2 (second node, default the first),
COMPAT_PROTOCOL (json or protobuf). Exits 0 only when every step passes.
"""
import asyncio
import json
import os
import sys
import time

from centrifuge import (
    Client,
    ClientEventHandler,
    PublicationContext,
    ReplyError,
    SubscribedContext,
    SubscriptionEventHandler,
)

WAIT = 5.0
PROTOBUF = os.environ.get("COMPAT_PROTOCOL") == "protobuf"
STEP = ["startup"]


def enc(value):
    return json.dumps(value).encode() if PROTOBUF else value


def data_of(data):
    return json.loads(data) if PROTOBUF else data


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


class Events(ClientEventHandler):
    def __init__(self):
        self.connected = asyncio.Queue()
        self.disconnected = asyncio.Queue()

    async def on_connected(self, ctx):
        self.connected.put_nowait(ctx)

    async def on_disconnected(self, ctx):
        self.disconnected.put_nowait(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self):
        self.subscribed = asyncio.Queue()
        self.publications = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext):
        self.subscribed.put_nowait(ctx)

    async def on_publication(self, ctx: PublicationContext):
        self.publications.put_nowait(ctx.pub)


async def next_of(queue, what):
    try:
        return await asyncio.wait_for(queue.get(), WAIT)
    except asyncio.TimeoutError:
        raise Failed(f"no {what} within {WAIT:.0f}s") from None


def client(url, data):
    ev = Events()
    c = Client(url, events=ev, data=enc(data), use_protobuf=PROTOBUF, timeout=WAIT, proxy=None)
    return c, ev


async def step(name, coro):
    STEP[0] = name
    t = time.monotonic()
    await coro
    print(f"PASS {name} ({(time.monotonic() - t) * 1000:.0f} ms)", flush=True)


async def scenario():
    url = os.environ["COMPAT_WS_URL"]
    url2 = os.environ.get("COMPAT_WS_URL_2") or url
    print(f"proxy_python ({'protobuf' if PROTOBUF else 'json'}): {url} and {url2}", flush=True)
    a, a_ev = client(url, {"user": "py-a"})
    b, b_ev = client(url2, {"user": "py-b"})
    clients = [a, b]
    try:
        async def connect():
            await a.connect()
            ctx = await next_of(a_ev.connected, "connected event")
            check(data_of(ctx.data) == {"welcome": "py-a"}, f"connect data {ctx.data!r}")
        await step("a. connect without a token: the backend chose user py-a", connect())

        async def refused():
            r, r_ev = client(url, {"refuse": True})
            clients.append(r)
            await r.connect()
            ctx = await next_of(r_ev.disconnected, "disconnected event of the refused client")
            check(ctx.code == 1000, f"refused with {ctx.code} {ctx.reason!r}, want 1000")
        await step("b. a client the backend refuses is disconnected with its error 1000", refused())

        async def kicked():
            k, k_ev = client(url, {"kick": True})
            clients.append(k)
            await k.connect()
            ctx = await next_of(k_ev.disconnected, "disconnected event of the kicked client")
            check(ctx.code == 4501, f"kicked with {ctx.code} {ctx.reason!r}, want 4501")
        await step("c. a client the backend kicks is disconnected with 4501", kicked())

        channel = "proxied:room-py-" + ("pb" if PROTOBUF else "json")
        a_sub_ev, b_sub_ev = SubEvents(), SubEvents()
        a_sub = a.new_subscription(channel, events=a_sub_ev)

        async def subscribe():
            await a_sub.subscribe()
            ctx = await next_of(a_sub_ev.subscribed, "subscribed event")
            check(data_of(ctx.data) == {"hello": channel}, f"subscribe data {ctx.data!r}")
        await step("d. subscribe through the subscribe proxy, its data arrives", subscribe())

        async def publish():
            await b.connect()
            await next_of(b_ev.connected, "connected event of py-b")
            b_sub = b.new_subscription(channel, events=b_sub_ev)
            await b_sub.subscribe()
            await next_of(b_sub_ev.subscribed, "subscribed event of py-b")
            await a_sub.publish(enc({"text": "hi"}))
            want = {"published_by": "py-a", "original": {"text": "hi"}}
            got = await next_of(b_sub_ev.publications, "publication at py-b")
            check(data_of(got.data) == want, f"py-b got {got.data!r}, want {want}")
            own = await next_of(a_sub_ev.publications, "publication at py-a")
            check(data_of(own.data) == want, f"py-a got {own.data!r}")
        await step("e. publish through the publish proxy: the other node's client gets the backend's data", publish())

        async def rpc():
            r = await a.rpc("echo", enc({"q": 42}))
            got = data_of(r.data)
            check(got["echo"] == {"q": 42} and got["user"] == "py-a", f"rpc echo {got}")
        await step("f. rpc returns the backend's data", rpc())

        async def rpc_error():
            try:
                await a.rpc("fail", enc({}))
                raise Failed("rpc fail answered without error")
            except ReplyError as e:
                check(e.code == 1003 and e.message == "nope", f"rpc error {e.code} {e.message!r}")
        await step("g. an rpc error of the backend arrives as the SDK's error", rpc_error())
    finally:
        for c in clients:
            try:
                await asyncio.wait_for(c.disconnect(), 2)
            except Exception:
                pass


async def main():
    try:
        await asyncio.wait_for(scenario(), 30)
    except Failed as e:
        print(f"FAIL {STEP[0]}: {e}", flush=True)
        sys.exit(1)
    except Exception as e:
        print(f"FAIL {STEP[0]}: {e!r}", flush=True)
        sys.exit(1)
    print("proxy_python: all steps passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
