#!/usr/bin/env python3
"""A slow consumer with the real centrifuge-python SDK, on a channel with history and a drop
slow_consumer_policy: nothing may be lost.

The SDK subscribes; when the first publication arrives, its event handler blocks the event
loop (so the SDK reads nothing from its socket) while a thread publishes through the HTTP API
until the node reports, through connection_health, that it dropped publications and ended the
subscription. Then the SDK reads again: it gets the unsubscribe push 2500, resubscribes with
recover by itself, and must have received every publication exactly once, in order. Then a few
more publications arrive normally. Hard limit: 60 s.

Environment:
  COMPAT_WS_URL       ws://127.0.0.1:PORT/connection/websocket
  COMPAT_API_URL      http://127.0.0.1:PORT/api
  COMPAT_API_KEY      http_api.key of the node
  COMPAT_HMAC_SECRET  client.token.hmac_secret_key of the node
  COMPAT_CHANNEL      a channel of a namespace with history, force_recovery and a drop policy
"""

import asyncio
import json
import os
import signal
import sys
import threading
import time
import urllib.request
import warnings

import jwt
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscribingContext,
    SubscriptionEventHandler,
)

OVERALL_TIMEOUT = 60.0
WAIT = 20.0
PAD = "x" * 8000
BATCH = 16
TAIL = 5


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"python_slow_consumer: environment variable {name} is not set")
    return value


WS_URL, API_URL = env("COMPAT_WS_URL"), env("COMPAT_API_URL")
API_KEY, SECRET, CHANNEL = env("COMPAT_API_KEY"), env("COMPAT_HMAC_SECRET"), env("COMPAT_CHANNEL")


def log(msg):
    print(msg, flush=True)


def api(method, body):
    req = urllib.request.Request(
        f"{API_URL}/{method}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    # Never a proxy from the environment: the node is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as r:
        answer = json.loads(r.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer}")
    return answer.get("result", answer)


def publish(seqs):
    seqs = list(seqs)
    for i in range(0, len(seqs), BATCH):
        commands = [{"publish": {"channel": CHANNEL, "data": {"n": n, "p": PAD}}} for n in seqs[i : i + BATCH]]
        answer = api("batch", {"commands": commands})
        if "error" in json.dumps(answer):
            raise RuntimeError(f"batch: {answer}")


class State:
    def __init__(self):
        self.client_id = None
        self.seqs = []
        self.subscribing = []  # (code, reason) of each move to subscribing
        self.subscribed = []  # (was_recovering, recovered) of each subscribe
        self.stalled = False
        self.last = None  # last number published while the SDK was stalled
        self.dropped = 0
        self.error = None
        self.progress = asyncio.Event()


class ClientEvents(ClientEventHandler):
    def __init__(self, state):
        self.state = state

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.state.client_id = ctx.client


def stall(state):
    """Blocks the event loop while a thread publishes until the node dropped publications of
    this subscription and ended it (its 2500 push is queued)."""

    def work():
        nxt, h = 2, None
        deadline = time.monotonic() + 40
        try:
            while time.monotonic() < deadline:
                publish(range(nxt, nxt + BATCH))
                nxt += BATCH
                conns = api("connection_health", {"client": state.client_id})["connections"]
                h = conns[0] if conns else None
                if h and h["dropped"] > 0 and h["subscriptions"] == []:
                    break
            else:
                state.error = f"nothing dropped after {nxt - 1} publications: {h}"
            # Published while unsubscribed: to be recovered from history.
            publish(range(nxt, nxt + BATCH))
            state.last = nxt + BATCH - 1
            state.dropped = h["dropped"] if h else 0
        except Exception as e:  # reported by the main flow
            state.error = f"publisher: {e!r}"

    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():
        time.sleep(0.05)  # the loop is blocked: the SDK reads nothing


class SubEvents(SubscriptionEventHandler):
    def __init__(self, state):
        self.state = state

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.state.subscribing.append((ctx.code, ctx.reason))

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.state.subscribed.append((ctx.was_recovering, ctx.recovered))
        self.state.progress.set()

    async def on_publication(self, ctx: PublicationContext) -> None:
        n = ctx.pub.data["n"]
        self.state.seqs.append(n)
        if n == 1 and not self.state.stalled:
            self.state.stalled = True
            stall(self.state)
        self.state.progress.set()


async def wait_for(state, cond, what):
    deadline = time.monotonic() + WAIT
    while not cond():
        if state.error:
            raise RuntimeError(state.error)
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"timeout waiting for {what}; seqs so far {len(state.seqs)}")
        state.progress.clear()
        try:
            await asyncio.wait_for(state.progress.wait(), min(left, 0.5))
        except asyncio.TimeoutError:
            pass


async def scenario():
    warnings.filterwarnings("ignore", message=".*HMAC key.*")
    token = jwt.encode({"sub": "sdk-slow", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    state = State()
    client = Client(WS_URL, events=ClientEvents(state), token=token, timeout=WAIT, proxy=None)
    sub = client.new_subscription(CHANNEL, events=SubEvents(state))
    await client.connect()
    await sub.subscribe()
    await wait_for(state, lambda: state.subscribed, "the subscription")
    log("PASS a. subscribed")
    await asyncio.to_thread(publish, [1])
    await wait_for(state, lambda: state.last is not None, "the stall")
    log(f"PASS b. stalled while {state.last - 1} more were published; the node dropped {state.dropped}")
    await wait_for(state, lambda: len(state.seqs) >= state.last, "recovery")
    codes = [c for c, _ in state.subscribing]
    if 2500 not in codes:
        raise RuntimeError(f"no unsubscribe 2500 (subscribing transitions: {state.subscribing})")
    if state.subscribed[-1] != (True, True):
        raise RuntimeError(f"resubscribe did not recover: {state.subscribed}")
    log(f"PASS c. unsubscribe 2500, resubscribed with recover: {state.subscribed}")
    await asyncio.to_thread(publish, range(state.last + 1, state.last + 1 + TAIL))
    total = state.last + TAIL
    await wait_for(state, lambda: len(state.seqs) >= total, "the tail")
    await asyncio.sleep(0.3)  # nothing more may come
    if state.seqs != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(state.seqs))
        dups = len(state.seqs) - len(set(state.seqs))
        raise RuntimeError(f"received {len(state.seqs)} of {total}: missing {missing[:20]}, {dups} duplicates")
    log(f"PASS d. all {total} publications exactly once, in order")
    await client.disconnect()


def hard_timeout(signum, frame):
    log(f"FAIL hard timeout of {OVERALL_TIMEOUT:.0f}s")
    os._exit(1)


async def main():
    try:
        await asyncio.wait_for(scenario(), OVERALL_TIMEOUT - 1)
    except Exception as e:
        log(f"FAIL {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, hard_timeout)
    signal.alarm(int(OVERALL_TIMEOUT))
    sys.exit(asyncio.run(main()))
